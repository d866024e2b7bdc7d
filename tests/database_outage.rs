//! PostgreSQL stopped under load, and at shutdown (the real cluster, so these tests have their
//! own binary, never run beside another test that uses it, and take turns): events wait in the
//! journal and are written after, in order, none dropped; the API keeps answering; SIGTERM exits
//! promptly and the next start writes what was held before anything new.

mod common;

use std::process::Command;
use std::sync::Arc;

use std::time::{Duration, Instant};

use common::{Redis, Vigil, free_port, media, postgres_url};
use serde_json::json;
use tokio::sync::mpsc;
use vigil::events::recorder::BUFFER;
use vigil::events::{EventQuery, EventType, NewEvent, Store};
use vigil::metrics::Metrics;
use vigil::sample::SampleServer;

/// The tests stop the one cluster; one at a time.
static CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const TOKEN: &str = "outage-token";

/// vigil on PostgreSQL with one camera on `server_url`, the API on `api` with [`TOKEN`], and
/// the Redis Stream `stream`.
fn pg_config(dir: &std::path::Path, redis: &str, tag: &str, server_url: &str, api: u16, stream: &str) -> String {
    let (config, _) = common::one_camera(dir, redis, tag, server_url, "[cameras.motion]\nquiet_secs = 0.5");
    config
        .replacen(&format!("sqlite://{}", dir.join("events.db").display()), &postgres_url(), 1)
        .replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{api}\"\ntoken = \"{TOKEN}\""), 1)
        .replacen("[redis]\n", &format!("[redis]\nstream = \"{stream}\"\n"), 1)
}

/// `pg_ctlcluster VERSION NAME ACTION` on the machine's (first) cluster; whether it succeeded.
fn pg_ctl(action: &str) -> bool {
    let list = Command::new("pg_lsclusters").arg("-h").output().expect("pg_lsclusters");
    let first = String::from_utf8_lossy(&list.stdout).lines().next().expect("a PostgreSQL cluster").to_string();
    let fields: Vec<&str> = first.split_whitespace().collect();
    Command::new("pg_ctlcluster").args([fields[0], fields[1], action]).status().unwrap().success()
}

/// The cluster stopped until `start()` or drop (so a failed test leaves it running for the next).
struct Outage;

impl Outage {
    fn begin() -> Self {
        assert!(pg_ctl("stop"), "pg_ctlcluster stop (needs root, as scripts/test runs)");
        Outage
    }

    fn end(self) {
        assert!(pg_ctl("start"), "pg_ctlcluster start");
        std::mem::forget(self);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        pg_ctl("start");
    }
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
    let _turn = CLUSTER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let server = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let tag = format!("outage-{}", std::process::id());
    let api = free_port();
    let config = pg_config(dir.path(), &redis.url(), &tag, &server.url(), api, "outage-stream");
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("streaming", Duration::from_secs(30)).await;

    // The recorder on its own, fed faster than any camera would.
    let store = Store::connect(&postgres_url()).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (events, rx) = mpsc::channel(64);
    let (recorder, _publisher_rx) = common::recorder(&store, dir.path(), metrics.clone());
    let recorder = tokio::spawn(recorder.run(rx, tokio_util::sync::CancellationToken::new()));
    let burst = format!("burst-{}", std::process::id());
    events.send(tracking(&burst, "start", 0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while saved_for(&store, &burst).await.is_empty() {
        assert!(Instant::now() < deadline, "recorder not writing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let down = chrono::Utc::now();
    let outage = Outage::begin();
    let updates = BUFFER + 150;
    let sending = Instant::now();
    for n in 1..=updates {
        events.send(tracking(&burst, "update", n)).await.unwrap();
    }
    events.send(tracking(&burst, "end", updates + 1)).await.unwrap();
    println!("{} events taken in {:?} with the database down", updates + 1, sending.elapsed());
    let deadline = Instant::now() + Duration::from_secs(20);
    while (metrics.journal_backlog.get() as usize) < updates + 1 {
        assert!(Instant::now() < deadline, "journal holds {} of {}", metrics.journal_backlog.get(), updates + 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The camera API and reload answer while the database is down.
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{api}");
    let asked = Instant::now();
    let added = http
        .post(format!("{base}/api/cameras"))
        .bearer_auth(TOKEN)
        .json(&json!({"id": "late", "url": server.url()}))
        .send()
        .await
        .unwrap();
    let add_took = asked.elapsed();
    let asked = Instant::now();
    let reload = http
        .post(format!("{base}/api/reload"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    let reload_took = asked.elapsed();
    println!(
        "with the database down: POST /api/cameras {} in {add_took:?}, reload {} in {reload_took:?}",
        added.status(),
        reload.status()
    );
    assert_eq!(added.status().as_u16(), 503, "a camera cannot be saved without the database");
    assert!(add_took < Duration::from_secs(2), "POST /api/cameras took {add_took:?}");
    assert_eq!(reload.status().as_u16(), 200);
    assert!(reload_took < Duration::from_secs(2), "POST /api/reload took {reload_took:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(metrics.events_dropped("tracking"), 0, "nothing dropped while the journal has room");
    outage.end();
    let up = chrono::Utc::now();

    drop(events);
    tokio::time::timeout(Duration::from_secs(60), recorder).await.expect("recorder drains").unwrap();
    let saved = saved_for(&store, &burst).await;
    println!("burst: {} sent, {} saved", updates + 2, saved.len());
    assert_eq!(saved.len(), updates + 2, "every event saved");
    let order: Vec<i64> = saved.iter().map(|e| e.event_data["n"].as_i64().unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "saved in the order they came");
    assert_eq!(metrics.journal_backlog.get(), 0);
    assert_eq!(std::fs::read_dir(dir.path().join("journal")).unwrap().count(), 0, "the journal is emptied");

    // The running vigil rode it out and saved what its camera saw meanwhile.
    let deadline = Instant::now() + Duration::from_secs(20);
    let during = loop {
        let during: Vec<_> =
            saved_for(&store, &tag).await.into_iter().filter(|e| e.timestamp >= down && e.timestamp <= up).collect();
        if !during.is_empty() || Instant::now() > deadline {
            break during;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("vigil: {} events from the outage window saved after it", during.len());
    assert!(!during.is_empty(), "the camera's events from the outage were lost:\n{}", vigil.log_text());
    assert!(vigil.log_text().contains("database unreachable"), "{}", vigil.log_text());
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0), "vigil never exited");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_the_database_down_exits_and_the_next_start_writes_what_was_held() {
    let _turn = CLUSTER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let server = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let tag = format!("sigterm-{}", std::process::id());
    let stream = format!("sigterm-stream-{}", std::process::id());
    let config = pg_config(dir.path(), &redis.url(), &tag, &server.url(), free_port(), &stream);
    let store = Store::connect(&postgres_url()).await.unwrap();
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("streaming", Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while saved_for(&store, &tag).await.len() < 2 {
        assert!(Instant::now() < deadline, "no events before the outage:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = saved_for(&store, &tag).await.len();

    let outage = Outage::begin();
    vigil.wait_log("holding events in the journal", Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = vigil.log.clone();
    let (code, took) = vigil.terminate();
    println!("SIGTERM with PostgreSQL down: exit {code:?} in {took:?}");
    assert_eq!(code, Some(0));
    assert!(took <= Duration::from_secs(5), "exit took {took:?}:\n{}", std::fs::read_to_string(&log).unwrap());

    // What the journal holds, in order.
    let journal_dir = dir.path().join("journal");
    let held: Vec<(String, String)> = vigil::events::journal::held_events(&journal_dir)
        .unwrap()
        .into_iter()
        .map(|h| (h.ev.event_type.as_str().to_string(), h.ev.data.to_string()))
        .collect();
    assert!(!held.is_empty(), "nothing journaled");
    println!("{before} events saved before the outage, {} journaled", held.len());
    assert!(
        held.iter().any(|(t, d)| t == "camera" && d.contains("disconnected")),
        "the camera's stop is journaled: {held:?}"
    );

    outage.end();
    let restarted = chrono::Utc::now();
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("events journaled by an earlier run", Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let saved = loop {
        let saved = saved_for(&store, &tag).await;
        if saved.len() >= before + held.len() || Instant::now() > deadline {
            break saved;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let replayed: Vec<(String, String)> = saved[before..before + held.len()]
        .iter()
        .map(|e| (e.event_type.as_str().to_string(), e.event_data.to_string()))
        .collect();
    assert_eq!(replayed, held, "the journal is written in order, right after what was saved before");
    let (old, new) = saved.split_at(before + held.len());
    assert!(old.iter().all(|e| e.timestamp < restarted), "nothing from the new run comes first");
    assert!(new.iter().all(|e| e.timestamp > restarted), "no journaled event twice");

    // And on the Stream, once each, in order.
    let mut conn = redis::Client::open(redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let want: Vec<i64> = saved[..before + held.len()].iter().map(|e| e.id).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries: redis::streams::StreamRangeReply =
            redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
        let ids: Vec<i64> = entries
            .ids
            .iter()
            .filter_map(|e| e.get::<String>("data"))
            .map(|d| serde_json::from_str::<vigil::events::Event>(&d).unwrap())
            .filter(|e| e.camera_id == tag)
            .map(|e| e.id)
            .collect();
        if ids.len() >= want.len() {
            assert_eq!(ids[..want.len()], want[..], "the Stream has each held event once, in order");
            break;
        }
        assert!(Instant::now() < deadline, "Stream has {} of {}", ids.len(), want.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
    drop(server);
}
