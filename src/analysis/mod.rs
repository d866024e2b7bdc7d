//! The per-camera analysis loop: takes frames from the channel and runs the stages in order
//! (motion on every frame, then the gated [`objects`] stage), turning their output into events.
//!
//! It runs on its own OS thread per camera, because it is CPU-bound and must never stall the
//! async runtime; it hands events to the recorder and never waits on storage. The supervisor
//! watches its [`Progress`] and starts it again after a panic or a stall.

pub mod objects;
pub mod plates;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer_video::prelude::*;
use serde_json::json;
use tracing::{debug, info, info_span};

use crate::channel::{Receiver, Recv};
use crate::config::CameraConfig;
use crate::events::{EventSink, EventType, NewEvent};
use crate::frame::Frame;
use crate::metrics::CameraMetrics;
use crate::motion::{MotionDetector, MotionEpisode, Phase};
use crate::status::Preview;
use crate::throttle::Throttle;
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

/// How long analysis waits for a frame before it looks at the clock (ends quiet episodes, ages
/// tracks) and beats its [`Progress`].
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// How far one camera's analysis has got: a heartbeat at each frame and each idle wait, for the
/// watchdog that restarts it when it stops; and which run of it may go on, so a run that was
/// given up as hung and wakes later steps aside.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last beat.
    beat: AtomicU64,
    generation: AtomicU64,
}

impl Default for Progress {
    fn default() -> Self {
        Self { epoch: Instant::now(), beat: AtomicU64::new(0), generation: AtomicU64::new(0) }
    }
}

impl Progress {
    fn beat(&self) {
        self.beat.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long since the last beat.
    pub fn idle(&self) -> Duration {
        self.epoch.elapsed().saturating_sub(Duration::from_millis(self.beat.load(Ordering::Relaxed)))
    }

    /// Start a new run (the earlier ones stop at their next frame); returns its generation.
    pub fn next_generation(&self) -> u64 {
        self.beat();
        self.generation.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn current(&self, generation: u64) -> bool {
        self.generation.load(Ordering::SeqCst) == generation
    }
}

/// Analyse frames until the channel is closed and drained, or until `progress` moves on to a
/// later generation than `generation`. Events go to `events` while the camera's task holds the
/// channel open: a run given up as hung must not keep the recorder waiting at shutdown. Each
/// analysed frame is offered to `preview`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    cam: &CameraConfig,
    rx: &Receiver<Frame>,
    objects: &mut Option<ObjectStage>,
    events: &EventSink,
    metrics: &CameraMetrics,
    preview: &Preview,
    progress: &Progress,
    generation: u64,
) {
    let _span = info_span!("camera", id = %cam.id).entered();
    let mut detector: Option<MotionDetector> = None;
    let mut episode = MotionEpisode::new(cam.motion.quiet_secs);
    let mut clock = StreamClock::default();
    let mut last_frame = Instant::now();
    let mut previous: Option<Frame> = None;
    let (mut lost, mut unmapped) = (Throttle::default(), Throttle::default());
    let mut emit = |ev: NewEvent| {
        if let Err(e) = events.send_blocking(ev) {
            lost.warn(format_args!("event lost: {e}"));
        }
    };
    loop {
        if !progress.current(generation) {
            return;
        }
        progress.beat();
        match rx.recv_timeout(IDLE_WAIT) {
            Recv::Item(frame) => {
                #[cfg(feature = "fault-injection")]
                crate::fault::analysed_frame();
                last_frame = Instant::now();
                let t = clock.advance(frame.pts);
                if detector.as_ref().is_some_and(|d| !d.fits(frame.width(), frame.height())) {
                    // A camera reconfigured mid-stream: boxes and the motion background of the old
                    // size mean nothing at the new one.
                    info!(
                        width = frame.width(),
                        height = frame.height(),
                        "frame size changed; open tracks end, motion starts afresh"
                    );
                    detector = None;
                    if let Some(phase) = episode.finish() {
                        emit(motion_end_without_frame(&cam.id, phase));
                    }
                    if let Some(stage) = objects {
                        stage.finish(previous.as_ref()).into_iter().for_each(&mut emit);
                    }
                }
                let motion = {
                    let d =
                        detector.get_or_insert_with(|| MotionDetector::new(&cam.motion, frame.width(), frame.height()));
                    let Ok(mapped) = frame.map() else {
                        unmapped.warn(format_args!("frame {} could not be mapped; skipped", frame.seq));
                        continue;
                    };
                    let (Ok(luma), stride) = (mapped.plane_data(0), mapped.plane_stride()[0] as usize) else {
                        continue;
                    };
                    d.detect(luma, stride)
                };
                if let Some(phase) = episode.update(&motion, t) {
                    emit(motion_event(phase, &frame));
                }
                if let Some(stage) = objects {
                    stage.process(&frame, &motion, t).into_iter().for_each(&mut emit);
                    // With no frame queued there is nothing to overlap a detection with: take it
                    // in now rather than at the next frame, which on a live camera is a frame
                    // interval away.
                    if rx.is_empty() {
                        stage.settle().into_iter().for_each(&mut emit);
                    }
                }
                metrics.analysed.inc();
                preview.offer(&frame);
                previous = Some(frame);
            }
            Recv::Timeout => {
                if let Some(stage) = objects {
                    stage.poll().into_iter().for_each(&mut emit);
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
                    && let Some(stage) = objects
                {
                    stage.finish(previous.as_ref()).into_iter().for_each(&mut emit);
                }
            }
            Recv::Closed => {
                if let Some(phase) = episode.finish() {
                    emit(motion_end_without_frame(&cam.id, phase));
                }
                if let Some(stage) = objects {
                    stage.finish(previous.as_ref()).into_iter().for_each(&mut emit);
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

fn motion_event(phase: Phase, frame: &Frame) -> NewEvent {
    let ev = NewEvent::at(EventType::Motion, frame, phase_data(&phase));
    if matches!(phase, Phase::Start { .. }) { ev.with_snapshot(frame.clone()) } else { ev }
}

fn motion_end_without_frame(camera: &str, phase: Phase) -> NewEvent {
    NewEvent::new(EventType::Motion, camera, chrono::Utc::now(), phase_data(&phase))
}
