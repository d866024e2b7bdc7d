//! What the API may do to the running cameras. The API depends on this trait, not on the
//! supervisor: the supervisor's fleet implements it and hands the API an `Arc<dyn CameraControl>`,
//! so the imports go one way.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::Value;

use crate::error::ErrorKind;

/// Changes to the running cameras, as the camera routes make them.
pub trait CameraControl: Send + Sync {
    /// Add and start the camera the JSON body describes; its id.
    fn add(&self, body: Value) -> BoxFuture<'_, Result<String, Refused>>;
    /// Replace camera `id`'s settings and restart it.
    fn replace<'a>(&'a self, id: &'a str, body: Value) -> BoxFuture<'a, Result<(), Refused>>;
    /// Stop camera `id` and forget it.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), Refused>>;
    /// Re-read the config file and apply the difference.
    fn reload(&self) -> BoxFuture<'_, Result<Diff, Refused>>;
    /// Where camera `id`'s settings come from and whether it runs in this process; `None` if
    /// no such camera is wanted.
    fn origin(&self, id: &str) -> Option<(Origin, bool)>;
}

/// A change that did not happen: what kind of failure, and why, with no secret in it.
#[derive(Debug)]
pub struct Refused {
    pub kind: ErrorKind,
    pub reason: String,
}

/// Where a camera's settings come from.
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
