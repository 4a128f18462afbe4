//! Joining: bootstrap tokens, join requests, acceptance, agents' identities, leases and
//! revocation. What happens inside the write transaction lives here too.

use api::{
    Claim, Condition, ManagedCluster, Registration, RegistrationRequest, RegistrationState, Token,
    TokenKind, TokenRequest, Verb, claims,
};
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::clusters::set_condition;
use super::error::{Error, Result};
use super::works::{check_labels, validate_cluster_name};
use super::writer::{Batch, Outcome};
use crate::auth::{check_public_key, is_safe_id, pem_hash, random_hex, token_hash};
use crate::store::{Agent, StoredToken};

/// The taint a cluster gets while its lease has expired.
pub const UNREACHABLE_TAINT: &str = "cluster.open-cluster-management.io/unreachable";
/// The condition that follows the lease.
pub const AVAILABLE: &str = "ManagedClusterConditionAvailable";

/// The longest `ttl` a token may ask for. Much longer ones would overflow the expiry time
/// (a panic) or put it past year 9999, which RFC 3339 timestamps cannot hold.
pub const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 86_400);

/// Checks a token request and builds the token and its secret.
pub fn new_token(
    req: &TokenRequest,
    default_bootstrap_ttl: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<(StoredToken, String)> {
    let mut errs = Vec::new();
    let mut bad = |field: String, message: String| errs.push(api::FieldError { field, message });
    let ttl = match req.ttl.as_deref() {
        Some(t) => match api::parse_duration(t) {
            Ok(d) if d.is_zero() => {
                bad("ttl".into(), "must be positive".into());
                None
            }
            Ok(d) if d > MAX_TOKEN_TTL => {
                bad(
                    "ttl".into(),
                    format!(
                        "must be at most {}h (100 years); leave it out for an api token that never expires",
                        MAX_TOKEN_TTL.as_secs() / 3600
                    ),
                );
                None
            }
            Ok(d) => Some(d),
            Err(m) => {
                bad("ttl".into(), m);
                None
            }
        },
        None if req.kind == TokenKind::Bootstrap => Some(default_bootstrap_ttl),
        None => None,
    };
    check_labels("labels", &req.labels, &mut bad);
    for (i, c) in req.clusters.iter().enumerate() {
        if let Err(m) = api::selector::validate_dns_label(c) {
            bad(format!("clusters[{i}]"), m);
        }
    }
    if let Some(s) = &req.cluster_selector
        && let Err(e) = api::selector::Selector::parse(s)
    {
        bad("clusterSelector".into(), e.to_string());
    }
    match req.kind {
        TokenKind::Api => {
            if req.clusters.is_empty() && req.cluster_selector.is_none() {
                bad(
                    "clusters".into(),
                    "an api token needs clusters or a clusterSelector".into(),
                );
            }
            if req.auto_accept || !req.labels.is_empty() || req.max_uses.is_some() {
                bad(
                    "kind".into(),
                    "autoAccept, labels and maxUses are for bootstrap tokens".into(),
                );
            }
        }
        TokenKind::Bootstrap => {
            if !req.clusters.is_empty() || req.cluster_selector.is_some() || !req.verbs.is_empty() {
                bad(
                    "kind".into(),
                    "clusters, clusterSelector and verbs are for api tokens".into(),
                );
            }
        }
    }
    match req.max_uses {
        Some(0) => bad("maxUses".into(), "must be at least 1".into()),
        // The store keeps the count in a signed 64-bit column, where a larger limit would
        // wrap to a negative number, which means "unlimited".
        Some(n) if i64::try_from(n).is_err() => {
            bad("maxUses".into(), format!("must be at most {}", i64::MAX))
        }
        _ => {}
    }
    if !errs.is_empty() {
        return Err(Error::invalid_fields(errs));
    }
    // Checked: `--bootstrap-token-ttl` is not held to MAX_TOKEN_TTL, and `+` panics.
    let expires_at = match ttl {
        None => None,
        Some(d) => Some(
            chrono::Duration::from_std(d)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| Error::invalid("ttl", "is too long"))?,
        ),
    };
    let id = random_hex(4);
    let secret = random_hex(16);
    let mut verbs = req.verbs.clone();
    if req.kind == TokenKind::Api && verbs.is_empty() {
        verbs.push(Verb::Read);
    }
    verbs.sort();
    verbs.dedup();
    let token = Token {
        id: id.clone(),
        kind: req.kind,
        expires_at,
        max_uses: req.max_uses,
        uses: 0,
        auto_accept: req.auto_accept,
        labels: req.labels.clone(),
        clusters: req.clusters.clone(),
        cluster_selector: req.cluster_selector.clone(),
        verbs,
        description: req.description.clone(),
        created_at: now,
        token: None,
    };
    let plain = format!("{id}.{secret}");
    Ok((
        StoredToken {
            token,
            secret_sha256: token_hash(&secret),
        },
        plain,
    ))
}

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
pub(crate) async fn create(
    batch: &mut Batch<'_>,
    reg: &Registration,
    auto_accept: bool,
) -> Result<Outcome> {
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
    let reg = write_registration(batch, reg).await?;
    Ok(Outcome::Registration(Box::new(reg)))
}

/// Accepts or denies a pending join request.
pub(crate) async fn decide(batch: &mut Batch<'_>, id: &str, accept: bool) -> Result<Outcome> {
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
            return Ok(Outcome::Registration(Box::new(old)));
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
    let mut reg = old.clone();
    reg.state = RegistrationState::Denied;
    reg.message = "denied by an admin".into();
    reg.decided_at = Some(batch.now);
    let reg = write_registration(batch, reg).await?;
    Ok(Outcome::Registration(Box::new(reg)))
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
async fn apply_requested_labels(batch: &mut Batch<'_>, mut reg: Registration) -> Result<Outcome> {
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
    let reg = write_registration(batch, reg).await?;
    Ok(Outcome::Registration(Box::new(reg)))
}

async fn accept_in(
    batch: &mut Batch<'_>,
    mut reg: Registration,
    by: Acceptance,
) -> Result<Outcome> {
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
        "HubAcceptedManagedCluster",
        "True",
        "HubClusterAdminAccepted",
        "accepted by the hub",
        now,
    );
    set_condition(
        conds,
        "ManagedClusterJoined",
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
    let reg = write_registration(batch, reg).await?;
    Ok(Outcome::Registration(Box::new(reg)))
}

fn apply_claims(cluster: &mut ManagedCluster, claims: &[Claim]) {
    cluster.status.claims = claims.to_vec();
    if let Some(v) = claims.iter().find(|c| c.name == claims::KUBE_VERSION) {
        cluster.status.version = Some(api::ClusterVersion {
            kubernetes: v.value.clone(),
        });
    }
}

/// Cuts a cluster's agent off: its access tokens stop working at once, nothing is deleted.
pub(crate) async fn revoke(batch: &mut Batch<'_>, name: &str) -> Result<Outcome> {
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
        "HubAcceptedManagedCluster",
        "False",
        "Revoked",
        "the agent's credentials were revoked by an admin",
        now,
    );
    set_condition(
        conds,
        "ManagedClusterJoined",
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
    Ok(Outcome::Cluster(Box::new(cluster)))
}

/// Sets the lease-driven availability (and the unreachable taint), and fresh claims.
/// Writes nothing when nothing changes, so renewals do not advance the index.
pub(crate) async fn set_availability(
    batch: &mut Batch<'_>,
    name: &str,
    available: bool,
    claims: Option<&[Claim]>,
) -> Result<Outcome> {
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
        return Ok(Outcome::Cluster(Box::new(old)));
    }
    cluster.metadata.resource_version = Some(batch.next_index().to_string());
    batch.tx.put_cluster(&cluster, batch.next_index()).await?;
    batch.record_cluster(name, Some(&old), Some(&cluster));
    Ok(Outcome::Cluster(Box::new(cluster)))
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
pub(crate) struct LeaseFacts {
    resource_version: u64,
    /// When its agent was accepted, if it has one; `None`: nothing to expire.
    joined_at: Option<DateTime<Utc>>,
    /// Already marked Unknown by a lease check.
    marked: bool,
}

impl LeaseFacts {
    fn of(cluster: &ManagedCluster) -> Self {
        let joined = cluster
            .condition("ManagedClusterJoined")
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

impl super::Hub {
    /// Creates a token; the answer carries `ID.SECRET` once, nothing else ever does.
    pub async fn create_token(&self, req: &TokenRequest) -> Result<Token> {
        let (stored, plain) = new_token(req, self.settings.bootstrap_token_ttl, Utc::now())?;
        self.store.insert_token(&stored).await?;
        let mut token = stored.token;
        token.token = Some(plain);
        Ok(token)
    }

    /// Every token, without secrets.
    pub async fn list_tokens(&self) -> Result<api::List<Token>> {
        let items = self
            .store
            .list_tokens()
            .await?
            .into_iter()
            .map(|t| t.token)
            .collect();
        Ok(api::List::new("TokenList", items, self.index(), None))
    }

    /// Revokes a token at once.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        if is_safe_id(id) && self.store.delete_token(id).await? {
            Ok(())
        } else {
            Err(Error::NotFound(format!("token {id:?} not found")))
        }
    }

    /// A klusterlet asks to join with a bootstrap token. The token's use is counted only
    /// once the request is known to be well-formed, so a bad request costs nothing.
    pub async fn register(&self, token: &Token, req: &RegistrationRequest) -> Result<Registration> {
        let reg = new_registration(req, token, Utc::now())?;
        if !self.store.use_token(&token.id, token.max_uses).await? {
            return Err(Error::Unauthorized(format!(
                "bootstrap token {} has been used up or revoked",
                token.id
            )));
        }
        let op = super::writer::Op::CreateRegistration {
            registration: Box::new(reg),
            auto_accept: token.auto_accept,
        };
        self.expect_registration(op).await
    }

    async fn expect_registration(&self, op: super::writer::Op) -> Result<Registration> {
        match self.writer.write(op).await? {
            Outcome::Registration(r) => Ok(*r),
            other => Err(Error::Internal(format!(
                "unexpected write outcome {other:?}"
            ))),
        }
    }

    /// Accepts (`true`) or denies a join request.
    pub async fn decide_registration(&self, id: &str, accept: bool) -> Result<Registration> {
        if !is_safe_id(id) {
            return Err(Error::NotFound(format!("registration {id:?} not found")));
        }
        self.expect_registration(super::writer::Op::DecideRegistration {
            id: id.into(),
            accept,
        })
        .await
    }

    /// One join request; with `block`, waits until it changed past the index.
    pub async fn get_registration(
        &self,
        id: &str,
        block: Option<super::Block>,
    ) -> Result<(Option<Registration>, u64)> {
        if !is_safe_id(id) {
            return Ok((None, self.index()));
        }
        if let Some(b) = block {
            let id = id.to_string();
            let filter: super::feed::ChangeFilter = Box::new(move |c: &crate::store::Change| {
                c.kind == crate::store::ChangeKind::Registration && c.name == id
            });
            self.feed.wait(b.index, None, filter, b.wait).await;
        }
        let index = self.index();
        Ok((self.store.get_registration(id).await?, index))
    }

    /// Every join request, oldest first; with `block`, waits for any registration change.
    pub async fn list_registrations(
        &self,
        block: Option<super::Block>,
    ) -> Result<api::List<Registration>> {
        if let Some(b) = block {
            let filter: super::feed::ChangeFilter = Box::new(|c: &crate::store::Change| {
                c.kind == crate::store::ChangeKind::Registration
            });
            self.feed.wait(b.index, None, filter, b.wait).await;
        }
        let index = self.index();
        Ok(api::List::new(
            "RegistrationList",
            self.store.list_registrations().await?,
            index,
            None,
        ))
    }

    /// Cuts a cluster's agent off at once.
    pub async fn revoke_cluster(&self, name: &str) -> Result<ManagedCluster> {
        validate_cluster_name(name)?;
        match self
            .writer
            .write(super::writer::Op::RevokeAgent {
                cluster: name.into(),
            })
            .await?
        {
            Outcome::Cluster(c) => Ok(*c),
            other => Err(Error::Internal(format!(
                "unexpected write outcome {other:?}"
            ))),
        }
    }

    /// Trades an assertion signed by the cluster agent's own key for an access token.
    pub async fn issue_credentials(
        &self,
        auth: &crate::auth::Auth,
        cluster: &str,
        assertion: &str,
    ) -> Result<api::AccessToken> {
        validate_cluster_name(cluster)?;
        let agent = self.store.get_agent(cluster).await?.ok_or_else(|| {
            Error::Unauthorized(format!("cluster {cluster:?} has no accepted agent"))
        })?;
        if agent.revoked {
            return Err(Error::Unauthorized(format!(
                "the agent of cluster {cluster:?} was revoked; join again"
            )));
        }
        auth.verify_assertion(&agent.public_key, assertion, &format!("cluster:{cluster}"))
            .await?;
        let (access_token, expires_at) = auth.issue_access_token(cluster, agent.generation)?;
        Ok(api::AccessToken {
            access_token,
            expires_at,
            lease_interval_seconds: self.settings.lease_interval.as_secs().max(1),
        })
    }

    /// A heartbeat from the cluster's agent: recorded without touching the change index,
    /// unless availability (or the claims) change.
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
        self.pending_leases
            .lock()
            .expect("lease lock")
            .insert(cluster.to_string(), now);
        let available = current.condition(AVAILABLE).is_some_and(Condition::is_true);
        let claims_changed = renewal
            .claims
            .as_ref()
            .is_some_and(|c| *c != current.status.claims);
        if !available || claims_changed {
            let op = super::writer::Op::SetAvailability {
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
    pub async fn flush_leases(&self) -> Result<usize> {
        let taken = std::mem::take(&mut *self.pending_leases.lock().expect("lease lock"));
        if taken.is_empty() {
            return Ok(0);
        }
        let rows: Vec<(String, chrono::DateTime<Utc>)> = taken.into_iter().collect();
        match self.store.renew_leases(&rows).await {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                let mut pending = self.pending_leases.lock().expect("lease lock");
                for (cluster, at) in rows {
                    pending.entry(cluster).or_insert(at);
                }
                Err(e.into())
            }
        }
    }

    /// Every cluster's last lease renewal: the store's, or a newer one this hub received
    /// and has not written yet.
    pub async fn leases(&self) -> Result<std::collections::BTreeMap<String, DateTime<Utc>>> {
        let mut leases = self.store.leases().await?;
        for (cluster, at) in self.pending_leases.lock().expect("lease lock").iter() {
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
            let cache = self.lease_facts.lock().expect("lease facts lock");
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
        let mut cache = self.lease_facts.lock().expect("lease facts lock");
        for c in &fresh {
            cache.insert(c.metadata.name.clone(), LeaseFacts::of(c));
        }
        let live: std::collections::HashSet<&str> =
            versions.iter().map(|(n, _)| n.as_str()).collect();
        cache.retain(|n, _| live.contains(n.as_str()));
        Ok(cache.iter().map(|(n, f)| (n.clone(), f.clone())).collect())
    }

    /// Marks clusters whose lease ran out as unavailable (by this hub's clock).
    pub async fn check_leases(&self) -> Result<usize> {
        let now = Utc::now();
        let leases = self.leases().await?;
        let facts = self.current_lease_facts().await?;
        let mut marked = 0;
        for (name, f) in facts {
            if f.expired(leases.get(&name).copied(), self.settings.lease_grace, now) {
                let op = super::writer::Op::SetAvailability {
                    cluster: name,
                    available: false,
                    claims: None,
                };
                if self.writer.write(op).await.is_ok() {
                    marked += 1;
                }
            }
        }
        Ok(marked)
    }

    /// Appends to the audit log; a failure is logged, never fails the request it records.
    pub async fn audit(
        &self,
        who: &crate::auth::Principal,
        action: &str,
        target: &str,
        source: &str,
        details: serde_json::Value,
    ) {
        let entry = crate::store::NewAuditEntry {
            actor: who.actor(),
            action: action.into(),
            target: target.into(),
            source: source.into(),
            details,
        };
        if let Err(e) = self.store.append_audit(&entry).await {
            tracing::warn!(error = %e, action, target, "could not write the audit log");
        }
    }
}

/// Fills `status.lastLeaseTime` from the lease table (served live, never indexed).
pub fn with_lease(
    mut cluster: ManagedCluster,
    leases: &std::collections::BTreeMap<String, DateTime<Utc>>,
) -> ManagedCluster {
    cluster.status.last_lease_time = leases.get(&cluster.metadata.name).copied();
    cluster
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(req: TokenRequest) -> String {
        match new_token(&req, std::time::Duration::from_secs(3600), Utc::now()) {
            Err(Error::Invalid { fields, .. }) => fields[0].field.clone(),
            other => panic!("expected a 422, got {:?}", other.map(|(t, _)| t.token)),
        }
    }

    /// Nine parts of 10^12 s each used to overflow the expiry time and panic (a 500); one
    /// part put it past year 9999.
    #[test]
    fn absurd_ttls_are_422_not_a_panic() {
        for ttl in [
            "1000000000000s".repeat(9),
            "1000000000000s".to_string(),
            "876001h".to_string(),
        ] {
            let req = TokenRequest {
                ttl: Some(ttl),
                ..Default::default()
            };
            assert_eq!(refused_field(req), "ttl");
        }
        let ok = TokenRequest {
            ttl: Some("876000h".into()),
            ..Default::default()
        };
        assert!(new_token(&ok, std::time::Duration::from_secs(1), Utc::now()).is_ok());
    }

    /// A limit past i64::MAX used to wrap to a negative number in the store: unlimited.
    #[test]
    fn max_uses_past_i64_is_422() {
        let req = TokenRequest {
            max_uses: Some(i64::MAX as u64 + 1),
            ..Default::default()
        };
        assert_eq!(refused_field(req), "maxUses");
    }
}
