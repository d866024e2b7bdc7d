//! The HTTP API against a real SQLite database filled by the real recorder, over real HTTP.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vigil::events::{Event, EventType, NewEvent, Store};
use vigil::metrics::Metrics;
use vigil::status::Registry;

struct Api {
    base: String,
    store: Store,
    events: mpsc::Sender<NewEvent>,
    _dir: tempfile::TempDir,
    _publisher_rx: Option<mpsc::Receiver<Event>>,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start(token: Option<&str>) -> Api {
    start_with(token, None, None).await
}

/// The API over the recorder, and, when given, the real publisher to Redis and a webhook.
async fn start_with(
    token: Option<&str>,
    redis: Option<vigil::config::RedisConfig>,
    webhook: Option<vigil::config::WebhookConfig>,
) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("e.db").display())).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let (recorder, publisher_rx) = common::recorder(&store, dir.path(), metrics.clone());
    let (live, lagged) = (recorder.live.clone(), recorder.lagged.clone());
    let (events, rx) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    tokio::spawn(recorder.run(rx, shutdown.clone()));
    let publisher_rx = match redis {
        Some(cfg) => {
            let up = Arc::new(AtomicBool::new(false));
            let publisher = vigil::events::Publisher::new(cfg, store.clone(), metrics.clone(), lagged, up).unwrap();
            tokio::spawn(publisher.run(publisher_rx, shutdown.clone()));
            None
        }
        None => Some(publisher_rx),
    };
    if let Some(cfg) = webhook {
        let hook = vigil::events::Webhook::new(cfg, store.clone(), metrics.clone()).unwrap();
        tokio::spawn(hook.run(live.subscribe(), shutdown.clone()));
    }
    let registry = Arc::new(Registry::default());
    registry.add("gate-1", metrics.camera("gate-1"));
    let parts = common::ApiParts {
        store: store.clone(),
        metrics,
        registry,
        events: events.clone(),
        live,
        token: token.map(String::from),
        sse_slots: 4,
    };
    let base = common::serve_api(dir.path(), parts, &shutdown).await;
    Api { base, store, events, _dir: dir, _publisher_rx: publisher_rx, shutdown }
}

/// Saves through the recorder and waits until the row exists.
async fn record(api: &Api, ev: NewEvent) -> i64 {
    let before = api.store.after(0, 100_000).await.unwrap().len();
    api.events.send(ev).await.unwrap();
    for _ in 0..200 {
        let all = api.store.after(0, 100_000).await.unwrap();
        if all.len() > before {
            return all.last().unwrap().id;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("event not saved");
}

fn event(camera: &str, kind: EventType, data: Value) -> NewEvent {
    NewEvent {
        key: None,
        event_type: kind,
        camera_id: camera.into(),
        timestamp: chrono::Utc::now(),
        frame_number: Some(1),
        data,
        snapshot: None,
        crop: None,
    }
}

/// 24 events over two cameras and three types, with labels and plates.
async fn fill(api: &Api) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..24 {
        let camera = if i % 2 == 0 { "gate-1" } else { "gate-2" };
        let ev = match i % 3 {
            0 => event(camera, EventType::Motion, json!({"phase": "start"})),
            1 => event(
                camera,
                EventType::Tracking,
                json!({"phase": "start", "label": if i % 4 == 1 { "car" } else { "person" }}),
            ),
            _ => event(camera, EventType::Anpr, json!({"plate": format!("AB{i:03}C"), "label": "car"})),
        };
        ids.push(record(api, ev).await);
    }
    ids
}

async fn get(url: &str) -> (u16, Value) {
    let res = reqwest::get(url).await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn ids_of(url: &str) -> Vec<i64> {
    let (status, body) = get(url).await;
    assert_eq!(status, 200, "{url}: {body}");
    body["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_filters_and_bad_input() {
    let api = start(None).await;
    let ids = fill(&api).await;

    for (order, expected) in [("newest", ids.iter().rev().copied().collect::<Vec<_>>()), ("oldest", ids.clone())] {
        let mut seen: Vec<i64> = Vec::new();
        let mut after = None;
        loop {
            let mut url = format!("{}/api/events?limit=7&order={order}", api.base);
            if let Some(a) = after {
                url.push_str(&format!("&after_id={a}"));
            }
            let (status, body) = get(&url).await;
            assert_eq!(status, 200);
            let page: Vec<i64> = body["events"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
            assert!(page.len() <= 7);
            seen.extend(&page);
            match body["next_after_id"].as_i64() {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, expected, "{order}: every row once, in order, across pages");
    }

    let row = |i: usize| ids[i];
    assert_eq!(ids_of(&format!("{}/api/events?camera=gate-2&order=oldest", api.base)).await.len(), 12);
    assert_eq!(ids_of(&format!("{}/api/events?type=anpr&order=oldest", api.base)).await.len(), 8);
    let cars = ids_of(&format!("{}/api/events?label=car&type=tracking", api.base)).await;
    assert_eq!(cars, vec![row(13), row(1)]);
    assert_eq!(ids_of(&format!("{}/api/events?plate=ab005c", api.base)).await, vec![row(5)]);
    assert_eq!(
        ids_of(&format!("{}/api/events?plate=AB01*&order=oldest", api.base)).await,
        vec![row(11), row(14), row(17)]
    );
    let one: Event = reqwest::get(format!("{}/api/events/{}", api.base, row(3))).await.unwrap().json().await.unwrap();
    let saved = api.store.get(row(3)).await.unwrap().unwrap();
    assert_eq!(json!(one), json!(saved), "rows are the event contract");
    let until = vigil::events::format_ts(&one.timestamp);
    assert_eq!(ids_of(&format!("{}/api/events?until={until}&order=oldest", api.base)).await, ids[..3].to_vec());

    for bad in [
        "limit=0",
        "limit=5000",
        "type=bogus",
        "since=yesterday",
        "after_id=-1",
        "after_id=abc",
        "order=sideways",
        "plate=A%25B",
        "camera=a/b",
        "colour=red",
    ] {
        let (status, body) = get(&format!("{}/api/events?{bad}", api.base)).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{bad}: {body}");
    }
    assert_eq!(get(&format!("{}/api/events/abc", api.base)).await.0, 400);
    assert_eq!(get(&format!("{}/api/events/99999", api.base)).await.0, 404);
    assert_eq!(get(&format!("{}/api/nothing", api.base)).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_served_and_cannot_escape() {
    let api = start(None).await;
    // A real frame-less event has no snapshot; give one a JPEG through the store.
    let mut jpeg = Vec::new();
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let dir = api._dir.path().join("snaps");
    let (with_snapshot, _) =
        api.store.save(&event("gate-1", EventType::Motion, json!({})), Some((&jpeg, None)), &dir).await.unwrap();
    let without = record(&api, event("gate-1", EventType::Camera, json!({"state": "connected"}))).await;

    let res = reqwest::get(format!("{}/api/events/{}/snapshot", api.base, with_snapshot.id)).await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    assert_eq!(res.bytes().await.unwrap().as_ref(), jpeg.as_slice());
    assert_eq!(get(&format!("{}/api/events/{without}/snapshot", api.base)).await.0, 404);
    assert_eq!(get(&format!("{}/api/events/{without}/crop", api.base)).await.0, 404, "no crop");

    // A row pointing outside the snapshot directory (a tampered or foreign database).
    std::fs::write(api._dir.path().join("secret.txt"), "secret").unwrap();
    let pool =
        sqlx::SqlitePool::connect(&format!("sqlite://{}", api._dir.path().join("e.db").display())).await.unwrap();
    for evil in ["../secret.txt", "/etc/passwd", "gate-1/../../secret.txt"] {
        sqlx::query("UPDATE events SET snapshot_path = ? WHERE id = ?")
            .bind(evil)
            .bind(without)
            .execute(&pool)
            .await
            .unwrap();
        let (status, body) = get(&format!("{}/api/events/{without}/snapshot", api.base)).await;
        assert_eq!(status, 404, "{evil}: {body}");
        // The crop's path is in the event's JSON: the same guard applies to it.
        let data = json!({ "crop_path": evil }).to_string();
        sqlx::query("UPDATE events SET event_data = ? WHERE id = ?")
            .bind(data)
            .bind(without)
            .execute(&pool)
            .await
            .unwrap();
        let (status, body) = get(&format!("{}/api/events/{without}/crop", api.base)).await;
        assert_eq!(status, 404, "crop {evil}: {body}");
    }
    for path in ["..%2F..%2Fsecret.txt", "%2E%2E", "1%2F..%2F..%2Fsecret.txt"] {
        let status = get(&format!("{}/api/events/{path}/snapshot", api.base)).await.0;
        assert!(status == 400 || status == 404, "{path}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_every_api_route() {
    let api = start(Some("s3cret-token")).await;
    let id = record(&api, event("gate-1", EventType::Motion, json!({}))).await;
    let client = reqwest::Client::new();
    for route in [
        "/api/events",
        &format!("/api/events/{id}"),
        &format!("/api/events/{id}/snapshot"),
        &format!("/api/events/{id}/crop"),
        "/api/cameras",
        "/api/cameras/gate-1/frame",
        "/api/events/stream",
    ] {
        let res = client.get(format!("{}{route}", api.base)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401, "{route}");
        let res = client.get(format!("{}{route}", api.base)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(res.status().as_u16(), 401, "{route}");
    }
    let ok = client.get(format!("{}/api/events", api.base)).bearer_auth("s3cret-token").send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    // In the query only where a browser cannot send a header: the live stream and images.
    let res = client.get(format!("{}/api/cameras?access_token=s3cret-token", api.base)).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 401);
    let ok = client.get(format!("{}/api/events/stream?access_token=s3cret-token", api.base)).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let ok = client.get(format!("{}/api/events/{id}/snapshot?access_token=s3cret-token", api.base)).send().await;
    assert_eq!(ok.unwrap().status().as_u16(), 404, "past the token: the event has no snapshot");
    let ok = client.get(format!("{}/api/events/{id}/crop?access_token=s3cret-token", api.base)).send().await;
    assert_eq!(ok.unwrap().status().as_u16(), 404, "past the token: the event has no crop");
    let ok = client.get(format!("{}/api/cameras/gate-1/frame?access_token=s3cret-token", api.base)).send().await;
    assert_eq!(ok.unwrap().status().as_u16(), 404, "past the token: no such camera runs here");
    assert_eq!(client.get(format!("{}/healthz", api.base)).send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_cameras() {
    let api = start(None).await;
    record(&api, event("gate-1", EventType::Motion, json!({}))).await;
    let text = reqwest::get(format!("{}/metrics", api.base)).await.unwrap().text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let names: HashSet<&str> = scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    assert!(scrape.samples.iter().all(|s| s.metric.starts_with("vigil_")));
    for want in [
        "vigil_events_saved_total",
        "vigil_frames_decoded_total",
        "vigil_frames_dropped_total",
        "vigil_outbox_backlog",
        "vigil_frame_to_publish_seconds_count",
        "vigil_redis_errors_total",
        "vigil_db_errors_total",
    ] {
        assert!(names.contains(want), "{want} missing: {names:?}");
    }
    let (status, ready) = get(&format!("{}/readyz", api.base)).await;
    assert_eq!((status, &ready), (200, &json!({"database": "up", "redis": "down"})));
    let (status, cams) = get(&format!("{}/api/cameras", api.base)).await;
    assert_eq!(status, 200);
    assert_eq!(cams[0]["id"], "gate-1");
    assert_eq!(cams[0]["state"], "connecting");
    for key in
        ["decode_fps", "analysed_fps", "detect_fps", "frames_dropped", "queue_depth", "inference_ms", "last_error"]
    {
        assert!(cams[0].get(key).is_some(), "{key}");
    }
}

/// Reads `(id, event)` pairs from an SSE body.
async fn next_sse<B: AsRef<[u8]>>(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<B>> + Unpin),
    buf: &mut String,
) -> (i64, Event) {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let id = block.lines().find_map(|l| l.strip_prefix("id:")).map(|v| v.trim().parse().unwrap());
            let data = block.lines().find_map(|l| l.strip_prefix("data:")).map(|v| v.trim().to_string());
            if let (Some(id), Some(data)) = (id, data) {
                return (id, serde_json::from_str(&data).unwrap());
            }
            continue;
        }
        let chunk =
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("SSE event").unwrap().unwrap();
        buf.push_str(std::str::from_utf8(chunk.as_ref()).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_replays_from_last_event_id_then_goes_live() {
    let api = start(None).await;
    let ids = fill(&api).await;
    let n = ids[9];
    let res = reqwest::Client::new()
        .get(format!("{}/api/events/stream?camera=gate-1", api.base))
        .header("Last-Event-ID", n.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();
    let mut buf = String::new();
    let expected: Vec<i64> =
        ids.iter().enumerate().filter(|(i, id)| **id > n && i % 2 == 0).map(|(_, id)| *id).collect();
    for want in &expected {
        let (id, ev) = next_sse(&mut stream, &mut buf).await;
        assert_eq!((id, ev.id, ev.camera_id.as_str()), (*want, *want, "gate-1"));
    }
    // Live: saved after connecting (other cameras are filtered out).
    record(&api, event("gate-2", EventType::Motion, json!({}))).await;
    let live = record(&api, event("gate-1", EventType::Motion, json!({"phase": "start"}))).await;
    let (id, ev) = next_sse(&mut stream, &mut buf).await;
    assert_eq!((id, ev.event_data["phase"].as_str()), (live, Some("start")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_streams_beyond_the_cap_get_503_and_events_keep_being_saved() {
    let api = start(None).await;
    fill(&api).await;
    let open = |after: i64| {
        let url = format!("{}/api/events/stream?after_id={after}", api.base);
        async move { reqwest::get(url).await.unwrap() }
    };
    // start() allows four; each replays the history from the database.
    let mut streams = Vec::new();
    for _ in 0..4 {
        let res = open(0).await;
        assert_eq!(res.status().as_u16(), 200);
        streams.push(res.bytes_stream());
    }
    let refused = open(0).await;
    assert_eq!(refused.status().as_u16(), 503);
    let answer: Value = refused.json().await.unwrap();
    assert!(answer["error"].as_str().unwrap().contains("max_sse_clients"), "{answer}");
    // The recorder still saves, and the open streams still get what it saves.
    let id = record(&api, event("gate-1", EventType::Motion, json!({"phase": "start"}))).await;
    let mut buf = String::new();
    loop {
        let (got, _) = next_sse(&mut streams[0], &mut buf).await;
        if got == id {
            break;
        }
    }
    // A client that goes away gives its place back.
    streams.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let res = open(id).await;
        if res.status().as_u16() == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed stream's place was not given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plate read of track 1 on gate-1; reads of one track share a key, so a later one revises.
fn plate_read(plate: &str) -> NewEvent {
    NewEvent {
        key: Some("anpr:gate-1:1".into()),
        ..event("gate-1", EventType::Anpr, json!({"plate": plate, "track_id": 1}))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revised_plate_goes_out_again_with_revision_1_everywhere() {
    let redis = common::Redis::start();
    let stream_key = "revisions";
    let (hook_port, received) = {
        let port = common::free_port();
        (port, common::hook_endpoint(port).await)
    };
    let redis_cfg = vigil::config::RedisConfig {
        url: redis.url(),
        stream: Some(stream_key.into()),
        ..vigil::config::RedisConfig::default()
    };
    let hook: vigil::config::WebhookConfig =
        toml::from_str(&format!("url = \"http://127.0.0.1:{hook_port}/hook\"\nevents = [\"anpr\"]")).unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("events").await.unwrap();
    let api = start_with(None, Some(redis_cfg), Some(hook)).await;
    let live_sse = reqwest::get(format!("{}/api/events/stream?camera=gate-1", api.base)).await.unwrap();
    let mut live_sse = live_sse.bytes_stream();

    let id = record(&api, plate_read("AB123CO")).await;
    api.events.send(plate_read("AB123CD")).await.unwrap();
    let mut messages = pubsub.on_message();
    let mut on_channel = Vec::new();
    while on_channel.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next()).await.expect("published").unwrap();
        let ev: Event = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
        on_channel.push((ev.id, ev.revision, ev.event_data["plate"].as_str().unwrap().to_string()));
    }
    let want = vec![(id, 0, "AB123CO".to_string()), (id, 1, "AB123CD".to_string())];
    assert_eq!(on_channel, want, "Pub/Sub: the same id, revision + 1, the better read");

    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: redis::streams::StreamRangeReply =
        redis::cmd("XRANGE").arg(stream_key).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    let on_stream: Vec<(i64, i64)> = entries
        .ids
        .iter()
        .map(|e| serde_json::from_str::<Event>(&e.get::<String>("data").unwrap()).unwrap())
        .map(|ev| (ev.id, ev.revision))
        .collect();
    assert_eq!(on_stream, vec![(id, 0), (id, 1)], "the Stream");

    let mut buf = String::new();
    let (first_seq, first) = next_sse(&mut live_sse, &mut buf).await;
    let (_, second) = next_sse(&mut live_sse, &mut buf).await;
    assert_eq!([(first.id, first.revision), (second.id, second.revision)], [(id, 0), (id, 1)], "SSE, live");
    // A client that saw revision 0 and reconnects gets revision 1 on replay.
    let replay = reqwest::Client::new()
        .get(format!("{}/api/events/stream?camera=gate-1", api.base))
        .header("Last-Event-ID", first_seq.to_string())
        .send()
        .await
        .unwrap();
    let mut replay = replay.bytes_stream();
    let (_, again) = next_sse(&mut replay, &mut String::new()).await;
    assert_eq!((again.id, again.revision, again.event_data["plate"].as_str()), (id, 1, Some("AB123CD")), "SSE, replay");

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let hooked = loop {
        let got: Vec<(i64, i64)> = received
            .lock()
            .unwrap()
            .iter()
            .map(|body| serde_json::from_slice::<Event>(body).unwrap())
            .map(|ev| (ev.id, ev.revision))
            .collect();
        if got.len() >= 2 || std::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(hooked, vec![(id, 0), (id, 1)], "the webhook");
}
