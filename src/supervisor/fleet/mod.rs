//! The running set of cameras, changed while running: by the API (add, replace, remove) and by
//! reloading the config file (SIGHUP or `POST /api/reload`), which applies only the difference.
//!
//! The file owns its cameras. The API owns the ones it adds, which are saved in the database's
//! `cameras` table and started again at the next start. On an id clash the file wins: the saved
//! camera is forgotten, with a warning. Each change stops and starts only the cameras it names,
//! so the others keep their pipelines, frames and track ids.
//!
//! Split by job: [`wanted`] is what should run (no I/O, under a plain mutex never held across an
//! await), [`saved`] the database's API cameras, [`runner`] what runs here and the shared
//! models, [`leases`] lease placement. A change writes the database first, with no lock held,
//! then updates the wanted set, then has the runner catch up.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::camera;
use super::renew::Held;
use crate::api::control::{CameraControl, Refused};
pub use crate::api::control::{Diff, Origin};
use crate::cluster::{CameraChanges, Leases, Shard};
use crate::config::{CameraConfig, Config, ConfigError};
use crate::error::{ErrorKind, Kinded, Refusal};
use crate::events::{NewEvent, Store, StoreError};
use crate::metrics::Metrics;
use crate::redact::Redacted;
use crate::status::Registry;
use runner::{Failures, Runner};
use saved::Saved;
use wanted::Wanted;

mod leases;
mod runner;
mod saved;
mod wanted;

/// Why a change to the running cameras was refused.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{}", if field.is_empty() { reason.clone() } else { format!("{field}: {reason}") })]
    Invalid { field: String, reason: String },
    #[error("camera `{0}` already exists")]
    Exists(String),
    #[error("no camera `{0}`")]
    NotFound(String),
    #[error("camera `{id}` is defined in {file}; edit the file and reload")]
    FileOwned { id: String, file: String },
    #[error("there is no config file to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Models(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("vigil is shutting down")]
    Stopping,
    #[error("the database did not answer within {}s; nothing was changed", saved::DB_WAIT.as_secs_f32())]
    DatabaseSlow,
}

impl Kinded for FleetError {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Invalid { .. } => ErrorKind::Refuse(Refusal::Invalid),
            Self::Config(e) => e.kind(),
            Self::NotFound(_) => ErrorKind::Refuse(Refusal::Missing),
            Self::Exists(_) | Self::FileOwned { .. } | Self::NoFile => ErrorKind::Refuse(Refusal::Conflict),
            Self::Models(_) => ErrorKind::Fatal,
            Self::Store(e) => e.kind(),
            Self::Stopping | Self::DatabaseSlow => ErrorKind::Retry,
        }
    }
}

impl From<FleetError> for Refused {
    fn from(e: FleetError) -> Self {
        Self { kind: e.kind(), reason: e.to_string() }
    }
}

/// Which of the wanted cameras run in this process.
pub enum Placement {
    /// Every one: a single process.
    All,
    /// Those whose id hashes to this shard (`--shard i/n`).
    Shard(Shard),
    /// Those whose lease this process holds (`[cluster] leases`).
    Leases(Box<Leases>),
}

/// The running cameras and how to change them.
pub struct Fleet {
    /// The settings other than cameras, as started: models load with them, and a reload that
    /// changes them warns that they need a restart.
    settings: Arc<Config>,
    file: Option<PathBuf>,
    /// `--shard`.
    shard: Option<Shard>,
    /// Whether placement is by leases: a camera runs here while its lease is in `held`.
    by_lease: bool,
    saved: Saved,
    wanted: Mutex<Wanted>,
    runner: Runner,
    /// Where cameras send events; `None` once everything has stopped.
    events: Mutex<Option<mpsc::Sender<NewEvent>>>,
    /// Where API changes are announced to the other processes, in a cluster.
    changes: Option<CameraChanges>,
    /// The lease connection, until the keeper takes it.
    leases: Mutex<Option<Leases>>,
    keeper: Mutex<Option<JoinHandle<()>>>,
    /// Camera leases this process holds (renewed by [`renew`](super::renew)).
    held: Held,
    /// Told when the renewer drops a lease that was lost.
    lost: Arc<Notify>,
    /// Cancelled when shutdown begins: no more changes.
    closing: CancellationToken,
    /// Cancelled once every camera has stopped: the keeper gives the leases back.
    finished: CancellationToken,
}

impl Fleet {
    /// A fleet with no cameras yet; `file` is what a reload reads.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &Config,
        file: Option<PathBuf>,
        placement: Placement,
        store: Store,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        events: mpsc::Sender<NewEvent>,
        shutdown: CancellationToken,
    ) -> Self {
        let (shard, leases) = match placement {
            Placement::All => (None, None),
            Placement::Shard(shard) => (Some(shard), None),
            Placement::Leases(leases) => (None, Some(*leases)),
        };
        let settings = Arc::new(Config { cameras: Vec::new(), ..settings.clone() });
        Self {
            file,
            shard,
            by_lease: leases.is_some(),
            saved: Saved { store, allow_files: settings.server.api_file_sources },
            wanted: Mutex::default(),
            runner: Runner::new(settings.clone(), metrics, registry, shutdown),
            settings,
            events: Mutex::new(Some(events)),
            changes: None,
            leases: Mutex::new(leases),
            keeper: Mutex::default(),
            held: Held::default(),
            lost: Arc::default(),
            closing: CancellationToken::new(),
            finished: CancellationToken::new(),
        }
    }

    /// Announce API changes on `changes`, so the other processes of a cluster pick them up.
    pub fn with_changes(self, changes: CameraChanges) -> Self {
        Self { changes: Some(changes), ..self }
    }

    /// Start the file's cameras, then the ones saved by the API (those this process runs). A file
    /// camera that cannot start is an error; a saved one is skipped with a warning.
    pub async fn start(&self, cameras: Vec<CameraConfig>) -> Result<(), FleetError> {
        self.wanted().set_file(cameras);
        self.refresh_saved().await?;
        for (id, e) in self.sync().await {
            match self.wanted().origin(&id) {
                Some(Origin::File) => return Err(e),
                _ => warn!(camera = %id, "camera added through the API not started: {}", Redacted(&e.to_string())),
            }
        }
        Ok(())
    }

    /// Add a camera from an API body (the fields of a `[[cameras]]` table), save it and start it.
    pub async fn add(&self, body: Value) -> Result<String, FleetError> {
        let (cam, body) = self.saved.parse(body, None)?;
        let id = cam.id.clone();
        self.wanted().begin_add(&id)?;
        self.saved.insert(&cam, &body).await?;
        let wanted = self.wanted().put_api(cam, false);
        if let Err(e) = wanted {
            self.forget_saved(&id).await;
            return Err(e);
        }
        if let Some(e) = self.sync().await.remove(&id) {
            self.wanted().drop_api(&id);
            self.sync().await;
            self.saved.forget(&id).await?;
            return Err(e);
        }
        self.announce(&[(&id, "added")], Origin::Api).await;
        self.tell_cluster(&id).await;
        Ok(id)
    }

    /// Replace an API camera's settings and restart only that camera.
    pub async fn replace(&self, id: &str, body: Value) -> Result<(), FleetError> {
        let (cam, body) = self.saved.parse(body, Some(id))?;
        self.wanted().api_owned(id, &self.file_name())?;
        self.saved.update(&cam, &body).await?;
        self.wanted().put_api(cam, true)?;
        if let Some(e) = self.sync().await.remove(id) {
            return Err(e);
        }
        self.announce(&[(id, "updated")], Origin::Api).await;
        self.tell_cluster(id).await;
        Ok(())
    }

    /// Stop an API camera (its open tracks end) and forget it.
    pub async fn remove(&self, id: &str) -> Result<(), FleetError> {
        self.wanted().api_owned(id, &self.file_name())?;
        self.saved.forget(id).await?;
        self.wanted().drop_api(id);
        self.sync().await;
        self.announce(&[(id, "removed")], Origin::Api).await;
        self.tell_cluster(id).await;
        Ok(())
    }

    /// Tell the other processes that saved camera `id` changed. The change is saved already, so
    /// when Redis is down they still pick it up at their next periodic refresh.
    async fn tell_cluster(&self, id: &str) {
        if let Some(changes) = &self.changes
            && let Err(e) = changes.announce(id).await
        {
            warn!(camera = %id, "cannot announce the change to the other processes; they see it at their next refresh: {e}");
        }
    }

    /// Reload the cameras saved through the API (another process may have changed them), and
    /// start or stop what that changes here.
    pub async fn refresh(&self) {
        if self.closing.is_cancelled() {
            return;
        }
        if let Err(e) = self.refresh_saved().await {
            return warn!("cannot read the cameras added through the API: {e}");
        }
        for (id, e) in self.sync().await {
            warn!(camera = %id, "camera not started: {}", Redacted(&e.to_string()));
        }
    }

    /// Re-read the config file and apply the difference to the file's cameras. An invalid file
    /// changes nothing.
    pub async fn reload(&self) -> Result<Diff, FleetError> {
        let result = match &self.file {
            None => Err(FleetError::NoFile),
            Some(path) => match Config::load(path) {
                Ok(config) => self.apply(config).await,
                Err(e) => Err(e.into()),
            },
        };
        if let Err(e) = &result {
            error!("reload refused, the running cameras are unchanged: {}", Redacted(&e.to_string()));
        }
        result
    }

    /// Bring the file's cameras in line with `config`.
    async fn apply(&self, config: Config) -> Result<Diff, FleetError> {
        let restart_needed = wanted::settings_changed(&self.settings, &config);
        for section in &restart_needed {
            warn!("[{section}] changed in {}; it takes effect at the next start", self.file_name());
        }
        let (mut diff, taken) = {
            let mut wanted = self.wanted();
            wanted.open()?;
            wanted.set_file(config.cameras)
        };
        diff.restart_needed = restart_needed;
        for id in taken {
            warn!(camera = %id, "camera added through the API is now in {}; the file wins", self.file_name());
            self.forget_saved(&id).await;
        }
        diff.failed = self.sync().await.into_iter().map(|(id, e)| (id, Redacted(&e.to_string()).to_string())).collect();
        for (id, reason) in &diff.failed {
            error!(camera = %id, "camera from the reloaded file not started: {reason}");
        }
        let changes: Vec<(&str, &str)> =
            [("removed", &diff.removed), ("updated", &diff.restarted), ("added", &diff.added)]
                .into_iter()
                .flat_map(|(change, ids)| ids.iter().map(move |id| (id.as_str(), change)))
                .collect();
        self.announce(&changes, Origin::File).await;
        info!(added = ?diff.added, removed = ?diff.removed, restarted = ?diff.restarted, unchanged = diff.unchanged.len(), "config reloaded");
        Ok(diff)
    }

    /// Where camera `id`'s settings come from, and whether it runs in this process; `None` if
    /// no such camera is wanted.
    pub fn origin(&self, id: &str) -> Option<(Origin, bool)> {
        let origin = self.wanted().origin(id)?;
        Some((origin, self.runner.is_running(id)))
    }

    /// Under lease placement, keep the leases on a task of its own until [`stop_all`](Self::stop_all).
    pub fn keep_leases(self: &Arc<Self>) {
        let taken = self.leases.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(leases) = taken {
            let task = tokio::spawn(leases::keep(self.clone(), leases));
            *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
    }

    /// Stop every camera, waiting for each to drain, then give up the leases; later changes
    /// are refused.
    pub async fn stop_all(&self) {
        self.closing.cancel();
        self.wanted().close();
        self.sync().await;
        self.events.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.finished.cancel();
        let keeper = self.keeper.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(keeper) = keeper {
            let _ = keeper.await;
        }
    }

    fn wanted(&self) -> MutexGuard<'_, Wanted> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file_name(&self) -> String {
        self.file.as_ref().map_or_else(|| "the config".into(), |p| p.display().to_string())
    }

    /// Whether wanted camera `id` runs in this process.
    fn placed_here(&self, id: &str) -> bool {
        match &self.shard {
            Some(shard) => shard.owns(id),
            None if self.by_lease => self.held.lock().contains_key(id),
            None => true,
        }
    }

    /// Have the runner run the wanted cameras placed here; the ones that could not start.
    async fn sync(&self) -> Failures {
        self.runner
            .sync(|| {
                let placed = self.wanted().placed(|id| self.placed_here(id));
                (placed, self.events.lock().unwrap_or_else(|p| p.into_inner()).clone())
            })
            .await
    }

    /// Merge the cameras saved by the API (possibly by another process) into the wanted set;
    /// the file wins an id clash. A read that an API change here overtook is read again.
    async fn refresh_saved(&self) -> Result<(), FleetError> {
        let merged = loop {
            let generation = self.wanted().generation();
            let saved = self.saved.load().await?;
            if let Some(merged) = self.wanted().merge_saved(saved, generation) {
                break merged;
            }
            if self.closing.is_cancelled() {
                return Err(FleetError::Stopping);
            }
        };
        for (id, e) in merged.invalid {
            warn!(camera = %id, "saved camera is not valid, not started: {}", Redacted(&e.to_string()));
        }
        for id in merged.shadowed {
            warn!(camera = %id, "camera is in {} and was also added through the API; the file wins and the API one is forgotten", self.file_name());
            self.forget_saved(&id).await;
        }
        Ok(())
    }

    /// Forget saved camera `id`, which the file (or a refusal) overrides; a failure is only
    /// warned about, as the next refresh forgets it again.
    async fn forget_saved(&self, id: &str) {
        if let Err(e) = self.saved.forget(id).await {
            warn!(camera = %id, "cannot forget the saved camera yet: {e}");
        }
    }

    /// Send `camera` events for `(id, change)`s, with no lock held: the send may wait for room
    /// in the event queue.
    async fn announce(&self, changes: &[(&str, &str)], origin: Origin) {
        let events = self.events.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(events) = events else { return };
        for (id, change) in changes {
            info!(camera = %id, ?origin, "camera {change}");
            camera::camera_event(&events, id, json!({ "state": change, "source": origin })).await;
        }
    }
}

impl CameraControl for Fleet {
    fn add(&self, body: Value) -> BoxFuture<'_, Result<String, Refused>> {
        Box::pin(async move { Ok(Fleet::add(self, body).await?) })
    }

    fn replace<'a>(&'a self, id: &'a str, body: Value) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(async move { Ok(Fleet::replace(self, id, body).await?) })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(async move { Ok(Fleet::remove(self, id).await?) })
    }

    fn reload(&self) -> BoxFuture<'_, Result<Diff, Refused>> {
        Box::pin(async move { Ok(Fleet::reload(self).await?) })
    }

    fn origin(&self, id: &str) -> Option<(Origin, bool)> {
        Fleet::origin(self, id)
    }
}
