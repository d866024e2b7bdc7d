//! `vigil run -c FILE`: run the cameras in FILE until SIGINT/SIGTERM; SIGHUP reloads FILE.

use std::path::PathBuf;

use vigil::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(short, long, default_value = "cameras.toml")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    super::run_until_signal(config, Some(args.config), async || Ok(()))
}
