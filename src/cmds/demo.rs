//! `vigil demo`: two sample cameras served over RTSP on 127.0.0.1, a traffic camera (objects
//! tracked) and a gate camera (plates read), events in SQLite and Redis, the page on
//! http://127.0.0.1:8080/. Starts a local `redis-server` if none answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tracing::{info, warn};
use vigil::config::Config;
use vigil::sample::{Arrival, SampleServer, plate_video};

#[derive(clap::Args)]
pub struct Args {
    /// H.264 MP4 for the traffic camera (default: media/road.mp4, put there by scripts/setup).
    #[arg(long)]
    video: Option<PathBuf>,
    /// RTSP port of the traffic camera's server; the gate camera's is the next one.
    #[arg(long, default_value_t = 8554)]
    rtsp_port: u16,
    /// Leave out the gate camera (plate reading is the slowest stage on a small CPU).
    #[arg(long)]
    no_gate: bool,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Database URL.
    #[arg(long, default_value = "sqlite://vigil-demo.db")]
    database: String,
    /// Snapshot directory.
    #[arg(long, default_value = "snapshots")]
    snapshots: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let video = match args.video {
        Some(v) => v,
        None => media_file("road.mp4").context("no sample video; run scripts/setup or pass --video")?,
    };
    let traffic = SampleServer::start(&video, "traffic", args.rtsp_port)?;
    let mut toml = format!(
        "[database]\nurl = {db:?}\n[redis]\nurl = {redis:?}\nextra_channels = [\"events:{{camera_id}}\", \"events:{{camera_id}}:{{event_type}}\"]\n\
         [storage]\nsnapshots_dir = {snap:?}\n[[cameras]]\nid = \"traffic\"\nurl = {url:?}\n",
        db = args.database,
        redis = args.redis,
        snap = args.snapshots.display().to_string(),
        url = traffic.url(),
    );
    let gate = match (!args.no_gate).then(gate_video) {
        None => None,
        Some(Ok(clip)) => Some(SampleServer::start(&clip, "gate", args.rtsp_port + 1)?),
        Some(Err(e)) => {
            warn!("no gate camera: {e:#}");
            None
        }
    };
    if let Some(gate) = &gate {
        // Plates anywhere in the frame: the clip's cars are close-ups, as at a barrier.
        toml.push_str(&format!(
            "[[cameras]]\nid = \"gate\"\nurl = {:?}\n[cameras.anpr]\nenabled = true\nmode = \"dedicated\"\n",
            gate.url()
        ));
    }
    let config = Config::parse(&toml, "demo")?;
    info!(video = %video.display(), traffic = %traffic.url(), gate = ?gate.as_ref().map(SampleServer::url), "demo cameras serving; open http://127.0.0.1:8080/ or run: redis-cli SUBSCRIBE events");
    let redis_url = args.redis.clone();
    let mut redis_child = None;
    let result = super::run_until_signal(config, Default::default(), async || {
        redis_child = ensure_redis(&redis_url).await?;
        Ok(())
    });
    if let Some(mut child) = redis_child {
        let _ = child.start_kill();
    }
    drop((traffic, gate));
    result
}

/// `media/NAME`, where scripts/setup puts the samples (from the working directory, or beside the
/// sources).
fn media_file(name: &str) -> Option<PathBuf> {
    let rel = Path::new("media").join(name);
    [rel.clone(), Path::new(env!("CARGO_MANIFEST_DIR")).join(&rel)].into_iter().find(|p| p.exists())
}

/// The sample the benches and `vigil serve` use.
pub fn default_video() -> Option<PathBuf> {
    media_file("car-detection.mp4")
}

/// The gate camera's clip, `media/gate.mp4`: made once from the plate photos in `media/plates`.
fn gate_video() -> anyhow::Result<PathBuf> {
    let plates = media_file("plates").context("no media/plates; run scripts/setup")?;
    let clip = plates.with_file_name("gate.mp4");
    if clip.is_file() {
        return Ok(clip);
    }
    let mut images: Vec<PathBuf> = std::fs::read_dir(&plates)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    images.sort();
    if images.is_empty() {
        bail!("no plate photos in {}; run scripts/setup", plates.display());
    }
    info!(photos = images.len(), clip = %clip.display(), "making the gate camera's clip");
    let part = clip.with_extension("mp4.part");
    plate_video(&images, Arrival::Drive, &part)?;
    std::fs::rename(&part, &clip)?;
    Ok(clip)
}

async fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else { return false };
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut conn).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(_)))
}

/// Use the Redis at `url`, or start a throwaway local one on its port.
async fn ensure_redis(url: &str) -> anyhow::Result<Option<tokio::process::Child>> {
    if ping(url).await {
        return Ok(None);
    }
    let port = url::Url::parse(url)?.port().unwrap_or(6379);
    info!(port, "no Redis answering; starting a local redis-server");
    let child = tokio::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("Redis is not reachable and redis-server could not be started (run scripts/setup)")?;
    for _ in 0..50 {
        if ping(url).await {
            return Ok(Some(child));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("redis-server started but does not answer on port {port}")
}
