//! The outbox: with Redis down, events are saved and marked unpublished; when Redis comes up,
//! every saved event is published exactly once, in id order (checked on the Redis Stream,
//! which keeps what a Pub/Sub subscriber could miss).

mod common;

use std::time::{Duration, Instant};

use common::{Redis, Vigil, media};
use vigil::events::Store;
use vigil::sample::SampleServer;

async fn stream_ids(redis_url: &str) -> Vec<i64> {
    let client = redis::Client::open(redis_url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<(String, Vec<(String, String)>)> =
        redis::cmd("XRANGE").arg("stream:events").arg("-").arg("+").query_async(&mut conn).await.unwrap();
    entries.into_iter().map(|(_, fields)| fields.iter().find(|(k, _)| k == "id").unwrap().1.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_saved_while_redis_is_down_arrive_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::stopped();
    let server = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let db = format!("sqlite://{}", dir.path().join("events.db").display());
    let config = format!(
        "[database]\nurl = \"{db}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[redis]\nurl = \"{}\"\nstream = \"stream:events\"\n\
         [storage]\nsnapshots_dir = \"{}\"\n[[cameras]]\nid = \"cam-a\"\nurl = \"{}\"\n",
        redis.url(),
        dir.path().join("snaps").display(),
        server.url()
    );
    let vigil = Vigil::start(dir.path(), &config);

    // Wait for the camera to stream and for a motion event to be saved, with Redis down.
    vigil.wait_log("streaming", Duration::from_secs(45)).await;
    let deadline = Instant::now() + Duration::from_secs(45);
    let store = Store::connect(&db).await.unwrap();
    loop {
        let saved = store.after(0, 100).await.unwrap();
        if saved.iter().any(|e| e.event_type == vigil::events::EventType::Motion) {
            break;
        }
        assert!(Instant::now() < deadline, "no motion event saved:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = store.unpublished_count().await.unwrap();
    let saved_while_down: Vec<i64> = store.after(0, 1000).await.unwrap().iter().map(|e| e.id).collect();
    assert!(held >= 2 && held as usize == saved_while_down.len(), "held {held}, saved {saved_while_down:?}");

    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.unpublished_count().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "outbox not drained:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids = stream_ids(&redis.url()).await;
    assert!(ids.starts_with(&saved_while_down), "backlog out of order or missing: {ids:?} vs {saved_while_down:?}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "not in id order or duplicated: {ids:?}");

    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
    let all: Vec<i64> = store.after(0, 10_000).await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(stream_ids(&redis.url()).await, all, "every saved event on the stream exactly once");
    println!("outbox: {} held while Redis was down, {} published in all", saved_while_down.len(), all.len());
}

/// SIGTERM while Redis is down: vigil still exits 0 within 5 s, and what it saved goes out at
/// the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublished_events_go_out_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::stopped();
    let server = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let (config, db) = common::one_camera(dir.path(), &redis.url(), "cam-b", &server.url(), "");
    let config = config.replace("[storage]", "stream = \"stream:events\"\n[storage]");
    let vigil = Vigil::start(dir.path(), &config);
    vigil.wait_log("streaming", Duration::from_secs(45)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (code, took) = vigil.terminate();
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(5), "exit took {took:?} with Redis down");
    let store = Store::connect(&db).await.unwrap();
    let saved: Vec<i64> = store.after(0, 1000).await.unwrap().iter().map(|e| e.id).collect();
    assert!(saved.len() >= 2, "connected and disconnected at least: {saved:?}");
    assert_eq!(store.unpublished_count().await.unwrap() as usize, saved.len());

    redis.resume();
    drop(server);
    let restart = Vigil::start(dir.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.unpublished_count().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "not published at the next start:\n{}", restart.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids = stream_ids(&redis.url()).await;
    assert!(ids.starts_with(&saved), "{ids:?} vs {saved:?}");
    let (code, _) = restart.terminate();
    assert_eq!(code, Some(0));
}
