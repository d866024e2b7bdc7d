//! The raw limits a pipeline run is judged against: the best this machine does at each stage
//! alone, whatever vigil's own settings are.
//!
//! Inference is swept over one session of 1, 2, 4, … up to the cores intra-op threads, spinning
//! on and off, and over one single-threaded session per core, at 1, 2, 4 and 8 concurrent
//! callers (the batching service merges concurrent calls, so the callers also try every batch
//! size it can form). The best of each is the limit, and the report names the setting that
//! reached it, beside what the pipeline's own setting reaches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use vigil::config::{Config, InferenceConfig};
use vigil::detect::{Detector, Fit};
use vigil::frame::Frame;
use vigil::inference::{Runtime, Workload};
use vigil::metrics::Metrics;

/// How long each setting and caller count is measured.
const MEASURE: Duration = Duration::from_millis(1500);
/// Concurrent callers tried (one per camera's analysis thread).
pub const CALLERS: [usize; 4] = [1, 2, 4, 8];

/// One measured inference setting.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Setting {
    pub sessions: usize,
    pub threads: usize,
    pub spinning: bool,
    pub callers: usize,
    /// Detector frames per second, all callers.
    pub fps: f64,
    /// Of each call's time, the part in the model (`session.run`), milliseconds.
    pub model_ms: f64,
    /// Whole calls (crop and letterbox, model, decode and NMS), milliseconds per frame.
    pub call_ms: f64,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let spin = if self.spinning { "on" } else { "off" };
        match self.threads {
            1 => write!(f, "{} session(s) of 1 thread", self.sessions),
            n => write!(f, "{} session(s) of {n} threads, spinning {spin}", self.sessions),
        }
    }
}

/// The raw limits of one machine for one video.
#[derive(Serialize)]
pub struct Limits {
    pub decode_fps: f64,
    /// The model input (width × height) of the whole frames the inference limits ran on.
    pub frame_pixels: u64,
    /// The best setting at each caller count.
    pub best: Vec<Setting>,
    /// The pipeline's own `[inference]` setting at each caller count (as many cameras).
    pub configured: Vec<Setting>,
}

impl Limits {
    /// The best inference fps with as many concurrent callers as `cameras` can make.
    pub fn inference_for(&self, cameras: usize) -> f64 {
        let reachable = self.best.iter().filter(|s| s.callers <= cameras.max(1));
        reachable.map(|s| s.fps).fold(0.0, f64::max)
    }
}

/// Thread counts worth trying on this machine: powers of two below the cores, and the cores.
pub fn thread_counts() -> Vec<usize> {
    let cores = vigil::inference::cores();
    let mut out: Vec<usize> = std::iter::successors(Some(1usize), |t| Some(t * 2)).take_while(|&t| t < cores).collect();
    out.push(cores);
    out
}

/// Sweep the detector's settings on `frames` (`config`'s models and library).
pub fn inference(config: &Config, frames: &[Frame], decode_fps: f64) -> anyhow::Result<Limits> {
    let frames = Arc::new(frames.to_vec());
    let own: Vec<_> = CALLERS.iter().map(|_| effective(&config.inference)).collect();
    let mut best: Vec<Setting> = Vec::new();
    let mut configured = Vec::new();
    let mut frame_pixels = 0;
    let cores = vigil::inference::cores();
    // A single-threaded session has no pool to spin: spinning is tried only where there is one.
    let mut settings: Vec<(usize, usize, bool)> = thread_counts()
        .into_iter()
        .flat_map(|t| if t == 1 { vec![(1, 1, false)] } else { vec![(1, t, false), (1, t, true)] })
        .collect();
    settings.push((cores, 1, false));
    for o in &own {
        if !settings.contains(o) {
            settings.push(*o);
        }
    }
    for (sessions, threads, spinning) in settings {
        let cfg =
            InferenceConfig { sessions, intra_threads: threads, spinning: Some(spinning), ..config.inference.clone() };
        let metrics = Arc::new(Metrics::new());
        let runtime = Runtime::load(&cfg)?;
        let detector = Arc::new(Detector::load(&config.models, &runtime, &cfg, metrics.clone())?);
        let (w, h) = detector.input_size(frames[0].info.width(), frames[0].info.height(), Fit::Grid);
        frame_pixels = u64::from(w) * u64::from(h);
        for (&callers, own) in CALLERS.iter().zip(&own) {
            let s = measure(&detector, &frames, &metrics, (sessions, threads, spinning), callers);
            eprintln!("  {s}, {callers} caller(s): {:.1} fps, {:.1} ms in the model", s.fps, s.model_ms);
            match best.iter_mut().find(|b| b.callers == callers) {
                Some(b) if b.fps >= s.fps => {}
                Some(b) => *b = s,
                None => best.push(s),
            }
            if *own == (sessions, threads, spinning) {
                configured.push(s);
            }
        }
    }
    configured.sort_by_key(|s: &Setting| s.callers);
    Ok(Limits { decode_fps, frame_pixels, best, configured })
}

/// The (sessions, threads, spinning) the pipeline's detector runs with under `cfg`.
fn effective(cfg: &InferenceConfig) -> (usize, usize, bool) {
    let threads = Workload::Frames.threads(cfg);
    (Workload::Frames.sessions(cfg), threads, threads > 1 && Workload::Frames.spins(cfg))
}

fn measure(
    detector: &Arc<Detector>,
    frames: &Arc<Vec<Frame>>,
    metrics: &Metrics,
    (sessions, threads, spinning): (usize, usize, bool),
    callers: usize,
) -> Setting {
    // One warm-up call: the first run plans memory and is not representative.
    let f = &frames[0];
    let _ = detector.detect(&f.buffer, &f.info, None, Fit::Grid, 0.3);
    let model_before = model_seconds(metrics);
    let deadline = Instant::now() + MEASURE;
    let started = Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|c| {
            let (detector, frames) = (detector.clone(), frames.clone());
            std::thread::spawn(move || {
                let mut n = 0usize;
                while Instant::now() < deadline {
                    let f = &frames[(c + n) % frames.len()];
                    detector.detect(&f.buffer, &f.info, None, Fit::Grid, 0.3).expect("detector runs");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let done: usize = workers.into_iter().map(|t| t.join().expect("inference thread")).sum();
    let secs = started.elapsed().as_secs_f64();
    let fps = done as f64 / secs;
    let model_ms = (model_seconds(metrics) - model_before) * 1000.0 / done.max(1) as f64;
    Setting { sessions, threads, spinning, callers, fps, model_ms, call_ms: 1000.0 / fps }
}

/// Seconds spent in model calls so far, all models.
fn model_seconds(metrics: &Metrics) -> f64 {
    crate::cmds::bench::model_time(metrics).iter().map(|m| m.secs).sum()
}
