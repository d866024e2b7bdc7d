//! vigil: RTSP cameras in, events out.
//!
//! Data flow, one module per stage:
//! [`config`] → [`supervisor`] → [`ingest`] (GStreamer) → [`channel`] (bounded, the backpressure
//! point) → [`analysis`] ([`motion`], …) → [`events`] (snapshot, DB row, Redis).

pub mod analysis;
pub mod anpr;
pub mod api;
pub mod channel;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod detect;
pub mod error;
pub mod events;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod frame;
pub mod geometry;
pub mod inference;
pub mod ingest;
pub mod metrics;
pub mod motion;
pub mod plate;
pub mod redact;
pub mod sample;
pub mod status;
pub mod supervisor;
pub mod throttle;
pub mod track;
