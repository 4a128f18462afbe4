//! Test harnesses shared by the integration and end-to-end tests and the benchmarks:
//! a real Postgres ([`postgres`]), Postgres under Patroni behind HAProxy ([`patroni`]) and
//! real Kubernetes clusters ([`cluster`]); the loads of `bench` ([`load`], [`fleet`],
//! [`placement_bench`]) and of the high-availability tests ([`ha`]).
#![forbid(unsafe_code)]

pub mod agent;
pub mod backup_bench;
pub mod cluster;
pub mod fleet;
pub mod ha;
pub mod load;
pub mod patroni;
pub mod placement_bench;
pub mod postgres;
pub mod procs;
pub mod releases;
