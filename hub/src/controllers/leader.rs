//! Controllers that run in one hub per database at a time: the holder of a named lock
//! (a Postgres advisory lock on a connection of its own; a single SQLite hub simply holds
//! it). A hub without the lock tries again every [`LEASE_CHECK`]; the leader checks it
//! still holds it about as often ([`Lease`]), so a dead leader's work is taken over within
//! about that long.

use std::future::Future;
use std::sync::Weak;
use std::time::{Duration, Instant};

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
    F: Fn(Weak<Hub>, Lease) -> Fut,
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
                lead(hub.clone(), Lease::new(lock)).await;
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

/// A lock this hub holds, as its controller sees it.
pub struct Lease {
    lock: Box<dyn Leadership>,
    checked: Instant,
}

impl Lease {
    /// Asked more often than this, [`Lease::still_held`] answers from the last check.
    const FRESH: Duration = Duration::from_secs(1);

    fn new(lock: Box<dyn Leadership>) -> Self {
        Lease {
            lock,
            checked: Instant::now(),
        }
    }

    /// Whether the lock is still held: asks the database when the last answer is older
    /// than a second, which an idle controller, waking every [`LEASE_CHECK`], always finds.
    /// A controller wakes for every batch of changes it follows; asking each time was a
    /// round trip per batch (2 % of the hub's CPU and a Postgres session woken under a
    /// stream of creates, docs/benchmarks.md) for an answer that changes once in a
    /// failover.
    pub async fn still_held(&mut self) -> bool {
        if self.checked.elapsed() < Self::FRESH {
            return true;
        }
        let held = self.lock.check().await.is_ok();
        self.checked = Instant::now();
        held
    }
}
