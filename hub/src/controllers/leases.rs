//! Lease expiry: writes the heartbeats this hub received (a flush period at a time) and
//! marks clusters whose agent stopped renewing as unavailable, with the unreachable taint.

use std::sync::Weak;
use std::time::Duration;

use crate::service::Hub;

/// While the hub lives: flushes the renewals received every quarter interval, and checks
/// leases every half interval (both at most a second apart).
pub async fn run(hub: Weak<Hub>) {
    let Some(interval) = hub.upgrade().map(|h| h.settings().lease_interval) else {
        return;
    };
    let mut flush = tokio::time::interval(
        (interval / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
    );
    let mut check = tokio::time::interval((interval / 2).min(Duration::from_secs(1)));
    for t in [&mut flush, &mut check] {
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = flush.tick() => {
                let Some(h) = hub.upgrade() else { return };
                if let Err(e) = h.flush_leases().await {
                    tracing::warn!(error = %e, "writing lease renewals failed; will retry");
                }
            }
            _ = check.tick() => {
                let Some(h) = hub.upgrade() else { return };
                if let Err(e) = reconcile(&h).await {
                    tracing::debug!(error = %e, "lease check failed; will retry");
                }
            }
        }
    }
}

/// One pass: marks every cluster whose lease ran out; returns how many were marked. A
/// cluster that fails to be marked is tried again on the next pass.
#[tracing::instrument(skip(hub))]
pub async fn reconcile(hub: &Hub) -> crate::service::Result<usize> {
    let mut marked = 0;
    for cluster in hub.expired_leases().await? {
        match hub.mark_lease_expired(&cluster).await {
            Ok(_) => {
                tracing::info!(%cluster, "lease expired; cluster marked unavailable");
                marked += 1;
            }
            Err(e) => tracing::debug!(%cluster, error = %e, "could not mark an expired lease"),
        }
    }
    Ok(marked)
}
