//! Wire types of the REST API v1, in the JSON shape of Open Cluster Management's
//! `work.open-cluster-management.io/v1` and `cluster.open-cluster-management.io/v1`.
//!
//! Every struct keeps the fields it does not model in `extra`, so a document pushed by a
//! user (for example with `manifestConfigs[].feedbackScrapeType`) comes back
//! exactly as it went in.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `apiVersion` of a ManifestWork.
pub const WORK_API_VERSION: &str = "work.open-cluster-management.io/v1";
/// `apiVersion` of a ManagedCluster.
pub const CLUSTER_API_VERSION: &str = "cluster.open-cluster-management.io/v1";
/// The finalizer the hub adds for a cluster's agent; only the agent removes it.
pub const CLEANUP_FINALIZER: &str = "klusterlet/cleanup";

/// Fields the wire types do not model, kept verbatim.
pub type Extra = Map<String, Value>;

fn is_false(b: &bool) -> bool {
    !*b
}

/// Kubernetes-style object metadata. In a write, name and namespace must match the path
/// when given; labels and annotations are checked like Kubernetes'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name, unique within its namespace (the cluster, for works).
    #[serde(default)]
    pub name: String,
    /// For a ManifestWork: the managed cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels, matched by `labelSelector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Set by the hub on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Bumped by the hub when the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The change index of the object's last change, as a string (Kubernetes style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Set by the hub on create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<DateTime<Utc>>,
    /// Set by the hub when deletion was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<DateTime<Utc>>,
    /// Finalizers that must be removed before the object goes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// Metadata fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A Kubernetes-style condition.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Applied`, `Available`, `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// A human-readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The work generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When `status` last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<DateTime<Utc>>,
}

impl Condition {
    /// Whether this condition is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Finds a condition by type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// A bundle of Kubernetes manifests for one managed cluster: OCM's
/// `work.open-cluster-management.io/v1` ManifestWork. In a write, `status` is the agent's
/// and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWork {
    /// Always `work.open-cluster-management.io/v1`.
    #[serde(default = "work_api_version")]
    pub api_version: String,
    /// Always `ManifestWork`.
    #[serde(default = "work_kind")]
    pub kind: String,
    /// Name, namespace (= cluster), labels, server-set fields.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to apply and how.
    #[serde(default)]
    pub spec: ManifestWorkSpec,
    /// Written by the cluster's agent only.
    #[serde(default, skip_serializing_if = "ManifestWorkStatus::is_empty")]
    pub status: ManifestWorkStatus,
    /// Top-level fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

fn work_api_version() -> String {
    WORK_API_VERSION.to_string()
}
fn work_kind() -> String {
    "ManifestWork".to_string()
}

impl ManifestWork {
    /// A new work with the given name and cluster and these manifests.
    pub fn new(cluster: &str, name: &str, manifests: Vec<Value>) -> Self {
        ManifestWork {
            api_version: work_api_version(),
            kind: work_kind(),
            metadata: ObjectMeta {
                name: name.to_string(),
                namespace: Some(cluster.to_string()),
                ..Default::default()
            },
            spec: ManifestWorkSpec {
                workload: ManifestsTemplate {
                    manifests,
                    extra: Extra::new(),
                },
                ..Default::default()
            },
            status: ManifestWorkStatus::default(),
            extra: Extra::new(),
        }
    }

    /// `spec.deleteOption.ttlSecondsAfterFinished`, when set.
    pub fn ttl_seconds_after_finished(&self) -> Option<i64> {
        self.spec.delete_option.as_ref()?.ttl_seconds_after_finished
    }

    /// The work's condition of this type, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        find_condition(&self.status.conditions, type_)
    }
}

/// The desired state of a ManifestWork.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkSpec {
    /// The manifests to apply.
    #[serde(default)]
    pub workload: ManifestsTemplate,
    /// What happens to applied resources when the work is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_option: Option<DeleteOption>,
    /// Per-resource options: feedback rules and update strategy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifest_configs: Vec<ManifestConfigOption>,
    /// Who applies the manifests on the managed cluster (default: the agent itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<crate::executor::ManifestWorkExecutor>,
    /// Spec fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The manifests of a work.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestsTemplate {
    /// Raw Kubernetes objects, kept exactly as given.
    #[serde(default)]
    pub manifests: Vec<Value>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// How applied resources are treated when the work is deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PropagationPolicy {
    /// Delete the resources and wait until they are gone (the default).
    #[default]
    Foreground,
    /// Leave every resource on the cluster.
    Orphan,
    /// Leave the resources matched by `selectivelyOrphans`, delete the rest.
    SelectivelyOrphan,
}

/// `spec.deleteOption`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOption {
    /// Foreground (default), Orphan or SelectivelyOrphan.
    #[serde(default)]
    pub propagation_policy: PropagationPolicy,
    /// The resources to orphan with `SelectivelyOrphan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selectively_orphans: Option<SelectivelyOrphan>,
    /// The hub deletes the work this long after it reported `Complete=True`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i64>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `deleteOption.selectivelyOrphans`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectivelyOrphan {
    /// Resources to leave on the cluster.
    #[serde(default)]
    pub orphaning_rules: Vec<ResourceIdentifier>,
}

/// Names one resource of a work: group, resource (plural), name and namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceIdentifier {
    /// API group, empty for the core group.
    #[serde(default)]
    pub group: String,
    /// Plural resource name, e.g. `deployments`.
    #[serde(default)]
    pub resource: String,
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// Object namespace, empty for cluster-scoped objects.
    #[serde(default)]
    pub namespace: String,
}

/// `spec.manifestConfigs[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestConfigOption {
    /// Which resource these options apply to.
    pub resource_identifier: ResourceIdentifier,
    /// What to report back from the resource's status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feedback_rules: Vec<FeedbackRule>,
    /// How to apply the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
    /// Conditions the agent sets on this manifest from its live object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub condition_rules: Vec<ConditionRule>,
    /// Fields we do not model (for example `feedbackScrapeType`).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The kind of a condition rule. Unknown names are kept (and refused by the hub) so that a
/// stored document always reads back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionRuleType {
    /// OCM's built-in `Complete` rules for Jobs and Pods.
    WellKnownConditions,
    /// The rule's own `celExpressions`.
    #[serde(rename = "CEL")]
    Cel,
    /// Any other name, as given.
    #[serde(untagged)]
    Other(String),
}

/// `manifestConfigs[].conditionRules[]`: sets the condition `condition` on the manifest
/// from CEL expressions over its live object (`object`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionRule {
    /// The condition type set on the manifest, e.g. `Complete`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub condition: String,
    /// WellKnownConditions or CEL.
    #[serde(rename = "type")]
    pub type_: ConditionRuleType,
    /// For CEL: all must be true for the condition to be True.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cel_expressions: Vec<String>,
    /// The condition's message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// A CEL expression over `object` and `result` giving the message; wins over `message`
    /// when it gives a non-empty string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message_expression: String,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The kind of a feedback rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FeedbackType {
    /// The well-known fields of Deployments, StatefulSets, DaemonSets, Jobs and Pods.
    WellKnownStatus,
    /// The given JSON paths.
    #[serde(rename = "JSONPaths")]
    JsonPaths,
}

/// `manifestConfigs[].feedbackRules[]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackRule {
    /// WellKnownStatus or JSONPaths.
    #[serde(rename = "type")]
    pub type_: FeedbackType,
    /// The paths for JSONPaths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_paths: Vec<JsonPath>,
}

/// One named JSON path of a feedback rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JsonPath {
    /// The name the value is reported under.
    pub name: String,
    /// A JSON path into the resource, e.g. `.status.replicas`.
    pub path: String,
    /// Fields we do not model (for example `version`).
    #[serde(flatten)]
    pub extra: Extra,
}

/// The kind of an update strategy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UpdateStrategyType {
    /// Server-side apply, field manager `klusterlet`, forced (the default).
    #[default]
    Update,
    /// Create when missing, never update.
    CreateOnly,
    /// Server-side apply with the given field manager and force.
    ServerSideApply,
    /// Never write; only observe and report.
    ReadOnly,
}

/// `manifestConfigs[].updateStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStrategy {
    /// Update, CreateOnly, ServerSideApply or ReadOnly.
    #[serde(rename = "type", default)]
    pub type_: UpdateStrategyType,
    /// Options for ServerSideApply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_side_apply: Option<ServerSideApplyConfig>,
}

/// `updateStrategy.serverSideApply`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerSideApplyConfig {
    /// Take ownership of conflicting fields.
    #[serde(default, skip_serializing_if = "is_false")]
    pub force: bool,
    /// Field manager name (default `klusterlet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<String>,
    /// Fields another controller owns on the managed cluster (an HPA's `spec.replicas`):
    /// left out of the apply and not counted as drift (see `docs/architecture.md`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore_fields: Vec<IgnoreField>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `OnSpokePresent`: once the managed cluster's object has the field, the work's value no
/// longer matters (it is set when the object is created).
pub const ON_SPOKE_PRESENT: &str = "OnSpokePresent";
/// `OnSpokeChange`: a value changed on the managed cluster is kept until the work's own
/// value for it changes.
pub const ON_SPOKE_CHANGE: &str = "OnSpokeChange";

/// `updateStrategy.serverSideApply.ignoreFields[]`, as OCM's work/v1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IgnoreField {
    /// [`ON_SPOKE_PRESENT`] (the default) or [`ON_SPOKE_CHANGE`]; kept as text so an
    /// unknown value reaches the hub's validation (422) instead of failing to parse.
    #[serde(default = "default_ignore_condition")]
    pub condition: String,
    /// kubectl-style JSONPaths of the fields, e.g. `.spec.replicas`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_paths: Vec<String>,
    /// Fields we do not model (OCM's newer `jsonPointers`, `jqPathExpressions`: refused by
    /// the hub rather than silently ignored).
    #[serde(flatten)]
    pub extra: Extra,
}

fn default_ignore_condition() -> String {
    ON_SPOKE_PRESENT.to_string()
}

/// `status` of a ManifestWork, written by the cluster's agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkStatus {
    /// Work conditions: Applied, Available, Ready, Degraded, Progressing, Deleting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per-manifest status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_status: Option<ManifestResourceStatus>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

impl ManifestWorkStatus {
    /// True when nothing has been reported.
    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty() && self.resource_status.is_none() && self.extra.is_empty()
    }
}

/// `status.resourceStatus`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestResourceStatus {
    /// One entry per manifest.
    #[serde(default)]
    pub manifests: Vec<ManifestCondition>,
}

/// The status of one manifest.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestCondition {
    /// Which manifest.
    pub resource_meta: ManifestResourceMeta,
    /// Applied, Available, Ready.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Values read from the resource's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_feedback: Option<StatusFeedbackResult>,
}

/// Identifies a manifest of a work and the resource it became.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestResourceMeta {
    /// Index of the manifest in `spec.workload.manifests`.
    pub ordinal: i32,
    /// API group.
    #[serde(default)]
    pub group: String,
    /// API version.
    #[serde(default)]
    pub version: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Plural resource.
    #[serde(default)]
    pub resource: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace, empty when cluster-scoped.
    #[serde(default)]
    pub namespace: String,
}

/// `statusFeedback`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusFeedbackResult {
    /// The values read (left out when none, so an empty result is `{}` as in OCM).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<FeedbackValue>,
}

/// One feedback value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackValue {
    /// The rule's name for it.
    pub name: String,
    /// The typed value.
    pub field_value: FieldValue,
}

/// A typed feedback value, OCM style.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldValue {
    /// Integer, String, Boolean or JsonRaw.
    #[serde(rename = "type")]
    pub type_: String,
    /// Set when `type` is Integer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer: Option<i64>,
    /// Set when `type` is String.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<String>,
    /// Set when `type` is Boolean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean: Option<bool>,
    /// Set when `type` is JsonRaw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_raw: Option<String>,
}

/// The body of `PUT .../manifestworks/{name}/status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StatusUpdate {
    /// The new status.
    pub status: ManifestWorkStatus,
}

/// A managed cluster as the hub knows it: OCM's `cluster.open-cluster-management.io/v1`
/// ManagedCluster. In a write, `status` is the hub's and ignored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedCluster {
    /// Always `cluster.open-cluster-management.io/v1`.
    #[serde(default = "cluster_api_version")]
    pub api_version: String,
    /// Always `ManagedCluster`.
    #[serde(default = "cluster_kind")]
    pub kind: String,
    /// Name and labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Acceptance and taints.
    #[serde(default)]
    pub spec: ManagedClusterSpec,
    /// Conditions, claims, lease; set by the hub.
    #[serde(default)]
    pub status: ManagedClusterStatus,
    /// Top-level fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

fn cluster_api_version() -> String {
    CLUSTER_API_VERSION.to_string()
}
fn cluster_kind() -> String {
    "ManagedCluster".to_string()
}

impl ManagedCluster {
    /// A new cluster record with this name and labels.
    pub fn new(name: &str, labels: BTreeMap<String, String>) -> Self {
        ManagedCluster {
            api_version: cluster_api_version(),
            kind: cluster_kind(),
            metadata: ObjectMeta {
                name: name.to_string(),
                labels,
                ..Default::default()
            },
            spec: ManagedClusterSpec::default(),
            status: ManagedClusterStatus::default(),
            extra: Extra::new(),
        }
    }

    /// The cluster's condition of this type, if any.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        find_condition(&self.status.conditions, type_)
    }
}

/// `spec` of a ManagedCluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterSpec {
    /// Whether the hub accepted the cluster's agent.
    #[serde(default)]
    pub hub_accepts_client: bool,
    /// Taints, kept as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Value>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `status` of a ManagedCluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedClusterStatus {
    /// HubAcceptedManagedCluster, ManagedClusterJoined, ManagedClusterConditionAvailable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Facts the agent read from its cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<Claim>,
    /// Resources of the cluster's Ready nodes, summed (`cpu`, `memory`, `pods`, as
    /// Kubernetes quantities), as OCM's `status.capacity`; from the agent's claims.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capacity: BTreeMap<String, String>,
    /// What of that capacity pods may use (`status.allocatable` of those nodes, summed).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocatable: BTreeMap<String, String>,
    /// The managed cluster's Kubernetes version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ClusterVersion>,
    /// When the agent last renewed its lease (served live, not indexed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lease_time: Option<DateTime<Utc>>,
}

/// A named fact about a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Claim {
    /// Claim name, e.g. `kubeversion.open-cluster-management.io`.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// `status.version` of a ManagedCluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ClusterVersion {
    /// e.g. `v1.33.13`.
    #[serde(default)]
    pub kubernetes: String,
}

/// Metadata of a list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListMeta {
    /// Pass back as `continue` to get the next page.
    #[serde(rename = "continue", default, skip_serializing_if = "Option::is_none")]
    pub continue_: Option<String>,
    /// The change index this list is consistent with; pass as `index` to block.
    #[serde(default)]
    pub index: u64,
    /// The index epoch `index` belongs to, the same as the response's `X-Hub-Epoch`:
    /// indexes of two epochs are not comparable (a restore of the hub's database starts a
    /// new one). Absent from lists that are not the hub's answer (the CLI's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
}

/// A list of objects: `ManifestWorkList`, `ManagedClusterList`, `TokenList`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct List<T> {
    /// Always `v1`.
    pub api_version: String,
    /// e.g. `ManifestWorkList`.
    pub kind: String,
    /// Continue token and index.
    pub metadata: ListMeta,
    /// The objects.
    pub items: Vec<T>,
}

impl<T> List<T> {
    /// A list of the given kind.
    pub fn new(kind: &str, items: Vec<T>, index: u64, continue_: Option<String>) -> Self {
        List {
            api_version: "v1".to_string(),
            kind: kind.to_string(),
            metadata: ListMeta {
                continue_,
                index,
                epoch: None,
            },
            items,
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code: `malformed`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `deleting`, `precondition_failed`, `too_large`, `invalid`, `unavailable`,
    /// `internal`.
    #[schemars(extend("enum" = ["malformed", "unauthorized", "forbidden", "not_found", "conflict", "deleting", "precondition_failed", "too_large", "invalid", "unavailable", "internal"]))]
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// Extra facts, e.g. the field paths of a 422.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// One invalid field of a 422 response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.workload.manifests[2].kind`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// The body of `DELETE /api/v1/clusters/{c}?force=true`: what was left on the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDeletion {
    /// The cluster.
    pub cluster: String,
    /// Whether the records are gone already.
    pub removed: bool,
    /// Works whose resources may still be on the cluster (their agent never cleaned up).
    #[serde(default)]
    pub works_left: Vec<String>,
}

/// Parses a YAML or JSON text into a JSON value (YAML is a superset of JSON).
pub fn parse_yaml_value(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let doc = json!({
            "apiVersion": WORK_API_VERSION,
            "kind": "ManifestWork",
            "metadata": {"name": "w", "namespace": "c1", "managedFields": [{"x": 1}]},
            "spec": {
                "workload": {"manifests": [{"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "a"}, "data": {"k": "v"}, "weird": [1, 2]}]},
                "executor": {"subject": {"type": "ServiceAccount"}},
                "manifestConfigs": [{
                    "resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "d", "namespace": "n"},
                    "conditionRules": [{"type": "CEL"}, {"condition": "Complete", "type": "WellKnownConditions", "future": 1},
                        {"condition": "Up", "type": "CEL", "celExpressions": ["object.status.ready"], "message": "m",
                         "messageExpression": "result ? 'up' : 'down'"}, {"condition": "X", "type": "Later"}],
                    "updateStrategy": {"type": "ServerSideApply", "serverSideApply": {"force": true, "ignoreFields": [{"condition": "OnSpokeChange"}]}}
                }]
            },
            "futureTopLevel": true
        });
        let work: ManifestWork = serde_json::from_value(doc.clone()).unwrap();
        assert_eq!(serde_json::to_value(&work).unwrap(), doc);
    }

    #[test]
    fn defaults_fill_api_version_and_kind() {
        let work: ManifestWork =
            serde_json::from_value(json!({"metadata": {"name": "w"}})).unwrap();
        assert_eq!(work.api_version, WORK_API_VERSION);
        assert_eq!(work.kind, "ManifestWork");
    }

    #[test]
    fn yaml_parses_to_the_same_value_as_json() {
        let yaml = "metadata:\n  name: w\nspec:\n  workload:\n    manifests:\n    - apiVersion: v1\n      kind: ConfigMap\n      metadata: {name: a}\n";
        let v = parse_yaml_value(yaml).unwrap();
        assert_eq!(v["spec"]["workload"]["manifests"][0]["kind"], "ConfigMap");
    }
}

/// How one work name fares across the clusters it was sent to
/// (`GET /api/v1/manifestworks/summary`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkSummary {
    /// The work's name.
    pub name: String,
    /// Clusters holding a work of this name.
    pub clusters: u32,
    /// ... whose agent reports `Applied=True` for the current generation.
    pub applied: u32,
    /// ... `Available=True`.
    pub available: u32,
    /// ... `Ready=True`.
    pub ready: u32,
    /// ... `Degraded=True`.
    pub degraded: u32,
    /// ... `Progressing=True`.
    pub progressing: u32,
    /// ... with no status for the current generation yet, or whose cluster is unavailable.
    pub unknown: u32,
    /// Resources that failed to apply, with Kubernetes' reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failing: Vec<FailingResource>,
    /// Clusters whose lease expired: their status may be stale.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<UnavailableCluster>,
}

/// A resource of a work that failed on a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailingResource {
    /// The cluster.
    pub cluster: String,
    /// The manifest's index.
    pub ordinal: i32,
    /// Its kind.
    pub kind: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Which condition says so: `Applied` or `Ready`.
    pub condition: String,
    /// Kubernetes' reason.
    pub reason: String,
    /// Kubernetes' message.
    pub message: String,
}

/// A cluster whose agent stopped renewing its lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnavailableCluster {
    /// The cluster.
    pub cluster: String,
    /// Its last lease renewal, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lease_time: Option<DateTime<Utc>>,
}

/// `GET /version`: what the hub runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerVersion {
    /// The release, e.g. `0.1.0`.
    pub version: String,
    /// The REST API version served.
    pub api_version: String,
}

impl ServerVersion {
    /// The version of this build (the `api` crate is released with the hub and klusterlet).
    pub fn current() -> Self {
        ServerVersion {
            version: env!("CARGO_PKG_VERSION").to_string(),
            api_version: "v1".to_string(),
        }
    }
}
