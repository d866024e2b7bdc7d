//! `vigil demo`: a sample video served over RTSP on 127.0.0.1, one camera on it, events in SQLite
//! and Redis. Starts a local `redis-server` if none answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tracing::info;
use vigil::config::Config;
use vigil::sample::SampleServer;

#[derive(clap::Args)]
pub struct Args {
    /// H.264 MP4 to serve (default: media/car-detection.mp4, put there by scripts/setup).
    #[arg(long)]
    video: Option<PathBuf>,
    /// RTSP port of the sample server.
    #[arg(long, default_value_t = 8554)]
    rtsp_port: u16,
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
        None => default_video().context("no sample video; run scripts/setup or pass --video")?,
    };
    let server = SampleServer::start(&video, "demo", args.rtsp_port)?;
    let toml = format!(
        "[database]\nurl = {db:?}\n[redis]\nurl = {redis:?}\nextra_channels = [\"events:{{camera_id}}\", \"events:{{camera_id}}:{{event_type}}\"]\n\
         [storage]\nsnapshots_dir = {snap:?}\n[[cameras]]\nid = \"demo\"\nurl = {url:?}\n",
        db = args.database,
        redis = args.redis,
        snap = args.snapshots.display().to_string(),
        url = server.url(),
    );
    let config = Config::parse(&toml, "demo")?;
    info!(video = %video.display(), rtsp = %server.url(), "demo camera serving; watch with: redis-cli SUBSCRIBE events");
    let redis_url = args.redis.clone();
    let mut redis_child = None;
    let result = super::run_until_signal(config, Default::default(), async || {
        redis_child = ensure_redis(&redis_url).await?;
        Ok(())
    });
    if let Some(mut child) = redis_child {
        let _ = child.start_kill();
    }
    drop(server);
    result
}

/// The demo sample, where scripts/setup puts it.
pub fn default_video() -> Option<PathBuf> {
    let name = Path::new("media").join("car-detection.mp4");
    [name.clone(), Path::new(env!("CARGO_MANIFEST_DIR")).join(&name)].into_iter().find(|p| p.is_file())
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
