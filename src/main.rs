//! The `vigil` command line: dispatch only; each subcommand lives in `cmds/`.

mod cmds;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "vigil", version, about = "Video analytics for camera fleets: RTSP in, events out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the cameras in a config file until SIGINT/SIGTERM.
    Run(cmds::run::Args),
    /// Validate a config file and exit (non-zero with FILE:LINE:COL: reason on error).
    CheckConfig(cmds::check_config::Args),
    /// Serve a sample video over RTSP on 127.0.0.1 and run one camera on it.
    Demo(cmds::demo::Args),
    /// Serve a video file as looping RTSP cameras on 127.0.0.1 (`/cam0`, `/cam1`, …).
    Serve(cmds::serve::Args),
    /// Print saved events as JSON lines, oldest first (`--since TIME` or `--after-id N`).
    Replay(cmds::replay::Args),
    /// Read licence plates in still images.
    Anpr(cmds::anpr::Args),
    /// Measured reports: `vigil bench pipeline` (throughput against the raw limits), `vigil bench anpr DIR…` (plate accuracy).
    Bench(cmds::bench::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_env("VIGIL_LOG").unwrap_or_else(|_| EnvFilter::new("info,ort=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let writer = || vigil::redact::RedactedStderr;
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer).init();
    let result = match cli.command {
        Command::Run(args) => cmds::run::run(args),
        Command::CheckConfig(args) => cmds::check_config::run(args),
        Command::Demo(args) => cmds::demo::run(args),
        Command::Serve(args) => cmds::serve::run(args),
        Command::Replay(args) => cmds::replay::run(args),
        Command::Anpr(args) => cmds::anpr::run(args),
        Command::Bench(args) => cmds::bench::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", vigil::redact::redact(&format!("{e:#}")));
            std::process::ExitCode::FAILURE
        }
    }
}
