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
    if let Some(v) = claims.iter().find(|c| c.name == claims::KUBE_VERSION) {
        cluster.status.version = Some(api::ClusterVersion {
            kubernetes: v.value.clone(),
        });
    }
}

/// Whether the cluster has an agent that joined.
pub fn joined(cluster: &ManagedCluster) -> bool {
    cluster.condition(JOINED).is_some_and(Condition::is_true)
}
