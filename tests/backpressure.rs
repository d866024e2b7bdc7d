//! Backpressure on real GStreamer pipelines: a deliberately slow analysis stage behind the real
//! ingest. Live RTSP drops the oldest frames (counted, memory flat); a file blocks and loses none.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use common::{media, rss_bytes};
use vigil::channel::{self, Policy, Recv};
use vigil::config::{CameraConfig, Config};
use vigil::frame::Frame;
use vigil::ingest::{FrameSink, SourceHealth, StreamEnd, Streamer};
use vigil::metrics::{CameraMetrics, Metrics};
use vigil::sample::SampleServer;

fn camera(url: &str) -> CameraConfig {
    let toml = format!("[[cameras]]\nid = \"cam\"\nurl = \"{url}\"\n");
    Config::parse(&toml, "test").unwrap().cameras.remove(0)
}

fn streamer(
    cam: &CameraConfig,
    capacity: usize,
    policy: Policy,
    m: &CameraMetrics,
) -> (Streamer, channel::Receiver<Frame>) {
    let (tx, rx) = channel::bounded(capacity, policy);
    let sink = FrameSink {
        camera: "cam".into(),
        tx,
        seq: Arc::new(AtomicU64::new(0)),
        metrics: m.clone(),
        health: Arc::new(SourceHealth::default()),
        epoch: Instant::now(),
    };
    let s = Streamer::build(cam, sink).unwrap();
    s.start().unwrap();
    (s, rx)
}

#[test]
fn live_source_drops_the_oldest_and_memory_stays_flat() {
    let server = SampleServer::start(&media("car-detection.mp4"), "live", 0).unwrap();
    let cam = camera(&server.url());
    let metrics = Metrics::new();
    let m = metrics.camera("cam");
    let capacity = 4;
    let (streamer, rx) = streamer(&cam, capacity, Policy::DropOldest, &m);

    // The slow stage: 5 frames per second against a 12.5 fps camera.
    let start = Instant::now();
    let (mut analysed, mut max_depth) = (0u64, 0usize);
    let mut rss_after_warmup = None;
    while start.elapsed() < Duration::from_secs(14) {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Recv::Item(_frame) => {
                // The channel's own depth: the frame just taken is out of it, and the camera may
                // already have queued the next in its place.
                max_depth = max_depth.max(rx.len());
                std::thread::sleep(Duration::from_millis(200));
                analysed += 1;
            }
            Recv::Timeout => panic!("no frames from the RTSP source"),
            Recv::Closed => panic!("channel closed"),
        }
        if rss_after_warmup.is_none() && start.elapsed() > Duration::from_secs(4) {
            rss_after_warmup = Some(rss_bytes());
        }
    }
    let rss_end = rss_bytes();
    drop(streamer);
    let (decoded, dropped, queued) = (m.decoded.get(), m.dropped_backpressure.get(), rx.len() as u64);
    let growth = rss_end as i64 - rss_after_warmup.unwrap() as i64;
    println!(
        "live: decoded {decoded}, analysed {analysed}, dropped {dropped}, queued {queued}, max depth {max_depth}, RSS growth {growth} bytes"
    );
    assert!(max_depth <= capacity, "queue grew past its capacity: {max_depth}");
    assert!(dropped >= 40, "a slow stage must cause counted drops, got {dropped}");
    assert_eq!(decoded, analysed + dropped + queued, "every frame is analysed, dropped or queued");
    // Queuing what was dropped (~0.5 MB a frame) would have grown RSS by tens of MB.
    assert!(growth < 12 << 20, "RSS grew by {growth} bytes");
}

#[test]
fn file_source_blocks_and_loses_nothing() {
    let cam = camera(&format!("file://{}", media("car-detection.mp4").display()));
    assert_eq!(cam.full_policy(), vigil::channel::Policy::Block);
    let metrics = Metrics::new();
    let m = metrics.camera("cam");
    let (streamer, rx) = streamer(&cam, 4, Policy::Block, &m);
    let mut seqs = Vec::new();
    while let Recv::Item(frame) = rx.recv_timeout(Duration::from_secs(3)) {
        assert!(rx.len() <= 4);
        seqs.push(frame.seq);
        std::thread::sleep(Duration::from_millis(3));
    }
    let end = futures::executor::block_on(streamer.wait());
    println!("file: {} frames, dropped {}", seqs.len(), m.dropped_backpressure.get());
    assert_eq!(end, StreamEnd::Eos);
    assert_eq!(seqs, (0..377).collect::<Vec<u64>>(), "all 377 frames, in order");
    assert_eq!(m.dropped_backpressure.get(), 0);
}
