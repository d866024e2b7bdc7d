//! The backbone end to end: RTSP server on 127.0.0.1 → `vigil run` → DB row + snapshot + Redis,
//! once with SQLite and once with PostgreSQL, with secrets in every URL.

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Redis, Vigil, media, postgres_url};
use futures::StreamExt;
use vigil::events::{Event, EventType, Store};
use vigil::sample::SampleServer;

const CONTRACT_FIELDS: [&str; 9] = [
    "id",
    "revision",
    "event_type",
    "camera_id",
    "timestamp",
    "frame_number",
    "snapshot_path",
    "event_data",
    "created_at",
];

async fn end_to_end(db_url: &str, dir: &Path) {
    let redis = Redis::start_with_password("secret-redis-pw");
    let server = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let cam_url = format!("rtsp://viewer:secret-cam-pw@127.0.0.1:{}/cam", server.port());
    let snapshots = dir.join("snaps");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("events").await.unwrap();
    pubsub.psubscribe("events:*").await.unwrap();

    let config = format!(
        r#"
[database]
url = "{db_url}"
[server]
listen = "127.0.0.1:0"
[redis]
url = "{redis_url}"
extra_channels = ["events:{{camera_id}}", "events:{{camera_id}}:{{event_type}}"]
[storage]
snapshots_dir = "{snaps}"
[[cameras]]
id = "gate-1"
url = "{cam_url}"
"#,
        redis_url = redis.url(),
        snaps = snapshots.display()
    );
    let started = Instant::now();
    let vigil = Vigil::start(dir, &config);
    let mut messages = pubsub.on_message();
    let mut on_events: Vec<(serde_json::Value, Event)> = Vec::new();
    let mut channels = HashSet::new();
    let wait = tokio::time::timeout(Duration::from_secs(45), async {
        while let Some(msg) = messages.next().await {
            let payload: String = msg.get_payload().unwrap();
            channels.insert(msg.get_channel_name().to_string());
            if msg.get_channel_name() == "events" {
                let raw: serde_json::Value = serde_json::from_str(&payload).unwrap();
                let ev: Event = serde_json::from_value(raw.clone()).unwrap();
                // A shared test database can hold other tests' unpublished rows, which this
                // instance's outbox publishes too.
                if ev.camera_id != "gate-1" {
                    continue;
                }
                let motion_start = ev.event_type == EventType::Motion && ev.event_data["phase"] == "start";
                on_events.push((raw, ev));
                if motion_start {
                    return;
                }
            }
        }
    })
    .await;
    assert!(wait.is_ok(), "no motion start within 45 s; log:\n{}", vigil.log_text());
    println!("first motion start after {:?}", started.elapsed());

    let (raw, motion) = on_events.last().unwrap().clone();
    let keys: HashSet<&str> = raw.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, CONTRACT_FIELDS.into_iter().collect::<HashSet<_>>());
    assert_eq!(motion.camera_id, "gate-1");
    assert!(motion.frame_number.is_some());
    assert!(motion.event_data["area"].as_f64().unwrap() > 0.0);
    assert!(!motion.event_data["regions"].as_array().unwrap().is_empty());
    assert_eq!(on_events[0].1.event_type, EventType::Camera, "connected comes first");
    assert_eq!(on_events[0].1.event_data["state"], "connected");

    let store = Store::connect(db_url).await.unwrap();
    let row = store.get(motion.id).await.unwrap().expect("the published id is a row");
    assert_eq!(row, motion, "the message is the row");
    let jpeg = std::fs::read(snapshots.join(motion.snapshot_path.as_ref().unwrap())).unwrap();
    let img = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (768, 432));

    // The same event on the templated channels.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(channels.contains("events:gate-1") && channels.contains("events:gate-1:motion")) {
        assert!(Instant::now() < deadline, "extra channels missing: {channels:?}");
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), messages.next()).await {
            channels.insert(msg.get_channel_name().to_string());
        }
    }

    let log_before_exit = vigil.log_text();
    let (code, took) = vigil.terminate();
    assert_eq!(code, Some(0), "vigil exit; log:\n{log_before_exit}");
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    assert_eq!(store.unpublished_count().await.unwrap(), 0, "everything saved was published");
    let log = std::fs::read_to_string(dir.join("vigil.log")).unwrap();
    assert!(!log.contains("secret"), "a secret reached the log:\n{log}");
    assert!(log.contains("rtsp://***@127.0.0.1"), "the camera URL is logged redacted:\n{log}");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_to_sqlite_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("events.db").display());
    end_to_end(&db, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_to_postgres_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    end_to_end(&postgres_url(), dir.path()).await;
}

/// car-detection.mp4 shows three cars crossing (frames ~56–120, ~180–250, ~320–377, seen by
/// stepping through the clip): each crossing is one motion episode, never a storm of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_camera_gives_one_motion_episode_per_car() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let url = format!("file://{}", media("car-detection.mp4").display());
    let (config, db) = common::one_camera(dir.path(), &redis.url(), "lane", &url, "[cameras.motion]\nquiet_secs = 1.0");
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("camera stopped", Duration::from_secs(30)).await;
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
    let store = Store::connect(&db).await.unwrap();
    let events = store.after(0, 1000).await.unwrap();
    let phases: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == EventType::Motion)
        .map(|e| e.event_data["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["start", "end", "start", "end", "start", "end"], "{events:#?}");
    let starts: Vec<_> =
        events.iter().filter(|e| e.event_type == EventType::Motion && e.event_data["phase"] == "start").collect();
    assert!(starts.iter().all(|e| e.snapshot_path.is_some()));
    let frames: Vec<i64> = starts.iter().map(|e| e.frame_number.unwrap()).collect();
    assert!(frames[0] > 30 && frames[0] < 80 && frames[1] > 150 && frames[2] > 290, "{frames:?}");
}
