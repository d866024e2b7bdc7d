//! The supervisor: starts the event path (recorder, publisher, webhooks), the [`fleet`] of cameras (one task
//! each, see [`camera`]) and the HTTP API, applies config reloads on SIGHUP, and shuts everything
//! down in order.
//!
//! One camera failing never touches another: each has its own pipeline, channel and analysis
//! thread, and only shares the event queue.

mod camera;
pub mod fleet;
mod keeper;
mod renew;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{self, ApiState};
use crate::cluster::{CameraChanges, Leases, Shard};
use crate::config::Config;
use crate::events::{Publisher, Recorder, Store, Webhook, retention};
use crate::metrics::Metrics;
use crate::redact::Redacted;
use crate::status::Registry;
use fleet::{Fleet, Placement};

/// Events waiting for the recorder. Kept short because an event can pin a decoded frame until
/// its snapshot is encoded: when the recorder falls behind (CPU overload), analysis waits, the
/// camera channels drop frames, and memory stays flat. A database outage is absorbed by the
/// recorder's own buffer of encoded events, not here.
const EVENT_QUEUE: usize = 128;
/// The API's own database connections (lists, one event, live-stream replays), apart from the
/// ones event writes use, so no number of API clients can hold up the recorder.
const API_DB_CONNECTIONS: u32 = 2;
/// Shutdown takes at most about this long: the recorder writes for up to its `DRAIN` and
/// journals the rest, the publisher gets what is left of [`PUBLISH_BY`], and the API's open
/// streams are cut at the end.
const SHUTDOWN_BY: Duration = Duration::from_millis(4500);
/// The publisher's share of [`SHUTDOWN_BY`]: it may keep publishing until this long after the
/// signal (and for at least [`PUBLISH_MIN`]).
const PUBLISH_BY: Duration = Duration::from_millis(3500);
const PUBLISH_MIN: Duration = Duration::from_millis(300);

/// Where a config came from, and which of its cameras this process runs.
#[derive(Debug, Default)]
pub struct Scope {
    /// Re-read on SIGHUP and `POST /api/reload`.
    pub file: Option<PathBuf>,
    /// `--shard i/n`: only the cameras of this shard.
    pub shard: Option<Shard>,
}

/// Run the cameras in `config` (those `scope` gives this process) until `shutdown` is cancelled,
/// then drain and return.
pub async fn run(
    config: Config,
    scope: Scope,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let placement = match (scope.shard, config.cluster.leases) {
        (Some(_), true) => anyhow::bail!("use either --shard or [cluster] leases, not both"),
        (Some(shard), false) => Placement::Shard(shard),
        (None, true) => Placement::Leases(Box::new(
            Leases::new(&config.redis.url, &config.cluster).context("configuring leases in Redis")?,
        )),
        (None, false) => Placement::All,
    };
    let access = api::Access::from_config(&config.server).map_err(anyhow::Error::msg)?;
    let store = Store::connect(&config.database.url).await.context("starting the event store")?;
    let api_store = Store::connect_reader(&config.database.url, API_DB_CONNECTIONS)
        .await
        .context("opening the API's database connections")?;
    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([server] listen)", config.server.listen))?;
    info!(database = %Redacted(&config.database.url), redis = %Redacted(&config.redis.url), cameras = config.cameras.len(), "vigil running");

    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (live, _) = broadcast::channel(1024);
    let registry = Arc::new(Registry::default());
    let (publish_tx, publish_rx) = mpsc::channel(1024);
    let lagged = Arc::new(AtomicBool::new(false));
    let redis_up = Arc::new(AtomicBool::new(false));
    let publisher =
        Publisher::new(config.redis.clone(), store.clone(), metrics.clone(), lagged.clone(), redis_up.clone())
            .context("configuring Redis")?;
    let publisher = tokio::spawn(publisher.run(publish_rx, shutdown.clone()));
    let recorder = Recorder {
        store: store.clone(),
        snapshots_dir: config.storage.snapshots_dir.clone(),
        journal_dir: config.storage.journal_dir(),
        metrics: metrics.clone(),
        to_publisher: publish_tx,
        lagged,
        live: live.clone(),
    };
    let recorder = tokio::spawn(recorder.run(events_rx, shutdown.clone()));
    let clustered = !matches!(placement, Placement::All);
    for hook in &config.webhooks {
        let mut webhook = Webhook::new(hook.clone(), store.clone(), metrics.clone())
            .with_context(|| format!("setting up webhook {}", hook.key()))?;
        if clustered {
            // One process delivers each webhook; the lease lives on a connection of its own.
            let leases = Leases::new(&config.redis.url, &config.cluster).context("configuring webhook leases")?;
            webhook = webhook.with_lease(leases);
        }
        tokio::spawn(webhook.run(live.subscribe(), shutdown.clone()));
    }
    let policy = retention::Policy {
        snapshots_dir: config.storage.snapshots_dir.clone(),
        days: config.storage.retention_days,
        min_free: (config.storage.min_free_gb.max(0.0) * 1e9) as u64,
        settle: retention::SETTLE,
    };
    tokio::spawn(retention::run(store.clone(), policy, metrics.clone(), shutdown.clone()));

    let mut fleet = Fleet::new(
        &config,
        scope.file,
        placement,
        store.clone(),
        metrics.clone(),
        registry.clone(),
        events_tx,
        shutdown.clone(),
    );
    let follow = if clustered {
        let changes = CameraChanges::new(&config.redis.url, &config.cluster).context("configuring camera changes")?;
        fleet = fleet.with_changes(changes.clone());
        Some(changes)
    } else {
        None
    };
    let fleet = Arc::new(fleet);
    if let Err(e) = fleet.start(config.cameras.clone()).await {
        fleet.stop_all().await;
        return Err(anyhow::Error::new(e).context("starting the cameras"));
    }
    tokio::spawn(reload_on_hangup(fleet.clone(), shutdown.clone()));
    if let Some(changes) = follow {
        tokio::spawn(follow_saved_cameras(fleet.clone(), changes, shutdown.clone()));
    }
    fleet.keep_leases();
    tokio::spawn(sample_rates(registry.clone(), shutdown.clone()));
    let api_state = Arc::new(ApiState {
        store: api_store.clone(),
        metrics: metrics.clone(),
        cameras: registry,
        fleet: fleet.clone(),
        live,
        redis_up,
        snapshots_dir: config.storage.snapshots_dir.clone(),
        access,
        sse_slots: Arc::new(tokio::sync::Semaphore::new(config.server.max_sse_clients)),
        shutdown: shutdown.clone(),
    });
    info!(listen = %config.server.listen, "HTTP API and page up");
    let api = tokio::spawn(api::serve(listener, api_state, shutdown.clone()));

    shutdown.cancelled().await;
    let signalled = tokio::time::Instant::now();
    info!("shutting down: stopping sources, draining frames and events");
    fleet.stop_all().await;
    let _ = recorder.await;
    let abort = publisher.abort_handle();
    let publish_by = (signalled + PUBLISH_BY).max(tokio::time::Instant::now() + PUBLISH_MIN);
    if tokio::time::timeout_at(publish_by, publisher).await.is_err() {
        // Stopped, not left running: its database or Redis call would hold up closing the pools.
        abort.abort();
        warn!("publisher still busy at shutdown; unpublished events stay in the outbox for the next start");
    }
    let api_by = (signalled + SHUTDOWN_BY).max(tokio::time::Instant::now() + PUBLISH_MIN);
    if let Ok(Ok(Err(e))) = tokio::time::timeout_at(api_by, api).await {
        warn!("HTTP API: {e}");
    }
    api_store.close().await;
    store.close().await;
    Ok(())
}

/// Refresh every camera's rates once a second.
async fn sample_rates(registry: Arc<Registry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        registry.sample(last.elapsed());
        last = Instant::now();
    }
}

/// How often a process in a cluster reloads the saved cameras without being told: what it missed
/// while Redis was down reaches it within this.
const REFRESH: Duration = Duration::from_secs(30);

/// In a cluster: reload the cameras saved through the API whenever another process announces a
/// change, and every [`REFRESH`] in any case.
async fn follow_saved_cameras(fleet: Arc<Fleet>, changes: CameraChanges, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut down = crate::throttle::Throttle::default();
    loop {
        let mut told = match changes.subscribe().await {
            Ok(stream) => Some(Box::pin(stream)),
            Err(e) => {
                down.warn(format_args!("cannot follow camera changes in Redis; reloading every {REFRESH:?}: {e}"));
                None
            }
        };
        loop {
            let next = async {
                match &mut told {
                    Some(stream) => futures::StreamExt::next(stream).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {
                    fleet.refresh().await;
                    if told.is_none() {
                        break;
                    }
                }
                id = next => match id {
                    Some(id) => {
                        info!(camera = %id, "a saved camera changed; reloading the saved cameras");
                        fleet.refresh().await;
                    }
                    // The connection dropped: subscribe again, and reload what may have been missed.
                    None => {
                        fleet.refresh().await;
                        break;
                    }
                },
            }
        }
    }
}

/// Reload the config file at each SIGHUP.
async fn reload_on_hangup(fleet: Arc<Fleet>, shutdown: CancellationToken) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => return warn!("cannot listen for SIGHUP; reload through the API only: {e}"),
    };
    loop {
        tokio::select! {
            _ = hangup.recv() => {}
            _ = shutdown.cancelled() => return,
        }
        info!("SIGHUP: reloading the config file");
        // The outcome is logged by the reload itself.
        let _ = fleet.reload().await;
    }
}
