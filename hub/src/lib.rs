//! The hub: stores ManifestWorks per managed cluster and serves them over HTTPS.
#![forbid(unsafe_code)]

pub mod service;
pub mod store;
