//! The recorder: the single writer of events. It encodes snapshots off the async runtime, up to
//! [`ENCODERS`] at once and ahead of the writes, saves rows in arrival order (so ids follow that
//! order), and hands each saved event to the publisher and to live API subscribers.
//!
//! It never waits on Redis: if the publisher falls behind, the hand-off is skipped and the
//! publisher finds the row through the outbox instead. While the database is down it holds up
//! to [`BUFFER`] events in memory (snapshots already encoded, so no decoder frames are pinned);
//! when that fills, the oldest tracking `update` events are dropped and counted, and every other
//! event (starts, ends, motion, plates, camera states) waits, which in turn slows analysis
//! rather than losing it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, stream};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use super::{Event, EventType, NewEvent, Store, StoreError, snapshot};
use crate::metrics::Metrics;

/// JPEG quality of snapshots.
const JPEG_QUALITY: u8 = 85;
/// Snapshots encoded at once. Cameras that see one car together emit their events together;
/// encoding them one after another would put each event behind all the others' encodes.
const ENCODERS: usize = 4;
/// Events held in memory while the database is unreachable.
pub const BUFFER: usize = 2000;
/// Event keys remembered for revisions (one per plate-read track); the oldest are forgotten.
const KEYS: usize = 10_000;

/// An event ready to save: its snapshot already encoded.
struct Pending {
    ev: NewEvent,
    jpeg: Option<Vec<u8>>,
    crop: Option<Vec<u8>>,
}

impl Pending {
    /// Only intermediate tracking updates may be dropped; the state they carry is repeated by
    /// the track's `end`.
    fn droppable(&self) -> bool {
        self.ev.event_type == EventType::Tracking && self.ev.data["phase"] == "update"
    }
}

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
    /// Save events until every sender is dropped and everything received is saved.
    pub async fn run(self, mut rx: mpsc::Receiver<NewEvent>) {
        let mut incoming =
            std::pin::pin!(stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|ev| self.encode(ev)).buffered(ENCODERS));
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut open = true;
        let mut wait = Duration::from_millis(100);
        let mut down = false;
        let mut keys = Keys::default();
        while open || !pending.is_empty() {
            if pending.is_empty() {
                match incoming.next().await {
                    Some(item) => self.admit(&mut pending, item),
                    None => {
                        open = false;
                        continue;
                    }
                }
            }
            let front = pending.front().expect("not empty");
            let snapshot = front.jpeg.as_deref().map(|full| (full, front.crop.as_deref()));
            let revise = front.ev.key.as_deref().and_then(|k| keys.get(k));
            let written = match revise {
                Some(id) => self.store.revise(id, &front.ev, snapshot, &self.snapshots_dir).await,
                None => self.store.save(&front.ev, snapshot, &self.snapshots_dir).await,
            };
            match written {
                Ok((saved, snapshot_error)) => {
                    if let Some(key) = &front.ev.key {
                        keys.insert(key, saved.id);
                    }
                    if let Some(e) = snapshot_error {
                        self.metrics.snapshot_errors.inc();
                        warn!(camera = %saved.camera_id, id = saved.id, "snapshot not written: {e}");
                    }
                    if down {
                        info!(held = pending.len(), "database reachable again; writing held events");
                        down = false;
                    }
                    pending.pop_front();
                    wait = Duration::from_millis(100);
                    self.handed_on(saved, revise.is_some());
                }
                Err(e @ StoreError::Fenced { .. }) => {
                    // Another process holds this camera now; its writes win.
                    warn!("{e}");
                    self.metrics.event_dropped(front.ev.event_type.as_str());
                    pending.pop_front();
                }
                Err(e) => {
                    self.metrics.db_errors.inc();
                    if !down {
                        error!("database unreachable, holding events in memory (up to {BUFFER}): {e}");
                        down = true;
                    }
                    // Keep taking events while waiting, so analysis is not held up.
                    let pause = tokio::time::sleep(wait);
                    tokio::pin!(pause);
                    loop {
                        let room = pending.len() < BUFFER || pending.iter().any(Pending::droppable);
                        tokio::select! {
                            _ = &mut pause => break,
                            item = incoming.next(), if open && room => match item {
                                Some(item) => self.admit(&mut pending, item),
                                None => open = false,
                            },
                        }
                    }
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Encode the event's snapshot on the blocking pool.
    async fn encode(&self, mut ev: NewEvent) -> Pending {
        let (jpeg, crop) = match ev.snapshot.take() {
            Some(frame) => {
                let region = ev.crop;
                let encoded = tokio::task::spawn_blocking(move || {
                    let full = snapshot::encode_jpeg(&frame, None, JPEG_QUALITY)?;
                    let crop = region.map(|r| snapshot::encode_jpeg(&frame, Some(r), JPEG_QUALITY)).transpose()?;
                    Ok::<_, snapshot::SnapshotError>((full, crop))
                })
                .await;
                match encoded {
                    Ok(Ok((full, crop))) => (Some(full), crop),
                    Ok(Err(e)) => {
                        self.metrics.snapshot_errors.inc();
                        warn!(camera = %ev.camera_id, "snapshot not encoded: {e}");
                        (None, None)
                    }
                    Err(e) => {
                        self.metrics.snapshot_errors.inc();
                        error!("snapshot task failed: {e}");
                        (None, None)
                    }
                }
            }
            None => (None, None),
        };
        Pending { ev, jpeg, crop }
    }

    /// Queue an encoded event, making room by dropping the oldest update.
    fn admit(&self, pending: &mut VecDeque<Pending>, item: Pending) {
        if pending.len() >= BUFFER {
            match pending.iter().position(Pending::droppable) {
                Some(i) => {
                    pending.remove(i);
                    self.metrics.event_dropped("tracking");
                }
                None if item.droppable() => {
                    self.metrics.event_dropped("tracking");
                    return;
                }
                None => {}
            }
        }
        pending.push_back(item);
    }

    /// Pass a saved event on. A revision goes out through the outbox (the publisher's live path
    /// only moves forward in id).
    fn handed_on(&self, saved: Event, revised: bool) {
        self.metrics.event_saved(saved.event_type.as_str());
        let _ = self.live.send(saved.clone());
        if revised || self.to_publisher.try_send(saved).is_err() {
            self.lagged.store(true, Ordering::Release);
        }
    }
}

/// Saved ids by event key, forgetting the oldest beyond [`KEYS`].
#[derive(Default)]
struct Keys {
    ids: std::collections::HashMap<String, i64>,
    order: VecDeque<String>,
}

impl Keys {
    fn get(&self, key: &str) -> Option<i64> {
        self.ids.get(key).copied()
    }

    fn insert(&mut self, key: &str, id: i64) {
        if self.ids.insert(key.to_string(), id).is_none() {
            self.order.push_back(key.to_string());
            if self.order.len() > KEYS
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}
