//! `hub describe placement|manifestworkreplicaset`: one fleet object in detail, with a
//! table per cluster.

use api::fleet::{ManifestWorkReplicaSet, Placement, PlacementExplanation};
use api::{HubClient, ListOptions};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;

use super::explain::{clusters_table, status_summary};
use super::{DEFAULT_NAMESPACE, cell};
use crate::cli::support::error::CliError;
use crate::cli::support::output::{self, DocumentFormat, Table};
use crate::cli::support::text::{conditions_table, field, indent, time};

/// `hub describe placement` and `hub describe manifestworkreplicaset`.
#[derive(Debug, Args)]
pub struct DescribeFleetArgs {
    /// The object's name.
    pub name: String,
    /// Its namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Print a PlacementDescription (the Placement and its explanation) or the set as
    /// JSON or YAML instead.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
}

/// `hub describe placement -o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlacementDescription {
    /// Always `v1`.
    pub api_version: &'static str,
    /// Always `PlacementDescription`.
    pub kind: &'static str,
    /// The Placement as the API returns it.
    pub placement: Placement,
    /// Every cluster the caller may read, chosen or not, and why.
    pub explanation: PlacementExplanation,
}

/// Runs `hub describe placement`.
pub async fn placement(client: &HubClient, args: DescribeFleetArgs) -> Result<(), CliError> {
    let DescribeFleetArgs {
        name,
        namespace,
        output,
    } = args;
    let placement = client
        .get_placement(&namespace, &name, &ListOptions::default())
        .await?
        .value;
    let explanation = client.explain_placement(&namespace, &name).await?.value;
    if let Some(format) = output {
        let doc = PlacementDescription {
            api_version: "v1",
            kind: "PlacementDescription",
            placement,
            explanation,
        };
        output::print(&output::document(&doc, format)?);
        return Ok(());
    }
    output::print(&describe_placement(&placement, &explanation, Utc::now())?);
    Ok(())
}

fn header(out: &mut String, meta: &api::ObjectMeta, now: DateTime<Utc>) {
    field(out, "Name", &meta.name);
    field(
        out,
        "Namespace",
        meta.namespace.as_deref().unwrap_or_default(),
    );
    field(out, "Labels", output::labels(&meta.labels));
    field(out, "Created", time(meta.creation_timestamp, now));
    if let Some(t) = meta.deletion_timestamp {
        field(out, "Deleting since", time(Some(t), now));
    }
}

/// The text of `hub describe placement`: the spec as written, the status, conditions,
/// and the explanation per cluster.
fn describe_placement(
    p: &Placement,
    explanation: &PlacementExplanation,
    now: DateTime<Utc>,
) -> Result<String, CliError> {
    let mut out = String::new();
    header(&mut out, &p.metadata, now);
    out.push_str("Spec:\n");
    out.push_str(&indent(&output::to_yaml(&p.spec)?));
    status_summary(&mut out, &p.status);
    out.push_str("Conditions:\n");
    out.push_str(&conditions_table(
        &p.status.conditions,
        p.metadata.generation,
        now,
    ));
    out.push_str("Clusters:\n");
    out.push_str(&clusters_table(explanation));
    Ok(out)
}

/// Runs `hub describe manifestworkreplicaset`.
pub async fn set(client: &HubClient, args: DescribeFleetArgs) -> Result<(), CliError> {
    let DescribeFleetArgs {
        name,
        namespace,
        output,
    } = args;
    let set = client
        .get_set(&namespace, &name, &ListOptions::default())
        .await?
        .value;
    if let Some(format) = output {
        output::print(&output::document(&set, format)?);
        return Ok(());
    }
    output::print(&describe_set(&set, Utc::now()));
    Ok(())
}

/// The text of `hub describe manifestworkreplicaset`.
fn describe_set(s: &ManifestWorkReplicaSet, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    header(&mut out, &s.metadata, now);
    let spec = &s.spec;
    let placements: Vec<String> = spec
        .placement_refs
        .iter()
        .map(|r| {
            let strategy = r
                .rollout_strategy
                .as_ref()
                .and_then(|v| v.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or("All");
            format!("{} (rollout {strategy})", r.name)
        })
        .collect();
    field(&mut out, "Placements", cell(placements.join(", ")));
    field(
        &mut out,
        "Cascade deletion",
        spec.cascade_deletion_policy
            .as_deref()
            .unwrap_or("Background"),
    );
    field(
        &mut out,
        "Manifests",
        spec.manifest_work_template.workload.manifests.len(),
    );
    if !spec.overrides.is_empty() {
        field(&mut out, "Overrides", spec.overrides.len());
    }
    if let Some(split) = &spec.replica_split {
        let w = &split.workload;
        field(
            &mut out,
            "Replica split",
            format!(
                "{} replicas of {}/{} by {}",
                split.total_replicas,
                cell(w.kind.clone()),
                cell(w.name.clone()),
                split.strategy.as_deref().unwrap_or("Equal")
            ),
        );
    }
    let sum = &s.status.summary;
    field(
        &mut out,
        "Summary",
        format!(
            "total {}, applied {}, available {}, degraded {}, progressing {}",
            sum.total, sum.applied, sum.available, sum.degraded, sum.progressing
        ),
    );
    if !s.status.placements_summary.is_empty() {
        let mut t = Table::new(&[
            "PLACEMENT",
            "AVAILABLEGROUPS",
            "TOTAL",
            "APPLIED",
            "AVAILABLE",
            "DEGRADED",
        ]);
        for p in &s.status.placements_summary {
            t.row(vec![
                p.name.clone(),
                cell(p.available_decision_groups.clone()),
                p.summary.total.to_string(),
                p.summary.applied.to_string(),
                p.summary.available.to_string(),
                p.summary.degraded.to_string(),
            ]);
        }
        out.push_str("Placement summary:\n");
        out.push_str(&indent(&t.render()));
    }
    out.push_str("Clusters:\n");
    out.push_str(&set_clusters_table(s));
    out.push_str("Conditions:\n");
    out.push_str(&conditions_table(
        &s.status.conditions,
        s.metadata.generation,
        now,
    ));
    out
}

/// CLUSTER, PLACEMENT, REPLICAS, APPLIED, AVAILABLE, MESSAGE from `status.clusters[]`.
fn set_clusters_table(s: &ManifestWorkReplicaSet) -> String {
    if s.status.clusters.is_empty() {
        return "  <none>\n".into();
    }
    let mut t = Table::new(&[
        "CLUSTER",
        "PLACEMENT",
        "REPLICAS",
        "APPLIED",
        "AVAILABLE",
        "MESSAGE",
    ]);
    for c in &s.status.clusters {
        let status = |k: &str| cell(c.conditions.get(k).cloned().unwrap_or_default());
        t.row(vec![
            c.cluster_name.clone(),
            cell(c.placement.clone()),
            c.replicas.map_or_else(|| "-".into(), |r| r.to_string()),
            status(api::status::APPLIED),
            status(api::status::AVAILABLE),
            c.message.clone(),
        ]);
    }
    indent(&t.render())
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::fleet::{LocalPlacementReference, ReplicaSplit, SetClusterStatus};

    #[test]
    fn a_set_is_described_per_cluster_with_its_replica_share() {
        let mut s = ManifestWorkReplicaSet::default();
        s.metadata.name = "web".into();
        s.metadata.namespace = Some("default".into());
        s.spec.placement_refs.push(LocalPlacementReference {
            name: "three".into(),
            rollout_strategy: None,
        });
        s.spec.replica_split = Some(ReplicaSplit {
            total_replicas: 10,
            strategy: Some("Weighted".into()),
            ..Default::default()
        });
        s.status.summary.total = 2;
        s.status.summary.applied = 2;
        s.status.clusters = vec![
            SetClusterStatus {
                cluster_name: "c1".into(),
                placement: "three".into(),
                replicas: Some(6),
                conditions: [("Applied".to_string(), "True".to_string())].into(),
                message: String::new(),
            },
            SetClusterStatus {
                cluster_name: "c9".into(),
                placement: "three".into(),
                replicas: None,
                conditions: Default::default(),
                message: "outside the author's scope".into(),
            },
        ];
        let text = describe_set(&s, Utc::now());
        assert!(
            text.contains("Placements:       three (rollout All)\n"),
            "{text}"
        );
        assert!(
            text.contains("Replica split:    10 replicas of -/- by Weighted\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  CLUSTER   PLACEMENT   REPLICAS   APPLIED   AVAILABLE   MESSAGE\n\
                 \x20 c1        three       6          True      -\n\
                 \x20 c9        three       -          -         -           outside the author's scope\n"
            ),
            "{text}"
        );
    }
}
