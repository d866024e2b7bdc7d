//! The supervisor: starts the event path (recorder, publisher), one task per camera that restarts
//! its pipeline with capped exponential backoff, and shuts everything down in order.
//!
//! One camera failing never touches another: each has its own pipeline, channel and analysis
//! thread, and only shares the event queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::analysis::{self, objects::ObjectStage};
use crate::anpr::PlateReader;
use crate::api::{self, ApiState};
use crate::channel::{self, Policy};
use crate::config::{CameraConfig, Config, FullPolicy};
use crate::detect::Detector;
use crate::events::{EventType, NewEvent, Publisher, Recorder, Store, retention};
use crate::inference::Runtime;
use crate::ingest::{FrameSink, SourceHealth, StreamEnd, Streamer};
use crate::metrics::Metrics;
use crate::redact::Redacted;
use crate::status::{CameraState, CameraStatus, Registry};

/// Events waiting for the recorder; analysis blocks only if the database is down this long.
const EVENT_QUEUE: usize = 4096;
/// How long the publisher may keep trying after the cameras have stopped.
const PUBLISH_GRACE: Duration = Duration::from_secs(2);
/// A source that streamed this long has its backoff reset.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Run every camera in `config` until `shutdown` is cancelled, then drain and return.
pub async fn run(config: Config, metrics: Arc<Metrics>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = Store::connect(&config.database.url).await.context("starting the event store")?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([server] listen)", config.server.listen))?;
    info!(database = %Redacted(&config.database.url), redis = %Redacted(&config.redis.url), cameras = config.cameras.len(), "vigil running");

    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (live, _) = broadcast::channel(1024);
    let registry = Arc::new(Registry::default());
    let (publish_tx, publish_rx) = mpsc::channel(1024);
    let lagged = Arc::new(AtomicBool::new(false));
    let redis_up = Arc::new(AtomicBool::new(false));
    let publisher =
        Publisher::new(config.redis.clone(), store.clone(), metrics.clone(), lagged.clone(), redis_up.clone())
            .context("configuring Redis")?;
    let publisher = tokio::spawn(publisher.run(publish_rx, shutdown.clone()));
    let recorder = Recorder {
        store: store.clone(),
        snapshots_dir: config.storage.snapshots_dir.clone(),
        metrics: metrics.clone(),
        to_publisher: publish_tx,
        lagged,
        live: live.clone(),
    };
    let recorder = tokio::spawn(recorder.run(events_rx));
    if let Some(days) = config.storage.retention_days {
        tokio::spawn(retention::run(store.clone(), config.storage.snapshots_dir.clone(), days, shutdown.clone()));
    }

    let (detector, plates) = if config.cameras.iter().any(|c| c.detection.enabled) {
        let runtime = Runtime::load(&config.inference).context("loading ONNX Runtime")?;
        let detector = Detector::load(&config.models, &runtime, &config.inference, metrics.clone())
            .context("loading the object detector")?;
        let plates = if config.cameras.iter().any(|c| c.anpr.enabled) {
            let reader = PlateReader::load(&config.models, &runtime, &config.inference, metrics.clone())
                .context("loading the plate models")?;
            Some(Arc::new(reader))
        } else {
            None
        };
        (Some(Arc::new(detector)), plates)
    } else {
        (None, None)
    };
    let mut cameras = Vec::new();
    for cam in &config.cameras {
        let status = registry.add(&cam.id, metrics.camera(&cam.id));
        let objects = match &detector {
            Some(d) if cam.detection.enabled => Some(
                ObjectStage::new(cam, d.clone(), plates.clone(), metrics.camera(&cam.id), status.clone())
                    .map_err(anyhow::Error::msg)?,
            ),
            _ => None,
        };
        let span = info_span!("camera", id = %cam.id);
        let task = run_camera(cam.clone(), objects, status, events_tx.clone(), metrics.clone(), shutdown.clone());
        cameras.push(tokio::spawn(task.instrument(span)));
    }
    drop(events_tx);
    tokio::spawn(sample_rates(registry.clone(), shutdown.clone()));
    let api_state = Arc::new(ApiState {
        store: store.clone(),
        metrics: metrics.clone(),
        cameras: registry,
        live,
        redis_up,
        snapshots_dir: config.storage.snapshots_dir.clone(),
        token: config.server.token.clone(),
        shutdown: shutdown.clone(),
    });
    info!(listen = %config.server.listen, "HTTP API and page up");
    let api = tokio::spawn(api::serve(listener, api_state, shutdown.clone()));

    shutdown.cancelled().await;
    info!("shutting down: stopping sources, draining frames and events");
    for cam in cameras {
        let _ = cam.await;
    }
    let _ = recorder.await;
    if tokio::time::timeout(PUBLISH_GRACE, publisher).await.is_err() {
        warn!("publisher still busy after {PUBLISH_GRACE:?}; unpublished events stay in the outbox");
    }
    if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(1), api).await {
        warn!("HTTP API: {e}");
    }
    store.close().await;
    Ok(())
}

/// One camera: its analysis thread, and its pipeline restarted until shutdown.
async fn run_camera(
    cam: CameraConfig,
    objects: Option<ObjectStage>,
    status: Arc<CameraStatus>,
    events: mpsc::Sender<NewEvent>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let cam_metrics = metrics.camera(&cam.id);
    let policy = match cam.full_policy() {
        FullPolicy::Block => Policy::Block,
        _ => Policy::DropOldest,
    };
    let (tx, rx) = channel::bounded(cam.backpressure.capacity, policy);
    let analysis = {
        let (cam, events, m) = (cam.clone(), events.clone(), cam_metrics.clone());
        std::thread::Builder::new()
            .name(format!("analysis-{}", cam.id))
            .spawn(move || analysis::run(cam, rx, objects, events, m))
            .expect("spawn analysis thread")
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
    info!(url = %Redacted(&cam.url), ?policy, capacity = cam.backpressure.capacity, "camera starting");
    let mut finished = false;
    loop {
        let started = Instant::now();
        let mut connected = false;
        status.set(CameraState::Connecting, None);
        let end = match Streamer::build(&cam, sink.clone()).and_then(|s| s.start().map(|()| s)) {
            Err(e) => StreamEnd::Error(e.to_string()),
            Ok(streamer) => {
                sink.health.arm(sink.epoch);
                let first = sink.health.frames();
                let end = tokio::select! {
                    end = streamer.wait() => Some(end),
                    reason = watch(&sink, first, stall, &mut connected, &status, &events) => Some(StreamEnd::Error(reason)),
                    _ = shutdown.cancelled() => None,
                };
                let _ = tokio::task::spawn_blocking(move || drop(streamer)).await;
                match end {
                    Some(end) => end,
                    None => {
                        if connected {
                            camera_event(&events, &cam.id, json!({"state": "disconnected", "reason": "shutdown"}))
                                .await;
                        }
                        break;
                    }
                }
            }
        };
        let reason = match &end {
            StreamEnd::Eos => "end of stream".to_string(),
            StreamEnd::Error(e) => e.clone(),
        };
        if connected {
            camera_event(&events, &cam.id, json!({"state": "disconnected", "reason": reason})).await;
        }
        if end == StreamEnd::Eos && !cam.is_live() && !cam.looping {
            info!("file source finished");
            finished = true;
            break;
        }
        failures = if started.elapsed() > HEALTHY_RUN { 1 } else { failures + 1 };
        let wait = if end == StreamEnd::Eos && cam.looping { Duration::ZERO } else { cam.reconnect.backoff(failures) };
        if end != StreamEnd::Eos {
            error!(retry_in = ?wait, "source failed: {reason}");
            status.set(CameraState::Backoff, Some(reason));
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    sink.tx.close();
    drop(sink);
    let _ = tokio::task::spawn_blocking(move || analysis.join()).await;
    status.set(if finished { CameraState::Finished } else { CameraState::Stopped }, None);
    info!("camera stopped");
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

/// Refresh every camera's rates once a second.
async fn sample_rates(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        registry.sample(last.elapsed());
        last = Instant::now();
    }
}

async fn camera_event(events: &mpsc::Sender<NewEvent>, camera: &str, data: serde_json::Value) {
    let ev = NewEvent {
        key: None,
        event_type: EventType::Camera,
        camera_id: camera.to_string(),
        timestamp: chrono::Utc::now(),
        frame_number: None,
        data,
        snapshot: None,
        crop: None,
    };
    let _ = events.send(ev).await;
}
