//! Controllers: loops that keep the hub's records true to the world. Each is driven by
//! the change feed or a timer, reads and writes through the service only (its writes go
//! through the writer like every request's), and lives as long as the [`Hub`] it serves.
//! Placement, sets and rollouts join the lease controller here, and [`ttl`] deletes works
//! that finished.

use std::sync::Arc;

use crate::service::Hub;

pub mod fleet;
pub mod leader;
pub mod leases;
pub mod retention;
pub mod ttl;

/// Starts every controller of `hub`; each stops once the hub is dropped.
pub fn start(hub: &Arc<Hub>) {
    tokio::spawn(leases::run(Arc::downgrade(hub)));
    tokio::spawn(fleet::run(Arc::downgrade(hub)));
    tokio::spawn(ttl::run(Arc::downgrade(hub)));
    tokio::spawn(retention::run(Arc::downgrade(hub)));
}
