//! The web page in a real browser: Debian's headless Chromium, driven over WebDriver
//! (chromedriver), opens the page before any event exists; the camera then comes up and its
//! events must appear in the page live, through the SSE stream, within 15 s. The API has a token,
//! given to the page once in its address: the page must use it for every call and image, and
//! take it out of the address bar.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{PortHold, Redis, Vigil, free_port, media};
use serde_json::{Value, json};
use vigil::sample::SampleServer;

const TOKEN: &str = "page-token-0123456789";

struct Driver {
    child: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Driver {
    async fn start(profile: &std::path::Path) -> Self {
        let port = free_port();
        // Its own process group, so the browser it starts goes with it (see Drop).
        let child = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/test installs chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        // The flags that work on this closed network (see /work/.library/env).
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let deadline = Instant::now() + Duration::from_secs(20);
        let session = loop {
            if let Ok(res) = http.post(format!("{base}/session")).json(&caps).send().await {
                let body: Value = res.json().await.unwrap();
                break body["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {body}")).to_string();
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        Self { child, base, session, http }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}/{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if !body.is_null() {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        res.json::<Value>().await.unwrap()["value"].clone()
    }

    /// Save a screenshot of the page as `name` in the test's scratch directory (for docs/).
    async fn screenshot(&self, name: &str) {
        let png = self.call(reqwest::Method::GET, "screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"));
        let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&out, png).unwrap();
        println!("screenshot: {}", out.display());
    }

    async fn script(&self, js: &str) -> Value {
        self.call(reqwest::Method::POST, "execute/sync", json!({"script": js, "args": []})).await
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Chromium outlives chromedriver when only chromedriver is killed.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

/// vigil with `config` (its API on `api_port`, with [`TOKEN`]), and Chromium on its page, given
/// the token once in the address. Returns them and the page's address.
async fn open_page(dir: &std::path::Path, config: &str, api_port: u16) -> (Vigil, Driver, String) {
    let vigil = Vigil::start(dir, config);
    let page = format!("http://127.0.0.1:{api_port}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{page}readyz")).await.map(|r| r.status().as_u16()).ok() != Some(200) {
        assert!(Instant::now() < deadline, "API not up:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let driver = Driver::start(&dir.join("chromium")).await;
    driver.call(reqwest::Method::POST, "url", json!({"url": format!("{page}?access_token={TOKEN}")})).await;
    (vigil, driver, page)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_events_live() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let (api_port, rtsp) = (free_port(), PortHold::new());
    let rtsp_port = rtsp.port();
    let config = format!(
        "[database]\nurl = \"sqlite://{}\"\n[server]\nlisten = \"127.0.0.1:{api_port}\"\ntoken = \"{TOKEN}\"\n[redis]\nurl = \"{}\"\n\
         [storage]\nsnapshots_dir = \"{}\"\n[[cameras]]\nid = \"lobby\"\nurl = \"rtsp://127.0.0.1:{rtsp_port}/cam\"\n\
         [cameras.reconnect]\ninitial_secs = 0.5\nmax_secs = 1.0\n",
        dir.path().join("e.db").display(),
        redis.url(),
        dir.path().join("snaps").display(),
    );
    let (vigil, driver, page) = open_page(dir.path(), &config, api_port).await;
    assert_eq!(driver.script("return location.href").await, json!(page), "the token left the address bar");
    let rows = "return document.querySelectorAll('li.event').length";
    assert_eq!(driver.script(rows).await, json!(0), "no events yet: the camera is not serving");
    let cameras = driver.script("return document.querySelector('#cameras tbody').innerText").await;
    println!("cameras before: {cameras}");

    // The camera's server comes up now; its events can only reach the page through SSE.
    let server = SampleServer::start(&media("car-detection.mp4"), "cam", rtsp_port).unwrap();
    let started = Instant::now();
    let mut count = 0;
    while started.elapsed() < Duration::from_secs(15) {
        count = driver.script(rows).await.as_u64().unwrap_or(0);
        if count >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("{count} event rows after {:?}", started.elapsed());
    assert!(count >= 1, "no event row within 15 s:\n{}", vigil.log_text());
    let text = driver.script("return document.querySelector('#events').innerText").await;
    assert!(text.as_str().unwrap().contains("lobby"), "{text}");
    assert_eq!(driver.script("return document.querySelector('#live').textContent").await, json!("live"));
    let cameras = driver.script("return document.querySelector('#cameras tbody').innerText").await;
    assert!(cameras.as_str().unwrap().contains("lobby"), "the camera table loads with the token: {cameras}");
    let loaded =
        "return [...document.querySelectorAll('li.event img')].filter(i => i.complete && i.naturalWidth > 0).length";
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver.script(loaded).await.as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no snapshot image loaded with the token");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The camera's tile shows its latest frame, scaled down, and keeps it fresh.
    let tile = "const i = document.querySelector('#tiles .tile[data-id=lobby] img'); \
                return i && i.complete && i.naturalWidth > 0 ? [i.naturalWidth, i.naturalHeight, i.src] : null";
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let got = driver.script(tile).await;
        if !got.is_null() {
            break got;
        }
        assert!(Instant::now() < deadline, "the tile shows no frame:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("tile: {first}");
    let (w, h) = (first[0].as_u64().unwrap(), first[1].as_u64().unwrap());
    assert!(w <= 640 && h > 0 && h < w, "a landscape preview at most 640 wide: {w}×{h}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver.script(tile).await[2] == first[2] {
        assert!(Instant::now() < deadline, "the tile was not refreshed");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A camera added from the page's form (with the token, as JSON) starts; its remove button
    // stops it; the file's camera cannot be removed, and the page says why.
    let add = format!(
        "const f = document.querySelector('#add-camera'); f.camera_id.value = 'door'; f.stream_url.value = '{}'; \
         f.querySelector('button').click();",
        server.url()
    );
    driver.script(&add).await;
    let state_of = "return [...document.querySelectorAll('#cameras tbody tr')].map(r => r.cells[0].textContent + ':' + r.cells[1].textContent).join(' ')";
    let wait_cameras = async |done: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let now = driver.script(state_of).await;
            if done(now.as_str().unwrap_or_default()) {
                return;
            }
            assert!(Instant::now() < deadline, "cameras: {now}\n{}", vigil.log_text());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    wait_cameras(&|c| c.contains("door:streaming")).await;
    let remove = |id: &str| {
        format!(
            "[...document.querySelectorAll('#cameras tbody tr')].find(r => r.cells[0].textContent == '{id}').querySelector('button').click()"
        )
    };
    driver.script(&remove("door")).await;
    wait_cameras(&|c| !c.contains("door")).await;
    driver.script(&remove("lobby")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let error = driver.script("return document.querySelector('#camera-error').textContent").await;
        if error.as_str().is_some_and(|e| e.contains("lobby") && e.contains("edit the file")) {
            break;
        }
        assert!(Instant::now() < deadline, "no refusal shown: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(driver.script(state_of).await.as_str().unwrap().contains("lobby:streaming"));

    driver.screenshot("page.png").await;
    drop(server);
}

/// Plate reads saved as the recorder saves them (a real snapshot and a real plate crop, from
/// the EU plate set), then found on the page by prefix.
async fn seed_plates(db: &std::path::Path, snaps: &std::path::Path) {
    let store = vigil::events::Store::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/plates/openalpr-eu");
    let jpeg = |img: &image::DynamicImage| {
        let mut out = std::io::Cursor::new(Vec::new());
        img.to_rgb8().write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
        out.into_inner()
    };
    for (n, (file, known)) in [("eu1", None), ("eu10", None), ("eu11", Some("Delivery van"))].into_iter().enumerate() {
        let line = std::fs::read_to_string(dir.join(format!("{file}.txt"))).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        let [x, y, w, h]: [u32; 4] = std::array::from_fn(|i| f[i + 1].parse().unwrap());
        let img = image::open(dir.join(f[0])).unwrap();
        let crop = img.crop_imm(x, y, w, h);
        let plate_box = [x, y, x + w, y + h];
        let mut data = json!({"plate": f[5], "confidence": 0.9 - n as f64 * 0.1, "reads": 3 + n, "track_id": n,
            "plate_box": plate_box, "vehicle_box": [0, 0, img.width(), img.height()]});
        if let Some(name) = known {
            data["known"] = json!({"name": name, "plate": f[5]});
        }
        let ev = vigil::events::NewEvent::new(vigil::events::EventType::Anpr, "gate", chrono::Utc::now(), data)
            .with_crop(plate_box);
        let (saved, err) = store.save(&ev, Some((&jpeg(&img), Some(&jpeg(&crop)))), snaps).await.unwrap();
        assert!(err.is_none() && saved.event_data["crop_path"].is_string(), "{saved:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plates_section_finds_reads_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (db, snaps) = (dir.path().join("e.db"), dir.path().join("snaps"));
    seed_plates(&db, &snaps).await;
    let redis = Redis::start();
    let api_port = free_port();
    let config = format!(
        "[database]\nurl = \"sqlite://{}\"\n[server]\nlisten = \"127.0.0.1:{api_port}\"\ntoken = \"{TOKEN}\"\n[redis]\nurl = \"{}\"\n\
         [storage]\nsnapshots_dir = \"{}\"\n",
        db.display(),
        redis.url(),
        snaps.display(),
    );
    let (vigil, driver, _page) = open_page(dir.path(), &config, api_port).await;
    let plates =
        "return [...document.querySelectorAll('#plates tbody tr')].map(r => r.querySelector('.plate').textContent)";
    let wait_rows = async |want: Value| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = driver.script(plates).await;
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "plates {got}, want {want}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // Newest first: all three, then only the prefix typed (in lower case, as people type).
    wait_rows(json!(["BS47040", "WA56660", "M5XSX"])).await;
    let known = driver.script("return document.querySelector('#plates .known').textContent").await;
    assert_eq!(known, json!("Delivery van"));
    let crops_loaded =
        "return [...document.querySelectorAll('#plates img')].filter(i => i.complete && i.naturalWidth > 0).length";
    let deadline = Instant::now() + Duration::from_secs(10);
    while driver.script(crops_loaded).await != json!(3) {
        assert!(Instant::now() < deadline, "the plate crops did not load with the token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    driver.screenshot("plates.png").await;

    // A plate row opens the event: its snapshot with the plate's box drawn where the read was.
    driver.script("document.querySelector('#plates tbody tr').click()").await;
    // The boxes are drawn by the image's load handler, which runs after `complete` turns true:
    // wait for the caption too.
    let drawn = "const v = document.querySelector('#event-view'); const i = v.querySelector('img'); \
                 const t = v.querySelector('svg text'); \
                 return v.open && i.complete && i.naturalWidth > 0 && t ? [location.hash, v.querySelector('svg').getAttribute('viewBox'), \
                 [...v.querySelectorAll('rect.plate')].map(r => ['x', 'y', 'width', 'height'].map(a => +r.getAttribute(a))), \
                 t.textContent] : null";
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        let got = driver.script(drawn).await;
        if !got.is_null() {
            break got;
        }
        assert!(Instant::now() < deadline, "the event view did not open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let newest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/plates/openalpr-eu/eu11.txt"),
    )
    .unwrap();
    let f: Vec<&str> = newest.split_whitespace().collect();
    let (width, height) = image::image_dimensions(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/plates/openalpr-eu").join(f[0]),
    )
    .unwrap();
    let plate_box: Vec<u64> = f[1..5].iter().map(|v| v.parse().unwrap()).collect();
    assert!(view[0].as_str().unwrap().starts_with("#event/"), "{view}");
    assert_eq!(view[1], json!(format!("0 0 {width} {height}")), "boxes in the snapshot's own pixels");
    assert_eq!(view[2], json!([plate_box]), "the plate's box, where it was read");
    assert_eq!(view[3], json!(f[5]));
    driver.screenshot("event.png").await;
    driver.script("document.querySelector('#event-view .close').click()").await;
    // The dialog's `close` event, which clears the address, is queued as a task after the click.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = driver.script("return [document.querySelector('#event-view').open, location.hash]").await;
        if got == json!([false, ""]) {
            break;
        }
        assert!(Instant::now() < deadline, "closing the event left {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    driver
        .script("const i = document.querySelector('#plates-search input[name=plate]'); i.value = 'wa5'; i.dispatchEvent(new Event('input'));")
        .await;
    wait_rows(json!(["WA56660"])).await;
    // A time window that ends before the reads were saved finds none.
    driver
        .script("const i = document.querySelector('#plates-search input[name=until]'); i.value = '2020-01-01T00:00'; i.dispatchEvent(new Event('input'));")
        .await;
    wait_rows(json!([])).await;
    drop(vigil);
}
