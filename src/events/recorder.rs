//! The recorder: the single writer of events. It encodes snapshots off the async runtime, saves
//! rows in arrival order (so ids follow that order), and hands each saved event to the publisher.
//!
//! It never waits on Redis: if the publisher falls behind, the hand-off is skipped and the
//! publisher finds the row through the outbox instead.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{error, warn};

use super::{Event, NewEvent, Store, snapshot};
use crate::metrics::Metrics;

/// JPEG quality of snapshots.
const JPEG_QUALITY: u8 = 85;

/// Saves events; see the module docs.
pub struct Recorder {
    pub store: Store,
    pub snapshots_dir: PathBuf,
    pub metrics: Arc<Metrics>,
    pub to_publisher: mpsc::Sender<Event>,
    /// Set when a saved event could not be handed to the publisher.
    pub lagged: Arc<AtomicBool>,
    /// Every saved event, for live API subscribers.
    pub live: tokio::sync::broadcast::Sender<Event>,
}

impl Recorder {
    /// Save events until every sender is dropped and the queue is drained.
    pub async fn run(self, mut rx: mpsc::Receiver<NewEvent>) {
        while let Some(ev) = rx.recv().await {
            let jpeg = match ev.snapshot.clone() {
                Some(frame) => {
                    match tokio::task::spawn_blocking(move || snapshot::encode_jpeg(&frame, JPEG_QUALITY)).await {
                        Ok(Ok(bytes)) => Some(bytes),
                        Ok(Err(e)) => {
                            self.metrics.snapshot_errors.inc();
                            warn!(camera = %ev.camera_id, "snapshot not encoded: {e}");
                            None
                        }
                        Err(e) => {
                            self.metrics.snapshot_errors.inc();
                            error!("snapshot task failed: {e}");
                            None
                        }
                    }
                }
                None => None,
            };
            let saved = self.save(&ev, jpeg.as_deref()).await;
            self.metrics.event_saved(saved.event_type.as_str());
            let _ = self.live.send(saved.clone());
            if self.to_publisher.try_send(saved).is_err() {
                self.lagged.store(true, Ordering::Release);
            }
        }
    }

    /// Save, retrying while the database is unreachable: an event is never given up.
    async fn save(&self, ev: &NewEvent, jpeg: Option<&[u8]>) -> Event {
        let mut wait = Duration::from_millis(100);
        loop {
            match self.store.save(ev, jpeg, &self.snapshots_dir).await {
                Ok((saved, snapshot_error)) => {
                    if let Some(e) = snapshot_error {
                        self.metrics.snapshot_errors.inc();
                        warn!(camera = %ev.camera_id, id = saved.id, "snapshot not written: {e}");
                    }
                    return saved;
                }
                Err(e) => {
                    self.metrics.db_errors.inc();
                    error!(camera = %ev.camera_id, "event not saved, retrying in {wait:?}: {e}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
