//! `deleteOption.ttlSecondsAfterFinished`: when a finished work is due, and the deletion the
//! TTL controller asks for. The deletion is the normal one (deletionTimestamp, then the
//! agent cleans up and removes its finalizer); it is checked again in the write's own
//! transaction, so a work changed since the controller looked (a new generation, a status
//! that is no longer Complete) is left alone, and asking twice deletes once.

use api::status::COMPLETE;
use api::{ManifestWork, find_condition};
use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::Hub;
use super::error::Result;
use super::validate::validate_cluster_name;
use super::works::{WorkWrite, delete, owning_set};
use super::writer::{Audit, Batch, Caller, Reads, WriteOp};

/// The actor the audit log names for these deletions.
pub const TTL_CONTROLLER: &str = "controller:ttl-after-finished";

/// When `work` is due for deletion: `ttlSecondsAfterFinished` after its `Complete`
/// condition turned True, for its current generation. `None` when it has no TTL, is not
/// Complete for this generation, is already deleting, or belongs to a set (the set decides
/// what its works are, as in OCM).
pub fn expiry(work: &ManifestWork) -> Option<DateTime<Utc>> {
    if work.metadata.deletion_timestamp.is_some() || owning_set(work).is_some() {
        return None;
    }
    let ttl = work.ttl_seconds_after_finished()?;
    let complete = find_condition(&work.status.conditions, COMPLETE)?;
    if !complete.is_true() || complete.observed_generation != work.metadata.generation {
        return None;
    }
    // The TTL is the user's number: a huge one never expires rather than overflowing.
    complete
        .last_transition_time?
        .checked_add_signed(TimeDelta::try_seconds(ttl.max(0))?)
}

/// Whether the work's spec asks for deletion after finishing (whatever its status).
pub fn has_ttl(work: &ManifestWork) -> bool {
    work.metadata.deletion_timestamp.is_none() && work.ttl_seconds_after_finished().is_some()
}

/// Deletes a work whose TTL after finishing ran out, if it still has.
#[derive(Debug, Clone)]
struct ExpireWork {
    cluster: String,
    name: String,
}

/// What an [`ExpireWork`] did.
#[derive(Debug, Clone)]
pub struct Expired {
    /// The deletion, when the work was still due.
    pub deleted: Option<WorkWrite>,
    /// Its TTL and when it finished (for the audit entry).
    ttl: Option<i64>,
    completed: Option<DateTime<Utc>>,
}

#[async_trait]
impl WriteOp for ExpireWork {
    type Output = Expired;

    fn reads(&self) -> Reads {
        Reads {
            works: vec![(self.cluster.clone(), self.name.clone())],
            clusters: Vec::new(),
        }
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<Expired> {
        let not_due = Expired {
            deleted: None,
            ttl: None,
            completed: None,
        };
        let Some(work) = batch.tx.get_work(&self.cluster, &self.name).await? else {
            return Ok(not_due);
        };
        match expiry(&work) {
            Some(at) if at <= batch.now => {}
            _ => return Ok(not_due),
        }
        let ttl = work.ttl_seconds_after_finished();
        let completed =
            find_condition(&work.status.conditions, COMPLETE).and_then(|c| c.last_transition_time);
        let deleted = delete(batch, &self.cluster, &self.name, None).await?;
        Ok(Expired {
            deleted: Some(deleted),
            ttl,
            completed,
        })
    }

    fn audit(&self, e: &Expired) -> Option<Audit> {
        let deleted = e.deleted.as_ref()?;
        Some(Audit {
            action: "work.delete",
            target: format!("clusters/{}/manifestworks/{}", self.cluster, self.name),
            details: json!({
                "removed": deleted.gone,
                "reason": "ttlSecondsAfterFinished",
                "ttlSecondsAfterFinished": e.ttl,
                "completedAt": e.completed,
            }),
        })
    }
}

impl Hub {
    /// Deletes the work if its TTL after finishing has run out (checked again here), with an
    /// audit entry naming the TTL; `None` when it was not due (or is gone).
    pub async fn expire_work(&self, cluster: &str, name: &str) -> Result<Option<WorkWrite>> {
        validate_cluster_name(cluster)?;
        let by = Caller {
            actor: TTL_CONTROLLER.into(),
            source: "controller".into(),
        };
        let op = ExpireWork {
            cluster: cluster.into(),
            name: name.into(),
        };
        Ok(self.writer.write_by(op, Some(by)).await?.value.deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Condition;
    use serde_json::json;

    fn work(ttl: Option<i64>, complete: Option<(&str, i64)>) -> ManifestWork {
        let mut w: ManifestWork = serde_json::from_value(json!({
            "metadata": {"name": "w", "namespace": "c1", "generation": 3},
            "spec": {"deleteOption": {"propagationPolicy": "Foreground", "ttlSecondsAfterFinished": ttl}}
        }))
        .unwrap();
        if let Some((status, generation)) = complete {
            w.status.conditions.push(Condition {
                type_: COMPLETE.into(),
                status: status.into(),
                reason: "ConditionRulesAggregated".into(),
                observed_generation: Some(generation),
                last_transition_time: Some(t0()),
                ..Default::default()
            });
        }
        w
    }

    fn t0() -> DateTime<Utc> {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn due_ttl_after_completion_for_the_current_generation() {
        let due = expiry(&work(Some(30), Some(("True", 3))));
        assert_eq!(due, Some(t0() + TimeDelta::seconds(30)));
        assert_eq!(expiry(&work(Some(0), Some(("True", 3)))), Some(t0()));
        assert!(has_ttl(&work(Some(30), None)));
    }

    #[test]
    fn never_due_otherwise() {
        assert_eq!(expiry(&work(None, Some(("True", 3)))), None, "no TTL");
        assert!(!has_ttl(&work(None, None)));
        assert_eq!(expiry(&work(Some(30), None)), None, "not complete");
        assert_eq!(expiry(&work(Some(30), Some(("False", 3)))), None);
        assert_eq!(
            expiry(&work(Some(30), Some(("True", 2)))),
            None,
            "complete for an older generation: the new spec has not finished"
        );
        assert_eq!(
            expiry(&work(Some(i64::MAX), Some(("True", 3)))),
            None,
            "a TTL past the end of time never expires"
        );
        let mut deleting = work(Some(30), Some(("True", 3)));
        deleting.metadata.deletion_timestamp = Some(t0());
        assert_eq!(expiry(&deleting), None);
        assert!(!has_ttl(&deleting));
        let mut owned = work(Some(30), Some(("True", 3)));
        owned
            .metadata
            .labels
            .insert(api::fleet::SET_LABEL.into(), "ns.set".into());
        assert_eq!(
            expiry(&owned),
            None,
            "a set's works are the set's to delete"
        );
    }
}
