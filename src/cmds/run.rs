//! `vigil run -c FILE`: run the cameras in FILE until SIGINT/SIGTERM; SIGHUP reloads FILE.

use std::path::PathBuf;

use vigil::cluster::Shard;
use vigil::config::Config;
use vigil::supervisor::Scope;

#[derive(clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(short, long, default_value = "cameras.toml")]
    config: PathBuf,
    /// Run only the cameras of shard INDEX of COUNT processes (ids split by hash), for example 0/3;
    /// `auto/COUNT` takes INDEX from HOSTNAME's trailing -N (a Kubernetes StatefulSet pod).
    #[arg(long, value_name = "INDEX/COUNT")]
    shard: Option<Shard>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    super::run_until_signal(config, Scope { file: Some(args.config), shard: args.shard }, async || Ok(()))
}
