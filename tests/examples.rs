//! The consumer examples in `examples/`, each run against a live vigil: the Python Pub/Sub
//! subscriber with filters, the Python stream consumer group, and the Rust `PSUBSCRIBE` client.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Redis, Vigil, cameras_config, free_port, media};
use vigil::sample::SampleServer;

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)
}

/// `cargo test` builds the cargo examples next to the test binaries' directory.
fn cargo_example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().unwrap().parent().unwrap().to_path_buf();
    let path = deps.parent().unwrap().join("examples").join(name);
    assert!(path.is_file(), "{} missing: cargo test builds the examples", path.display());
    path
}

/// The system Python, where scripts/setup installs the `redis` package (python3-redis); a
/// `python3` earlier on PATH (pyenv, a virtualenv) may lack it.
fn python() -> Command {
    let system = std::path::Path::new("/usr/bin/python3");
    Command::new(if system.is_file() { system } else { std::path::Path::new("python3") })
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits for `child` to exit 0 and returns its stdout lines.
fn lines_of(child: Child, what: &str, limit: Duration) -> Vec<String> {
    let pid = child.id();
    let deadline = Instant::now() + limit;
    let killer = std::thread::spawn(move || {
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = Command::new("kill").arg(pid.to_string()).status();
    });
    let out = child.wait_with_output().unwrap();
    drop(killer);
    assert!(out.status.success(), "{what}: {:?}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect()
}

/// Subscribers of `channel`, and pattern subscriptions, on the server.
async fn subscribers(redis: &redis::Client, channel: &str) -> (i64, i64) {
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let (_, n): (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(&mut conn).await.unwrap();
    let patterns: i64 = redis::cmd("PUBSUB").arg("NUMPAT").query_async(&mut conn).await.unwrap();
    (n, patterns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_receives_events_from_a_running_vigil() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let cam = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let other = SampleServer::start(&media("car-detection.mp4"), "other", 0).unwrap();
    let (toml, _) =
        cameras_config(dir.path(), &redis.url(), free_port(), &[("cam", cam.url()), ("other", other.url())]);
    let toml = toml.replace(
        "[storage]",
        "stream = \"stream:events\"\nextra_channels = [\"events:{camera_id}\", \"events:{camera_id}:{event_type}\"]\n[storage]",
    );

    // The Pub/Sub subscribers must be listening before the first event.
    let pubsub = spawn(python().arg(example("subscribe.py")).args([
        "--url",
        &redis.url(),
        "--type",
        "motion",
        "--camera",
        "cam",
        "--count",
        "2",
    ]));
    let rust = spawn(Command::new(cargo_example("psubscribe")).args(["--url", &redis.url(), "--count", "3"]));
    let client = redis::Client::open(redis.url()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while subscribers(&client, "events").await != (1, 1) {
        assert!(Instant::now() < deadline, "the subscribers did not subscribe");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vigil = Vigil::start(dir.path(), &toml);

    let filtered = tokio::task::spawn_blocking(move || lines_of(pubsub, "subscribe.py", Duration::from_secs(60)));
    let patterned = tokio::task::spawn_blocking(move || lines_of(rust, "psubscribe", Duration::from_secs(60)));
    let filtered = filtered.await.unwrap();
    assert_eq!(filtered.len(), 2);
    for line in &filtered {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!((ev["event_type"].as_str(), ev["camera_id"].as_str()), (Some("motion"), Some("cam")), "{ev}");
        assert!(ev["id"].as_i64().is_some());
    }
    let patterned = patterned.await.unwrap();
    assert_eq!(patterned.len(), 3);
    for line in &patterned {
        let (channel, json) = line.split_once('\t').unwrap();
        let ev: serde_json::Value = serde_json::from_str(json).unwrap();
        let camera = ev["camera_id"].as_str().unwrap();
        assert!(channel.starts_with(&format!("events:{camera}")), "{line}");
    }

    // The stream group reader sees what was published before it started, and acknowledges it.
    let group = spawn(python().arg(example("stream_group.py")).args([
        "--url",
        &redis.url(),
        "--group",
        "examples",
        "--consumer",
        "one",
        "--count",
        "3",
    ]));
    let read = tokio::task::spawn_blocking(move || lines_of(group, "stream_group.py", Duration::from_secs(30)));
    let read = read.await.unwrap();
    assert_eq!(read.len(), 3);
    let ids: Vec<i64> =
        read.iter().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let pending: redis::streams::StreamPendingReply =
        redis::cmd("XPENDING").arg("stream:events").arg("examples").query_async(&mut conn).await.unwrap();
    assert_eq!(pending.count(), 0, "every entry it handled was acknowledged");
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
}
