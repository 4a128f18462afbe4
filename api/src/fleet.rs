//! Wire types of fleet placement, in Open Cluster Management's shapes so an OCM user's YAML
//! works unchanged: `cluster.open-cluster-management.io/v1beta1` Placement and
//! PlacementDecision, `work.open-cluster-management.io/v1alpha1` ManifestWorkReplicaSet
//! (with our optional `overrides` and `replicaSplit`).
//!
//! As in [`crate::types`], every struct keeps the fields it does not model in `extra`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::types::{Condition, Extra, ManifestWorkSpec, ObjectMeta};

/// `apiVersion` of Placement and PlacementDecision.
pub const PLACEMENT_API_VERSION: &str = "cluster.open-cluster-management.io/v1beta1";
/// `apiVersion` of ManifestWorkReplicaSet.
pub const SET_API_VERSION: &str = "work.open-cluster-management.io/v1alpha1";
/// The cluster label that makes a cluster a member of a cluster set.
pub const CLUSTER_SET_LABEL: &str = "cluster.open-cluster-management.io/clusterset";
/// The label on every work a set keeps: `<namespace>.<name>` of the set.
pub const SET_LABEL: &str = "work.open-cluster-management.io/manifestworkreplicaset";
/// The label on PlacementDecisions naming their placement.
pub const PLACEMENT_LABEL: &str = "cluster.open-cluster-management.io/placement";
/// The label on PlacementDecisions with their decision group's index.
pub const DECISION_GROUP_INDEX_LABEL: &str =
    "cluster.open-cluster-management.io/decision-group-index";
/// The label on PlacementDecisions with their decision group's name.
pub const DECISION_GROUP_NAME_LABEL: &str =
    "cluster.open-cluster-management.io/decision-group-name";
/// The taint the hub puts on a cluster whose agent stopped renewing its lease.
pub const TAINT_UNREACHABLE: &str = "cluster.open-cluster-management.io/unreachable";
/// The taint of a cluster whose availability condition is False.
pub const TAINT_UNAVAILABLE: &str = "cluster.open-cluster-management.io/unavailable";

/// Placement conditions (OCM's names).
pub mod conditions {
    /// Placement: the decisions satisfy the spec (`numberOfClusters` reached).
    pub const PLACEMENT_SATISFIED: &str = "PlacementSatisfied";
    /// Placement: the spec cannot be evaluated as written.
    pub const PLACEMENT_MISCONFIGURED: &str = "PlacementMisconfigured";
    /// Set: its placements exist and decided some clusters.
    pub const PLACEMENT_VERIFIED: &str = "PlacementVerified";
    /// Set: every decided cluster has the current template (rollout done).
    pub const PLACEMENT_ROLLED_OUT: &str = "PlacementRolledOut";
    /// Set: a work exists on every decided cluster.
    pub const MANIFESTWORK_APPLIED: &str = "ManifestworkApplied";
}

/// A Kubernetes label selector (`matchLabels` and `matchExpressions`, all must hold); the
/// empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Exact key=value pairs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One requirement of a label or claim selector.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectorRequirement {
    /// The label (or claim) name.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`; empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A selector over claims: OCM allows only `matchExpressions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSelector {
    /// Requirements over claim names and values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// CEL expressions over the variable `managedCluster` (the ManagedCluster document); all
/// must be true.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CelSelector {
    /// Expressions that must all evaluate to `true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cel_expressions: Vec<String>,
}

/// Which clusters a predicate or decision group accepts: every part given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSelector {
    /// Over the cluster's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Over the cluster's claims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_selector: Option<ClaimSelector>,
    /// CEL over the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel_selector: Option<CelSelector>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One predicate: a cluster must pass its required selector. Predicates are ORed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPredicate {
    /// The selector a cluster must pass.
    #[serde(default)]
    pub required_cluster_selector: ClusterSelector,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// How clusters are scored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrioritizerPolicy {
    /// `Additive` (default: Balance and Steady at weight 1 plus what is configured) or
    /// `Exact` (only what is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Scores and their weights.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub configurations: Vec<PrioritizerConfig>,
}

/// One score and its weight.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrioritizerConfig {
    /// Which score.
    #[serde(default)]
    pub score_coordinate: ScoreCoordinate,
    /// Its weight, -10..=10 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
}

/// A score's name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScoreCoordinate {
    /// `BuiltIn` (default) or `AddOn` (not served here: refused).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// `Balance`, `Steady`, `ResourceAllocatableCPU`, `ResourceAllocatableMemory`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_in: Option<String>,
    /// OCM's add-on scores, kept as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_on: Option<Value>,
}

/// How decisions spread over a topology.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpreadPolicy {
    /// Constraints, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spread_constraints: Vec<SpreadConstraint>,
}

/// Decisions spread over the values of one label or claim.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SpreadConstraint {
    /// The label or claim whose values are the topology's domains.
    pub topology_key: String,
    /// `Label` or `Claim`.
    pub topology_key_type: String,
    /// Largest allowed difference of decisions between two domains (default 1, ≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_skew: Option<i32>,
    /// `ScheduleAnyway` (default) or `DoNotSchedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_unsatisfiable: Option<String>,
}

/// A toleration of a cluster taint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// The taint key; empty with `Exists` tolerates every taint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
    /// `Equal` (default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The value for `Equal`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// The effect tolerated; empty tolerates every effect.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub effect: String,
    /// How long after the taint was added it is tolerated (NoSelect only); unset: forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

/// A cluster taint, as OCM writes it in `spec.taints[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Taint {
    /// The taint key.
    pub key: String,
    /// Its value.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// `NoSelect`, `PreferNoSelect` or `NoSelectIfNew`.
    pub effect: String,
    /// When it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_added: Option<chrono::DateTime<chrono::Utc>>,
}

/// How decided clusters are grouped (for rollouts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionStrategy {
    /// The grouping.
    #[serde(default)]
    pub group_strategy: GroupStrategy,
}

/// Decision groups: named groups first, then the rest in chunks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupStrategy {
    /// Named groups, each of the decided clusters its selector accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decision_groups: Vec<DecisionGroup>,
    /// Most clusters per group: a number or a percentage of the decided clusters (`25%`);
    /// default `100%`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clusters_per_decision_group: Option<Value>,
}

/// A named decision group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionGroup {
    /// The group's name.
    pub group_name: String,
    /// Which decided clusters belong to it.
    #[serde(default)]
    pub group_cluster_selector: ClusterSelector,
}

/// `spec` of a Placement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Cluster sets to choose from (the label [`CLUSTER_SET_LABEL`]); empty: every cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_sets: Vec<String>,
    /// How many clusters to choose; unset: every cluster that qualifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_clusters: Option<i32>,
    /// A cluster qualifies when it passes any predicate (all clusters when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub predicates: Vec<ClusterPredicate>,
    /// Scores, when more clusters qualify than asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prioritizer_policy: Option<PrioritizerPolicy>,
    /// Spread over topology domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread_policy: Option<SpreadPolicy>,
    /// Taints tolerated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Decision groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_strategy: Option<DecisionStrategy>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One decision group in a Placement's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionGroupStatus {
    /// Its index, from 0.
    pub decision_group_index: i32,
    /// Its name (empty for the unnamed chunks).
    #[serde(default)]
    pub decision_group_name: String,
    /// The PlacementDecisions that hold its clusters.
    #[serde(default)]
    pub decisions: Vec<String>,
    /// How many clusters it has.
    pub clusters_count: i32,
}

/// `status` of a Placement (written by the hub only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementStatus {
    /// How many clusters are decided.
    #[serde(default)]
    pub number_of_selected_clusters: i32,
    /// The decision groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decision_groups: Vec<DecisionGroupStatus>,
    /// `PlacementSatisfied`, `PlacementMisconfigured`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// OCM's `cluster.open-cluster-management.io/v1beta1` Placement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// `cluster.open-cluster-management.io/v1beta1`.
    #[serde(default)]
    pub api_version: String,
    /// `Placement`.
    #[serde(default)]
    pub kind: String,
    /// Name, namespace, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to choose.
    #[serde(default)]
    pub spec: PlacementSpec,
    /// What was chosen (the hub's; ignored in writes).
    #[serde(default)]
    pub status: PlacementStatus,
    /// Top-level fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// One decided cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterDecision {
    /// The cluster.
    pub cluster_name: String,
    /// Why (OCM leaves it empty; so do we unless there is something to say).
    #[serde(default)]
    pub reason: String,
}

/// `status` of a PlacementDecision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementDecisionStatus {
    /// The decided clusters (at most 100 per PlacementDecision, as OCM).
    #[serde(default)]
    pub decisions: Vec<ClusterDecision>,
}

/// OCM's PlacementDecision: a page of one decision group's clusters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementDecision {
    /// `cluster.open-cluster-management.io/v1beta1`.
    pub api_version: String,
    /// `PlacementDecision`.
    pub kind: String,
    /// `<placement>-decision-<n>`, labelled with the placement and its group.
    pub metadata: ObjectMeta,
    /// The clusters.
    pub status: PlacementDecisionStatus,
}

/// Why one cluster was or was not chosen, for `explain` and `preview`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterExplanation {
    /// The cluster.
    pub cluster_name: String,
    /// Whether it is decided.
    pub selected: bool,
    /// Whether it passed the filters (cluster sets, predicates, taints); a feasible cluster
    /// may still lose on score, count or spread.
    pub feasible: bool,
    /// Its total score (feasible clusters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    /// Each prioritizer's score before weighting.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, i64>,
    /// The decision group it falls in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_group: Option<String>,
    /// The reasons, one sentence each: what failed, or why it won or lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// The answer of `explain` and `preview`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementExplanation {
    /// The placement's namespace and name (empty names for a preview).
    pub metadata: ObjectMeta,
    /// Status as it would be written.
    pub status: PlacementStatus,
    /// Every cluster the caller may read, decided ones first.
    pub clusters: Vec<ClusterExplanation>,
}

/// A placement a set uses, and how its clusters get new templates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalPlacementReference {
    /// The Placement's name, in the set's namespace.
    pub name: String,
    /// `{type: All|Progressive|ProgressivePerGroup, ...}`: stored as given; only `All` is
    /// acted on until rollouts land.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_strategy: Option<Value>,
}

/// Our extension: a JSON merge patch for some clusters' copy of some manifests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetOverride {
    /// Which decided clusters (empty: all).
    #[serde(default)]
    pub cluster_selector: ClusterSelector,
    /// Which manifests: matched by kind, name, namespace (and apiVersion's group when
    /// given); empty parts match anything.
    #[serde(default)]
    pub manifest: ManifestRef,
    /// An RFC 7386 JSON merge patch applied to each matching manifest.
    pub patch: Value,
}

/// Names manifests of the template.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRef {
    /// e.g. `apps/v1`; empty matches any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// e.g. `Deployment`; empty matches any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// The manifest's `metadata.name`; empty matches any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The manifest's `metadata.namespace`; empty matches any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// Our extension: one workload's replicas divided over the decided clusters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSplit {
    /// The workload (one manifest with `spec.replicas`).
    pub workload: ManifestRef,
    /// Replicas over all clusters.
    pub total_replicas: i32,
    /// `Equal` (default), `Weighted` or `AllocatableCPU`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// For `Weighted`: a cluster's weight is that of the first entry whose selector it
    /// passes (0 when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weights: Vec<ClusterWeight>,
}

/// A weight for the clusters a selector accepts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterWeight {
    /// Which clusters.
    #[serde(default)]
    pub cluster_selector: ClusterSelector,
    /// Their weight, ≥ 0.
    pub weight: i32,
}

/// `spec` of a ManifestWorkReplicaSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkReplicaSetSpec {
    /// The spec of the work made for each decided cluster.
    #[serde(default)]
    pub manifest_work_template: ManifestWorkSpec,
    /// The placements whose decisions the set follows (at least one).
    #[serde(default)]
    pub placement_refs: Vec<LocalPlacementReference>,
    /// `Background` (default: works deleted with the set), `Foreground` (the set goes when
    /// its works are gone) or `Orphan` (ours: works stay, no longer owned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade_deletion_policy: Option<String>,
    /// Ours: per-cluster merge patches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<SetOverride>,
    /// Ours: a replica total divided over the clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_split: Option<ReplicaSplit>,
    /// Fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Counts of a set's works by condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetSummary {
    /// Works the set keeps.
    pub total: i32,
    /// With `Applied=True`.
    pub applied: i32,
    /// With `Available=True`.
    pub available: i32,
    /// With `Degraded=True`.
    pub degraded: i32,
    /// With `Progressing=True`.
    pub progressing: i32,
}

/// One placement's part of a set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSummary {
    /// The placement.
    pub name: String,
    /// `N/M`: decision groups whose works are all Available, of all.
    #[serde(default)]
    pub available_decision_groups: String,
    /// Its works' counts.
    #[serde(default)]
    pub summary: SetSummary,
}

/// Ours: one cluster's work of a set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SetClusterStatus {
    /// The cluster.
    pub cluster_name: String,
    /// The placement that decided it.
    pub placement: String,
    /// Its replica share, with `replicaSplit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The work's Applied / Available / Ready / Degraded, as `True|False|Unknown`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub conditions: BTreeMap<String, String>,
    /// Why the set keeps no work there (out of its author's scope, a foreign work of the
    /// same name), if so.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// `status` of a ManifestWorkReplicaSet (the hub's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkReplicaSetStatus {
    /// `PlacementVerified`, `PlacementRolledOut`, `ManifestworkApplied`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Counts over all its works.
    #[serde(default)]
    pub summary: SetSummary,
    /// Per placement (OCM's field name).
    #[serde(default, rename = "placementSummary")]
    pub placements_summary: Vec<PlacementSummary>,
    /// Ours: per cluster, with its replica share.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<SetClusterStatus>,
}

/// OCM's `work.open-cluster-management.io/v1alpha1` ManifestWorkReplicaSet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestWorkReplicaSet {
    /// `work.open-cluster-management.io/v1alpha1`.
    #[serde(default)]
    pub api_version: String,
    /// `ManifestWorkReplicaSet`.
    #[serde(default)]
    pub kind: String,
    /// Name, namespace, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Template and placements.
    #[serde(default)]
    pub spec: ManifestWorkReplicaSetSpec,
    /// The hub's account of its works.
    #[serde(default)]
    pub status: ManifestWorkReplicaSetStatus,
    /// Top-level fields we do not model.
    #[serde(flatten)]
    pub extra: Extra,
}
