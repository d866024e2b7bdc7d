//! Webhooks: each `[[webhooks]]` entry gets its own task that reads saved events from the
//! database after its cursor, POSTs the ones its filter takes, in id order, and retries a failed
//! POST with backoff until it goes through (at-least-once, like the Redis outbox).
//!
//! It reads the database, not the publisher's queue, so a slow or dead endpoint holds back only
//! its own cursor, never the pipeline or the Redis path. Saved events wake it at once.
//!
//! In a cluster (`--shard` or `[cluster] leases`) every process runs every webhook, but only the
//! one holding the webhook's lease in Redis delivers; it renews the lease on a task and a
//! connection of its own, and checks it before every POST. A process that takes the lease over
//! starts from the shared cursor in the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Event, Store};
use crate::cluster::Leases;
use crate::config::WebhookConfig;
use crate::metrics::Metrics;
use crate::redact::Redacted;

/// Events read from the database per query.
const PAGE: i64 = 100;
/// The longest wait between retries of one POST.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often an idle webhook looks for events it was not woken for.
const IDLE_POLL: Duration = Duration::from_secs(2);

/// Header carrying `sha256=HEX` of the body, when the webhook has a secret.
pub const SIGNATURE_HEADER: &str = "X-Vigil-Signature";

/// One webhook's delivery task.
pub struct Webhook {
    cfg: WebhookConfig,
    name: String,
    store: Store,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    /// In a cluster: the leases to take this webhook's from.
    leases: Option<Leases>,
    /// Whether this process holds the webhook's lease (always, outside a cluster).
    held: Arc<AtomicBool>,
}

/// How one POST ended.
enum Delivery {
    Done,
    Shutdown,
    /// Another process delivers now.
    LeaseLost,
}

impl Webhook {
    /// A webhook for `cfg`; fails only if the HTTP client cannot be built (TLS setup).
    pub fn new(cfg: WebhookConfig, store: Store, metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(cfg.timeout_secs))
            .user_agent(concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { name: cfg.key(), cfg, store, metrics, client, leases: None, held: Arc::new(AtomicBool::new(true)) })
    }

    /// Deliver only while holding this webhook's lease in `leases` (a cluster).
    pub fn with_lease(mut self, leases: Leases) -> Self {
        self.leases = Some(leases);
        self.held.store(false, Ordering::Release);
        self
    }

    fn holds(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Deliver until `shutdown`; `saved` wakes it when events are saved.
    pub async fn run(mut self, mut saved: broadcast::Receiver<Event>, shutdown: CancellationToken) {
        if let Some(leases) = self.leases.take() {
            let lease = format!("webhook:{}", self.name);
            tokio::spawn(keep_lease(leases, lease, self.held.clone(), shutdown.clone()));
        }
        'lease: loop {
            while !self.holds() {
                if sleep_or_stop(Duration::from_millis(200), &shutdown).await {
                    return;
                }
            }
            let mut cursor = loop {
                match self.store.webhook_cursor(&self.name, self.cfg.legacy_key().as_deref()).await {
                    Ok(c) => break c,
                    Err(e) => {
                        warn!(webhook = %self.name, "cannot read the delivery cursor: {e}");
                        if sleep_or_stop(Duration::from_secs(2), &shutdown).await {
                            return;
                        }
                    }
                }
            };
            info!(webhook = %self.name, after = cursor, "webhook delivering");
            loop {
                let page = match self.store.changed_after(cursor, PAGE).await {
                    Ok(page) => page,
                    Err(e) => {
                        warn!(webhook = %self.name, "cannot read events: {e}");
                        if sleep_or_stop(Duration::from_secs(2), &shutdown).await {
                            return;
                        }
                        continue;
                    }
                };
                if page.is_empty() {
                    tokio::select! {
                        _ = saved.recv() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    if !self.holds() {
                        continue 'lease;
                    }
                    continue;
                }
                let mut lost = false;
                for ev in page {
                    if self.wants(&ev) {
                        match self.deliver(&ev, &shutdown).await {
                            Delivery::Done => {}
                            Delivery::Shutdown => return,
                            Delivery::LeaseLost => {
                                lost = true;
                                break;
                            }
                        }
                    }
                    cursor = ev.seq;
                }
                if let Err(e) = self.store.set_webhook_cursor(&self.name, cursor).await {
                    // Delivered events will be sent again after a restart: at-least-once.
                    warn!(webhook = %self.name, "cannot save the delivery cursor: {e}");
                }
                if lost {
                    info!(webhook = %self.name, "webhook lease lost; another process delivers");
                    continue 'lease;
                }
            }
        }
    }

    fn wants(&self, ev: &Event) -> bool {
        (self.cfg.events.is_empty() || self.cfg.events.iter().any(|t| t == ev.event_type.as_str()))
            && (self.cfg.cameras.is_empty() || self.cfg.cameras.contains(&ev.camera_id))
    }

    /// POST `ev` until the endpoint answers 2xx, `shutdown`, or the lease is lost.
    async fn deliver(&self, ev: &Event, shutdown: &CancellationToken) -> Delivery {
        let body = serde_json::to_vec(ev).expect("events serialise");
        let signature = self.cfg.secret.as_deref().map(|secret| sign(secret.as_bytes(), &body));
        let mut backoff = Duration::from_millis(500);
        let mut failures = 0u32;
        loop {
            if !self.holds() {
                return Delivery::LeaseLost;
            }
            let mut req = self
                .client
                .post(&self.cfg.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Vigil-Event-Id", ev.id)
                .header("X-Vigil-Event-Type", ev.event_type.as_str())
                .body(body.clone());
            if let Some(sig) = &signature {
                req = req.header(SIGNATURE_HEADER, sig);
            }
            let outcome = match req.send().await {
                Ok(res) if res.status().is_success() => Ok(()),
                Ok(res) => Err(format!("answered {}", res.status())),
                Err(e) => Err(Redacted(&e.without_url().to_string()).to_string()),
            };
            match outcome {
                Ok(()) => {
                    self.metrics.webhook_posts.with_label_values(&[self.name.as_str(), "delivered"]).inc();
                    if failures > 0 {
                        info!(webhook = %self.name, id = ev.id, "webhook reachable again after {failures} failed tries");
                    }
                    return Delivery::Done;
                }
                Err(reason) => {
                    self.metrics.webhook_posts.with_label_values(&[self.name.as_str(), "failed"]).inc();
                    failures += 1;
                    // Log the first failure and then every tenth, not every retry.
                    if failures % 10 == 1 {
                        warn!(webhook = %self.name, id = ev.id, retry_in = ?backoff, "webhook POST failed ({failures} tries): {reason}");
                    }
                }
            }
            if sleep_or_stop(backoff, shutdown).await {
                return Delivery::Shutdown;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Take, renew and (at shutdown) give back `lease`, keeping `held` up to date; a Redis error
/// counts as not holding it, so two processes never deliver at once.
async fn keep_lease(mut leases: Leases, lease: String, held: Arc<AtomicBool>, shutdown: CancellationToken) {
    let mut token = None;
    loop {
        let holding = match token {
            None => match leases.acquire(&lease).await {
                Ok(Some(t)) => {
                    token = Some(t);
                    true
                }
                _ => false,
            },
            Some(t) => match leases.renew(&lease, t).await {
                Ok(true) => true,
                Ok(false) => {
                    token = None;
                    false
                }
                Err(_) => false,
            },
        };
        held.store(holding, Ordering::Release);
        if sleep_or_stop(leases.lease() / 3, &shutdown).await {
            held.store(false, Ordering::Release);
            if let Some(t) = token {
                let _ = leases.release(&lease, t).await;
            }
            return;
        }
    }
}

/// Sleep for `wait`; true if `shutdown` came first.
async fn sleep_or_stop(wait: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        _ = shutdown.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    /// RFC 4231 test case 2.
    #[test]
    fn signs_like_rfc_4231() {
        assert_eq!(
            super::sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
