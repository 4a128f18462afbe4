//! The CLI of fleet placement: `get`, `describe`, `delete` and `wait` of Placements and
//! ManifestWorkReplicaSets, what `hub apply` does with them, and `hub placement preview`.
//!
//! These nouns are namespaced (DESIGN.md "Fleet placement"): `-n/--namespace`, default
//! `default`, as kubectl.

use api::{Condition, find_condition};
use clap::{Args, Subcommand};

use super::support::connection::ConnectionArgs;
use super::support::error::CliError;

pub mod apply;
pub mod describe;
pub mod explain;
pub mod get;
pub mod preview;
pub mod wait;

/// The namespace of the fleet nouns when neither `-n` nor `metadata.namespace` names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// `hub placement`.
#[derive(Debug, Args)]
pub struct PlacementArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: PlacementCommand,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// `hub placement` subcommands.
#[derive(Debug, Subcommand)]
pub enum PlacementCommand {
    /// Show what a Placement would choose and why, without storing it.
    ///
    /// The hub evaluates the Placement in the file (one document) against the clusters
    /// the caller may read and answers, per cluster: selected or not, its score, its
    /// decision group, and why (which selector term failed, which taint was not
    /// tolerated, which spread constraint). Nothing is stored.
    ///
    /// Exit codes: 0 shown; 1 the hub refused the Placement (invalid: the fields are
    /// named); 2 usage error or unreadable input; 4 the hub is unreachable or answered
    /// 5xx, 401 or 403.
    Preview(preview::PreviewArgs),
}

/// Runs `hub placement`.
pub async fn run(args: PlacementArgs) -> Result<(), CliError> {
    let PlacementArgs { what, connection } = args;
    match what {
        PlacementCommand::Preview(a) => preview::run(a, &connection).await,
    }
}

/// A condition's status for a table cell, `-` when absent.
pub(crate) fn condition_status(conditions: &[Condition], type_: &str) -> String {
    find_condition(conditions, type_).map_or_else(|| "-".into(), |c| c.status.clone())
}

/// A condition's reason for a table cell, `-` when absent or empty.
pub(crate) fn condition_reason(conditions: &[Condition], type_: &str) -> String {
    find_condition(conditions, type_)
        .map(|c| c.reason.clone())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| "-".into())
}

/// `-` for an empty cell, so that tables split on whitespace keep their columns.
pub(crate) fn cell(text: impl Into<String>) -> String {
    let text = text.into();
    if text.is_empty() { "-".into() } else { text }
}
