//! Where one work on one cluster stands, from what the hub last said about both.

use api::{Condition, ManagedCluster, ManifestWork, status};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::condition::WaitFor;

/// One resource of a work that is not there yet or failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceReport {
    /// Index of the manifest in the work.
    pub ordinal: i32,
    /// `group/version` or `version`.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Namespace; absent for cluster-scoped resources.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The condition concerned: `Applied`, `Available` or `Ready`.
    pub condition: String,
    /// Its status: `False` or `Unknown`.
    pub status: String,
    /// Its reason (for `Applied=False`, Kubernetes' reason such as `Invalid`, `Forbidden`).
    pub reason: String,
    /// Its message (for `Applied=False`, Kubernetes' message).
    pub message: String,
}

impl ResourceReport {
    pub(crate) fn from_manifest(m: &api::ManifestCondition, c: &Condition) -> Self {
        let meta = &m.resource_meta;
        // The agent writes OCM's `AppliedManifestFailed` with Kubernetes' words in the
        // message; scripts read Kubernetes' reason here, as before OCM's reason was used.
        let (reason, message) = status::kubernetes_reason(&c.reason, &c.message);
        ResourceReport {
            ordinal: meta.ordinal,
            api_version: if meta.group.is_empty() {
                meta.version.clone()
            } else {
                format!("{}/{}", meta.group, meta.version)
            },
            kind: meta.kind.clone(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
            condition: c.type_.clone(),
            status: c.status.clone(),
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }

    /// `Kind namespace/name`, `Kind name`, or `manifest N`.
    pub fn resource(&self) -> String {
        match (
            self.kind.is_empty(),
            self.name.is_empty(),
            self.namespace.is_empty(),
        ) {
            (true, _, _) | (_, true, _) => format!("manifest {}", self.ordinal),
            (false, false, true) => format!("{} {}", self.kind, self.name),
            (false, false, false) => format!("{} {}/{}", self.kind, self.namespace, self.name),
        }
    }

    /// `Kind ns/name: Ready=False: message` (the reason too when it explains more).
    pub(crate) fn line(&self) -> String {
        let mut s = format!("{}: {}={}", self.resource(), self.condition, self.status);
        if self.condition == status::APPLIED && !self.reason.is_empty() {
            s.push_str(&format!(
                ": {}",
                status::in_kubernetes_words(&self.reason, &self.message)
            ));
        } else if !self.message.is_empty() {
            s.push_str(&format!(": {}", self.message));
        }
        s
    }
}

/// The hub's last word on one work.
#[derive(Debug, Clone)]
pub(crate) enum Seen {
    /// The work as last read.
    Present(Box<ManifestWork>),
    /// 404.
    Gone,
}

/// The hub's last word on one cluster.
#[derive(Debug, Clone)]
pub(crate) enum ClusterSeen {
    /// Not answered yet.
    Waiting,
    /// The record as last read.
    Present(Box<ManagedCluster>),
    /// No such cluster (or no longer matching the selector).
    Gone,
}

/// Where one work on one cluster stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Done,
    Failed,
    Pending,
    Unavailable,
}

/// Why a cluster counts as unavailable.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unavailability {
    /// e.g. `ManagedClusterLeaseUpdateStopped`, `no agent has joined`.
    pub(crate) why: String,
    pub(crate) last_lease: Option<DateTime<Utc>>,
}

/// Where one work on one cluster stands, and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) state: State,
    /// For a person: `Ready`, `waiting for the agent ...`, the failure.
    pub(crate) message: String,
    pub(crate) pending: Vec<ResourceReport>,
    pub(crate) failed: Vec<ResourceReport>,
    pub(crate) unavailable: Option<Unavailability>,
}

impl Verdict {
    pub(crate) fn new(state: State, message: impl Into<String>) -> Self {
        Verdict {
            state,
            message: message.into(),
            pending: Vec::new(),
            failed: Vec::new(),
            unavailable: None,
        }
    }
}

/// Why the cluster is unavailable, or `None` when its agent renews its lease (or when
/// the hub has not answered yet).
pub(crate) fn unavailability(cluster: &ClusterSeen) -> Option<Unavailability> {
    match cluster {
        ClusterSeen::Waiting => None,
        ClusterSeen::Gone => Some(Unavailability {
            why: "the cluster does not exist (or no longer matches the selector)".into(),
            last_lease: None,
        }),
        ClusterSeen::Present(c) => {
            let last_lease = c.status.last_lease_time;
            match c.condition(status::CLUSTER_AVAILABLE) {
                Some(a) if a.is_true() => None,
                Some(a) => Some(Unavailability {
                    why: if a.reason.is_empty() {
                        format!("{}={}", status::CLUSTER_AVAILABLE, a.status)
                    } else {
                        a.reason.clone()
                    },
                    last_lease,
                }),
                None => Some(Unavailability {
                    why: "no agent has joined".into(),
                    last_lease,
                }),
            }
        }
    }
}

/// Per-manifest conditions at the work's current generation: those that failed to apply
/// and those not yet `type_`.
pub(crate) fn resource_reports(
    work: &ManifestWork,
    type_: &str,
) -> (Vec<ResourceReport>, Vec<ResourceReport>) {
    let generation = work.metadata.generation;
    let mut pending = Vec::new();
    let mut failed = Vec::new();
    for m in status::manifests(work) {
        let at = |t: &str| status::manifest_condition(m, t, generation);
        if let Some(applied) = at(status::APPLIED).filter(|c| !c.is_true()) {
            let report = ResourceReport::from_manifest(m, applied);
            if applied.status == "False" {
                failed.push(report.clone());
            }
            pending.push(report);
        } else if let Some(c) = at(type_).filter(|c| !c.is_true()) {
            pending.push(ResourceReport::from_manifest(m, c));
        }
    }
    (pending, failed)
}

/// Where a work stands on its cluster, from what the hub last said about both.
pub(crate) fn evaluate(for_: WaitFor, seen: &Seen, cluster: &ClusterSeen) -> Verdict {
    let unavailable = unavailability(cluster);
    let work = match seen {
        Seen::Gone if for_ == WaitFor::Deleted => return Verdict::new(State::Done, "deleted"),
        Seen::Gone => {
            return Verdict::new(State::Failed, "the work was deleted while waiting for it");
        }
        Seen::Present(w) => w,
    };
    let generation = work.metadata.generation;
    let gen_text = generation
        .map(|g| format!(" (generation {g})"))
        .unwrap_or_default();
    let Some(type_) = for_.condition() else {
        // Waiting for a deletion.
        let m = &work.metadata;
        let message = if m.deletion_timestamp.is_none() {
            "not being deleted: no deletion was asked for".to_string()
        } else if m.finalizers.is_empty() {
            "deleting".to_string()
        } else {
            format!(
                "deleting: waiting for the agent to remove its resources (finalizer {})",
                m.finalizers.join(", ")
            )
        };
        let mut v = Verdict::new(State::Pending, message);
        if unavailable.is_some() {
            v.state = State::Unavailable;
            v.unavailable = unavailable;
        }
        return v;
    };
    if work.metadata.deletion_timestamp.is_some() {
        return Verdict::new(State::Failed, "the work is being deleted");
    }
    let (pending, failed) = resource_reports(work, type_);
    if let Some(d) = status::current(work, status::DEGRADED).filter(|c| c.is_true()) {
        let message = if failed.is_empty() {
            format!("Degraded: {}", d.message)
        } else {
            failed
                .iter()
                .map(|r| {
                    let reason = if r.reason.is_empty() {
                        "Failed"
                    } else {
                        &r.reason
                    };
                    format!(
                        "{}: {}",
                        r.resource(),
                        status::in_kubernetes_words(reason, &r.message)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Verdict {
            state: State::Failed,
            message,
            pending,
            failed,
            unavailable: None,
        };
    }
    let condition = status::current(work, type_);
    let mut v = Verdict {
        state: State::Pending,
        message: String::new(),
        pending,
        failed,
        unavailable: None,
    };
    match condition {
        Some(c) if c.is_true() => {
            v.state = State::Done;
            v.message = format!("{type_}{gen_text}");
        }
        Some(c) => {
            v.message = format!("waiting for {type_}{gen_text}: {type_}={}", c.status);
            if !c.reason.is_empty() {
                v.message.push_str(&format!(" ({})", c.reason));
            }
            if v.pending.is_empty() && !c.message.is_empty() {
                v.message.push_str(&format!(": {}", c.message));
            }
        }
        None => {
            let reported = work
                .condition(type_)
                .and_then(|c| c.observed_generation)
                .map(|g| format!(", it last reported generation {g}"))
                .unwrap_or_default();
            v.message = format!("waiting for the agent to report{gen_text}{reported}");
        }
    }
    if unavailable.is_some() {
        v.state = State::Unavailable;
        v.unavailable = unavailable;
    } else if v.state == State::Done && matches!(cluster, ClusterSeen::Waiting) {
        v.state = State::Pending;
        v.message = format!("{type_}{gen_text}; waiting for the cluster's record");
    }
    v
}

/// One work on one cluster to wait for, as the hub last showed it when the wait starts.
#[derive(Debug, Clone)]
pub struct Start {
    /// The cluster.
    pub cluster: String,
    /// The work's name.
    pub work: String,
    /// The work as last read or written; `None` when it does not exist.
    pub seen: Option<ManifestWork>,
    /// The change index `seen` is consistent with; blocking queries start from it.
    pub index: u64,
    /// What `hub apply` did to it (`created`, `configured`, `unchanged`).
    pub action: Option<&'static str>,
}
