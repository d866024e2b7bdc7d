//! `vigil anpr [--json] IMAGE…`: read plates in still images with the same plate logic as the
//! cameras, and `vigil bench anpr` (its accuracy report) on top of it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use vigil::anpr::PlateReader;
use vigil::anpr::still::StillReader;
use vigil::config::{InferenceConfig, ModelsConfig, Provider};
use vigil::detect::Detector;
use vigil::inference::manifest::Manifest;
use vigil::inference::{Runtime, Workload, raw_call};
use vigil::metrics::Metrics;
use vigil::plate::Formats;

/// Model and plate-logic options shared by `vigil anpr` and `vigil bench anpr`.
#[derive(clap::Args)]
pub struct Options {
    /// Search the whole image instead of detected vehicles (an ANPR camera's view).
    #[arg(long)]
    pub(crate) dedicated: bool,
    /// Plate format: a regular expression over A–Z0–9 or a preset (eu or one of its countries, br, us); repeatable.
    #[arg(long = "format")]
    pub(crate) formats: Vec<String>,
    /// Plates whose least sure character is below this are not reported.
    #[arg(long, default_value_t = 0.6)]
    pub(crate) min_confidence: f32,
    /// Models directory.
    #[arg(long, default_value = "models")]
    pub(crate) models: PathBuf,
    /// ONNX Runtime execution provider, as `[inference] provider` (falls back to CPU with a warning).
    #[arg(long, value_enum, default_value = "cpu")]
    pub(crate) provider: Provider,
}

#[derive(clap::Args)]
pub struct Args {
    /// One JSON line per image: {"file", "plates": [{"plate", "confidence", "box", "raw"}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    options: Options,
    /// Images (JPEG or PNG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

/// One model call's own cost, see [`Models::raw_costs`].
pub struct RawCost {
    pub model: String,
    pub width: usize,
    pub height: usize,
    pub ms: f64,
}

/// The loaded models.
pub struct Models {
    reader: PlateReader,
    detector: Option<Detector>,
    formats: Formats,
    pub min_confidence: f32,
    /// Model calls and their time, by model.
    pub metrics: Arc<Metrics>,
    runtime: Arc<Runtime>,
    dir: ModelsConfig,
}

impl Models {
    /// Load ONNX Runtime, the plate models and (unless dedicated) the vehicle detector.
    pub fn load(options: &Options) -> anyhow::Result<Self> {
        // One image at a time: the detector gets the one-camera setting.
        let inference = vigil::inference::for_one_caller(&InferenceConfig {
            provider: options.provider,
            ..InferenceConfig::default()
        });
        let models = ModelsConfig { dir: options.models.clone(), ..ModelsConfig::default() };
        let runtime = Runtime::load(&inference)?;
        let metrics = Arc::new(Metrics::new());
        let reader = PlateReader::load(&models, &runtime, &inference, metrics.clone())?;
        let detector = if options.dedicated {
            None
        } else {
            Some(Detector::load(&models, &runtime, &inference, metrics.clone())?)
        };
        let formats = Formats::parse(&options.formats).map_err(anyhow::Error::msg)?;
        Ok(Self { reader, detector, formats, min_confidence: options.min_confidence, metrics, runtime, dir: models })
    }

    /// Each model's own cost here and now ([`raw_call`], best of five, with the sessions' settings
    /// the reader uses) at a typical input: a vehicle's text search, one recogniser line and,
    /// unless dedicated, a detector frame.
    pub fn raw_costs(&self) -> anyhow::Result<Vec<RawCost>> {
        let manifest = Manifest::load(&self.dir)?;
        let inputs = [
            ("text-detect", (512, 384), Workload::Regions),
            ("text-recognise", (320, 48), Workload::Regions),
            ("detect", (416, 416), Workload::Frames),
        ];
        let mut out = Vec::new();
        for (task, (w, h), workload) in inputs {
            let Some(entry) = manifest.models.iter().find(|m| m.task == task) else { continue };
            if task == "detect" && self.detector.is_none() {
                continue;
            }
            let mut session = self.runtime.session(&manifest.path(&entry.file), workload)?;
            let ms = raw_call(&mut session, &[1, 3, h, w], 5)?.as_secs_f64() * 1000.0;
            out.push(RawCost { model: entry.name.clone(), width: w, height: h, ms });
        }
        Ok(out)
    }

    /// Plates in one image file, best first, confident or not.
    pub fn read(&self, path: &Path) -> anyhow::Result<Vec<vigil::anpr::PlateRead>> {
        self.read_image(&Self::open(path)?)
    }

    /// Decode an image file.
    pub fn open(path: &Path) -> anyhow::Result<image::RgbImage> {
        Ok(image::open(path).with_context(|| format!("{}", path.display()))?.to_rgb8())
    }

    /// Plates in a decoded image, best first, confident or not.
    pub fn read_image(&self, image: &image::RgbImage) -> anyhow::Result<Vec<vigil::anpr::PlateRead>> {
        let vehicles = self.detector.as_ref().map(|d| {
            let classes = vigil::config::AnprConfig::default().labels.iter().filter_map(|l| d.class_of(l)).collect();
            (d, classes)
        });
        let still =
            StillReader { reader: &self.reader, vehicles, formats: &self.formats, min_confidence: self.min_confidence };
        Ok(still.read(image)?)
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let models = Models::load(&args.options)?;
    let mut failed = 0;
    for path in &args.images {
        let plates = match models.read(path) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("{e:#}");
                failed += 1;
                continue;
            }
        };
        let confident = plates.iter().filter(|p| p.text.confidence >= models.min_confidence);
        if args.json {
            let plates: Vec<_> = confident
                .map(|p| {
                    json!({
                        "plate": p.text.text,
                        "confidence": (p.text.confidence * 1000.0).round() / 1000.0,
                        "box": p.bbox().map(|v| v.round()),
                        "raw": p.text.raw,
                    })
                })
                .collect();
            println!("{}", json!({ "file": path.display().to_string(), "plates": plates }));
        } else {
            let list: Vec<String> = confident.map(|p| format!("{} ({:.2})", p.text.text, p.text.confidence)).collect();
            println!("{}\t{}", path.display(), if list.is_empty() { "-".into() } else { list.join(" ") });
        }
    }
    anyhow::ensure!(failed == 0, "{failed} image(s) could not be read");
    Ok(())
}
