//! `hub get placements|decisions|manifestworkreplicasets`.

use api::fleet::{
    DECISION_GROUP_INDEX_LABEL, DECISION_GROUP_NAME_LABEL, ManifestWorkReplicaSet, Placement,
    PlacementDecision, conditions,
};
use api::{HubClient, ListOptions};
use chrono::{DateTime, Utc};
use clap::Args;
use serde::Serialize;

use super::{DEFAULT_NAMESPACE, cell, condition_reason, condition_status};
use crate::cli::support::error::CliError;
use crate::cli::support::output::{self, OutputFormat, Table};
use crate::cli::support::query::check_selector;

/// `hub get placements`.
#[derive(Debug, Args)]
pub struct GetPlacementsArgs {
    /// Show only this Placement.
    #[arg(conflicts_with_all = ["selector", "all_namespaces"])]
    pub name: Option<String>,
    /// The namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Show the Placements of every namespace (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector over the Placements' labels, e.g. app=web.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format: wide, name, json, yaml, or jsonpath=TEMPLATE as kubectl's
    /// [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
    /// Print the table without its header line.
    #[arg(long)]
    pub no_headers: bool,
}

/// `hub get decisions`.
#[derive(Debug, Args)]
pub struct GetDecisionsArgs {
    /// The Placement whose decisions to show.
    pub placement: String,
    /// The Placement's namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Output format: wide, name, json, yaml (OCM's PlacementDecisionList), or
    /// jsonpath=TEMPLATE [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
    /// Print the table without its header line.
    #[arg(long)]
    pub no_headers: bool,
}

/// `hub get manifestworkreplicasets`.
#[derive(Debug, Args)]
pub struct GetSetsArgs {
    /// Show only this set.
    #[arg(conflicts_with_all = ["selector", "all_namespaces"])]
    pub name: Option<String>,
    /// The namespace.
    #[arg(short = 'n', long, default_value = DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Show the sets of every namespace (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector over the sets' labels, e.g. app=web.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Output format: wide, name, json, yaml, or jsonpath=TEMPLATE as kubectl's
    /// [default: a table].
    #[arg(short = 'o', long, value_name = "FORMAT", value_parser = OutputFormat::parser())]
    pub output: Option<OutputFormat>,
    /// Print the table without its header line.
    #[arg(long)]
    pub no_headers: bool,
}

/// How a table of fleet objects is printed: the header, its rows, and what `-o name` says.
struct Listing<'a, T: Serialize> {
    /// What `-o json|yaml|jsonpath` prints: the list or the one object, as the API gave it.
    raw: &'a T,
    /// `-o name` lines, `kind/name`.
    names: Vec<String>,
    /// The table (header included), normal or wide.
    table: Table,
    /// Said on stderr when the table is empty (`None`: nothing).
    empty: Option<String>,
}

/// Whether `-o` asks for the wide table; `None` for the formats that print no table.
fn wide(output: &Option<OutputFormat>) -> Option<bool> {
    match output {
        None => Some(false),
        Some(OutputFormat::Wide) => Some(true),
        Some(_) => None,
    }
}

fn print_listing<T: Serialize>(
    listing: Listing<'_, T>,
    output: &Option<OutputFormat>,
    no_headers: bool,
) -> Result<(), CliError> {
    let Listing {
        raw,
        names,
        table,
        empty,
    } = listing;
    match output {
        Some(OutputFormat::Json) => output::print(&output::to_json(raw)?),
        Some(OutputFormat::Yaml) => output::print(&output::to_yaml(raw)?),
        Some(OutputFormat::JsonPath(t)) => output::print(&output::jsonpath(t, raw)?),
        Some(OutputFormat::Name) => {
            output::print(&names.iter().map(|n| format!("{n}\n")).collect::<String>())
        }
        Some(OutputFormat::Wide) | None => {
            if table.is_empty() {
                if let Some(e) = empty {
                    eprintln!("{e}");
                }
            } else if no_headers {
                output::print(&table.render_rows());
            } else {
                output::print(&table.render());
            }
        }
    }
    Ok(())
}

fn no_resources(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("No resources found in {ns} namespace."),
        None => "No resources found.".into(),
    }
}

fn age(t: Option<DateTime<Utc>>) -> String {
    output::age(t, Utc::now())
}

/// Runs `hub get placements`.
pub async fn placements(args: GetPlacementsArgs, client: &HubClient) -> Result<(), CliError> {
    let GetPlacementsArgs {
        name,
        namespace,
        all_namespaces,
        selector,
        output,
        no_headers,
    } = args;
    check_selector("--selector", selector.as_deref())?;
    let is_wide = wide(&output).unwrap_or(false);
    if let Some(name) = name {
        let p = client
            .get_placement(&namespace, &name, &ListOptions::default())
            .await?
            .value;
        let listing = Listing {
            raw: &p,
            names: vec![format!("placement/{}", p.metadata.name)],
            table: placement_table(std::slice::from_ref(&p), false, is_wide),
            empty: None,
        };
        return print_listing(listing, &output, no_headers);
    }
    let opts = ListOptions {
        label_selector: selector,
        ..Default::default()
    };
    let ns = (!all_namespaces).then_some(namespace.as_str());
    let list = client.list_placements(ns, &opts).await?.value;
    let listing = Listing {
        raw: &list,
        names: list
            .items
            .iter()
            .map(|p| format!("placement/{}", p.metadata.name))
            .collect(),
        table: placement_table(&list.items, all_namespaces, is_wide),
        empty: Some(no_resources(ns)),
    };
    print_listing(listing, &output, no_headers)
}

/// The Placement table: OCM's printer columns (SUCCEEDED and REASON are the
/// `PlacementSatisfied` condition's status and reason); wide adds cluster sets, the
/// number asked for, decision groups and the resourceVersion.
fn placement_table(items: &[Placement], with_namespace: bool, wide: bool) -> Table {
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE");
    }
    header.extend(["NAME", "SUCCEEDED", "REASON", "SELECTEDCLUSTERS", "AGE"]);
    if wide {
        header.extend([
            "CLUSTERSETS",
            "NUMBEROFCLUSTERS",
            "DECISIONGROUPS",
            "RESOURCEVERSION",
        ]);
    }
    let mut table = Table::new(&header);
    for p in items {
        let m = &p.metadata;
        let mut row = Vec::new();
        if with_namespace {
            row.push(cell(m.namespace.clone().unwrap_or_default()));
        }
        let conds = &p.status.conditions;
        row.extend([
            m.name.clone(),
            condition_status(conds, conditions::PLACEMENT_SATISFIED),
            condition_reason(conds, conditions::PLACEMENT_SATISFIED),
            p.status.number_of_selected_clusters.to_string(),
            age(m.creation_timestamp),
        ]);
        if wide {
            row.extend([
                cell(p.spec.cluster_sets.join(",")),
                p.spec
                    .number_of_clusters
                    .map_or_else(|| "all".into(), |n| n.to_string()),
                p.status.decision_groups.len().to_string(),
                cell(m.resource_version.clone().unwrap_or_default()),
            ]);
        }
        table.row(row);
    }
    table
}

/// Runs `hub get decisions`: one row per decided cluster (not per PlacementDecision, whose
/// cluster list would make unreadable rows of up to 100 names), so that `grep` finds a
/// cluster and `wc -l` counts them.
pub async fn decisions(args: GetDecisionsArgs, client: &HubClient) -> Result<(), CliError> {
    let GetDecisionsArgs {
        placement,
        namespace,
        output,
        no_headers,
    } = args;
    let list = client
        .placement_decisions(&namespace, &placement, &ListOptions::default())
        .await?
        .value;
    let listing = Listing {
        raw: &list,
        names: list
            .items
            .iter()
            .map(|d| format!("placementdecision/{}", d.metadata.name))
            .collect(),
        table: decision_table(&list.items, wide(&output).unwrap_or(false)),
        empty: Some(format!(
            "No clusters decided by placement {placement:?} in {namespace} namespace."
        )),
    };
    print_listing(listing, &output, no_headers)
}

/// A decision's group: its name, or its index for the unnamed groups.
pub(crate) fn decision_group(d: &PlacementDecision) -> String {
    let labels = &d.metadata.labels;
    match labels.get(DECISION_GROUP_NAME_LABEL) {
        Some(name) if !name.is_empty() => name.clone(),
        _ => cell(
            labels
                .get(DECISION_GROUP_INDEX_LABEL)
                .cloned()
                .unwrap_or_default(),
        ),
    }
}

/// NAME (the PlacementDecision), GROUP, CLUSTER; wide adds the decision's REASON.
fn decision_table(items: &[PlacementDecision], wide: bool) -> Table {
    let mut header = vec!["NAME", "GROUP", "CLUSTER"];
    if wide {
        header.push("REASON");
    }
    let mut table = Table::new(&header);
    for d in items {
        let group = decision_group(d);
        for c in &d.status.decisions {
            let mut row = vec![
                d.metadata.name.clone(),
                group.clone(),
                c.cluster_name.clone(),
            ];
            if wide {
                row.push(cell(c.reason.clone()));
            }
            table.row(row);
        }
    }
    table
}

/// Runs `hub get manifestworkreplicasets`.
pub async fn sets(args: GetSetsArgs, client: &HubClient) -> Result<(), CliError> {
    let GetSetsArgs {
        name,
        namespace,
        all_namespaces,
        selector,
        output,
        no_headers,
    } = args;
    check_selector("--selector", selector.as_deref())?;
    let is_wide = wide(&output).unwrap_or(false);
    if let Some(name) = name {
        let s = client
            .get_set(&namespace, &name, &ListOptions::default())
            .await?
            .value;
        let listing = Listing {
            raw: &s,
            names: vec![format!("manifestworkreplicaset/{}", s.metadata.name)],
            table: set_table(std::slice::from_ref(&s), false, is_wide),
            empty: None,
        };
        return print_listing(listing, &output, no_headers);
    }
    let opts = ListOptions {
        label_selector: selector,
        ..Default::default()
    };
    let ns = (!all_namespaces).then_some(namespace.as_str());
    let list = client.list_sets(ns, &opts).await?.value;
    let listing = Listing {
        raw: &list,
        names: list
            .items
            .iter()
            .map(|s| format!("manifestworkreplicaset/{}", s.metadata.name))
            .collect(),
        table: set_table(&list.items, all_namespaces, is_wide),
        empty: Some(no_resources(ns)),
    };
    print_listing(listing, &output, no_headers)
}

/// The set table: PLACEMENT and FOUND are the reasons of `PlacementVerified` and
/// `ManifestworkApplied` (OCM's printer columns), then the summary's counts; wide adds
/// DEGRADED, PROGRESSING, the placements' names and the resourceVersion.
fn set_table(items: &[ManifestWorkReplicaSet], with_namespace: bool, wide: bool) -> Table {
    let mut header = Vec::new();
    if with_namespace {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "PLACEMENT",
        "FOUND",
        "TOTAL",
        "APPLIED",
        "AVAILABLE",
        "AGE",
    ]);
    if wide {
        header.extend(["DEGRADED", "PROGRESSING", "PLACEMENTS", "RESOURCEVERSION"]);
    }
    let mut table = Table::new(&header);
    for s in items {
        let m = &s.metadata;
        let conds = &s.status.conditions;
        let sum = &s.status.summary;
        let mut row = Vec::new();
        if with_namespace {
            row.push(cell(m.namespace.clone().unwrap_or_default()));
        }
        row.extend([
            m.name.clone(),
            condition_reason(conds, conditions::PLACEMENT_VERIFIED),
            condition_reason(conds, conditions::MANIFESTWORK_APPLIED),
            sum.total.to_string(),
            sum.applied.to_string(),
            sum.available.to_string(),
            age(m.creation_timestamp),
        ]);
        if wide {
            let refs: Vec<&str> = s
                .spec
                .placement_refs
                .iter()
                .map(|r| r.name.as_str())
                .collect();
            row.extend([
                sum.degraded.to_string(),
                sum.progressing.to_string(),
                cell(refs.join(",")),
                cell(m.resource_version.clone().unwrap_or_default()),
            ]);
        }
        table.row(row);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::fleet::{ClusterDecision, PlacementDecisionStatus};
    use api::{Condition, ObjectMeta};

    fn decision(name: &str, labels: &[(&str, &str)], clusters: &[&str]) -> PlacementDecision {
        PlacementDecision {
            api_version: api::fleet::PLACEMENT_API_VERSION.into(),
            kind: "PlacementDecision".into(),
            metadata: ObjectMeta {
                name: name.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            },
            status: PlacementDecisionStatus {
                decisions: clusters
                    .iter()
                    .map(|c| ClusterDecision {
                        cluster_name: c.to_string(),
                        reason: String::new(),
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn decisions_are_listed_one_cluster_a_row_with_their_group() {
        let items = [
            decision(
                "p-decision-1",
                &[
                    (DECISION_GROUP_INDEX_LABEL, "0"),
                    (DECISION_GROUP_NAME_LABEL, "canary"),
                ],
                &["c1"],
            ),
            decision(
                "p-decision-2",
                &[(DECISION_GROUP_INDEX_LABEL, "1")],
                &["c2", "c3"],
            ),
        ];
        assert_eq!(
            decision_table(&items, false).render(),
            "NAME           GROUP    CLUSTER\n\
             p-decision-1   canary   c1\n\
             p-decision-2   1        c2\n\
             p-decision-2   1        c3\n"
        );
    }

    #[test]
    fn placement_rows_show_the_satisfied_condition_and_the_count() {
        let mut p = Placement::default();
        p.metadata.name = "db".into();
        p.metadata.namespace = Some("team-a".into());
        p.status.number_of_selected_clusters = 2;
        p.status.conditions.push(Condition {
            type_: conditions::PLACEMENT_SATISFIED.into(),
            status: "False".into(),
            reason: "NotAllDecisionsScheduled".into(),
            ..Default::default()
        });
        let text = placement_table(&[p], true, false).render();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "team-a",
                "db",
                "False",
                "NotAllDecisionsScheduled",
                "2",
                "<unknown>"
            ]
        );
    }

    #[test]
    fn set_rows_show_reasons_and_counts() {
        let mut s = ManifestWorkReplicaSet::default();
        s.metadata.name = "web".into();
        s.status.summary.total = 3;
        s.status.summary.applied = 3;
        s.status.summary.available = 2;
        s.status.conditions.push(Condition {
            type_: conditions::PLACEMENT_VERIFIED.into(),
            status: "True".into(),
            reason: "AsExpected".into(),
            ..Default::default()
        });
        let text = set_table(&[s], false, true).render();
        let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "web",
                "AsExpected",
                "-",
                "3",
                "3",
                "2",
                "<unknown>",
                "0",
                "0",
                "-",
                "-"
            ]
        );
    }
}
