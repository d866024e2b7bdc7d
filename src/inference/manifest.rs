//! `models/manifest.toml`: which file each model is, and its input/output contract.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::InferenceError;
use crate::config::ModelsConfig;

/// The whole manifest.
#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub models: Vec<ModelEntry>,
    #[serde(skip)]
    pub dir: PathBuf,
}

/// One model.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    pub name: String,
    pub task: String,
    pub file: String,
    /// Label file, one name per line; the line index is the class id.
    pub labels: Option<String>,
    pub input: Option<InputSpec>,
    pub output: Option<OutputSpec>,
    /// IoU above which NMS suppresses a box of the same class.
    pub nms_iou: Option<f32>,
    /// How pixels are scaled for a model fed `(x/255 − mean)/std`.
    pub normalise: Option<Normalise>,
}

/// Per-channel mean and deviation of pixels scaled to 0..1, in the model's channel order.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Normalise {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// A detector's input.
#[derive(Debug, Clone, Deserialize)]
pub struct InputSpec {
    pub width: u32,
    pub height: u32,
    /// Letterbox padding value.
    #[serde(default = "default_pad")]
    pub pad: u8,
}

fn default_pad() -> u8 {
    114
}

/// A detector's output layout.
#[derive(Debug, Clone, Deserialize)]
pub struct OutputSpec {
    /// `yolox`: rows of cx, cy, w, h, obj, classes over grids at `strides`, decode outside the graph.
    pub kind: String,
    #[serde(default)]
    pub strides: Vec<u32>,
}

impl Manifest {
    /// Read `manifest.toml` from the configured models directory. The default relative `models`
    /// also finds the source tree's and the container's copy, so no variable is needed after setup.
    pub fn load(cfg: &ModelsConfig) -> Result<Self, InferenceError> {
        let mut candidates = vec![cfg.dir.clone()];
        if cfg.dir == Path::new("models") {
            candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
            candidates.push(PathBuf::from("/opt/vigil/models"));
        }
        let dir =
            candidates.iter().find(|d| d.join("manifest.toml").is_file()).ok_or_else(|| InferenceError::Model {
                path: cfg.dir.join("manifest.toml").display().to_string(),
                reason: "no model manifest (run scripts/setup, or set [models] dir)".into(),
            })?;
        let path = dir.join("manifest.toml");
        let err = |reason: String| InferenceError::Model { path: path.display().to_string(), reason };
        let text = std::fs::read_to_string(&path).map_err(|e| err(e.to_string()))?;
        let mut manifest: Manifest = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        manifest.dir = dir.clone();
        Ok(manifest)
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Result<&ModelEntry, InferenceError> {
        self.models.iter().find(|m| m.name == name).ok_or_else(|| InferenceError::Model {
            path: self.dir.join("manifest.toml").display().to_string(),
            reason: format!("no model named `{name}`"),
        })
    }

    /// Where a file named in the manifest lives.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}
