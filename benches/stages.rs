//! Per-stage costs on the hot path: motion on a 1080p luma plane, the frame channel, event JSON.
//! Run: `cargo bench --bench stages`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vigil::channel::{self, Policy};
use vigil::config::MotionConfig;
use vigil::events::{Event, EventType};
use vigil::motion::MotionDetector;

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

criterion_group!(benches, motion, frame_channel, event_json);
criterion_main!(benches);
