//! Wire types of tokens, registration (join / accept), agent credentials, leases and the
//! audit log.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::types::Claim;

/// What a token is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    /// Lets a klusterlet ask to join (`POST /api/v1/registrations`).
    #[default]
    Bootstrap,
    /// Lets CI read or write works of the clusters in its scope.
    Api,
}

/// A verb an API token may use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    /// Read works and clusters.
    Read,
    /// Create, replace and delete works.
    Write,
    /// See the data of `Secret` manifests (otherwise replaced by keyed
    /// `hmac-sha256:<hex>` placeholders).
    Secrets,
    /// Set, change or remove a work's `spec.executor` (the identity the agent applies it
    /// as on the managed cluster); needs `write` as well.
    Executor,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// bootstrap (default) or api.
    #[serde(default)]
    pub kind: TokenKind,
    /// Lifetime, e.g. `1h`, `7d` is not a unit: use `168h` (default: 24h for bootstrap, none for api).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Bootstrap: how many joins it allows (default unlimited until expiry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// Bootstrap: accept joining clusters without an admin's `hub accept`.
    #[serde(default)]
    pub auto_accept: bool,
    /// Bootstrap: labels stamped on the clusters that join with it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Api: the clusters it may touch, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Api: the clusters it may touch, by label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<String>,
    /// Api: read, write, secrets, executor (default: read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<Verb>,
    /// A note for people (who it is for).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A token as the hub shows it (never with its secret, except once at creation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// Public id: the part before the dot of `ID.SECRET`.
    pub id: String,
    /// bootstrap or api.
    pub kind: TokenKind,
    /// When it stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// Bootstrap: most joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// Bootstrap: joins so far.
    #[serde(default)]
    pub uses: u64,
    /// Bootstrap: joins are accepted without an admin.
    #[serde(default)]
    pub auto_accept: bool,
    /// Bootstrap: labels for joining clusters.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Api: clusters by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Api: clusters by label selector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<String>,
    /// Api: verbs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verbs: Vec<Verb>,
    /// A note for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// `ID.SECRET`: present only in the answer to its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /api/v1/registrations`: a klusterlet asks to join.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrationRequest {
    /// The managed cluster's name (a DNS-1123 label).
    pub cluster_name: String,
    /// Labels the agent asks for (the token's labels are added).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Facts read from the managed cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
    /// The agent's public key (PEM, SubjectPublicKeyInfo, ECDSA P-256); its private half
    /// never leaves the agent.
    pub public_key: String,
}

/// The state of a join request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RegistrationState {
    /// Waiting for `hub accept`.
    #[default]
    Pending,
    /// Accepted: the agent may fetch credentials.
    Accepted,
    /// Denied by an admin.
    Denied,
}

/// A join request as the hub keeps it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// Request id.
    pub id: String,
    /// The cluster it asks to be.
    pub cluster_name: String,
    /// The labels the cluster got (Accepted) or an admin's accept gives it (Pending): the
    /// bootstrap token's, plus those asked for unless the token auto-accepted the request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Labels the agent asked for beyond its bootstrap token's, waiting for an admin's
    /// accept (`hub accept --request ID`), which applies them and empties this. An
    /// auto-accepted request never applies them: labels decide selector-scoped tokens and
    /// placements, so the joining agent does not choose its own.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requested_labels: BTreeMap<String, String>,
    /// Facts read from the managed cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
    /// The agent's public key (PEM).
    pub public_key: String,
    /// `sha256:<hex>` of the public key, to compare by eye.
    pub public_key_hash: String,
    /// Pending, Accepted or Denied.
    pub state: RegistrationState,
    /// Why it is pending or denied, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The bootstrap token it came with.
    pub token_id: String,
    /// When it was asked.
    pub created_at: DateTime<Utc>,
    /// When it was accepted or denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    /// The change index of its last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// `POST /api/v1/clusters/{c}/credentials`: the agent proves itself with a JWT signed by its
/// own key (RFC 7523 private_key_jwt).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRequest {
    /// ES256 JWT: `iss` = `sub` = `cluster:<name>`, `aud` = `fleethub`, `exp` within 5 min.
    pub assertion: String,
}

/// A short-lived access token for a cluster's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessToken {
    /// The bearer JWT, signed by the hub.
    pub access_token: String,
    /// When it stops working; renew well before.
    pub expires_at: DateTime<Utc>,
    /// How often the agent must renew its lease.
    pub lease_interval_seconds: u64,
}

/// `PUT /api/v1/clusters/{c}/lease`: a heartbeat, optionally with fresh claims.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRenewal {
    /// Facts read from the managed cluster, when they changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claims: Option<Vec<Claim>>,
}

/// The answer to a lease renewal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseStatus {
    /// Renew at least this often.
    pub lease_interval_seconds: u64,
    /// The hub's time of the renewal.
    pub renewed_at: DateTime<Utc>,
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Increasing id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Who: `admin`, `token:<id>`, `bootstrap:<id>`, `cluster:<name>`.
    pub actor: String,
    /// What, e.g. `work.put`, `registration.accept`.
    pub action: String,
    /// On what, e.g. `clusters/c1/manifestworks/web`.
    pub target: String,
    /// From where (peer address).
    pub source: String,
    /// Extra facts (never secrets).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// `GET /api/v1/cluster-info`: what a joining agent needs to pin the hub's CA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterInfo {
    /// The hub's URL as agents should use it.
    pub server: String,
    /// PEM of the CA that signs the hub's serving certificate.
    pub certificate_authority_data: String,
    /// `sha256:<hex>` of the CA's SubjectPublicKeyInfo.
    pub ca_hash: String,
}

/// Claim names the klusterlet reports.
pub mod claims {
    /// Kubernetes version of the managed cluster.
    pub const KUBE_VERSION: &str = "kubeversion.open-cluster-management.io";
    /// Platform (e.g. `linux/amd64`).
    pub const PLATFORM: &str = "platform.open-cluster-management.io";
    /// Number of nodes (all of them, Ready or not).
    pub const NODES: &str = "nodes.fleethub.io";
    /// Allocatable CPU (sum over Ready nodes, Kubernetes quantity).
    pub const CPU: &str = "allocatable-cpu.fleethub.io";
    /// Allocatable memory (sum over Ready nodes, Kubernetes quantity).
    pub const MEMORY: &str = "allocatable-memory.fleethub.io";
    /// Allocatable pods (sum over Ready nodes).
    pub const PODS: &str = "allocatable-pods.fleethub.io";
    /// CPU capacity (sum over Ready nodes, Kubernetes quantity).
    pub const CAPACITY_CPU: &str = "capacity-cpu.fleethub.io";
    /// Memory capacity (sum over Ready nodes, Kubernetes quantity).
    pub const CAPACITY_MEMORY: &str = "capacity-memory.fleethub.io";
    /// Pod capacity (sum over Ready nodes).
    pub const CAPACITY_PODS: &str = "capacity-pods.fleethub.io";

    /// The resource claims and where they land in a cluster's status:
    /// `(claim, "allocatable" | "capacity", resource)`.
    pub const RESOURCES: [(&str, &str, &str); 6] = [
        (CPU, "allocatable", "cpu"),
        (MEMORY, "allocatable", "memory"),
        (PODS, "allocatable", "pods"),
        (CAPACITY_CPU, "capacity", "cpu"),
        (CAPACITY_MEMORY, "capacity", "memory"),
        (CAPACITY_PODS, "capacity", "pods"),
    ];
}
