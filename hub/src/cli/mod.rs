//! The `hub` CLI verbs other than `serve`: kubectl/clusteradm style, talking REST to a hub.

use clap::Subcommand;

/// Client commands (they talk to a running hub).
#[derive(Debug, Subcommand)]
pub enum ClientCommand {}

/// Runs a client command; returns the process exit code (DESIGN.md: 0 ok, 1 failed or
/// refused, 2 usage, 3 timed out, 4 hub unreachable, 5xx, 401/403).
pub async fn run(command: ClientCommand) -> i32 {
    match command {}
}
