//! Events: the path from "something happened" to a saved row, a JPEG snapshot and a Redis
//! message. The event itself, as consumers see it, is [`crate::contract`].
//!
//! ```text
//! analysis ─NewEvent─► Recorder (snapshot JPEG, DB row) ─Event─► Publisher (Redis, outbox relay)
//! ```
//!
//! Save first, publish second: an event exists once its row is committed; the publisher only ever
//! sends committed rows and marks them published afterwards, so delivery is at least once and
//! consumers dedupe on `id`.

pub mod journal;
pub mod publish;
pub mod recorder;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod webhook;

use chrono::{DateTime, Utc};

pub use crate::contract::{Event, EventType, format_ts, parse_ts};
use crate::frame::Frame;
pub use publish::Publisher;
pub use recorder::Recorder;
pub use store::{EventQuery, PlateMatch, Store, StoreError};
pub use webhook::Webhook;

/// An event the pipeline wants recorded; it gets its id when saved.
pub struct NewEvent {
    pub event_type: EventType,
    pub camera_id: String,
    /// Wall time of the frame.
    pub timestamp: DateTime<Utc>,
    pub frame_number: Option<i64>,
    pub data: serde_json::Value,
    /// The frame to save as the event's JPEG snapshot.
    pub snapshot: Option<Frame>,
    /// A region of the snapshot (`[x1, y1, x2, y2]`) also saved on its own, as `crop_path`.
    pub crop: Option<[u32; 4]>,
    /// Events with the same key are one event: a later one replaces the saved row's data and
    /// snapshot, and is published again under the same id with `revision` + 1 (a plate read
    /// getting better).
    pub key: Option<String>,
}

impl NewEvent {
    /// An event of `event_type` for `camera` at wall time `timestamp`, with no frame behind it.
    pub fn new(event_type: EventType, camera: &str, timestamp: DateTime<Utc>, data: serde_json::Value) -> Self {
        Self {
            event_type,
            camera_id: camera.to_string(),
            timestamp,
            frame_number: None,
            data,
            snapshot: None,
            crop: None,
            key: None,
        }
    }

    /// An event seen in `frame`: its camera, wall time and number.
    pub fn at(event_type: EventType, frame: &Frame, data: serde_json::Value) -> Self {
        Self { frame_number: Some(frame.seq as i64), ..Self::new(event_type, &frame.camera, frame.wall, data) }
    }

    /// Saves `frame` as the event's snapshot.
    pub fn with_snapshot(self, frame: Frame) -> Self {
        Self { snapshot: Some(frame), ..self }
    }

    /// Saves region `[x1, y1, x2, y2]` of the snapshot on its own too.
    pub fn with_crop(self, crop: [u32; 4]) -> Self {
        Self { crop: Some(crop), ..self }
    }

    /// Makes later events with the same `key` revisions of this one.
    pub fn keyed(self, key: String) -> Self {
        Self { key: Some(key), ..self }
    }
}
