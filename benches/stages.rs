//! Per-stage costs on the hot path: motion on a 1080p luma plane, the frame channel, the tracker
//! with 50 tracks, CTC decoding, event JSON, a snapshot JPEG of a real photo, and, with the models
//! installed, the detector's letterbox and YOLOX decode + NMS on the model's real output for it.
//! Run: `cargo bench --bench stages`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gstreamer_video::prelude::*;
use vigil::anpr::ctc::Alphabet;
use vigil::channel::{self, Policy};
use vigil::config::{Config, MotionConfig, TrackerConfig};
use vigil::detect::{Detection, Detector, Fit, yolox};
use vigil::events::snapshot::encode_jpeg;
use vigil::events::{Event, EventType};
use vigil::inference::{Batcher, Runtime};
use vigil::metrics::Metrics;
use vigil::motion::MotionDetector;
use vigil::track::Tracker;

fn luma(w: usize, h: usize, square_x: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8 / 4 + 60).collect();
    for y in 400..600 {
        f[y * w + square_x..y * w + square_x + 200].fill(230);
    }
    f
}

fn motion(c: &mut Criterion) {
    let (w, h) = (1920, 1080);
    let frames = [luma(w, h, 300), luma(w, h, 360)];
    let mut d = MotionDetector::new(&MotionConfig::default(), w as u32, h as u32);
    let mut i = 0;
    c.bench_function("motion 1080p", |b| {
        b.iter(|| {
            i += 1;
            black_box(d.detect(&frames[i % 2], w))
        })
    });
}

fn frame_channel(c: &mut Criterion) {
    let (tx, rx) = channel::bounded(8, Policy::DropOldest);
    c.bench_function("channel send+recv", |b| {
        b.iter(|| {
            tx.send(black_box(1u64)).unwrap();
            black_box(rx.recv_timeout(std::time::Duration::ZERO))
        })
    });
}

fn event_json(c: &mut Criterion) {
    let ev = Event {
        id: 123,
        revision: 0,
        seq: 0,
        event_type: EventType::Motion,
        camera_id: "gate-1".into(),
        timestamp: chrono::Utc::now(),
        frame_number: Some(1234),
        snapshot_path: Some("gate-1/2026-11-22/123.jpg".into()),
        event_data: serde_json::json!({"phase": "start", "regions": [[10, 20, 200, 300]], "area": 0.05}),
        created_at: chrono::Utc::now(),
    };
    c.bench_function("event to JSON", |b| b.iter(|| serde_json::to_string(black_box(&ev)).unwrap()));
}

/// 50 cars in a 10 × 5 grid, each drifting right by 4 px per step.
fn cars(step: usize) -> Vec<Detection> {
    (0..50)
        .map(|i| {
            let (x, y) = ((i % 10) as f32 * 190.0 + (step % 40) as f32 * 4.0, (i / 10) as f32 * 210.0 + 20.0);
            Detection { class: 2, score: 0.8, bbox: [x, y, x + 120.0, y + 80.0] }
        })
        .collect()
}

fn tracker(c: &mut Criterion) {
    let mut tracker = Tracker::new(&TrackerConfig::default(), 1);
    let (mut step, mut t) = (0, 0.0);
    for _ in 0..10 {
        tracker.update(&cars(step), |_| 0.5, t);
        (step, t) = (step + 1, t + 0.2);
    }
    c.bench_function("tracker step, 50 tracks", |b| {
        b.iter(|| {
            (step, t) = (step + 1, t + 0.2);
            black_box(tracker.update(&cars(step), |_| 0.5, t))
        })
    });
}

fn ctc(c: &mut Criterion) {
    // PP-OCRv4's alphabet size (6623 symbols plus blank and space) and a 40-step plate line.
    let dict: String = (0..6623u32).map(|i| format!("{}\n", char::from_u32(0x4e00 + i).unwrap())).collect();
    let alphabet = Alphabet::from_lines(&dict);
    let classes = alphabet.classes();
    let mut probs = vec![0.0001f32; 40 * classes];
    for (step, row) in probs.chunks_exact_mut(classes).enumerate() {
        row[if step % 3 == 0 { 0 } else { 1 + step * 37 % 6600 }] = 0.95;
    }
    c.bench_function("CTC greedy decode, 40 steps x 6625 classes", |b| {
        b.iter(|| black_box(alphabet.decode(black_box(&probs), classes)))
    });
}

/// The dog photo from the shared assets as a GStreamer RGB buffer.
fn photo() -> Option<(gstreamer::Buffer, gstreamer_video::VideoInfo)> {
    vigil::ingest::init().ok()?;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/images/dog.jpg");
    let rgb = image::open(path).ok()?.to_rgb8();
    let (w, h) = rgb.dimensions();
    let info = gstreamer_video::VideoInfo::builder(gstreamer_video::VideoFormat::Rgb, w, h).build().ok()?;
    let mut buffer = gstreamer::Buffer::with_size(info.size()).ok()?;
    {
        let mut frame = gstreamer_video::VideoFrameRef::from_buffer_ref_writable(buffer.make_mut(), &info).ok()?;
        let stride = frame.plane_stride()[0] as usize;
        let data = frame.plane_data_mut(0).ok()?;
        for (dst, src) in data.chunks_mut(stride).zip(rgb.chunks(w as usize * 3)) {
            dst[..src.len()].copy_from_slice(src);
        }
    }
    Some((buffer, info))
}

/// `buffer` converted to I420, the format software decoders give cameras.
fn i420(
    buffer: &gstreamer::Buffer,
    info: &gstreamer_video::VideoInfo,
) -> Option<(gstreamer::Buffer, gstreamer_video::VideoInfo)> {
    let out = gstreamer_video::VideoInfo::builder(gstreamer_video::VideoFormat::I420, info.width(), info.height())
        .build()
        .ok()?;
    let converter = gstreamer_video::VideoConverter::new(info, &out, None).ok()?;
    let input = gstreamer_video::VideoFrame::from_buffer_readable(buffer.clone(), info).ok()?;
    let mut output =
        gstreamer_video::VideoFrame::from_buffer_writable(gstreamer::Buffer::with_size(out.size()).ok()?, &out).ok()?;
    converter.frame(&input, &mut output);
    Some((output.into_buffer(), out))
}

/// A snapshot: colour conversion and JPEG encoding of a whole photo.
fn snapshot(c: &mut Criterion) {
    let Some((buffer, info)) = photo() else { return };
    let frame = vigil::frame::Frame {
        camera: "bench".into(),
        seq: 0,
        pts: None,
        wall: chrono::Utc::now(),
        info: Arc::new(info),
        buffer,
    };
    c.bench_function("snapshot JPEG, photo", |b| b.iter(|| black_box(encode_jpeg(&frame, None, 85).unwrap())));
}

/// Letterbox and YOLOX decode + NMS; skipped (with a note) where setup has not installed the models.
fn detector(c: &mut Criterion) {
    let mut config = Config::default();
    config.models.dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let loaded = Runtime::load(&config.inference).ok().and_then(|rt| {
        let detector = Detector::load(&config.models, &rt, &config.inference, Arc::new(Metrics::new())).ok()?;
        let session = rt
            .session(&config.models.dir.join("yolox_nano_coco80.prepared.onnx"), vigil::inference::Workload::Frames)
            .ok()?;
        Some((detector, Batcher::spawn("bench", vec![session], &config.inference, Arc::new(Metrics::new()))))
    });
    let (Some((detector, batcher)), Some((buffer, info))) = (loaded, photo()) else {
        eprintln!("models or ../shared/images/dog.jpg missing (run scripts/setup): detector benches skipped");
        return;
    };
    let crop = [0, 0, info.width(), info.height()];
    c.bench_function("letterbox + normalise, photo to its 416-wide canvas", |b| {
        b.iter(|| black_box(detector.letterbox(&buffer, &info, crop, Fit::Exact).unwrap()))
    });
    if let Some((yuv, yuv_info)) = i420(&buffer, &info) {
        c.bench_function("letterbox + normalise, the photo as a decoder's I420 frame", |b| {
            b.iter(|| black_box(detector.letterbox(&yuv, &yuv_info, crop, Fit::Exact).unwrap()))
        });
    }
    let vigil::detect::Letterboxed { tensor, scale, size: (w, h) } =
        detector.letterbox(&buffer, &info, crop, Fit::Exact).unwrap();
    let out = batcher.infer(&[3, h as usize, w as usize], tensor).unwrap();
    let grid = yolox::grid(w, h, &[8, 16, 32]);
    let limits = (info.width() as f32, info.height() as f32);
    c.bench_function("YOLOX decode + NMS, real output", |b| {
        b.iter(|| black_box(yolox::decode(&out.data, &grid, 80, scale, (0.0, 0.0), limits, 0.3, 0.45)))
    });
}

criterion_group!(benches, motion, frame_channel, tracker, ctc, event_json, snapshot, detector);
criterion_main!(benches);
