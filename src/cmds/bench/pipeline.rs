//! `vigil bench pipeline`: the whole pipeline on one video, measured against the raw limits of
//! the same machine in the same run.
//!
//! 1. Raw decode: the camera's own GStreamer pipeline into a channel that is drained at once.
//! 2. Raw inference: the detector alone on decoded frames, from 1 to 8 concurrent callers (the
//!    batching service merges concurrent calls into batches).
//! 3. The real supervisor on 1..N looping file cameras per stage set, with frames that block the
//!    decoder when analysis is behind, so throughput is what the stages allow; or, with
//!    `--live`, on RTSP streams of the video at its own rate, which drop frames instead.
//!
//! The limit for a run is the rate the machine would reach if the decode and inference work just
//! added up: `1 / (1/decode + d·c/inference)`, where `d` is the share of frames the run actually
//! sent to the detector (motion gates detection), `c` the model input of its runs as a share of a
//! whole frame's (a crop around motion costs less), and `inference` the best raw rate this
//! machine reaches with as many concurrent callers as the run has cameras, over every thread
//! count and spinning setting ([`super::limits`]), not vigil's own setting. Files run as fast as
//! the stages allow (the decoder waits for analysis), so this is throughput; latency here
//! includes that queueing.
//!
//! With `--reference`, the plain Python pipeline ([`super::reference`]) runs after each `detect`
//! run on the same clip and camera count, and a side-by-side table gives medians over
//! `--rounds`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use vigil::channel::{self, Policy, Recv};
use vigil::config::{CameraConfig, Config};
use vigil::frame::Frame;
use vigil::ingest::{FrameSink, SourceHealth, Streamer};
use vigil::metrics::Metrics;
use vigil::supervisor::{self, Scope};

use super::limits::Limits;
use super::reference::{PYTHON_ENV, RefRun, Reference};
use vigil::inference::manifest::Manifest;

/// Which stages a run includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stages {
    /// Motion only.
    Motion,
    /// Motion, detection and tracking.
    Detect,
    /// Motion, detection, tracking and plate reading.
    Anpr,
}

#[derive(clap::Args)]
pub struct PipelineArgs {
    /// The video (default: the demo sample).
    #[arg(long)]
    video: Option<PathBuf>,
    /// Seconds each run is measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds each run warms up before it is measured (pools, arenas, tracks fill up).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Camera counts to run.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8])]
    cameras: Vec<usize>,
    /// Stage sets to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Stages::Motion, Stages::Detect, Stages::Anpr])]
    stages: Vec<Stages>,
    /// The models directory.
    #[arg(long, default_value = "models")]
    models: PathBuf,
    /// Redis to publish to; frame-to-publish latency is measured by subscribing to it.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Serve the video over RTSP at its own frame rate instead (live cameras: frames are dropped,
    /// not queued, when analysis is behind), for latency and memory under overload.
    #[arg(long)]
    live: bool,
    /// The pipeline's intra-op threads per session (`[inference] intra_threads`; 0: the default).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// The pipeline's detector sessions (`[inference] sessions`; 0: one per core, up to 8).
    #[arg(long, default_value_t = 0)]
    sessions: usize,
    /// Whether the pipeline's idle intra-op threads spin (`[inference] spinning`; default: the
    /// detector's do, the plate models' don't).
    #[arg(long)]
    spinning: Option<bool>,
    /// Detections per second of video per camera (the reference's `--detect-fps`, 5).
    #[arg(long, default_value_t = 5.0)]
    detect_fps: f64,
    /// Run the plain Python reference pipeline (`../shared/reference`) with this Python, beside
    /// each `detect` run, on the same clip and camera count (default: `$VIGIL_REFERENCE_PYTHON`).
    #[arg(long)]
    reference: Option<PathBuf>,
    /// The reference script.
    #[arg(long)]
    reference_script: Option<PathBuf>,
    /// Rounds of every run; with the reference, vigil and it alternate in each round, and the
    /// side-by-side table gives medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Print JSON instead of the table.
    #[arg(long)]
    json: bool,
}

/// One pipeline run.
#[derive(Serialize)]
struct Run {
    stages: Stages,
    cameras: usize,
    /// Frames through analysis per second, all cameras.
    fps: f64,
    /// Share of analysed frames that went through the detector.
    detected_share: f64,
    /// Model input per detector run as a share of a whole frame's: crops around motion cost less.
    input_share: f64,
    limit_fps: f64,
    ratio: f64,
    dropped: u64,
    /// Regions read for plates, and plate reads skipped because the readers were busy.
    plate_reads: [u64; 2],
    /// Frame to Redis message, for events emitted at their frame (`start`s), milliseconds.
    latency_ms: Option<[f64; 3]>,
    peak_rss_mb: f64,
    /// Growth of resident memory's floor over the measured window: the lowest sample in its last
    /// quarter minus the lowest in its first (a transient allocation at either end is not growth).
    rss_growth_mb: f64,
    cpu_per_camera_pct: f64,
}

pub fn run(args: PipelineArgs) -> anyhow::Result<()> {
    let video = match &args.video {
        Some(v) => v.clone(),
        None => crate::cmds::demo::default_video().context("no sample video; run scripts/setup or pass --video")?,
    };
    let video = std::fs::canonicalize(&video).with_context(|| format!("video {}", video.display()))?;
    let reference = Reference::find(args.reference.clone(), args.reference_script.clone())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let server = match args.live {
        true => Some(vigil::sample::SampleServer::start(&video, "bench", 0)?),
        false => None,
    };
    let file = format!("file://{}", video.display());
    let probe = config(&args, &file, 1, Stages::Detect, &scratch(0))?;
    eprintln!("measuring raw decode …");
    let (decode_fps, frames) = raw_decode(&probe.cameras[0], &runtime)?;
    eprintln!("measuring raw inference …");
    let limits = super::limits::inference(&probe, &frames, decode_fps)?;
    let model = {
        let manifest = Manifest::load(&probe.models)?;
        manifest.path(&manifest.get(&probe.models.detector)?.file)
    };
    let (mut runs, mut pairs) = (Vec::new(), Vec::new());
    let mut n = 0;
    for round in 0..args.rounds.max(1) {
        for stages in &args.stages {
            for &cams in &args.cameras {
                eprintln!("round {}: running {cams} camera(s), {stages:?} …", round + 1);
                n += 1;
                let dir = scratch(n);
                let source = server.as_ref().map_or_else(|| file.clone(), |s| s.url());
                let config = config(&args, &source, cams, *stages, &dir)?;
                let run = runtime.block_on(pipeline(config, *stages, cams, &args, &limits));
                let _ = std::fs::remove_dir_all(&dir);
                let run = run?;
                if let (Some(r), Stages::Detect, false) = (&reference, stages, args.live) {
                    eprintln!("round {}: running the reference, {cams} process(es) …", round + 1);
                    let theirs = r.run(&video, &model, cams, args.detect_fps, &args.redis)?;
                    pairs.push((run.fps, run.detected_share, theirs));
                }
                runs.push(run);
            }
        }
    }
    let side_by_side = side_by_side(&args.cameras, &pairs);
    let _ = std::fs::remove_dir_all(scratch(0));
    if args.json {
        let reference = match reference {
            Some(_) => serde_json::json!(side_by_side),
            None => serde_json::json!("reference not run"),
        };
        println!("{}", serde_json::json!({ "video": video, "limits": limits, "runs": runs, "reference": reference }));
    } else {
        print_table(&video, &limits, &runs);
        match reference {
            Some(_) => print_side_by_side(&side_by_side),
            None => println!("\nreference not run (pass --reference PYTHON or set ${PYTHON_ENV})"),
        }
    }
    runtime.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// A fresh scratch directory for one run's database and snapshots.
fn scratch(n: usize) -> PathBuf {
    std::env::temp_dir().join(format!("vigil-bench-{}-{n}", std::process::id()))
}

/// A config with `cameras` cameras on `source` (a looping file, or the RTSP server), running `stages`.
fn config(args: &PipelineArgs, source: &str, cameras: usize, stages: Stages, dir: &Path) -> anyhow::Result<Config> {
    std::fs::create_dir_all(dir)?;
    let models = std::fs::canonicalize(&args.models).with_context(|| format!("models {}", args.models.display()))?;
    let mut toml = format!(
        "[database]\nurl = \"sqlite://{}\"\n[redis]\nurl = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\nsnapshots_dir = \"{}\"\n[models]\ndir = \"{}\"\n\
         [inference]\nintra_threads = {}\nsessions = {}\n{}",
        dir.join("bench.db").display(),
        args.redis,
        dir.join("snaps").display(),
        models.display(),
        args.threads,
        args.sessions,
        args.spinning.map_or(String::new(), |s| format!("spinning = {s}\n"))
    );
    for i in 0..cameras {
        toml.push_str(&format!(
            "[[cameras]]\nid = \"bench-{i}\"\nurl = \"{source}\"\nloop = {}\ndetect_fps = {}\n\
             [cameras.detection]\nenabled = {}\n[cameras.anpr]\nenabled = {}\n",
            source.starts_with("file:"),
            args.detect_fps,
            stages != Stages::Motion,
            stages == Stages::Anpr
        ));
    }
    Ok(Config::parse(&toml, "bench")?)
}

/// Decode the video with the camera's pipeline, draining frames at once, for at least 3 s;
/// returns frames per second and a few frames kept for the inference measurement.
fn raw_decode(cam: &CameraConfig, runtime: &tokio::runtime::Runtime) -> anyhow::Result<(f64, Vec<Frame>)> {
    let metrics = Metrics::new();
    let (mut frames, mut kept) = (0u64, Vec::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        let (tx, rx) = channel::bounded(8, Policy::Block);
        let sink = FrameSink {
            camera: "raw".into(),
            tx,
            seq: Arc::new(AtomicU64::new(0)),
            metrics: metrics.camera("raw"),
            health: Arc::new(SourceHealth::default()),
            epoch: Instant::now(),
        };
        let keep = kept.is_empty();
        let drain = std::thread::spawn(move || {
            let (mut n, mut keep_frames) = (0u64, Vec::new());
            loop {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Recv::Item(frame) => {
                        n += 1;
                        if keep && n % 10 == 0 && keep_frames.len() < 16 {
                            keep_frames.extend(frame.detached().ok());
                        }
                    }
                    Recv::Timeout => {}
                    Recv::Closed => return (n, keep_frames),
                }
            }
        });
        let streamer = Streamer::build(cam, sink.clone())?;
        streamer.start()?;
        runtime.block_on(streamer.wait());
        drop(streamer);
        sink.tx.close();
        let (n, k) = drain.join().expect("drain thread");
        frames += n;
        if keep {
            kept = k;
        }
    }
    anyhow::ensure!(!kept.is_empty(), "the video gave no frames");
    Ok((frames as f64 / started.elapsed().as_secs_f64(), kept))
}

/// How often resident memory is sampled during a run.
const RSS_SAMPLE: Duration = Duration::from_millis(500);

/// Run the supervisor on `config` and measure it.
async fn pipeline(
    config: Config,
    stages: Stages,
    cams: usize,
    args: &PipelineArgs,
    limits: &Limits,
) -> anyhow::Result<Run> {
    let ids: Vec<String> = config.cameras.iter().map(|c| c.id.clone()).collect();
    let metrics = Arc::new(Metrics::new());
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let shutdown = CancellationToken::new();
    let listener = tokio::spawn(listen(args.redis.clone(), latencies.clone(), shutdown.clone()));
    reset_peak_rss();
    let task = tokio::spawn(supervisor::run(config, Scope::default(), metrics.clone(), shutdown.clone()));
    let sum = |f: fn(&vigil::metrics::CameraMetrics) -> u64| ids.iter().map(|id| f(&metrics.camera(id))).sum::<u64>();
    let deadline = Instant::now() + Duration::from_secs(60);
    while sum(|m| m.analysed.get()) == 0 {
        anyhow::ensure!(!task.is_finished() && Instant::now() < deadline, "the pipeline did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    latencies.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let (analysed0, detected0, pixels0, dropped0, plates0, cpu0, t0) = (
        sum(|m| m.analysed.get()),
        sum(|m| m.detected.get()),
        sum(|m| m.detection_pixels.get()),
        sum(|m| m.dropped_backpressure.get()),
        [sum(|m| m.plate_reads.get()), sum(|m| m.plate_reads_skipped.get())],
        cpu_seconds(),
        Instant::now(),
    );
    let mut rss = Vec::new();
    let mut tick = tokio::time::interval(RSS_SAMPLE);
    while t0.elapsed().as_secs_f64() < args.seconds {
        tick.tick().await;
        rss.push(rss_bytes());
    }
    let secs = t0.elapsed().as_secs_f64();
    let analysed = sum(|m| m.analysed.get()) - analysed0;
    let detected = sum(|m| m.detected.get()) - detected0;
    let pixels = sum(|m| m.detection_pixels.get()) - pixels0;
    let dropped = sum(|m| m.dropped_backpressure.get()) - dropped0;
    let plate_reads = [sum(|m| m.plate_reads.get()) - plates0[0], sum(|m| m.plate_reads_skipped.get()) - plates0[1]];
    let cpu = cpu_seconds() - cpu0;
    let peak_rss_mb = status_kb("VmHWM:") as f64 * 1024.0 / 1e6;
    let quarter = rss.len().div_ceil(4);
    let floor = |s: &[u64]| s.iter().copied().min().unwrap_or(0) as f64;
    let rss_growth_mb = (floor(&rss[rss.len() - quarter..]) - floor(&rss[..quarter])) / 1e6;
    shutdown.cancel();
    task.await??;
    let _ = listener.await;
    let fps = analysed as f64 / secs;
    let detected_share = if analysed == 0 { 0.0 } else { detected as f64 / analysed as f64 };
    let input_share = match detected {
        0 => 1.0,
        n => pixels as f64 / n as f64 / limits.frame_pixels.max(1) as f64,
    };
    // The inference limits were measured on whole frames; a crop's call costs its share of one.
    let limit_fps = 1.0 / (1.0 / limits.decode_fps + detected_share * input_share / limits.inference_for(cams));
    let mut lat = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
    Ok(Run {
        stages,
        cameras: cams,
        fps,
        detected_share,
        input_share,
        limit_fps,
        ratio: fps / limit_fps,
        dropped,
        plate_reads,
        latency_ms: (!lat.is_empty()).then(|| [pct(0.5), pct(0.95), pct(0.99)]),
        peak_rss_mb,
        rss_growth_mb,
        cpu_per_camera_pct: cpu / secs / cams as f64 * 100.0,
    })
}

/// Collect frame-to-message latencies of `start` events from Redis until `shutdown`.
async fn listen(url: String, into: Arc<std::sync::Mutex<Vec<f64>>>, shutdown: CancellationToken) {
    let Ok(client) = redis::Client::open(url.as_str()) else { return };
    let Ok(mut pubsub) = client.get_async_pubsub().await else {
        eprintln!("Redis at {} unreachable: no latency figures", vigil::redact::Redacted(&url));
        return;
    };
    if pubsub.subscribe("events").await.is_err() {
        return;
    }
    let mut messages = pubsub.on_message();
    loop {
        let msg = tokio::select! {
            msg = messages.next() => msg,
            _ = shutdown.cancelled() => return,
        };
        let Some(msg) = msg else { return };
        let Ok(event) = serde_json::from_slice::<vigil::events::Event>(msg.get_payload_bytes()) else { continue };
        if event.event_data["phase"] == "start" {
            let ms = (chrono::Utc::now() - event.timestamp).num_microseconds().unwrap_or(0) as f64 / 1000.0;
            into.lock().unwrap_or_else(|p| p.into_inner()).push(ms);
        }
    }
}

/// User plus system CPU time of this process, seconds (`/proc/self/stat`, in USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

/// Reset the kernel's peak-RSS mark for this process (`clear_refs` 5).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `kB` field of `/proc/self/status`.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb =
        status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok());
    kb.unwrap_or(0)
}

fn rss_bytes() -> u64 {
    status_kb("VmRSS:") * 1024
}

fn print_table(video: &Path, limits: &Limits, runs: &[Run]) {
    println!("video: {}", video.display());
    println!("raw decode: {:.1} fps", limits.decode_fps);
    println!("raw inference, best setting of this machine / the pipeline's setting:");
    for (best, own) in limits.best.iter().zip(&limits.configured) {
        println!(
            "  {} caller(s): {:6.1} fps ({best}; {:.1} ms in the model, {:.1} ms per call)  /  {:6.1} fps ({own})",
            best.callers, best.fps, best.model_ms, best.call_ms, own.fps
        );
    }
    println!();
    println!(
        "{:<7} {:>4} {:>8} {:>9} {:>6} {:>8} {:>6} {:>8} {:>14} {:>22} {:>9} {:>8} {:>8}",
        "stages",
        "cams",
        "fps",
        "detected",
        "input",
        "limit",
        "ratio",
        "dropped",
        "plates/skipped",
        "latency p50/p95/p99 ms",
        "peak RSS",
        "RSS +/-",
        "CPU/cam"
    );
    for r in runs {
        let plates = match r.stages {
            Stages::Anpr => format!("{}/{}", r.plate_reads[0], r.plate_reads[1]),
            _ => "-".to_string(),
        };
        let latency = r.latency_ms.map_or("n/a".to_string(), |[a, b, c]| format!("{a:.0}/{b:.0}/{c:.0}"));
        println!(
            "{:<7} {:>4} {:>8.1} {:>8.0}% {:>5.0}% {:>8.1} {:>5.0}% {:>8} {:>14} {:>22} {:>6.0} MB {:>+5.1} MB {:>7.0}%",
            format!("{:?}", r.stages).to_lowercase(),
            r.cameras,
            r.fps,
            r.detected_share * 100.0,
            r.input_share * 100.0,
            r.limit_fps,
            r.ratio * 100.0,
            r.dropped,
            plates,
            latency,
            r.peak_rss_mb,
            r.rss_growth_mb,
            r.cpu_per_camera_pct
        );
    }
}

/// vigil against the reference at one camera count: medians over the rounds.
#[derive(Serialize)]
struct SideBySide {
    cameras: usize,
    rounds: usize,
    vigil_fps: f64,
    vigil_detected_share: f64,
    reference_fps: f64,
    reference_detected_share: f64,
    /// The reference's best setting in the round with the median fps.
    reference_threads: usize,
    reference_spinning: bool,
    /// The median of the rounds' ratios (each round's pair ran back to back).
    ratio: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn side_by_side(cameras: &[usize], pairs: &[(f64, f64, RefRun)]) -> Vec<SideBySide> {
    let mut out = Vec::new();
    for &cams in cameras {
        let mine: Vec<_> = pairs.iter().filter(|(_, _, r)| r.cameras == cams).collect();
        if mine.is_empty() {
            continue;
        }
        let reference_fps = median(mine.iter().map(|(_, _, r)| r.fps).collect());
        let typical =
            mine.iter().min_by(|a, b| (a.2.fps - reference_fps).abs().total_cmp(&(b.2.fps - reference_fps).abs()));
        let typical = &typical.expect("non-empty").2;
        out.push(SideBySide {
            cameras: cams,
            rounds: mine.len(),
            vigil_fps: median(mine.iter().map(|(f, _, _)| *f).collect()),
            vigil_detected_share: median(mine.iter().map(|(_, d, _)| *d).collect()),
            reference_fps,
            reference_detected_share: median(mine.iter().map(|(_, _, r)| r.detected_share).collect()),
            reference_threads: typical.threads,
            reference_spinning: typical.spinning,
            ratio: median(mine.iter().map(|(f, _, r)| f / r.fps.max(f64::MIN_POSITIVE)).collect()),
        });
    }
    out
}

fn print_side_by_side(rows: &[SideBySide]) {
    println!("\nside by side with the Python reference (detect stages; medians of interleaved rounds):");
    println!(
        "{:>4} {:>6} {:>10} {:>9} {:>14} {:>9} {:>26} {:>7}",
        "cams", "rounds", "vigil fps", "detected", "reference fps", "detected", "reference setting", "ratio"
    );
    for r in rows {
        let setting = format!(
            "{}x {} thread(s), spin {}",
            r.cameras,
            r.reference_threads,
            if r.reference_spinning { "on" } else { "off" }
        );
        println!(
            "{:>4} {:>6} {:>10.1} {:>8.0}% {:>14.1} {:>8.0}% {:>26} {:>6.2}x",
            r.cameras,
            r.rounds,
            r.vigil_fps,
            r.vigil_detected_share * 100.0,
            r.reference_fps,
            r.reference_detected_share * 100.0,
            setting,
            r.ratio
        );
    }
}
