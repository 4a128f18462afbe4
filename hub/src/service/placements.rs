//! Placements: OCM's Placement objects, the decisions the placement controller writes for
//! them, and `explain`/`preview`, which say for every cluster why it was chosen or not.
//!
//! Users write a placement's spec; only the controller writes its status and decisions
//! (one stored record per placement, served as OCM's PlacementDecision list).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use api::fleet::{
    PLACEMENT_API_VERSION, Placement, PlacementDecision, PlacementExplanation, PlacementStatus,
};
use api::{Condition, ManagedCluster};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::Hub;
use super::authn::Principal;
use super::error::{Error, Result};
use super::namespaced::{
    self, Authored, Namespaced, check_meta, encode, not_found, read_object, remove_object, target,
    write_object,
};
use super::placement::{self, Compiled, Evaluation, Group, Inputs};
use super::query::{Block, Indexed};
use super::writer::{Audit, Batch, Caller, WriteOp, Written};
use crate::store::{ObjectKind, StoredObject};

impl Namespaced for Placement {
    const KIND: ObjectKind = ObjectKind::Placement;
    const NOUN: &'static str = "placement";
    const PLURAL: &'static str = "placements";
    const PUT_ACTION: &'static str = "placement.put";
    fn metadata(&self) -> &api::ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut api::ObjectMeta {
        &mut self.metadata
    }
    fn same_spec(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
    fn keep_status(&mut self, stored: &Self) {
        self.status = stored.status.clone();
    }
    fn validate(&mut self, namespace: &str, name: &str) -> Result<()> {
        validate_placement(namespace, name, self).map(|_| ())
    }
}

/// One decision group as stored: its index, name and clusters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredGroup {
    /// From 0.
    pub index: i32,
    /// Empty for unnamed chunks.
    pub name: String,
    /// Its clusters, in decision order.
    pub clusters: Vec<String>,
}

/// A placement's decisions as stored (the `PlacementDecisions` row).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decisions {
    /// The groups, in order.
    pub groups: Vec<StoredGroup>,
}

impl Decisions {
    /// The decided clusters, in group order.
    pub fn clusters(&self) -> impl Iterator<Item = &String> {
        self.groups.iter().flat_map(|g| g.clusters.iter())
    }

    /// The engine's groups, for the decision objects and explanations.
    pub fn from_groups(groups: &[Group]) -> Self {
        Decisions {
            groups: groups
                .iter()
                .map(|g| StoredGroup {
                    index: g.index as i32,
                    name: g.name.clone(),
                    clusters: g.clusters.clone(),
                })
                .collect(),
        }
    }

    fn to_groups(&self) -> Vec<Group> {
        self.groups
            .iter()
            .map(|g| Group {
                index: g.index.max(0) as usize,
                name: g.name.clone(),
                clusters: g.clusters.clone(),
            })
            .collect()
    }
}

struct DecisionsRow;

impl DecisionsRow {
    fn decode(stored: &StoredObject) -> Result<Decisions> {
        serde_json::from_str(&stored.object).map_err(|e| {
            Error::Internal(format!(
                "stored decisions of placement {}/{} are corrupt: {e}",
                stored.namespace, stored.name
            ))
        })
    }
}

/// Checks a placement body against its path: metadata, and every field of the spec (with
/// field paths); returns it compiled.
pub fn validate_placement(
    namespace: &str,
    name: &str,
    placement: &mut Placement,
) -> Result<Compiled> {
    let mut errs = check_meta(
        namespace,
        name,
        (&placement.api_version, PLACEMENT_API_VERSION),
        (&placement.kind, "Placement"),
        &mut placement.metadata,
    );
    let compiled = Compiled::new(&placement.spec);
    match compiled {
        Ok(c) if errs.is_empty() => Ok(c),
        Ok(_) => Err(Error::invalid_fields(errs)),
        Err(spec_errs) => {
            errs.extend(spec_errs);
            Err(Error::invalid_fields(errs))
        }
    }
}

/// Removes a placement and its decisions (the sets that use it then keep no work).
#[derive(Debug)]
pub struct DeletePlacement {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

#[async_trait]
impl WriteOp for DeletePlacement {
    type Output = Placement;

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<Placement> {
        let (ns, name) = (self.namespace.as_str(), self.name.as_str());
        let placement = read_object::<Placement>(batch, ns, name)
            .await?
            .ok_or_else(|| not_found::<Placement>(ns, name))?
            .object;
        remove_object::<Placement>(batch, ns, name).await?;
        if batch
            .tx
            .get_object(ObjectKind::PlacementDecisions, ns, name)
            .await?
            .is_some()
        {
            batch
                .tx
                .delete_object(ObjectKind::PlacementDecisions, ns, name)
                .await?;
            batch.record_object(
                ObjectKind::PlacementDecisions,
                ns,
                name,
                Default::default(),
                false,
            );
        }
        Ok(placement)
    }

    fn audit(&self, _: &Placement) -> Option<Audit> {
        Some(Audit {
            action: "placement.delete",
            target: target::<Placement>(&self.namespace, &self.name),
            details: json!({}),
        })
    }
}

/// The placement controller's write: a placement's status and decisions, when they changed.
#[derive(Debug)]
pub struct Decide {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// The generation the evaluation was made for: a newer spec waits for its own.
    pub generation: Option<i64>,
    /// The new status.
    pub status: PlacementStatus,
    /// The new decisions.
    pub decisions: Decisions,
}

/// What a decision write changed.
#[derive(Debug, Clone, Default)]
pub struct Decided {
    /// Clusters that joined the decisions.
    pub added: Vec<String>,
    /// Clusters that left them.
    pub removed: Vec<String>,
}

#[async_trait]
impl WriteOp for Decide {
    type Output = Decided;

    async fn apply(&self, batch: &mut Batch<'_>) -> Result<Decided> {
        let (ns, name) = (self.namespace.as_str(), self.name.as_str());
        let Some(Authored {
            object: mut placement,
            author,
        }) = read_object::<Placement>(batch, ns, name).await?
        else {
            return Ok(Decided::default());
        };
        if placement.metadata.generation != self.generation {
            return Ok(Decided::default());
        }
        let old_decisions = match batch
            .tx
            .get_object(ObjectKind::PlacementDecisions, ns, name)
            .await?
        {
            Some(o) => DecisionsRow::decode(&o)?,
            None => Decisions::default(),
        };
        let mut status = self.status.clone();
        stamp_conditions(
            &mut status.conditions,
            &placement.status.conditions,
            placement.metadata.generation,
            batch.now,
        );
        let mut out = Decided::default();
        if status != placement.status {
            placement.status = status;
            write_object(batch, ns, name, &mut placement, &author, true).await?;
        }
        if self.decisions != old_decisions {
            let before: BTreeSet<&String> = old_decisions.clusters().collect();
            let after: BTreeSet<&String> = self.decisions.clusters().collect();
            out.added = after.difference(&before).map(|c| c.to_string()).collect();
            out.removed = before.difference(&after).map(|c| c.to_string()).collect();
            batch
                .tx
                .put_object(
                    ObjectKind::PlacementDecisions,
                    ns,
                    name,
                    &encode(&self.decisions)?,
                    batch.next_index(),
                )
                .await?;
            batch.record_object(
                ObjectKind::PlacementDecisions,
                ns,
                name,
                Default::default(),
                false,
            );
        }
        Ok(out)
    }

    fn audit(&self, d: &Decided) -> Option<Audit> {
        (!d.added.is_empty() || !d.removed.is_empty()).then(|| Audit {
            action: "placement.decide",
            target: target::<Placement>(&self.namespace, &self.name),
            details: json!({"added": d.added, "removed": d.removed}),
        })
    }
}

/// Carries `lastTransitionTime` over from the old conditions while a condition's status
/// stays, sets it to `now` when it changes, and stamps the generation.
pub fn stamp_conditions(
    new: &mut [Condition],
    old: &[Condition],
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    for c in new.iter_mut() {
        c.observed_generation = generation;
        c.last_transition_time = match old.iter().find(|o| o.type_ == c.type_) {
            Some(o) if o.status == c.status => o.last_transition_time.or(Some(now)),
            _ => Some(now),
        };
    }
}

/// The actor of the placement controller's audit entries.
pub const PLACEMENT_CONTROLLER: &str = "controller:placement";

/// Every placement's decided clusters except `skip`'s: how loaded each cluster is (the
/// Balance score's input).
pub fn load_of(
    decisions: &BTreeMap<(String, String), Decisions>,
    skip: Option<&(String, String)>,
) -> HashMap<String, u32> {
    let mut load: HashMap<String, u32> = HashMap::new();
    for (key, d) in decisions {
        if Some(key) == skip {
            continue;
        }
        for c in d.clusters() {
            *load.entry(c.clone()).or_default() += 1;
        }
    }
    load
}

impl Hub {
    /// Deletes a placement and its decisions.
    pub async fn delete_placement(
        &self,
        namespace: &str,
        name: &str,
        by: Option<Caller>,
    ) -> Result<Written<Placement>> {
        namespaced::validate_namespace(namespace)?;
        let op = DeletePlacement {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.writer.write_by(op, by).await
    }

    /// Writes what the placement controller decided.
    pub async fn write_decisions(&self, op: Decide) -> Result<Written<Decided>> {
        let by = Caller {
            actor: PLACEMENT_CONTROLLER.into(),
            source: "controller".into(),
        };
        self.writer.write_by(op, Some(by)).await
    }

    /// A placement's stored decisions (empty when it has none yet).
    pub async fn decisions_of(&self, namespace: &str, name: &str) -> Result<Decisions> {
        match self
            .store
            .get_object(ObjectKind::PlacementDecisions, namespace, name)
            .await?
        {
            Some(o) => DecisionsRow::decode(&o),
            None => Ok(Decisions::default()),
        }
    }

    /// Every placement's stored decisions, by (namespace, name).
    pub async fn all_decisions(&self) -> Result<BTreeMap<(String, String), Decisions>> {
        let mut out = BTreeMap::new();
        for o in self
            .store
            .list_objects(ObjectKind::PlacementDecisions, None)
            .await?
        {
            out.insert(
                (o.namespace.clone(), o.name.clone()),
                DecisionsRow::decode(&o)?,
            );
        }
        Ok(out)
    }

    /// A placement's decisions as OCM's PlacementDecision objects, blocking with `block`
    /// until they change; only clusters `readable` lists (all when `None`) are shown.
    pub async fn placement_decisions(
        &self,
        namespace: &str,
        name: &str,
        block: Option<Block>,
        readable: Option<&[String]>,
    ) -> Result<Indexed<Vec<PlacementDecision>>> {
        namespaced::validate_namespace(namespace)?;
        let watch = || {
            let (ns, n) = (namespace.to_string(), name.to_string());
            super::query::Watch::changes(move |c| {
                (c.kind == ObjectKind::PlacementDecisions.into()
                    || c.kind == ObjectKind::Placement.into())
                    && c.cluster == ns
                    && c.name == n
            })
        };
        super::query::run(&self.feed, block, watch, || async {
            if self
                .store
                .get_object(ObjectKind::Placement, namespace, name)
                .await?
                .is_none()
            {
                return Err(not_found::<Placement>(namespace, name));
            }
            let mut decisions = self.decisions_of(namespace, name).await?;
            if let Some(readable) = readable {
                for g in &mut decisions.groups {
                    g.clusters.retain(|c| readable.contains(c));
                }
            }
            Ok(placement::decision_objects(
                namespace,
                name,
                &decisions.to_groups(),
            ))
        })
        .await
    }

    /// Why each cluster is or is not decided for a stored placement, as the controller
    /// would decide now; only clusters `who` may read are listed.
    pub async fn explain_placement(
        &self,
        namespace: &str,
        name: &str,
        who: &Principal,
    ) -> Result<Indexed<PlacementExplanation>> {
        let read = self
            .get_namespaced::<Placement>(namespace, name, None)
            .await?;
        let placement = read
            .data
            .ok_or_else(|| not_found::<Placement>(namespace, name))?;
        let compiled = Compiled::new(&placement.spec).map_err(Error::invalid_fields)?;
        let previous: BTreeSet<String> = self
            .decisions_of(namespace, name)
            .await?
            .clusters()
            .cloned()
            .collect();
        let key = (namespace.to_string(), name.to_string());
        let data = self
            .explain_with(&placement, &compiled, previous, Some(&key), who)
            .await?;
        Ok(Indexed {
            data,
            index: read.index,
        })
    }

    /// The same for a placement in a request body: nothing is stored. A placement of that
    /// namespace and name that exists lends its decisions (so Steady scores as it would).
    pub async fn preview_placement(
        &self,
        mut placement: Placement,
        who: &Principal,
    ) -> Result<Indexed<PlacementExplanation>> {
        let namespace = placement
            .metadata
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let name = if placement.metadata.name.is_empty() {
            "preview".to_string()
        } else {
            placement.metadata.name.clone()
        };
        let compiled = validate_placement(&namespace, &name, &mut placement)?;
        let index = self.index();
        let previous: BTreeSet<String> = self
            .decisions_of(&namespace, &name)
            .await?
            .clusters()
            .cloned()
            .collect();
        let key = (namespace, name);
        let data = self
            .explain_with(&placement, &compiled, previous, Some(&key), who)
            .await?;
        Ok(Indexed { data, index })
    }

    async fn explain_with(
        &self,
        placement: &Placement,
        compiled: &Compiled,
        previous: BTreeSet<String>,
        key: Option<&(String, String)>,
        who: &Principal,
    ) -> Result<PlacementExplanation> {
        let readable = self.readable_clusters(who).await?;
        let clusters: Vec<ManagedCluster> = self.store.list_clusters().await?;
        let load = load_of(&self.all_decisions().await?, key);
        let eval: Evaluation = placement::evaluate(
            &placement.metadata.name,
            compiled,
            &Inputs {
                clusters: &clusters,
                previous: &previous,
                load: &load,
                now: Utc::now(),
            },
        );
        let mut explanations = eval.explanations;
        if let Some(readable) = &readable {
            explanations.retain(|e| readable.contains(&e.cluster_name));
        }
        Ok(PlacementExplanation {
            metadata: api::ObjectMeta {
                name: placement.metadata.name.clone(),
                namespace: placement.metadata.namespace.clone(),
                ..Default::default()
            },
            status: eval.status,
            clusters: explanations,
        })
    }
}
