//! `hub config get-contexts|current-context|use-context`: the named hubs of the client
//! config file, as `kubectl config` handles kubeconfig's contexts.

use api::config::ClientConfigFile;
use clap::{Args, Subcommand};

use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output::{self, Table};

/// The flags of `hub config` (its help text is on [`super::ClientCommand::Config`]).
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// What to do.
    #[command(subcommand)]
    pub what: ConfigCommand,
    /// Which file (`--config`, `HUB_CONFIG`) and context (`--context`, `HUB_CONTEXT`).
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The `hub config` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// List the contexts of the client config file; `*` marks the current one.
    ///
    /// Exit codes: 0 listed (none too); 2 the file cannot be read.
    GetContexts,
    /// Print the name of the current context (`--context`/`HUB_CONTEXT`, else the
    /// file's `currentContext`).
    ///
    /// Exit codes: 0 printed; 1 no context is current; 2 the file cannot be read.
    CurrentContext,
    /// Make NAME the file's current context (its `currentContext`).
    ///
    /// Exit codes: 0 done; 2 no context of that name, or the file cannot be read or
    /// written.
    UseContext {
        /// The context's name.
        name: String,
    },
}

/// Runs `hub config`.
pub fn run(args: ConfigArgs) -> Result<(), CliError> {
    let ConfigArgs { what, connection } = args;
    let path = connection.config_path();
    let mut file =
        ClientConfigFile::load(&path).map_err(|e| CliError::Usage(format!("client config {e}")))?;
    let named = connection.context.as_deref().filter(|c| !c.is_empty());
    let unknown = |e: api::config::UnknownContext| {
        CliError::Usage(format!("client config {}: {e}", path.display()))
    };
    match what {
        ConfigCommand::GetContexts => {
            if file.contexts.is_empty() {
                eprintln!(
                    "No contexts in {} (it names one hub at its top level).",
                    path.display()
                );
                return Ok(());
            }
            let current = named.or(file.current_context.as_deref());
            let mut t = Table::new(&["CURRENT", "NAME", "SERVER"]);
            for c in &file.contexts {
                let mark = if current == Some(c.name.as_str()) {
                    "*"
                } else {
                    ""
                };
                t.row(vec![mark.to_string(), c.name.clone(), c.server.clone()]);
            }
            output::print(&t.render());
        }
        ConfigCommand::CurrentContext => {
            let Some(name) = named.or(file.current_context.as_deref()) else {
                return Err(CliError::Refused(format!(
                    "current-context is not set in {}",
                    path.display()
                )));
            };
            file.context(name).map_err(unknown)?;
            output::print(&format!("{name}\n"));
        }
        ConfigCommand::UseContext { name } => {
            file.context(&name).map_err(unknown)?;
            file.current_context = Some(name.clone());
            file.save(&path)
                .map_err(|e| CliError::Usage(format!("client config {e}")))?;
            output::print(&format!("Switched to context {name:?}.\n"));
        }
    }
    Ok(())
}
