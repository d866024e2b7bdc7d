//! Retention: deletes published events older than `storage.retention_days`, with their
//! snapshot files, once an hour.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Store, StoreError};

/// How often the sweep runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Delete what is older than `days`; returns how many events went.
pub async fn sweep(store: &Store, snapshots_dir: &Path, days: u32) -> Result<usize, StoreError> {
    let cutoff = Utc::now() - chrono::Duration::days(days.into());
    let deleted = store.delete_before(&cutoff).await?;
    for rel in deleted.iter().flatten() {
        match tokio::fs::remove_file(snapshots_dir.join(rel)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot delete snapshot {rel}: {e}"),
        }
    }
    Ok(deleted.len())
}

/// Sweep now and then every hour until shutdown.
pub async fn run(store: Store, snapshots_dir: std::path::PathBuf, days: u32, shutdown: CancellationToken) {
    loop {
        match sweep(&store, &snapshots_dir, days).await {
            Ok(0) => {}
            Ok(n) => info!(events = n, days, "retention: deleted old events"),
            Err(e) => warn!("retention sweep failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
