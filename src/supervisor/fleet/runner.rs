//! The cameras running in this process: started, restarted and stopped to match what the fleet
//! wants, and the models they share, loaded when the first camera needs them.
//!
//! Its lock serialises starts and stops (a stop waits for the camera to drain, a start may load
//! the models), so it is held for seconds at times; it is never held across a database or Redis
//! call, and the API reads nothing under it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use super::FleetError;
use crate::analysis::objects::ObjectStage;
use crate::anpr::PlateReader;
use crate::anpr::queue::ReadQueue;
use crate::config::{CameraConfig, Config};
use crate::detect::Detector;
use crate::events::NewEvent;
use crate::inference::Runtime;
use crate::metrics::Metrics;
use crate::status::{CameraStatus, Registry};
use crate::supervisor::camera;

/// Camera ids that could not start, with why.
pub(super) type Failures = BTreeMap<String, FleetError>;

struct Running {
    /// The settings it runs with.
    config: CameraConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts and stops camera tasks.
pub(super) struct Runner {
    pub settings: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub shutdown: CancellationToken,
    running: tokio::sync::Mutex<BTreeMap<String, Running>>,
    /// Ids running now, readable without waiting for a start or stop to finish.
    ids: Mutex<std::collections::BTreeSet<String>>,
    models: Arc<Mutex<Models>>,
}

impl Runner {
    pub fn new(
        settings: Arc<Config>,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            settings,
            metrics,
            registry,
            shutdown,
            running: Default::default(),
            ids: Default::default(),
            models: Default::default(),
        }
    }

    /// Whether camera `id` runs in this process.
    pub fn is_running(&self, id: &str) -> bool {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).contains(id)
    }

    /// Make the running cameras those `wanted` returns (called once this sync has the lock, so
    /// the last sync always sees the last change): stop the others, restart the ones whose
    /// settings changed, start the missing ones, sending events to `events` (`None` when
    /// shutting down: nothing starts). Returns the ones that could not start.
    pub async fn sync(
        &self,
        wanted: impl FnOnce() -> (BTreeMap<String, CameraConfig>, Option<mpsc::Sender<NewEvent>>),
    ) -> Failures {
        let mut running = self.running.lock().await;
        let (wanted, events) = wanted();
        let stale: Vec<String> = running
            .iter()
            .filter(|(id, r)| wanted.get(*id).is_none_or(|w| *w != r.config))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stale {
            if let Some(r) = running.remove(&id) {
                r.stop.cancel();
                let _ = r.task.await;
            }
            self.registry.remove(&id);
            self.set_ids(&running);
        }
        let mut failures = Failures::new();
        for (id, cam) in wanted {
            if running.contains_key(&id) {
                continue;
            }
            match self.launch(cam, events.clone()).await {
                Ok(r) => {
                    running.insert(id, r);
                    self.set_ids(&running);
                }
                Err(e) => {
                    failures.insert(id, e);
                }
            }
        }
        failures
    }

    fn set_ids(&self, running: &BTreeMap<String, Running>) {
        *self.ids.lock().unwrap_or_else(|p| p.into_inner()) = running.keys().cloned().collect();
    }

    /// Start `cam`.
    async fn launch(&self, cam: CameraConfig, events: Option<mpsc::Sender<NewEvent>>) -> Result<Running, FleetError> {
        let events = events.ok_or(FleetError::Stopping)?;
        let status = self.registry.add(&cam.id, self.metrics.camera(&cam.id));
        let objects = match self.objects(&cam, status.clone()).await {
            Ok(objects) => objects,
            Err(e) => {
                self.registry.remove(&cam.id);
                return Err(e);
            }
        };
        let stop = self.shutdown.child_token();
        let stall: Duration = self.settings.inference.analysis_stall();
        let task = camera::run(cam.clone(), objects, status, events, self.metrics.clone(), stall, stop.clone());
        let task = tokio::spawn(task.instrument(info_span!("camera", id = %cam.id)));
        Ok(Running { config: cam, stop, task })
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

/// The detector and the plate-read queue, loaded when the first camera needs them and shared after.
#[derive(Default)]
struct Models {
    detector: Option<Arc<Detector>>,
    plates: Option<ReadQueue>,
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
            let d = Detector::load(&settings.models, &runtime, &settings.inference, metrics.clone())
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
