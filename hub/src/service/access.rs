//! Authorization: who may do what to which cluster, lists filtered to a caller's scope,
//! and what a write answers a caller that may not read.

use api::{ManifestWork, Verb};

use super::Hub;
use super::authn::Principal;
use super::error::{Error, Result};

/// What a caller wants to do to a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the cluster record and its works.
    Read,
    /// Create, replace, delete works.
    WriteWorks,
    /// The agent's own writes: status, finalizers, lease.
    AgentWrite,
}

fn forbidden(who: &Principal, action: Action, cluster: &str) -> Error {
    let what = match action {
        Action::Read => "read",
        Action::WriteWorks => "write the works of",
        Action::AgentWrite => "write status, finalizers or the lease of",
    };
    Error::Forbidden(format!(
        "{} may not {what} cluster {cluster:?}",
        who.actor()
    ))
}

impl Hub {
    /// Allows or refuses `action` on `cluster` for `who`.
    ///
    /// Its span is at debug level: nothing inside logs, and at info the span cost every
    /// request (twice for a write) ~2 % of the hub's CPU under a stream of creates
    /// (docs/benchmarks.md).
    #[tracing::instrument(level = "debug", skip(self, who), fields(actor = %who.actor()))]
    pub async fn authorize(&self, who: &Principal, cluster: &str, action: Action) -> Result<()> {
        let allowed = match who {
            Principal::Admin => action != Action::AgentWrite,
            Principal::Agent { cluster: own } => own == cluster && action != Action::WriteWorks,
            Principal::Api { scope, .. } => {
                let verb = match action {
                    Action::Read => Verb::Read,
                    Action::WriteWorks => Verb::Write,
                    Action::AgentWrite => return Err(forbidden(who, action, cluster)),
                };
                let in_scope = scope.clusters.iter().any(|c| c == cluster)
                    || match &scope.selector {
                        Some(sel) => self
                            .store()
                            .get_cluster(cluster)
                            .await?
                            .is_some_and(|c| sel.matches(&c.metadata.labels)),
                        None => false,
                    };
                in_scope && scope.verbs.contains(&verb)
            }
            Principal::Bootstrap { .. } | Principal::Registrant { .. } => false,
        };
        if allowed {
            Ok(())
        } else {
            Err(forbidden(who, action, cluster))
        }
    }

    /// The clusters a caller may read, or `None` for all of them. Lists across clusters are
    /// filtered to this, never refused.
    pub async fn readable_clusters(&self, who: &Principal) -> Result<Option<Vec<String>>> {
        match who {
            Principal::Admin => Ok(None),
            Principal::Agent { cluster } => Ok(Some(vec![cluster.clone()])),
            Principal::Api { scope, .. } if scope.verbs.contains(&Verb::Read) => {
                let clusters = self.store().list_clusters().await?;
                Ok(Some(
                    clusters
                        .into_iter()
                        .filter(|c| scope.covers(&c.metadata.name, &c.metadata.labels))
                        .map(|c| c.metadata.name)
                        .collect(),
                ))
            }
            other => Err(Error::Forbidden(format!(
                "{} may not read works or clusters",
                other.actor()
            ))),
        }
    }
}

/// Allows or refuses reading (or, with `write`, writing) placements and
/// ManifestWorkReplicaSets: admins, and API tokens with the `read` (`write`) verb. Where a
/// set's works land is limited separately, by its authors' reach.
pub fn authorize_fleet(who: &Principal, write: bool) -> Result<()> {
    let verb = if write { Verb::Write } else { Verb::Read };
    match who {
        Principal::Admin => Ok(()),
        Principal::Api { scope, .. } if scope.verbs.contains(&verb) => Ok(()),
        other => Err(Error::Forbidden(format!(
            "{} may not {} placements or manifestworkreplicasets",
            other.actor(),
            if write { "write" } else { "read" }
        ))),
    }
}

/// What a write answers a caller that may write a cluster's works but not read them: the
/// work's identity and versions, none of its content (spec, status, labels, annotations),
/// which the caller could not GET either.
pub fn write_receipt(work: ManifestWork) -> ManifestWork {
    let m = work.metadata;
    ManifestWork {
        metadata: api::ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            generation: m.generation,
            resource_version: m.resource_version,
            creation_timestamp: m.creation_timestamp,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            ..Default::default()
        },
        spec: Default::default(),
        status: Default::default(),
        ..work
    }
}
