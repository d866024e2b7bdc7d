//! Ingest: one GStreamer pipeline per camera, built from a template in `pipelines/`, feeding the
//! camera's frame channel.
//!
//! ```text
//! {rtspsrc | filesrc} - {decodebin | parsebin ! nvh264dec | vah264dec} - videoconvert - appsink (I420/NV12)
//! ```
//!
//! A [`Frame`] keeps the decoder's buffer (reference-counted, never copied). Building a pipeline
//! ([`Streamer::build`]) is kept apart from running it; restarts and backoff belong to the
//! supervisor. Credentials are set as element properties, never put in a pipeline string, so
//! GStreamer's own messages cannot leak them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::channel::{self, Sent};
use crate::config::{CameraConfig, RtspTransport, Source};
use crate::error::{ErrorKind, Kinded, Refusal};
use crate::frame::Frame;
use crate::metrics::CameraMetrics;
use crate::redact::redact;

const CPU: &str = include_str!("../../pipelines/cpu.pipeline");
const NVIDIA: &str = include_str!("../../pipelines/nvidia.pipeline");
const VAAPI: &str = include_str!("../../pipelines/vaapi.pipeline");

/// A pipeline that could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("GStreamer init failed: {0}")]
    Init(String),
    #[error("bad pipeline `{pipeline}`: {reason}")]
    Build { pipeline: String, reason: String },
    #[error("pipeline would not start: {0}")]
    Start(String),
}

impl Kinded for IngestError {
    fn kind(&self) -> ErrorKind {
        match self {
            // GStreamer itself is unusable: nothing in this process can decode.
            Self::Init(_) => ErrorKind::Fatal,
            // The description or an element in it is wrong (a missing plugin, say): building
            // it again gives the same answer until the camera's settings change.
            Self::Build { .. } => ErrorKind::Refuse(Refusal::Invalid),
            Self::Start(_) => ErrorKind::Retry,
        }
    }
}

/// Initialise GStreamer once per process.
pub fn init() -> Result<(), IngestError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string())).clone().map_err(IngestError::Init)
}

fn builtin_template(decoder: &str) -> Option<&'static str> {
    match decoder {
        "cpu" => Some(CPU),
        "nvidia" => Some(NVIDIA),
        "vaapi" => Some(VAAPI),
        _ => None,
    }
}

/// The pipeline description for a camera, with `${source}` and `${size}` filled in.
pub fn describe(cam: &CameraConfig, source: &Source) -> Result<String, IngestError> {
    let template = match &cam.pipeline {
        Some(custom) => custom.as_str(),
        None => builtin_template(&cam.decoder)
            .ok_or_else(|| IngestError::Build { pipeline: cam.decoder.clone(), reason: "unknown decoder".into() })?,
    };
    let src = match source {
        Source::Rtsp(_) => "rtspsrc name=src ! application/x-rtp,media=video",
        Source::File(_) => "filesrc name=src",
    };
    let size = cam.size.map(|[w, h]| format!(",width={w},height={h}")).unwrap_or_default();
    let body: Vec<&str> = template.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    Ok(body.join(" ").replace("${source}", src).replace("${size}", &size))
}

/// How a running pipeline ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEnd {
    Eos,
    /// The error, already redacted.
    Error(String),
    /// A failure another transport would not help: the server answered and refused (wrong
    /// credentials, no such stream), or the pipeline could not be built. Already redacted.
    Refused(String),
}

/// Liveness of a source, read by the supervisor's watchdog.
#[derive(Default)]
pub struct SourceHealth {
    frames: AtomicU64,
    last_frame_ns: AtomicU64,
    /// True while the decoder waits for room in a `block` channel: slow analysis, not a stall.
    blocked: AtomicBool,
}

impl SourceHealth {
    /// Frames delivered so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Whether no frame has arrived for `limit` (never true while blocked on a full channel).
    pub fn stalled(&self, epoch: Instant, limit: Duration) -> bool {
        if self.blocked.load(Ordering::Relaxed) {
            return false;
        }
        let last = Duration::from_nanos(self.last_frame_ns.load(Ordering::Relaxed));
        epoch.elapsed().saturating_sub(last) > limit
    }

    /// Start the stall clock afresh (a new pipeline gets the full stall time to deliver).
    pub fn arm(&self, epoch: Instant) {
        self.touch(epoch);
    }

    fn touch(&self, epoch: Instant) {
        self.last_frame_ns.store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Where the appsink delivers frames: the camera's channel plus its counters.
#[derive(Clone)]
pub struct FrameSink {
    pub camera: Arc<str>,
    pub tx: channel::Sender<Frame>,
    pub seq: Arc<AtomicU64>,
    pub metrics: CameraMetrics,
    pub health: Arc<SourceHealth>,
    /// Time base for `health`.
    pub epoch: Instant,
}

impl FrameSink {
    fn on_sample(
        &self,
        appsink: &gst_app::AppSink,
        info_cache: &Mutex<Option<(gst::Caps, Arc<gst_video::VideoInfo>)>>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let sample = appsink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
        let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
        let caps = sample.caps().ok_or(gst::FlowError::NotNegotiated)?;
        let info = {
            let mut cache = info_cache.lock().unwrap_or_else(|p| p.into_inner());
            match cache.as_ref() {
                Some((c, info)) if c.as_ref() == caps => info.clone(),
                _ => {
                    let info =
                        Arc::new(gst_video::VideoInfo::from_caps(caps).map_err(|_| gst::FlowError::NotNegotiated)?);
                    *cache = Some((caps.to_owned(), info.clone()));
                    info
                }
            }
        };
        let frame = Frame {
            camera: self.camera.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            pts: buffer.pts(),
            wall: Utc::now(),
            info,
            buffer,
        };
        self.metrics.decoded.inc();
        self.health.frames.fetch_add(1, Ordering::Relaxed);
        // While blocked on a full channel the watchdog ignores the clock, so touching it once
        // the frame is handed over is enough.
        self.health.blocked.store(true, Ordering::Relaxed);
        let sent = self.tx.send(frame);
        self.health.blocked.store(false, Ordering::Relaxed);
        self.health.touch(self.epoch);
        self.metrics.queue_depth.set(self.tx.len() as i64);
        match sent {
            Ok(Sent::Queued) => Ok(gst::FlowSuccess::Ok),
            Ok(Sent::DroppedOldest) => {
                self.metrics.dropped_backpressure.inc();
                Ok(gst::FlowSuccess::Ok)
            }
            Err(channel::Closed) => Err(gst::FlowError::Flushing),
        }
    }
}

/// One camera's GStreamer pipeline.
pub struct Streamer {
    pipeline: gst::Pipeline,
}

impl Streamer {
    /// Build (but do not start) the pipeline for `cam`, delivering frames to `sink`.
    pub fn build(cam: &CameraConfig, sink: FrameSink) -> Result<Self, IngestError> {
        init()?;
        let source = cam.source().map_err(|reason| IngestError::Build { pipeline: String::new(), reason })?;
        let desc = describe(cam, &source)?;
        let build_err = |reason: String| IngestError::Build { pipeline: desc.clone(), reason };
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| build_err(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| build_err("not a pipeline".into()))?;
        // decodebin picks the decoder at run time; set its threads as it is added.
        let threads = cam.decode_threads as i32;
        pipeline.connect_deep_element_added(move |_, _, element| {
            let libav = element.factory().is_some_and(|f| f.name().starts_with("avdec_"));
            if libav && element.find_property("max-threads").is_some() {
                element.set_property("max-threads", threads);
            }
        });
        let src = pipeline.by_name("src").ok_or_else(|| build_err("no element named `src`".into()))?;
        match &source {
            Source::Rtsp(url) => configure_rtsp(&src, url, cam),
            Source::File(path) => src.set_property("location", path.to_string_lossy().as_ref()),
        }
        let appsink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .ok_or_else(|| build_err("no appsink named `sink`".into()))?;
        // No clock sync: live sources pace themselves and files should run as fast as analysis allows.
        appsink.set_sync(false);
        appsink.set_max_buffers(1);
        let cache = Mutex::new(None);
        appsink
            .set_callbacks(gst_app::AppSinkCallbacks::builder().new_sample(move |s| sink.on_sample(s, &cache)).build());
        Ok(Self { pipeline })
    }

    /// Set the pipeline playing.
    pub fn start(&self) -> Result<(), IngestError> {
        self.pipeline.set_state(gst::State::Playing).map(|_| ()).map_err(|e| IngestError::Start(e.to_string()))
    }

    /// Wait for end of stream or the first error.
    pub async fn wait(&self) -> StreamEnd {
        let Some(bus) = self.pipeline.bus() else { return StreamEnd::Error("pipeline has no bus".into()) };
        let mut messages = bus.stream();
        // A corrupted stream can warn on every frame.
        let mut warnings = crate::throttle::Throttle::default();
        while let Some(msg) = messages.next().await {
            match msg.view() {
                gst::MessageView::Eos(_) => return StreamEnd::Eos,
                gst::MessageView::Error(e) => {
                    let err = e.error();
                    if err.matches(gst::ResourceError::NotAuthorized) {
                        return StreamEnd::Refused(
                            "the camera refused the user and password in its URL (401 Unauthorized)".into(),
                        );
                    }
                    if err.matches(gst::ResourceError::NotFound) {
                        return StreamEnd::Refused(format!("the camera has no such stream: {}", redact(err.message())));
                    }
                    let debug = e.debug().map(|d| format!(" ({d})")).unwrap_or_default();
                    return StreamEnd::Error(redact(&format!("{err}{debug}")));
                }
                gst::MessageView::Warning(w) => {
                    warnings.warn(format_args!("gstreamer: {}", redact(&w.error().to_string())));
                }
                _ => {}
            }
        }
        StreamEnd::Error("pipeline bus closed".into())
    }

    /// Stop the pipeline. Blocks until its threads have stopped, so call it off the async runtime.
    pub fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for Streamer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn configure_rtsp(src: &gst::Element, url: &url::Url, cam: &CameraConfig) {
    let mut bare = url.clone();
    let user = percent_decode(url.username());
    let pass = url.password().map(percent_decode);
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    src.set_property("location", bare.as_str());
    if !user.is_empty() {
        src.set_property("user-id", user.as_str());
    }
    if let Some(pass) = pass {
        src.set_property("user-pw", pass.as_str());
    }
    // `auto` is the camera task's: it builds each attempt for one transport, TCP first.
    let protocols = match cam.transport {
        RtspTransport::Tcp | RtspTransport::Auto => "tcp",
        RtspTransport::Udp => "udp",
    };
    src.set_property_from_str("protocols", protocols);
    // Only video is analysed. An audio stream that was set up anyway gets its own UDP source,
    // which can push before the pipeline has linked it and stop the whole session
    // (`not-linked`), so streams other than video are never set up.
    src.connect("select-stream", false, |args| {
        let video = args.get(2).and_then(|v| v.get::<gst::Caps>().ok()).is_none_or(|caps| is_video(&caps));
        Some(video.to_value())
    });
    src.set_property("latency", 200u32);
    src.set_property("drop-on-latency", true);
    let stall_us = (cam.reconnect.stall_secs * 1e6) as u64;
    src.set_property("tcp-timeout", stall_us);
}

/// Whether rtspsrc's caps for a stream say video (a stream that names no media is kept).
fn is_video(caps: &gst::CapsRef) -> bool {
    caps.structure(0).and_then(|s| s.get::<&str>("media").ok()).is_none_or(|media| media == "video")
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}
