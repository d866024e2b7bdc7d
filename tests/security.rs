//! The API as a way into the host, tried as an attacker would, against a real `vigil run` over
//! real HTTP: pipeline injection (in the body and saved in the database), cross-site plain-text
//! posts, writes without the token, a public bind without a token, and secrets leaking into the
//! log, `/metrics`, API answers or event rows.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Redis, Vigil, cameras_config, free_port, media};
use serde_json::{Value, json};
use vigil::sample::SampleServer;

/// The body from the report: an extra, unconnected chain that copies a file.
fn injection(target: &Path) -> Value {
    json!({
        "id": "evil",
        "url": format!("file://{}", media("road.mp4").display()),
        "pipeline": format!(
            "${{source}} ! decodebin ! videoconvert ! appsink name=sink  filesrc location=/etc/hostname ! filesink location={}",
            target.display()
        ),
    })
}

async fn wait_up(api: u16, vigil: &Vigil) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("http://127.0.0.1:{api}/healthz")).await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "API not up:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A config with no cameras, the API on `api`, and `server` appended to `[server]`.
fn config(dir: &Path, redis: &str, api: u16, server: &str) -> String {
    let (toml, _) = cameras_config(dir, redis, api, &[]);
    toml.replacen("[server]\n", &format!("[server]\n{server}\n"), 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_can_never_run_a_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let pwned = dir.path().join("pwned.txt");
    let http = reqwest::Client::new();
    for token in [None, Some("inj-token-0123456789")] {
        let api = free_port();
        let server = token.map(|t| format!("token = \"{t}\"")).unwrap_or_default();
        let vigil = Vigil::start(dir.path(), &config(dir.path(), &redis.url(), api, &server));
        wait_up(api, &vigil).await;
        let url = format!("http://127.0.0.1:{api}/api/cameras");
        let body = injection(&pwned).to_string();
        let auth = |req: reqwest::RequestBuilder| match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        // As a web page's fetch would send it: no CORS preflight for text/plain.
        let res = auth(http.post(&url).header("content-type", "text/plain").body(body.clone())).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 415, "text/plain, token {token:?}");
        let res = http.post(&url).header("content-type", "application/x-www-form-urlencoded").body(body.clone());
        let status = res.send().await.unwrap().status().as_u16();
        assert!(status == 415 || (token.is_some() && status == 401), "a form post: {status}");
        let res = auth(http.post(&url).header("content-type", "application/json").body(body.clone())).send().await;
        let res = res.unwrap();
        assert_eq!(res.status().as_u16(), 400, "JSON, token {token:?}");
        let answer: Value = res.json().await.unwrap();
        assert!(answer["error"].as_str().unwrap().starts_with("pipeline: "), "{answer}");
        if token.is_some() {
            let res = http.post(&url).header("content-type", "application/json").body(body.clone()).send().await;
            assert_eq!(res.unwrap().status().as_u16(), 401, "JSON without the token");
        }
        // A file:// source through the API reads a file on this host: refused unless allowed.
        let file = json!({"id": "local", "url": format!("file://{}", media("road.mp4").display())});
        let res = auth(http.post(&url).json(&file)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 400);
        let answer: Value = res.json().await.unwrap();
        assert!(answer["error"].as_str().unwrap().starts_with("url: file:// sources"), "{answer}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!pwned.exists(), "the injected chain ran");
        assert_eq!(vigil.terminate().0, Some(0));
    }

    // A pipeline saved in the database by an older version (or by hand) never runs either.
    let db = format!("sqlite://{}", dir.path().join("events.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    sqlx::query("INSERT INTO cameras (id, config, updated_at) VALUES ('evil', ?, '2026-01-01T00:00:00Z')")
        .bind(injection(&pwned).to_string())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let api = free_port();
    let vigil = Vigil::start(dir.path(), &config(dir.path(), &redis.url(), api, ""));
    wait_up(api, &vigil).await;
    vigil.wait_log("saved camera is not valid, not started: pipeline:", Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!pwned.exists(), "the saved chain ran");
    let res = reqwest::get(format!("http://127.0.0.1:{api}/api/cameras/evil")).await.unwrap();
    assert_eq!(res.status().as_u16(), 404);
    assert_eq!(vigil.terminate().0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_write_and_metrics_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let token = "write-token-0123456789";
    let api = free_port();
    let base = format!("http://127.0.0.1:{api}");
    let base = base.as_str();
    let mut vigil = Vigil::start(dir.path(), &config(dir.path(), &redis.url(), api, &format!("token = \"{token}\"")));
    wait_up(api, &vigil).await;
    let http = reqwest::Client::new();
    let writes = [
        (reqwest::Method::POST, "/api/cameras"),
        (reqwest::Method::PUT, "/api/cameras/cam"),
        (reqwest::Method::DELETE, "/api/cameras/cam"),
        (reqwest::Method::POST, "/api/reload"),
    ];
    let body = json!({"id": "cam", "url": "rtsp://127.0.0.1:9/x"});
    for (method, route) in &writes {
        let send = |req: reqwest::RequestBuilder| async { req.json(&body).send().await.unwrap().status().as_u16() };
        let url = format!("{base}{route}");
        assert_eq!(send(http.request(method.clone(), &url)).await, 401, "{method} {route} without the token");
        let query = format!("{url}?access_token={token}");
        assert_eq!(send(http.request(method.clone(), &query)).await, 401, "{method} {route} with ?access_token=");
    }
    // The query token is for the two routes a browser cannot send headers to, and only those.
    let get = |path: String| {
        let http = http.clone();
        async move { http.get(format!("{base}{path}")).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get(format!("/api/events?access_token={token}")).await, 401);
    assert_eq!(get(format!("/api/cameras?access_token={token}")).await, 401);
    assert_eq!(get(format!("/api/events/1/snapshot?access_token={token}")).await, 404);
    let stream = http.get(format!("{base}/api/events/stream?access_token={token}")).send().await.unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    drop(stream);
    assert_eq!(get("/metrics".into()).await, 401);
    assert_eq!(http.get(format!("{base}/metrics")).bearer_auth(token).send().await.unwrap().status().as_u16(), 200);
    assert_eq!(get("/healthz".into()).await, 200);
    assert_eq!(get("/readyz".into()).await, 200);
    // With the token, the write goes through (and is then refused on its merits).
    let res = http.post(format!("{base}/api/reload")).bearer_auth(token).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "{}", res.text().await.unwrap());
    assert_eq!(vigil.terminate().0, Some(0));

    // `public_metrics` opens /metrics alone.
    let server = format!("token = \"{token}\"\npublic_metrics = true");
    vigil = Vigil::start(dir.path(), &config(dir.path(), &redis.url(), api, &server));
    wait_up(api, &vigil).await;
    assert_eq!(get("/metrics".into()).await, 200);
    assert_eq!(get("/api/events".into()).await, 401);
    assert_eq!(vigil.terminate().0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_loopback_names_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let api = free_port();
    let vigil = Vigil::start(dir.path(), &config(dir.path(), &redis.url(), api, ""));
    wait_up(api, &vigil).await;
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{api}/api/events");
    // A page on evil.example whose DNS name was rebound to 127.0.0.1 sends its own name as Host.
    let res = http.get(&url).header("host", format!("evil.example:{api}")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let res = http.get(&url).header("host", format!("localhost:{api}")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(vigil.terminate().0, Some(0));
}

fn vigil_run(config: &Path, env: &[(&str, &str)]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(["run", "-c"])
        .arg(config)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_bind_needs_a_token_or_the_opt_out() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let api = free_port();
    let path = dir.path().join("public.toml");
    let public = config(dir.path(), &redis.url(), api, "")
        .replace(&format!("listen = \"127.0.0.1:{api}\""), &format!("listen = \"0.0.0.0:{api}\""));
    std::fs::write(&path, &public).unwrap();
    let out = vigil_run(&path, &[]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a public address without a token");
    let line = public.lines().position(|l| l.starts_with("listen")).unwrap() + 1;
    assert!(err.contains(&format!("public.toml:{line}:10: 0.0.0.0:{api} is reachable from other hosts")), "{err}");
    assert!(err.contains("token") && err.contains("allow_unauthenticated = true"), "{err}");

    // The opt-out, and a token from the environment, each let it start.
    for (server, env) in [
        ("allow_unauthenticated = true", vec![]),
        ("token_env = \"VIGIL_TEST_TOKEN\"", vec![("VIGIL_TEST_TOKEN", "env-token-0123")]),
    ] {
        std::fs::write(&path, public.replacen("[server]\n", &format!("[server]\n{server}\n"), 1)).unwrap();
        let mut child = vigil_run(&path, &env);
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(res) = reqwest::get(format!("http://127.0.0.1:{api}/api/events")).await {
                break res.status().as_u16();
            }
            assert!(child.try_wait().unwrap().is_none(), "exited with `{server}`");
            assert!(Instant::now() < deadline, "did not start with `{server}`");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status, if env.is_empty() { 200 } else { 401 }, "{server}");
        if let Some((_, token)) = env.first() {
            let res = reqwest::Client::new().get(format!("http://127.0.0.1:{api}/api/events")).bearer_auth(token);
            assert_eq!(res.send().await.unwrap().status().as_u16(), 200);
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

const CANARY: &str = "CanarY7Secret";

/// Every answer of the API that could carry a secret: each list, each event, each camera, and
/// the opening of the live stream.
async fn every_answer(base: &str) -> String {
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move { http.get(format!("{base}{path}")).bearer_auth(CANARY).send().await.unwrap().text().await.unwrap() }
    };
    let mut all = String::new();
    for path in ["/api/events?limit=1000", "/api/cameras", "/metrics", "/readyz", "/healthz", "/"] {
        all.push_str(&get(path.into()).await);
    }
    let events: Value = serde_json::from_str(&get("/api/events?limit=1000".into()).await).unwrap();
    for ev in events["events"].as_array().unwrap() {
        all.push_str(&get(format!("/api/events/{}", ev["id"])).await);
    }
    let cameras: Value = serde_json::from_str(&get("/api/cameras".into()).await).unwrap();
    for cam in cameras.as_array().unwrap() {
        all.push_str(&get(format!("/api/cameras/{}", cam["id"].as_str().unwrap())).await);
    }
    let mut stream = http.get(format!("{base}/api/events/stream?after_id=0")).bearer_auth(CANARY).send().await.unwrap();
    if let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(2), stream.chunk()).await {
        all.push_str(&String::from_utf8_lossy(&chunk));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_with_password(CANARY);
    let cam = SampleServer::start(&media("car-detection.mp4"), "cam", 0).unwrap();
    let (api, dead) = (free_port(), free_port());
    let base = format!("http://127.0.0.1:{api}");
    let live = format!("rtsp://admin:{CANARY}@127.0.0.1:{}/cam?token={CANARY}", cam.port());
    let down = format!("rtsp://admin:{CANARY}@127.0.0.1:{dead}/cam?auth={CANARY}");
    let (toml, db) = cameras_config(dir.path(), &redis.url(), api, &[("live", live), ("down", down)]);
    let mut toml = toml.replacen("[server]\n", &format!("[server]\ntoken = \"{CANARY}\"\n"), 1);
    // A chat-style webhook: its key is in the path and the query, and it is down.
    toml.push_str(&format!(
        "[[webhooks]]\nurl = \"http://user:{CANARY}@127.0.0.1:{dead}/services/{CANARY}/hook?sig={CANARY}\"\n\
         secret = \"{CANARY}\"\ntimeout_secs = 1\n"
    ));
    let vigil = Vigil::start(dir.path(), &toml);
    wait_up(api, &vigil).await;
    // An API camera with the canary in its URL, and a refused body that echoes it.
    let http = reqwest::Client::new();
    let body = json!({"id": "added", "url": format!("rtsp://op:{CANARY}@127.0.0.1:{dead}/x?password={CANARY}")});
    let res = http.post(format!("{base}/api/cameras")).bearer_auth(CANARY).json(&body).send().await.unwrap();
    let mut answers = res.text().await.unwrap();
    let bad = json!({"id": "bad id", "url": format!("rtsp://op:{CANARY}@h/x")});
    let res = http.post(format!("{base}/api/cameras")).bearer_auth(CANARY).json(&bad).send().await.unwrap();
    answers.push_str(&res.text().await.unwrap());

    vigil.wait_log("webhook POST failed", Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = vigil::events::Store::connect(&db).await.unwrap();
    loop {
        let events = store.after(0, 100_000).await.unwrap();
        let motion = events.iter().any(|e| e.camera_id == "live" && e.event_type == vigil::events::EventType::Motion);
        if motion && vigil.log_text().matches("source failed").count() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no motion on the live camera, or no failure on the others:\n{}",
            vigil.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    answers.push_str(&every_answer(&base).await);
    let rows: Vec<String> = sqlx::query_scalar("SELECT event_data || ' ' || COALESCE(snapshot_path, '') FROM events")
        .fetch_all(&sqlx::SqlitePool::connect(&db).await.unwrap())
        .await
        .unwrap();
    let log_file = vigil.log.clone();
    assert_eq!(vigil.terminate().0, Some(0));
    let log = std::fs::read_to_string(log_file).unwrap();
    assert!(log.contains("127.0.0.1"), "the log names the endpoints");
    for (what, text) in [("log", &log), ("API answers", &answers), ("event rows", &rows.join("\n"))] {
        assert!(!text.contains(CANARY), "the canary is in the {what}:\n{text}");
    }

    // A database URL that fails at start, with the canary as its password and in its query.
    let path = dir.path().join("pg.toml");
    let pg = format!("postgres://vigil:{CANARY}@127.0.0.1:{dead}/vigil?sslmode=disable&password={CANARY}");
    std::fs::write(&path, toml.replace(&db, &pg)).unwrap();
    let out = vigil_run(&path, &[]).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("database"), "{err}");
    assert!(!err.contains(CANARY), "{err}");
}
