//! The apply engine: resolves kinds through discovery, applies a work's manifests in
//! order (Namespaces, CRDs, the rest), reads and deletes what was applied.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use api::ManifestWork;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Preconditions,
    PropagationPolicy, TypeMeta,
};
use kube::discovery::{Discovery, Scope};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

use super::error::{ApplyError, call, chain};
use super::executor::{self, Executors};
use super::resource::{DeleteOutcome, ManifestId, ManifestOutcome, ResourceRef, api_version};
use super::strategy::{self, ManifestConfigs};
use super::{
    CRD_ESTABLISHED_TIMEOUT, CRD_GROUP, DEFAULT_CONCURRENCY, MIN_DISCOVERY_INTERVAL,
    REQUEST_TIMEOUT,
};

/// The steps of applying a work, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Namespaces,
    Crds,
    Rest,
}

/// The step a manifest belongs to.
fn step_of(id: &ManifestId) -> Step {
    match (id.group.as_str(), id.kind.as_str()) {
        ("", "Namespace") => Step::Namespaces,
        (CRD_GROUP, "CustomResourceDefinition") => Step::Crds,
        _ => Step::Rest,
    }
}

/// A manifest ready to apply (owned, without borrowed lifetimes: the futures applying
/// it must be `Send` for any lifetime when the controller spawns them).
struct Pending {
    ordinal: i32,
    id: ManifestId,
}

/// What the work's own CRDs define, for kinds discovery does not list yet.
#[derive(Debug, Clone)]
struct CrdDefinition {
    name: String,
    group: String,
    kind: String,
    plural: String,
    namespaced: bool,
    versions: Vec<String>,
}

impl CrdDefinition {
    fn from_manifest(manifest: &Value) -> Option<CrdDefinition> {
        let spec = manifest.get("spec")?;
        let names = spec.get("names")?;
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
        Some(CrdDefinition {
            name: text(manifest.get("metadata")?, "name")?,
            group: text(spec, "group")?,
            kind: text(names, "kind")?,
            plural: text(names, "plural")?,
            namespaced: spec.get("scope").and_then(Value::as_str) != Some("Cluster"),
            versions: spec
                .get("versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|v| v.get("served").and_then(Value::as_bool) != Some(false))
                .filter_map(|v| text(v, "name"))
                .collect(),
        })
    }

    fn defines(&self, gvk: &GroupVersionKind) -> bool {
        self.group == gvk.group && self.kind == gvk.kind && self.versions.contains(&gvk.version)
    }
}

/// The work's CRDs and which of them became Established in this pass.
#[derive(Debug, Default)]
struct WorkCrds {
    definitions: Vec<CrdDefinition>,
    established: HashSet<String>,
    /// Why a CRD is not Established, by CRD name.
    not_established: Vec<(String, String)>,
}

/// Applies manifests to one managed cluster.
pub struct Applier {
    client: kube::Client,
    discovery: RwLock<Discovery>,
    /// When the discovery in use was started; refreshes are serialized on this lock.
    discovered_at: Mutex<Instant>,
    concurrency: usize,
    crd_timeout: Duration,
    /// Works naming an executor are checked and applied through these.
    executors: Executors,
}

impl fmt::Debug for Applier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Applier")
            .field("concurrency", &self.concurrency)
            .field("crd_timeout", &self.crd_timeout)
            .finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier for this cluster (runs discovery).
    pub async fn new(client: kube::Client) -> Result<Self, ApplyError> {
        let started = Instant::now();
        let discovery = discover(&client).await?;
        Ok(Applier {
            discovery: RwLock::new(discovery),
            discovered_at: Mutex::new(started),
            concurrency: DEFAULT_CONCURRENCY,
            crd_timeout: CRD_ESTABLISHED_TIMEOUT,
            executors: Executors::new(client.clone(), None),
            client,
        })
    }

    /// Applies at most `n` manifests of a work at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long to wait for a CRD of a work to become Established.
    pub fn with_crd_timeout(mut self, timeout: Duration) -> Self {
        self.crd_timeout = timeout;
        self
    }

    /// Applies the works that name an executor by impersonating it, with clients made from
    /// `config` (the agent's own configuration). Without it such works are refused.
    pub fn with_executor_config(mut self, config: kube::Config) -> Self {
        self.executors = Executors::new(self.client.clone(), Some(config));
        self
    }

    /// The client of the managed cluster.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Runs discovery again now.
    pub async fn refresh_discovery(&self) -> Result<(), ApplyError> {
        self.refresh_since(Instant::now()).await
    }

    /// The resource and scope of an apiVersion/kind, refreshing discovery (at most every
    /// couple of seconds) when it is unknown.
    pub async fn resolve(
        &self,
        gvk: &GroupVersionKind,
    ) -> Result<(ApiResource, Scope), ApplyError> {
        if let Some(found) = self.lookup(gvk).await {
            return Ok(found);
        }
        let recent = Instant::now()
            .checked_sub(MIN_DISCOVERY_INTERVAL)
            .unwrap_or_else(Instant::now);
        self.refresh_since(recent).await?;
        self.lookup(gvk).await.ok_or_else(|| unknown_kind(gvk))
    }

    async fn lookup(&self, gvk: &GroupVersionKind) -> Option<(ApiResource, Scope)> {
        self.discovery
            .read()
            .await
            .resolve_gvk(gvk)
            .map(|(ar, caps)| (ar, caps.scope))
    }

    /// Makes sure the discovery in use started no earlier than `since`.
    async fn refresh_since(&self, since: Instant) -> Result<(), ApplyError> {
        let mut discovered_at = self.discovered_at.lock().await;
        if *discovered_at >= since {
            return Ok(());
        }
        let started = Instant::now();
        let fresh = discover(&self.client).await?;
        *self.discovery.write().await = fresh;
        *discovered_at = started;
        tracing::debug!("refreshed discovery");
        Ok(())
    }

    /// Applies every manifest of the work: Namespaces first, then CRDs (waiting until
    /// Established, then refreshing discovery), then the rest, each with the update
    /// strategy its `manifestConfigs` entry names (matched by `resourceIdentifier`). One
    /// failing manifest never stops the others. Outcomes come back in manifest order.
    #[tracing::instrument(level = "debug", skip_all, fields(work = %work.metadata.name, manifests = work.spec.workload.manifests.len()))]
    pub async fn apply_work(&self, work: &ManifestWork) -> Vec<ManifestOutcome> {
        let manifests = &work.spec.workload.manifests;
        let mut outcomes: Vec<Option<ManifestOutcome>> = vec![None; manifests.len()];
        let mut steps: [Vec<Pending>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut crds = WorkCrds::default();
        for (index, manifest) in manifests.iter().enumerate() {
            let ordinal = index as i32;
            match ManifestId::parse(ordinal, manifest) {
                Ok(id) => {
                    let step = step_of(&id);
                    if step == Step::Crds
                        && let Some(definition) = CrdDefinition::from_manifest(manifest)
                    {
                        crds.definitions.push(definition);
                    }
                    steps[step as usize].push(Pending { ordinal, id });
                }
                Err(e) => {
                    outcomes[index] = Some(ManifestOutcome {
                        ordinal,
                        reference: None,
                        result: Err(e),
                    })
                }
            }
        }

        let [namespaces, crd_manifests, rest] = steps;
        let configs = ManifestConfigs::new(work);
        for outcome in self.apply_all(work, &configs, namespaces, &crds).await {
            let index = outcome.ordinal as usize;
            outcomes[index] = Some(outcome);
        }

        if !crd_manifests.is_empty() {
            let applied = futures::stream::iter(crd_manifests)
                .map(|p| async {
                    let outcome = self
                        .apply_timed(work, &configs, p, &WorkCrds::default())
                        .await;
                    let established = match &outcome.result {
                        Ok(crd) => Some((
                            crd.metadata.name.clone().unwrap_or_default(),
                            self.wait_established(crd).await,
                        )),
                        Err(_) => None,
                    };
                    (outcome, established)
                })
                .buffered(self.concurrency)
                .collect::<Vec<_>>()
                .await;
            for (outcome, established) in applied {
                match established {
                    Some((name, Ok(()))) => {
                        crds.established.insert(name);
                    }
                    Some((name, Err(why))) => crds.not_established.push((name, why)),
                    None => {}
                }
                let index = outcome.ordinal as usize;
                outcomes[index] = Some(outcome);
            }
            // A kind one of these CRDs just brought: discovery must see it.
            let mut needs_refresh = false;
            for p in &rest {
                let gvk = p.id.gvk();
                if crds
                    .definitions
                    .iter()
                    .any(|d| d.defines(&gvk) && crds.established.contains(&d.name))
                    && self.lookup(&gvk).await.is_none()
                {
                    needs_refresh = true;
                    break;
                }
            }
            if needs_refresh && let Err(e) = self.refresh_discovery().await {
                tracing::warn!(error = %e, "refreshing discovery after a CRD became Established failed");
            }
        }

        for outcome in self.apply_all(work, &configs, rest, &crds).await {
            let index = outcome.ordinal as usize;
            outcomes[index] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every manifest has an outcome"))
            .collect()
    }

    async fn apply_all(
        &self,
        work: &ManifestWork,
        configs: &ManifestConfigs<'_>,
        pending: Vec<Pending>,
        crds: &WorkCrds,
    ) -> Vec<ManifestOutcome> {
        futures::stream::iter(pending)
            .map(|p| self.apply_timed(work, configs, p, crds))
            .buffered(self.concurrency)
            .collect()
            .await
    }

    /// Resolves the kind of the manifest and applies it by its update strategy.
    #[tracing::instrument(level = "debug", skip_all, fields(ordinal = p.ordinal, kind = %p.id.kind, namespace = ?p.id.namespace, name = %p.id.name))]
    /// [`apply_one`](Self::apply_one), timed for `klusterlet_apply_duration_seconds`.
    async fn apply_timed(
        &self,
        work: &ManifestWork,
        configs: &ManifestConfigs<'_>,
        p: Pending,
        crds: &WorkCrds,
    ) -> ManifestOutcome {
        let started = std::time::Instant::now();
        let outcome = self.apply_one(work, configs, p, crds).await;
        crate::telemetry::applied(started.elapsed());
        outcome
    }

    async fn apply_one(
        &self,
        work: &ManifestWork,
        configs: &ManifestConfigs<'_>,
        p: Pending,
        crds: &WorkCrds,
    ) -> ManifestOutcome {
        let Pending { ordinal, id } = p;
        let manifest = &work.spec.workload.manifests[ordinal as usize];
        let (ar, scope) = match self.resolve_for_work(&id, crds).await {
            Ok(found) => found,
            Err(e) => {
                return ManifestOutcome {
                    ordinal,
                    reference: None,
                    result: Err(e),
                };
            }
        };
        let namespace = match scope {
            Scope::Namespaced => id
                .namespace
                .clone()
                .unwrap_or_else(|| "default".to_string()),
            Scope::Cluster => String::new(),
        };
        let reference = ResourceRef {
            group: ar.group.clone(),
            version: ar.version.clone(),
            kind: ar.kind.clone(),
            resource: ar.plural.clone(),
            namespace,
            name: id.name.clone(),
        };
        let strategy = configs
            .get(&reference)
            .update_strategy
            .cloned()
            .unwrap_or_default();
        let verbs = executor::apply_verbs(strategy.type_);
        let result = match self
            .executors
            .client(work.spec.executor.as_ref(), &reference, verbs)
            .await
        {
            Ok(client) => strategy::apply_object(&client, &reference, &ar, manifest, &strategy)
                .await
                .map(|obj| with_types(obj, &ar)),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::debug!(resource = %reference, reason = %e.reason, message = %e.message, "apply failed");
        }
        ManifestOutcome {
            ordinal,
            reference: Some(reference),
            result,
        }
    }

    /// Discovery first; then what the work's own Established CRDs define (discovery may
    /// lag a moment behind `Established`).
    async fn resolve_for_work(
        &self,
        id: &ManifestId,
        crds: &WorkCrds,
    ) -> Result<(ApiResource, Scope), ApplyError> {
        let gvk = id.gvk();
        let err = match self.resolve(&gvk).await {
            Ok(found) => return Ok(found),
            Err(e) => e,
        };
        let Some(definition) = crds.definitions.iter().find(|d| d.defines(&gvk)) else {
            return Err(err);
        };
        if crds.established.contains(&definition.name) {
            let scope = if definition.namespaced {
                Scope::Namespaced
            } else {
                Scope::Cluster
            };
            return Ok((
                ApiResource::from_gvk_with_plural(&gvk, &definition.plural),
                scope,
            ));
        }
        let why = crds
            .not_established
            .iter()
            .find(|(name, _)| *name == definition.name)
            .map(|(_, why)| why.as_str())
            .unwrap_or("it was not applied");
        Err(ApplyError::new(
            "CrdNotEstablished",
            format!(
                "no matches for kind \"{}\" in version \"{}\": the CustomResourceDefinition {} of this work is not Established: {why}",
                gvk.kind,
                id.api_version(),
                definition.name
            ),
            true,
        ))
    }

    /// Waits (a watch, `kube::runtime::wait::await_condition`) until the CRD is
    /// Established, or [`CRD_ESTABLISHED_TIMEOUT`] passes; then says why not, from its
    /// conditions.
    async fn wait_established(&self, applied: &DynamicObject) -> Result<(), String> {
        if crd_established(&applied.data) {
            return Ok(());
        }
        let name = applied.metadata.name.clone().unwrap_or_default();
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        let watched = match tokio::time::timeout(self.crd_timeout, established).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => Some(format!("watching it failed: {}", chain(&e))),
            Err(_) => None,
        };
        // Why not: the conditions that are not True, read once.
        let why = match tokio::time::timeout(REQUEST_TIMEOUT, api.get_opt(&name)).await {
            Ok(Ok(Some(crd))) => {
                let failing: Vec<String> = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .filter(|c| c.status != "True")
                    .map(|c| {
                        let text = c.message.clone().unwrap_or_default();
                        format!("{}={}: {}", c.type_, c.status, text)
                    })
                    .collect();
                if failing.is_empty() {
                    watched.unwrap_or_else(|| "not Established yet".to_string())
                } else {
                    failing.join("; ")
                }
            }
            Ok(Ok(None)) => "it is gone".to_string(),
            Ok(Err(e)) => ApplyError::from_kube(e).to_string(),
            Err(_) => "no answer from the apiserver".to_string(),
        };
        Err(format!("{why} (waited {:?})", self.crd_timeout))
    }

    /// Reads the live object, `None` when absent.
    pub async fn get(&self, r: &ResourceRef) -> Result<Option<DynamicObject>, ApplyError> {
        let api = r.api(self.client.clone());
        let ar = r.api_resource();
        Ok(call(r, "get", api.get_opt(&r.name))
            .await?
            .map(|obj| with_types(obj, &ar)))
    }

    /// Deletes the object if its uid is `uid` (a uid precondition, so a same-named object
    /// someone else created is never deleted). An empty `uid` is refused (reason
    /// `Invalid`): without it the precondition would not protect anything.
    ///
    /// Propagation is Background, as OCM's work agent deletes: Foreground leaves a
    /// `foregroundDeletion` finalizer that only the garbage collector removes, so on a
    /// cluster without one a deletion never finished. The caller waits for the object
    /// itself to be gone ([`DeleteOutcome::Deleting`] until then); its dependents
    /// (ReplicaSets, Pods) go with the garbage collector, as `kubectl delete` leaves them.
    pub async fn delete(&self, r: &ResourceRef, uid: &str) -> Result<DeleteOutcome, ApplyError> {
        self.delete_as(r, uid, None).await
    }

    /// [`delete`](Self::delete) as the work's executor, when it names one (checked with
    /// a SubjectAccessReview for `delete`, then impersonated, as its apply was).
    #[tracing::instrument(level = "debug", skip_all, fields(kind = %r.kind, namespace = %r.namespace, name = %r.name, uid))]
    pub async fn delete_as(
        &self,
        r: &ResourceRef,
        uid: &str,
        executor: Option<&api::ManifestWorkExecutor>,
    ) -> Result<DeleteOutcome, ApplyError> {
        if uid.is_empty() {
            return Err(ApplyError::new(
                "Invalid",
                format!("refusing to delete {r} without the uid it was applied with"),
                false,
            ));
        }
        let client = self
            .executors
            .client(executor, r, executor::DELETE_VERBS)
            .await?;
        let api = r.api(client);
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, api.delete(&r.name, &params)).await {
            Err(_) => Err(ApplyError::timeout(&format!("delete {r}"))),
            // A Status: deleted at once.
            Ok(Ok(answer)) if answer.is_right() => Ok(DeleteOutcome::Gone),
            // The object: still there (finalizers, graceful or foreground deletion), or
            // the last state of one that is gone (some resources answer so); look.
            Ok(Ok(_)) => match self.get(r).await? {
                Some(live) if live.metadata.uid.as_deref() == Some(uid) => {
                    Ok(DeleteOutcome::Deleting)
                }
                _ => Ok(DeleteOutcome::Gone),
            },
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => Ok(DeleteOutcome::Gone),
            // The uid precondition failed: the object of that name is someone else's.
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => Ok(DeleteOutcome::NotOurs),
            Ok(Err(e)) => Err(ApplyError::from_kube(e)),
        }
    }
}

/// Runs discovery: the aggregated endpoints (two requests) when served, else group by
/// group.
async fn discover(client: &kube::Client) -> Result<Discovery, ApplyError> {
    let aggregated = tokio::time::timeout(
        REQUEST_TIMEOUT,
        Discovery::new(client.clone()).run_aggregated(),
    )
    .await;
    match aggregated {
        Ok(Ok(discovery)) => return Ok(discovery),
        Ok(Err(e)) => {
            tracing::debug!(error = %chain(&e), "aggregated discovery failed; discovering group by group")
        }
        Err(_) => return Err(ApplyError::timeout("discovery")),
    }
    match tokio::time::timeout(REQUEST_TIMEOUT * 2, Discovery::new(client.clone()).run()).await {
        Ok(Ok(discovery)) => Ok(discovery),
        Ok(Err(e)) => {
            let mut err = ApplyError::from_kube(e);
            err.message = format!("discovery failed: {}", err.message);
            err.retryable = true;
            Err(err)
        }
        Err(_) => Err(ApplyError::timeout("discovery")),
    }
}

/// The object with its apiVersion and kind (lists and some answers leave them out; the
/// status rules need them).
fn with_types(mut obj: DynamicObject, ar: &ApiResource) -> DynamicObject {
    if obj.types.is_none() {
        obj.types = Some(TypeMeta {
            api_version: ar.api_version.clone(),
            kind: ar.kind.clone(),
        });
    }
    obj
}

fn crd_established(data: &Value) -> bool {
    data.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            c.get("type") == Some(&Value::from("Established"))
                && c.get("status") == Some(&Value::from("True"))
        })
}

fn unknown_kind(gvk: &GroupVersionKind) -> ApplyError {
    ApplyError::new(
        "UnknownKind",
        format!(
            "no matches for kind \"{}\" in version \"{}\": the cluster does not serve it (ensure its CustomResourceDefinition is installed first)",
            gvk.kind,
            api_version(&gvk.group, &gvk.version)
        ),
        // A person must install the CRD (a CRD in the same work is handled before this:
        // `CrdNotEstablished` is retried). The resync tries again each period.
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifests_are_parsed_or_refused() {
        let id = ManifestId::parse(
            0,
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a", "namespace": "n"}}),
        )
        .unwrap();
        assert_eq!((id.group.as_str(), id.version.as_str()), ("apps", "v1"));
        assert_eq!(id.namespace.as_deref(), Some("n"));
        let core = ManifestId::parse(
            1,
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
        )
        .unwrap();
        assert_eq!(core.group, "");
        assert_eq!(step_of(&core), Step::Namespaces);
        for bad in [
            json!("text"),
            json!({"kind": "ConfigMap", "metadata": {"name": "a"}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "a-"}}),
            json!({"apiVersion": "a/b/c", "kind": "X", "metadata": {"name": "a"}}),
            json!({"apiVersion": "/v1", "kind": "X", "metadata": {"name": "a"}}),
        ] {
            let err = ManifestId::parse(3, &bad).unwrap_err();
            assert_eq!(err.reason, "Invalid", "{bad}");
            assert!(!err.retryable);
            assert!(err.message.starts_with("manifest 3: "), "{}", err.message);
        }
    }

    #[test]
    fn crd_definitions_are_read_from_manifests() {
        let crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Cluster",
                     "names": {"kind": "Widget", "plural": "widgets"},
                     "versions": [{"name": "v1", "served": true}, {"name": "v0", "served": false}]},
        });
        let d = CrdDefinition::from_manifest(&crd).unwrap();
        assert!(!d.namespaced);
        assert!(d.defines(&GroupVersionKind::gvk("example.com", "v1", "Widget")));
        assert!(!d.defines(&GroupVersionKind::gvk("example.com", "v0", "Widget")));
        assert!(!d.defines(&GroupVersionKind::gvk("example.com", "v1", "Gadget")));
    }
}
