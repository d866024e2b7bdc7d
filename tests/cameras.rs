//! Cameras changed while running, on a real `vigil run` with real RTSP servers: added, replaced
//! and removed through the API (kept across restarts), and the config file reloaded on SIGHUP
//! and `POST /api/reload`. The other cameras never notice.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Redis, Vigil, camera_states, free_port, media};
use serde_json::{Value, json};
use vigil::events::{Event, EventType, Store};
use vigil::sample::SampleServer;

const TOKEN: &str = "cam-admin-token";

/// The common config with the bearer token set.
fn config(dir: &std::path::Path, redis: &str, api: u16, cameras: &[(&str, String)]) -> (String, String) {
    let (toml, db) = common::cameras_config(dir, redis, api, cameras);
    (toml.replacen("[server]\n", &format!("[server]\ntoken = \"{TOKEN}\"\n"), 1), db)
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(api: u16) -> Self {
        Self { http: reqwest::Client::new(), base: format!("http://127.0.0.1:{api}") }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let write = method != reqwest::Method::GET;
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        } else if write {
            req = req.header("content-type", "application/json");
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn camera(&self, id: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, &format!("/api/cameras/{id}"), None).await
    }

    async fn wait_streaming(&self, id: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let (status, cam) = self.camera(id).await;
            if status == 200 && cam["state"] == "streaming" {
                return;
            }
            assert!(Instant::now() < deadline, "camera {id} not streaming: {status} {cam}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Polls a camera's decoded-frame counter every 50 ms until stopped; returns the longest time
/// it stood still and how many frames it advanced.
struct Watch {
    started: Instant,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, u64)>,
}

impl Watch {
    fn start(api: u16, id: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, id) = (stop.clone(), id.to_string());
        let task = tokio::spawn(async move {
            let client = Client::new(api);
            let frames = async || client.camera(&id).await.1["frames_decoded"].as_u64().unwrap();
            let first = frames().await;
            let (mut last, mut since, mut longest) = (first, Instant::now(), Duration::ZERO);
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let now = frames().await;
                if now > last {
                    (last, since) = (now, Instant::now());
                }
                longest = longest.max(since.elapsed());
            }
            (longest, last - first)
        });
        Self { started: Instant::now(), stop, task }
    }

    /// Stop watching, at least `min` after the start.
    async fn finish(self, min: Duration) -> (Duration, u64) {
        tokio::time::sleep_until((self.started + min).into()).await;
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// Waits until camera `id`'s `camera` events end with `tail`.
async fn wait_states_end(store: &Store, id: &str, tail: &[&str], limit: Duration) -> Vec<Event> {
    let deadline = Instant::now() + limit;
    loop {
        let events = store.after(0, 100_000).await.unwrap();
        let states = camera_states(&events, id);
        if states.ends_with(&tail.iter().map(|s| s.to_string()).collect::<Vec<_>>()) {
            return events;
        }
        assert!(Instant::now() < deadline, "camera {id}: {states:?}, want them to end with {tail:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tracks(events: &[Event], id: &str, phase: &str) -> Vec<u64> {
    let mut ids: Vec<u64> = events
        .iter()
        .filter(|e| e.event_type == EventType::Tracking && e.camera_id == id && e.event_data["phase"] == phase)
        .map(|e| e.event_data["track_id"].as_u64().unwrap())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cameras_added_through_the_api_run_persist_and_stop_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let one = SampleServer::start(&media("car-detection.mp4"), "one", 0).unwrap();
    let two = SampleServer::start(&media("road.mp4"), "two", 0).unwrap();
    let api = free_port();
    let (toml, db) = config(dir.path(), &redis.url(), api, &[("one", one.url())]);
    let vigil = Vigil::start(dir.path(), &toml);
    vigil.wait_log("HTTP API and page up", Duration::from_secs(30)).await;
    let client = Client::new(api);
    client.wait_streaming("one", Duration::from_secs(20)).await;

    // Writes need the token, and bodies are checked like the config, naming the field.
    let anonymous = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{api}/api/cameras"))
        .json(&json!({"camera_id": "two", "stream_url": two.url()}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let post = |body| client.send(reqwest::Method::POST, "/api/cameras", Some(body));
    let (status, err) = post(json!({"camera_id": "two", "stream_url": two.url(), "detect_fps": "fast"})).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().unwrap().starts_with("detect_fps: invalid type"), "{err}");
    let (status, err) = post(json!({"camera_id": "two", "stream_url": "http://nope/x"})).await;
    assert_eq!(
        (status, err["error"].as_str().unwrap()),
        (400, "url: unsupported URL scheme `http` (expected rtsp:// or file://)")
    );
    let (status, err) = post(json!({"camera_id": "one", "stream_url": two.url()})).await;
    assert_eq!((status, err["error"].as_str().unwrap()), (409, "camera `one` already exists"));

    // Adds of one id racing each other: the database's insert decides, so exactly one wins.
    // Reads answer while they run: no lock is held across the database or a camera's start.
    let race = |_| post(json!({"camera_id": "three", "stream_url": two.url(), "detection": {"enabled": false}}));
    let reading = async {
        let begun = Instant::now();
        let (status, _) = client.camera("one").await;
        (status, begun.elapsed())
    };
    let (statuses, (read, took)) = tokio::join!(futures::future::join_all((0..4).map(race)), reading);
    let mut codes: Vec<u16> = statuses.iter().map(|(status, _)| *status).collect();
    codes.sort();
    assert_eq!(codes, [201, 409, 409, 409], "{statuses:?}");
    assert_eq!(read, 200);
    assert!(took < Duration::from_secs(1), "a read waited {took:?} behind camera changes");
    let (status, _) = client.send(reqwest::Method::DELETE, "/api/cameras/three", None).await;
    assert_eq!(status, 204);

    let watch = Watch::start(api, "one");
    let body = json!({"camera_id": "two", "stream_url": two.url(), "detection": {"labels": ["car"]}});
    let (status, created) = post(body).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!((created["url"].as_str(), created["source"].as_str()), (Some("/api/cameras/two"), Some("api")));
    let store = Store::connect(&db).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = store.after(0, 100_000).await.unwrap();
        let motion = events.iter().any(|e| e.camera_id == "two" && e.event_type == EventType::Motion);
        if motion && !tracks(&events, "two", "start").is_empty() {
            break;
        }
        let seen: Vec<String> =
            events.iter().map(|e| format!("{} {:?} {}", e.camera_id, e.event_type, e.event_data)).collect();
        assert!(Instant::now() < deadline, "no motion and tracks from the added camera: {seen:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (stood_still, advanced) = watch.finish(Duration::from_secs(3)).await;
    println!("camera one during the add: longest stall {stood_still:?}, {advanced} frames");
    assert!(stood_still <= Duration::from_secs(1), "camera one stalled for {stood_still:?}");
    assert!(advanced > 25, "camera one kept decoding: {advanced} frames");
    let states = camera_states(&store.after(0, 100_000).await.unwrap(), "two");
    assert_eq!(states[..2], ["added", "connected"]);
    assert_eq!(camera_states(&store.after(0, 100_000).await.unwrap(), "one"), ["connected"]);

    // The file owns camera one; the API may change only its own.
    let (status, _) = client.send(reqwest::Method::DELETE, "/api/cameras/one", None).await;
    assert_eq!(status, 409);
    let (status, _) = client.send(reqwest::Method::DELETE, "/api/cameras/nope", None).await;
    assert_eq!(status, 404);

    // Restart: the API camera comes back from the database.
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
    let vigil = Vigil::start(dir.path(), &toml);
    vigil.wait_log("HTTP API and page up", Duration::from_secs(30)).await;
    client.wait_streaming("two", Duration::from_secs(20)).await;
    assert_eq!(client.camera("two").await.1["source"], "api");

    // Replace it: only it restarts, with the new settings.
    let (status, replaced) = client
        .send(reqwest::Method::PUT, "/api/cameras/two", Some(json!({"stream_url": two.url(), "detect_fps": 2})))
        .await;
    assert_eq!(status, 200, "{replaced}");
    wait_states_end(&store, "two", &["disconnected", "updated", "connected"], Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tracks(&store.after(0, 100_000).await.unwrap(), "two", "start").len()
        == tracks(&store.after(0, 100_000).await.unwrap(), "two", "end").len()
    {
        assert!(Instant::now() < deadline, "no open track to end:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Delete it: it stops, every track it started ends, and it stays gone after a restart.
    let (status, _) = client.send(reqwest::Method::DELETE, "/api/cameras/two", None).await;
    assert_eq!(status, 204);
    let events = wait_states_end(&store, "two", &["disconnected", "removed"], Duration::from_secs(10)).await;
    let (started, ended) = (tracks(&events, "two", "start"), tracks(&events, "two", "end"));
    assert!(!started.is_empty());
    assert_eq!(started, ended, "every track of the removed camera ended");
    assert_eq!(client.camera("two").await.0, 404);
    assert!(camera_states(&events, "one").iter().all(|s| s == "connected" || s == "disconnected"));
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
    let vigil = Vigil::start(dir.path(), &toml);
    vigil.wait_log("HTTP API and page up", Duration::from_secs(30)).await;
    client.wait_streaming("one", Duration::from_secs(20)).await;
    assert_eq!(client.camera("two").await.0, 404);
    assert!(!vigil.log_text().contains("panicked"));
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_restarts_only_what_changed_and_refuses_a_broken_file() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let one = SampleServer::start(&media("road.mp4"), "one", 0).unwrap();
    let two = SampleServer::start(&media("car-detection.mp4"), "two", 0).unwrap();
    let moved = SampleServer::start(&media("car-detection.mp4"), "moved", 0).unwrap();
    let api = free_port();
    let (toml, db) = config(dir.path(), &redis.url(), api, &[("one", one.url()), ("two", two.url())]);
    let vigil = Vigil::start(dir.path(), &toml);
    vigil.wait_log("HTTP API and page up", Duration::from_secs(30)).await;
    let client = Client::new(api);
    client.wait_streaming("one", Duration::from_secs(20)).await;
    client.wait_streaming("two", Duration::from_secs(20)).await;
    let store = Store::connect(&db).await.unwrap();
    let file = dir.path().join("cameras.toml");

    // Camera two moves to another URL; SIGHUP restarts it alone.
    let watch = Watch::start(api, "one");
    std::fs::write(&file, toml.replace(&two.url(), &moved.url())).unwrap();
    vigil.hangup();
    wait_states_end(&store, "two", &["disconnected", "updated", "connected"], Duration::from_secs(20)).await;
    let (stood_still, advanced) = watch.finish(Duration::from_secs(3)).await;
    println!("camera one during the reload: longest stall {stood_still:?}, {advanced} frames");
    assert!(stood_still <= Duration::from_secs(1), "camera one stalled for {stood_still:?}");
    assert_eq!(camera_states(&store.after(0, 100_000).await.unwrap(), "one"), ["connected"]);
    vigil.wait_log("config reloaded", Duration::from_secs(5)).await;

    // A broken edit changes nothing: SIGHUP logs why, `POST /api/reload` answers it.
    let before = store.after(0, 100_000).await.unwrap().iter().filter(|e| e.event_type == EventType::Camera).count();
    let broken = toml
        .replace(&two.url(), &moved.url())
        .replace("[[cameras]]\nid = \"one\"", "[[cameras]]\nid = \"one\"\ndetect_fps = -1");
    std::fs::write(&file, &broken).unwrap();
    let line = broken.lines().position(|l| l == "detect_fps = -1").unwrap() + 1;
    vigil.hangup();
    let expected = format!("{}:{line}:14: must be in (0, 120]", file.display());
    vigil.wait_log(&expected, Duration::from_secs(5)).await;
    let (status, err) = client.send(reqwest::Method::POST, "/api/reload", None).await;
    assert_eq!((status, err["error"].as_str().unwrap()), (400, expected.as_str()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = store.after(0, 100_000).await.unwrap().iter().filter(|e| e.event_type == EventType::Camera).count();
    assert_eq!(before, after, "no camera was touched");
    assert_eq!(client.camera("one").await.1["state"], "streaming");
    assert_eq!(client.camera("two").await.1["state"], "streaming");

    // Fixed, with two gone and three new: the answer is the difference.
    let (fixed, _) = config(dir.path(), &redis.url(), api, &[("one", one.url()), ("three", two.url())]);
    std::fs::write(&file, fixed).unwrap();
    let (status, diff) = client.send(reqwest::Method::POST, "/api/reload", None).await;
    assert_eq!(status, 200, "{diff}");
    assert_eq!(diff["added"], json!(["three"]));
    assert_eq!(diff["removed"], json!(["two"]));
    assert_eq!(diff["restarted"], json!([]));
    assert_eq!(diff["unchanged"], json!(["one"]));
    client.wait_streaming("three", Duration::from_secs(20)).await;
    assert_eq!(client.camera("two").await.0, 404);
    let events = store.after(0, 100_000).await.unwrap();
    assert_eq!(camera_states(&events, "two").last().map(String::as_str), Some("removed"));
    assert_eq!(camera_states(&events, "three")[0], "added");
    assert_eq!(camera_states(&events, "one"), ["connected"]);
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
}
