//! `GET /api/v1/manifestworks/summary`: per work name across clusters, how many clusters
//! applied, made available and made ready the current generation, and what failed.

use std::collections::BTreeMap;

use api::{FailingResource, ManagedCluster, ManifestWork, UnavailableCluster, WorkSummary, status};

/// Whether a cluster's lease has expired (its agent is not reporting).
pub fn unavailable(cluster: &ManagedCluster) -> bool {
    status::cluster_available(cluster) == Some(false)
}

/// Summarises works by name. `clusters` gives availability (and the live lease time).
pub fn summarize(
    works: &[ManifestWork],
    clusters: &BTreeMap<String, ManagedCluster>,
) -> Vec<WorkSummary> {
    let mut by_name: BTreeMap<String, WorkSummary> = BTreeMap::new();
    for w in works {
        let cluster = w.metadata.namespace.clone().unwrap_or_default();
        let s = by_name
            .entry(w.metadata.name.clone())
            .or_insert_with(|| WorkSummary {
                name: w.metadata.name.clone(),
                ..Default::default()
            });
        s.clusters += 1;
        let down = clusters.get(&cluster).filter(|c| unavailable(c));
        if let Some(c) = down {
            s.unavailable.push(UnavailableCluster {
                cluster: cluster.clone(),
                last_lease_time: c.status.last_lease_time,
            });
        }
        let r = status::rollup(w);
        if !r.reported || down.is_some() {
            s.unknown += 1;
        }
        s.applied += u32::from(r.applied);
        s.available += u32::from(r.available);
        s.ready += u32::from(r.ready);
        s.degraded += u32::from(r.degraded);
        s.progressing += u32::from(r.progressing);
        if !r.reported {
            continue;
        }
        for m in status::manifests(w) {
            if let Some(c) = status::manifest_failure(m) {
                let meta = &m.resource_meta;
                s.failing.push(FailingResource {
                    cluster: cluster.clone(),
                    ordinal: meta.ordinal,
                    kind: meta.kind.clone(),
                    namespace: meta.namespace.clone(),
                    name: meta.name.clone(),
                    condition: c.type_.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                });
            }
        }
    }
    by_name.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Condition;
    use serde_json::json;

    fn work(
        cluster: &str,
        generation: i64,
        conds: &[(&str, &str, i64)],
        manifests: serde_json::Value,
    ) -> ManifestWork {
        let conditions: Vec<_> = conds
            .iter()
            .map(|(t, s, g)| json!({"type": t, "status": s, "observedGeneration": g}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": cluster, "generation": generation},
            "status": {"conditions": conditions, "resourceStatus": {"manifests": manifests}}
        }))
        .unwrap()
    }

    #[test]
    fn counts_current_status_and_names_failures() {
        let failing = json!([{"resourceMeta": {"ordinal": 1, "kind": "Deployment", "namespace": "ns", "name": "api"},
            "conditions": [{"type": "Applied", "status": "False", "reason": "Forbidden", "message": "cannot create"}]}]);
        let works = vec![
            work(
                "a",
                2,
                &[("Applied", "True", 2), ("Ready", "True", 2)],
                json!([]),
            ),
            work(
                "b",
                2,
                &[("Applied", "False", 2), ("Degraded", "True", 2)],
                failing,
            ),
            work("c", 3, &[("Applied", "True", 2)], json!([])),
        ];
        let mut down = ManagedCluster::new("c", Default::default());
        down.status.conditions.push(Condition {
            type_: "ManagedClusterConditionAvailable".into(),
            status: "Unknown".into(),
            ..Default::default()
        });
        let clusters = BTreeMap::from([("c".to_string(), down)]);
        let s = &summarize(&works, &clusters)[0];
        assert_eq!(
            (s.clusters, s.applied, s.ready, s.degraded, s.unknown),
            (3, 1, 1, 1, 1),
            "{s:?}"
        );
        assert_eq!(s.failing.len(), 1);
        assert_eq!(s.failing[0].cluster, "b");
        assert_eq!(s.failing[0].reason, "Forbidden");
        assert_eq!(s.unavailable[0].cluster, "c");
    }
}
