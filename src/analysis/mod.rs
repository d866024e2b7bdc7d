//! The per-camera analysis loop: takes frames from the channel and runs the stages in order
//! (motion on every frame, then the gated [`objects`] stage), turning their output into events.
//!
//! It runs on its own OS thread per camera, because it is CPU-bound and must never stall the
//! async runtime; it hands events to the recorder and never waits on storage.

pub mod objects;
pub mod plates;

use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_video::prelude::*;
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info_span, warn};

use crate::channel::{Receiver, Recv};
use crate::config::CameraConfig;
use crate::events::{EventType, NewEvent};
use crate::ingest::Frame;
use crate::metrics::CameraMetrics;
use crate::motion::{MotionDetector, MotionEpisode, Phase};
use objects::ObjectStage;

/// Stream time that only moves forward: pts deltas, clamped, so reconnects (pts restarting at
/// zero) and gaps cannot make quiet periods look negative or endless.
#[derive(Default)]
struct StreamClock {
    prev: Option<gst::ClockTime>,
    secs: f64,
}

impl StreamClock {
    fn advance(&mut self, pts: Option<gst::ClockTime>) -> f64 {
        if let (Some(prev), Some(now)) = (self.prev, pts) {
            let step = now.nseconds().saturating_sub(prev.nseconds()) as f64 / 1e9;
            self.secs += step.min(1.0);
        }
        self.prev = pts.or(self.prev);
        self.secs
    }
}

/// Analyse frames until the channel is closed and drained.
pub fn run(
    cam: CameraConfig,
    rx: Receiver<Frame>,
    mut objects: Option<ObjectStage>,
    events: mpsc::Sender<NewEvent>,
    metrics: CameraMetrics,
) {
    let _span = info_span!("camera", id = %cam.id).entered();
    let mut detector: Option<MotionDetector> = None;
    let mut episode = MotionEpisode::new(cam.motion.quiet_secs);
    let mut clock = StreamClock::default();
    let mut last_frame = Instant::now();
    let mut previous: Option<Frame> = None;
    let emit = |ev: NewEvent| {
        if events.blocking_send(ev).is_err() {
            warn!("event recorder stopped; event lost");
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Recv::Item(frame) => {
                last_frame = Instant::now();
                let t = clock.advance(frame.pts);
                let motion = {
                    let d = match &mut detector {
                        Some(d) if d.fits(frame.width(), frame.height()) => d,
                        _ => detector.insert(MotionDetector::new(&cam.motion, frame.width(), frame.height())),
                    };
                    let Ok(mapped) = frame.map() else {
                        warn!(seq = frame.seq, "frame could not be mapped; skipped");
                        continue;
                    };
                    let (Ok(luma), stride) = (mapped.plane_data(0), mapped.plane_stride()[0] as usize) else {
                        continue;
                    };
                    d.detect(luma, stride)
                };
                if let Some(phase) = episode.update(&motion, t) {
                    emit(motion_event(&cam.id, phase, &frame));
                }
                if let Some(stage) = &mut objects {
                    stage.process(&frame, &motion, t).into_iter().for_each(emit);
                }
                metrics.analysed.inc();
                previous = Some(frame);
            }
            Recv::Timeout => {
                if let Some(stage) = &mut objects {
                    stage.poll().into_iter().for_each(emit);
                }
                // The source went quiet: close an open episode in wall time.
                let quiet = last_frame.elapsed().as_secs_f64();
                if quiet >= cam.motion.quiet_secs.max(1.0)
                    && let Some(phase) = episode.finish()
                {
                    debug!("no frames; ending motion episode");
                    emit(motion_end_without_frame(&cam.id, phase));
                }
                if quiet >= cam.tracker.max_age_secs
                    && let Some(stage) = &mut objects
                {
                    stage.finish(previous.as_ref()).into_iter().for_each(emit);
                }
            }
            Recv::Closed => {
                if let Some(phase) = episode.finish() {
                    emit(motion_end_without_frame(&cam.id, phase));
                }
                if let Some(stage) = &mut objects {
                    stage.finish(previous.as_ref()).into_iter().for_each(emit);
                }
                return;
            }
        }
    }
}

fn phase_data(phase: &Phase) -> serde_json::Value {
    match phase {
        Phase::Start { regions, area } => json!({ "phase": "start", "regions": regions, "area": area }),
        Phase::End { regions, peak_area, duration_secs } => {
            json!({ "phase": "end", "regions": regions, "area": peak_area, "duration_secs": duration_secs })
        }
    }
}

fn motion_event(camera: &str, phase: Phase, frame: &Frame) -> NewEvent {
    NewEvent {
        key: None,
        event_type: EventType::Motion,
        camera_id: camera.to_string(),
        timestamp: frame.wall,
        frame_number: Some(frame.seq as i64),
        snapshot: matches!(phase, Phase::Start { .. }).then(|| frame.clone()),
        crop: None,
        data: phase_data(&phase),
    }
}

fn motion_end_without_frame(camera: &str, phase: Phase) -> NewEvent {
    NewEvent {
        key: None,
        event_type: EventType::Motion,
        camera_id: camera.to_string(),
        timestamp: chrono::Utc::now(),
        frame_number: None,
        snapshot: None,
        crop: None,
        data: phase_data(&phase),
    }
}
