//! Test harnesses shared by the integration and end-to-end tests and the benchmarks:
//! a real Postgres ([`postgres`]) and real Kubernetes clusters ([`cluster`]); the loads of
//! `bench` ([`load`], [`fleet`], [`placement_bench`]).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod fleet;
pub mod load;
pub mod placement_bench;
pub mod postgres;
pub mod procs;
