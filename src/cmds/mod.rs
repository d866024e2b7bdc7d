//! One file per subcommand, each with `Args` and `run()`.

pub mod anpr;
pub mod bench;
pub mod check_config;
pub mod demo;
pub mod replay;
pub mod run;
pub mod serve;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vigil::config::Config;
use vigil::metrics::Metrics;
use vigil::supervisor::Scope;

/// A token cancelled at the first SIGINT or SIGTERM; a second signal exits at once.
fn shutdown_on_signal() -> anyhow::Result<CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let t = token.clone();
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        info!("signal received; stopping");
        t.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        warn!("second signal; exiting now");
        std::process::exit(130);
    });
    Ok(token)
}

/// Run a validated config on a fresh runtime until a signal.
fn run_until_signal(
    config: Config,
    scope: Scope,
    before: impl AsyncFnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        before().await?;
        let shutdown = shutdown_on_signal()?;
        vigil::supervisor::run(config, scope, Arc::new(Metrics::new()), shutdown).await
    })?;
    // Analysis threads and GStreamer have been joined; don't wait on stray blocking tasks.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    Ok(())
}
