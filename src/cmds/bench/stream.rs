//! `vigil bench anpr --stream`: the same plates as a live camera sees them. The images become a
//! video ([`plate_video`]: each drives in or approaches, stands, then black), served once over RTSP to a
//! real camera in the chosen mode; its `anpr` events are scored against the images' plates, next
//! to the still-image rate of the same images read the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use vigil::config::Config;
use vigil::events::{EventType, Store};
use vigil::metrics::Metrics;
use vigil::sample::{Arrival, SampleServer, plate_video};
use vigil::supervisor::{self, Scope};

use super::anpr::{Truth, folded};

/// Seconds given to the last reads after the clip ends.
const SETTLE_SECS: u64 = 5;

/// What the camera made of the clip.
pub struct StreamRun {
    /// Images whose plate is among the camera's `anpr` events (folded).
    pub read: usize,
    /// `anpr` events whose plate is none of the images' (folded).
    pub wrong: usize,
    pub events: usize,
    /// Reads that voted in the events' last revision, on average.
    pub reads_per_event: f64,
    /// Plate reads sent, and skipped because the read queue was full.
    pub plate_reads: [u64; 2],
    /// The images' plates no event gave, and the events' plates no image shows.
    pub missed: Vec<String>,
    pub wrong_plates: Vec<String>,
    /// Every `anpr` event as `plate/confidence/reads`, a wrong plate marked `✗`.
    pub listed: Vec<String>,
}

/// `n` images with different plates, spread evenly over the set.
pub fn pick(truths: Vec<Truth>, n: usize) -> Vec<Truth> {
    let mut seen = std::collections::HashSet::new();
    let unique: Vec<Truth> = truths.into_iter().filter(|t| seen.insert(folded(&t.plate))).collect();
    let step = (unique.len() / n.max(1)).max(1);
    unique.into_iter().step_by(step).take(n).collect()
}

/// Play `picked` once to a camera with `options`' plate settings and score its events.
pub fn run(
    picked: &[Truth],
    arrival: Arrival,
    options: &crate::cmds::anpr::Options,
    redis: &str,
) -> anyhow::Result<StreamRun> {
    let dir = std::env::temp_dir().join(format!("vigil-bench-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = play(picked, arrival, options, redis, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn play(
    picked: &[Truth],
    arrival: Arrival,
    options: &crate::cmds::anpr::Options,
    redis: &str,
    dir: &Path,
) -> anyhow::Result<StreamRun> {
    let video = dir.join("plates.mp4");
    let images: Vec<PathBuf> = picked.iter().map(|t| t.image.clone()).collect();
    let length = plate_video(&images, arrival, &video)?;
    let server = SampleServer::once(&video, "plates", 0)?;
    let db = format!("sqlite://{}", dir.join("events.db").display());
    let config = config(options, redis, &server.url(), &db, dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let metrics = Arc::new(Metrics::new());
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(supervisor::run(config, Scope::default(), metrics.clone(), shutdown.clone()));
        let camera = metrics.camera("plates");
        let deadline = Instant::now() + Duration::from_secs(60);
        while camera.analysed.get() == 0 {
            anyhow::ensure!(!task.is_finished() && Instant::now() < deadline, "the camera did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(length + Duration::from_secs(SETTLE_SECS)).await;
        shutdown.cancel();
        task.await??;
        anyhow::Ok(())
    })?;
    drop(server);
    let store = runtime.block_on(Store::connect(&db))?;
    let events = runtime.block_on(store.after(0, 1_000_000))?;
    let anpr: Vec<_> = events.into_iter().filter(|e| e.event_type == EventType::Anpr).collect();
    let plate = |e: &vigil::events::Event| folded(e.event_data["plate"].as_str().unwrap_or_default());
    let wanted: std::collections::HashSet<String> = picked.iter().map(|t| folded(&t.plate)).collect();
    let got: std::collections::HashSet<String> = anpr.iter().map(plate).collect();
    let camera = metrics.camera("plates");
    Ok(StreamRun {
        read: wanted.intersection(&got).count(),
        wrong: anpr.iter().filter(|e| !wanted.contains(&plate(e))).count(),
        events: anpr.len(),
        reads_per_event: anpr.iter().filter_map(|e| e.event_data["reads"].as_f64()).sum::<f64>()
            / anpr.len().max(1) as f64,
        plate_reads: [camera.plate_reads.get(), camera.plate_reads_skipped.get()],
        missed: picked.iter().filter(|t| !got.contains(&folded(&t.plate))).map(|t| t.plate.clone()).collect(),
        wrong_plates: anpr.iter().map(plate).filter(|p| !wanted.contains(p)).collect(),
        listed: anpr
            .iter()
            .map(|e| {
                let mark = if wanted.contains(&plate(e)) { "" } else { " ✗" };
                format!("{}/{}/{}{mark}", plate(e), e.event_data["confidence"], e.event_data["reads"])
            })
            .collect(),
    })
}

/// One live camera on `url` reading plates as `options` say, detection at 5 fps.
fn config(
    options: &crate::cmds::anpr::Options,
    redis: &str,
    url: &str,
    db: &str,
    dir: &Path,
) -> anyhow::Result<Config> {
    let models =
        std::fs::canonicalize(&options.models).with_context(|| format!("models {}", options.models.display()))?;
    let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
    let formats: Vec<String> = options.formats.iter().map(|f| quote(f)).collect();
    let toml = format!(
        "[database]\nurl = {}\n[redis]\nurl = {}\n[server]\nlisten = \"127.0.0.1:0\"\n\
         [storage]\nsnapshots_dir = {}\n[models]\ndir = {}\n\
         [[cameras]]\nid = \"plates\"\nurl = {}\ndetect_fps = 5\n\
         [cameras.reconnect]\ninitial_secs = 60.0\nmax_secs = 60.0\n\
         [cameras.anpr]\nenabled = true\nmode = \"{}\"\nformats = [{}]\nmin_confidence = {}\n",
        quote(db),
        quote(redis),
        quote(&dir.join("snaps").display().to_string()),
        quote(&models.display().to_string()),
        quote(url),
        if options.dedicated { "dedicated" } else { "vehicle" },
        formats.join(", "),
        options.min_confidence,
    );
    Ok(Config::parse(&toml, "bench")?)
}
