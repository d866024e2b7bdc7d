//! `vigil bench`: measured reports. `anpr`: plate-reading accuracy; `pipeline`: throughput,
//! latency and resources against the raw decode and inference limits measured in the same run.

mod anpr;
mod pipeline;
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
