//! The publisher: sends saved events to Redis (`events`, the templated extra channels and the
//! optional stream) and relays the outbox.
//!
//! Two modes. *Live*: events arrive from the recorder in id order and are published in batches.
//! *Backlog*: after a Redis failure, a skipped hand-off, or at start, the publisher reads
//! unpublished rows from the database in id order until none are left, then goes live again.
//! Either way an event is marked published only after Redis accepted it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Event, Store};
use crate::config::RedisConfig;
use crate::error::{ErrorKind, Kinded};
use crate::metrics::Metrics;
use crate::redact::Redacted;

/// Events published in one Redis round trip.
const BATCH: usize = 256;

/// A failure to publish.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(#[from] super::StoreError),
}

impl Kinded for PublishError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Redis(_) => ErrorKind::Retry,
            Self::Store(e) => e.kind(),
        }
    }
}

impl PublishError {
    /// Counts the failure against the part that failed, and says what waits for it.
    fn count(&self, metrics: &Metrics, redis: &str) -> String {
        match self {
            Self::Redis(_) => {
                metrics.redis_errors.inc();
                format!("cannot publish to redis {redis}, keeping events in the outbox: {self}")
            }
            Self::Store(_) => {
                metrics.db_errors.inc();
                format!("cannot read or mark the outbox in the database, publishing waits for it: {self}")
            }
        }
    }
}

/// Publishes saved events; see the module docs.
pub struct Publisher {
    cfg: RedisConfig,
    store: Store,
    metrics: Arc<Metrics>,
    conn: ConnectionManager,
    lagged: Arc<AtomicBool>,
    /// Whether the last publish reached Redis.
    up: Arc<AtomicBool>,
    /// Highest id known to be published; live events at or below it were sent from the backlog.
    last_id: i64,
}

impl Publisher {
    /// A publisher for `cfg`; connects lazily, so a Redis that is down at start is not an error.
    pub fn new(
        cfg: RedisConfig,
        store: Store,
        metrics: Arc<Metrics>,
        lagged: Arc<AtomicBool>,
        up: Arc<AtomicBool>,
    ) -> Result<Self, PublishError> {
        let client = redis::Client::open(cfg.url.as_str())?;
        let conn_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_lazy_with_config(client, conn_cfg)?;
        Ok(Self { cfg, store, metrics, conn, lagged, up, last_id: 0 })
    }

    /// Publish until the recorder is done (its sender dropped), then flush the outbox once more.
    /// After `shutdown`, a Redis that stays down no longer holds the process: what is left stays
    /// unpublished in the database and goes out at the next start.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let mut backlog = true;
        let mut retry = Duration::from_millis(200);
        let mut down_since_logged = false;
        loop {
            if backlog {
                match self.drain_backlog().await {
                    Ok(()) => {
                        backlog = false;
                        retry = Duration::from_millis(200);
                        if down_since_logged {
                            info!("publishing to redis {} again; outbox drained", Redacted(&self.cfg.url));
                            down_since_logged = false;
                        }
                    }
                    Err(e) => {
                        let what = e.count(&self.metrics, &Redacted(&self.cfg.url).to_string());
                        if !down_since_logged {
                            warn!("{what}");
                            down_since_logged = true;
                        }
                        if shutdown.is_cancelled() && rx.is_closed() {
                            return;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(retry) => {}
                            _ = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
                        }
                        retry = (retry * 2).min(Duration::from_secs(2));
                    }
                }
                continue;
            }
            let first = tokio::select! {
                ev = rx.recv() => ev,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {
                    backlog = self.lagged.swap(false, Ordering::AcqRel);
                    continue;
                }
            };
            let Some(first) = first else {
                // The recorder is done; anything it could not hand over is in the outbox.
                if let Err(e) = self.drain_backlog().await {
                    warn!("outbox not drained at shutdown ({e}); unpublished events go out at the next start");
                }
                return;
            };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            batch.retain(|ev| ev.id > self.last_id);
            self.metrics.outbox_backlog.set(rx.len() as i64 + batch.len() as i64);
            if let Err(e) = self.publish(&batch).await {
                warn!("{}", e.count(&self.metrics, &Redacted(&self.cfg.url).to_string()));
                down_since_logged = true;
                backlog = true;
            } else if self.lagged.swap(false, Ordering::AcqRel) {
                backlog = true;
            }
        }
    }

    /// Publish every unpublished row, oldest first, until none is left.
    async fn drain_backlog(&mut self) -> Result<(), PublishError> {
        loop {
            self.metrics.outbox_backlog.set(self.store.unpublished_count().await?);
            let batch = self.store.unpublished(BATCH as i64).await?;
            if batch.is_empty() {
                return Ok(());
            }
            self.publish(&batch).await?;
        }
    }

    /// Send one batch in a single round trip, then mark it published.
    async fn publish(&mut self, batch: &[Event]) -> Result<(), PublishError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for ev in batch {
            let json = serde_json::to_string(ev).expect("events serialise");
            pipe.publish(&self.cfg.channel, &json).ignore();
            for template in &self.cfg.extra_channels {
                pipe.publish(channel_name(template, ev), &json).ignore();
            }
            if let Some(stream) = &self.cfg.stream {
                pipe.cmd("XADD")
                    .arg(stream)
                    .arg("MAXLEN")
                    .arg("~")
                    .arg(self.cfg.stream_maxlen)
                    .arg("*")
                    .arg("id")
                    .arg(ev.id)
                    .arg("data")
                    .arg(&json)
                    .arg("event")
                    .arg(&json)
                    .ignore();
            }
        }
        if let Err(e) = pipe.query_async::<()>(&mut self.conn).await {
            self.up.store(false, Ordering::Relaxed);
            return Err(e.into());
        }
        self.up.store(true, Ordering::Relaxed);
        let sent: Vec<(i64, i64)> = batch.iter().map(|e| (e.id, e.revision)).collect();
        self.store.mark_published(&sent).await?;
        let now = chrono::Utc::now();
        for ev in batch {
            self.metrics.event_published(ev.event_type.as_str());
            self.metrics.frame_to_publish.observe((now - ev.timestamp).num_microseconds().unwrap_or(0) as f64 / 1e6);
        }
        self.last_id = self.last_id.max(sent.iter().map(|(id, _)| *id).max().unwrap_or(0));
        Ok(())
    }
}

/// Fill `{camera_id}` and `{event_type}` in a channel template.
pub fn channel_name(template: &str, ev: &Event) -> String {
    template.replace("{camera_id}", &ev.camera_id).replace("{event_type}", ev.event_type.as_str())
}
