//! Objects that more than one work applied (same group, resource, namespace and name).
//!
//! OCM lists such an object under each AppliedManifestWork, and its agent logs the
//! overlap; the works themselves say nothing. Here each work's manifest carries the
//! condition [`SHARED`] naming the other works, so whoever reads either work sees it. The
//! works write the object in turn (the last apply wins where both set a field), and
//! deleting one of them, or dropping the manifest from it, never deletes the object while
//! another work still has it in its ledger: only the last one removes it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use api::{Condition, ManifestCondition};
use chrono::{DateTime, Utc};

use super::ledger::Record;
use crate::apply::ResourceRef;

/// The manifest condition set (`True`) while other works applied the same object.
pub const SHARED: &str = "SharedWithOtherWorks";
/// Its reason.
pub const SHARED_REASON: &str = "AppliedByOtherWorks";

fn same_object(a: &ResourceRef, b: &ResourceRef) -> bool {
    a.group == b.group && a.resource == b.resource && a.namespace == b.namespace && a.name == b.name
}

/// The works other than `work` whose ledger records `r`, by name.
pub fn others_naming(
    records: &BTreeMap<String, Record>,
    work: &str,
    r: &ResourceRef,
) -> Vec<String> {
    records
        .iter()
        .filter(|(name, _)| name.as_str() != work)
        .filter(|(_, record)| record.entries.iter().any(|e| same_object(&e.reference, r)))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Which works recorded each object, from one view of the ledger: a pass over many
/// objects asks it instead of scanning every work's ledger for each object (quadratic in
/// the manifests on the cluster).
pub struct Sharing<'a> {
    works: HashMap<(&'a str, &'a str, &'a str, &'a str), Vec<&'a str>>,
}

impl<'a> Sharing<'a> {
    /// Indexes `records`.
    pub fn of(records: &'a BTreeMap<String, Record>) -> Self {
        let mut works: HashMap<_, Vec<&str>> = HashMap::new();
        for (name, record) in records {
            for e in &record.entries {
                let r = &e.reference;
                let names = works
                    .entry((
                        r.group.as_str(),
                        r.resource.as_str(),
                        r.namespace.as_str(),
                        r.name.as_str(),
                    ))
                    .or_default();
                // A ledger lists an object once, but be exact if it does not.
                if names.last() != Some(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        Sharing { works }
    }

    /// The works other than `work` whose ledger records `r`, by name (as
    /// [`others_naming`]).
    pub fn others(&self, work: &str, r: &ResourceRef) -> Vec<String> {
        let key = (
            r.group.as_str(),
            r.resource.as_str(),
            r.namespace.as_str(),
            r.name.as_str(),
        );
        self.works
            .get(&key)
            .into_iter()
            .flatten()
            .filter(|name| **name != work)
            .map(|name| name.to_string())
            .collect()
    }
}

/// The works other than `work` that recorded any of `objects`: their status must be
/// computed again when `work` starts or stops sharing with them.
pub fn sharers<'a>(
    records: &BTreeMap<String, Record>,
    work: &str,
    objects: impl IntoIterator<Item = &'a ResourceRef>,
) -> BTreeSet<String> {
    let sharing = Sharing::of(records);
    objects
        .into_iter()
        .flat_map(|r| sharing.others(work, r))
        .collect()
}

/// Adds [`SHARED`] to a manifest's conditions when `others` is not empty (its transition
/// time kept from `previous` while it stays True).
pub fn mark_shared(
    manifest: &mut ManifestCondition,
    others: &[String],
    previous: Option<&ManifestCondition>,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    if others.is_empty() {
        return;
    }
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == SHARED))
        .filter(|c| c.is_true())
        .and_then(|c| c.last_transition_time)
        .unwrap_or(now);
    let names: Vec<String> = others.iter().map(|w| format!("{w:?}")).collect();
    manifest.conditions.push(Condition {
        type_: SHARED.into(),
        status: "True".into(),
        reason: SHARED_REASON.into(),
        message: format!(
            "also applied by work {} on this cluster: where both set a field the last apply wins; deleting one of them leaves the object to the others",
            names.join(", ")
        ),
        observed_generation: generation,
        last_transition_time: Some(since),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::ledger::Entry;

    fn cm(name: &str) -> ResourceRef {
        ResourceRef {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            resource: "configmaps".into(),
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn record(objects: &[&str]) -> Record {
        Record {
            entries: objects
                .iter()
                .map(|n| Entry {
                    reference: cm(n),
                    uid: format!("uid-{n}"),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn other_works_naming_an_object_are_found() {
        let records = BTreeMap::from([
            ("a".to_string(), record(&["shared", "only-a"])),
            ("b".to_string(), record(&["shared"])),
            ("c".to_string(), record(&["other"])),
        ]);
        assert_eq!(others_naming(&records, "a", &cm("shared")), vec!["b"]);
        assert!(others_naming(&records, "a", &cm("only-a")).is_empty());
        assert_eq!(others_naming(&records, "c", &cm("shared")), vec!["a", "b"]);
        let mut other_kind = cm("shared");
        other_kind.resource = "secrets".into();
        assert!(others_naming(&records, "a", &other_kind).is_empty());
        // The index gives the same answers as the scan.
        let sharing = Sharing::of(&records);
        for (work, object) in [
            ("a", "shared"),
            ("a", "only-a"),
            ("c", "shared"),
            ("b", "none"),
        ] {
            assert_eq!(
                sharing.others(work, &cm(object)),
                others_naming(&records, work, &cm(object)),
                "{work} {object}"
            );
        }
        assert!(sharing.others("a", &other_kind).is_empty());
        assert_eq!(
            sharers(&records, "a", [&cm("shared"), &cm("only-a")]),
            BTreeSet::from(["b".to_string()])
        );
    }

    #[test]
    fn the_condition_names_the_other_works_and_keeps_its_time() {
        let t0 = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let t1 = DateTime::<Utc>::from_timestamp(2_000, 0).unwrap();
        let mut first = ManifestCondition::default();
        mark_shared(&mut first, &["b".into()], None, Some(2), t0);
        let c = &first.conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str()), (SHARED, "True"));
        assert!(c.message.contains("\"b\""), "{}", c.message);
        let mut again = ManifestCondition::default();
        mark_shared(&mut again, &["b".into()], Some(&first), Some(2), t1);
        assert_eq!(again.conditions[0].last_transition_time, Some(t0));
        let mut alone = ManifestCondition::default();
        mark_shared(&mut alone, &[], Some(&first), Some(2), t1);
        assert!(alone.conditions.is_empty());
    }
}
