//! Zero copy from the appsink to the analysis stage: in the steady state, no frame-sized Rust
//! allocation happens per frame on the way from the decoder through the channel and motion
//! analysis. A counting global allocator sees every Rust allocation in this test binary
//! (GStreamer's own buffer pools are C allocations and recycle their buffers).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::media;
use vigil::channel::{self, Policy};
use vigil::config::Config;
use vigil::ingest::{FrameSink, SourceHealth, Streamer};
use vigil::metrics::Metrics;

/// Allocations at least this large count as frame-sized (a 768×432 I420 frame is 498 KB).
const LARGE: usize = 64 * 1024;

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGE_ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE && ARMED.load(Ordering::Relaxed) {
            LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= LARGE && ARMED.load(Ordering::Relaxed) {
            LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_reach_analysis_without_a_frame_sized_allocation() {
    let url = format!("file://{}", media("car-detection.mp4").display());
    let toml =
        format!("[[cameras]]\nid = \"cam\"\nurl = \"{url}\"\nloop = true\n[cameras.detection]\nenabled = false\n");
    let cam = Config::parse(&toml, "test").unwrap().cameras.remove(0);
    let all = Arc::new(Metrics::new());
    let metrics = all.camera("cam");
    let (tx, rx) = channel::bounded(8, Policy::Block);
    let sink = FrameSink {
        camera: "cam".into(),
        tx,
        seq: Arc::new(AtomicU64::new(0)),
        metrics: metrics.clone(),
        health: Arc::new(SourceHealth::default()),
        epoch: Instant::now(),
    };
    let (events, mut drained) = tokio::sync::mpsc::channel(1024);
    tokio::spawn(async move { while drained.recv().await.is_some() {} });
    let analysis = {
        let (cam, m) = (cam.clone(), metrics.clone());
        std::thread::spawn(move || {
            let progress = vigil::analysis::Progress::default();
            let generation = progress.next_generation();
            let events = vigil::events::EventSink::new(&events, cam.backpressure.events, m.clone(), all);
            vigil::analysis::run(&cam, &rx, &mut None, &events, &m, &Default::default(), &progress, generation)
        })
    };
    let streamer = Streamer::build(&cam, sink.clone()).unwrap();
    streamer.start().unwrap();

    let analysed = metrics.analysed.clone();
    let wait_for = async |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while analysed.get() < n {
            assert!(Instant::now() < deadline, "only {} frames analysed", analysed.get());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    // Past start-up (caps, pools, the motion detector's buffers), then 300 frames counted.
    wait_for(60).await;
    ARMED.store(true, Ordering::Relaxed);
    let from = metrics.analysed.get();
    wait_for(from + 300).await;
    ARMED.store(false, Ordering::Relaxed);
    let frames = metrics.analysed.get() - from;
    let large = LARGE_ALLOCS.load(Ordering::Relaxed);
    println!("{large} allocations of {LARGE} bytes or more over {frames} frames");
    assert_eq!(large, 0, "frame-sized allocations on the frame path");

    drop(streamer);
    sink.tx.close();
    drop(sink);
    analysis.join().unwrap();
}
