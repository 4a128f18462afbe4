//! `hub describe work|cluster`: one object in detail, like `kubectl describe`; the
//! fleet's `placement` and `manifestworkreplicaset` come from [`super::fleet::describe`].

use api::{AuditEntry, HubClient, ListOptions, ManagedCluster, ManifestWork, status};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use super::fleet::describe::DescribeFleetArgs;
use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output::{self, DocumentFormat, Table};
use super::support::query::list_all_works;
use super::support::secrets::hash_secret_data;
use super::support::text::{conditions_table, field, indent, time};

/// How many audit entries `describe work` shows.
const RECENT_CHANGES: u32 = 10;

/// The flags of `hub describe` (its help text is on [`super::ClientCommand::Describe`]).
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// What to describe.
    #[command(subcommand)]
    pub what: DescribeCommand,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// The kinds `hub describe` describes.
#[derive(Debug, Subcommand)]
pub enum DescribeCommand {
    /// A ManifestWork: conditions, per-resource status and feedback, and its recent
    /// changes from the audit log (who, what, when, from where).
    #[command(visible_alias = "works", aliases = ["manifestwork", "manifestworks", "mw"])]
    Work(DescribeWorkArgs),
    /// A ManagedCluster: labels, claims, conditions, lease age, taints, works.
    #[command(
        visible_alias = "clusters",
        aliases = ["managedcluster", "managedclusters", "mcl"]
    )]
    Cluster(DescribeClusterArgs),
    /// A Placement: its spec, status, conditions, and every cluster the caller may read
    /// with why it was chosen or not (CLUSTER, SELECTED, SCORE, GROUP, WHY).
    ///
    /// SELECTED is `yes`, `no` (it qualified but lost on score, count or spread) or
    /// `filtered` (a cluster set, selector or taint ruled it out; WHY says which).
    #[command(visible_alias = "placements")]
    Placement(DescribeFleetArgs),
    /// A ManifestWorkReplicaSet: its placements, summary, per-cluster works (CLUSTER,
    /// PLACEMENT, REPLICAS, APPLIED, AVAILABLE, MESSAGE) and conditions.
    #[command(
        name = "manifestworkreplicaset",
        visible_aliases = ["manifestworkreplicasets", "mwrs"]
    )]
    ManifestWorkReplicaSet(DescribeFleetArgs),
}

/// `hub describe work`.
#[derive(Debug, Args)]
pub struct DescribeWorkArgs {
    /// The work's name.
    pub name: String,
    /// The cluster the work belongs to.
    #[arg(long)]
    pub cluster: String,
    /// Print a WorkDescription as JSON or YAML instead.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
}

/// `hub describe cluster`.
#[derive(Debug, Args)]
pub struct DescribeClusterArgs {
    /// The cluster's name.
    pub name: String,
    /// Print a ClusterDescription as JSON or YAML instead.
    #[arg(short = 'o', long, value_enum)]
    pub output: Option<DocumentFormat>,
}

/// `hub describe work -o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkDescription {
    /// Always `v1`.
    pub api_version: &'static str,
    /// Always `WorkDescription`.
    pub kind: &'static str,
    /// The work as the API returns it, with Secret data as `hmac-sha256:<hex>` placeholders.
    pub work: ManifestWork,
    /// The work's recent changes from the audit log, newest first.
    pub recent_changes: Vec<AuditEntry>,
}

/// Counts of a cluster's works by their conditions at the current generation.
#[derive(Debug, Default, Serialize)]
pub struct WorkCounts {
    /// Works on the cluster.
    pub total: u32,
    /// ... Applied=True.
    pub applied: u32,
    /// ... Ready=True.
    pub ready: u32,
    /// ... Degraded=True.
    pub degraded: u32,
}

/// `hub describe cluster -o json|yaml`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDescription {
    /// Always `v1`.
    pub api_version: &'static str,
    /// Always `ClusterDescription`.
    pub kind: &'static str,
    /// The cluster as the API returns it.
    pub cluster: ManagedCluster,
    /// Seconds since its agent's last lease renewal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_age_seconds: Option<i64>,
    /// Its works.
    pub works: WorkCounts,
}

/// Runs `hub describe`.
pub async fn run(args: DescribeArgs) -> Result<(), CliError> {
    let DescribeArgs { what, connection } = args;
    let client = connection.client()?;
    match what {
        DescribeCommand::Work(a) => work(&client, a).await,
        DescribeCommand::Cluster(a) => cluster(&client, a).await,
        DescribeCommand::Placement(a) => super::fleet::describe::placement(&client, a).await,
        DescribeCommand::ManifestWorkReplicaSet(a) => super::fleet::describe::set(&client, a).await,
    }
}

async fn work(client: &HubClient, args: DescribeWorkArgs) -> Result<(), CliError> {
    let DescribeWorkArgs {
        name,
        cluster,
        output,
    } = args;
    let mut work = client
        .get_work(&cluster, &name, &ListOptions::default())
        .await?
        .value;
    for m in work.spec.workload.manifests.iter_mut() {
        hash_secret_data(m);
    }
    let target = format!("clusters/{cluster}/manifestworks/{name}");
    let recent_changes: Vec<AuditEntry> = client
        .work_history(&cluster, &name, Some(RECENT_CHANGES))
        .await?
        .items
        .into_iter()
        .filter(|e| e.target == target)
        .collect();
    if let Some(format) = output {
        let doc = WorkDescription {
            api_version: "v1",
            kind: "WorkDescription",
            work,
            recent_changes,
        };
        output::print(&output::document(&doc, format)?);
        return Ok(());
    }
    output::print(&describe_work(&work, &recent_changes, Utc::now()));
    Ok(())
}

/// The text of `hub describe work`.
fn describe_work(work: &ManifestWork, changes: &[AuditEntry], now: DateTime<Utc>) -> String {
    let m = &work.metadata;
    let mut out = String::new();
    field(&mut out, "Name", &m.name);
    field(
        &mut out,
        "Cluster",
        m.namespace.as_deref().unwrap_or_default(),
    );
    field(&mut out, "Labels", output::labels(&m.labels));
    field(&mut out, "Annotations", output::labels(&m.annotations));
    field(
        &mut out,
        "Generation",
        m.generation.map_or("-".into(), |g| g.to_string()),
    );
    field(
        &mut out,
        "Resource Version",
        m.resource_version.as_deref().unwrap_or("-"),
    );
    field(&mut out, "Created", time(m.creation_timestamp, now));
    if m.deletion_timestamp.is_some() {
        field(&mut out, "Deleting since", time(m.deletion_timestamp, now));
    }
    field(
        &mut out,
        "Finalizers",
        if m.finalizers.is_empty() {
            "<none>".into()
        } else {
            m.finalizers.join(", ")
        },
    );
    field(&mut out, "Manifests", work.spec.workload.manifests.len());
    if let Some(d) = &work.spec.delete_option {
        field(
            &mut out,
            "Delete option",
            format!("{:?}", d.propagation_policy),
        );
    }
    out.push_str("Conditions:\n");
    out.push_str(&conditions_table(
        &work.status.conditions,
        m.generation,
        now,
    ));

    out.push_str("Resources:\n");
    let manifests = work
        .status
        .resource_status
        .as_ref()
        .map(|r| r.manifests.as_slice())
        .unwrap_or_default();
    if manifests.is_empty() {
        out.push_str("  <no status reported yet>\n");
    } else {
        let mut t = Table::new(&[
            "#",
            "KIND",
            "NAMESPACE/NAME",
            "APPLIED",
            "AVAILABLE",
            "READY",
            "MESSAGE",
        ]);
        for mc in manifests {
            let r = &mc.resource_meta;
            let shown = |type_: &str| {
                let c = mc.conditions.iter().find(|c| c.type_ == type_);
                status::shown_status(c, m.generation)
            };
            // The message that explains the most: a failed apply, else readiness.
            let message = [status::APPLIED, status::READY, status::AVAILABLE]
                .iter()
                .filter_map(|t| mc.conditions.iter().find(|c| c.type_ == *t))
                .find(|c| !c.is_true())
                .map(|c| {
                    if c.reason.is_empty() {
                        c.message.clone()
                    } else {
                        format!("{}: {}", c.reason, c.message)
                    }
                })
                .unwrap_or_default();
            t.row(vec![
                r.ordinal.to_string(),
                r.kind.clone(),
                if r.namespace.is_empty() {
                    r.name.clone()
                } else {
                    format!("{}/{}", r.namespace, r.name)
                },
                shown(status::APPLIED),
                shown(status::AVAILABLE),
                shown(status::READY),
                message,
            ]);
        }
        out.push_str(&indent(&t.render()));
    }

    let feedback: Vec<String> = manifests
        .iter()
        .filter_map(|mc| {
            let values = &mc.status_feedback.as_ref()?.values;
            if values.is_empty() {
                return None;
            }
            let r = &mc.resource_meta;
            let what = if r.namespace.is_empty() {
                format!("{} {}", r.kind, r.name)
            } else {
                format!("{} {}/{}", r.kind, r.namespace, r.name)
            };
            let values: Vec<String> = values
                .iter()
                .map(|v| {
                    let f = &v.field_value;
                    let value = f
                        .integer
                        .map(|i| i.to_string())
                        .or_else(|| f.string.clone())
                        .or_else(|| f.boolean.map(|b| b.to_string()))
                        .or_else(|| f.json_raw.clone())
                        .unwrap_or_default();
                    format!("{}={value}", v.name)
                })
                .collect();
            Some(format!("  {what}: {}\n", values.join(", ")))
        })
        .collect();
    if !feedback.is_empty() {
        out.push_str("Feedback:\n");
        out.extend(feedback);
    }

    out.push_str("Recent changes:\n");
    match changes {
        [] => out.push_str("  <none>\n"),
        entries => {
            let mut t = Table::new(&["TIME", "ACTOR", "ACTION", "DETAILS"]);
            for e in entries {
                t.row(vec![
                    e.at.to_rfc3339_opts(SecondsFormat::Secs, true),
                    e.actor.clone(),
                    e.action.clone(),
                    details(&e.details),
                ]);
            }
            out.push_str(&indent(&t.render()));
        }
    }
    out
}

/// `generation=2 created=false`, from an audit entry's details.
fn details(d: &Value) -> String {
    match d {
        Value::Object(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => "-".into(),
    }
}

async fn cluster(client: &HubClient, args: DescribeClusterArgs) -> Result<(), CliError> {
    let DescribeClusterArgs { name, output } = args;
    let cluster = client.get_cluster(&name).await?.value;
    let works = list_all_works(client, Some(&name), ListOptions::default()).await?;
    let mut counts = WorkCounts::default();
    for w in &works.items {
        let r = status::rollup(w);
        counts.total += 1;
        counts.applied += u32::from(r.applied);
        counts.ready += u32::from(r.ready);
        counts.degraded += u32::from(r.degraded);
    }
    let now = Utc::now();
    if let Some(format) = output {
        let doc = ClusterDescription {
            api_version: "v1",
            kind: "ClusterDescription",
            lease_age_seconds: cluster
                .status
                .last_lease_time
                .map(|t| (now - t).num_seconds()),
            cluster,
            works: counts,
        };
        output::print(&output::document(&doc, format)?);
        return Ok(());
    }
    output::print(&describe_cluster(&cluster, &counts, now));
    Ok(())
}

/// The text of `hub describe cluster`.
fn describe_cluster(c: &ManagedCluster, works: &WorkCounts, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    field(&mut out, "Name", &c.metadata.name);
    field(&mut out, "Labels", output::labels(&c.metadata.labels));
    field(&mut out, "Accepted", c.spec.hub_accepts_client);
    field(
        &mut out,
        "Kubernetes",
        c.status
            .version
            .as_ref()
            .map(|v| v.kubernetes.clone())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "-".into()),
    );
    field(
        &mut out,
        "Created",
        time(c.metadata.creation_timestamp, now),
    );
    field(
        &mut out,
        "Last lease",
        match c.status.last_lease_time {
            Some(_) => time(c.status.last_lease_time, now),
            None => "<never>".into(),
        },
    );
    if c.metadata.deletion_timestamp.is_some() {
        field(
            &mut out,
            "Deleting since",
            time(c.metadata.deletion_timestamp, now),
        );
    }
    field(
        &mut out,
        "Works",
        format!(
            "{} ({} applied, {} ready, {} degraded)",
            works.total, works.applied, works.ready, works.degraded
        ),
    );
    out.push_str("Conditions:\n");
    out.push_str(&conditions_table(&c.status.conditions, None, now));
    out.push_str("Taints:\n");
    if c.spec.taints.is_empty() {
        out.push_str("  <none>\n");
    } else {
        for t in &c.spec.taints {
            let text = |k: &str| {
                t.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let value = text("value");
            out.push_str(&format!(
                "  {}{}:{}\n",
                text("key"),
                if value.is_empty() {
                    String::new()
                } else {
                    format!("={value}")
                },
                text("effect")
            ));
        }
    }
    out.push_str("Claims:\n");
    if c.status.claims.is_empty() {
        out.push_str("  <none>\n");
    } else {
        let mut t = Table::new(&["NAME", "VALUE"]);
        for claim in &c.status.claims {
            t.row(vec![claim.name.clone(), claim.value.clone()]);
        }
        out.push_str(&indent(&t.render()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_work_reads_like_kubectl_describe() {
        let now = Utc::now();
        let work: ManifestWork = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "c1", "generation": 2, "resourceVersion": "9", "finalizers": ["klusterlet/cleanup"]},
            "spec": {"workload": {"manifests": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "c2VjcmV0"}}]}},
            "status": {
                "conditions": [{"type": "Applied", "status": "False", "reason": "AppliedManifestWorkFailed", "observedGeneration": 2, "message": "1 of 2 failed"},
                               {"type": "Ready", "status": "True", "observedGeneration": 1}],
                "resourceStatus": {"manifests": [{
                    "resourceMeta": {"ordinal": 0, "group": "apps", "version": "v1", "kind": "Deployment", "namespace": "ns", "name": "api"},
                    "conditions": [{"type": "Applied", "status": "False", "reason": "Forbidden", "message": "deployments.apps is forbidden", "observedGeneration": 2}],
                    "statusFeedback": {"values": [{"name": "ReadyReplicas", "fieldValue": {"type": "Integer", "integer": 2}}]}
                }]}
            }
        }))
        .unwrap();
        let entry = AuditEntry {
            id: 1,
            at: now,
            actor: "admin".into(),
            action: "work.put".into(),
            target: "clusters/c1/manifestworks/web".into(),
            source: "127.0.0.1:1".into(),
            details: json!({"generation": 2, "created": false}),
        };
        let text = describe_work(&work, &[entry], now);
        for want in [
            "Name:             web\n",
            "Cluster:          c1\n",
            "Finalizers:       klusterlet/cleanup\n",
            "1 (stale)",
            "Deployment   ns/api",
            "Forbidden: deployments.apps is forbidden",
            "Deployment ns/api: ReadyReplicas=2",
            "admin   work.put   generation=2 created=false",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(describe_work(&work, &[], now).contains("Recent changes:\n  <none>\n"));
    }
}
