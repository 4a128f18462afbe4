//! Joining: join requests made with a bootstrap token, their acceptance (by an admin or
//! the token), the agent a cluster gets, and its revocation.

use std::collections::BTreeMap;

use api::{Condition, ManagedCluster, Registration, RegistrationRequest, RegistrationState, Token};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::Hub;
use super::authn::{check_public_key, pem_hash};
use super::cluster_status::{AVAILABLE, apply_claims, set_condition};
use super::error::{Error, Result};
use super::query::{self, Block, Indexed, Watch};
use super::tokens::is_safe_id;
use super::validate::{check_labels, validate_cluster_name};
use super::writer::{Audit, Batch, Caller, Reads, WriteOp, Written};
use crate::store::{Agent, ChangeKind};

/// Checks a join request and builds the registration it becomes.
pub fn new_registration(
    req: &RegistrationRequest,
    token: &Token,
    now: DateTime<Utc>,
) -> Result<Registration> {
    validate_cluster_name(&req.cluster_name).map_err(|_| {
        Error::invalid(
            "clusterName",
            format!("{:?} is not a DNS-1123 label", req.cluster_name),
        )
    })?;
    let mut errs = Vec::new();
    check_labels("labels", &req.labels, &mut |field, message| {
        errs.push(api::FieldError { field, message })
    });
    if let Err(m) = check_public_key(&req.public_key) {
        errs.push(api::FieldError {
            field: "publicKey".into(),
            message: m,
        });
    }
    if !errs.is_empty() {
        return Err(Error::invalid_fields(errs));
    }
    // The token's labels win over the same keys asked for; the rest wait for an admin.
    let requested_labels: BTreeMap<String, String> = req
        .labels
        .iter()
        .filter(|(k, _)| !token.labels.contains_key(*k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut labels = req.labels.clone();
    labels.extend(token.labels.clone());
    Ok(Registration {
        id: uuid::Uuid::new_v4().to_string(),
        cluster_name: req.cluster_name.clone(),
        labels,
        requested_labels,
        claims: req.claims.clone(),
        public_key: req.public_key.trim().to_string() + "\n",
        public_key_hash: pem_hash(&req.public_key),
        state: RegistrationState::Pending,
        message: format!("waiting for an admin: hub accept {}", req.cluster_name),
        token_id: token.id.clone(),
        created_at: now,
        decided_at: None,
        resource_version: None,
    })
}

async fn write_registration(batch: &mut Batch<'_>, mut reg: Registration) -> Result<Registration> {
    reg.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_registration(&reg, batch.next_index()).await?;
    batch.record_registration(&reg.cluster_name, &reg.id);
    Ok(reg)
}

/// Why a join request for this name may not be accepted without an admin, if so: a name
/// whose agent was ever accepted stays bound to that agent's key, revoked or not, until an
/// admin deletes the cluster or accepts another key; and a revoked agent comes back only
/// through an admin.
fn auto_accept_refused(owner: Option<&Agent>, reg: &Registration) -> Option<String> {
    let owner = owner?;
    let name = &reg.cluster_name;
    let how = format!(
        "an admin must accept this request (hub accept {name} --request {})",
        reg.id
    );
    if owner.public_key.trim() != reg.public_key.trim() {
        let revoked = if owner.revoked { " (revoked)" } else { "" };
        Some(format!(
            "cluster {name:?} already has an agent with another key{revoked}; the name stays bound to that key until an admin deletes the cluster, or {how} to replace it"
        ))
    } else if owner.revoked {
        Some(format!(
            "the agent of cluster {name:?} was revoked; a bootstrap token does not undo that: {how}"
        ))
    } else {
        None
    }
}

/// Stores a new join request; with `auto_accept` it is accepted at once unless the name is
/// bound to another key or its agent was revoked (then it waits for an admin, with the
/// reason in its message: never a silent takeover). An auto-accepted cluster gets the
/// token's labels only; those asked for beyond them stay in `requestedLabels` for an admin.
async fn create(
    batch: &mut Batch<'_>,
    reg: &Registration,
    auto_accept: bool,
) -> Result<Registration> {
    let owner = batch.tx.get_agent(&reg.cluster_name).await?;
    let refused = auto_accept_refused(owner.as_ref(), reg);
    let mut reg = reg.clone();
    if let Some(why) = &refused {
        reg.message = why.clone();
    }
    if auto_accept && refused.is_none() {
        let cluster = batch.tx.get_cluster(&reg.cluster_name).await?;
        if cluster
            .as_ref()
            .is_none_or(|c| c.metadata.deletion_timestamp.is_none())
        {
            let requested = reg.requested_labels.clone();
            reg.labels.retain(|k, _| !requested.contains_key(k));
            return accept_in(batch, reg, Acceptance::Auto).await;
        }
    }
    write_registration(batch, reg).await
}

/// Accepts or denies a pending join request.
async fn decide(batch: &mut Batch<'_>, id: &str, accept: bool) -> Result<Registration> {
    let old = batch
        .tx
        .get_registration(id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("registration {id:?} not found")))?;
    match (old.state, accept) {
        (RegistrationState::Accepted, true) if !old.requested_labels.is_empty() => {
            return apply_requested_labels(batch, old).await;
        }
        (RegistrationState::Accepted, true) | (RegistrationState::Denied, false) => {
            return Ok(old);
        }
        (RegistrationState::Pending, _) => {}
        (state, _) => {
            return Err(Error::Conflict(format!(
                "registration {id} is already {state:?}"
            )));
        }
    }
    if accept {
        return accept_in(batch, old.clone(), Acceptance::Admin).await;
    }
    let mut reg = old;
    reg.state = RegistrationState::Denied;
    reg.message = "denied by an admin".into();
    reg.decided_at = Some(batch.now);
    write_registration(batch, reg).await
}

/// Who accepts a join request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acceptance {
    /// An admin: the labels asked for are applied too.
    Admin,
    /// An auto-accept bootstrap token: only the token's labels.
    Auto,
}

/// An admin accepts an auto-accepted request again: the labels its agent asked for beyond
/// the token's are applied now, while that agent is still the cluster's.
async fn apply_requested_labels(
    batch: &mut Batch<'_>,
    mut reg: Registration,
) -> Result<Registration> {
    let name = reg.cluster_name.clone();
    let current = batch.tx.get_agent(&name).await?;
    let old = batch.tx.get_cluster(&name).await?;
    let (Some(old), true) = (
        old,
        current.is_some_and(|a| a.registration_id == reg.id && !a.revoked),
    ) else {
        return Err(Error::Conflict(format!(
            "registration {} no longer holds cluster {name:?}: its requested labels are not applied (`hub label` sets labels)",
            reg.id
        )));
    };
    if old.metadata.deletion_timestamp.is_some() {
        return Err(Error::Deleting(format!(
            "cluster {name:?} is being deleted"
        )));
    }
    let mut cluster = old.clone();
    cluster.metadata.labels.extend(reg.requested_labels.clone());
    if cluster != old {
        cluster.metadata.resource_version = Some(batch.next_index().to_string());
        batch.tx.put_cluster(&cluster, batch.next_index()).await?;
        batch.record_cluster(&name, Some(&old), Some(&cluster));
    }
    reg.labels.append(&mut reg.requested_labels);
    reg.message =
        format!("accepted: cluster {name:?} joined; an admin applied the labels it asked for");
    write_registration(batch, reg).await
}

async fn accept_in(
    batch: &mut Batch<'_>,
    mut reg: Registration,
    by: Acceptance,
) -> Result<Registration> {
    let name = reg.cluster_name.clone();
    let old = batch.tx.get_cluster(&name).await?;
    if old
        .as_ref()
        .is_some_and(|c| c.metadata.deletion_timestamp.is_some())
    {
        return Err(Error::Deleting(format!(
            "cluster {name:?} is being deleted"
        )));
    }
    let now = batch.now;
    let mut cluster = old.clone().unwrap_or_else(|| {
        let mut c = ManagedCluster::new(&name, Default::default());
        c.metadata.uid = Some(uuid::Uuid::new_v4().to_string());
        c.metadata.creation_timestamp = Some(now);
        c.metadata.generation = Some(1);
        c
    });
    cluster.metadata.labels.extend(reg.labels.clone());
    apply_claims(&mut cluster, &reg.claims);
    cluster.spec.hub_accepts_client = true;
    let conds = &mut cluster.status.conditions;
    set_condition(
        conds,
        api::status::CLUSTER_ACCEPTED,
        "True",
        "HubClusterAdminAccepted",
        "accepted by the hub",
        now,
    );
    set_condition(
        conds,
        api::status::CLUSTER_JOINED,
        "True",
        "ManagedClusterJoined",
        "the cluster's agent joined",
        now,
    );
    if !api::find_condition(conds, AVAILABLE).is_some_and(Condition::is_true) {
        set_condition(
            conds,
            AVAILABLE,
            "Unknown",
            "AwaitingLease",
            "waiting for the agent's first lease",
            now,
        );
    }
    cluster.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_cluster(&cluster, batch.next_index()).await?;
    batch.record_cluster(&name, old.as_ref(), Some(&cluster));
    let generation = batch
        .tx
        .get_agent(&name)
        .await?
        .map(|a| a.generation + 1)
        .unwrap_or(1);
    batch
        .tx
        .put_agent(&Agent {
            cluster: name.clone(),
            public_key: reg.public_key.clone(),
            registration_id: reg.id.clone(),
            generation,
            revoked: false,
        })
        .await?;
    reg.state = RegistrationState::Accepted;
    reg.message = format!("accepted: cluster {name:?} joined");
    match by {
        Acceptance::Admin => reg.requested_labels.clear(),
        Acceptance::Auto if !reg.requested_labels.is_empty() => {
            let asked: Vec<String> = reg
                .requested_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            reg.message = format!(
                "accepted by the bootstrap token with its labels only: cluster {name:?} joined; the labels asked for beyond them ({}) wait for an admin: hub accept {name} --request {}",
                asked.join(", "),
                reg.id
            );
        }
        Acceptance::Auto => {}
    }
    reg.decided_at = Some(now);
    write_registration(batch, reg).await
}

/// Cuts a cluster's agent off: its access tokens stop working at once, nothing is deleted.
async fn revoke(batch: &mut Batch<'_>, name: &str) -> Result<ManagedCluster> {
    let old = batch
        .tx
        .get_cluster(name)
        .await?
        .ok_or_else(|| Error::NotFound(format!("cluster {name:?} not found")))?;
    if let Some(mut agent) = batch.tx.get_agent(name).await? {
        agent.revoked = true;
        agent.generation += 1;
        batch.tx.put_agent(&agent).await?;
    }
    let mut cluster = old.clone();
    let now = batch.now;
    cluster.spec.hub_accepts_client = false;
    let conds = &mut cluster.status.conditions;
    set_condition(
        conds,
        api::status::CLUSTER_ACCEPTED,
        "False",
        "Revoked",
        "the agent's credentials were revoked by an admin",
        now,
    );
    set_condition(
        conds,
        api::status::CLUSTER_JOINED,
        "False",
        "Revoked",
        "the agent must join again",
        now,
    );
    set_condition(
        conds,
        AVAILABLE,
        "Unknown",
        "Revoked",
        "the agent's credentials were revoked",
        now,
    );
    cluster.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_cluster(&cluster, batch.next_index()).await?;
    batch.record_cluster(name, Some(&old), Some(&cluster));
    Ok(cluster)
}

/// A new join request, accepted at once when its token auto-accepts (see [`create`]).
#[derive(Debug, Clone)]
pub struct CreateRegistration {
    /// The request, checked.
    pub registration: Registration,
    /// Whether its bootstrap token accepts it.
    pub auto_accept: bool,
}

#[async_trait]
impl WriteOp for CreateRegistration {
    type Output = Registration;

    fn reads(&self) -> Reads {
        Reads {
            clusters: vec![self.registration.cluster_name.clone()],
            ..Default::default()
        }
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<Registration> {
        create(batch, &self.registration, self.auto_accept).await
    }

    fn audit(&self, reg: &Registration) -> Option<Audit> {
        Some(Audit {
            action: "registration.create",
            target: format!("registrations/{}", reg.id),
            details: json!({"cluster": reg.cluster_name, "state": reg.state, "publicKeyHash": reg.public_key_hash}),
        })
    }
}

/// An admin accepts or denies a join request.
#[derive(Debug, Clone)]
pub struct DecideRegistration {
    /// The registration.
    pub id: String,
    /// Accept (`true`) or deny.
    pub accept: bool,
}

#[async_trait]
impl WriteOp for DecideRegistration {
    type Output = Registration;

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<Registration> {
        decide(batch, &self.id, self.accept).await
    }

    fn audit(&self, reg: &Registration) -> Option<Audit> {
        Some(Audit {
            action: if self.accept {
                "registration.accept"
            } else {
                "registration.deny"
            },
            target: format!("registrations/{}", self.id),
            details: json!({"cluster": reg.cluster_name}),
        })
    }
}

/// An admin cuts a cluster's agent off (see [`revoke`]).
#[derive(Debug, Clone)]
pub struct RevokeAgent {
    /// The cluster.
    pub cluster: String,
}

#[async_trait]
impl WriteOp for RevokeAgent {
    type Output = ManagedCluster;

    fn reads(&self) -> Reads {
        Reads {
            clusters: vec![self.cluster.clone()],
            ..Default::default()
        }
    }

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<ManagedCluster> {
        revoke(batch, &self.cluster).await
    }

    fn audit(&self, _: &ManagedCluster) -> Option<Audit> {
        Some(Audit {
            action: "cluster.revoke",
            target: format!("clusters/{}", self.cluster),
            details: json!({}),
        })
    }
}

impl Hub {
    /// A klusterlet asks to join with a bootstrap token. The token's use is counted only
    /// once the request is known to be well-formed, so a bad request costs nothing.
    #[tracing::instrument(skip(self, token, req, by), fields(token = %token.id, cluster = %req.cluster_name))]
    pub async fn register(
        &self,
        token: &Token,
        req: &RegistrationRequest,
        by: Option<Caller>,
    ) -> Result<Written<Registration>> {
        let reg = new_registration(req, token, Utc::now())?;
        if !self.store.use_token(&token.id, token.max_uses).await? {
            return Err(Error::Unauthorized(format!(
                "bootstrap token {} has been used up or revoked",
                token.id
            )));
        }
        let op = CreateRegistration {
            registration: reg,
            auto_accept: token.auto_accept,
        };
        self.writer.write_by(op, by).await
    }

    /// Accepts (`true`) or denies a join request.
    #[tracing::instrument(skip(self, by))]
    pub async fn decide_registration(
        &self,
        id: &str,
        accept: bool,
        by: Option<Caller>,
    ) -> Result<Written<Registration>> {
        if !is_safe_id(id) {
            return Err(Error::NotFound(format!("registration {id:?} not found")));
        }
        let op = DecideRegistration {
            id: id.into(),
            accept,
        };
        self.writer.write_by(op, by).await
    }

    /// One join request; with `block`, waits until it changed past the index.
    #[tracing::instrument(skip(self))]
    pub async fn get_registration(
        &self,
        id: &str,
        block: Option<Block>,
    ) -> Result<Indexed<Option<Registration>>> {
        if !is_safe_id(id) {
            return Ok(Indexed {
                data: None,
                index: self.index(),
            });
        }
        let watch = || {
            let id = id.to_string();
            Watch::changes(move |c| c.kind == ChangeKind::Registration && c.name == id)
        };
        query::run(&self.feed, block, watch, || async {
            Ok(self.store.get_registration(id).await?)
        })
        .await
    }

    /// Every join request, oldest first; with `block`, waits for any registration change.
    #[tracing::instrument(skip(self))]
    pub async fn list_registrations(
        &self,
        block: Option<Block>,
    ) -> Result<api::List<Registration>> {
        let watch = || Watch::changes(|c| c.kind == ChangeKind::Registration);
        let read = || async { Ok(self.store.list_registrations().await?) };
        let Indexed { data, index } = query::run(&self.feed, block, watch, read).await?;
        Ok(api::List::new("RegistrationList", data, index, None))
    }

    /// Cuts a cluster's agent off at once.
    #[tracing::instrument(skip(self, by))]
    pub async fn revoke_cluster(
        &self,
        name: &str,
        by: Option<Caller>,
    ) -> Result<Written<ManagedCluster>> {
        validate_cluster_name(name)?;
        let op = RevokeAgent {
            cluster: name.into(),
        };
        self.writer.write_by(op, by).await
    }
}
