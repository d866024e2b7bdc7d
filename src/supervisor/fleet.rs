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

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use super::camera;
use crate::analysis::objects::ObjectStage;
use crate::anpr::PlateReader;
use crate::config::{CameraConfig, Config, ConfigError};
use crate::detect::Detector;
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
}

/// Where a running camera's settings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    File,
    Api,
}

/// What a reload did, by camera id.
#[derive(Debug, Default, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub restarted: Vec<String>,
    pub unchanged: Vec<String>,
    /// Cameras in the file that could not start (the models failed to load, say), with why.
    pub failed: BTreeMap<String, String>,
    /// File sections that changed but only take effect at the next start.
    pub restart_needed: Vec<&'static str>,
}

struct Running {
    config: CameraConfig,
    origin: Origin,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct State {
    running: BTreeMap<String, Running>,
    /// Where cameras send events; `None` once everything has stopped.
    events: Option<mpsc::Sender<NewEvent>>,
}

/// The detector and plate reader, loaded when the first camera needs them and shared after.
#[derive(Default)]
struct Models {
    detector: Option<Arc<Detector>>,
    plates: Option<Arc<PlateReader>>,
}

/// The running cameras and how to change them.
pub struct Fleet {
    /// The settings other than cameras, as started: models load with them, and a reload that
    /// changes them warns that they need a restart.
    settings: Arc<Config>,
    file: Option<PathBuf>,
    store: Store,
    metrics: Arc<Metrics>,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    models: Arc<Mutex<Models>>,
    state: tokio::sync::Mutex<State>,
}

impl Fleet {
    /// A fleet with no cameras yet; `file` is what a reload reads.
    pub fn new(
        settings: &Config,
        file: Option<PathBuf>,
        store: Store,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        events: mpsc::Sender<NewEvent>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            settings: Arc::new(Config { cameras: Vec::new(), ..settings.clone() }),
            file,
            store,
            metrics,
            registry,
            shutdown,
            models: Arc::default(),
            state: tokio::sync::Mutex::new(State { running: BTreeMap::new(), events: Some(events) }),
        }
    }

    /// Start the file's cameras, then the ones saved by the API. A file camera that cannot start
    /// is an error; a saved one is skipped with a warning.
    pub async fn start(&self, cameras: Vec<CameraConfig>) -> Result<(), FleetError> {
        let mut state = self.state.lock().await;
        for cam in cameras {
            self.launch(&mut state, cam, Origin::File).await?;
        }
        for (id, body) in self.store.saved_cameras().await? {
            if state.running.contains_key(&id) {
                warn!(camera = %id, "camera is in {} and was also added through the API; the file wins and the API one is forgotten", self.file_name());
                self.store.forget_camera(&id).await?;
                continue;
            }
            let parsed = serde_json::from_str(&body).map_err(|e| ("".to_string(), e.to_string()));
            let started = match parsed.and_then(CameraConfig::from_json) {
                Ok(cam) => self.launch(&mut state, cam, Origin::Api).await,
                Err((field, reason)) => Err(FleetError::Invalid { field, reason }),
            };
            if let Err(e) = started {
                warn!(camera = %id, "camera added through the API not started: {}", Redacted(&e.to_string()));
            }
        }
        Ok(())
    }

    /// Add a camera from an API body (the fields of a `[[cameras]]` table), save it and start it.
    pub async fn add(&self, body: Value) -> Result<String, FleetError> {
        let (cam, body) = parse_body(body, None)?;
        let mut state = self.state.lock().await;
        if state.running.contains_key(&cam.id) {
            return Err(FleetError::Exists(cam.id));
        }
        self.store.save_camera(&cam.id, &body.to_string()).await?;
        let id = cam.id.clone();
        if let Err(e) = self.launch(&mut state, cam, Origin::Api).await {
            self.store.forget_camera(&id).await?;
            return Err(e);
        }
        self.announce(&state, &id, "added", Origin::Api).await;
        Ok(id)
    }

    /// Replace an API camera's settings and restart only that camera.
    pub async fn replace(&self, id: &str, body: Value) -> Result<(), FleetError> {
        let (cam, body) = parse_body(body, Some(id))?;
        let mut state = self.state.lock().await;
        self.owned_by_api(&state, id)?;
        self.store.save_camera(id, &body.to_string()).await?;
        self.halt(&mut state, id).await;
        self.launch(&mut state, cam, Origin::Api).await?;
        self.announce(&state, id, "updated", Origin::Api).await;
        Ok(())
    }

    /// Stop an API camera (its open tracks end) and forget it.
    pub async fn remove(&self, id: &str) -> Result<(), FleetError> {
        let mut state = self.state.lock().await;
        self.owned_by_api(&state, id)?;
        self.store.forget_camera(id).await?;
        self.halt(&mut state, id).await;
        self.registry.remove(id);
        self.announce(&state, id, "removed", Origin::Api).await;
        Ok(())
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
        let wanted: BTreeMap<String, CameraConfig> = config.cameras.into_iter().map(|c| (c.id.clone(), c)).collect();
        let gone: Vec<String> = state
            .running
            .iter()
            .filter(|(id, r)| r.origin == Origin::File && !wanted.contains_key(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.halt(&mut state, &id).await;
            self.registry.remove(&id);
            self.announce(&state, &id, "removed", Origin::File).await;
            diff.removed.push(id);
        }
        for (id, cam) in wanted {
            match state.running.get(&id) {
                Some(r) if r.origin == Origin::File && r.config == cam => diff.unchanged.push(id),
                Some(r) => {
                    if r.origin == Origin::Api {
                        warn!(camera = %id, "camera added through the API is now in {}; the file wins", self.file_name());
                        self.store.forget_camera(&id).await?;
                    }
                    self.halt(&mut state, &id).await;
                    match self.launch(&mut state, cam, Origin::File).await {
                        Ok(()) => {
                            self.announce(&state, &id, "updated", Origin::File).await;
                            diff.restarted.push(id);
                        }
                        Err(e) => {
                            self.registry.remove(&id);
                            self.announce(&state, &id, "removed", Origin::File).await;
                            diff.failed.insert(id, Redacted(&e.to_string()).to_string());
                        }
                    }
                }
                None => match self.launch(&mut state, cam, Origin::File).await {
                    Ok(()) => {
                        self.announce(&state, &id, "added", Origin::File).await;
                        diff.added.push(id);
                    }
                    Err(e) => {
                        diff.failed.insert(id, Redacted(&e.to_string()).to_string());
                    }
                },
            }
        }
        for (id, reason) in &diff.failed {
            error!(camera = %id, "camera from the reloaded file not started: {reason}");
        }
        info!(added = ?diff.added, removed = ?diff.removed, restarted = ?diff.restarted, unchanged = diff.unchanged.len(), "config reloaded");
        Ok(diff)
    }

    /// Where camera `id`'s settings come from, if it runs.
    pub async fn origin(&self, id: &str) -> Option<Origin> {
        self.state.lock().await.running.get(id).map(|r| r.origin)
    }

    /// Stop every camera, waiting for each to drain; later changes are refused.
    pub async fn stop_all(&self) {
        let mut state = self.state.lock().await;
        let running = std::mem::take(&mut state.running);
        for r in running.values() {
            r.stop.cancel();
        }
        for (_, r) in running {
            let _ = r.task.await;
        }
        state.events = None;
    }

    fn file_name(&self) -> String {
        self.file.as_ref().map_or_else(|| "the config".into(), |p| p.display().to_string())
    }

    fn owned_by_api(&self, state: &State, id: &str) -> Result<(), FleetError> {
        match state.running.get(id).map(|r| r.origin) {
            None => Err(FleetError::NotFound(id.into())),
            Some(Origin::File) => Err(FleetError::FileOwned { id: id.into(), file: self.file_name() }),
            Some(Origin::Api) => Ok(()),
        }
    }

    /// Start `cam` and add it to the running set.
    async fn launch(&self, state: &mut State, cam: CameraConfig, origin: Origin) -> Result<(), FleetError> {
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
        let task = camera::run(cam.clone(), objects, status, events, self.metrics.clone(), stop.clone());
        let task = tokio::spawn(task.instrument(info_span!("camera", id = %cam.id)));
        state.running.insert(cam.id.clone(), Running { config: cam, origin, stop, task });
        Ok(())
    }

    /// Stop camera `id` and wait until its frames and events are drained.
    async fn halt(&self, state: &mut State, id: &str) {
        if let Some(r) = state.running.remove(id) {
            r.stop.cancel();
            let _ = r.task.await;
        }
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

    async fn announce(&self, state: &State, id: &str, change: &str, origin: Origin) {
        if let Some(events) = &state.events {
            info!(camera = %id, ?origin, "camera {change}");
            camera::camera_event(events, id, json!({ "state": change, "source": origin })).await;
        }
    }
}

impl Models {
    /// The detector, and the plate reader when `anpr`; each loaded once.
    fn load(
        &mut self,
        settings: &Config,
        anpr: bool,
        metrics: Arc<Metrics>,
    ) -> Result<(Arc<Detector>, Option<Arc<PlateReader>>), FleetError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| FleetError::Models(format!("{what}: {e}"));
        let runtime = Runtime::load(&settings.inference).map_err(|e| failed("loading ONNX Runtime", &e))?;
        if self.detector.is_none() {
            let d = Detector::load(&settings.models, &runtime, &settings.inference, metrics.clone())
                .map_err(|e| failed("loading the object detector", &e))?;
            self.detector = Some(Arc::new(d));
        }
        if anpr && self.plates.is_none() {
            let p = PlateReader::load(&settings.models, &runtime, &settings.inference, metrics)
                .map_err(|e| failed("loading the plate models", &e))?;
            self.plates = Some(Arc::new(p));
        }
        Ok((self.detector.clone().expect("loaded above"), self.plates.clone()))
    }
}

/// The camera in an API body, and the body with its id filled in from `id` (the URL's) if given.
fn parse_body(mut body: Value, id: Option<&str>) -> Result<(CameraConfig, Value), FleetError> {
    let invalid = |field: &str, reason: String| FleetError::Invalid { field: field.into(), reason };
    let Some(fields) = body.as_object_mut() else {
        return Err(invalid("", "the body must be a JSON object with the fields of a [[cameras]] table".into()));
    };
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
