//! A looping RTSP server for an H.264 MP4 file, on 127.0.0.1: the demo's camera, the tests'
//! camera, and the benchmark's live source.
//!
//! ```text
//! file ─(read once: qtdemux ! h264parse)─► access units in memory
//!      ─► appsrc (timestamps continue across loops) ! clocksync ! rtph264pay ─► RTSP clients
//! ```
//!
//! Looping from memory keeps the stream continuous, like a real camera; re-reading the file
//! would end the RTSP session at every loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server as rtsp;
use gstreamer_rtsp_server::prelude::*;

use crate::ingest;

/// The sample server could not start.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("RTSP server: {0}")]
    Server(String),
    #[error("encoding the plate video: {0}")]
    Encode(String),
}

/// The encoded stream, held in memory.
struct Clip {
    caps: gst::Caps,
    units: Vec<gst::Buffer>,
    /// Length of one pass, so timestamps continue on the next.
    period: gst::ClockTime,
}

/// A running RTSP server; stops (and drops its clients) when dropped.
pub struct SampleServer {
    port: u16,
    /// Mount paths, `/` first.
    mounts: Vec<String>,
    server: rtsp::RTSPServer,
    main_loop: glib::MainLoop,
    context: glib::MainContext,
    source: Option<glib::SourceId>,
    thread: Option<JoinHandle<()>>,
    setups: Arc<AtomicUsize>,
}

/// RTSP authentication a sample server asks for: user and password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Login {
    Basic(&'static str, &'static str),
    Digest(&'static str, &'static str),
}

/// What a sample server offers, as real cameras differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offer {
    /// RTP over TCP only (`Some(true)`), over UDP only (`Some(false)`), or both (`None`).
    pub tcp_only: Option<bool>,
    /// Two audio tracks beside the video, as cameras with a microphone send: AAC and G.711
    /// µ-law (PCMU).
    pub audio: bool,
    /// The video as H.265 (HEVC), re-encoded once at start, as many newer cameras send it.
    pub h265: bool,
    /// Only to a user with a password, as cameras ask.
    pub login: Option<Login>,
    /// Each pass plays the video, then again re-encoded at this size (H.264 only): the stream
    /// changes resolution mid-way, as when a camera is reconfigured from its web page.
    pub then_size: Option<(u32, u32)>,
}

impl SampleServer {
    /// Serve `video` in a loop at `rtsp://127.0.0.1:PORT/MOUNT`; port 0 picks a free one.
    pub fn start(video: &Path, mount: &str, port: u16) -> Result<Self, SampleError> {
        Self::serve(video, &[mount.to_string()], port, true, Offer::default())
    }

    /// Serve `video` once, then end the stream (each new session starts from the beginning).
    pub fn once(video: &Path, mount: &str, port: u16) -> Result<Self, SampleError> {
        Self::serve(video, &[mount.to_string()], port, false, Offer::default())
    }

    /// Serve `video` in a loop, offering what `offer` says.
    pub fn offering(video: &Path, mount: &str, port: u16, offer: Offer) -> Result<Self, SampleError> {
        Self::serve(video, &[mount.to_string()], port, true, offer)
    }

    /// Serve `video` in a loop as `count` cameras of their own, at mounts `/cam0`, `/cam1`, …
    /// (see [`url_of`](Self::url_of)): a stand-in for a site's cameras.
    pub fn many(video: &Path, count: usize, port: u16) -> Result<Self, SampleError> {
        let mounts: Vec<String> = (0..count.max(1)).map(|i| format!("cam{i}")).collect();
        Self::serve(video, &mounts, port, true, Offer::default())
    }

    fn serve(video: &Path, mounts: &[String], port: u16, looping: bool, offer: Offer) -> Result<Self, SampleError> {
        ingest::init().map_err(|e| SampleError::Server(e.to_string()))?;
        let codec = if offer.h265 { Encode::H265 } else { Encode::Copy };
        let mut clip = read_clip(video, codec)?;
        if let Some((width, height)) = offer.then_size {
            clip.append(read_clip(video, Encode::H264At(width, height))?);
        }
        let clip = Arc::new(clip);
        let server = rtsp::RTSPServer::new();
        server.set_address("127.0.0.1");
        server.set_service(&port.to_string());
        if let Some(login) = offer.login {
            let auth = rtsp::RTSPAuth::new();
            let token = rtsp::RTSPToken::builder().field(rtsp::RTSP_TOKEN_MEDIA_FACTORY_ROLE.as_str(), "user").build();
            match login {
                Login::Basic(user, pass) => {
                    auth.set_supported_methods(rtsp::gst_rtsp::RTSPAuthMethod::Basic);
                    auth.add_basic(&rtsp::RTSPAuth::make_basic(user, pass), &token);
                }
                Login::Digest(user, pass) => {
                    auth.set_supported_methods(rtsp::gst_rtsp::RTSPAuthMethod::Digest);
                    auth.add_digest(user, pass, &token);
                }
            }
            server.set_auth(Some(&auth));
        }
        let points = server.mount_points().ok_or_else(|| SampleError::Server("no mount points".into()))?;
        for mount in mounts {
            points.add_factory(&format!("/{}", mount.trim_start_matches('/')), factory(&clip, looping, offer));
        }
        // A client sends one SETUP per stream it takes, so this shows which streams it chose.
        let setups = Arc::new(AtomicUsize::new(0));
        let counter = setups.clone();
        server.connect_client_connected(move |_, client| {
            let counter = counter.clone();
            client.connect_setup_request(move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
            });
        });
        let ctx = glib::MainContext::new();
        let source =
            server.attach(Some(&ctx)).map_err(|e| SampleError::Server(format!("cannot listen on port {port}: {e}")))?;
        let port = u16::try_from(server.bound_port()).map_err(|_| SampleError::Server("no bound port".into()))?;
        let main_loop = glib::MainLoop::new(Some(&ctx), false);
        let thread = {
            let (main_loop, ctx) = (main_loop.clone(), ctx.clone());
            std::thread::Builder::new()
                .name("rtsp-sample".into())
                .spawn(move || ctx.with_thread_default(|| main_loop.run()).unwrap_or(()))
                .map_err(|e| SampleError::Server(e.to_string()))?
        };
        let mounts = mounts.iter().map(|m| format!("/{}", m.trim_start_matches('/'))).collect();
        Ok(Self { port, mounts, server, main_loop, context: ctx, source: Some(source), thread: Some(thread), setups })
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SETUP requests received so far, over all clients: one for each stream a client set up.
    pub fn setups(&self) -> usize {
        self.setups.load(Ordering::Relaxed)
    }

    /// The stream's URL.
    pub fn url(&self) -> String {
        self.url_of(0)
    }

    /// The URL of mount `i` (of [`many`](Self::many)).
    pub fn url_of(&self, i: usize) -> String {
        format!("rtsp://127.0.0.1:{}{}", self.port, self.mounts.get(i).unwrap_or(&self.mounts[0]))
    }
}

impl Drop for SampleServer {
    fn drop(&mut self) {
        if let Some(source) = self.source.take().and_then(|id| self.context.find_source_by_id(&id)) {
            source.destroy();
        }
        self.server.client_filter(Some(&mut |_, _| rtsp::RTSPFilterResult::Remove));
        self.main_loop.quit();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A mount's media: the clip from memory, payloaded, with what `offer` adds.
fn factory(clip: &Arc<Clip>, looping: bool, offer: Offer) -> rtsp::RTSPMediaFactory {
    let factory = rtsp::RTSPMediaFactory::new();
    let audio = if offer.audio {
        " audiotestsrc is-live=true wave=ticks ! audioconvert ! audioresample ! avenc_aac ! rtpmp4apay name=pay1 pt=97 \
         audiotestsrc is-live=true ! audioconvert ! audioresample ! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay2"
    } else {
        ""
    };
    factory.set_launch(&format!(
        "( appsrc name=vsrc is-live=true format=time ! clocksync ! {pay} name=pay0 pt=96 config-interval=-1{audio} )",
        pay = if offer.h265 { "rtph265pay" } else { "rtph264pay" },
    ));
    if offer.login.is_some() {
        let role = gst::Structure::builder("user")
            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_ACCESS.as_str(), true)
            .field(rtsp::RTSP_PERM_MEDIA_FACTORY_CONSTRUCT.as_str(), true)
            .build();
        factory.add_role_from_structure(&role);
    }
    match offer.tcp_only {
        Some(true) => factory.set_protocols(rtsp::gst_rtsp::RTSPLowerTrans::TCP),
        Some(false) => factory.set_protocols(rtsp::gst_rtsp::RTSPLowerTrans::UDP),
        None => {}
    }
    factory.set_shared(true);
    let clip = clip.clone();
    factory.connect_media_configure(move |_, media| {
        let bin = media.element().downcast::<gst::Bin>().expect("media element is a bin");
        if let Some(src) = bin.by_name("vsrc").and_then(|e| e.downcast::<gst_app::AppSrc>().ok()) {
            feed(&src, clip.clone(), looping);
        }
    });
    factory
}

/// Push the clip's access units on demand, shifting timestamps by one period per pass.
fn feed(src: &gst_app::AppSrc, clip: Arc<Clip>, looping: bool) {
    src.set_caps(Some(&clip.caps));
    src.set_format(gst::Format::Time);
    let next = Mutex::new(0usize);
    src.set_callbacks(
        gst_app::AppSrcCallbacks::builder()
            .need_data(move |src, _| {
                let mut n = next.lock().unwrap_or_else(|p| p.into_inner());
                let (pass, i) = (*n / clip.units.len(), *n % clip.units.len());
                if pass > 0 && !looping {
                    let _ = src.end_of_stream();
                    return;
                }
                *n += 1;
                let mut unit = clip.units[i].copy();
                let shift = clip.period * pass as u64;
                let unit_mut = unit.make_mut();
                unit_mut.set_pts(clip.units[i].pts().map(|t| t + shift));
                unit_mut.set_dts(clip.units[i].dts().map(|t| t + shift));
                let _ = src.push_buffer(unit);
            })
            .build(),
    );
}

impl Clip {
    /// Play `next` after this clip, in the same pass.
    fn append(&mut self, next: Clip) {
        for mut unit in next.units {
            let u = unit.make_mut();
            u.set_pts(u.pts().map(|t| t + self.period));
            u.set_dts(u.dts().map(|t| t + self.period));
            self.units.push(unit);
        }
        self.period += next.period;
    }
}

/// How the file's H.264 video is served.
#[derive(Debug, Clone, Copy)]
enum Encode {
    /// As it is.
    Copy,
    /// Re-encoded as H.265.
    H265,
    /// Re-encoded as H.264 at this size.
    H264At(u32, u32),
}

/// Demux the file once into access units with timestamps starting at zero, re-encoding them
/// as `encode` says.
fn read_clip(video: &Path, encode: Encode) -> Result<Clip, SampleError> {
    let err = |reason: String| SampleError::Read { path: video.to_path_buf(), reason };
    if !video.is_file() {
        return Err(err("no such file".into()));
    }
    let encoder = "speed-preset=ultrafast tune=zerolatency key-int-max=30";
    let out = match encode {
        Encode::Copy => "video/x-h264,stream-format=byte-stream,alignment=au".to_string(),
        Encode::H265 => format!(
            "avdec_h264 ! videoconvert ! x265enc {encoder} ! h265parse ! video/x-h265,stream-format=byte-stream,alignment=au"
        ),
        Encode::H264At(w, h) => format!(
            "avdec_h264 ! videoconvert ! videoscale ! video/x-raw,width={w},height={h} ! x264enc {encoder} ! h264parse ! \
             video/x-h264,stream-format=byte-stream,alignment=au"
        ),
    };
    let pipeline =
        gst::parse::launch(&format!("filesrc name=src ! qtdemux ! h264parse ! {out} ! appsink name=sink sync=false"))
            .map_err(|e| err(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| err("not a pipeline".into()))?;
    pipeline.by_name("src").expect("src").set_property("location", video.to_string_lossy().as_ref());
    let sink = pipeline.by_name("sink").and_then(|e| e.downcast::<gst_app::AppSink>().ok()).expect("sink");
    pipeline.set_state(gst::State::Playing).map_err(|e| err(e.to_string()))?;
    let mut caps = None;
    let mut units = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        if caps.is_none() {
            caps = sample.caps().map(|c| c.to_owned());
        }
        if let Some(b) = sample.buffer_owned() {
            units.push(b);
        }
    }
    let failure = pipeline.bus().and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]));
    let _ = pipeline.set_state(gst::State::Null);
    if let Some(msg) = failure
        && let gst::MessageView::Error(e) = msg.view()
    {
        return Err(err(format!("not an H.264 MP4: {}", e.error())));
    }
    let caps = caps.ok_or_else(|| err("no H.264 video track".into()))?;
    let start = units.iter().filter_map(|b| b.dts_or_pts()).min().unwrap_or(gst::ClockTime::ZERO);
    let mut end = gst::ClockTime::ZERO;
    for b in &mut units {
        let b = b.make_mut();
        b.set_pts(b.pts().map(|t| t.saturating_sub(start)));
        b.set_dts(b.dts().map(|t| t.saturating_sub(start)));
        end = end.max(b.pts().unwrap_or_default() + b.duration().unwrap_or_default());
    }
    if units.is_empty() || end.is_zero() {
        return Err(err("no timed H.264 frames".into()));
    }
    Ok(Clip { caps, units, period: end })
}

/// [`plate_video`]'s frame rate.
pub const PLATE_FPS: u64 = 10;
/// Frames each image of a [`plate_video`] is shown.
pub const PLATE_HOLD: u64 = 15;
/// Black frames after each image, so one vehicle's track ends before the next appears.
pub const PLATE_GAP: u64 = 15;
/// Each image drives in from the right over its first `ARRIVAL` frames, `SLIDE` pixels a frame,
/// then stands: a car arriving and stopping, as motion-gated detection sees one.
const ARRIVAL: u64 = 8;
const SLIDE: u64 = 30;
/// Or it comes from the distance: it grows from `FAR` of its size over `APPROACH` frames (2.5 s)
/// before it stands for the rest of [`PLATE_HOLD`].
const FAR: f32 = 0.15;
const APPROACH: u64 = 25;
/// Frames an approaching vehicle stands once near: long enough for a plate camera's reads
/// (0.7 s), short of a drive-in's, as traffic on a road does not stop.
const STAND: u64 = 7;
const PLATE_WIDTH: u32 = 1280;
const PLATE_HEIGHT: u32 = 720;

/// How each image of a [`plate_video`] comes into view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Drives in from the right and stops: a gate or a parking lane.
    Drive,
    /// Comes from the distance towards the camera at a steady speed, so it stays small for most
    /// of the way and grows fast at the end (its size goes as one over its distance): a road.
    Approach,
}

/// One image's frames in a [`plate_video`], before the gap: it arrives as `arrival` says and
/// stands, centred on a black 1280×720 canvas.
fn arrive(image: &image::RgbImage, arrival: Arrival) -> Vec<image::RgbImage> {
    let centred = |img: &image::RgbImage, dx: i64| {
        let mut canvas = image::RgbImage::new(PLATE_WIDTH, PLATE_HEIGHT);
        let (x, y) = ((PLATE_WIDTH - img.width()) / 2, (PLATE_HEIGHT - img.height()) / 2);
        image::imageops::overlay(&mut canvas, img, i64::from(x) + dx, i64::from(y));
        canvas
    };
    let (w, h) = image.dimensions();
    match arrival {
        Arrival::Drive => {
            (0..PLATE_HOLD).map(|i| centred(image, (SLIDE * (ARRIVAL - i.min(ARRIVAL))) as i64)).collect()
        }
        Arrival::Approach => (0..APPROACH)
            .map(|i| {
                let s = FAR / (1.0 - (1.0 - FAR) * i as f32 / APPROACH as f32);
                let (sw, sh) = (((w as f32 * s) as u32).max(1), ((h as f32 * s) as u32).max(1));
                centred(&image::imageops::resize(image, sw, sh, image::imageops::FilterType::Triangle), 0)
            })
            .chain(std::iter::repeat_n(centred(image, 0), STAND as usize))
            .collect(),
    }
}

/// Make a camera's view of plate photos: each image, fitted into 1280×720, arrives as `arrival`
/// says and stands (for [`PLATE_HOLD`] frames in all after a drive-in, [`STAND`] after an approach), then
/// [`PLATE_GAP`] black frames follow; H.264 in MP4 at [`PLATE_FPS`], written to `out`. Returns the
/// clip's length.
pub fn plate_video(images: &[PathBuf], arrival: Arrival, out: &Path) -> Result<std::time::Duration, SampleError> {
    let encode = |e: &dyn std::fmt::Display| SampleError::Encode(e.to_string());
    ingest::init().map_err(|e| encode(&e))?;
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=video/x-raw,format=RGB,width={PLATE_WIDTH},height={PLATE_HEIGHT},framerate={PLATE_FPS}/1 \
         ! videoconvert ! x264enc pass=quant quantizer=20 speed-preset=veryfast key-int-max={PLATE_FPS} \
         ! video/x-h264,profile=high ! h264parse ! mp4mux ! filesink location=\"{}\"",
        out.display()
    ))
    .map_err(|e| encode(&e))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| encode(&"not a pipeline"))?;
    let src = pipeline
        .by_name("src")
        .and_then(|s| s.downcast::<gst_app::AppSrc>().ok())
        .ok_or_else(|| encode(&"no appsrc"))?;
    pipeline.set_state(gst::State::Playing).map_err(|e| encode(&e))?;
    let black = image::RgbImage::new(PLATE_WIDTH, PLATE_HEIGHT);
    let frame_ms = 1000 / PLATE_FPS;
    let mut n = 0u64;
    let pushed = (|| {
        for path in images {
            let img = image::open(path)
                .map_err(|e| SampleError::Read { path: path.clone(), reason: e.to_string() })?
                .to_rgb8();
            let scale = (PLATE_WIDTH as f32 / img.width() as f32).min(PLATE_HEIGHT as f32 / img.height() as f32);
            let (w, h) = ((img.width() as f32 * scale) as u32, (img.height() as f32 * scale) as u32);
            let shown = arrive(&image::imageops::resize(&img, w, h, image::imageops::FilterType::Triangle), arrival);
            for frame in shown.into_iter().chain(std::iter::repeat_n(black.clone(), PLATE_GAP as usize)) {
                let mut buffer = gst::Buffer::from_slice(frame.into_raw());
                if let Some(b) = buffer.get_mut() {
                    b.set_pts(gst::ClockTime::from_mseconds(n * frame_ms));
                    b.set_duration(gst::ClockTime::from_mseconds(frame_ms));
                }
                src.push_buffer(buffer).map_err(|e| encode(&e))?;
                n += 1;
            }
        }
        src.end_of_stream().map_err(|e| encode(&e))
    })();
    let done = pushed.and_then(|_| {
        let bus = pipeline.bus().ok_or_else(|| encode(&"no bus"))?;
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(300), &[gst::MessageType::Eos, gst::MessageType::Error]);
        let Some(msg) = msg else { return Err(encode(&"timed out")) };
        match msg.view() {
            gst::MessageView::Error(e) => Err(encode(&e.error())),
            _ => Ok(()),
        }
    });
    let _ = pipeline.set_state(gst::State::Null);
    done.map(|_| std::time::Duration::from_millis(n * frame_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The columns of a frame that show anything (the canvas is black).
    fn shown_width(frame: &image::RgbImage) -> u32 {
        let lit: Vec<u32> =
            (0..frame.width()).filter(|&x| (0..frame.height()).any(|y| frame.get_pixel(x, y)[0] > 0)).collect();
        lit.last().map_or(0, |last| last - lit[0] + 1)
    }

    #[test]
    fn an_approaching_vehicle_stays_small_most_of_the_way_then_stands() {
        let car = image::RgbImage::from_pixel(1000, 600, image::Rgb([200, 200, 200]));
        let frames = arrive(&car, Arrival::Approach);
        assert_eq!(frames.len() as u64, APPROACH + STAND);
        let widths: Vec<u32> = frames.iter().map(shown_width).collect();
        assert!(widths.windows(2).all(|w| w[0] <= w[1]), "it only grows: {widths:?}");
        assert_eq!(widths[0], 150, "it starts at {FAR} of its size");
        // Size goes as one over distance: half way in time it is still under a third of its size.
        assert!(widths[APPROACH as usize / 2] < 1000 / 3, "{widths:?}");
        assert!(widths[APPROACH as usize..].iter().all(|&w| w == 1000), "then stands whole: {widths:?}");
        assert_eq!(frames[APPROACH as usize], frames[frames.len() - 1]);
    }

    #[test]
    fn a_driving_vehicle_slides_in_from_the_right_then_stands() {
        let car = image::RgbImage::from_pixel(1000, 600, image::Rgb([200, 200, 200]));
        let frames = arrive(&car, Arrival::Drive);
        assert_eq!(frames.len() as u64, PLATE_HOLD);
        let left = |f: &image::RgbImage| (0..f.width()).find(|&x| f.get_pixel(x, 360)[0] > 0).unwrap();
        let centred = (PLATE_WIDTH - 1000) / 2;
        assert_eq!(left(&frames[0]), centred + (SLIDE * ARRIVAL) as u32);
        assert!(frames.windows(2).all(|w| left(&w[0]) >= left(&w[1])));
        assert!(frames[ARRIVAL as usize..].iter().all(|f| left(f) == centred));
    }
}
