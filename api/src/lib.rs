//! Wire types shared by the hub, the klusterlet and users, and a typed HTTP client.
//!
//! This crate has no server dependencies: a CI tool can depend on it alone.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cel;
pub mod client;
pub mod config;
pub mod executor;
pub mod fleet;
pub mod jsonpath;
pub mod registration;
pub mod retry;
pub mod secrets;
pub mod selector;
pub mod status;
pub mod types;

pub use client::{ClientError, HubClient, Indexed, ListOptions};
pub use config::{ClientConfig, parse_duration};
pub use executor::{
    EXECUTOR_SERVICE_ACCOUNT, ExecutorServiceAccount, ExecutorSubject, ManifestWorkExecutor,
};
pub use registration::*;
pub use types::*;
