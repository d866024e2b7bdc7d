//! `[[cameras]]`: one camera's source, decoding, stages and recovery, and its checks.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::channel::Policy;
use crate::redact::Redacted;

/// One `[[cameras]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// Unique id: letters, digits, `-` and `_`. Also accepted as `camera_id`.
    #[serde(alias = "camera_id")]
    pub id: String,
    /// `rtsp://[user:pass@]host[:port]/path` or `file:///absolute/path.mp4`. Also accepted as `stream_url`.
    #[serde(alias = "stream_url")]
    pub url: String,
    /// Pipeline template in `pipelines/`: `cpu` (default), `nvidia` or `vaapi`.
    #[serde(default = "default_decoder")]
    pub decoder: String,
    /// A custom pipeline template instead of `decoder` (same placeholders).
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Scale decoded frames to `[width, height]`. Default: the stream's own size.
    #[serde(default)]
    pub size: Option<[u32; 2]>,
    /// Threads of the software (libav) decoder. Default 1: a camera needs only real time, and
    /// libav's frame threads add a frame of delay each and take cores from inference (measured
    /// faster at 1, 4 and 8 cameras; README "Performance"). 0: one per core.
    #[serde(default = "default_decode_threads")]
    pub decode_threads: u32,
    /// RTSP lower transport: `auto` (default: TCP, then UDP if TCP fails; the one that streamed
    /// is kept), `tcp` or `udp`.
    #[serde(default)]
    pub transport: RtspTransport,
    /// Restart a `file://` source at its end instead of finishing. Default false.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// Detection rate in frames per second. Default 5.
    #[serde(default = "default_detect_fps")]
    pub detect_fps: f64,
    #[serde(default)]
    pub motion: MotionConfig,
    #[serde(default)]
    pub detection: DetectionConfig,
    #[serde(default)]
    pub tracker: TrackerConfig,
    #[serde(default)]
    pub anpr: AnprConfig,
    /// Named polygons; each track carries the zones its box's bottom centre is in.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    #[serde(default)]
    pub backpressure: BackpressureConfig,
    #[serde(default)]
    pub reconnect: ReconnectConfig,
}

fn default_decoder() -> String {
    "cpu".into()
}
fn default_detect_fps() -> f64 {
    5.0
}
fn default_decode_threads() -> u32 {
    1
}

/// RTSP lower transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RtspTransport {
    /// Interleaved over the RTSP connection: works through NAT and firewalls.
    Tcp,
    Udp,
    /// TCP, then UDP when TCP fails (the camera task tries one after the other; a pipeline
    /// built with `auto` on its own uses TCP).
    #[default]
    Auto,
}

/// `[cameras.motion]`: Frigate-style running-average motion detection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotionConfig {
    /// Height of the grey image motion runs on, in pixels. Default 120.
    #[serde(default = "default_motion_height")]
    pub frame_height: u32,
    /// Per-pixel difference (0–255) that counts as changed. Default 25.
    #[serde(default = "default_motion_threshold")]
    pub threshold: u8,
    /// Smallest region that counts, as a fraction of the frame. Default 0.002.
    #[serde(default = "default_min_area")]
    pub min_area: f64,
    /// Background learning rate per frame (0–1). Default 0.05.
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    /// Changes larger than this fraction of the frame are treated as lighting, not motion. Default 0.6.
    #[serde(default = "default_lighting")]
    pub lighting_change: f64,
    /// Seconds without motion before the episode ends. Default 5.
    #[serde(default = "default_quiet_secs")]
    pub quiet_secs: f64,
    /// Polygons to ignore, each a list of `[x, y]` points in 0–1 frame coordinates.
    #[serde(default)]
    pub mask: Vec<Vec<[f64; 2]>>,
}

impl Default for MotionConfig {
    fn default() -> Self {
        Self {
            frame_height: default_motion_height(),
            threshold: default_motion_threshold(),
            min_area: default_min_area(),
            alpha: default_alpha(),
            lighting_change: default_lighting(),
            quiet_secs: default_quiet_secs(),
            mask: Vec::new(),
        }
    }
}

fn default_motion_height() -> u32 {
    120
}
fn default_motion_threshold() -> u8 {
    25
}
fn default_min_area() -> f64 {
    0.002
}
fn default_alpha() -> f32 {
    0.05
}
fn default_lighting() -> f64 {
    0.6
}
fn default_quiet_secs() -> f64 {
    5.0
}

/// `[cameras.detection]`: which objects to detect, Frigate-style gated by motion.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectionConfig {
    /// Run the detector at all. Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Labels to track. Default person, car, truck, bus, motorcycle, bicycle.
    #[serde(default = "default_labels")]
    pub labels: Vec<String>,
    /// Lowest score that starts a track. Default 0.5.
    #[serde(default = "default_min_score")]
    pub min_score: f32,
    /// Smallest box, as a fraction of the frame. Default 0.0005.
    #[serde(default = "default_min_box")]
    pub min_area: f64,
    /// Per-label overrides of `min_score` and `min_area`.
    #[serde(default)]
    pub filters: std::collections::BTreeMap<String, LabelFilter>,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            labels: default_labels(),
            min_score: default_min_score(),
            min_area: default_min_box(),
            filters: Default::default(),
        }
    }
}

impl DetectionConfig {
    /// The minimum score and area that apply to `label`.
    pub fn thresholds(&self, label: &str) -> (f32, f64) {
        let f = self.filters.get(label);
        (f.and_then(|f| f.min_score).unwrap_or(self.min_score), f.and_then(|f| f.min_area).unwrap_or(self.min_area))
    }
}

/// A per-label threshold override.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelFilter {
    pub min_score: Option<f32>,
    pub min_area: Option<f64>,
}

fn yes() -> bool {
    true
}
fn default_labels() -> Vec<String> {
    ["person", "car", "truck", "bus", "motorcycle", "bicycle"].map(String::from).to_vec()
}
fn default_min_score() -> f32 {
    0.5
}
fn default_min_box() -> f64 {
    0.0005
}

/// `[cameras.tracker]`: ByteTrack-style association.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    /// Detections in a row before a track is confirmed (and `start` is published). Default 3.
    #[serde(default = "default_min_hits")]
    pub min_hits: u32,
    /// Seconds without a match before a track ends. Default 2.
    #[serde(default = "default_max_age")]
    pub max_age_secs: f64,
    /// Lowest IoU for a match. Default 0.2.
    #[serde(default = "default_match_iou")]
    pub match_iou: f32,
    /// A track whose box moved less than this fraction of its size is stationary. Default 0.1.
    #[serde(default = "default_stationary")]
    pub stationary_motion: f32,
    /// Most `update` events per track per minute. Default 6.
    #[serde(default = "default_updates")]
    pub max_updates_per_minute: u32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            min_hits: default_min_hits(),
            max_age_secs: default_max_age(),
            match_iou: default_match_iou(),
            stationary_motion: default_stationary(),
            max_updates_per_minute: default_updates(),
        }
    }
}

fn default_min_hits() -> u32 {
    3
}
fn default_max_age() -> f64 {
    2.0
}
fn default_match_iou() -> f32 {
    0.2
}
fn default_stationary() -> f32 {
    0.1
}
fn default_updates() -> u32 {
    6
}

/// `[cameras.anpr]`: licence-plate reading.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnprConfig {
    /// Read plates on this camera. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// `vehicle` (default): plates inside vehicle tracks; `dedicated`: anywhere in the frame.
    #[serde(default)]
    pub mode: AnprMode,
    /// Vehicle labels whose tracks are read. Default car, truck, bus, motorcycle.
    #[serde(default = "default_vehicles")]
    pub labels: Vec<String>,
    /// Most reads per track; the best frames are read. Default 5.
    #[serde(default = "default_max_reads")]
    pub max_reads: u32,
    /// Lowest plate confidence (its least sure character's) that is published. Default 0.6.
    #[serde(default = "default_plate_confidence")]
    pub min_confidence: f32,
    /// Plate formats, as regular expressions over A–Z0–9 or a preset name (`eu`, `br`, `us`).
    /// Character confusions (O/0, I/1, B/8, S/5, …) are fixed only where a format needs it.
    #[serde(default)]
    pub formats: Vec<String>,
    /// Plates to recognise by name.
    #[serde(default)]
    pub known: Vec<KnownPlate>,
    /// Edits (insertions, deletions, substitutions) a read may differ from a known plate. Default 1.
    #[serde(default = "default_known_distance")]
    pub known_distance: usize,
}

impl Default for AnprConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            mode: AnprMode::default(),
            labels: default_vehicles(),
            max_reads: default_max_reads(),
            min_confidence: default_plate_confidence(),
            formats: Vec::new(),
            known: Vec::new(),
            known_distance: default_known_distance(),
        }
    }
}

/// Where plates are looked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnprMode {
    /// Inside vehicle tracks.
    #[default]
    Vehicle,
    /// In the whole frame (a camera aimed at a lane or gate).
    Dedicated,
}

/// A plate with a name, e.g. a resident's car.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownPlate {
    pub plate: String,
    pub name: String,
}

fn default_vehicles() -> Vec<String> {
    ["car", "truck", "bus", "motorcycle"].map(String::from).to_vec()
}
fn default_max_reads() -> u32 {
    5
}
fn default_plate_confidence() -> f32 {
    0.6
}
fn default_known_distance() -> usize {
    1
}

/// `[[cameras.zones]]`: a named polygon in 0–1 frame coordinates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    pub name: String,
    pub polygon: Vec<[f64; 2]>,
}

/// What the frame channel does when analysis falls behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FullPolicy {
    /// `drop-oldest` for live sources (RTSP), `block` for files.
    #[default]
    Auto,
    /// Drop the oldest queued frame and count it; latency stays bounded.
    DropOldest,
    /// Block the decoder until there is room; no frame is lost.
    Block,
}

/// What analysis does with a new event when the recorder's queue is full (the recorder has
/// fallen behind: CPU overload or slow disks; a database outage is absorbed by the journal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventsFull {
    /// Wait for room: no event is lost, and the frame channel's policy decides what waits or
    /// drops behind it. Counted in `vigil_events_blocked_total`.
    #[default]
    Block,
    /// Drop the new event and count it (`vigil_events_dropped_total`); analysis never waits.
    DropNewest,
}

/// `[cameras.backpressure]`: the bounded channel between decode and analysis, and what happens
/// at the seam between analysis and the recorder.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackpressureConfig {
    /// Frames the channel holds. Default 8.
    #[serde(default = "default_capacity")]
    pub capacity: usize,
    /// `auto` (default), `drop-oldest` or `block`.
    #[serde(default)]
    pub policy: FullPolicy,
    /// When the recorder's queue is full: `block` (default) or `drop-newest`.
    #[serde(default)]
    pub events: EventsFull,
}

impl Default for BackpressureConfig {
    fn default() -> Self {
        Self { capacity: default_capacity(), policy: FullPolicy::Auto, events: EventsFull::Block }
    }
}

fn default_capacity() -> usize {
    8
}

/// `[cameras.reconnect]`: capped exponential backoff and the stall watchdog.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First wait after a failure, seconds. Default 1.
    #[serde(default = "default_backoff_initial")]
    pub initial_secs: f64,
    /// Longest wait, seconds. Default 30.
    #[serde(default = "default_backoff_max")]
    pub max_secs: f64,
    /// A source with no frame for this long is restarted, seconds. Default 10.
    #[serde(default = "default_stall")]
    pub stall_secs: f64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self { initial_secs: default_backoff_initial(), max_secs: default_backoff_max(), stall_secs: default_stall() }
    }
}

impl ReconnectConfig {
    /// The wait before attempt number `failures` (1-based): doubling, capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = 2f64.powi(failures.saturating_sub(1).min(30) as i32);
        Duration::from_secs_f64((self.initial_secs * exp).min(self.max_secs))
    }
}

fn default_backoff_initial() -> f64 {
    1.0
}
fn default_backoff_max() -> f64 {
    30.0
}
fn default_stall() -> f64 {
    10.0
}

/// Names of the pipeline templates built into the binary (from `pipelines/`).
pub const DECODERS: &[&str] = &["cpu", "nvidia", "vaapi"];

impl CameraConfig {
    /// Parse and validate one camera from JSON (an API body) with the fields and checks of a
    /// `[[cameras]]` table; on error returns the dotted field (empty for the whole body) and why.
    pub fn from_json(value: serde_json::Value) -> Result<Self, (String, String)> {
        let cam: Self = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            (if field == "." { String::new() } else { field }, e.inner().to_string())
        })?;
        cam.validate().map_err(|(field, reason)| (field.to_string(), reason))?;
        Ok(cam)
    }

    /// Checks one camera; on error returns the offending key and the reason.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.id.is_empty() || !self.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(("id", format!("camera id `{}` must be letters, digits, `-` or `_`", self.id)));
        }
        self.source().map_err(|r| ("url", r))?;
        if self.pipeline.is_none() && !DECODERS.contains(&self.decoder.as_str()) {
            return Err((
                "decoder",
                format!("unknown decoder `{}` (expected one of {})", self.decoder, DECODERS.join(", ")),
            ));
        }
        if let Some(p) = &self.pipeline {
            check_template(p).map_err(|r| ("pipeline", r))?;
        }
        if self.size.is_some_and(|[w, h]| !(16..=8192).contains(&w) || !(16..=8192).contains(&h)) {
            return Err(("size", "width and height must be 16..=8192".into()));
        }
        if self.decode_threads > 64 {
            return Err(("decode_threads", "must be 0..=64 (0: one per core)".into()));
        }
        if !(self.detect_fps > 0.0 && self.detect_fps <= 120.0) {
            return Err(("detect_fps", "must be in (0, 120]".into()));
        }
        self.motion.validate().map_err(|r| ("motion", r))?;
        let d = &self.detection;
        if !(0.0..=1.0).contains(&d.min_score)
            || d.filters.values().any(|f| f.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)))
        {
            return Err(("detection", "scores must be in 0..1".into()));
        }
        if self.tracker.min_hits == 0
            || self.tracker.max_age_secs <= 0.0
            || !(0.0..1.0).contains(&self.tracker.match_iou)
        {
            return Err(("tracker", "need min_hits >= 1, max_age_secs > 0 and match_iou in [0, 1)".into()));
        }
        let a = &self.anpr;
        if a.enabled && !self.detection.enabled {
            return Err(("anpr", "ANPR needs [cameras.detection] enabled".into()));
        }
        if a.enabled
            && a.mode == AnprMode::Vehicle
            && let Some(l) = a.labels.iter().find(|l| !self.detection.labels.contains(l))
        {
            return Err(("anpr", format!("label `{l}` is read for plates but not in detection.labels")));
        }
        if !(1..=50).contains(&a.max_reads) || !(0.0..=1.0).contains(&a.min_confidence) {
            return Err(("anpr", "need max_reads 1..=50 and min_confidence in 0..1".into()));
        }
        crate::plate::Formats::parse(&a.formats).map_err(|r| ("anpr", r))?;
        if let Some(k) = a.known.iter().find(|k| crate::plate::normalise(&k.plate).len() < 2) {
            return Err(("anpr", format!("known plate `{}` has fewer than 2 letters or digits", k.plate)));
        }
        for z in &self.zones {
            if z.name.is_empty() || z.polygon.len() < 3 || z.polygon.iter().flatten().any(|v| !(0.0..=1.0).contains(v))
            {
                return Err(("zones", format!("zone `{}` needs a name and 3+ points in 0..1", z.name)));
            }
        }
        if !(1..=10_000).contains(&self.backpressure.capacity) {
            return Err(("backpressure", "capacity must be 1..=10000".into()));
        }
        let r = &self.reconnect;
        if !(r.initial_secs > 0.0 && r.max_secs >= r.initial_secs && r.stall_secs > 0.0) {
            return Err(("reconnect", "need 0 < initial_secs <= max_secs and stall_secs > 0".into()));
        }
        Ok(())
    }

    /// The parsed source URL (credentials included; redact before logging).
    pub fn source(&self) -> Result<Source, String> {
        // An unparseable URL is not echoed: without `://` its credentials cannot be found to redact.
        let url = url::Url::parse(&self.url).map_err(|e| format!("bad URL: {e}"))?;
        match url.scheme() {
            "rtsp" | "rtsps" | "rtspt" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(format!("RTSP URL `{}` has no host", Redacted(&self.url)));
                }
                Ok(Source::Rtsp(url))
            }
            "file" => {
                let path = url.to_file_path().map_err(|_| format!("bad file URL `{}`", self.url))?;
                if !path.is_file() {
                    return Err(format!("file not found: {}", path.display()));
                }
                Ok(Source::File(path))
            }
            other => Err(format!("unsupported URL scheme `{other}` (expected rtsp:// or file://)")),
        }
    }

    /// Whether the source is live (frames keep coming whether or not we read them).
    pub fn is_live(&self) -> bool {
        matches!(self.source(), Ok(Source::Rtsp(_)))
    }

    /// The frame channel's policy, `auto` resolved by the source.
    pub fn full_policy(&self) -> Policy {
        match self.backpressure.policy {
            FullPolicy::DropOldest => Policy::DropOldest,
            FullPolicy::Block => Policy::Block,
            FullPolicy::Auto if self.is_live() => Policy::DropOldest,
            FullPolicy::Auto => Policy::Block,
        }
    }
}

/// Where a camera's video comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Rtsp(url::Url),
    File(PathBuf),
}

impl MotionConfig {
    fn validate(&self) -> Result<(), String> {
        if !(16..=1080).contains(&self.frame_height) {
            return Err("frame_height must be 16..=1080".into());
        }
        if self.threshold == 0 {
            return Err("threshold must be 1..=255".into());
        }
        if !(self.min_area > 0.0 && self.min_area < 1.0) {
            return Err("min_area must be a fraction of the frame in (0, 1)".into());
        }
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err("alpha must be in (0, 1]".into());
        }
        if !(self.lighting_change > self.min_area && self.lighting_change <= 1.0) {
            return Err("lighting_change must be in (min_area, 1]".into());
        }
        if self.quiet_secs.is_nan() || self.quiet_secs < 0.0 {
            return Err("quiet_secs must be >= 0".into());
        }
        for (i, poly) in self.mask.iter().enumerate() {
            if poly.len() < 3 {
                return Err(format!("mask[{i}] needs at least 3 points"));
            }
            if poly.iter().flatten().any(|v| !(0.0..=1.0).contains(v)) {
                return Err(format!("mask[{i}] points must be in 0..1 frame coordinates"));
            }
        }
        Ok(())
    }
}

/// Checks that a custom template has the parts vigil needs.
fn check_template(template: &str) -> Result<(), String> {
    if !template.contains("${source}") {
        return Err("pipeline template must contain ${source}".into());
    }
    if !template.contains("appsink name=sink") {
        return Err("pipeline template must end in `appsink name=sink`".into());
    }
    Ok(())
}
