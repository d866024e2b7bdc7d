//! Faults injected on request, for the recovery tests; compiled only with the test-only
//! `fault-injection` feature, so release builds carry none of it.
//!
//! `VIGIL_FAULT` lists faults as `KIND@FRAME`, comma-separated, each fired once per process when
//! analysis (of any camera) reaches that many frames in all: `panic@40` panics in analysis,
//! `hang@120` makes analysis sleep for a minute, as a hung call would.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static FRAMES: AtomicU64 = AtomicU64::new(0);
static PENDING: Mutex<Option<Vec<(String, u64)>>> = Mutex::new(None);

/// Count one analysed frame, and fire the fault due at it.
pub fn analysed_frame() {
    let n = FRAMES.fetch_add(1, Ordering::Relaxed) + 1;
    let due = {
        let mut pending = PENDING.lock().unwrap_or_else(|p| p.into_inner());
        let pending = pending.get_or_insert_with(parse);
        pending.iter().position(|(_, at)| *at == n).map(|i| pending.remove(i).0)
    };
    match due.as_deref() {
        Some("panic") => panic!("injected fault: analysis panic at frame {n}"),
        Some("hang") => {
            tracing::warn!("injected fault: analysis hangs at frame {n}");
            std::thread::sleep(Duration::from_secs(60));
        }
        _ => {}
    }
}

fn parse() -> Vec<(String, u64)> {
    let spec = std::env::var("VIGIL_FAULT").unwrap_or_default();
    spec.split(',')
        .filter_map(|f| f.trim().split_once('@'))
        .filter_map(|(kind, at)| Some((kind.to_string(), at.parse().ok()?)))
        .collect()
}
