//! Retention: keeps the event table and `snapshots_dir` bounded and in agreement.
//!
//! - **Age** (hourly): events older than `retention_days` go, oldest first, in batches (a
//!   batch is one short statement, so SQLite's write lock is never held for a whole sweep),
//!   with their snapshot and crop files.
//! - **Disk guard** (every minute): while the snapshots' filesystem has less than
//!   `min_free_gb` free, the oldest events go, whatever their age, with a warning and
//!   `vigil_retention_deleted_total{reason="disk"}`.
//! - **Agreement** (hourly, after the age pass): a file whose event is gone (a crash between
//!   deleting a row and its files, a write that failed after its files were placed) is
//!   deleted, as are staged files left by a crash and empty folders; a row whose file is gone
//!   (deleted by hand) stops pointing at it.
//!
//! Deletion does not wait for publication: an event older than the retention, or in the way
//! of the disk guard, goes even if Redis never took it (a deployment without Redis would
//! otherwise keep everything).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Store, StoreError};
use crate::metrics::Metrics;

/// How often the age pass and the agreement pass run.
const EVERY: Duration = Duration::from_secs(3600);
/// How often the disk guard looks at free space.
const GUARD_EVERY: Duration = Duration::from_secs(60);
/// Events deleted per statement.
const BATCH: i64 = 500;
/// Files and folders younger than this are left alone: their row may not be committed yet.
pub const SETTLE: Duration = Duration::from_secs(600);

/// What retention keeps: `[storage]`'s settings.
#[derive(Debug, Clone)]
pub struct Policy {
    pub snapshots_dir: PathBuf,
    /// 0 keeps events forever.
    pub days: u32,
    /// Free bytes the disk guard keeps; 0 turns it off.
    pub min_free: u64,
    /// [`SETTLE`], except in tests.
    pub settle: Duration,
}

/// What one pass deleted or fixed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub events: usize,
    pub files: usize,
    pub orphans: usize,
    pub dangling: usize,
}

/// Delete events older than the policy's days, then bring files and rows into agreement.
pub async fn sweep(store: &Store, policy: &Policy, metrics: &Metrics) -> Result<Swept, StoreError> {
    let mut swept = Swept::default();
    if policy.days > 0 {
        let cutoff = Utc::now() - chrono::Duration::days(policy.days.into());
        loop {
            let batch = store.delete_oldest(Some(&cutoff), BATCH).await?;
            swept.events += batch.len();
            swept.files += remove_files(&policy.snapshots_dir, batch.iter().flatten().flatten()).await;
            metrics.retention_deleted("age", batch.len());
            if (batch.len() as i64) < BATCH {
                break;
            }
        }
    }
    (swept.orphans, swept.dangling) = agree(store, &policy.snapshots_dir, policy.settle).await?;
    Ok(swept)
}

/// While free space is below the policy's minimum, delete the oldest events; how many went.
pub async fn guard_disk(store: &Store, policy: &Policy, metrics: &Metrics) -> Result<usize, StoreError> {
    let mut deleted = 0;
    loop {
        let Some(free) = free_bytes(&policy.snapshots_dir) else { return Ok(deleted) };
        metrics.disk_free_bytes.set(free as i64);
        if policy.min_free == 0 || free >= policy.min_free {
            break;
        }
        let batch = store.delete_oldest(None, BATCH / 5).await?;
        if batch.is_empty() {
            warn!(
                free_bytes = free,
                min_free_bytes = policy.min_free,
                "disk still below min_free_gb with no events left to delete"
            );
            break;
        }
        deleted += batch.len();
        remove_files(&policy.snapshots_dir, batch.iter().flatten().flatten()).await;
        metrics.retention_deleted("disk", batch.len());
    }
    if deleted > 0 {
        warn!(events = deleted, "disk below min_free_gb: deleted the oldest events and their snapshots");
    }
    Ok(deleted)
}

/// Run the passes until shutdown: age and agreement now and hourly, the disk guard each minute.
pub async fn run(store: Store, policy: Policy, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut last_sweep: Option<tokio::time::Instant> = None;
    loop {
        if last_sweep.is_none_or(|t| t.elapsed() >= EVERY) {
            match sweep(&store, &policy, &metrics).await {
                Ok(s) if s == Swept::default() => {}
                Ok(s) => info!(
                    events = s.events,
                    files = s.files,
                    orphan_files = s.orphans,
                    rows_without_file = s.dangling,
                    days = policy.days,
                    "retention sweep"
                ),
                Err(e) => warn!("retention sweep failed: {e}"),
            }
            last_sweep = Some(tokio::time::Instant::now());
        }
        if let Err(e) = guard_disk(&store, &policy, &metrics).await {
            warn!("disk guard failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(GUARD_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Free bytes on the filesystem holding `dir` (or its nearest existing parent).
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Delete files given relative to `dir`; how many existed.
async fn remove_files<'a>(dir: &Path, rels: impl Iterator<Item = &'a String>) -> usize {
    let mut removed = 0;
    for rel in rels {
        match tokio::fs::remove_file(dir.join(rel)).await {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot delete snapshot {rel}: {e}"),
        }
    }
    removed
}

/// Files without a row go, rows without a file stop pointing at it, empty folders go.
/// Returns (files deleted, rows fixed).
async fn agree(store: &Store, dir: &Path, settle: Duration) -> Result<(usize, usize), StoreError> {
    let dir_owned = dir.to_path_buf();
    let files = tokio::task::spawn_blocking(move || snapshot_files(&dir_owned, settle)).await.unwrap_or_default();
    let mut orphans = 0;
    for chunk in files.chunks(BATCH as usize) {
        let ids: Vec<i64> = chunk.iter().filter_map(|f| f.id).collect();
        let known = store.existing_ids(&ids).await?;
        for f in chunk {
            let orphan = match f.id {
                Some(id) => !known.contains(&id),
                // Staged by a write that never finished.
                None => true,
            };
            if orphan && f.settled && tokio::fs::remove_file(&f.path).await.is_ok() {
                orphans += 1;
            }
        }
    }
    let mut dangling = 0;
    let mut after = 0;
    loop {
        let rows = store.with_files(after, BATCH).await?;
        for (id, snapshot, crop) in &rows {
            after = *id;
            let gone = |rel: &Option<String>| rel.as_ref().is_some_and(|r| !dir.join(r).exists());
            let (snapshot_gone, crop_gone) = (gone(snapshot), gone(crop));
            if snapshot_gone || crop_gone {
                store.forget_files(*id, snapshot_gone, crop_gone).await?;
                dangling += 1;
                if snapshot_gone && !crop_gone {
                    // The row no longer names its crop either; the crop would be an orphan.
                    remove_files(dir, crop.iter()).await;
                }
            }
        }
        if (rows.len() as i64) < BATCH {
            break;
        }
    }
    let dir_owned = dir.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || remove_empty_dirs(&dir_owned, settle)).await;
    Ok((orphans, dangling))
}

/// A file under `snapshots_dir/<camera>/<day>/`.
struct SnapshotFile {
    path: PathBuf,
    /// The event id its name carries (`<id>.jpg`, `<id>-crop.jpg`); `None` for a staged file.
    id: Option<i64>,
    /// Old enough that a write in progress cannot own it.
    settled: bool,
}

fn snapshot_files(dir: &Path, settle: Duration) -> Vec<SnapshotFile> {
    let mut out = Vec::new();
    let now = SystemTime::now();
    let children = |p: &Path| std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path());
    for camera in children(dir).filter(|p| p.is_dir()) {
        for day in children(&camera).filter(|p| p.is_dir()) {
            for path in children(&day).filter(|p| p.is_file()) {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
                let id = name
                    .strip_suffix(".jpg")
                    .map(|s| s.strip_suffix("-crop").unwrap_or(s))
                    .and_then(|s| s.parse().ok());
                let staged = name.starts_with('.') && name.ends_with(".tmp");
                if id.is_none() && !staged {
                    // Not ours: leave it.
                    continue;
                }
                out.push(SnapshotFile { id, settled: older_than(&path, now, settle), path });
            }
        }
    }
    out
}

/// Whether `path` was last modified at least `age` before `now`.
fn older_than(path: &Path, now: SystemTime, age: Duration) -> bool {
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    modified.and_then(|t| now.duration_since(t).ok()).is_some_and(|a| a >= age)
}

/// Remove empty day folders, then empty camera folders; settled ones only, so a write that
/// is creating one right now keeps it.
fn remove_empty_dirs(dir: &Path, settle: Duration) {
    let now = SystemTime::now();
    let children = |p: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(p).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect()
    };
    for camera in children(dir) {
        for day in children(&camera).into_iter().filter(|d| older_than(d, now, settle)) {
            // Fails, as it should, on a folder that is not empty.
            let _ = std::fs::remove_dir(&day);
        }
        if older_than(&camera, now, settle) {
            let _ = std::fs::remove_dir(&camera);
        }
    }
}
