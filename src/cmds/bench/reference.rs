//! The plain Python pipeline a user would write instead of vigil (`../shared/reference`), run
//! beside vigil's own runs on the same clip and machine, so the report can give a ratio that
//! means something on a noisy machine.
//!
//! N cameras are N reference processes at once (the script is one camera per process), each
//! tried at every intra-op thread count that fits the cores among them, spinning on and off; the
//! best summed fps is the reference.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;
use serde::Serialize;

/// Where the reference script lives relative to the repository, as the team's layout has it.
const DEFAULT_SCRIPT: &str = "../shared/reference/ref_pipeline.py";
/// The environment variable that names the Python to run it with.
pub const PYTHON_ENV: &str = "VIGIL_REFERENCE_PYTHON";

/// A runnable reference: a Python with the script's packages, and the script.
pub struct Reference {
    python: PathBuf,
    script: PathBuf,
}

/// The reference's best run for one camera count.
#[derive(Debug, Clone, Serialize)]
pub struct RefRun {
    pub cameras: usize,
    /// Frames per second, summed over the processes.
    pub fps: f64,
    pub threads: usize,
    pub spinning: bool,
    /// Share of frames that went through its detector.
    pub detected_share: f64,
}

impl Reference {
    /// The reference named by `python` (or `$VIGIL_REFERENCE_PYTHON`), or `None` when neither
    /// is set. A Python that lacks the script's packages is an error, not a silent skip.
    pub fn find(python: Option<PathBuf>, script: Option<PathBuf>) -> anyhow::Result<Option<Self>> {
        let Some(python) = python.or_else(|| std::env::var_os(PYTHON_ENV).map(PathBuf::from)) else {
            return Ok(None);
        };
        let script = script.unwrap_or_else(|| PathBuf::from(DEFAULT_SCRIPT));
        anyhow::ensure!(script.is_file(), "reference script {} not found (pass --reference-script)", script.display());
        let check = Command::new(&python)
            .args(["-c", "import cv2, numpy, onnxruntime, redis"])
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("reference python {}", python.display()))?;
        anyhow::ensure!(
            check.status.success(),
            "reference python {} lacks its packages (see ../shared/reference/README.md): {}",
            python.display(),
            String::from_utf8_lossy(&check.stderr).lines().last().unwrap_or("")
        );
        Ok(Some(Self { python, script }))
    }

    /// `cameras` processes at once on `video`, at each setting; the best summed fps.
    pub fn run(
        &self,
        video: &Path,
        model: &Path,
        cameras: usize,
        detect_fps: f64,
        redis: &str,
    ) -> anyhow::Result<RefRun> {
        let fits = (vigil::inference::cores() / cameras).max(1);
        let mut best: Option<RefRun> = None;
        for threads in super::limits::thread_counts().into_iter().filter(|&t| t <= fits) {
            for spinning in [true, false] {
                let children: Vec<_> = (0..cameras)
                    .map(|i| {
                        let mut cmd = Command::new(&self.python);
                        cmd.arg(&self.script)
                            .arg(video)
                            .args(["--mode", "full", "--threads", &threads.to_string()])
                            .args(["--detect-fps", &detect_fps.to_string(), "--redis", redis])
                            .arg("--model")
                            .arg(model)
                            .args(["--camera-id", &format!("ref-{i}")])
                            .stdout(Stdio::piped())
                            .stderr(Stdio::piped());
                        if !spinning {
                            cmd.arg("--no-spin");
                        }
                        cmd.spawn().context("start the reference")
                    })
                    .collect::<anyhow::Result<_>>()?;
                let (mut fps, mut frames, mut detections) = (0.0, 0.0, 0.0);
                for child in children {
                    let out = child.wait_with_output()?;
                    let text = String::from_utf8_lossy(&out.stdout);
                    let line: serde_json::Value =
                        text.lines().last().and_then(|l| serde_json::from_str(l).ok()).with_context(|| {
                            format!("the reference printed no result: {}", String::from_utf8_lossy(&out.stderr).trim())
                        })?;
                    fps += line["fps"].as_f64().unwrap_or(0.0);
                    frames += line["frames"].as_f64().unwrap_or(0.0);
                    detections += line["detections_run"].as_f64().unwrap_or(0.0);
                }
                let run = RefRun {
                    cameras,
                    fps,
                    threads,
                    spinning,
                    detected_share: if frames > 0.0 { detections / frames } else { 0.0 },
                };
                if best.as_ref().is_none_or(|b| run.fps > b.fps) {
                    best = Some(run);
                }
            }
        }
        best.context("no reference setting ran")
    }
}
