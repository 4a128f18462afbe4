//! The placement API as `bench placement` calls it (through `HubClient`'s fleet calls), and
//! the placements and sets it writes.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::fleet::{
    ClusterPredicate, ClusterSelector, LabelSelector, LocalPlacementReference,
    ManifestWorkReplicaSet, ManifestWorkReplicaSetSpec, PLACEMENT_API_VERSION, Placement,
    PlacementSpec, SET_API_VERSION, Toleration,
};
use api::{HubClient, ListOptions, ManifestWork, ManifestWorkSpec, ObjectMeta};
use serde_json::json;

/// The namespace every placement and set of the bench lives in.
pub(super) const NAMESPACE: &str = "bench";
/// How long a blocking `GET` waits at most before it is asked again.
pub(super) const BLOCK: Duration = Duration::from_secs(10);

/// `PUT` of a placement.
pub(super) async fn put_placement(admin: &HubClient, p: &Placement) -> anyhow::Result<Placement> {
    Ok(admin
        .put_placement(NAMESPACE, p)
        .await
        .with_context(|| format!("PUT placement {}", p.metadata.name))?
        .value)
}

/// `PUT` of a set.
pub(super) async fn put_set(admin: &HubClient, s: &ManifestWorkReplicaSet) -> anyhow::Result<()> {
    admin
        .put_set(NAMESPACE, s)
        .await
        .with_context(|| format!("PUT manifestworkreplicaset {}", s.metadata.name))?;
    Ok(())
}

/// Options of a read that blocks past `index` when given.
pub(super) fn blocking(index: Option<u64>) -> ListOptions {
    ListOptions {
        index,
        wait: index.map(|_| BLOCK),
        ..Default::default()
    }
}

/// A placement's decided clusters, and the index they are consistent with; blocks until
/// they changed past `index` when given.
pub(super) async fn decisions(
    admin: &HubClient,
    placement: &str,
    index: Option<u64>,
) -> anyhow::Result<(HashSet<String>, u64)> {
    let list = admin
        .placement_decisions(NAMESPACE, placement, &blocking(index))
        .await
        .with_context(|| format!("GET the decisions of {placement}"))?;
    let clusters = list
        .value
        .items
        .iter()
        .flat_map(|d| d.status.decisions.iter().map(|c| c.cluster_name.clone()))
        .collect();
    Ok((clusters, list.index.max(list.value.metadata.index)))
}

/// Follows a placement's decisions until `done` holds for them or `timeout` runs out;
/// returns them, or `None` on timeout.
pub(super) async fn wait_decisions(
    admin: &HubClient,
    placement: &str,
    timeout: Duration,
    done: impl Fn(&HashSet<String>) -> bool,
) -> anyhow::Result<Option<HashSet<String>>> {
    let deadline = Instant::now() + timeout;
    let mut index = None;
    loop {
        let (clusters, i) = decisions(admin, placement, index).await?;
        if done(&clusters) {
            return Ok(Some(clusters));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        index = Some(i);
    }
}

/// A placement in the bench's namespace whose clusters pass `selector`, `number` of them
/// when given, tolerating `tolerate` taints.
pub(super) fn placement(
    name: &str,
    selector: LabelSelector,
    number: Option<i32>,
    tolerate: &[&str],
) -> Placement {
    Placement {
        api_version: PLACEMENT_API_VERSION.into(),
        kind: "Placement".into(),
        metadata: ObjectMeta {
            name: name.into(),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        spec: PlacementSpec {
            number_of_clusters: number,
            predicates: vec![ClusterPredicate {
                required_cluster_selector: ClusterSelector {
                    label_selector: Some(selector),
                    ..Default::default()
                },
                ..Default::default()
            }],
            tolerations: tolerate
                .iter()
                .map(|key| Toleration {
                    key: key.to_string(),
                    operator: Some("Exists".into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub(super) fn match_labels(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::from([(key.to_string(), value.to_string())]),
        ..Default::default()
    }
}

/// The small ConfigMap every work of the bench carries.
pub(super) fn config_map(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"placed": "by bench placement"},
    })
}

/// A set named `name` over `placement` whose template is [`config_map`].
pub(super) fn set(name: &str, placement: &str) -> ManifestWorkReplicaSet {
    let template = ManifestWork::new("", name, vec![config_map(name)]);
    ManifestWorkReplicaSet {
        api_version: SET_API_VERSION.into(),
        kind: "ManifestWorkReplicaSet".into(),
        metadata: ObjectMeta {
            name: name.into(),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        spec: ManifestWorkReplicaSetSpec {
            manifest_work_template: ManifestWorkSpec {
                workload: template.spec.workload,
                ..Default::default()
            },
            placement_refs: vec![LocalPlacementReference {
                name: placement.into(),
                rollout_strategy: Some(json!({"type": "All"})),
            }],
            ..Default::default()
        },
        ..Default::default()
    }
}
