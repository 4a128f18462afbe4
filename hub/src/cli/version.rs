//! `hub version`: the client's version and the hub's, as `kubectl version` prints them.

use clap::Args;

use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output;

/// `hub version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print only the client's version; do not ask the hub.
    #[arg(long)]
    pub client: bool,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs `hub version`.
pub async fn run(args: VersionArgs) -> Result<(), CliError> {
    let VersionArgs { client, connection } = args;
    let mine = api::ServerVersion::current();
    output::print(&format!("Client Version: {}\n", mine.version));
    if client {
        return Ok(());
    }
    let server = connection.client()?.server_version().await?;
    output::print(&format!(
        "Server Version: {} (API {})\n",
        server.version, server.api_version
    ));
    Ok(())
}
