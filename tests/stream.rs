//! The Redis Stream for consumers that must not miss events: a consumer group shares it with
//! XACK (also from plain `redis-cli`), a dead consumer's entries are claimed by another, the
//! stream stays near `stream_maxlen`; and `vigil replay` rebuilds state from the database.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{Redis, Vigil, cameras_config, free_port};
use redis::AsyncCommands;
use redis::streams::{StreamAutoClaimReply, StreamReadOptions, StreamReadReply};
use vigil::events::{EventType, NewEvent, Store};

const STREAM: &str = "stream:events";
const GROUP: &str = "workers";

/// Saves `n` unpublished events, as if Redis had been down while they happened.
async fn backlog(store: &Store, dir: &std::path::Path, n: usize) {
    for i in 0..n {
        let ev = NewEvent {
            key: None,
            event_type: if i % 3 == 0 { EventType::Camera } else { EventType::Motion },
            camera_id: if i % 2 == 0 { "gate-1" } else { "gate-2" }.into(),
            timestamp: Utc::now(),
            frame_number: Some(i as i64),
            data: serde_json::json!({"phase": "start", "n": i}),
            snapshot: None,
            crop: None,
        };
        store.save(&ev, None, dir).await.unwrap();
    }
}

/// Runs vigil with no cameras until the outbox is empty.
async fn publish_backlog(dir: &std::path::Path, toml: &str, store: &Store) {
    let vigil = Vigil::start(dir, toml);
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.unpublished_count().await.unwrap() > 0 {
        assert!(Instant::now() < deadline, "outbox not drained:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
}

fn event_id(fields: &std::collections::HashMap<String, redis::Value>) -> i64 {
    let id: String = redis::from_redis_value(fields["id"].clone()).unwrap();
    // The contract's field (DESIGN.md: the seed's consumer reads data[b'data']), and the same
    // JSON under the name earlier versions used.
    let json: String = redis::from_redis_value(fields["data"].clone()).unwrap();
    let old: String = redis::from_redis_value(fields["event"].clone()).unwrap();
    assert_eq!(json, old);
    let ev: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(ev["id"].as_i64().unwrap().to_string(), id, "the id field matches the event");
    id.parse().unwrap()
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_group_reads_every_event_once_and_claims_a_dead_consumers_share() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = conn.xgroup_create_mkstream(STREAM, GROUP, "$").await.unwrap();
    let (toml, db) = cameras_config(dir.path(), &redis.url(), free_port(), &[]);
    let toml = toml.replace("[storage]", &format!("stream = \"{STREAM}\"\n[storage]"));
    let store = Store::connect(&db).await.unwrap();
    backlog(&store, dir.path(), 300).await;
    publish_backlog(dir.path(), &toml, &store).await;
    let all: Vec<i64> = store.after(0, 10_000).await.unwrap().iter().map(|e| e.id).collect();

    // Plain redis-cli reads and acknowledges like any consumer.
    let cli = redis_cli(redis.port, &["XREADGROUP", "GROUP", GROUP, "cli", "COUNT", "5", "STREAMS", STREAM, ">"]);
    let cli_entries: Vec<&str> =
        cli.lines().filter(|l| l.contains("-") && l.chars().next().unwrap().is_ascii_digit()).collect();
    assert_eq!(cli_entries.len(), 5, "{cli}");
    // Each entry's JSON twice: under `data` and under the older `event`.
    assert_eq!(cli.matches("\"event_type\"").count(), 10, "{cli}");
    assert_eq!(cli.lines().filter(|l| l.trim() == "data").count(), 5, "{cli}");
    let mut ack = vec!["XACK", STREAM, GROUP];
    ack.extend(&cli_entries);
    assert_eq!(redis_cli(redis.port, &ack).trim(), "5");

    // A consumer reads 10 and dies before acknowledging them.
    let opts = |consumer: &str| StreamReadOptions::default().group(GROUP, consumer).count(10);
    let dead: StreamReadReply = conn.xread_options(&[STREAM], &[">"], &opts("dead")).await.unwrap();
    let lost: Vec<String> = dead.keys[0].ids.iter().map(|e| e.id.clone()).collect();
    assert_eq!(lost.len(), 10);

    // Two live consumers share the rest, then one claims what the dead one held.
    let mut seen: Vec<i64> = Vec::new();
    let mut turn = 0;
    loop {
        let consumer = ["alice", "bob"][turn % 2];
        turn += 1;
        let reply: StreamReadReply = conn.xread_options(&[STREAM], &[">"], &opts(consumer)).await.unwrap();
        let entries = reply.keys.into_iter().flat_map(|k| k.ids).collect::<Vec<_>>();
        if entries.is_empty() {
            break;
        }
        for e in &entries {
            seen.push(event_id(&e.map));
            let _: i64 = conn.xack(STREAM, GROUP, &[&e.id]).await.unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let claimed: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(STREAM)
        .arg(GROUP)
        .arg("bob")
        .arg(100)
        .arg("0-0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let claimed_ids: Vec<String> = claimed.claimed.iter().map(|e| e.id.clone()).collect();
    assert_eq!(claimed_ids, lost, "bob took over exactly the dead consumer's entries");
    for e in &claimed.claimed {
        seen.push(event_id(&e.map));
        let _: i64 = conn.xack(STREAM, GROUP, &[&e.id]).await.unwrap();
    }
    let pending: redis::streams::StreamPendingReply = conn.xpending(STREAM, GROUP).await.unwrap();
    assert_eq!(pending.count(), 0, "nothing left unacknowledged");
    assert_eq!(seen.len() + 5, all.len(), "every event read once");
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no event read twice");
    assert!(seen.iter().all(|id| all.contains(id)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_stays_near_maxlen_and_replay_prints_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // Approximate trimming removes whole nodes; small nodes make the bound tight.
    let () =
        redis::cmd("CONFIG").arg("SET").arg("stream-node-max-entries").arg(10).query_async(&mut conn).await.unwrap();
    let (toml, db) = cameras_config(dir.path(), &redis.url(), free_port(), &[]);
    let toml = toml.replace("[storage]", &format!("stream = \"{STREAM}\"\nstream_maxlen = 50\n[storage]"));
    let store = Store::connect(&db).await.unwrap();
    backlog(&store, dir.path(), 400).await;
    publish_backlog(dir.path(), &toml, &store).await;
    let len: usize = conn.xlen(STREAM).await.unwrap();
    println!("XLEN after 400 events with stream_maxlen = 50: {len}");
    assert!((50..=60).contains(&len), "XLEN {len}");

    // Replay: the database, oldest first, filtered, as JSON lines.
    let config = dir.path().join("cameras.toml");
    let replay = |args: &[&str]| {
        let out =
            Command::new(env!("CARGO_BIN_EXE_vigil")).arg("replay").arg("-c").arg(&config).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let all = store.after(0, 10_000).await.unwrap();
    let lines = replay(&["--after-id", "0"]);
    assert_eq!(lines.len(), 400);
    assert_eq!(lines[7], serde_json::to_value(&all[7]).unwrap(), "the contract shape");
    let after = all[99].id;
    let camera_2 = replay(&["--after-id", &after.to_string(), "--camera", "gate-2", "--type", "motion"]);
    let want: Vec<i64> = all
        .iter()
        .filter(|e| e.id > after && e.camera_id == "gate-2" && e.event_type == EventType::Motion)
        .map(|e| e.id)
        .collect();
    assert_eq!(camera_2.iter().map(|l| l["id"].as_i64().unwrap()).collect::<Vec<_>>(), want);
    let since = replay(&["--since", "2000-01-01T00:00:00Z", "--type", "camera"]);
    assert_eq!(since.len(), all.iter().filter(|e| e.event_type == EventType::Camera).count());
    let bad = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["replay", "-c"])
        .arg(&config)
        .args(["--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not an RFC 3339 time"));
}
