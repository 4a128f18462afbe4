//! `hub placement preview -f placement.yaml`: what a Placement would choose, nothing stored.

use std::path::PathBuf;

use clap::Args;

use super::apply::{FleetObject, fleet_object};
use super::explain::preview_text;
use crate::cli::support::connection::ConnectionArgs;
use crate::cli::support::error::CliError;
use crate::cli::support::input::read_documents;
use crate::cli::support::output::{self, DocumentFormat};

/// `hub placement preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The file holding one Placement (cluster.open-cluster-management.io/v1beta1), or -
    /// for stdin.
    #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
    pub filename: PathBuf,
    /// The namespace to evaluate it in when the Placement names none.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Print the PlacementExplanation as JSON or YAML instead of the table.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
}

/// Runs `hub placement preview`.
pub async fn run(args: PreviewArgs, connection: &ConnectionArgs) -> Result<(), CliError> {
    let PreviewArgs {
        filename,
        namespace,
        output,
    } = args;
    let docs = read_documents(std::slice::from_ref(&filename))?;
    let [doc] = docs.as_slice() else {
        return Err(CliError::Usage(format!(
            "{}: holds {} documents; preview takes exactly one Placement",
            filename.display(),
            docs.len()
        )));
    };
    let placement = match fleet_object(doc, namespace.as_deref())? {
        Some(FleetObject::Placement(p)) => p,
        _ => {
            return Err(CliError::Usage(format!(
                "{}: not a Placement ({}); preview takes one Placement",
                doc.source,
                api::fleet::PLACEMENT_API_VERSION
            )));
        }
    };
    let client = connection.client()?;
    let explanation = client.preview_placement(&placement).await?.value;
    match output {
        Some(format) => output::print(&output::document(&explanation, format)?),
        None => output::print(&preview_text(&explanation, chrono::Utc::now())),
    }
    Ok(())
}
