//! Controllers that run in one hub per database at a time: the holder of a named lock
//! (a Postgres advisory lock on a connection of its own; a single SQLite hub simply holds
//! it). A hub without the lock tries again every [`LEASE_CHECK`]; the leader checks it
//! still holds it as often, so a dead leader's work is taken over within about that long.

use std::future::Future;
use std::sync::Weak;
use std::time::Duration;

use crate::service::Hub;
use crate::service::follow::Leadership;

/// How often a hub without the lock tries to take it, and the leader checks it still holds
/// it.
pub const LEASE_CHECK: Duration = Duration::from_secs(2);

/// What a led controller is, for its logs and its leader gauge.
pub struct Led {
    /// The lock's name, the same on every hub of the database.
    pub lock: &'static str,
    /// What the leader does, for the log: "runs the fleet controllers".
    pub does: &'static str,
    /// A gauge set to 1 while this hub leads, 0 after (none: not exported).
    pub gauge: Option<&'static str>,
}

/// While the hub lives: waits for the lock, then runs `lead` until it returns (the lock was
/// lost or the hub dropped), and waits again.
pub async fn run<F, Fut>(hub: Weak<Hub>, led: Led, lead: F)
where
    F: Fn(Weak<Hub>, Box<dyn Leadership>) -> Fut,
    Fut: Future<Output = ()>,
{
    loop {
        let Some(h) = hub.upgrade() else { return };
        match h.lead(led.lock).await {
            Ok(Some(lock)) => {
                tracing::info!("this hub {}", led.does);
                if let Some(g) = led.gauge {
                    metrics::gauge!(g).set(1.0);
                }
                drop(h);
                lead(hub.clone(), lock).await;
                if let Some(g) = led.gauge {
                    metrics::gauge!(g).set(0.0);
                }
                tracing::warn!("this hub no longer {}", led.does);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, lock = led.lock, "could not try the lock"),
        }
        tokio::time::sleep(LEASE_CHECK).await;
    }
}
