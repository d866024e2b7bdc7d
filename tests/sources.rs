//! Cameras as they come, served by real RTSP servers that differ the way cameras and recorders
//! do: VLC (a server nobody here wrote, RTP over UDP only), and ours offering RTP over UDP only
//! or over TCP only, each with AAC and G.711 audio tracks beside the video; H.265; basic and
//! digest authentication; a resolution change mid-stream. With the default
//! `transport`, every one streams, once, and the audio is ignored; a camera that answers on
//! neither says what was tried.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Redis, Vigil, camera_states, cameras_config, free_port, media};
use serde_json::Value;
use vigil::events::{EventType, Store};
use vigil::sample::{Login, Offer, SampleServer};

/// VLC serving `video` in a loop at `rtsp://127.0.0.1:PORT/cam` (its RTSP output offers RTP over
/// UDP only). VLC refuses to run as root, so as root it runs as `nobody`.
struct Vlc(Child);

impl Vlc {
    fn serve(video: &std::path::Path, port: u16) -> Self {
        let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let mut cmd = Command::new(if root { "setpriv" } else { "cvlc" });
        if root {
            cmd.args(["--reuid", "65534", "--regid", "65534", "--clear-groups", "cvlc"]);
        }
        let sout = format!("#rtp{{sdp=rtsp://127.0.0.1:{port}/cam}}");
        let child = cmd
            .args(["-I", "dummy", "-q", "--loop"])
            .arg(video)
            .args(["--sout", &sout])
            .env("HOME", std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cvlc (vlc-bin, vlc-plugin-base: scripts/setup installs them)");
        Self(child)
    }
}

impl Drop for Vlc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until each of `ids` has a motion event; returns how long that took.
async fn wait_motion(store: &Store, ids: &[&str], vigil: &Vigil, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let events = store.after(0, 100_000).await.unwrap();
        let moving = |id: &&str| events.iter().any(|e| e.camera_id == *id && e.event_type == EventType::Motion);
        if ids.iter().all(moving) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "no motion from all of {ids:?}:\n{}", vigil.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vlc_server_streams_with_the_default_config() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let port = free_port();
    let _vlc = Vlc::serve(&media("car-detection.mp4"), port);
    let (toml, db) = common::one_camera(dir.path(), &redis.url(), "vlc", &format!("rtsp://127.0.0.1:{port}/cam"), "");
    let vigil = Vigil::start(dir.path(), &toml);
    let store = Store::connect(&db).await.unwrap();
    let took = wait_motion(&store, &["vlc"], &vigil, Duration::from_secs(60)).await;
    println!("motion from VLC after {took:?}");
    assert!(vigil.log_text().contains("no stream over Tcp; trying Udp"));
    assert_eq!(vigil.terminate().0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_only_and_tcp_only_servers_with_audio_stream_with_the_default_transport() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let video = media("car-detection.mp4");
    let offer = |tcp_only| Offer { tcp_only: Some(tcp_only), audio: true, ..Offer::default() };
    let udp = SampleServer::offering(&video, "udp", 0, offer(false)).unwrap();
    let tcp = SampleServer::offering(&video, "tcp", 0, offer(true)).unwrap();
    let closed = free_port();
    let api = free_port();
    let cameras = [("udp", udp.url()), ("tcp", tcp.url()), ("nothing", format!("rtsp://127.0.0.1:{closed}/x"))];
    let (toml, db) = cameras_config(dir.path(), &redis.url(), api, &cameras);
    let vigil = Vigil::start(dir.path(), &toml);
    vigil.wait_log("HTTP API and page up", Duration::from_secs(30)).await;
    let store = Store::connect(&db).await.unwrap();

    wait_motion(&store, &["udp", "tcp"], &vigil, Duration::from_secs(40)).await;
    // Streaming for a while: no reconnects, and the audio tracks raise nothing.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events = store.after(0, 100_000).await.unwrap();
    assert_eq!(camera_states(&events, "udp"), ["connected"]);
    assert_eq!(camera_states(&events, "tcp"), ["connected"]);
    let log = vigil.log_text();
    assert!(log.contains("no stream over Tcp; trying Udp"), "the UDP-only server was reached by falling back:\n{log}");
    for noise in ["not-linked", "not linked", "Internal data stream error"] {
        assert!(!log.contains(noise), "`{noise}` in the log:\n{log}");
    }
    // Of the three streams offered, only the video was set up: an audio stream set up anyway
    // gets a UDP source that can push before it is linked and stop the session.
    assert_eq!(tcp.setups(), 1, "SETUP requests to the TCP-only camera (video, AAC, G.711 offered)");

    // A camera that offers neither names both transports and the key that pins one.
    let cams: Vec<Value> =
        reqwest::get(format!("http://127.0.0.1:{api}/api/cameras")).await.unwrap().json().await.unwrap();
    let nothing = cams.iter().find(|c| c["id"] == "nothing").unwrap();
    let error = nothing["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("tried TCP and UDP") && error.contains("`transport`"), "{nothing}");
    assert_eq!(vigil.terminate().0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h265_basic_and_digest_auth_and_a_mid_stream_resize_all_stream_and_a_wrong_password_is_never_logged() {
    const PASSWORD: &str = "s3cret-Pass";
    const WRONG: &str = "n0t-the-Pass";
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start();
    let video = media("car-detection.mp4");
    let hevc = SampleServer::offering(&video, "hevc", 0, Offer { h265: true, ..Offer::default() }).unwrap();
    let login = |login| Offer { login: Some(login), ..Offer::default() };
    let locked = SampleServer::offering(&video, "locked", 0, login(Login::Digest("admin", PASSWORD))).unwrap();
    let basic = SampleServer::offering(&video, "basic", 0, login(Login::Basic("admin", PASSWORD))).unwrap();
    let resized =
        SampleServer::offering(&video, "resized", 0, Offer { then_size: Some((1280, 720)), ..Offer::default() })
            .unwrap();
    let with = |url: String, pass: &str| url.replacen("rtsp://", &format!("rtsp://admin:{pass}@"), 1);
    let api = free_port();
    let cameras = [
        ("locked", with(locked.url(), PASSWORD)),
        ("basic", with(basic.url(), PASSWORD)),
        ("wrong", with(locked.url(), WRONG)),
        ("resized", resized.url()),
    ];
    let (mut toml, db) = cameras_config(dir.path(), &redis.url(), api, &cameras);
    // The H.265 camera detects and tracks.
    toml.push_str(&format!("[[cameras]]\nid = \"hevc\"\nurl = \"{}\"\n", hevc.url()));
    let vigil = Vigil::start(dir.path(), &toml);
    let store = Store::connect(&db).await.unwrap();
    wait_motion(&store, &["hevc", "locked", "basic", "resized"], &vigil, Duration::from_secs(60)).await;

    // Tracking on H.265; motion at both sizes of the resized stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let events = store.after(0, 100_000).await.unwrap();
        let tracked = events.iter().any(|e| e.camera_id == "hevc" && e.event_type == EventType::Tracking);
        let sizes: std::collections::BTreeSet<(u32, u32)> = events
            .iter()
            .filter(|e| e.camera_id == "resized" && e.event_type == EventType::Motion)
            .filter_map(|e| e.snapshot_path.as_ref())
            .filter_map(|p| image::image_dimensions(dir.path().join("snaps").join(p)).ok())
            .collect();
        if tracked && sizes.contains(&(768, 432)) && sizes.contains(&(1280, 720)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tracked on H.265: {tracked}; motion at sizes {sizes:?}\n{}",
            vigil.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let events = store.after(0, 100_000).await.unwrap();
    assert_eq!(camera_states(&events, "resized"), ["connected"], "the resize cost no reconnect");
    assert!(vigil.log_text().contains("frame size changed"));

    // The wrong password: a clear error on that camera, backing off, and neither password
    // anywhere in the log or the API.
    let cams = reqwest::get(format!("http://127.0.0.1:{api}/api/cameras")).await.unwrap().text().await.unwrap();
    let all: Vec<Value> = serde_json::from_str(&cams).unwrap();
    let wrong = all.iter().find(|c| c["id"] == "wrong").unwrap();
    assert!(wrong["last_error"].as_str().unwrap_or_default().contains("refused the user and password"), "{wrong}");
    assert!(camera_states(&events, "wrong").is_empty(), "{wrong}");
    let log = vigil.log_text();
    assert!(log.contains("camera{id=wrong}") && log.contains("refused the user and password"), "{log}");
    assert!(!log.contains("tried TCP and UDP"), "a refusal is not a transport problem:\n{log}");
    for secret in [PASSWORD, WRONG] {
        assert!(!log.contains(secret) && !cams.contains(secret), "`{secret}` leaked");
    }
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(vigil.terminate().0, Some(0));
}
