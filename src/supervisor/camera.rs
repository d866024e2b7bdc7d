//! One camera's task: its analysis (kept alive by the [`keeper`](super::keeper)), and its
//! pipeline restarted with capped exponential backoff, jittered, until the camera is stopped.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::keeper::{self, Analysis};
use crate::analysis::objects::ObjectStage;
use crate::channel;
use crate::config::{CameraConfig, RtspTransport, Source};
use crate::error::{ErrorKind, Kinded};
use crate::events::{EventSink, EventType, NewEvent};
use crate::ingest::{FrameSink, SourceHealth, StreamEnd, Streamer};
use crate::metrics::Metrics;
use crate::redact::Redacted;
use crate::status::{CameraState, CameraStatus};
use crate::throttle::Throttle;

/// A source (or analysis) that ran this long has its backoff reset.
pub(super) const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// A random wait between half and all of `backoff` ("equal jitter"), so cameras that failed
/// together (a recorder or a switch restarting) do not all retry in the same instant.
pub(super) fn jittered(backoff: Duration) -> Duration {
    backoff.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// Run one camera until `stop`: its analysis, and its pipeline restarted after failures.
/// `stall` is how long analysis may go without progress before it is restarted.
pub async fn run(
    cam: CameraConfig,
    objects: Option<ObjectStage>,
    status: Arc<CameraStatus>,
    events: mpsc::Sender<NewEvent>,
    metrics: Arc<Metrics>,
    stall_analysis: Duration,
    stop: CancellationToken,
) {
    let cam_metrics = metrics.camera(&cam.id);
    let policy = cam.full_policy();
    let (tx, rx) = channel::bounded(cam.backpressure.capacity, policy);
    let analysis = Analysis {
        cam: cam.clone(),
        rx,
        events: EventSink::new(&events, cam.backpressure.events, cam_metrics.clone(), metrics.clone()),
        metrics: cam_metrics.clone(),
        status: status.clone(),
        stall: stall_analysis,
    };
    let analysis = match keeper::spawn(analysis, objects) {
        Ok(handle) => handle,
        Err(e) => {
            error!("cannot start the camera's analysis thread: {e}");
            status.set(CameraState::Stopped, Some(format!("cannot start analysis: {e}")));
            return;
        }
    };
    let sink = FrameSink {
        camera: cam.id.as_str().into(),
        tx,
        seq: Arc::new(AtomicU64::new(0)),
        metrics: cam_metrics,
        health: Arc::new(SourceHealth::default()),
        epoch: Instant::now(),
    };
    let stall = Duration::from_secs_f64(cam.reconnect.stall_secs);
    let mut failures = 0u32;
    let mut log = Throttle::default();
    info!(url = %Redacted(&cam.url), ?policy, capacity = cam.backpressure.capacity, "camera starting");
    let mut finished = false;
    let mut transports = Transports::new(&cam);
    loop {
        let started = Instant::now();
        let mut connected = false;
        status.set(CameraState::Connecting, None);
        let attempt = CameraConfig { transport: transports.now, ..cam.clone() };
        let end = match Streamer::build(&attempt, sink.clone()).and_then(|s| s.start().map(|()| s)) {
            // A pipeline that cannot be built (a missing element, say) fails the same way every
            // time: the camera stops, saying why, until its settings change.
            Err(e) if e.kind() != ErrorKind::Retry => {
                let reason = format!("{}; fix the camera's pipeline or decoder and reload", Redacted(&e.to_string()));
                error!("camera stopped: {reason}");
                status.set(CameraState::Stopped, Some(reason));
                break;
            }
            // One that would not start would not be helped by another transport.
            Err(e) => StreamEnd::Refused(e.to_string()),
            Ok(streamer) => {
                sink.health.arm(sink.epoch);
                let first = sink.health.frames();
                let end = tokio::select! {
                    end = streamer.wait() => Some(end),
                    reason = watch(&sink, first, stall, &mut connected, &status, &events) => Some(StreamEnd::Error(reason)),
                    _ = stop.cancelled() => None,
                };
                let _ = tokio::task::spawn_blocking(move || drop(streamer)).await;
                match end {
                    Some(end) => end,
                    None => {
                        if connected {
                            camera_event(&events, &cam.id, json!({"state": "disconnected", "reason": "stopped"})).await;
                        }
                        break;
                    }
                }
            }
        };
        let mut reason = match &end {
            StreamEnd::Eos => "end of stream".to_string(),
            StreamEnd::Error(e) | StreamEnd::Refused(e) => e.clone(),
        };
        if connected {
            transports.streamed();
            camera_event(&events, &cam.id, json!({"state": "disconnected", "reason": reason})).await;
        } else {
            let tried = transports.now;
            let transport_failed = matches!(end, StreamEnd::Error(_));
            match transports.fallback(transport_failed) {
                Some(next) => {
                    info!("no stream over {tried:?}; trying {next:?} ({reason})");
                    continue;
                }
                None if transports.auto && transport_failed => {
                    reason = format!("{reason} (tried TCP and UDP; set `transport` on the camera to pin one)")
                }
                None => {}
            }
        }
        if end == StreamEnd::Eos && !cam.is_live() && !cam.looping {
            info!("file source finished");
            finished = true;
            break;
        }
        failures = if started.elapsed() > HEALTHY_RUN { 1 } else { failures + 1 };
        let wait = match end {
            StreamEnd::Eos if cam.looping => Duration::ZERO,
            _ => jittered(cam.reconnect.backoff(failures)),
        };
        if end != StreamEnd::Eos {
            log.failure(failures, wait, format_args!("source failed: {reason}"));
            status.set(CameraState::Backoff, Some(reason));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => break,
        }
    }
    sink.tx.close();
    drop(sink);
    let _ = tokio::task::spawn_blocking(move || analysis.join()).await;
    status.set(if finished { CameraState::Finished } else { CameraState::Stopped }, None);
    info!("camera stopped");
}

/// The RTSP transports of one camera: a pinned one, or under `auto` TCP first (it passes NAT
/// and firewalls, and is the one every server offers) and UDP at once when TCP fails (servers
/// that offer only UDP, such as VLC's). The one that streamed is tried first from then on.
struct Transports {
    auto: bool,
    first: RtspTransport,
    now: RtspTransport,
}

impl Transports {
    fn new(cam: &CameraConfig) -> Self {
        // rtspt:// and rtsps:// name TCP (or TLS over it) in the URL itself.
        let plain_rtsp = matches!(cam.source(), Ok(Source::Rtsp(url)) if url.scheme() == "rtsp");
        match cam.transport {
            RtspTransport::Auto => Self { auto: plain_rtsp, first: RtspTransport::Tcp, now: RtspTransport::Tcp },
            pinned => Self { auto: false, first: pinned, now: pinned },
        }
    }

    /// The transport now in use streamed: try it first from now on.
    fn streamed(&mut self) {
        self.first = self.now;
    }

    /// After an attempt that never streamed: the other transport, to try at once, if the
    /// failure may be the transport's and this round has not tried it; else `None` (back off),
    /// and the next round starts again with the first.
    fn fallback(&mut self, transport_failed: bool) -> Option<RtspTransport> {
        if self.auto && transport_failed && self.now == self.first {
            self.now = match self.first {
                RtspTransport::Tcp => RtspTransport::Udp,
                _ => RtspTransport::Tcp,
            };
            return Some(self.now);
        }
        self.now = self.first;
        None
    }
}

/// Publishes `connected` on the first frame, and returns a reason once the source stalls.
async fn watch(
    sink: &FrameSink,
    first: u64,
    stall: Duration,
    connected: &mut bool,
    status: &CameraStatus,
    events: &mpsc::Sender<NewEvent>,
) -> String {
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        if !*connected && sink.health.frames() > first {
            *connected = true;
            info!("streaming");
            status.set(CameraState::Streaming, None);
            camera_event(events, &status.id, json!({"state": "connected"})).await;
        }
        if sink.health.stalled(sink.epoch, stall) {
            return format!("no frames for {:.0} s", stall.as_secs_f64());
        }
    }
}

/// Queue a `camera` event with `data`.
pub async fn camera_event(events: &mpsc::Sender<NewEvent>, camera: &str, data: serde_json::Value) {
    let _ = events.send(NewEvent::new(EventType::Camera, camera, chrono::Utc::now(), data)).await;
}
