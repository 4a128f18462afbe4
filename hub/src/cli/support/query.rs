//! Reads more than one request makes: every page of a list, the clusters a selector matches.

use api::selector::Selector;
use api::{HubClient, List, ListOptions, ManagedCluster, ManifestWork};

use super::error::CliError;

/// Checks a selector here, so a typo is a usage error (exit 2), not a refusal.
pub fn check_selector(flag: &str, selector: Option<&str>) -> Result<(), CliError> {
    if let Some(s) = selector {
        Selector::parse(s).map_err(|e| CliError::Usage(format!("{flag} {s:?}: {e}")))?;
    }
    Ok(())
}

/// Every page of a work list, as one list with the first page's index.
pub async fn list_all_works(
    client: &HubClient,
    cluster: Option<&str>,
    opts: ListOptions,
) -> Result<List<ManifestWork>, CliError> {
    let mut opts = opts;
    let first = client.list_works(cluster, &opts).await?.value;
    let mut next = first.metadata.continue_.clone();
    let mut list = List {
        metadata: api::ListMeta {
            continue_: None,
            ..first.metadata
        },
        ..first
    };
    while let Some(token) = next.filter(|t| !t.is_empty()) {
        opts.continue_ = Some(token);
        let page = client.list_works(cluster, &opts).await?.value;
        list.items.extend(page.items);
        next = page.metadata.continue_;
    }
    Ok(list)
}

/// Every page of a cluster list, as one list with the first page's index.
pub async fn list_all_clusters(
    client: &HubClient,
    opts: ListOptions,
) -> Result<List<ManagedCluster>, CliError> {
    let mut opts = opts;
    let first = client.list_clusters(&opts).await?.value;
    let mut next = first.metadata.continue_.clone();
    let mut list = List {
        metadata: api::ListMeta {
            continue_: None,
            ..first.metadata
        },
        ..first
    };
    while let Some(token) = next.filter(|t| !t.is_empty()) {
        opts.continue_ = Some(token);
        let page = client.list_clusters(&opts).await?.value;
        list.items.extend(page.items);
        next = page.metadata.continue_;
    }
    Ok(list)
}

/// The names of the clusters a selector matches, skipping those being deleted.
pub async fn matching_clusters(
    client: &HubClient,
    selector: &str,
) -> Result<Vec<String>, CliError> {
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
