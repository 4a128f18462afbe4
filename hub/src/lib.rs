//! The hub: stores ManifestWorks per managed cluster and serves them over HTTPS.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod controllers;
pub mod http;
pub mod restore;
pub mod serve;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
