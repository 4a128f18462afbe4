//! The work controller: follow this cluster's works on the hub, make the managed cluster
//! match them, report their status, clean up.
//!
//! * [`controller`]: what queues a work (the hub's blocking queries, watches of the
//!   applied workloads, the drift resync) and the wiring;
//! * [`runner`]: the queue: dedupe, per-key backoff, requeue, the gate before the first
//!   complete list;
//! * [`reconcile`]: one run for one work, and the error policy;
//! * [`ledger`]: what each work applied, kept on the managed cluster;
//! * [`eviction`]: when the objects of a work missing from the hub go (the grace);
//! * [`restore`]: what to do again when the hub's database was restored from a backup;
//! * [`shared`]: objects more than one work applied: reported on each, deleted by none
//!   while another still has them.

pub mod controller;
pub mod eviction;
pub mod ledger;
pub mod reconcile;
pub mod restore;
pub mod runner;
pub mod shared;
