//! What `hub apply` does with Placements and ManifestWorkReplicaSets: recognise them in
//! the input, give each its namespace, and PUT them, reporting `created`, `configured` or
//! `unchanged` as kubectl does.

use std::collections::BTreeSet;

use api::fleet::{ManifestWorkReplicaSet, PLACEMENT_API_VERSION, Placement, SET_API_VERSION};
use api::{ClientError, HubClient, ListOptions, ObjectMeta};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::DEFAULT_NAMESPACE;
use crate::cli::support::error::{CliError, describe_client_error};
use crate::cli::support::input::Document;
use crate::cli::support::output::{self, PLACEMENT_RESOURCE, SET_RESOURCE};
use crate::cli::support::progress::Progress;

/// A fleet object of the input, its namespace resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetObject {
    /// A Placement.
    Placement(Box<Placement>),
    /// A ManifestWorkReplicaSet.
    Set(Box<ManifestWorkReplicaSet>),
}

impl FleetObject {
    fn meta(&self) -> &ObjectMeta {
        match self {
            FleetObject::Placement(p) => &p.metadata,
            FleetObject::Set(s) => &s.metadata,
        }
    }

    /// The namespace (always set once parsed).
    pub fn namespace(&self) -> &str {
        self.meta()
            .namespace
            .as_deref()
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.meta().name
    }

    /// kubectl's resource name, e.g. `placement.cluster.open-cluster-management.io`.
    pub fn resource(&self) -> &'static str {
        match self {
            FleetObject::Placement(_) => PLACEMENT_RESOURCE,
            FleetObject::Set(_) => SET_RESOURCE,
        }
    }

    /// The kind's name in messages.
    fn kind(&self) -> &'static str {
        match self {
            FleetObject::Placement(_) => "placement",
            FleetObject::Set(_) => "manifestworkreplicaset",
        }
    }
}

/// The API group of an `apiVersion` (`""` for the core group).
fn group(api_version: &str) -> &str {
    api_version
        .rsplit_once('/')
        .map_or("", |(group, _version)| group)
}

/// The document as a Placement or ManifestWorkReplicaSet, `None` when it is neither (a
/// `kind: Placement` of another API group is a plain manifest). Its namespace is its own,
/// else `namespace` (`-n`), else `default`; both given and different is an error, as in
/// kubectl.
pub fn fleet_object(
    doc: &Document,
    namespace: Option<&str>,
) -> Result<Option<FleetObject>, CliError> {
    let Some(obj) = doc.value.as_object() else {
        return Ok(None);
    };
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let expected = match kind {
        "Placement" => PLACEMENT_API_VERSION,
        "ManifestWorkReplicaSet" => SET_API_VERSION,
        _ => return Ok(None),
    };
    if group(api_version) != group(expected) {
        return Ok(None);
    }
    if api_version != expected {
        return Err(CliError::Usage(format!(
            "{}: a {kind} must have apiVersion {expected}, not {api_version:?}",
            doc.source
        )));
    }
    let mut object = match kind {
        "Placement" => FleetObject::Placement(parse(doc)?),
        _ => FleetObject::Set(parse(doc)?),
    };
    let meta = match &mut object {
        FleetObject::Placement(p) => &mut p.metadata,
        FleetObject::Set(s) => &mut s.metadata,
    };
    if meta.name.is_empty() {
        return Err(CliError::Usage(format!(
            "{}: the {kind} has no metadata.name",
            doc.source
        )));
    }
    let own = meta.namespace.clone().filter(|ns| !ns.is_empty());
    let resolved = match (own, namespace) {
        (Some(own), Some(flag)) if own != flag => {
            return Err(CliError::Usage(format!(
                "{}: the namespace of {} {:?} is {own:?}, which does not match --namespace {flag:?} \
                 (pass --namespace={own} or leave it out)",
                doc.source,
                kind.to_ascii_lowercase(),
                meta.name
            )));
        }
        (Some(own), _) => own,
        (None, Some(flag)) => flag.to_string(),
        (None, None) => DEFAULT_NAMESPACE.to_string(),
    };
    meta.namespace = Some(resolved);
    Ok(Some(object))
}

fn parse<T: DeserializeOwned>(doc: &Document) -> Result<T, CliError> {
    serde_path_to_error::deserialize(doc.value.clone())
        .map_err(|e| CliError::Usage(format!("{}: {} at {}", doc.source, e.inner(), e.path())))
}

/// Takes the Placements and ManifestWorkReplicaSets out of the input, in input order;
/// the other documents are left for the works. The same object twice is an error.
pub fn split_fleet(
    docs: Vec<Document>,
    namespace: Option<&str>,
) -> Result<(Vec<FleetObject>, Vec<Document>), CliError> {
    let mut fleet = Vec::new();
    let mut rest = Vec::new();
    let mut seen = BTreeSet::new();
    for doc in docs {
        match fleet_object(&doc, namespace)? {
            Some(object) => {
                let key = (
                    object.kind(),
                    object.namespace().to_string(),
                    object.name().to_string(),
                );
                if !seen.insert(key) {
                    return Err(CliError::Usage(format!(
                        "{}: {} {:?} (namespace {}) appears twice in the input",
                        doc.source,
                        object.kind(),
                        object.name(),
                        object.namespace()
                    )));
                }
                fleet.push(object);
            }
            None => rest.push(doc),
        }
    }
    Ok((fleet, rest))
}

/// The objects as they would be sent, for `--dry-run`: without the `status` the hub
/// ignores in writes.
pub fn as_values(objects: &[FleetObject]) -> Vec<Value> {
    objects
        .iter()
        .map(|o| {
            let mut v = match o {
                FleetObject::Placement(p) => to_value(p),
                FleetObject::Set(s) => to_value(s),
            };
            if let Some(obj) = v.as_object_mut() {
                obj.remove("status");
            }
            v
        })
        .collect()
}

/// Objects as `-o json` (a List) or YAML documents (`---` before each).
pub fn objects_text(objects: Vec<Value>, json: bool) -> Result<String, CliError> {
    if json {
        return output::to_json(&api::List::new("List", objects, 0, None));
    }
    let mut out = String::new();
    for o in &objects {
        out.push_str("---\n");
        out.push_str(&output::to_yaml(o)?);
    }
    Ok(out)
}

/// What applying the fleet objects did.
#[derive(Debug, Default)]
pub struct FleetApplied {
    /// The hub refused one or more (each was printed); the others were applied.
    pub refused: bool,
    /// The sets applied, as (namespace, name), for `--wait`.
    pub sets: Vec<(String, String)>,
    /// The objects as the hub stored them, for `-o json|yaml`.
    pub stored: Vec<Value>,
}

/// PUTs each object in input order, printing `RESOURCE/NAME created|configured|unchanged`.
/// A refusal (4xx) is printed and the others still go; other errors stop here.
pub async fn apply_fleet(
    client: &HubClient,
    objects: &[FleetObject],
    progress: &mut Progress,
) -> Result<FleetApplied, CliError> {
    let mut applied = FleetApplied::default();
    for o in objects {
        match apply_one(client, o).await {
            Ok((action, stored)) => {
                applied.stored.push(stored);
                progress.line(&format!("{}/{} {action}", o.resource(), o.name()));
                if let FleetObject::Set(_) = o {
                    applied
                        .sets
                        .push((o.namespace().to_string(), o.name().to_string()));
                }
            }
            Err(e) if e.exit_code() == 1 => {
                applied.refused = true;
                let about = format!("{} {:?} (namespace {})", o.kind(), o.name(), o.namespace());
                eprintln!("{}", describe_client_error(&e, Some(&about)));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(applied)
}

/// PUTs one object and tells what changed from the resourceVersion before and after.
async fn apply_one(
    client: &HubClient,
    object: &FleetObject,
) -> Result<(&'static str, Value), ClientError> {
    let (ns, name) = (object.namespace(), object.name());
    let none = ListOptions::default();
    let (before, after, stored) = match object {
        FleetObject::Placement(p) => {
            let before = match client.get_placement(ns, name, &none).await {
                Ok(found) => Some(found.value.metadata.resource_version),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            let after = client.put_placement(ns, p).await?.value;
            (
                before,
                after.metadata.resource_version.clone(),
                to_value(&after),
            )
        }
        FleetObject::Set(s) => {
            let before = match client.get_set(ns, name, &none).await {
                Ok(found) => Some(found.value.metadata.resource_version),
                Err(e) if e.is_not_found() => None,
                Err(e) => return Err(e),
            };
            let after = client.put_set(ns, s).await?.value;
            (
                before,
                after.metadata.resource_version.clone(),
                to_value(&after),
            )
        }
    };
    let action = match before {
        None => "created",
        Some(rv) if rv != after => "configured",
        Some(_) => "unchanged",
    };
    Ok((action, stored))
}

/// An object as JSON; these types always serialize.
fn to_value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::support::input::parse_documents;

    const PLACEMENT: &str = "apiVersion: cluster.open-cluster-management.io/v1beta1
kind: Placement
metadata: {name: db}
spec:
  numberOfClusters: 1
  predicates:
  - requiredClusterSelector:
      labelSelector: {matchLabels: {env: prod}}
";

    fn set(ns: &str) -> String {
        format!(
            "apiVersion: work.open-cluster-management.io/v1alpha1
kind: ManifestWorkReplicaSet
metadata: {{name: web, namespace: {ns}}}
spec:
  placementRefs: [{{name: db}}]
  manifestWorkTemplate:
    workload:
      manifests: [{{apiVersion: v1, kind: ConfigMap, metadata: {{name: a, namespace: default}}}}]
"
        )
    }

    #[test]
    fn fleet_kinds_are_taken_out_with_their_namespace_and_the_rest_stays() {
        let text = format!(
            "{PLACEMENT}---\n{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n",
            set("team-a")
        );
        let docs = parse_documents("in.yaml", &text).unwrap();
        let (fleet, rest) = split_fleet(docs.clone(), None).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(
            fleet
                .iter()
                .map(|o| (o.resource(), o.namespace(), o.name()))
                .collect::<Vec<_>>(),
            [
                (PLACEMENT_RESOURCE, "default", "db"),
                (SET_RESOURCE, "team-a", "web")
            ]
        );
        let FleetObject::Placement(p) = &fleet[0] else {
            panic!("{fleet:?}")
        };
        assert_eq!(p.spec.number_of_clusters, Some(1));
        // -n fills in a missing namespace, and must agree with a given one.
        let (fleet, _) = split_fleet(docs[..1].to_vec(), Some("team-a")).unwrap();
        assert_eq!(fleet[0].namespace(), "team-a");
        let err = split_fleet(docs[1..2].to_vec(), Some("team-b")).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("does not match --namespace"),
            "{err}"
        );
    }

    #[test]
    fn bad_fleet_documents_are_usage_errors_with_a_field_path() {
        let wrong_version = PLACEMENT.replace("v1beta1", "v1alpha1");
        let err =
            split_fleet(parse_documents("p.yaml", &wrong_version).unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("must have apiVersion"), "{err}");
        let bad_field = PLACEMENT.replace("numberOfClusters: 1", "numberOfClusters: many");
        let err = split_fleet(parse_documents("p.yaml", &bad_field).unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("spec.numberOfClusters"), "{err}");
        let twice = format!("{PLACEMENT}---\n{PLACEMENT}");
        let err = split_fleet(parse_documents("p.yaml", &twice).unwrap(), None).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
        // Another group's Placement is a plain manifest to deliver, not ours.
        let other = PLACEMENT.replace("cluster.open-cluster-management.io", "example.com");
        let (fleet, rest) = split_fleet(parse_documents("p.yaml", &other).unwrap(), None).unwrap();
        assert!(fleet.is_empty());
        assert_eq!(rest.len(), 1);
    }
}
