//! What the hub writes into a cluster's status: its conditions (acceptance, joining,
//! lease-driven availability) and the claims its agent reports.

use api::{Claim, Condition, ManagedCluster, claims};

/// The taint a cluster gets while its lease has expired.
pub const UNREACHABLE_TAINT: &str = "cluster.open-cluster-management.io/unreachable";
/// The cluster conditions (following the lease, a joined agent, the hub's acceptance).
pub use api::status::{
    CLUSTER_ACCEPTED as ACCEPTED, CLUSTER_AVAILABLE as AVAILABLE, CLUSTER_JOINED as JOINED,
};

/// Sets a condition, keeping its transition time when the status did not change.
pub fn set_condition(
    conds: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: chrono::DateTime<chrono::Utc>,
) {
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(now);
        }
        c.status = status.into();
        c.reason = reason.into();
        c.message = message.into();
    } else {
        conds.push(Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: Some(now),
        });
    }
}

/// Sets the claims an agent reported, and the Kubernetes version among them.
pub fn apply_claims(cluster: &mut ManagedCluster, claims: &[Claim]) {
    cluster.status.claims = claims.to_vec();
    // OCM's status.allocatable and status.capacity, which placement scores read; rebuilt
    // from each report, so a resource the agent stops reporting (least privilege) goes.
    cluster.status.allocatable.clear();
    cluster.status.capacity.clear();
    for (claim, field, resource) in claims::RESOURCES {
        if let Some(c) = claims
            .iter()
            .find(|c| c.name == claim && is_quantity(&c.value))
        {
            let map = if field == "allocatable" {
                &mut cluster.status.allocatable
            } else {
                &mut cluster.status.capacity
            };
            map.insert(resource.to_string(), c.value.clone());
        }
    }
    if let Some(v) = claims.iter().find(|c| c.name == claims::KUBE_VERSION) {
        cluster.status.version = Some(api::ClusterVersion {
            kubernetes: v.value.clone(),
        });
    }
}

/// Whether a claimed value has the shape of a Kubernetes quantity (`3500m`, `8Gi`, `130`,
/// `1.5e3`): only such values reach `status.allocatable`/`capacity`, which placement
/// parses; anything else stays a plain claim.
fn is_quantity(value: &str) -> bool {
    let number_len = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_len);
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || (suffix.len() > 1
        && suffix.starts_with(['e', 'E'])
        && suffix[1..]
            .trim_start_matches(['+', '-'])
            .chars()
            .all(|c| c.is_ascii_digit()));
    value.len() <= 64
        && number.chars().any(|c| c.is_ascii_digit())
        && number.matches('.').count() <= 1
        && suffix_ok
}

/// Whether the cluster has an agent that joined.
pub fn joined(cluster: &ManagedCluster) -> bool {
    cluster.condition(JOINED).is_some_and(Condition::is_true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, value: &str) -> Claim {
        Claim {
            name: name.into(),
            value: value.into(),
        }
    }

    /// The resource claims become OCM's `status.allocatable` and `status.capacity`; a
    /// report without them (an agent that may not list nodes) clears them.
    #[test]
    fn resource_claims_fill_allocatable_and_capacity() {
        let mut cluster = ManagedCluster::new("c1", Default::default());
        apply_claims(
            &mut cluster,
            &[
                claim(claims::KUBE_VERSION, "v1.33.13"),
                claim(claims::CPU, "3500m"),
                claim(claims::MEMORY, "8Gi"),
                claim(claims::PODS, "130"),
                claim(claims::CAPACITY_CPU, "4"),
                claim(claims::CAPACITY_MEMORY, "9Gi"),
                claim(claims::CAPACITY_PODS, "130"),
            ],
        );
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(
            cluster.status.allocatable,
            map(&[("cpu", "3500m"), ("memory", "8Gi"), ("pods", "130")])
        );
        assert_eq!(
            cluster.status.capacity,
            map(&[("cpu", "4"), ("memory", "9Gi"), ("pods", "130")])
        );
        assert_eq!(
            cluster.status.version.as_ref().unwrap().kubernetes,
            "v1.33.13"
        );
        apply_claims(&mut cluster, &[claim(claims::KUBE_VERSION, "v1.33.13")]);
        assert!(cluster.status.allocatable.is_empty() && cluster.status.capacity.is_empty());
        // Values that are not quantities stay claims and never reach the resource maps.
        for bad in ["lots", "", "1.2.3", "12Zi", "<script>", &"9".repeat(65)] {
            apply_claims(&mut cluster, &[claim(claims::CPU, bad)]);
            assert!(cluster.status.allocatable.is_empty(), "{bad:?}");
            assert_eq!(cluster.status.claims.len(), 1);
        }
        for good in ["3500m", "8Gi", "130", "1.5", "12e3"] {
            apply_claims(&mut cluster, &[claim(claims::CPU, good)]);
            assert_eq!(cluster.status.allocatable["cpu"], good);
        }
    }
}
