//! Webhooks against a real local HTTP endpoint: while it is down, events wait and Redis still
//! gets them; once it is up, it receives every matching event in id order, signed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use common::{Redis, Vigil, cameras_config, free_port, media};
use hmac::{Hmac, KeyInit, Mac};
use vigil::events::{Event, EventType, Store};
use vigil::sample::SampleServer;

const SECRET: &str = "hook-secret";

type Received = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// An HTTP endpoint on `port` that records every POST to `/hook` and answers 204.
async fn endpoint(port: u16) -> Received {
    let received = Received::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    received
}

fn expected_signature(body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn wanted(e: &Event) -> bool {
    e.camera_id == "cam" && matches!(e.event_type, EventType::Motion | EventType::Camera)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_its_events_in_order_and_signed_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let cam = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let other = SampleServer::start(&media("car-detection.mp4"), "other", 0).unwrap();
    let (api, hook_port) = (free_port(), free_port());
    let (mut toml, db) = cameras_config(dir.path(), &redis.url(), api, &[("cam", cam.url()), ("other", other.url())]);
    toml.push_str(&format!(
        "[[webhooks]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nevents = [\"motion\", \"camera\"]\n\
         cameras = [\"cam\"]\ntimeout_secs = 1\nsecret = \"{SECRET}\"\n"
    ));
    let vigil = Vigil::start(dir.path(), &toml);
    vigil.wait_log("HTTP API and page up", Duration::from_secs(30)).await;
    let store = Store::connect(&db).await.unwrap();

    // The endpoint is down: matching events pile up, and Redis still gets everything.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let events = store.after(0, 10_000).await.unwrap();
        let motion = events.iter().filter(|e| wanted(e) && e.event_type == EventType::Motion).count();
        if motion >= 2 && store.unpublished_count().await.unwrap() == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no motion from cam, or not published: {}", events.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    vigil.wait_log("webhook POST failed", Duration::from_secs(5)).await;

    let received = endpoint(hook_port).await;
    let due: Vec<i64> = store.after(0, 10_000).await.unwrap().iter().filter(|e| wanted(e)).map(|e| e.id).collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    while received.lock().unwrap().len() < due.len() {
        assert!(Instant::now() < deadline, "{} of {} delivered", received.lock().unwrap().len(), due.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let received = received.lock().unwrap().clone();
    let mut ids = Vec::new();
    for (headers, body) in &received {
        let ev: Event = serde_json::from_slice(body).unwrap();
        assert!(wanted(&ev), "filtered out: {ev:?}");
        assert_eq!(headers["x-vigil-signature"].to_str().unwrap(), expected_signature(body));
        assert_eq!(headers["x-vigil-event-id"].to_str().unwrap(), ev.id.to_string());
        assert_eq!(headers["content-type"], "application/json");
        ids.push(ev.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order, once each: {ids:?}");
    assert_eq!(ids[..due.len()], due[..], "every matching event, the ones from before it was up first");
    let (code, _) = vigil.terminate();
    assert_eq!(code, Some(0));
}
