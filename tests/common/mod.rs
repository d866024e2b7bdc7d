//! Fixtures shared by the end-to-end tests: real servers on 127.0.0.1 and the shared assets.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A media file from `../shared/media` (or `media/`, where setup copies the demo sample).
pub fn media(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    [root.join("../shared/media").join(name), root.join("media").join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("test asset {name} not found in ../shared/media or media/ (run scripts/setup)"))
}

/// A free TCP port on 127.0.0.1, for a server that binds it at once.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port kept out of the kernel's ephemeral pool, for a server that comes up late or comes
/// back: between [`free_port`] and a late bind, any outgoing connection on the machine (or a
/// client retrying that very port, which can then connect to itself) may take it. The socket is
/// bound with SO_REUSEADDR and never listens, so connections to the port are refused, and
/// servers that also set SO_REUSEADDR (GStreamer's RTSP server, redis-server) bind beside it.
pub struct PortHold {
    socket: tokio::net::TcpSocket,
}

impl PortHold {
    pub fn new() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        Self { socket }
    }

    pub fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }
}

/// A real `redis-server` on its own port; killed on drop.
pub struct Redis {
    pub port: u16,
    password: Option<String>,
    child: Option<Child>,
    /// Keeps the port while the server is down: before `resume()` and after `kill()`.
    hold: PortHold,
}

impl Redis {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    pub fn start_with_password(password: &str) -> Self {
        Self::start_with(Some(password.to_string()))
    }

    /// A server that is not running yet: `url()` points at a closed port until `resume()`.
    pub fn stopped() -> Self {
        let hold = PortHold::new();
        Self { port: hold.port(), password: None, child: None, hold }
    }

    fn start_with(password: Option<String>) -> Self {
        let mut r = Self::stopped();
        r.password = password;
        // A server that does not set SO_REUSEADDR may still take the port; then redis-server
        // exits and another port is tried.
        for _ in 0..5 {
            r.resume();
            std::thread::sleep(Duration::from_millis(50));
            if r.child.as_mut().is_some_and(|c| c.try_wait().unwrap().is_none()) {
                return r;
            }
            r.hold = PortHold::new();
            r.port = r.hold.port();
        }
        panic!("redis-server would not stay up");
    }

    /// (Re)start the server on the same port.
    pub fn resume(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let mut child = cmd.stdout(Stdio::null()).spawn().expect("redis-server (run scripts/setup)");
        let deadline = Instant::now() + Duration::from_secs(10);
        // Stop waiting if it exits: the port was taken.
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() && child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// SIGKILL the server.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The PostgreSQL URL that scripts/test provides.
pub fn postgres_url() -> String {
    std::env::var("VIGIL_TEST_PG")
        .expect("VIGIL_TEST_PG is not set: run the tests through scripts/test, which starts PostgreSQL")
}

/// A running `vigil run -c CONFIG`, with its stderr captured to a file.
pub struct Vigil {
    child: Child,
    pub log: PathBuf,
}

impl Vigil {
    pub fn start(dir: &Path, config_toml: &str) -> Self {
        Self::start_with(dir, config_toml, &[])
    }

    /// `vigil run -c CONFIG ARGS…`.
    pub fn start_with(dir: &Path, config_toml: &str, args: &[&str]) -> Self {
        Self::start_env(dir, config_toml, args, &[])
    }

    /// `vigil run -c CONFIG ARGS…` with environment variables `env` added.
    pub fn start_env(dir: &Path, config_toml: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let config = dir.join("cameras.toml");
        std::fs::write(&config, config_toml).unwrap();
        let log = dir.join("vigil.log");
        let child = Command::new(env!("CARGO_BIN_EXE_vigil"))
            .args(["run", "-c"])
            .arg(&config)
            .args(args)
            .env("VIGIL_LOG", "debug,sqlx=warn,redis=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// SIGTERM, then wait; returns the exit code and how long the exit took.
    pub fn terminate(mut self) -> (Option<i32>, Duration) {
        let started = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = started + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code(), started.elapsed());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return (None, started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGHUP: reload the config file.
    pub fn hangup(&self) {
        Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle`; panics with the log after `limit`.
    pub async fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log_text().contains(needle) {
            assert!(Instant::now() < deadline, "no `{needle}` in the log within {limit:?}:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Vigil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with one camera: SQLite and snapshots in `dir`, the API on any free port, and
/// `camera_extra` appended to the camera's table. Returns the TOML and the database URL.
pub fn one_camera(dir: &Path, redis_url: &str, id: &str, url: &str, camera_extra: &str) -> (String, String) {
    let db = format!("sqlite://{}", dir.join("events.db").display());
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let toml = format!(
        "[database]\nurl = \"{db}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[redis]\nurl = \"{redis_url}\"\n\
         [storage]\nsnapshots_dir = \"{}\"\n[models]\ndir = \"{}\"\n[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\n{camera_extra}\n",
        dir.join("snaps").display(),
        models.display()
    );
    (toml, db)
}

/// A config with SQLite and snapshots in `dir`, the API on port `api`, and one camera per
/// `(id, url)` with detection off and quick reconnects. Returns the TOML and the database URL.
pub fn cameras_config(dir: &Path, redis: &str, api: u16, cameras: &[(&str, String)]) -> (String, String) {
    let db = format!("sqlite://{}", dir.join("events.db").display());
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut toml = format!(
        "[database]\nurl = \"{db}\"\n[server]\nlisten = \"127.0.0.1:{api}\"\n[redis]\nurl = \"{redis}\"\n\
         [storage]\nsnapshots_dir = \"{}\"\n[models]\ndir = \"{}\"\n",
        dir.join("snaps").display(),
        models.display()
    );
    for (id, url) in cameras {
        toml.push_str(&format!(
            "[[cameras]]\nid = \"{id}\"\nurl = \"{url}\"\n[cameras.detection]\nenabled = false\n\
             [cameras.reconnect]\ninitial_secs = 0.5\nmax_secs = 1.0\nstall_secs = 2.0\n"
        ));
    }
    (toml, db)
}

/// The `state` of each `camera` event of camera `id`, in order.
pub fn camera_states(events: &[vigil::events::Event], id: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.event_type == vigil::events::EventType::Camera && e.camera_id == id)
        .map(|e| e.event_data["state"].as_str().unwrap().to_string())
        .collect()
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    rss_of("self")
}

/// Resident set size of a process (`"self"` or a pid), in bytes.
pub fn rss_of(pid: &str) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Threads of a process.
pub fn threads_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).unwrap().trim().parse().unwrap()
}

/// What an in-process API server is built on: the API's own state, minus what it derives.
pub struct ApiParts {
    pub store: vigil::events::Store,
    pub metrics: std::sync::Arc<vigil::metrics::Metrics>,
    pub registry: std::sync::Arc<vigil::status::Registry>,
    /// Where the fleet sends camera events.
    pub events: tokio::sync::mpsc::Sender<vigil::events::NewEvent>,
    pub live: tokio::sync::broadcast::Sender<vigil::events::Event>,
    pub token: Option<String>,
    /// Live event streams that may be open at once.
    pub sse_slots: usize,
}

/// Serve the API on a free port with an empty fleet, snapshots under `dir`; returns its base URL.
pub async fn serve_api(dir: &Path, parts: ApiParts, shutdown: &tokio_util::sync::CancellationToken) -> String {
    use std::sync::Arc;
    let fleet = vigil::supervisor::fleet::Fleet::new(
        &vigil::config::Config::default(),
        None,
        vigil::supervisor::fleet::Placement::All,
        parts.store.clone(),
        parts.metrics.clone(),
        parts.registry.clone(),
        parts.events,
        shutdown.clone(),
    );
    let state = Arc::new(vigil::api::ApiState {
        store: parts.store,
        metrics: parts.metrics,
        cameras: parts.registry,
        fleet: Arc::new(fleet),
        live: parts.live,
        redis_up: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        snapshots_dir: dir.join("snaps"),
        access: vigil::api::Access {
            token: parts.token.as_deref().map(vigil::config::ApiToken::new),
            ..Default::default()
        },
        sse_slots: Arc::new(tokio::sync::Semaphore::new(parts.sse_slots)),
        shutdown: shutdown.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(vigil::api::serve(listener, state, shutdown.clone()));
    base
}

/// An HTTP endpoint on `port` that keeps every body POSTed to `/hook`.
pub async fn hook_endpoint(port: u16) -> std::sync::Arc<std::sync::Mutex<Vec<axum::body::Bytes>>> {
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                keep.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    received
}

/// A recorder into `store`, with its snapshots and journal under `dir`, counting in `metrics`;
/// what it hands the publisher comes out of the receiver. Its `lagged` flag and `live` channel
/// are fields, for tests that watch them.
pub fn recorder(
    store: &vigil::events::Store,
    dir: &Path,
    metrics: std::sync::Arc<vigil::metrics::Metrics>,
) -> (vigil::events::Recorder, tokio::sync::mpsc::Receiver<vigil::events::Event>) {
    let (to_publisher, handed) = tokio::sync::mpsc::channel(10_000);
    let recorder = vigil::events::Recorder {
        store: store.clone(),
        snapshots_dir: dir.join("snaps"),
        journal_dir: dir.join("journal"),
        metrics,
        to_publisher,
        lagged: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        live: tokio::sync::broadcast::channel(64).0,
    };
    (recorder, handed)
}
