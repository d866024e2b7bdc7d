//! Keeps one camera's analysis alive. Analysis runs on a worker thread of its own; a panic there
//! is caught, and a worker that stops making progress (a hung call) is given up on. Either way
//! the failure is counted and shown on the camera, the frames that arrive meanwhile are dropped
//! (so the source keeps streaming), and a new worker with a fresh object stage starts after the
//! camera's reconnect backoff (doubling while failures repeat, jittered).

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{info, info_span};

use super::camera::{HEALTHY_RUN, jittered};
use crate::analysis::{self, Progress, objects::ObjectStage};
use crate::channel::{Receiver, Recv};
use crate::config::CameraConfig;
use crate::events::EventSink;
use crate::frame::Frame;
use crate::metrics::CameraMetrics;
use crate::status::CameraStatus;
use crate::throttle::Throttle;

/// How often the keeper looks at its worker.
const LOOK: Duration = Duration::from_millis(100);

/// What one camera's analysis needs, shared by every worker the keeper starts.
pub struct Analysis {
    pub cam: CameraConfig,
    pub rx: Receiver<Frame>,
    pub events: EventSink,
    pub metrics: CameraMetrics,
    pub status: Arc<CameraStatus>,
    /// A worker that goes this long without progress is given up on.
    pub stall: Duration,
}

/// Start the keeper's thread; it ends once the channel is closed and drained. `objects` is the
/// camera's object stage as built at start: each worker gets a fresh copy of it.
pub fn spawn(analysis: Analysis, objects: Option<ObjectStage>) -> std::io::Result<JoinHandle<()>> {
    let name = format!("keep-{}", analysis.cam.id);
    std::thread::Builder::new().name(name).spawn(move || keep(Arc::new(analysis), objects.as_ref()))
}

/// Why a worker ended.
enum End {
    /// The channel closed and was drained: the camera stopped.
    Done,
    Panicked(String),
    Stalled,
}

fn keep(a: Arc<Analysis>, objects: Option<&ObjectStage>) {
    let _span = info_span!("camera", id = %a.cam.id).entered();
    let progress = Arc::new(Progress::default());
    let mut failures = 0u32;
    // Repeats are logged once a minute, panics and stalls each on their own.
    let (mut panics, mut stalls) = (Throttle::default(), Throttle::default());
    loop {
        let started = Instant::now();
        let end = match run_worker(&a, objects, &progress) {
            Ok(end) => end,
            Err(e) => End::Panicked(format!("cannot start the analysis thread: {e}")),
        };
        failures = if started.elapsed() > HEALTHY_RUN { 1 } else { failures + 1 };
        let wait = jittered(a.cam.reconnect.backoff(failures));
        let reason = match end {
            End::Done => return,
            End::Panicked(message) => {
                a.metrics.analysis_panics.inc();
                let reason = format!("analysis panicked: {message}");
                panics.failure(failures, wait, format_args!("{reason}"));
                reason
            }
            End::Stalled => {
                a.metrics.analysis_stalls.inc();
                let reason = format!("analysis made no progress for {:.0} s", a.stall.as_secs_f64());
                stalls.failure(failures, wait, format_args!("{reason}"));
                reason
            }
        };
        a.status.analysis_failed(format!("{reason}; restarting"));
        if !drop_frames_for(&a, wait) {
            return;
        }
        info!("analysis restarting");
        a.status.analysis_running();
    }
}

/// Run one worker to its end, watching its progress.
fn run_worker(a: &Arc<Analysis>, objects: Option<&ObjectStage>, progress: &Arc<Progress>) -> std::io::Result<End> {
    let generation = progress.next_generation();
    let objects = match objects.map(ObjectStage::fresh).transpose() {
        Ok(objects) => objects,
        Err(e) => return Ok(End::Panicked(format!("cannot set up detection again: {e}"))),
    };
    let worker = {
        let (a, progress) = (a.clone(), progress.clone());
        std::thread::Builder::new()
            .name(format!("analysis-{}", a.cam.id))
            .spawn(move || work(&a, objects, &progress, generation))?
    };
    loop {
        if worker.is_finished() {
            return Ok(match worker.join() {
                Ok(None) => End::Done,
                Ok(Some(message)) => End::Panicked(message),
                Err(payload) => End::Panicked(message(payload.as_ref())),
            });
        }
        if progress.idle() > a.stall {
            // A thread cannot be stopped from outside; this one steps aside when it wakes (its
            // generation is over) and its handle is let go.
            return Ok(End::Stalled);
        }
        std::thread::sleep(LOOK);
    }
}

/// One worker: analysis until the channel closes (`None`), or the panic message. After a panic
/// the tracks that were open are ended, so consumers get their `end` events.
fn work(a: &Analysis, mut objects: Option<ObjectStage>, progress: &Progress, generation: u64) -> Option<String> {
    let run =
        || analysis::run(&a.cam, &a.rx, &mut objects, &a.events, &a.metrics, &a.status.preview, progress, generation);
    let payload = panic::catch_unwind(AssertUnwindSafe(run)).err()?;
    if let Some(stage) = &mut objects {
        let ended = panic::catch_unwind(AssertUnwindSafe(|| stage.finish(None))).unwrap_or_default();
        for ev in ended {
            let _ = a.events.send_blocking(ev);
        }
    }
    Some(message(payload.as_ref()))
}

/// Drop the frames that arrive for `wait`, counted; false once the channel has closed.
fn drop_frames_for(a: &Analysis, wait: Duration) -> bool {
    let until = Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        match a.rx.recv_timeout(left) {
            Recv::Item(_) => a.metrics.dropped_analysis_down.inc(),
            Recv::Timeout => return true,
            Recv::Closed => return false,
        }
    }
}

fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
