//! The recorder: the single writer of events. It encodes snapshots off the async runtime, up to
//! [`ENCODERS`] at once and ahead of the writes, saves rows in arrival order (so ids follow that
//! order), and hands each saved event to the publisher and to live API subscribers.
//!
//! It never waits on Redis: if the publisher falls behind, the hand-off is skipped and the
//! publisher finds the row through the outbox instead. Nor does anything a camera sends wait on
//! the database: while it is unreachable (or more than [`BUFFER`] events wait), events go to the
//! local [`Journal`] (fsynced, snapshots already encoded) and are written from it, in order and
//! before newer events, once the database answers. The journal outlives the process: at
//! shutdown the recorder writes for at most [`DRAIN`], or not at all with the database down,
//! then journals the rest, and the next start writes those first.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, stream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::journal::{self, Held, Journal};
use super::{Event, EventType, NewEvent, Store, StoreError, snapshot};
use crate::error::{ErrorKind, Kinded};
use crate::metrics::Metrics;

/// JPEG quality of snapshots.
const JPEG_QUALITY: u8 = 85;
/// Snapshots encoded at once. Cameras that see one car together emit their events together;
/// encoding them one after another would put each event behind all the others' encodes.
const ENCODERS: usize = 4;
/// Events held in memory before the rest go to the journal (or, without one, before tracking
/// updates are dropped).
pub const BUFFER: usize = 2000;
/// Event keys remembered for revisions (one per plate-read track); the oldest are forgotten.
const KEYS: usize = 10_000;
/// How long the recorder keeps writing to the database after shutdown begins; what is left
/// then goes to the journal.
pub const DRAIN: Duration = Duration::from_secs(2);

/// Where an event being written came from.
enum From {
    Memory,
    /// The journal's oldest record, of this many bytes.
    Journal(u64),
}

/// Events waiting to be written: memory first, then the journal. While the journal holds
/// anything, new events are appended to it, so the order is arrival order throughout.
struct Queue {
    memory: VecDeque<Held>,
    journal: Option<Journal>,
    metrics: Arc<Metrics>,
    /// Whether the journal's failure was logged (once per run, not per event).
    journal_failed: bool,
}

impl Queue {
    fn open(dir: &std::path::Path, metrics: Arc<Metrics>) -> Self {
        let journal = match Journal::open(dir) {
            Ok(j) => {
                if !j.is_empty() {
                    info!(events = j.len(), dir = %dir.display(), "events journaled by an earlier run; writing them before new ones");
                }
                Some(j)
            }
            Err(e) => {
                error!(dir = %dir.display(), "event journal unavailable; while the database is down, events are held in memory only (up to {BUFFER}): {e}");
                None
            }
        };
        let q = Self { memory: VecDeque::new(), journal, metrics, journal_failed: false };
        q.gauge();
        q
    }

    fn gauge(&self) {
        self.metrics.journal_backlog.set(self.journal.as_ref().map_or(0, |j| j.len() as i64));
    }

    fn journaling(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| !j.is_empty())
    }

    /// Queue an event. With the database `down`, a backlog in the journal, or memory full, it
    /// goes to the journal (memory first, to keep the order).
    fn admit(&mut self, held: Held, down: bool, keys: &Keys) {
        if self.journal.is_some() && (down || self.journaling() || self.memory.len() >= BUFFER) {
            while let Some(older) = self.memory.pop_front() {
                self.journal_one(older, keys);
            }
            self.journal_one(held, keys);
            return;
        }
        if self.memory.len() >= BUFFER {
            // No journal: make room by dropping the oldest tracking update, whose state the
            // track's `end` repeats; past that, the newest event is dropped, not waited for.
            match self.memory.iter().position(droppable) {
                Some(i) => {
                    self.memory.remove(i);
                    self.metrics.event_dropped(EventType::Tracking.as_str());
                }
                None => {
                    self.metrics.event_dropped(held.ev.event_type.as_str());
                    return;
                }
            }
        }
        self.memory.push_back(held);
    }

    fn journal_one(&mut self, mut held: Held, keys: &Keys) {
        let journal = self.journal.as_mut().expect("checked by the caller");
        held.revises = held.revises.or_else(|| held.ev.key.as_deref().and_then(|k| keys.get(k)));
        if let Err(e) = journal.append(&held) {
            self.metrics.event_dropped(held.ev.event_type.as_str());
            if !std::mem::replace(&mut self.journal_failed, true) {
                error!(
                    "event journal not writable; events that cannot reach the database are dropped and counted: {e}"
                );
            }
        }
        self.gauge();
    }

    /// The oldest event, to write.
    fn next(&mut self) -> Option<(Held, From)> {
        if let Some(held) = self.memory.pop_front() {
            return Some((held, From::Memory));
        }
        let (held, size) = self.journal.as_mut()?.peek()?;
        Some((held, From::Journal(size)))
    }

    /// The event from [`Queue::next`] is in the database (or refused for good).
    fn done(&mut self, from: From) {
        if let (From::Journal(size), Some(journal)) = (from, self.journal.as_mut()) {
            if let Err(e) = journal.advance(size) {
                warn!("journal read offset not saved; that event may be written again after a restart: {e}");
            }
            self.gauge();
        }
    }

    /// The event from [`Queue::next`] was not written; it stays first.
    fn retry(&mut self, held: Held, from: From) {
        if let From::Memory = from {
            self.memory.push_front(held);
        }
    }

    /// Shutdown: journal everything still in memory, or count it lost without a journal.
    fn spill(&mut self, keys: &Keys) {
        if self.journal.is_none() {
            if !self.memory.is_empty() {
                error!(
                    events = self.memory.len(),
                    "shutting down with the database unreachable and no journal: events lost"
                );
            }
            for held in self.memory.drain(..) {
                self.metrics.event_dropped(held.ev.event_type.as_str());
            }
            return;
        }
        while let Some(held) = self.memory.pop_front() {
            self.journal_one(held, keys);
        }
    }

    fn close(self) {
        if let Some(journal) = &self.journal {
            if let Err(e) = journal.sync() {
                warn!("journal read offsets not synced; some events may be written twice: {e}");
            }
            if !journal.is_empty() {
                info!(events = journal.len(), "events held in the journal for the next start");
            }
        }
    }
}

fn droppable(held: &Held) -> bool {
    held.ev.event_type == EventType::Tracking && held.ev.data["phase"] == "update"
}

/// Saves events; see the module docs.
pub struct Recorder {
    pub store: Store,
    pub snapshots_dir: PathBuf,
    /// The local journal's directory (`[storage] journal_dir`).
    pub journal_dir: PathBuf,
    pub metrics: Arc<Metrics>,
    pub to_publisher: mpsc::Sender<Event>,
    /// Set when a saved event could not be handed to the publisher.
    pub lagged: Arc<AtomicBool>,
    /// Every saved event, for live API subscribers.
    pub live: tokio::sync::broadcast::Sender<Event>,
}

impl Recorder {
    /// Save events until every sender is dropped and everything received is saved or, after
    /// `shutdown` (see [`DRAIN`]), journaled.
    pub async fn run(self, mut rx: mpsc::Receiver<NewEvent>, shutdown: CancellationToken) {
        let mut incoming =
            std::pin::pin!(stream::poll_fn(move |cx| rx.poll_recv(cx)).map(|ev| self.encode(ev)).buffered(ENCODERS));
        let mut queue = Queue::open(&self.journal_dir, self.metrics.clone());
        let mut open = true;
        let mut wait = Duration::from_millis(100);
        let mut down = false;
        let mut keys = Keys::default();
        let mut deadline: Option<Instant> = None;
        loop {
            if deadline.is_none() && shutdown.is_cancelled() {
                deadline = Some(Instant::now() + DRAIN);
            }
            if deadline.is_some_and(|d| down || Instant::now() >= d) {
                break;
            }
            let Some((held, from)) = queue.next() else {
                if !open {
                    break;
                }
                tokio::select! {
                    item = incoming.next() => match item {
                        Some(item) => queue.admit(item, down, &keys),
                        None => open = false,
                    },
                    _ = shutdown.cancelled(), if deadline.is_none() => {}
                }
                continue;
            };
            // Events keep arriving while the write is in flight; they queue behind it after.
            let mut arrived = Vec::new();
            let written = {
                let revise = held.ev.key.as_deref().and_then(|k| keys.get(k)).or(held.revises);
                let snapshot = held.jpeg.as_deref().map(|full| (full, held.crop.as_deref()));
                let write = async {
                    let w = match revise {
                        Some(id) => self.store.revise(id, &held.ev, snapshot, &self.snapshots_dir).await,
                        None => self.store.save(&held.ev, snapshot, &self.snapshots_dir).await,
                    };
                    (w, revise.is_some())
                };
                tokio::pin!(write);
                loop {
                    let until = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
                    tokio::select! {
                        w = &mut write => break Some(w),
                        item = incoming.next(), if open => match item {
                            Some(item) => arrived.push(item),
                            None => open = false,
                        },
                        _ = tokio::time::sleep_until(until), if deadline.is_some() => break None,
                        _ = shutdown.cancelled(), if deadline.is_none() => {
                            deadline = Some(Instant::now() + DRAIN);
                            // A retry while the database was already down is not waited for.
                            if down {
                                break None;
                            }
                        }
                    }
                }
            };
            match written {
                Some((Ok((saved, snapshot_error)), revised)) => {
                    if let Some(key) = &held.ev.key {
                        keys.insert(key, saved.id);
                    }
                    if let Some(e) = snapshot_error {
                        self.metrics.snapshot_errors.inc();
                        warn!(camera = %saved.camera_id, id = saved.id, "snapshot not written: {e}");
                    }
                    if down {
                        info!(
                            journaled = queue.journal.as_ref().map_or(0, Journal::len),
                            "database reachable again; writing held events"
                        );
                        down = false;
                    }
                    queue.done(from);
                    wait = Duration::from_millis(100);
                    self.handed_on(saved, revised);
                }
                Some((Err(e @ StoreError::Fenced { .. }), _)) => {
                    // Another process holds this camera now; its writes win.
                    warn!("{e}");
                    self.metrics.event_dropped(held.ev.event_type.as_str());
                    queue.done(from);
                }
                Some((Err(e), _)) if e.kind() != ErrorKind::Retry => {
                    // Refused for good: retrying would hold up every event behind this one.
                    self.metrics.db_errors.inc();
                    self.metrics.event_rejected(held.ev.event_type.as_str());
                    let camera = held.ev.camera_id.clone();
                    match journal::set_aside(&self.journal_dir, &held, &e.to_string()) {
                        Ok(path) => {
                            warn!(%camera, "the database refused an event; set aside in {}: {e}", path.display())
                        }
                        Err(io) => {
                            error!(%camera, "the database refused an event, and it could not be set aside ({io}): {e}")
                        }
                    }
                    queue.done(from);
                }
                Some((Err(e), _)) => {
                    self.metrics.db_errors.inc();
                    if !down {
                        error!("database unreachable; holding events in the journal until it answers: {e}");
                        down = true;
                    }
                    queue.retry(held, from);
                }
                // Shutdown came (or its drain time ran out) mid-write; the event is journaled below.
                None => queue.retry(held, from),
            }
            for item in arrived {
                queue.admit(item, down, &keys);
            }
            if down && deadline.is_none() {
                // Keep taking events while waiting, so analysis is not held up.
                let pause = tokio::time::sleep(wait);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        _ = shutdown.cancelled() => break,
                        item = incoming.next(), if open => match item {
                            Some(item) => queue.admit(item, down, &keys),
                            None => open = false,
                        },
                    }
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
        // Stopping with events unwritten: they, and whatever the cameras still send, go to the
        // journal.
        while let Some(item) = incoming.next().await {
            queue.admit(item, true, &keys);
        }
        queue.spill(&keys);
        queue.close();
    }

    /// Encode the event's snapshot on the blocking pool.
    async fn encode(&self, mut ev: NewEvent) -> Held {
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
        Held { ev, jpeg, crop, revises: None }
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
