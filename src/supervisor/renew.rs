//! Renews this process's camera leases on a task and a Redis connection of their own, every
//! third of a lease. The fleet's runner holds its lock for seconds at times (models loading,
//! cameras draining); renewals that waited for that lock could let a lease lapse, and another
//! process would take a camera that is running fine here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::cluster::Leases;

/// The camera leases this process holds, with their tokens; shared by the fleet (which takes
/// and gives them up) and the renewer.
#[derive(Clone, Default)]
pub struct Held(Arc<Mutex<BTreeMap<String, i64>>>);

impl Held {
    /// The map; never held across an await.
    pub fn lock(&self) -> MutexGuard<'_, BTreeMap<String, i64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Renew `held` until `shutdown`. Leases found lost, or all of them once Redis has been
/// unreachable for two thirds of a lease (others may take the cameras when the leases run out),
/// are dropped from `held`, and `lost` is notified so the fleet stops those cameras.
pub async fn run(mut leases: Leases, held: Held, lost: Arc<Notify>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(leases.lease() / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reached = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let snapshot: Vec<(String, i64)> = held.lock().iter().map(|(id, t)| (id.clone(), *t)).collect();
        let mut gone = Vec::new();
        let mut failed = None;
        for (id, token) in snapshot.iter().cloned() {
            match leases.renew(&id, token).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(camera = %id, "lease lost; the camera stops here");
                    gone.push((id, token));
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        match failed {
            None => reached = Instant::now(),
            Some(e) if reached.elapsed() > leases.lease() * 2 / 3 && !snapshot.is_empty() => {
                error!("Redis unreachable for most of a lease; stopping this process's cameras: {e}");
                gone = snapshot;
            }
            Some(_) => {}
        }
        if !gone.is_empty() {
            let mut held = held.lock();
            for (id, token) in gone {
                // Only the lease renewed here: the fleet may have taken it again since.
                if held.get(&id) == Some(&token) {
                    held.remove(&id);
                }
            }
            drop(held);
            lost.notify_one();
        }
    }
}
