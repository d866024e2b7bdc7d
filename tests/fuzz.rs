//! Bad input, generated: 10,000 config files through the loader, random queries and ids on every
//! API route, and random camera bodies. Every config gives Ok or a `file:line:col` error; no
//! request gives a 5xx.

mod common;

use std::sync::Arc;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as Runner, TestRunner};
use vigil::config::Config;
use vigil::events::Store;
use vigil::metrics::Metrics;
use vigil::status::Registry;

const KEYS: &[&str] = &[
    "url",
    "channel",
    "extra_channels",
    "stream",
    "stream_maxlen",
    "snapshots_dir",
    "retention_days",
    "listen",
    "token",
    "token_env",
    "allow_unauthenticated",
    "public_metrics",
    "max_sse_clients",
    "dir",
    "detector",
    "provider",
    "max_batch",
    "batch_window_ms",
    "id",
    "decoder",
    "pipeline",
    "transport",
    "size",
    "loop",
    "detect_fps",
    "decode_threads",
    "threshold",
    "min_area",
    "alpha",
    "quiet_secs",
    "mask",
    "capacity",
    "policy",
    "labels",
    "min_score",
    "min_hits",
    "max_age_secs",
    "match_iou",
    "name",
    "polygon",
    "initial_secs",
    "max_secs",
    "stall_secs",
    "bogus",
];
const TABLES: &[&str] = &[
    "[database]",
    "[redis]",
    "[storage]",
    "[server]",
    "[models]",
    "[inference]",
    "[[cameras]]",
    "[cameras.motion]",
    "[cameras.detection]",
    "[cameras.tracker]",
    "[[cameras.zones]]",
    "[cameras.backpressure]",
    "[cameras.reconnect]",
    "[nope]",
];

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z:/@.0-9_{}-]{0,24}".prop_map(|s| format!("{s:?}")),
        prop_oneof![
            Just("rtsp://u:p@h/1"),
            Just("file:///nope.mp4"),
            Just("redis://:pw@x"),
            Just("sqlite://x.db"),
            Just("cpu")
        ]
        .prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:?}")),
        any::<bool>().prop_map(|v| v.to_string()),
        prop::collection::vec(0.0f64..1.2, 0..4)
            .prop_map(|v| format!("[{}]", v.iter().map(|x| format!("[{x}, {x}]")).collect::<Vec<_>>().join(", "))),
        "[^\n]{0,12}",
    ]
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (prop::sample::select(KEYS), value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => prop::sample::select(TABLES).prop_map(String::from),
        1 => "[^\n]{0,20}",
    ]
}

#[test]
fn ten_thousand_configs_load_or_point_at_the_problem() {
    let mut runner = TestRunner::new(Runner { cases: 10_000, failure_persistence: None, ..Runner::default() });
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::<&str, usize>::new());
    runner
        .run(&prop::collection::vec(line(), 0..24), |lines| {
            let text = lines.join("\n");
            let result = Config::parse(&text, "fuzz.toml");
            let kind = match &result {
                Ok(_) => "ok",
                Err(e) if e.to_string().contains("unknown field") || e.to_string().contains("invalid type") => {
                    "schema error"
                }
                Err(e) if e.to_string().contains("TOML parse error") || e.to_string().contains("expected") => {
                    "syntax error"
                }
                Err(_) => "semantic error",
            };
            *outcomes.lock().unwrap().entry(kind).or_default() += 1;
            if let Err(e) = result {
                let msg = e.to_string();
                prop_assert!(has_position(&msg), "no file:line:col in {msg:?} for:\n{text}");
                let (line, col) = line_col(&msg);
                prop_assert!(line >= 1 && line <= text.lines().count().max(1) + 1 && col >= 1, "{msg} for:\n{text}");
            }
            Ok(())
        })
        .unwrap();
    let outcomes = outcomes.into_inner().unwrap();
    println!("{outcomes:?}");
    assert!(
        outcomes.get("ok").copied().unwrap_or(0) >= 100,
        "enough configs load to exercise validation: {outcomes:?}"
    );
    assert!(
        outcomes.get("semantic error").copied().unwrap_or(0) >= 100,
        "and enough reach the semantic checks: {outcomes:?}"
    );
}

/// `fuzz.toml:LINE:COL: …`
fn has_position(msg: &str) -> bool {
    let Some(rest) = msg.strip_prefix("fuzz.toml:") else { return false };
    let mut parts = rest.splitn(3, ':');
    let numeric = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    numeric(parts.next()) && numeric(parts.next()) && parts.next().is_some_and(|r| r.starts_with(' '))
}

fn line_col(msg: &str) -> (usize, usize) {
    let mut parts = msg.strip_prefix("fuzz.toml:").unwrap().splitn(3, ':');
    (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap())
}

/// The API on a free port over a fresh SQLite file, with no cameras; returns its base URL.
async fn serve(dir: &std::path::Path, shutdown: &tokio_util::sync::CancellationToken) -> String {
    let store = Store::connect(&format!("sqlite://{}", dir.join("e.db").display())).await.unwrap();
    let parts = common::ApiParts {
        store,
        metrics: Arc::new(Metrics::new()),
        registry: Arc::new(Registry::default()),
        events: tokio::sync::mpsc::channel(16).0,
        live: tokio::sync::broadcast::channel(16).0,
        token: None,
        sse_slots: 1000,
    };
    common::serve_api(dir, parts, shutdown).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_requests_never_get_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let base = serve(dir.path(), &shutdown).await;

    let keys = ["camera", "type", "label", "plate", "since", "until", "after_id", "limit", "order", "x", ""];
    let values = prop_oneof![
        "[ -~]{0,16}",
        any::<i64>().prop_map(|v| v.to_string()),
        Just("2026-11-22T10:00:00Z".to_string()),
        Just("%00%ff%2e%2e%2f".to_string()),
    ];
    let request = (
        prop::sample::select(vec![
            "/api/events",
            "/api/events/stream",
            "/api/events/{id}",
            "/api/events/{id}/snapshot",
            "/api/cameras",
            "/metrics",
            "/readyz",
        ]),
        "[ -~]{0,12}",
        prop::collection::vec((prop::sample::select(keys.to_vec()), values), 0..4),
    );
    let mut runner = TestRunner::new(Runner { failure_persistence: None, ..Runner::default() });
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_millis(500)).build().unwrap();
    let mut cases = Vec::new();
    for _ in 0..1000 {
        let (route, id, query) = request.new_tree(&mut runner).unwrap().current();
        {
            let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
            let mut url = format!("{base}{}", route.replace("{id}", if id.is_empty() { "0" } else { &id }));
            let q: Vec<String> = query
                .iter()
                .map(|(k, v)| format!("{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()))
                .collect();
            if !q.is_empty() {
                url = format!("{url}?{}", q.join("&"));
            }
            cases.push(url);
        }
    }
    for url in cases {
        match client.get(&url).send().await {
            Ok(res) => assert!(res.status().as_u16() < 500, "{url}: {}", res.status()),
            // A valid live stream stays open; the client gives up on it, which is fine.
            Err(e) if e.is_timeout() && url.contains("/stream") => {}
            Err(e) => panic!("{url}: {e}"),
        }
    }
    shutdown.cancel();
}

/// JSON of camera-like shape: known keys (and some unknown) with values of every type.
fn camera_body() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop::sample::select(vec!["rtsp://u:p@127.0.0.1:9/x", "file:///nope.mp4", "cam-1", "car", "dedicated", ""])
            .prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    let mut keys = KEYS.to_vec();
    keys.extend(["camera_id", "stream_url", "motion", "detection", "anpr", "tracker", "zones", "formats"]);
    let object = move |inner| {
        prop::collection::btree_map(prop::sample::select(keys.clone()), inner, 0..6)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
    };
    let body = leaf.prop_recursive(2, 24, 6, {
        let object = object.clone();
        move |inner| prop_oneof![prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array), object(inner)]
    });
    object(body.boxed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_camera_bodies_never_get_a_server_error() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let base = serve(dir.path(), &shutdown).await;
    let mut runner = TestRunner::new(Runner { failure_persistence: None, ..Runner::default() });
    let strategy = (camera_body(), any::<bool>(), prop::sample::select(vec!["POST", "PUT", "DELETE"]), "[a-c]");
    let client = reqwest::Client::new();
    let mut seen = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..500 {
        let (mut body, addressed, method, id) = strategy.new_tree(&mut runner).unwrap().current();
        // Half the bodies name a source, so the checks past the required fields are reached too.
        if addressed {
            body["id"] = id.clone().into();
            body["url"] = "rtsp://u:p@127.0.0.1:9/x".into();
        }
        let req = match method {
            "POST" => client.post(format!("{base}/api/cameras")),
            "PUT" => client.put(format!("{base}/api/cameras/{id}")),
            _ => client.delete(format!("{base}/api/cameras/{id}")),
        };
        let res = req.json(&body).send().await.unwrap();
        let status = res.status().as_u16();
        let answer: serde_json::Value = res.json().await.unwrap_or_default();
        assert!(status < 500, "{method} {body}: {status} {answer}");
        *seen.entry(status).or_default() += 1;
        if status >= 400 {
            assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{method} {body}: {answer}");
        }
    }
    println!("answers by status: {seen:?}");
    for garbage in ["", "[1, 2]", "{\"id\": ", "null", "\u{0}"] {
        let res = client.post(format!("{base}/api/cameras")).header("content-type", "application/json").body(garbage);
        assert_eq!(res.send().await.unwrap().status().as_u16(), 400, "{garbage:?}");
        let res = client.post(format!("{base}/api/cameras")).body(garbage).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 415, "{garbage:?} without a content type");
    }
    let res = client.post(format!("{base}/api/reload")).header("content-type", "application/json").send().await;
    assert_eq!(res.unwrap().status().as_u16(), 409, "no file to reload");
    shutdown.cancel();
}
