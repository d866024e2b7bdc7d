//! Lease placement (`[cluster] leases`): the keeper task owns the Redis connection that takes and
//! gives up camera leases, rebalances every third of a lease (or when one was lost), and at
//! shutdown gives the leases back once their cameras have stopped. The renewer
//! ([`renew`](crate::supervisor::renew)) keeps the leases on a connection of its own.

use std::sync::Arc;

use tracing::{error, info, warn};

use super::Fleet;
use crate::cluster::Leases;
use crate::redact::Redacted;
use crate::supervisor::renew;

/// Keep `leases` until the fleet stops, then give them all back.
pub(super) async fn keep(fleet: Arc<Fleet>, mut leases: Leases) {
    match leases.twin() {
        Ok(renewer) => {
            tokio::spawn(renew::run(renewer, fleet.held.clone(), fleet.lost.clone(), fleet.finished.clone()));
        }
        Err(e) => return error!("cannot set up lease renewal; this process takes no cameras: {e}"),
    }
    let mut tick = tokio::time::interval(leases.lease() / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = fleet.lost.notified() => {}
            _ = fleet.finished.cancelled() => break,
        }
        if fleet.closing.is_cancelled() {
            continue;
        }
        if let Err(e) = fleet.refresh_saved().await {
            warn!("cannot read the cameras added through the API: {e}");
        }
        let given_up = rebalance(&fleet, &mut leases).await;
        for (id, e) in fleet.sync().await {
            error!(camera = %id, "camera not started: {}", Redacted(&e.to_string()));
        }
        // Only once those cameras have stopped and written their last events.
        for (id, token) in given_up {
            let _ = leases.release(&id, token).await;
        }
    }
    let held = std::mem::take(&mut *fleet.held.lock());
    for (id, token) in held {
        let _ = leases.release(&id, token).await;
    }
    let _ = leases.leave().await;
}

/// Give up the leases of cameras no longer wanted, then hold this process's fair share (the
/// renewer keeps them, and drops the lost ones). Returns the leases to give back once their
/// cameras have stopped.
async fn rebalance(fleet: &Fleet, leases: &mut Leases) -> Vec<(String, i64)> {
    // Unreachable Redis: the renewer decides when to stop the cameras.
    let Ok(alive) = leases.heartbeat().await.map(|n| n.max(1)) else { return Vec::new() };
    let (wanted, share) = {
        let wanted = fleet.wanted();
        (wanted.ids().cloned().collect::<std::collections::BTreeSet<String>>(), wanted.len().div_ceil(alive))
    };
    let (mut given_up, mut free) = (Vec::new(), Vec::new());
    let mut held = {
        let mut held = fleet.held.lock();
        held.retain(|id, token| {
            let keep = wanted.contains(id);
            if !keep {
                given_up.push((id.clone(), *token));
            }
            keep
        });
        while held.len() > share {
            let Some((id, token)) = held.pop_last() else { break };
            info!(camera = %id, share, "handing the camera over to a process with fewer");
            given_up.push((id, token));
        }
        free.extend(wanted.iter().filter(|id| !held.contains_key(*id)).cloned());
        held.len()
    };
    // Start from a different camera in each process, so they do not all race for the same.
    let offset = leases.node().bytes().map(usize::from).sum::<usize>() % free.len().max(1);
    free.rotate_left(offset);
    for id in free {
        if held >= share {
            break;
        }
        match leases.acquire(&id).await {
            Ok(Some(token)) => match fleet.saved.fence(&id, token).await {
                Ok(stored) if stored == token => {
                    info!(camera = %id, token, "lease taken");
                    fleet.held.lock().insert(id, token);
                    held += 1;
                }
                Ok(stored) => {
                    // The database saw later tokens than Redis hands out (Redis was reset).
                    warn!(camera = %id, token, stored, "lease token behind the database fence; raising it");
                    let _ = leases.raise(&id, stored).await;
                    let _ = leases.release(&id, token).await;
                }
                Err(e) => {
                    warn!(camera = %id, "cannot fence the camera's events; lease given back: {e}");
                    let _ = leases.release(&id, token).await;
                }
            },
            Ok(None) => {}
            Err(e) => {
                warn!("cannot take leases: {e}");
                break;
            }
        }
    }
    given_up
}
