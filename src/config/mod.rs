//! Configuration: the TOML file, its defaults and its validation.
//!
//! Every error names `FILE:LINE:COL: reason`, for syntax errors and for the semantic checks
//! (duplicate ids, bad URLs, missing files) alike. Callers get a fully validated [`Config`] or an
//! error; they never see a half-checked one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::error::{ErrorKind, Kinded, Refusal};
use crate::redact::Redacted;

mod camera;
mod server;
pub use camera::*;
pub use server::{ApiToken, ServerConfig};

/// A config that failed to load, with the place and reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}:{line}:{col}: {reason}")]
    Invalid { path: String, line: usize, col: usize, reason: String },
}

impl Kinded for ConfigError {
    fn kind(&self) -> ErrorKind {
        match self {
            // The file may be being written, or its volume not mounted yet.
            Self::Io { .. } => ErrorKind::Retry,
            Self::Invalid { .. } => ErrorKind::Refuse(Refusal::Invalid),
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub database: DatabaseConfig,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub models: ModelsConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    #[serde(default)]
    pub cameras: Vec<CameraConfig>,
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[cluster]`: several `vigil run` processes sharing the cameras through leases in Redis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Share cameras by leases: each camera runs in the one process that holds its lease.
    #[serde(default)]
    pub leases: bool,
    /// How long a lease lasts without renewal; a dead process's cameras move after this. Default 10.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: f64,
    /// Prefix of the Redis keys, so several deployments can share one Redis. Default `vigil`.
    #[serde(default = "default_cluster_prefix")]
    pub prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self { leases: false, lease_secs: default_lease_secs(), prefix: default_cluster_prefix() }
    }
}

fn default_lease_secs() -> f64 {
    10.0
}
fn default_cluster_prefix() -> String {
    "vigil".into()
}

/// `[database]`: where events are stored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE` (created if missing) or `postgres://user:pass@host/db`. Default `sqlite://vigil.db`.
    #[serde(default = "default_db_url")]
    pub url: String,
    /// The name of an environment variable holding the URL, so its password need not sit in this
    /// file. When set, it replaces `url`.
    #[serde(default)]
    pub url_env: Option<String>,
    /// A file holding the URL (trailing whitespace ignored), e.g. a mounted Kubernetes Secret.
    /// When set, it replaces `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: default_db_url(), url_env: None, url_file: None }
    }
}

fn default_db_url() -> String {
    "sqlite://vigil.db".into()
}

/// `[redis]`: where events are published.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// Default `redis://127.0.0.1:6379`.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// The name of an environment variable holding the URL; when set, it replaces `url`.
    #[serde(default)]
    pub url_env: Option<String>,
    /// A file holding the URL (trailing whitespace ignored); when set, it replaces `url`.
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The channel every event goes to. Default `events`.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// Extra channels, templated with `{camera_id}` and `{event_type}`. Default none.
    #[serde(default)]
    pub extra_channels: Vec<String>,
    /// Optional Redis Stream that also receives every event (`XADD … MAXLEN ~ stream_maxlen`).
    #[serde(default)]
    pub stream: Option<String>,
    /// Approximate cap on the stream's length. Default 100000.
    #[serde(default = "default_stream_maxlen")]
    pub stream_maxlen: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: default_redis_url(),
            url_env: None,
            url_file: None,
            channel: default_channel(),
            extra_channels: Vec::new(),
            stream: None,
            stream_maxlen: default_stream_maxlen(),
        }
    }
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_channel() -> String {
    "events".into()
}
fn default_stream_maxlen() -> u64 {
    100_000
}

/// `[storage]`: snapshots on disk.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directory for JPEG snapshots; paths in events are relative to it. Default `snapshots`.
    #[serde(default = "default_snapshots_dir")]
    pub snapshots_dir: PathBuf,
    /// Delete events and snapshots older than this many days; 0 keeps them forever. Default 14.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Keep at least this many GB free on the snapshots' filesystem, deleting the oldest
    /// events first; 0 turns the guard off. Default 1.
    #[serde(default = "default_min_free_gb")]
    pub min_free_gb: f64,
    /// Where events wait, on local disk, while the database is unreachable and across a
    /// restart. Default: `journal` beside `snapshots_dir`.
    #[serde(default)]
    pub journal_dir: Option<PathBuf>,
}

impl StorageConfig {
    /// `journal_dir`, or its default.
    pub fn journal_dir(&self) -> PathBuf {
        self.journal_dir.clone().unwrap_or_else(|| self.snapshots_dir.with_file_name("journal"))
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            snapshots_dir: default_snapshots_dir(),
            retention_days: default_retention_days(),
            min_free_gb: default_min_free_gb(),
            journal_dir: None,
        }
    }
}

fn default_retention_days() -> u32 {
    14
}

fn default_min_free_gb() -> f64 {
    1.0
}

fn default_snapshots_dir() -> PathBuf {
    "snapshots".into()
}

/// `[models]`: where setup put the ONNX files, and which of `manifest.toml`'s models to use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Default `models`.
    #[serde(default = "default_models_dir")]
    pub dir: PathBuf,
    /// The object detector, by manifest name. Default `yolox-nano`.
    #[serde(default = "default_detector")]
    pub detector: String,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self { dir: default_models_dir(), detector: default_detector() }
    }
}

fn default_models_dir() -> PathBuf {
    "models".into()
}
fn default_detector() -> String {
    "yolox-nano".into()
}

/// `[inference]`: ONNX Runtime and the shared, batching inference service.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// Path of `libonnxruntime.so`. Default: `$ORT_DYLIB_PATH`, else the copy scripts/setup installs.
    #[serde(default)]
    pub library: Option<PathBuf>,
    /// Execution provider: `cpu` (default), `cuda` or `tensorrt`; falls back to CPU with a warning.
    #[serde(default)]
    pub provider: Provider,
    /// GPU index for `cuda`/`tensorrt`. Default 0.
    #[serde(default)]
    pub device_id: i32,
    /// Intra-op threads per session. Default 0: the cores shared among the detector's sessions,
    /// every core for the plate models.
    #[serde(default)]
    pub intra_threads: usize,
    /// Let idle intra-op threads spin (`true`/`false`). Default: the detector's threads spin
    /// (its next call follows within milliseconds; measured faster at 1, 4 and 8 cameras on 2
    /// cores, see README "Performance"), the plate models' threads sleep (reads come a few a
    /// second, and their spinning took CPU from the detector).
    #[serde(default)]
    pub spinning: Option<bool>,
    /// Sessions of the detector, each on its own thread, serving one queue. Default 0: one per
    /// core (up to 8). Single-threaded sessions used 2 cores better than one 2-thread session at
    /// 1, 4 and 8 cameras once cameras stopped waiting for their detections (README
    /// "Performance").
    #[serde(default)]
    pub sessions: usize,
    /// Most requests run as one call. Default 8.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long the first request of a batch waits for company, milliseconds. Default 0: a call
    /// takes what is queued when it starts, so requests that arrive during a call share the next
    /// one and a lone camera never waits.
    #[serde(default = "default_batch_window")]
    pub batch_window_ms: f64,
    /// How long a caller waits for a model's answer, queueing included, before it gives up on
    /// that frame or plate. Default 10. A camera's analysis that makes no progress for three
    /// times this is restarted.
    #[serde(default = "default_inference_timeout")]
    pub timeout_secs: f64,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            library: None,
            provider: Provider::Cpu,
            device_id: 0,
            intra_threads: 0,
            spinning: None,
            sessions: 0,
            max_batch: default_max_batch(),
            batch_window_ms: default_batch_window(),
            timeout_secs: default_inference_timeout(),
        }
    }
}

fn default_max_batch() -> usize {
    8
}
fn default_batch_window() -> f64 {
    0.0
}
fn default_inference_timeout() -> f64 {
    10.0
}

impl InferenceConfig {
    /// How long a caller waits for a model's answer.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    /// How long a camera's analysis may go without progress before it is restarted: room for a
    /// frame whose detection and plate read both wait out their timeouts.
    pub fn analysis_stall(&self) -> Duration {
        self.timeout() * 3
    }
}

/// ONNX Runtime execution provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    #[default]
    Cpu,
    Cuda,
    Tensorrt,
}

/// One `[[webhooks]]` entry: events POSTed as JSON, in id order, retried until delivered.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` endpoint.
    pub url: String,
    /// Names the webhook in logs, metrics and its delivery cursor. Default: the URL's host (and
    /// port), never its path or query, which often hold the endpoint's secret.
    #[serde(default)]
    pub name: Option<String>,
    /// Event types to send (`motion`, `tracking`, `anpr`, `camera`). Default: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Cameras to send events of. Default: all.
    #[serde(default)]
    pub cameras: Vec<String>,
    /// Seconds one POST may take. Default 5.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_secs: f64,
    /// Signs each body: header `X-Vigil-Signature: sha256=HEX(HMAC-SHA256(secret, body))`.
    #[serde(default)]
    pub secret: Option<String>,
}

fn default_webhook_timeout() -> f64 {
    5.0
}

impl WebhookConfig {
    /// The name used in logs, metrics and the cursor table.
    pub fn key(&self) -> String {
        self.name.clone().or_else(|| crate::redact::host_of(&self.url)).unwrap_or_else(|| "webhook".into())
    }

    /// The name earlier versions gave a webhook without `name` (its URL with the user-info shown
    /// as `***`), so its delivery cursor can be carried over once and that name, which may hold
    /// the endpoint's secret, dropped from the database.
    pub fn legacy_key(&self) -> Option<String> {
        let (scheme, rest) = self.url.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let authority = match authority.rfind('@') {
            Some(at) => format!("***{}", &authority[at..]),
            None => authority.to_string(),
        };
        self.name.is_none().then(|| format!("{scheme}://{authority}{path}"))
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        let url = url::Url::parse(&self.url).map_err(|e| ("url", format!("bad URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(("url", format!("webhook URL scheme `{}` must be http or https", url.scheme())));
        }
        if let Some(t) = self.events.iter().find(|t| crate::contract::EventType::parse(t).is_none()) {
            return Err(("events", format!("unknown event type `{t}` (expected motion, tracking, anpr or camera)")));
        }
        if !(self.timeout_secs > 0.0 && self.timeout_secs <= 300.0) {
            return Err(("timeout_secs", "must be in (0, 300]".into()));
        }
        Ok(())
    }
}

/// One step of a path into the document, used to point errors at the right place.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Name(&'static str),
    Index(usize),
}

/// A semantic error at a path in the document, e.g. `cameras[1].url`.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    pub path: Vec<Key>,
    pub reason: String,
}

impl FieldError {
    fn new(path: Vec<Key>, reason: impl Into<String>) -> Self {
        Self { path, reason: reason.into() }
    }

    /// The dotted field name, e.g. `cameras[1].url`.
    pub fn field(&self) -> String {
        let mut s = String::new();
        for k in &self.path {
            match k {
                Key::Name(n) if s.is_empty() => s.push_str(n),
                Key::Name(n) => {
                    s.push('.');
                    s.push_str(n)
                }
                Key::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

impl Config {
    /// Read, parse and validate a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate config text; `name` is used in error messages.
    pub fn parse(text: &str, name: &str) -> Result<Self, ConfigError> {
        let at = |offset: usize, reason: String| {
            let (line, col) = line_col(text, offset);
            ConfigError::Invalid { path: name.to_string(), line, col, reason }
        };
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            at(offset, e.message().trim().to_string())
        })?;
        if let Err(err) = config.read_secrets().and_then(|()| config.validate()) {
            let doc = DeTable::parse(text).map_err(|e| at(0, e.message().to_string()))?;
            return Err(at(span_of(&doc, &err.path), err.reason));
        }
        Ok(config)
    }

    /// Replaces each `url` whose `url_env` or `url_file` is set with what that names.
    fn read_secrets(&mut self) -> Result<(), FieldError> {
        use Key::Name;
        let urls = [
            ("database", &self.database.url_env, &self.database.url_file, &mut self.database.url),
            ("redis", &self.redis.url_env, &self.redis.url_file, &mut self.redis.url),
        ];
        for (section, var, file, url) in urls {
            let at = |field, reason| FieldError::new(vec![Name(section), Name(field)], reason);
            *url = match (var, file) {
                (None, None) => continue,
                (Some(_), Some(_)) => return Err(at("url_env", "set only one of url_env and url_file".into())),
                (Some(var), None) => std::env::var(var)
                    .map_err(|_| at("url_env", format!("environment variable `{var}` is not set (or not UTF-8)")))?,
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| at("url_file", format!("cannot read {}: {e}", path.display())))?
                    .trim_end()
                    .to_string(),
            };
        }
        Ok(())
    }

    /// Semantic checks that serde cannot express. Returns the first problem found.
    pub fn validate(&self) -> Result<(), FieldError> {
        use Key::{Index, Name};
        let inf = &self.inference;
        if inf.sessions > 64 {
            return Err(FieldError::new(vec![Name("inference")], "need sessions 0..=64 (0: one per core)"));
        }
        let valid = (1..=64).contains(&inf.max_batch)
            && (0.0..=100.0).contains(&inf.batch_window_ms)
            && inf.timeout_secs > 0.0
            && inf.timeout_secs <= 600.0;
        if !valid {
            return Err(FieldError::new(
                vec![Name("inference")],
                "need max_batch 1..=64, batch_window_ms 0..=100 and timeout_secs in (0, 600]",
            ));
        }
        check_db_url(&self.database.url).map_err(|r| FieldError::new(vec![Name("database"), Name("url")], r))?;
        check_redis(&self.redis).map_err(|(field, r)| FieldError::new(vec![Name("redis"), Name(field)], r))?;
        self.server.validate().map_err(|(field, r)| FieldError::new(vec![Name("server"), Name(field)], r))?;
        if !(0.0..=1e6).contains(&self.storage.min_free_gb) {
            return Err(FieldError::new(
                vec![Name("storage"), Name("min_free_gb")],
                "need 0..=1000000 (0: no disk guard)",
            ));
        }
        if !(1.0..=600.0).contains(&self.cluster.lease_secs) || self.cluster.prefix.is_empty() {
            return Err(FieldError::new(vec![Name("cluster")], "need lease_secs in 1..=600 and a prefix"));
        }
        let mut names = HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            let at = |field| vec![Name("webhooks"), Index(i), Name(field)];
            hook.validate().map_err(|(field, reason)| FieldError::new(at(field), reason))?;
            if !names.insert(hook.key()) {
                return Err(FieldError::new(
                    at("url"),
                    format!("two webhooks named `{}`; give one a `name`", hook.key()),
                ));
            }
        }
        let mut ids = HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let at = |field| vec![Name("cameras"), Index(i), Name(field)];
            if !ids.insert(cam.id.as_str()) {
                return Err(FieldError::new(at("id"), format!("duplicate camera id `{}`", cam.id)));
            }
            cam.validate().map_err(|(field, reason)| FieldError::new(at(field), reason))?;
        }
        Ok(())
    }
}

fn check_db_url(url: &str) -> Result<(), String> {
    match url.split_once(':').map(|(s, _)| s) {
        Some("sqlite" | "postgres" | "postgresql") => Ok(()),
        _ => Err(format!("database URL `{}` must start with sqlite:// or postgres://", Redacted(url))),
    }
}

fn check_redis(redis: &RedisConfig) -> Result<(), (&'static str, String)> {
    let url = url::Url::parse(&redis.url).map_err(|e| ("url", format!("bad URL: {e}")))?;
    if !matches!(url.scheme(), "redis" | "rediss" | "unix" | "redis+unix") {
        return Err(("url", format!("unsupported Redis URL scheme `{}`", url.scheme())));
    }
    if redis.channel.is_empty() {
        return Err(("channel", "must not be empty".into()));
    }
    for ch in &redis.extra_channels {
        let rest = ch.replace("{camera_id}", "").replace("{event_type}", "");
        if rest.contains(['{', '}']) {
            return Err(("extra_channels", format!("`{ch}`: only {{camera_id}} and {{event_type}} may be used")));
        }
    }
    if redis.stream.as_deref() == Some("") {
        return Err(("stream", "must not be empty".into()));
    }
    Ok(())
}

/// The byte offset of the deepest part of `path` that exists in the document.
fn span_of(doc: &Spanned<DeTable>, path: &[Key]) -> usize {
    let mut best = doc.span().start;
    let mut table = Some(doc.get_ref());
    let mut array: Option<&[Spanned<DeValue>]> = None;
    for key in path {
        let value = match (key, table, array) {
            (Key::Name(n), Some(t), _) => t.iter().find(|(k, _)| k.get_ref() == n).map(|(k, v)| {
                best = k.span().start;
                v
            }),
            (Key::Index(i), _, Some(a)) => a.get(*i),
            _ => None,
        };
        let Some(value) = value else { break };
        if !matches!(key, Key::Name(_)) || !matches!(value.get_ref(), DeValue::Table(_)) {
            best = value.span().start;
        }
        table = None;
        array = None;
        match value.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(a),
            _ => {}
        }
    }
    best
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        Config::parse(text, "cams.toml").unwrap_err().to_string()
    }

    #[test]
    fn syntax_error_has_position() {
        assert!(err("[redis]\nurl = \n").starts_with("cams.toml:2:7:"), "{}", err("[redis]\nurl = \n"));
    }

    #[test]
    fn unknown_key_has_position() {
        let e = err("[redis]\nurl = \"redis://x\"\nchanel = \"e\"\n");
        assert!(e.starts_with("cams.toml:3:1:") && e.contains("chanel"), "{e}");
    }

    #[test]
    fn duplicate_camera_points_at_second_id() {
        let text = "[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/1\"\n\n[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/2\"\n";
        assert_eq!(err(text), "cams.toml:6:6: duplicate camera id `a`");
    }

    #[test]
    fn bad_url_and_missing_file() {
        let e = err("[[cameras]]\nid = \"a\"\nurl = \"http//nope\"\n");
        assert!(e.starts_with("cams.toml:3:7: bad URL"), "{e}");
        let e = err("[[cameras]]\nid = \"a\"\nurl = \"file:///no/such/video.mp4\"\n");
        assert_eq!(e, "cams.toml:3:7: file not found: /no/such/video.mp4");
    }

    #[test]
    fn errors_never_show_passwords() {
        let e = err("[[cameras]]\nid = \"a b\"\nurl = \"rtsp://admin:hunter2@cam/1\"\n");
        assert!(e.starts_with("cams.toml:2:6:"), "{e}");
        let e = err("[database]\nurl = \"mysql://root:hunter2@db/x\"\n");
        assert!(e.starts_with("cams.toml:2:7:") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn urls_from_the_environment() {
        let e = err("[database]\nurl_env = \"VIGIL_TEST_UNSET_DATABASE_URL\"\n");
        assert!(e.starts_with("cams.toml:2:11:") && e.contains("VIGIL_TEST_UNSET_DATABASE_URL"), "{e}");
        // A variable only this test sets, so no other test reads the environment as it changes.
        let var = "VIGIL_TEST_REDIS_URL";
        // SAFETY: no other thread reads or writes this variable.
        unsafe { std::env::set_var(var, "redis://:s3cret@redis.example:6379") };
        let c = Config::parse(&format!("[redis]\nurl = \"redis://ignored\"\nurl_env = \"{var}\"\n"), "x").unwrap();
        assert_eq!(c.redis.url, "redis://:s3cret@redis.example:6379");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("database-url");
        std::fs::write(&file, "postgres://vigil:s3cret@db/vigil\n").unwrap();
        let c = Config::parse(&format!("[database]\nurl_file = {:?}\n", file.display().to_string()), "x").unwrap();
        assert_eq!(c.database.url, "postgres://vigil:s3cret@db/vigil");
        let e = err("[redis]\nurl_env = \"A\"\nurl_file = \"/b\"\n");
        assert!(e.contains("only one of url_env and url_file"), "{e}");
        unsafe { std::env::set_var(var, "mysql://root:s3cret@db") };
        let e = Config::parse(&format!("[database]\nurl_env = \"{var}\"\n[redis]\nurl_env = \"{var}\"\n"), "x");
        let e = e.unwrap_err().to_string();
        assert!(e.contains("sqlite://") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn defaults_resolve_policy_by_source() {
        let c = Config::parse("[[cameras]]\nid = \"a\"\nurl = \"rtsp://u:p@h/1\"\n", "x").unwrap();
        assert_eq!(c.cameras[0].full_policy(), crate::channel::Policy::DropOldest);
        assert_eq!(c.cameras[0].backpressure.capacity, 8);
        assert_eq!(c.redis.channel, "events");
    }

    #[test]
    fn json_cameras_name_the_field() {
        use serde_json::json;
        let cam = CameraConfig::from_json(json!({"camera_id": "a", "stream_url": "rtsp://h/1"})).unwrap();
        assert_eq!((cam.id.as_str(), cam.detect_fps), ("a", 5.0));
        let bad = json!({"id": "a", "url": "rtsp://h/1", "motion": {"threshold": "high"}});
        let (field, reason) = CameraConfig::from_json(bad).unwrap_err();
        assert_eq!(field, "motion.threshold");
        assert!(reason.starts_with("invalid type: string \"high\""), "{reason}");
        let (field, reason) = CameraConfig::from_json(json!({"id": "a", "url": "rtsp://h/1", "fps": 3})).unwrap_err();
        assert_eq!(field, "fps");
        assert!(reason.starts_with("unknown field `fps`"), "{reason}");
        let (field, _) = CameraConfig::from_json(json!({"id": "a b", "url": "rtsp://h/1"})).unwrap_err();
        assert_eq!(field, "id");
    }

    #[test]
    fn webhook_errors_point_at_the_key() {
        let e = err("[[webhooks]]\nurl = \"https://h/x\"\nevents = [\"motion\", \"plate\"]\n");
        assert!(e.starts_with("cams.toml:3:10: unknown event type `plate`"), "{e}");
        let e = err("[[webhooks]]\nurl = \"ftp://u:secret@h/x\"\n");
        assert!(e.starts_with("cams.toml:2:7:") && !e.contains("secret"), "{e}");
        let twice = "[[webhooks]]\nurl = \"https://h/x\"\n[[webhooks]]\nurl = \"https://h/x\"\n";
        assert!(err(twice).starts_with("cams.toml:4:7: two webhooks named"), "{}", err(twice));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let r = ReconnectConfig::default();
        assert_eq!(r.backoff(1), Duration::from_secs(1));
        assert_eq!(r.backoff(3), Duration::from_secs(4));
        assert_eq!(r.backoff(50), Duration::from_secs(30));
    }
}
