//! Events: the path from "something happened" to a saved row, a JPEG snapshot and a Redis
//! message. The event itself, as consumers see it, is [`crate::contract`].
//!
//! ```text
//! analysis ─NewEvent─► Recorder (snapshot JPEG, DB row) ─Event─► Publisher (Redis, outbox relay)
//! ```
//!
//! Save first, publish second: an event exists once its row is committed; the publisher only ever
//! sends committed rows and marks them published afterwards, so delivery is at least once and
//! consumers dedupe on `id`.

pub mod journal;
pub mod publish;
pub mod recorder;
pub mod retention;
pub mod snapshot;
pub mod store;
pub mod webhook;

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::config::EventsFull;
pub use crate::contract::{Event, EventType, format_ts, parse_ts};
use crate::error::{ErrorKind, Kinded};
use crate::frame::Frame;
use crate::metrics::{CameraMetrics, Metrics};
pub use publish::Publisher;
pub use recorder::Recorder;
pub use store::{EventQuery, PlateMatch, Store, StoreError};
pub use webhook::Webhook;

/// An event the pipeline wants recorded; it gets its id when saved.
pub struct NewEvent {
    pub event_type: EventType,
    pub camera_id: String,
    /// Wall time of the frame.
    pub timestamp: DateTime<Utc>,
    pub frame_number: Option<i64>,
    pub data: serde_json::Value,
    /// The frame to save as the event's JPEG snapshot.
    pub snapshot: Option<Frame>,
    /// A region of the snapshot (`[x1, y1, x2, y2]`) also saved on its own, as `crop_path`.
    pub crop: Option<[u32; 4]>,
    /// Events with the same key are one event: a later one replaces the saved row's data and
    /// snapshot, and is published again under the same id with `revision` + 1 (a plate read
    /// getting better).
    pub key: Option<String>,
}

impl NewEvent {
    /// An event of `event_type` for `camera` at wall time `timestamp`, with no frame behind it.
    pub fn new(event_type: EventType, camera: &str, timestamp: DateTime<Utc>, data: serde_json::Value) -> Self {
        Self {
            event_type,
            camera_id: camera.to_string(),
            timestamp,
            frame_number: None,
            data,
            snapshot: None,
            crop: None,
            key: None,
        }
    }

    /// An event seen in `frame`: its camera, wall time and number.
    pub fn at(event_type: EventType, frame: &Frame, data: serde_json::Value) -> Self {
        Self { frame_number: Some(frame.seq as i64), ..Self::new(event_type, &frame.camera, frame.wall, data) }
    }

    /// Saves `frame` as the event's snapshot.
    pub fn with_snapshot(self, frame: Frame) -> Self {
        Self { snapshot: Some(frame), ..self }
    }

    /// Saves region `[x1, y1, x2, y2]` of the snapshot on its own too.
    pub fn with_crop(self, crop: [u32; 4]) -> Self {
        Self { crop: Some(crop), ..self }
    }

    /// Makes later events with the same `key` revisions of this one.
    pub fn keyed(self, key: String) -> Self {
        Self { key: Some(key), ..self }
    }
}

/// Where a camera's analysis hands its events: the recorder's queue, under the camera's
/// `backpressure.events` policy. Holds the queue weakly, so that a worker given up as hung does
/// not keep it open.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::WeakSender<NewEvent>,
    full: EventsFull,
    camera: CameraMetrics,
    metrics: std::sync::Arc<Metrics>,
}

/// Why an event did not reach the recorder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsent {
    #[error("the event recorder has stopped")]
    Stopped,
    #[error("the recorder's queue was full (backpressure.events = drop-newest)")]
    Dropped,
}

impl Kinded for Unsent {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Stopped => ErrorKind::Fatal,
            Self::Dropped => ErrorKind::Retry,
        }
    }
}

impl EventSink {
    /// A sink into `tx` that does `full` when it is full.
    pub fn new(
        tx: &mpsc::Sender<NewEvent>,
        full: EventsFull,
        camera: CameraMetrics,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self { tx: tx.downgrade(), full, camera, metrics }
    }

    /// Queue `ev` for the recorder from a blocking thread; with `block`, waits for room.
    pub fn send_blocking(&self, ev: NewEvent) -> Result<(), Unsent> {
        let tx = self.tx.upgrade().ok_or(Unsent::Stopped)?;
        match (tx.try_send(ev), self.full) {
            (Ok(()), _) => Ok(()),
            (Err(TrySendError::Closed(_)), _) => Err(Unsent::Stopped),
            (Err(TrySendError::Full(ev)), EventsFull::DropNewest) => {
                self.metrics.event_dropped(ev.event_type.as_str());
                Err(Unsent::Dropped)
            }
            (Err(TrySendError::Full(ev)), EventsFull::Block) => {
                self.camera.events_blocked.inc();
                let waited = Instant::now();
                let sent = tx.blocking_send(ev).map_err(|_| Unsent::Stopped);
                self.camera.events_blocked_ms.inc_by(waited.elapsed().as_millis() as u64);
                sent
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn sink(full: EventsFull) -> (mpsc::Sender<NewEvent>, mpsc::Receiver<NewEvent>, EventSink, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = mpsc::channel(1);
        let sink = EventSink::new(&tx, full, metrics.camera("gate"), metrics.clone());
        (tx, rx, sink, metrics)
    }

    fn event() -> NewEvent {
        NewEvent::new(EventType::Motion, "gate", Utc::now(), serde_json::json!({}))
    }

    #[test]
    fn a_full_queue_blocks_and_counts_the_wait() {
        let (_tx, mut rx, sink, metrics) = sink(EventsFull::Block);
        sink.send_blocking(event()).unwrap();
        let waiter = std::thread::spawn(move || sink.send_blocking(event()));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "the second event waits for room");
        assert!(rx.blocking_recv().is_some());
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert!(rx.blocking_recv().is_some(), "nothing lost");
        let camera = metrics.camera("gate");
        assert_eq!(camera.events_blocked.get(), 1);
        assert!(camera.events_blocked_ms.get() >= 40, "{}", camera.events_blocked_ms.get());
        assert_eq!(metrics.events_dropped("motion"), 0);
    }

    #[test]
    fn drop_newest_never_waits_and_counts_the_drop() {
        let (tx, _rx, sink, metrics) = sink(EventsFull::DropNewest);
        sink.send_blocking(event()).unwrap();
        assert_eq!(sink.send_blocking(event()), Err(Unsent::Dropped));
        assert_eq!((metrics.events_dropped("motion"), metrics.camera("gate").events_blocked.get()), (1, 0));
        drop(tx);
        assert_eq!(sink.send_blocking(event()), Err(Unsent::Stopped), "the recorder's queue is gone");
    }
}
