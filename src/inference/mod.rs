//! Inference: loads ONNX Runtime, opens sessions, and runs one batching service per model that
//! every camera shares (the nvstreammux idea: N cameras, one session, one GPU).
//!
//! A [`Batcher`] owns one or more sessions of a model, each on a dedicated thread that takes
//! requests from one shared queue. Callers send one item (a tensor without the batch dimension)
//! and block for its result; a free session's thread stacks whatever items are waiting, up to
//! `max_batch` or until `batch_window_ms` after the first, and runs them as one call, unless
//! another session is free to run them beside it. Several sessions of one thread each use the
//! cores better than one session of several threads, whose threads wait on each other at every
//! operator; one session of several threads is quicker for a lone caller that waits for each
//! answer. Callers must not hold locks while waiting: a request takes one model call's time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub mod manifest;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;
use ort::value::{Tensor, ValueType};
use tracing::{info, warn};

use crate::config::{InferenceConfig, Provider};
use crate::error::{ErrorKind, Kinded};
use crate::metrics::Metrics;

/// The library version vigil is built against (`ort` api-31).
pub const ORT_VERSION: &str = "1.31.1";
const ORT_INSTALLED: &str = "/usr/local/lib/libonnxruntime.so.1.31.1";

/// An inference failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "cannot load ONNX Runtime {ORT_VERSION} from {path}: {reason} (run scripts/setup, or set ORT_DYLIB_PATH or [inference] library)"
    )]
    Library { path: String, reason: String },
    #[error("model {path}: {reason}")]
    Model { path: String, reason: String },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("the inference service has stopped")]
    Stopped,
    #[error("no answer from the model within {0:.1} s")]
    Timeout(f64),
}

impl Kinded for InferenceError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The library or a model file is missing or wrong: an operator must act.
            Self::Library { .. } | Self::Model { .. } | Self::Stopped => ErrorKind::Fatal,
            // One call failed or was late; the next input may well succeed.
            Self::Run(_) | Self::Timeout(_) => ErrorKind::Retry,
        }
    }
}

/// What a session is for; it decides the defaults that suit its load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// A fixed-shape model called on frames, back to back on a busy camera (the detector):
    /// memory plans kept, idle threads spin unless `[inference] spinning = false`.
    Frames,
    /// Models fed regions of any size a few times a second (plate text): no per-shape memory
    /// plans (one plan and arena block per shape would grow memory with every new size), idle
    /// threads sleep unless `[inference] spinning = true`.
    Regions,
}

impl Workload {
    /// Whether this workload's idle intra-op threads spin under `cfg`.
    pub fn spins(self, cfg: &InferenceConfig) -> bool {
        cfg.spinning.unwrap_or(self == Workload::Frames)
    }

    /// Intra-op threads per session under `cfg`: as configured, else the cores shared among the
    /// sessions for frames, and every core for regions.
    pub fn threads(self, cfg: &InferenceConfig) -> usize {
        match (cfg.intra_threads, self) {
            (0, Workload::Frames) => (cores() / self.sessions(cfg)).max(1),
            (0, Workload::Regions) => cores(),
            (n, _) => n,
        }
    }

    /// Sessions under `cfg`: as configured, else one per core (up to 8) for frames; one for
    /// regions, whose reads are few and want every core.
    pub fn sessions(self, cfg: &InferenceConfig) -> usize {
        match (cfg.sessions, self) {
            (_, Workload::Regions) => 1,
            (0, Workload::Frames) => cores().min(MAX_SESSIONS),
            (n, Workload::Frames) => n,
        }
    }
}

/// `cfg` for one caller that waits for each answer (`vigil anpr` on stills), where it leaves the
/// detector's sessions to vigil: one session with a thread per core, so a lone call uses them
/// all. Cameras keep one single-threaded session per core: each submits its detection and goes
/// on with its next frames, so decoding and motion run on the other cores meanwhile, and calls
/// from several cameras run side by side without waiting on each other's threads.
///
/// Such a caller also waits up to [`ONE_CALLER_WAIT`] for an answer. A camera's timeout exists
/// to restart analysis that stalls while frames keep coming; a still has no next frame, and on a
/// starved host (a shared machine, a build beside it) a call that takes 20 s is slow, not hung:
/// failing it would end a whole `vigil bench anpr` set.
pub fn for_one_caller(cfg: &InferenceConfig) -> InferenceConfig {
    InferenceConfig {
        sessions: cfg.sessions.max(1),
        timeout_secs: cfg.timeout_secs.max(ONE_CALLER_WAIT.as_secs_f64()),
        ..cfg.clone()
    }
}

/// The least time a caller that waits for each answer gives a model (see [`for_one_caller`]).
const ONE_CALLER_WAIT: Duration = Duration::from_secs(120);

/// Most detector sessions vigil opens on its own: past this, more sessions only add memory.
const MAX_SESSIONS: usize = 8;

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The loaded ONNX Runtime library and the session settings from `[inference]`.
pub struct Runtime {
    env: Environment,
    cfg: InferenceConfig,
}

impl Runtime {
    /// Load the library once per process (later calls reuse it; the first library path wins).
    pub fn load(cfg: &InferenceConfig) -> Result<Arc<Self>, InferenceError> {
        static ENV: OnceLock<Result<Environment, InferenceError>> = OnceLock::new();
        let env = ENV.get_or_init(|| {
            let path = library_path(cfg);
            let err = |reason: String| InferenceError::Library { path: path.display().to_string(), reason };
            let builder = ort::init_from(&path).map_err(|e| err(e.to_string()))?;
            builder.with_name("vigil").build().map_err(|e| err(e.to_string()))
        });
        let env = env.as_ref().map_err(Clone::clone)?.clone();
        Ok(Arc::new(Self { env, cfg: cfg.clone() }))
    }

    /// Open a model for `workload` with the configured provider, threads and spinning.
    pub fn session(&self, path: &Path, workload: Workload) -> Result<Session, InferenceError> {
        let err = |reason: String| InferenceError::Model { path: path.display().to_string(), reason };
        if !path.is_file() {
            return Err(err("file not found (run scripts/setup)".into()));
        }
        let mut builder = Session::builder(&self.env).map_err(|e| err(e.to_string()))?;
        builder = builder.with_intra_op_spinning(workload.spins(&self.cfg)).map_err(|e| err(e.to_string()))?;
        if workload == Workload::Regions {
            builder = builder.with_memory_pattern(false).map_err(|e| err(e.to_string()))?;
        }
        builder = builder.with_intra_threads(workload.threads(&self.cfg)).map_err(|e| err(e.to_string()))?;
        let providers = self.providers();
        if !providers.is_empty() {
            builder = builder.with_execution_providers(providers).map_err(|e| err(e.to_string()))?;
        }
        builder.commit_from_file(path).map_err(|e| err(e.to_string()))
    }

    /// As many sessions of one model as `workload` gets (a [`Batcher`] serves from all of them).
    pub fn sessions(&self, path: &Path, workload: Workload) -> Result<Vec<Session>, InferenceError> {
        (0..workload.sessions(&self.cfg)).map(|_| self.session(path, workload)).collect()
    }

    /// The requested execution providers that this library has; missing ones fall back to CPU.
    fn providers(&self) -> Vec<ep::ExecutionProviderDispatch> {
        let cuda = || ep::CUDA::default().with_device_id(self.cfg.device_id);
        let wanted: Vec<(&str, bool, ep::ExecutionProviderDispatch)> = match self.cfg.provider {
            Provider::Cpu => Vec::new(),
            Provider::Cuda => vec![("CUDA", ep::CUDA::is_available().unwrap_or(false), cuda().build())],
            Provider::Tensorrt => vec![
                (
                    "TensorRT",
                    ep::TensorRT::is_available().unwrap_or(false),
                    ep::TensorRT::default().with_device_id(self.cfg.device_id).build(),
                ),
                ("CUDA", ep::CUDA::is_available().unwrap_or(false), cuda().build()),
            ],
        };
        let mut out = Vec::new();
        for (name, available, dispatch) in wanted {
            if available {
                out.push(dispatch);
            } else {
                warn!("ONNX Runtime has no {name} execution provider; falling back to CPU");
            }
        }
        out
    }
}

/// The fastest of `runs` calls of `session` on one input of `shape` (batch dimension included),
/// timed around `session.run` alone: the model's own cost on this machine now, nothing of
/// vigil's around it, against which the time its callers spend is read.
pub fn raw_call(session: &mut Session, shape: &[usize], runs: usize) -> Result<Duration, InferenceError> {
    let run_err = |e: ort::Error| InferenceError::Run(e.to_string());
    let input = session.inputs().first().map(|i| i.name().to_string()).unwrap_or_default();
    let data = vec![0.5f32; shape.iter().product()];
    let mut best = Duration::MAX;
    // The first call plans memory and is not timed.
    for i in 0..=runs {
        let tensor = Tensor::from_array((shape.to_vec(), data.clone())).map_err(run_err)?;
        let started = Instant::now();
        session.run(ort::inputs![input.as_str() => tensor]).map_err(run_err)?;
        if i > 0 {
            best = best.min(started.elapsed());
        }
    }
    Ok(best)
}

fn library_path(cfg: &InferenceConfig) -> PathBuf {
    cfg.library
        .clone()
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(ORT_INSTALLED))
}

/// One item's result: the output tensor without its batch dimension.
#[derive(Debug, Clone)]
pub struct Output {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    /// When the model call that produced it returned.
    pub done: Instant,
}

struct Request {
    shape: Vec<usize>,
    data: Vec<f32>,
    reply: mpsc::SyncSender<Result<Output, InferenceError>>,
}

/// A handle to a model's batching service; cheap to clone, one per camera.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::SyncSender<Request>,
    /// How long a caller waits for its answer, queueing included.
    timeout: Duration,
    /// Whether the model accepts a batch larger than one.
    pub dynamic_batch: bool,
}

impl Batcher {
    /// Start one service thread per session (all of one model). They end when every handle is
    /// dropped.
    pub fn spawn(name: &str, sessions: Vec<Session>, cfg: &InferenceConfig, metrics: Arc<Metrics>) -> Self {
        let dynamic_batch = match sessions.first().and_then(|s| s.inputs().first()).map(|i| i.dtype()) {
            Some(ValueType::Tensor { shape, .. }) => shape.first().is_some_and(|d| *d != 1),
            _ => false,
        };
        let max_batch = if dynamic_batch { cfg.max_batch } else { 1 };
        if !dynamic_batch && cfg.max_batch > 1 {
            info!(model = name, "model has a fixed batch of 1; requests run one at a time");
        }
        let window = Duration::from_secs_f64(cfg.batch_window_ms / 1000.0);
        let (tx, rx) = mpsc::sync_channel::<Request>(256);
        let queue = Arc::new(Queue { rx: Mutex::new(rx), idle: AtomicUsize::new(0) });
        for (i, session) in sessions.into_iter().enumerate() {
            let (model, queue, metrics) = (name.to_string(), queue.clone(), metrics.clone());
            std::thread::Builder::new()
                .name(format!("infer-{name}-{i}"))
                .spawn(move || serve(session, &queue, max_batch, window, &model, &metrics))
                .expect("spawn inference thread");
        }
        Self { tx, timeout: cfg.timeout(), dynamic_batch }
    }

    /// Run one item (`shape` without the batch dimension) and wait for its output.
    pub fn infer(&self, shape: &[usize], data: Vec<f32>) -> Result<Output, InferenceError> {
        self.submit(shape, data)?.wait()
    }

    /// Queue one item and return at once; its [`Ticket`] gives the output when it is ready, so
    /// the caller can go on with other work while the model runs.
    pub fn submit(&self, shape: &[usize], data: Vec<f32>) -> Result<Ticket, InferenceError> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx.send(Request { shape: shape.to_vec(), data, reply }).map_err(|_| InferenceError::Stopped)?;
        Ok(Ticket { rx, answer: None, deadline: Instant::now() + self.timeout, timeout: self.timeout })
    }

    /// Submit several items at once (so they can share calls) and wait for all, in order. Items
    /// not answered within the timeout (a hung or swamped model) fail with
    /// [`InferenceError::Timeout`]; their late answers are dropped.
    pub fn infer_many(&self, items: Vec<(Vec<usize>, Vec<f32>)>) -> Vec<Result<Output, InferenceError>> {
        let tickets: Vec<_> = items.into_iter().map(|(shape, data)| self.submit(&shape, data)).collect();
        tickets.into_iter().map(|t| t.and_then(Ticket::wait)).collect()
    }
}

/// One submitted item's claim on its output.
pub struct Ticket {
    rx: mpsc::Receiver<Result<Output, InferenceError>>,
    /// The answer, once [`Ticket::ready`] has seen it.
    answer: Option<Result<Output, InferenceError>>,
    deadline: Instant,
    timeout: Duration,
}

impl Ticket {
    /// Whether the output is in (or the item has failed); never waits.
    pub fn ready(&mut self) -> bool {
        if self.answer.is_none() {
            self.answer = match self.rx.try_recv() {
                Ok(answer) => Some(answer),
                Err(mpsc::TryRecvError::Empty) => None,
                Err(mpsc::TryRecvError::Disconnected) => Some(Err(InferenceError::Stopped)),
            };
        }
        self.answer.is_some()
    }

    /// The output, waiting for it until the deadline set at submission.
    pub fn wait(self) -> Result<Output, InferenceError> {
        if let Some(answer) = self.answer {
            return answer;
        }
        match self.rx.recv_timeout(self.deadline.saturating_duration_since(Instant::now())) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => Err(InferenceError::Timeout(self.timeout.as_secs_f64())),
            Err(RecvTimeoutError::Disconnected) => Err(InferenceError::Stopped),
        }
    }
}

/// The requests for one model, shared by its session threads.
struct Queue {
    rx: Mutex<mpsc::Receiver<Request>>,
    /// Session threads waiting for a request.
    idle: AtomicUsize,
}

/// Take the next batch from the shared queue: the first request (waiting for it), then what
/// else comes within `window`, up to `max_batch`, while no other session is free. `None` once
/// every handle is gone.
fn next_batch(queue: &Queue, max_batch: usize, window: Duration) -> Option<Vec<Request>> {
    // Only the session thread holding the queue waits on it; the others wait for the lock.
    queue.idle.fetch_add(1, Ordering::SeqCst);
    let rx = queue.rx.lock().unwrap_or_else(|p| p.into_inner());
    let first = rx.recv();
    queue.idle.fetch_sub(1, Ordering::SeqCst);
    let mut batch = vec![first.ok()?];
    let deadline = Instant::now() + window;
    // A call of several items costs each about what it costs alone on a CPU, so a request that a
    // free session can run beside this call is left to it: batching into one call while another
    // session sat idle ran one camera's two detections one after the other.
    while batch.len() < max_batch && queue.idle.load(Ordering::SeqCst) == 0 {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(r) => batch.push(r),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

fn serve(mut session: Session, queue: &Queue, max_batch: usize, window: Duration, model: &str, metrics: &Metrics) {
    let input = session.inputs().first().map(|i| i.name().to_string()).unwrap_or_default();
    while let Some(mut batch) = next_batch(queue, max_batch, window) {
        // Items of different shapes (e.g. OCR line widths) cannot share a call.
        while !batch.is_empty() {
            let shape = batch[0].shape.clone();
            let (mut same, rest): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| r.shape == shape);
            batch = rest;
            let started = Instant::now();
            let result = run(&mut session, &input, &shape, &mut same);
            metrics.inference_observed(model, same.len(), started.elapsed());
            match result {
                Ok(outputs) => {
                    for (req, out) in same.into_iter().zip(outputs) {
                        let _ = req.reply.send(Ok(out));
                    }
                }
                Err(e) => {
                    for req in same {
                        let _ = req.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }
}

fn run(
    session: &mut Session,
    input: &str,
    shape: &[usize],
    items: &mut [Request],
) -> Result<Vec<Output>, InferenceError> {
    let run_err = |e: ort::Error| InferenceError::Run(e.to_string());
    let n = items.len();
    let mut full_shape = vec![n];
    full_shape.extend_from_slice(shape);
    // A lone item's tensor moves into the call; a batch is laid end to end.
    let data = match items {
        [one] => std::mem::take(&mut one.data),
        _ => {
            let mut data = Vec::with_capacity(items.iter().map(|r| r.data.len()).sum());
            for r in items.iter() {
                data.extend_from_slice(&r.data);
            }
            data
        }
    };
    let tensor = Tensor::from_array((full_shape, data)).map_err(run_err)?;
    let outputs = session.run(ort::inputs![input => tensor]).map_err(run_err)?;
    let (out_shape, values) = outputs[0].try_extract_tensor::<f32>().map_err(run_err)?;
    let dims: Vec<usize> = out_shape.iter().map(|&d| d.max(0) as usize).collect();
    if dims.first() != Some(&n) {
        return Err(InferenceError::Run(format!("output batch {dims:?} for {n} inputs")));
    }
    let per = values.len() / n;
    let done = Instant::now();
    Ok(values.chunks(per).map(|c| Output { shape: dims[1..].to_vec(), data: c.to_vec(), done }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_that_waits_for_each_answer_waits_longer_than_a_camera() {
        let camera = InferenceConfig::default();
        let still = for_one_caller(&camera);
        assert!(camera.timeout() < ONE_CALLER_WAIT, "{:?}", camera.timeout());
        assert_eq!(still.timeout(), ONE_CALLER_WAIT);
        // A longer wait set in the configuration is kept.
        let patient = for_one_caller(&InferenceConfig { timeout_secs: 300.0, ..InferenceConfig::default() });
        assert_eq!(patient.timeout(), Duration::from_secs(300));
        assert_eq!(still.sessions, 1);
    }
}
