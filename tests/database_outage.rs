//! PostgreSQL stopped under load and started again (the real cluster, so this test has its own
//! binary and never runs beside another test that uses it): events are held in memory and
//! written after; when the buffer fills only tracking updates are dropped, and counted; the
//! process never exits.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use common::{Redis, Vigil, media, postgres_url};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use vigil::events::recorder::BUFFER;
use vigil::events::{EventQuery, EventType, NewEvent, Recorder, Store};
use vigil::metrics::Metrics;
use vigil::sample::SampleServer;

/// `pg_ctlcluster VERSION NAME ACTION` on the machine's (first) cluster.
fn cluster(action: &str) {
    let list = Command::new("pg_lsclusters").arg("-h").output().expect("pg_lsclusters");
    let first = String::from_utf8_lossy(&list.stdout).lines().next().expect("a PostgreSQL cluster").to_string();
    let fields: Vec<&str> = first.split_whitespace().collect();
    let status = Command::new("pg_ctlcluster").args([fields[0], fields[1], action]).status().unwrap();
    assert!(status.success(), "pg_ctlcluster {action} (needs root, as scripts/test runs)");
}

fn tracking(camera: &str, phase: &str, n: usize) -> NewEvent {
    NewEvent {
        key: None,
        event_type: EventType::Tracking,
        camera_id: camera.into(),
        timestamp: chrono::Utc::now(),
        frame_number: Some(n as i64),
        data: json!({"phase": phase, "track_id": 1, "label": "car", "n": n}),
        snapshot: None,
        crop: None,
    }
}

async fn saved_for(store: &Store, camera: &str) -> Vec<vigil::events::Event> {
    let q = EventQuery { camera: Some(camera.into()), limit: 1000, newest_first: false, ..Default::default() };
    let mut all = Vec::new();
    loop {
        let page = store
            .list(&EventQuery { after_id: all.last().map(|e: &vigil::events::Event| e.id), ..q.clone() })
            .await
            .unwrap();
        let done = page.len() < 1000;
        all.extend(page);
        if done {
            return all;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_out_a_database_outage() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let server = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let tag = format!("outage-{}", std::process::id());
    let (mut config, _) =
        common::one_camera(dir.path(), &redis.url(), &tag, &server.url(), "[cameras.motion]\nquiet_secs = 0.5");
    config = config.replacen(&format!("sqlite://{}", dir.path().join("events.db").display()), &postgres_url(), 1);
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("streaming", Duration::from_secs(30)).await;

    // The recorder on its own, fed faster than any camera would.
    let store = Store::connect(&postgres_url()).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (events, rx) = mpsc::channel(64);
    let (to_publisher, _publisher_rx) = mpsc::channel(10_000);
    let recorder = Recorder {
        store: store.clone(),
        snapshots_dir: dir.path().join("snaps"),
        metrics: metrics.clone(),
        to_publisher,
        lagged: Arc::new(AtomicBool::new(false)),
        live: broadcast::channel(16).0,
    };
    let recorder = tokio::spawn(recorder.run(rx));
    let burst = format!("burst-{}", std::process::id());
    events.send(tracking(&burst, "start", 0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while saved_for(&store, &burst).await.is_empty() {
        assert!(Instant::now() < deadline, "recorder not writing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let down = chrono::Utc::now();
    cluster("stop");
    let updates = BUFFER + 150;
    for n in 1..=updates {
        events.send(tracking(&burst, "update", n)).await.unwrap();
    }
    events.send(tracking(&burst, "end", updates + 1)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dropped = metrics.events_dropped("tracking");
    cluster("start");
    let up = chrono::Utc::now();

    drop(events);
    tokio::time::timeout(Duration::from_secs(60), recorder).await.expect("recorder drains").unwrap();
    let saved = saved_for(&store, &burst).await;
    let phases = |p: &str| saved.iter().filter(|e| e.event_data["phase"] == p).count();
    println!("burst: {} sent, {} saved, {dropped} dropped", updates + 2, saved.len());
    assert_eq!((phases("start"), phases("end")), (1, 1), "starts and ends are never dropped");
    assert!(dropped >= 150, "the buffer held {BUFFER} and dropped the overflow: {dropped}");
    assert_eq!(saved.len() as u64 + dropped, updates as u64 + 2, "every event saved or counted");
    let order: Vec<i64> = saved.iter().map(|e| e.event_data["n"].as_i64().unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "saved in the order they came");

    // The running vigil rode it out and saved what its camera saw meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during: Vec<_> =
        saved_for(&store, &tag).await.into_iter().filter(|e| e.timestamp >= down && e.timestamp <= up).collect();
    assert!(vigil.log_text().contains("database unreachable"), "{}", vigil.log_text());
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0), "vigil never exited");
    println!("vigil: {} events from the outage window saved after it", during.len());
    drop(server);
}
