//! `hub revoke cluster NAME`: cut a cluster's agent off at once; nothing is deleted.

use clap::{Args, Subcommand};

use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output;

/// The flags of `hub revoke` (its help text is on [`super::ClientCommand::Revoke`]).
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// What to revoke.
    #[command(subcommand)]
    pub what: RevokeCommand,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The kinds `hub revoke` revokes.
#[derive(Debug, Subcommand)]
pub enum RevokeCommand {
    /// Invalidate a cluster's agent credentials now; its works and record stay, and it
    /// shows ACCEPTED false until an agent joins and is accepted again.
    #[command(
        visible_alias = "clusters",
        aliases = ["managedcluster", "managedclusters", "mcl"]
    )]
    Cluster(RevokeClusterArgs),
}

/// `hub revoke cluster`.
#[derive(Debug, Args)]
pub struct RevokeClusterArgs {
    /// The cluster's name.
    pub name: String,
    /// Print the cluster as the API returns it, as JSON or YAML.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<output::DocumentFormat>,
}

/// Runs `hub revoke`.
pub async fn run(args: RevokeArgs) -> Result<(), CliError> {
    let RevokeArgs { what, connection } = args;
    let RevokeCommand::Cluster(RevokeClusterArgs {
        name,
        output: format,
    }) = what;
    let client = connection.client()?;
    let cluster = client.revoke_cluster(&name).await?;
    if let Some(format) = format {
        output::print(&output::document(&cluster, format)?);
        return Ok(());
    }
    output::print(&format!(
        "cluster {name} revoked: its agent's credentials no longer work; nothing was deleted\n"
    ));
    Ok(())
}
