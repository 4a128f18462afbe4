//! What the fleet controllers know: every cluster, placement and set, with what they last
//! decided and wrote, so that one change is answered by re-deciding only what it touches.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use api::fleet::{ManifestWorkReplicaSet, ManifestWorkReplicaSetStatus, Placement};
use api::{ManagedCluster, ManifestWork, ManifestWorkSpec};
use chrono::{DateTime, Utc};

use crate::service::authn::ApiScope;
use crate::service::namespaced::Authored;
use crate::service::placement::{ClusterMatcher, Compiled, compile_selector};
use crate::service::placements::Decisions;

/// A namespaced object's key: (namespace, name).
pub type Key = (String, String);

/// A placement and what was decided for it.
pub struct PlacementState {
    /// As stored.
    pub placement: Placement,
    /// Its last writer's reach (sets following it stay inside it).
    pub reach: Option<ApiScope>,
    /// Compiled spec; `None` when it no longer compiles (then it decides nothing).
    pub compiled: Option<Compiled>,
    /// The decisions stored.
    pub decisions: Decisions,
    /// Clusters that passed the filters at the last evaluation.
    pub feasible: HashSet<String>,
    /// When a toleration runs out: evaluate again then.
    pub recheck_at: Option<DateTime<Utc>>,
}

impl PlacementState {
    /// From the stored object and decisions.
    pub fn new(stored: Authored<Placement>, decisions: Decisions) -> Self {
        PlacementState {
            compiled: Compiled::new(&stored.object.spec).ok(),
            reach: stored.author.reach(),
            placement: stored.object,
            decisions,
            feasible: HashSet::new(),
            recheck_at: None,
        }
    }

    /// Whether its decisions can change for a cluster whose feasibility did not: it picks
    /// a number of clusters, spreads, or groups them by selector.
    pub fn orders_clusters(&self) -> bool {
        let spec = &self.placement.spec;
        spec.number_of_clusters.is_some()
            || spec
                .decision_strategy
                .as_ref()
                .is_some_and(|d| !d.group_strategy.decision_groups.is_empty())
    }

    /// The decided clusters.
    pub fn decided(&self) -> BTreeSet<String> {
        self.decisions.clusters().cloned().collect()
    }
}

/// One cluster's work of a set, as last read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkView {
    /// Applied / Available / Ready / Degraded / Progressing, `True|False|Unknown`, counted
    /// only when observed for the work's current generation.
    pub conditions: BTreeMap<String, String>,
    /// Whether it is being deleted.
    pub deleting: bool,
}

impl WorkView {
    /// What a set's status needs of a work.
    pub fn of(work: &ManifestWork) -> Self {
        let generation = work.metadata.generation;
        let mut conditions: BTreeMap<String, String> =
            ["Applied", "Available", "Ready", "Degraded", "Progressing"]
                .into_iter()
                .map(|t| {
                    let status = work
                        .condition(t)
                        .filter(|c| {
                            c.observed_generation.is_none() || c.observed_generation == generation
                        })
                        .map(|c| c.status.clone())
                        .unwrap_or_else(|| "Unknown".into());
                    (t.to_string(), status)
                })
                .collect();
        // Said only when no agent applies the work: a waiter then knows why nothing moves.
        if let Some(c) = work.condition(api::status::AGENT_JOINED)
            && c.status != "True"
        {
            conditions.insert(api::status::AGENT_JOINED.into(), c.status.clone());
        }
        WorkView {
            conditions,
            deleting: work.metadata.deletion_timestamp.is_some(),
        }
    }

    /// Whether condition `t` is True.
    pub fn is(&self, t: &str) -> bool {
        self.conditions.get(t).is_some_and(|s| s == "True")
    }
}

/// A set and what it keeps.
pub struct SetState {
    /// As stored.
    pub set: ManifestWorkReplicaSet,
    /// Its last writer's reach.
    pub reach: Option<ApiScope>,
    /// Its last writer, as the audit log names them.
    pub author: String,
    /// The override selectors, compiled (index as in the spec); `None` if one fails.
    pub overrides: Option<Vec<ClusterMatcher>>,
    /// The replica-split weight selectors, compiled.
    pub weights: Option<Vec<ClusterMatcher>>,
    /// Per cluster, the spec last written there.
    pub rendered: BTreeMap<String, ManifestWorkSpec>,
    /// Per cluster, the placement that decided it.
    pub placed_by: BTreeMap<String, String>,
    /// Per cluster, its replica share.
    pub shares: BTreeMap<String, i32>,
    /// Per cluster, the set's work as last read.
    pub works: BTreeMap<String, WorkView>,
    /// Per cluster, why the set keeps no work there.
    pub messages: BTreeMap<String, String>,
    /// The status last written.
    pub status: ManifestWorkReplicaSetStatus,
    /// Whether every cluster was checked for a work of the set that it no longer decides
    /// (an earlier leader may have left one): done once per set per leadership.
    pub swept: bool,
}

impl SetState {
    /// From the stored object.
    pub fn new(stored: Authored<ManifestWorkReplicaSet>) -> Self {
        let set = stored.object;
        let overrides = set
            .spec
            .overrides
            .iter()
            .map(|o| compile_selector(&o.cluster_selector, "").ok())
            .collect();
        let weights = set
            .spec
            .replica_split
            .as_ref()
            .map(|s| {
                s.weights
                    .iter()
                    .map(|w| compile_selector(&w.cluster_selector, "").ok())
                    .collect()
            })
            .unwrap_or(Some(Vec::new()));
        SetState {
            reach: stored.author.reach(),
            author: stored.author.actor.clone(),
            overrides,
            weights,
            rendered: BTreeMap::new(),
            placed_by: BTreeMap::new(),
            shares: set
                .status
                .clusters
                .iter()
                .filter_map(|c| Some((c.cluster_name.clone(), c.replicas?)))
                .collect(),
            works: BTreeMap::new(),
            messages: BTreeMap::new(),
            status: set.status.clone(),
            swept: false,
            set,
        }
    }

    /// Whether it follows placement `name`.
    pub fn follows(&self, name: &str) -> bool {
        self.set.spec.placement_refs.iter().any(|r| r.name == name)
    }
}

/// Everything the fleet controllers know.
#[derive(Default)]
pub struct World {
    /// Every cluster, ordered by name (the placement engine's input as it is).
    clusters: Vec<ManagedCluster>,
    /// Every placement.
    pub placements: BTreeMap<Key, PlacementState>,
    /// Every set.
    pub sets: BTreeMap<Key, SetState>,
    /// Per cluster, how many placements decided it (the Balance score's input).
    load: HashMap<String, u32>,
}

impl World {
    /// Every cluster, ordered by name.
    pub fn clusters(&self) -> &[ManagedCluster] {
        &self.clusters
    }

    /// One cluster.
    pub fn cluster(&self, name: &str) -> Option<&ManagedCluster> {
        self.clusters
            .binary_search_by(|c| c.metadata.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.clusters[i])
    }

    /// Replaces every cluster.
    pub fn set_clusters(&mut self, mut clusters: Vec<ManagedCluster>) {
        clusters.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        self.clusters = clusters;
    }

    /// Puts (or, with `None`, removes) one cluster; the old record, if any.
    pub fn put_cluster(
        &mut self,
        name: &str,
        cluster: Option<ManagedCluster>,
    ) -> Option<ManagedCluster> {
        let at = self
            .clusters
            .binary_search_by(|c| c.metadata.name.as_str().cmp(name));
        match (at, cluster) {
            (Ok(i), Some(c)) => Some(std::mem::replace(&mut self.clusters[i], c)),
            (Ok(i), None) => Some(self.clusters.remove(i)),
            (Err(i), Some(c)) => {
                self.clusters.insert(i, c);
                None
            }
            (Err(_), None) => None,
        }
    }

    /// Records a placement's new decisions (keeping the load in step).
    pub fn set_decisions(&mut self, key: &Key, decisions: Decisions) {
        let Some(state) = self.placements.get_mut(key) else {
            return;
        };
        for c in state.decisions.clusters() {
            if let Some(n) = self.load.get_mut(c) {
                *n = n.saturating_sub(1);
            }
        }
        for c in decisions.clusters() {
            *self.load.entry(c.clone()).or_default() += 1;
        }
        state.decisions = decisions;
    }

    /// Forgets a placement (its decisions leave the load).
    pub fn remove_placement(&mut self, key: &Key) {
        self.set_decisions(key, Decisions::default());
        self.placements.remove(key);
    }

    /// Adds or replaces a placement, keeping the load in step.
    pub fn put_placement(&mut self, key: Key, state: PlacementState) {
        let decisions = state.decisions.clone();
        self.remove_placement(&key);
        self.placements.insert(
            key.clone(),
            PlacementState {
                decisions: Decisions::default(),
                ..state
            },
        );
        self.set_decisions(&key, decisions);
    }

    /// The load of every cluster without `key`'s own decisions.
    pub fn load_without(&self, key: &Key) -> HashMap<String, u32> {
        let mut load = self.load.clone();
        if let Some(state) = self.placements.get(key) {
            for c in state.decisions.clusters() {
                if let Some(n) = load.get_mut(c) {
                    *n = n.saturating_sub(1);
                }
            }
        }
        load
    }
}
