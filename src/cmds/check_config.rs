//! `vigil check-config FILE`: validate and exit.

use std::path::PathBuf;

use vigil::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    file: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.file)?;
    println!("{}: OK, {} camera(s)", args.file.display(), config.cameras.len());
    Ok(())
}
