//! The cameras added through the API, as saved in the database's `cameras` table: the one place
//! an API body becomes a camera, and every database call the fleet makes, each refused after
//! [`DB_WAIT`] so an outage never holds up the API.

use std::time::Duration;

use serde_json::Value;

use super::FleetError;
use crate::config::{CameraConfig, Source};
use crate::events::{Store, StoreError};

/// How long a camera change waits for the database before it is refused.
pub(super) const DB_WAIT: Duration = Duration::from_millis(1500);

/// `op` on the database, refused after [`DB_WAIT`].
async fn db<T>(op: impl std::future::Future<Output = Result<T, StoreError>>) -> Result<T, FleetError> {
    tokio::time::timeout(DB_WAIT, op).await.map_err(|_| FleetError::DatabaseSlow)?.map_err(FleetError::from)
}

/// The saved API cameras, and the rule for what an API body may ask for.
pub(super) struct Saved {
    pub store: Store,
    /// `[server] api_file_sources`: whether an API camera may read a local file.
    pub allow_files: bool,
}

/// A saved camera as read back: its settings, or why they are no longer accepted.
pub(super) type SavedCamera = (String, Result<CameraConfig, FleetError>);

impl Saved {
    /// Save a new camera; [`FleetError::Exists`] when the id is taken, here or by another
    /// process sharing the database (the insert is the check, so two can never both succeed).
    pub async fn insert(&self, cam: &CameraConfig, body: &Value) -> Result<(), FleetError> {
        match db(self.store.add_camera(&cam.id, &body.to_string())).await? {
            true => Ok(()),
            false => Err(FleetError::Exists(cam.id.clone())),
        }
    }

    /// Replace a saved camera's settings; [`FleetError::NotFound`] when it was removed meanwhile.
    pub async fn update(&self, cam: &CameraConfig, body: &Value) -> Result<(), FleetError> {
        match db(self.store.update_camera(&cam.id, &body.to_string())).await? {
            true => Ok(()),
            false => Err(FleetError::NotFound(cam.id.clone())),
        }
    }

    /// Forget a saved camera (a no-op when it is not saved).
    pub async fn forget(&self, id: &str) -> Result<(), FleetError> {
        db(self.store.forget_camera(id)).await.map(drop)
    }

    /// Every saved camera, each checked as an API body again: a row saved by an older version,
    /// or written into the database by hand, gets no more than the API would allow today.
    pub async fn load(&self) -> Result<Vec<SavedCamera>, FleetError> {
        let rows = db(self.store.saved_cameras()).await?;
        Ok(rows
            .into_iter()
            .map(|(id, body)| {
                let parsed = serde_json::from_str(&body)
                    .map_err(|e| FleetError::Invalid { field: String::new(), reason: e.to_string() })
                    .and_then(|body| self.parse(body, None))
                    .map(|(cam, _)| cam);
                (id, parsed)
            })
            .collect())
    }

    /// Raise camera `id`'s event fence to lease `token`; the fence now stored.
    pub async fn fence(&self, id: &str, token: i64) -> Result<i64, FleetError> {
        db(self.store.fence(id, token)).await
    }

    /// The camera in an API body, and the body with its id filled in from `id` (the URL's) if
    /// given. A body may name a decoder template but never carry a pipeline, and may read a
    /// local file only where `[server] api_file_sources` allows it.
    pub fn parse(&self, mut body: Value, id: Option<&str>) -> Result<(CameraConfig, Value), FleetError> {
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
        if !self.allow_files && matches!(cam.source(), Ok(Source::File(_))) {
            return Err(invalid(
                "url",
                "file:// sources cannot be added through the API unless [server] api_file_sources = true".into(),
            ));
        }
        Ok((cam, body))
    }
}
