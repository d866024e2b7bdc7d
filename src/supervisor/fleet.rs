//! The running set of cameras, changed while running: by the API (add, replace, remove) and by
//! reloading the config file (SIGHUP or `POST /api/reload`), which applies only the difference.
//!
//! The file owns its cameras. The API owns the ones it adds, which are saved in the database's
//! `cameras` table and started again at the next start. On an id clash the file wins: the saved
//! camera is forgotten, with a warning. Each change stops and starts only the cameras it names,
//! so the others keep their pipelines, frames and track ids.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::camera;
use super::renew::{self, Held};
use crate::analysis::objects::ObjectStage;
use crate::anpr::PlateReader;
use crate::anpr::queue::ReadQueue;
use crate::api::control::{CameraControl, Refused};
pub use crate::api::control::{Diff, Origin};
use crate::cluster::{CameraChanges, Leases, Shard};
use crate::config::{CameraConfig, Config, ConfigError, Source};
use crate::detect::Detector;
use crate::error::{ErrorKind, Kinded, Refusal};
use crate::events::{NewEvent, Store, StoreError};
use crate::inference::Runtime;
use crate::metrics::Metrics;
use crate::redact::Redacted;
use crate::status::{CameraStatus, Registry};

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
    #[error("the database did not answer within {}s; nothing was changed", DB_WAIT.as_secs_f32())]
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

/// How long a camera change waits for the database before it is refused: the API answers
/// promptly during an outage, and the fleet's lock is never held for a pool's whole timeout.
const DB_WAIT: Duration = Duration::from_millis(1500);

/// `op` on the database, refused after [`DB_WAIT`].
async fn db<T>(op: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, FleetError> {
    tokio::time::timeout(DB_WAIT, op).await.map_err(|_| FleetError::DatabaseSlow)?.map_err(FleetError::from)
}

/// A camera this deployment should run, from the file or the API.
struct Wanted {
    config: CameraConfig,
    origin: Origin,
}

struct Running {
    /// The settings it runs with.
    config: CameraConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct State {
    wanted: BTreeMap<String, Wanted>,
    /// The wanted cameras that run in this process.
    running: BTreeMap<String, Running>,
    /// The camera leases in Redis, under lease placement.
    leases: Option<Leases>,
    /// Saved cameras that did not parse, warned about once.
    rejected: std::collections::BTreeSet<String>,
    /// Where cameras send events; `None` once everything has stopped.
    events: Option<mpsc::Sender<NewEvent>>,
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

/// The detector and the plate-read queue, loaded when the first camera needs them and shared after.
#[derive(Default)]
struct Models {
    detector: Option<Arc<Detector>>,
    plates: Option<ReadQueue>,
}

/// The running cameras and how to change them.
pub struct Fleet {
    /// The settings other than cameras, as started: models load with them, and a reload that
    /// changes them warns that they need a restart.
    settings: Arc<Config>,
    file: Option<PathBuf>,
    /// `--shard`; lease placement lives in the state, next to the leases held.
    shard: Option<Shard>,
    store: Store,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    models: Arc<Mutex<Models>>,
    state: tokio::sync::Mutex<State>,
    /// Where API changes are announced to the other processes, in a cluster.
    changes: Option<CameraChanges>,
    /// Camera leases this process holds (renewed by [`renew`](super::renew)).
    held: Held,
    /// Told when the renewer drops a lease that was lost.
    lost: Arc<Notify>,
}

/// Camera ids that could not start, with why.
type Failures = BTreeMap<String, FleetError>;

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
        let state = State {
            wanted: BTreeMap::new(),
            running: BTreeMap::new(),
            leases,
            rejected: Default::default(),
            events: Some(events),
        };
        Self {
            settings: Arc::new(Config { cameras: Vec::new(), ..settings.clone() }),
            file,
            shard,
            store,
            metrics,
            registry,
            shutdown,
            models: Arc::default(),
            state: tokio::sync::Mutex::new(state),
            changes: None,
            held: Held::default(),
            lost: Arc::default(),
        }
    }

    /// Announce API changes on `changes`, so the other processes of a cluster pick them up.
    pub fn with_changes(self, changes: CameraChanges) -> Self {
        Self { changes: Some(changes), ..self }
    }

    /// Start the file's cameras, then the ones saved by the API (those this process runs). A file
    /// camera that cannot start is an error; a saved one is skipped with a warning.
    pub async fn start(&self, cameras: Vec<CameraConfig>) -> Result<(), FleetError> {
        let mut state = self.state.lock().await;
        for cam in cameras {
            state.wanted.insert(cam.id.clone(), Wanted { config: cam, origin: Origin::File });
        }
        self.refresh_saved(&mut state).await?;
        for (id, e) in self.sync(&mut state).await {
            match state.wanted.get(&id).map(|w| w.origin) {
                Some(Origin::File) => return Err(e),
                _ => warn!(camera = %id, "camera added through the API not started: {}", Redacted(&e.to_string())),
            }
        }
        Ok(())
    }

    /// Add a camera from an API body (the fields of a `[[cameras]]` table), save it and start it.
    pub async fn add(&self, body: Value) -> Result<String, FleetError> {
        let (cam, body) = parse_body(body, None, self.settings.server.api_file_sources)?;
        let mut state = self.state.lock().await;
        if state.wanted.contains_key(&cam.id) {
            return Err(FleetError::Exists(cam.id));
        }
        db(self.store.save_camera(&cam.id, &body.to_string())).await?;
        let id = cam.id.clone();
        state.wanted.insert(id.clone(), Wanted { config: cam, origin: Origin::Api });
        if let Some(e) = self.sync(&mut state).await.remove(&id) {
            state.wanted.remove(&id);
            db(self.store.forget_camera(&id)).await?;
            return Err(e);
        }
        let events = state.events.clone();
        drop(state);
        announce(events, &[(&id, "added")], Origin::Api).await;
        self.tell_cluster(&id).await;
        Ok(id)
    }

    /// Replace an API camera's settings and restart only that camera.
    pub async fn replace(&self, id: &str, body: Value) -> Result<(), FleetError> {
        let (cam, body) = parse_body(body, Some(id), self.settings.server.api_file_sources)?;
        let mut state = self.state.lock().await;
        self.owned_by_api(&state, id)?;
        db(self.store.save_camera(id, &body.to_string())).await?;
        state.wanted.insert(id.to_string(), Wanted { config: cam, origin: Origin::Api });
        if let Some(e) = self.sync(&mut state).await.remove(id) {
            return Err(e);
        }
        let events = state.events.clone();
        drop(state);
        announce(events, &[(id, "updated")], Origin::Api).await;
        self.tell_cluster(id).await;
        Ok(())
    }

    /// Stop an API camera (its open tracks end) and forget it.
    pub async fn remove(&self, id: &str) -> Result<(), FleetError> {
        let mut state = self.state.lock().await;
        self.owned_by_api(&state, id)?;
        db(self.store.forget_camera(id)).await?;
        state.wanted.remove(id);
        self.sync(&mut state).await;
        let events = state.events.clone();
        drop(state);
        announce(events, &[(id, "removed")], Origin::Api).await;
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
        let mut state = self.state.lock().await;
        if state.events.is_none() {
            return;
        }
        if let Err(e) = self.refresh_saved(&mut state).await {
            return warn!("cannot read the cameras added through the API: {e}");
        }
        for (id, e) in self.sync(&mut state).await {
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
        let mut state = self.state.lock().await;
        let mut diff = Diff { restart_needed: settings_changed(&self.settings, &config), ..Diff::default() };
        for section in &diff.restart_needed {
            warn!("[{section}] changed in {}; it takes effect at the next start", self.file_name());
        }
        let file: BTreeMap<String, CameraConfig> = config.cameras.into_iter().map(|c| (c.id.clone(), c)).collect();
        state.wanted.retain(|id, w| {
            let keep = w.origin == Origin::Api || file.contains_key(id);
            if !keep {
                diff.removed.push(id.clone());
            }
            keep
        });
        for (id, cam) in file {
            match state.wanted.get(&id) {
                Some(w) if w.origin == Origin::File && w.config == cam => diff.unchanged.push(id.clone()),
                Some(w) => {
                    if w.origin == Origin::Api {
                        warn!(camera = %id, "camera added through the API is now in {}; the file wins", self.file_name());
                        db(self.store.forget_camera(&id)).await?;
                    }
                    diff.restarted.push(id.clone());
                }
                None => diff.added.push(id.clone()),
            }
            state.wanted.insert(id, Wanted { config: cam, origin: Origin::File });
        }
        diff.failed =
            self.sync(&mut state).await.into_iter().map(|(id, e)| (id, Redacted(&e.to_string()).to_string())).collect();
        for (id, reason) in &diff.failed {
            error!(camera = %id, "camera from the reloaded file not started: {reason}");
        }
        let events = state.events.clone();
        drop(state);
        let changes: Vec<(&str, &str)> =
            [("removed", &diff.removed), ("updated", &diff.restarted), ("added", &diff.added)]
                .into_iter()
                .flat_map(|(change, ids)| ids.iter().map(move |id| (id.as_str(), change)))
                .collect();
        announce(events, &changes, Origin::File).await;
        info!(added = ?diff.added, removed = ?diff.removed, restarted = ?diff.restarted, unchanged = diff.unchanged.len(), "config reloaded");
        Ok(diff)
    }

    /// Where camera `id`'s settings come from, and whether it runs in this process; `None` if
    /// no such camera is wanted.
    pub async fn origin(&self, id: &str) -> Option<(Origin, bool)> {
        let state = self.state.lock().await;
        state.wanted.get(id).map(|w| (w.origin, state.running.contains_key(id)))
    }

    /// Keep the leases until `shutdown`: renew them on a task of their own, and every third of
    /// a lease (or when one was lost) rebalance, take free cameras and stop the ones lost. Does
    /// nothing unless placement is by leases.
    pub async fn keep_leases(self: Arc<Self>, shutdown: CancellationToken) {
        let Some((period, renewer)) = self.state.lock().await.leases.as_ref().map(|l| (l.lease() / 3, l.twin())) else {
            return;
        };
        match renewer {
            Ok(renewer) => {
                tokio::spawn(renew::run(renewer, self.held.clone(), self.lost.clone(), shutdown.clone()));
            }
            Err(e) => return error!("cannot set up lease renewal; this process takes no cameras: {e}"),
        }
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = self.lost.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            let mut state = self.state.lock().await;
            if state.events.is_none() {
                return;
            }
            if let Err(e) = self.refresh_saved(&mut state).await {
                warn!("cannot read the cameras added through the API: {e}");
            }
            let given_up = self.rebalance(&mut state).await;
            for (id, e) in self.sync(&mut state).await {
                error!(camera = %id, "camera not started: {}", Redacted(&e.to_string()));
            }
            // Only once those cameras have stopped and written their last events.
            if let Some(leases) = &mut state.leases {
                for (id, token) in given_up {
                    let _ = leases.release(&id, token).await;
                }
            }
        }
    }

    /// Stop every camera, waiting for each to drain, and give up its lease; later changes are
    /// refused.
    pub async fn stop_all(&self) {
        let mut state = self.state.lock().await;
        state.wanted.clear();
        self.sync(&mut state).await;
        let held = std::mem::take(&mut *self.held.lock());
        if let Some(leases) = &mut state.leases {
            for (id, token) in held {
                let _ = leases.release(&id, token).await;
            }
            let _ = leases.leave().await;
        }
        state.events = None;
    }

    fn file_name(&self) -> String {
        self.file.as_ref().map_or_else(|| "the config".into(), |p| p.display().to_string())
    }

    fn owned_by_api(&self, state: &State, id: &str) -> Result<(), FleetError> {
        match state.wanted.get(id).map(|w| w.origin) {
            None => Err(FleetError::NotFound(id.into())),
            Some(Origin::File) => Err(FleetError::FileOwned { id: id.into(), file: self.file_name() }),
            Some(Origin::Api) => Ok(()),
        }
    }

    /// Whether wanted camera `id` runs in this process.
    fn placed_here(&self, state: &State, id: &str) -> bool {
        match (&self.shard, &state.leases) {
            (Some(shard), _) => shard.owns(id),
            (None, Some(_)) => self.held.lock().contains_key(id),
            (None, None) => true,
        }
    }

    /// Make the running set match the wanted cameras placed here: stop the others, restart the
    /// ones whose settings changed, start the missing ones. Returns the ones that could not start.
    async fn sync(&self, state: &mut State) -> Failures {
        let stale: Vec<String> = state
            .running
            .iter()
            .filter(|(id, r)| {
                !self.placed_here(state, id) || state.wanted.get(*id).is_none_or(|w| w.config != r.config)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(r) = state.running.remove(&id) {
                r.stop.cancel();
                let _ = r.task.await;
            }
            self.registry.remove(&id);
        }
        let missing: Vec<CameraConfig> = state
            .wanted
            .iter()
            .filter(|(id, _)| self.placed_here(state, id) && !state.running.contains_key(*id))
            .map(|(_, w)| w.config.clone())
            .collect();
        let mut failures = Failures::new();
        for cam in missing {
            let id = cam.id.clone();
            match self.launch(state, cam).await {
                Ok(running) => {
                    state.running.insert(id, running);
                }
                Err(e) => {
                    failures.insert(id, e);
                }
            }
        }
        failures
    }

    /// Start `cam`.
    async fn launch(&self, state: &State, cam: CameraConfig) -> Result<Running, FleetError> {
        let events = state.events.clone().ok_or(FleetError::Stopping)?;
        let status = self.registry.add(&cam.id, self.metrics.camera(&cam.id));
        let objects = match self.objects(&cam, status.clone()).await {
            Ok(objects) => objects,
            Err(e) => {
                self.registry.remove(&cam.id);
                return Err(e);
            }
        };
        let stop = self.shutdown.child_token();
        let stall = self.settings.inference.analysis_stall();
        let task = camera::run(cam.clone(), objects, status, events, self.metrics.clone(), stall, stop.clone());
        let task = tokio::spawn(task.instrument(info_span!("camera", id = %cam.id)));
        Ok(Running { config: cam, stop, task })
    }

    /// Merge the cameras saved by the API (possibly by another process) into the wanted set;
    /// the file wins an id clash.
    async fn refresh_saved(&self, state: &mut State) -> Result<(), FleetError> {
        let saved = db(self.store.saved_cameras()).await?;
        let ids: std::collections::HashSet<&str> = saved.iter().map(|(id, _)| id.as_str()).collect();
        state.wanted.retain(|id, w| w.origin == Origin::File || ids.contains(id.as_str()));
        for (id, body) in &saved {
            if state.wanted.get(id).is_some_and(|w| w.origin == Origin::File) {
                warn!(camera = %id, "camera is in {} and was also added through the API; the file wins and the API one is forgotten", self.file_name());
                db(self.store.forget_camera(id)).await?;
                continue;
            }
            // Checked as an API body again: a row saved by an older version, or written into the
            // database by hand, gets no more than the API would allow today.
            let parsed = serde_json::from_str(body)
                .map_err(|e| FleetError::Invalid { field: String::new(), reason: e.to_string() })
                .and_then(|body| parse_body(body, None, self.settings.server.api_file_sources));
            match parsed {
                Ok((config, _)) => {
                    state.wanted.insert(id.clone(), Wanted { config, origin: Origin::Api });
                }
                Err(e) => {
                    state.wanted.remove(id);
                    if state.rejected.insert(id.clone()) {
                        warn!(camera = %id, "saved camera is not valid, not started: {}", Redacted(&e.to_string()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Give up the leases of cameras no longer wanted, then hold this process's fair share (the
    /// renewer keeps them, and drops the lost ones). Returns the leases to give back once their
    /// cameras have stopped.
    async fn rebalance(&self, state: &mut State) -> Vec<(String, i64)> {
        let Some(leases) = &mut state.leases else { return Vec::new() };
        // Unreachable Redis: the renewer decides when to stop the cameras.
        let Ok(alive) = leases.heartbeat().await.map(|n| n.max(1)) else { return Vec::new() };
        let share = state.wanted.len().div_ceil(alive);
        let (mut given_up, mut free) = (Vec::new(), Vec::new());
        let mut held = {
            let mut held = self.held.lock();
            held.retain(|id, token| {
                let wanted = state.wanted.contains_key(id);
                if !wanted {
                    given_up.push((id.clone(), *token));
                }
                wanted
            });
            while held.len() > share {
                let Some((id, token)) = held.pop_last() else { break };
                info!(camera = %id, share, "handing the camera over to a process with fewer");
                given_up.push((id, token));
            }
            free.extend(state.wanted.keys().filter(|id| !held.contains_key(*id)).cloned());
            held.len()
        };
        // Start from a different camera in each process, so they do not all race for the same.
        let offset = leases.node().bytes().map(usize::from).sum::<usize>() % free.len().max(1);
        free.rotate_left(offset);
        for id in free {
            if held >= share {
                break;
            }
            match leases.acquire(&id).await {
                Ok(Some(token)) => match db(self.store.fence(&id, token)).await {
                    Ok(stored) if stored == token => {
                        info!(camera = %id, token, "lease taken");
                        self.held.lock().insert(id, token);
                        held += 1;
                    }
                    Ok(stored) => {
                        // The database saw later tokens than Redis hands out (Redis was reset).
                        warn!(camera = %id, token, stored, "lease token behind the database fence; raising it");
                        let _ = leases.raise(&id, stored).await;
                        let _ = leases.release(&id, token).await;
                    }
                    Err(e) => {
                        warn!(camera = %id, "cannot fence the camera's events; lease given back: {e}");
                        let _ = leases.release(&id, token).await;
                    }
                },
                Ok(None) => {}
                Err(e) => {
                    warn!("cannot take leases: {e}");
                    break;
                }
            }
        }
        given_up
    }

    /// The camera's object stage, loading the models on first use.
    async fn objects(&self, cam: &CameraConfig, status: Arc<CameraStatus>) -> Result<Option<ObjectStage>, FleetError> {
        if !cam.detection.enabled {
            return Ok(None);
        }
        let (models, settings, metrics, anpr) =
            (self.models.clone(), self.settings.clone(), self.metrics.clone(), cam.anpr.enabled);
        let (detector, plates) = tokio::task::spawn_blocking(move || {
            let mut models = models.lock().unwrap_or_else(|p| p.into_inner());
            models.load(&settings, anpr, metrics)
        })
        .await
        .map_err(|e| FleetError::Models(e.to_string()))??;
        let stage = ObjectStage::new(cam, detector, plates, self.metrics.camera(&cam.id), status)
            .map_err(|reason| FleetError::Invalid { field: "detection".into(), reason })?;
        Ok(Some(stage))
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

    fn origin<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Option<(Origin, bool)>> {
        Box::pin(Fleet::origin(self, id))
    }
}

/// Send `camera` events for `(id, change)`s. Called without the fleet's lock: the send may wait
/// for room in the event queue.
async fn announce(events: Option<mpsc::Sender<NewEvent>>, changes: &[(&str, &str)], origin: Origin) {
    let Some(events) = events else { return };
    for (id, change) in changes {
        info!(camera = %id, ?origin, "camera {change}");
        camera::camera_event(&events, id, json!({ "state": change, "source": origin })).await;
    }
}

impl Models {
    /// The detector, and the plate reader when `anpr`; each loaded once.
    fn load(
        &mut self,
        settings: &Config,
        anpr: bool,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Detector>, Option<ReadQueue>), FleetError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| FleetError::Models(format!("{what}: {e}"));
        let runtime = Runtime::load(&settings.inference).map_err(|e| failed("loading ONNX Runtime", &e))?;
        if self.detector.is_none() {
            let detecting = settings.cameras.iter().filter(|c| c.detection.enabled).count();
            let inference = crate::inference::sized_for(&settings.inference, detecting);
            let runtime = Runtime::load(&inference).map_err(|e| failed("loading ONNX Runtime", &e))?;
            let d = Detector::load(&settings.models, &runtime, &inference, metrics.clone())
                .map_err(|e| failed("loading the object detector", &e))?;
            self.detector = Some(Arc::new(d));
        }
        if anpr && self.plates.is_none() {
            let p = PlateReader::load(&settings.models, &runtime, &settings.inference, metrics)
                .map_err(|e| failed("loading the plate models", &e))?;
            self.plates = Some(ReadQueue::spawn(Arc::new(p)));
        }
        Ok((self.detector.clone().expect("loaded above"), self.plates.clone()))
    }
}

/// The camera in an API body, and the body with its id filled in from `id` (the URL's) if given.
/// A body may name a decoder template but never carry a pipeline, and may read a local file only
/// where `[server] api_file_sources` allows it.
fn parse_body(mut body: Value, id: Option<&str>, allow_files: bool) -> Result<(CameraConfig, Value), FleetError> {
    let invalid = |field: &str, reason: String| FleetError::Invalid { field: field.into(), reason };
    let Some(fields) = body.as_object_mut() else {
        return Err(invalid("", "the body must be a JSON object with the fields of a [[cameras]] table".into()));
    };
    if fields.contains_key("pipeline") {
        return Err(invalid(
            "pipeline",
            "a pipeline cannot be set through the API; name a template in pipelines/ with `decoder`, \
             or set `pipeline` in the config file"
                .into(),
        ));
    }
    if let Some(id) = id {
        let given = fields.get("id").or_else(|| fields.get("camera_id"));
        match given.and_then(Value::as_str) {
            Some(g) if g != id => return Err(invalid("id", format!("`{g}` does not match the URL's `{id}`"))),
            Some(_) => {}
            None => {
                fields.insert("id".into(), id.into());
            }
        }
    }
    let cam = CameraConfig::from_json(body.clone()).map_err(|(field, reason)| invalid(&field, reason))?;
    if !allow_files && matches!(cam.source(), Ok(Source::File(_))) {
        return Err(invalid(
            "url",
            "file:// sources cannot be added through the API unless [server] api_file_sources = true".into(),
        ));
    }
    Ok((cam, body))
}

/// The sections of `new` other than cameras that differ from `old`.
fn settings_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    let mut check = |name, differs: bool| {
        if differs {
            changed.push(name)
        }
    };
    check("database", old.database != new.database);
    check("redis", old.redis != new.redis);
    check("storage", old.storage != new.storage);
    check("server", old.server != new.server);
    check("models", old.models != new.models);
    check("inference", old.inference != new.inference);
    check("webhooks", old.webhooks != new.webhooks);
    changed
}
