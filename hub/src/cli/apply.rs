//! `hub apply`: put works to one cluster or to every cluster a selector matches.

use std::path::PathBuf;

use api::{HubClient, ListOptions, ManifestWork};
use clap::{ArgGroup, Args};

use super::get::{check_selector, list_all_clusters};
use super::input::{plan_works, read_documents};
use super::{CliError, ConnectionArgs, WORK_RESOURCE, describe_client_error, output};

/// The flags of `hub apply` (its help text is on [`super::ClientCommand::Apply`]).
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("target").required(true).args(["cluster", "cluster_selector"])
))]
pub struct ApplyArgs {
    /// A file, a directory (its *.yaml, *.yml and *.json files in lexical order, not
    /// recursive) or - for stdin; repeat for more.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR|-"
    )]
    pub filenames: Vec<PathBuf>,
    /// The cluster to apply to (ManifestWork documents must have this namespace or none).
    #[arg(long)]
    pub cluster: Option<String>,
    /// Apply to every cluster whose labels match this selector, e.g. env=prod; each
    /// work's namespace is set to the cluster.
    #[arg(long, value_name = "SELECTOR")]
    pub cluster_selector: Option<String>,
    /// Name of the work when the input is plain Kubernetes manifests (required then).
    #[arg(long)]
    pub name: Option<String>,
    /// Print the works that would be sent, as YAML, and send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// What applying one work did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Applied {
    Created,
    Configured,
    Unchanged,
}

impl Applied {
    fn as_str(self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// Runs `hub apply`.
pub async fn run(args: ApplyArgs) -> Result<(), CliError> {
    let ApplyArgs {
        filenames,
        cluster,
        cluster_selector,
        name,
        dry_run,
        connection,
    } = args;
    check_selector("--cluster-selector", cluster_selector.as_deref())?;
    let docs = read_documents(&filenames)?;
    let works = plan_works(docs, name.as_deref(), cluster.as_deref())?;

    // The client is made only when needed: a dry run to one cluster works offline.
    let mut client: Option<HubClient> = None;
    let clusters: Vec<String> = match (&cluster, &cluster_selector) {
        (Some(c), _) => vec![c.clone()],
        (None, Some(selector)) => {
            let hub = client.insert(connection.client()?);
            matching_clusters(hub, selector).await?
        }
        (None, None) => unreachable!("clap requires --cluster or --cluster-selector"),
    };

    if dry_run {
        let mut out = String::new();
        for work in &works {
            for c in &clusters {
                let mut w = work.clone();
                w.metadata.namespace = Some(c.clone());
                out.push_str("---\n");
                out.push_str(&output::to_yaml(&w)?);
            }
        }
        output::print(&out);
        return Ok(());
    }

    let client = match client {
        Some(c) => c,
        None => connection.client()?,
    };
    let mut refused = false;
    for work in &works {
        for c in &clusters {
            let mut w = work.clone();
            w.metadata.namespace = Some(c.clone());
            match apply_one(&client, &w).await {
                Ok(applied) => output::print(&format!(
                    "{WORK_RESOURCE}/{} {} (cluster {c})\n",
                    w.metadata.name,
                    applied.as_str()
                )),
                // A refusal concerns this work only; the others may still go through.
                Err(e) if e.exit_code() == 1 => {
                    refused = true;
                    let about = format!("manifestwork {:?} (cluster {c})", w.metadata.name);
                    eprintln!("{}", describe_client_error(&e, Some(&about)));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if refused {
        return Err(CliError::Reported(1));
    }
    Ok(())
}

/// The names of the clusters a selector matches, skipping those being deleted.
async fn matching_clusters(client: &HubClient, selector: &str) -> Result<Vec<String>, CliError> {
    let opts = ListOptions {
        label_selector: Some(selector.to_string()),
        ..Default::default()
    };
    let list = list_all_clusters(client, opts).await?;
    let mut names = Vec::new();
    for c in list.items {
        if c.metadata.deletion_timestamp.is_some() {
            eprintln!(
                "warning: skipping cluster {}: it is being deleted",
                c.metadata.name
            );
        } else {
            names.push(c.metadata.name);
        }
    }
    if names.is_empty() {
        return Err(CliError::Refused(format!(
            "no cluster matches the selector {selector:?}"
        )));
    }
    Ok(names)
}

/// PUTs one work and tells what changed, from what was there before.
async fn apply_one(client: &HubClient, work: &ManifestWork) -> Result<Applied, api::ClientError> {
    let cluster = work.metadata.namespace.as_deref().unwrap_or_default();
    let before = match client
        .get_work(cluster, &work.metadata.name, &ListOptions::default())
        .await
    {
        Ok(w) => Some(w.value.metadata.resource_version),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let after = client.put_work(work, None).await?.value;
    Ok(match before {
        None => Applied::Created,
        Some(rv) if rv != after.metadata.resource_version => Applied::Configured,
        Some(_) => Applied::Unchanged,
    })
}
