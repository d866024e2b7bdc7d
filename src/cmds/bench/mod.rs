//! `vigil bench`: measured reports. `anpr`: plate-reading accuracy; `pipeline`: throughput,
//! latency and resources against the raw decode and inference limits measured in the same run.

mod anpr;
mod limits;
mod pipeline;
mod reference;
mod stream;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    report: Report,
}

#[derive(clap::Subcommand)]
enum Report {
    /// Plate-reading accuracy on folders of images with ground truth.
    Anpr(anpr::AnprArgs),
    /// The pipeline on a video: raw decode and inference limits, then 1..N cameras per stage set.
    Pipeline(pipeline::PipelineArgs),
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.report {
        Report::Anpr(a) => anpr::run(a),
        Report::Pipeline(a) => pipeline::run(a),
    }
}

/// What each model that has run has done so far.
struct ModelTime {
    model: String,
    calls: u64,
    /// Items over all calls (a call may batch several).
    inputs: f64,
    secs: f64,
}

fn model_time(metrics: &vigil::metrics::Metrics) -> Vec<ModelTime> {
    use prometheus::core::Collector;
    let inputs = |model: &str| metrics.inference_batch.with_label_values(&[model]).get_sample_sum();
    let mut out = Vec::new();
    for family in metrics.inference_seconds.collect() {
        for m in family.get_metric() {
            let model = m.get_label().iter().find(|l| l.name() == "model").map(|l| l.value().to_string());
            let h = m.get_histogram();
            out.extend(model.map(|model| ModelTime {
                inputs: inputs(&model),
                model,
                calls: h.get_sample_count(),
                secs: h.get_sample_sum(),
            }));
        }
    }
    out
}
