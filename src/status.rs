//! Live per-camera status for the API: state, last error, rates, drops, inference latency.
//!
//! The supervisor sets states and errors; a sampler turns the frame counters into rates once a
//! second; the object stage records its detector latencies. Readers get a [`CameraReport`], and
//! the page's camera tiles the latest analysed frame ([`Preview`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::frame::Frame;
use crate::metrics::CameraMetrics;

/// Latency samples kept per camera for p50/p95.
const LATENCY_SAMPLES: usize = 200;

/// Where a camera's source is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    Connecting,
    Streaming,
    /// Waiting before the next reconnect.
    Backoff,
    /// A file source that reached its end.
    Finished,
    Stopped,
}

/// Whether a camera's analysis is running, or waiting to start again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisState {
    Running,
    /// It panicked or stopped making progress, and starts again after a backoff; frames are
    /// dropped meanwhile.
    Restarting,
}

/// What the API shows for one camera.
#[derive(Debug, Clone, Serialize)]
pub struct CameraReport {
    pub id: String,
    pub state: CameraState,
    /// Redacted.
    pub last_error: Option<String>,
    pub analysis: AnalysisState,
    /// Times analysis was started again after a panic or a stall.
    pub analysis_restarts: u64,
    pub decode_fps: f64,
    pub analysed_fps: f64,
    pub detect_fps: f64,
    pub frames_decoded: u64,
    pub frames_dropped: u64,
    pub queue_depth: i64,
    pub last_frame: Option<String>,
    pub inference_ms: Latency,
}

/// Detector latency percentiles over the recent calls, milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

struct Inner {
    state: CameraState,
    analysis: AnalysisState,
    last_error: Option<String>,
    last_frame: Option<DateTime<Utc>>,
    rates: [f64; 3],
    last_counts: [u64; 3],
    latencies: VecDeque<f32>,
}

/// One camera's status.
pub struct CameraStatus {
    pub id: String,
    /// The latest analysed frame, while someone looks at it.
    pub preview: Preview,
    metrics: CameraMetrics,
    inner: Mutex<Inner>,
}

/// A preview is kept this long after the last time someone asked for it.
const PREVIEW_WATCHED: Duration = Duration::from_secs(10);
/// At most one frame per this interval is kept: a page polls every couple of seconds.
const PREVIEW_EVERY: Duration = Duration::from_millis(500);

/// The camera's latest analysed frame, for the page's tile. Kept only while a viewer has asked
/// in the last [`PREVIEW_WATCHED`], so an unwatched camera pins no decoded buffer and pays one
/// uncontended lock per frame; it is encoded by whoever asks, never by the analysis thread.
#[derive(Default)]
pub struct Preview(Mutex<PreviewInner>);

#[derive(Default)]
struct PreviewInner {
    asked: Option<Instant>,
    /// The frame and when it was kept.
    kept: Option<(Instant, Frame)>,
}

impl Preview {
    /// Offer the frame just analysed; kept when watched and the kept one is due for a change.
    pub fn offer(&self, frame: &Frame) {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if inner.asked.is_none_or(|asked| asked.elapsed() >= PREVIEW_WATCHED) {
            inner.kept = None;
        } else if inner.kept.as_ref().is_none_or(|(at, ..)| at.elapsed() >= PREVIEW_EVERY) {
            inner.kept = Some((Instant::now(), frame.clone()));
        }
    }

    /// The latest frame kept; asking starts (or keeps) the watch.
    pub fn latest(&self) -> Option<Frame> {
        let mut inner = self.0.lock().unwrap_or_else(|p| p.into_inner());
        inner.asked = Some(Instant::now());
        inner.kept.as_ref().map(|(_, frame)| frame.clone())
    }
}

impl CameraStatus {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Set the state, and the error that caused it when there is one.
    pub fn set(&self, state: CameraState, error: Option<String>) {
        let mut inner = self.lock();
        inner.state = state;
        if error.is_some() {
            inner.last_error = error;
        }
    }

    /// Analysis failed with `error` and waits to start again.
    pub fn analysis_failed(&self, error: String) {
        let mut inner = self.lock();
        inner.analysis = AnalysisState::Restarting;
        inner.last_error = Some(error);
    }

    /// Analysis is running (again).
    pub fn analysis_running(&self) {
        self.lock().analysis = AnalysisState::Running;
    }

    /// Record one detector call.
    pub fn inference(&self, took: Duration) {
        let mut inner = self.lock();
        if inner.latencies.len() == LATENCY_SAMPLES {
            inner.latencies.pop_front();
        }
        inner.latencies.push_back(took.as_secs_f32() * 1000.0);
    }

    /// Turn counter deltas over `elapsed` into rates.
    fn sample(&self, elapsed: Duration) {
        let m = &self.metrics;
        let counts = [m.decoded.get(), m.analysed.get(), m.detected.get()];
        let mut inner = self.lock();
        let secs = elapsed.as_secs_f64().max(1e-3);
        let last = inner.last_counts;
        for ((rate, now), before) in inner.rates.iter_mut().zip(counts).zip(last) {
            *rate = now.saturating_sub(before) as f64 / secs;
        }
        if counts[0] > inner.last_counts[0] {
            inner.last_frame = Some(Utc::now());
        }
        inner.last_counts = counts;
    }

    pub fn report(&self) -> CameraReport {
        let inner = self.lock();
        let mut sorted: Vec<f32> = inner.latencies.iter().copied().collect();
        sorted.sort_by(f32::total_cmp);
        let pct =
            |p: f64| (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64);
        CameraReport {
            id: self.id.clone(),
            state: inner.state,
            last_error: inner.last_error.clone(),
            analysis: inner.analysis,
            analysis_restarts: self.metrics.analysis_panics.get() + self.metrics.analysis_stalls.get(),
            decode_fps: inner.rates[0],
            analysed_fps: inner.rates[1],
            detect_fps: inner.rates[2],
            frames_decoded: self.metrics.decoded.get(),
            frames_dropped: self.metrics.dropped_backpressure.get(),
            queue_depth: self.metrics.queue_depth.get(),
            last_frame: inner.last_frame.as_ref().map(crate::events::format_ts),
            inference_ms: Latency { p50: pct(0.5), p95: pct(0.95) },
        }
    }
}

/// Every camera's status, by id.
#[derive(Default)]
pub struct Registry {
    cameras: RwLock<BTreeMap<String, Arc<CameraStatus>>>,
}

impl Registry {
    /// Add (or replace) a camera, starting in `connecting`.
    pub fn add(&self, id: &str, metrics: CameraMetrics) -> Arc<CameraStatus> {
        let status = Arc::new(CameraStatus {
            id: id.to_string(),
            preview: Preview::default(),
            metrics,
            inner: Mutex::new(Inner {
                state: CameraState::Connecting,
                analysis: AnalysisState::Running,
                last_error: None,
                last_frame: None,
                rates: [0.0; 3],
                last_counts: [0; 3],
                latencies: VecDeque::new(),
            }),
        });
        self.cameras.write().unwrap_or_else(|p| p.into_inner()).insert(id.to_string(), status.clone());
        status
    }

    /// Forget a camera that was removed.
    pub fn remove(&self, id: &str) {
        self.cameras.write().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// One camera's report.
    pub fn report(&self, id: &str) -> Option<CameraReport> {
        self.cameras.read().unwrap_or_else(|p| p.into_inner()).get(id).map(|c| c.report())
    }

    /// One camera's status, to read its preview.
    pub fn get(&self, id: &str) -> Option<Arc<CameraStatus>> {
        self.cameras.read().unwrap_or_else(|p| p.into_inner()).get(id).cloned()
    }

    pub fn reports(&self) -> Vec<CameraReport> {
        self.cameras.read().unwrap_or_else(|p| p.into_inner()).values().map(|c| c.report()).collect()
    }

    /// Update every camera's rates; call about once a second.
    pub fn sample(&self, elapsed: Duration) {
        for c in self.cameras.read().unwrap_or_else(|p| p.into_inner()).values() {
            c.sample(elapsed);
        }
    }
}
