//! Leases: agents' heartbeats (held in memory and written a flush period at a time), the
//! lease-driven availability of a cluster, and which leases ran out.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use api::{Claim, Condition, ManagedCluster};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::Hub;
use super::cluster_status::{AVAILABLE, UNREACHABLE_TAINT, apply_claims, set_condition};
use super::error::{Error, Result};
use super::writer::{Batch, Reads, WriteOp};

/// What this hub holds of leases between flushes and checks.
#[derive(Default)]
pub(super) struct LeaseBook {
    /// Lease renewals not yet in the store: heartbeats are written in one statement a
    /// flush period instead of one commit each (1,000 agents renewing together made every
    /// other write wait ~1 s). Losing them in a crash costs at most one flush period of a
    /// lease, far inside the grace.
    pending: Mutex<HashMap<String, DateTime<Utc>>>,
    /// What the lease check knows of each cluster, by resource version.
    facts: Mutex<HashMap<String, LeaseFacts>>,
    /// The last time this hub could not read or write leases in the store (a database
    /// failover, an outage): see [`counted_from`].
    store_lost_at: Mutex<Option<DateTime<Utc>>>,
}

/// When a lease's grace counts from: its last renewal the hub knows of, but no earlier
/// than the last time the store could not be reached. While the database is away, agents'
/// renewals reach the hubs, which cannot write them, and another hub cannot see them: the
/// stored lease times are as old as the outage is long. Without this floor every hub would
/// mark every cluster of the fleet unavailable (with the unreachable taint, which moves
/// placements) the moment the database came back from an outage longer than the grace,
/// although each agent kept renewing. So an outage stops the clock, as the Kubernetes node
/// lifecycle controller counts from its own observations: a cluster whose agent is really
/// gone is marked a grace after the database is back.
fn counted_from(
    last_lease: Option<DateTime<Utc>>,
    store_lost_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    last_lease.max(store_lost_at)
}

/// Sets the lease-driven availability (and the unreachable taint), and fresh claims.
/// Writes nothing when nothing changes, so renewals do not advance the index.
#[derive(Debug, Clone)]
pub struct SetAvailability {
    /// The cluster.
    pub cluster: String,
    /// Whether its agent renews its lease.
    pub available: bool,
    /// Claims reported with the renewal.
    pub claims: Option<Vec<Claim>>,
}

#[async_trait]
impl WriteOp for SetAvailability {
    type Output = ManagedCluster;

    fn reads(&self) -> Reads {
        Reads {
            clusters: vec![self.cluster.clone()],
            ..Default::default()
        }
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<ManagedCluster> {
        set_availability(batch, &self.cluster, self.available, self.claims.as_deref()).await
    }
}

async fn set_availability(
    batch: &mut Batch<'_>,
    name: &str,
    available: bool,
    claims: Option<&[Claim]>,
) -> Result<ManagedCluster> {
    let Some(old) = batch.tx.get_cluster(name).await? else {
        return Err(Error::NotFound(format!("cluster {name:?} not found")));
    };
    let mut cluster = old.clone();
    let now = batch.now;
    let conds = &mut cluster.status.conditions;
    if available {
        set_condition(
            conds,
            AVAILABLE,
            "True",
            "ManagedClusterAvailable",
            "the agent renews its lease",
            now,
        );
        cluster
            .spec
            .taints
            .retain(|t| t.get("key").and_then(|k| k.as_str()) != Some(UNREACHABLE_TAINT));
    } else {
        set_condition(
            conds,
            AVAILABLE,
            "Unknown",
            "ManagedClusterLeaseUpdateStopped",
            "the agent stopped renewing its lease",
            now,
        );
        if !cluster
            .spec
            .taints
            .iter()
            .any(|t| t.get("key").and_then(|k| k.as_str()) == Some(UNREACHABLE_TAINT))
        {
            cluster
                .spec
                .taints
                .push(json!({"key": UNREACHABLE_TAINT, "effect": "NoSelect", "timeAdded": now}));
        }
    }
    if let Some(c) = claims {
        apply_claims(&mut cluster, c);
    }
    if cluster == old {
        return Ok(old);
    }
    cluster.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_cluster(&cluster, batch.next_index()).await?;
    batch.record_cluster(name, Some(&old), Some(&cluster));
    Ok(cluster)
}

/// Whether a cluster is due to be marked unavailable: it has an agent that was accepted,
/// is not marked Unknown yet, and its last lease (or acceptance) is older than `grace`.
pub fn lease_expired(
    cluster: &ManagedCluster,
    last_lease: Option<DateTime<Utc>>,
    grace: std::time::Duration,
    now: DateTime<Utc>,
) -> bool {
    LeaseFacts::of(cluster).expired(last_lease, grace, now)
}

/// What the lease check needs of a cluster, kept per resource version so the check reads
/// only the clusters that changed since the last one (with 10,000 clusters, parsing every
/// document each second was most of the hub's CPU).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct LeaseFacts {
    resource_version: u64,
    /// When its agent was accepted, if it has one; `None`: nothing to expire.
    joined_at: Option<DateTime<Utc>>,
    /// Already marked Unknown by a lease check.
    marked: bool,
}

impl LeaseFacts {
    fn of(cluster: &ManagedCluster) -> Self {
        let joined = cluster
            .condition(api::status::CLUSTER_JOINED)
            .filter(|c| c.is_true());
        let marked = cluster
            .condition(AVAILABLE)
            .is_some_and(|c| c.status == "Unknown" && c.reason != "AwaitingLease");
        LeaseFacts {
            resource_version: cluster
                .metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or_default(),
            // A joined cluster without a transition time counts from now: never expired
            // at once.
            joined_at: joined.map(|c| c.last_transition_time.unwrap_or_else(Utc::now)),
            marked,
        }
    }

    fn expired(
        &self,
        last_lease: Option<DateTime<Utc>>,
        grace: std::time::Duration,
        now: DateTime<Utc>,
    ) -> bool {
        let Some(joined_at) = self.joined_at else {
            return false;
        };
        if self.marked {
            return false;
        }
        let since = last_lease.unwrap_or(joined_at);
        now.signed_duration_since(since)
            .to_std()
            .is_ok_and(|d| d > grace)
    }
}

impl Hub {
    /// A heartbeat from the cluster's agent: recorded without touching the change index,
    /// unless availability (or the claims) change.
    #[tracing::instrument(skip(self, renewal))]
    pub async fn renew_lease(
        &self,
        cluster: &str,
        renewal: &api::LeaseRenewal,
    ) -> Result<api::LeaseStatus> {
        let now = Utc::now();
        let current = self
            .cache
            .cluster(cluster)
            .await?
            .ok_or_else(|| Error::NotFound(format!("cluster {cluster:?} not found")))?;
        self.lease_book
            .pending
            .lock()
            .expect("lease lock")
            .insert(cluster.to_string(), now);
        let available = current.condition(AVAILABLE).is_some_and(Condition::is_true);
        let claims_changed = renewal
            .claims
            .as_ref()
            .is_some_and(|c| *c != current.status.claims);
        if !available || claims_changed {
            let op = SetAvailability {
                cluster: cluster.into(),
                available: true,
                claims: renewal.claims.clone(),
            };
            self.writer.write(op).await?;
        }
        Ok(api::LeaseStatus {
            lease_interval_seconds: self.settings.lease_interval.as_secs().max(1),
            renewed_at: now,
        })
    }

    /// Writes the lease renewals received since the last flush to the store; on failure
    /// they are kept for the next one (unless a newer renewal came meanwhile).
    #[tracing::instrument(skip(self))]
    pub async fn flush_leases(&self) -> Result<usize> {
        let taken = std::mem::take(&mut *self.lease_book.pending.lock().expect("lease lock"));
        if taken.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(String, chrono::DateTime<Utc>)> = taken.into_iter().collect();
        match self.store.renew_leases(&rows).await {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                self.note_store_lost();
                let mut pending = self.lease_book.pending.lock().expect("lease lock");
                for (cluster, at) in rows {
                    pending.entry(cluster).or_insert(at);
                }
                Err(e.into())
            }
        }
    }

    /// Every cluster's last lease renewal: the store's, or a newer one this hub received
    /// and has not written yet.
    pub async fn leases(&self) -> Result<BTreeMap<String, DateTime<Utc>>> {
        let mut leases = self.store.leases().await?;
        for (cluster, at) in self.lease_book.pending.lock().expect("lease lock").iter() {
            let stored = leases.entry(cluster.clone()).or_insert(*at);
            *stored = (*stored).max(*at);
        }
        Ok(leases)
    }

    /// The lease facts of every cluster: from the cache where its resource version is
    /// unchanged, read from the store where it changed (one list when many did).
    async fn current_lease_facts(&self) -> Result<Vec<(String, LeaseFacts)>> {
        let versions = self.store.cluster_versions().await?;
        let stale: Vec<&str> = {
            let cache = self.lease_book.facts.lock().expect("lease facts lock");
            versions
                .iter()
                .filter(|(n, rv)| cache.get(n).is_none_or(|f| f.resource_version != *rv))
                .map(|(n, _)| n.as_str())
                .collect()
        };
        let mut fresh = Vec::new();
        if stale.len() > 64 {
            fresh = self.store.list_clusters().await?;
        } else {
            for name in stale {
                fresh.extend(self.store.get_cluster(name).await?);
            }
        }
        let mut cache = self.lease_book.facts.lock().expect("lease facts lock");
        for c in &fresh {
            cache.insert(c.metadata.name.clone(), LeaseFacts::of(c));
        }
        let live: std::collections::HashSet<&str> =
            versions.iter().map(|(n, _)| n.as_str()).collect();
        cache.retain(|n, _| live.contains(n.as_str()));
        Ok(cache.iter().map(|(n, f)| (n.clone(), f.clone())).collect())
    }

    /// The clusters whose lease ran out (by this hub's clock) and that are not marked
    /// unavailable yet.
    #[tracing::instrument(skip(self))]
    pub async fn expired_leases(&self) -> Result<Vec<String>> {
        let now = Utc::now();
        let read =
            async { Ok::<_, Error>((self.leases().await?, self.current_lease_facts().await?)) };
        let (leases, facts) = read.await.inspect_err(|_| self.note_store_lost())?;
        let lost = *self.lease_book.store_lost_at.lock().expect("lease lock");
        Ok(facts
            .into_iter()
            .filter(|(name, f)| {
                let last = leases.get(name).copied().or(f.joined_at);
                f.expired(counted_from(last, lost), self.settings.lease_grace, now)
            })
            .map(|(name, _)| name)
            .collect())
    }

    /// Records that the store could not be reached now (see [`counted_from`]).
    fn note_store_lost(&self) {
        *self.lease_book.store_lost_at.lock().expect("lease lock") = Some(Utc::now());
    }

    /// Marks a cluster whose lease ran out as unavailable, with the unreachable taint.
    #[tracing::instrument(skip(self))]
    pub async fn mark_lease_expired(&self, cluster: &str) -> Result<ManagedCluster> {
        let op = SetAvailability {
            cluster: cluster.into(),
            available: false,
            claims: None,
        };
        Ok(self.writer.write(op).await?.value)
    }
}

/// Fills `status.lastLeaseTime` from the lease table (served live, never indexed).
pub fn with_lease(
    mut cluster: ManagedCluster,
    leases: &BTreeMap<String, DateTime<Utc>>,
) -> ManagedCluster {
    cluster.status.last_lease_time = leases.get(&cluster.metadata.name).copied();
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn joined(at: &str) -> LeaseFacts {
        LeaseFacts {
            resource_version: 1,
            joined_at: Some(t(at)),
            marked: false,
        }
    }

    const GRACE: std::time::Duration = std::time::Duration::from_secs(15);

    #[test]
    fn an_outage_of_the_store_restarts_the_grace_from_its_end() {
        let facts = joined("2026-01-01T09:00:00Z");
        let renewed = Some(t("2026-01-01T10:00:00Z"));
        // 20 s later, past the 15 s grace: without an outage the lease ran out.
        let now = t("2026-01-01T10:00:20Z");
        assert!(facts.expired(counted_from(renewed, None), GRACE, now));
        // The store was unreachable until 10:00:19: renewals may have reached other hubs
        // that could not write them, so the grace counts from then.
        let lost = Some(t("2026-01-01T10:00:19Z"));
        assert!(!facts.expired(counted_from(renewed, lost), GRACE, now));
        // An agent that is really gone is marked a grace after the outage.
        assert!(facts.expired(
            counted_from(renewed, lost),
            GRACE,
            t("2026-01-01T10:00:35Z")
        ));
        // An outage long ago changes nothing for a lease renewed since.
        let long_ago = Some(t("2026-01-01T09:30:00Z"));
        assert_eq!(counted_from(renewed, long_ago), renewed);
    }

    #[test]
    fn a_cluster_that_never_renewed_still_counts_from_its_joining() {
        let facts = joined("2026-01-01T10:00:10Z");
        let lost = Some(t("2026-01-01T10:00:00Z"));
        let since = counted_from(None.or(facts.joined_at), lost);
        assert_eq!(since, Some(t("2026-01-01T10:00:10Z")));
        assert!(!facts.expired(since, GRACE, t("2026-01-01T10:00:24Z")));
        assert!(facts.expired(since, GRACE, t("2026-01-01T10:00:26Z")));
    }
}
