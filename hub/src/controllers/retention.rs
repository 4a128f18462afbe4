//! History retention and space: deletes audit entries and change-log rows past the hub's
//! retention ([`crate::service::retention`]) once a minute, and reclaims the works' replaced
//! versions after enough status writes (checked every [`RECLAIM_CHECK`]). Every hub of a
//! database may run it: a prune deletes rows by a bound, so two hubs pruning at once delete
//! the same rows once, and a vacuum skips a table another hub is vacuuming.

use std::sync::Weak;
use std::time::Duration;

use crate::service::Hub;
use crate::service::retention::StatusWrites;

/// How often the history is pruned.
const EVERY: Duration = Duration::from_secs(60);

/// How often the status writes since the last reclaim are counted.
const RECLAIM_CHECK: Duration = Duration::from_secs(2);

/// While the hub lives: prunes its history every [`EVERY`], reclaims space when due.
pub async fn run(hub: Weak<Hub>) {
    let mut prune = tokio::time::interval(EVERY);
    let mut reclaim = tokio::time::interval(RECLAIM_CHECK);
    for t in [&mut prune, &mut reclaim] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    let mut status_writes = match hub.upgrade() {
        Some(h) => StatusWrites::after(h.index()),
        None => return,
    };
    loop {
        let due = tokio::select! {
            _ = prune.tick() => true,
            _ = reclaim.tick() => false,
        };
        let Some(h) = hub.upgrade() else { return };
        if !due {
            if let Err(e) = h.reclaim_work_space(&mut status_writes).await {
                // Counted afresh: a database that refuses (say, a hub role that does not
                // own the table) is asked again after as many writes, not every few
                // seconds.
                tracing::debug!(error = %e, "reclaiming the works' space failed");
                status_writes = StatusWrites::after(h.index());
            }
            continue;
        }
        match h.prune_history().await {
            Ok(p) if p.audit > 0 || p.changes > 0 => {
                tracing::debug!(
                    audit = p.audit,
                    changes = p.changes,
                    "pruned history past its retention"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning history failed; will retry"),
        }
    }
}
