//! The apply engine: resolves each manifest's GVK through discovery, applies the manifests
//! of a work in a safe order with server-side apply per its update strategy, reads and
//! deletes what was applied.
//!
//! INTERFACE CONTRACT (used by `controller` and `ledger`; keep these signatures):
//! * [`Applier::new`], [`Applier::apply_work`], [`Applier::get`], [`Applier::delete`].
//! * [`ResourceRef`], [`ManifestOutcome`], [`ApplyError`], [`DeleteOutcome`].
//!
//! # Order
//! Namespaces first, then CustomResourceDefinitions (each waited on until `Established`,
//! then discovery is refreshed so the work's custom resources resolve), then everything
//! else. Within a step manifests are applied concurrently (at most
//! [`DEFAULT_CONCURRENCY`] at once); outcomes always come back in manifest order.
//!
//! # Update strategies (`manifestConfigs[].updateStrategy`, matched by `resourceIdentifier`)
//! * `Update` (the default): server-side apply as field manager `klusterlet`, forced, so the
//!   work's fields win and fields it never set are left alone.
//! * `ServerSideApply`: server-side apply as `serverSideApply.fieldManager` (default
//!   `klusterlet`), forced only with `serverSideApply.force`; a conflict with another field
//!   manager is reported (reason `Conflict`, Kubernetes' message) and not retried.
//! * `CreateOnly`: created (POST) when absent; an existing object is never written.
//! * `ReadOnly`: only read; absent is `NotFound`.
//!
//! # Errors
//! Failures keep Kubernetes' own reason and message (`Forbidden`: `deployments.apps "x" is
//! forbidden: User "y" cannot patch resource "deployments" in API group "apps" ...`). Ours
//! are `UnknownKind`, `CrdNotEstablished`, `Invalid` (a manifest that is not an object),
//! `Unreachable` and `Timeout`.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use api::{
    FeedbackRule, ManifestConfigOption, ManifestResourceMeta, ManifestWork, UpdateStrategy,
    UpdateStrategyType,
};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams,
    PostParams, Preconditions, PropagationPolicy, TypeMeta,
};
use kube::discovery::{Discovery, Scope};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Mutex, RwLock};

/// The field manager of `Update` (and of `ServerSideApply` without a `fieldManager`).
pub const FIELD_MANAGER: &str = "klusterlet";
/// How many manifests of one work are applied at once.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// How long a CRD of a work may take to become Established before the rest is applied.
pub const CRD_ESTABLISHED_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one call to the managed cluster's apiserver.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An unknown kind refreshes discovery at most this often: a work naming a kind that does
/// not exist must not turn every pass into a full discovery.
const MIN_DISCOVERY_INTERVAL: Duration = Duration::from_secs(2);
/// The API group of CustomResourceDefinitions.
const CRD_GROUP: &str = "apiextensions.k8s.io";

/// Where a manifest lives on the cluster: enough to read, watch or delete it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResourceRef {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource.
    pub resource: String,
    /// Namespace ("" when cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ResourceRef {
    /// The `resourceMeta` of a manifest status.
    pub fn meta(&self, ordinal: i32) -> ManifestResourceMeta {
        ManifestResourceMeta {
            ordinal,
            group: self.group.clone(),
            version: self.version.clone(),
            kind: self.kind.clone(),
            resource: self.resource.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        }
    }

    /// The `ApiResource` to build an `Api<DynamicObject>` (or a watcher) for this resource.
    pub fn api_resource(&self) -> ApiResource {
        let gvk = GroupVersionKind::gvk(&self.group, &self.version, &self.kind);
        ApiResource::from_gvk_with_plural(&gvk, &self.resource)
    }

    /// `apiVersion` of the resource (`v1`, `apps/v1`).
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    /// Namespaced iff the namespace is not empty.
    pub fn is_namespaced(&self) -> bool {
        !self.namespace.is_empty()
    }

    /// `Api<DynamicObject>` for this resource's namespace (or the cluster).
    pub fn api(&self, client: kube::Client) -> Api<DynamicObject> {
        let ar = self.api_resource();
        if self.is_namespaced() {
            Api::namespaced_with(client, &self.namespace, &ar)
        } else {
            Api::all_with(client, &ar)
        }
    }
}

impl fmt::Display for ResourceRef {
    /// `Kind namespace/name`, or `Kind name` when cluster-scoped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why a manifest could not be applied, in Kubernetes' own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyError {
    /// Kubernetes' reason (`Forbidden`, `Invalid`, `Conflict`, `NotFound`...) or ours
    /// (`UnknownKind`, `CrdNotEstablished`, `Unreachable`).
    pub reason: String,
    /// Kubernetes' message, e.g. `deployments.apps "x" is forbidden: User "y" cannot create
    /// resource "deployments" in API group "apps" in the namespace "z"`.
    pub message: String,
    /// Whether trying again may help (network errors, 5xx, a CRD not yet established,
    /// an unknown kind whose CRD may come later); `false` for Invalid, Forbidden...
    pub retryable: bool,
}

impl ApplyError {
    /// An error with this reason and message.
    pub fn new(reason: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        ApplyError {
            reason: reason.into(),
            message: message.into(),
            retryable,
        }
    }

    /// `NotFound`, worded as the apiserver words it (`deployments.apps "x" not found`);
    /// retryable, since the object may yet appear.
    pub fn not_found(r: &ResourceRef) -> Self {
        ApplyError::new(
            "NotFound",
            format!("{} \"{}\" not found", qualified_resource(r), r.name),
            true,
        )
    }

    /// A failed call to the apiserver: Kubernetes' reason and message when it answered,
    /// `Unreachable` (retryable) when it could not be reached.
    pub fn from_kube(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => {
                let code = status.code;
                let reason = if status.reason.is_empty() {
                    reason_for_code(code).to_string()
                } else {
                    status.reason.clone()
                };
                let message = if status.message.is_empty() {
                    format!("the server answered {code} {reason}")
                } else {
                    status.message.clone()
                };
                let retryable = retryable_code(code) && !needs_a_person(&status);
                ApplyError::new(reason, message, retryable)
            }
            kube::Error::SerdeError(e) => ApplyError::new(
                "InternalError",
                format!("unreadable answer from the apiserver: {e}"),
                true,
            ),
            kube::Error::BuildRequest(e) => ApplyError::new("Invalid", e.to_string(), false),
            other => ApplyError::new("Unreachable", chain(&other), true),
        }
    }

    fn timeout(what: &str) -> Self {
        ApplyError::new(
            "Timeout",
            format!("{what}: no answer from the apiserver within {REQUEST_TIMEOUT:?}"),
            true,
        )
    }

    fn invalid(ordinal: i32, message: impl fmt::Display) -> Self {
        ApplyError::new("Invalid", format!("manifest {ordinal}: {message}"), false)
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for ApplyError {}

/// What became of one manifest of a work.
#[derive(Debug, Clone)]
pub struct ManifestOutcome {
    /// Its index in `spec.workload.manifests`.
    pub ordinal: i32,
    /// Where it lives, when its kind could be resolved.
    pub reference: Option<ResourceRef>,
    /// The live object after the apply (or as found, for ReadOnly and an existing
    /// CreateOnly object), or why not.
    pub result: Result<DynamicObject, ApplyError>,
}

/// What a deletion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The object is gone (or was never there).
    Gone,
    /// Deletion was asked for; the object still exists (finalizers, foreground).
    Deleting,
    /// An object with that name exists but with another uid: not ours, left alone.
    NotOurs,
}

/// The options of one manifest from `spec.manifestConfigs`, merged OCM's way: the first
/// matching entry that has feedback rules gives them, the first that has an update
/// strategy gives it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ManifestConfig<'a> {
    /// What to report from the resource's status.
    pub feedback_rules: &'a [FeedbackRule],
    /// How to apply it (`None`: Update).
    pub update_strategy: Option<&'a UpdateStrategy>,
}

/// The `manifestConfigs` options of the resource `r` of `work`. A `resourceIdentifier`
/// matches on group and resource exactly and on name and namespace with `*` wildcards,
/// as in OCM.
pub fn manifest_config<'a>(work: &'a ManifestWork, r: &ResourceRef) -> ManifestConfig<'a> {
    let mut config = ManifestConfig::default();
    for option in work
        .spec
        .manifest_configs
        .iter()
        .filter(|o| config_matches(o, r))
    {
        if config.feedback_rules.is_empty() && !option.feedback_rules.is_empty() {
            config.feedback_rules = &option.feedback_rules;
        }
        if config.update_strategy.is_none() {
            config.update_strategy = option.update_strategy.as_ref();
        }
    }
    config
}

fn config_matches(option: &ManifestConfigOption, r: &ResourceRef) -> bool {
    let id = &option.resource_identifier;
    id.group == r.group
        && id.resource == r.resource
        && wildcard_match(&id.namespace, &r.namespace)
        && wildcard_match(&id.name, &r.name)
}

/// `pattern` with `*` standing for any run of characters matches all of `value`.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == value;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &value[first.len()..];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// The apiVersion and kind of a manifest, and the metadata it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestId {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, when given.
    pub namespace: Option<String>,
}

impl ManifestId {
    /// Reads `apiVersion`, `kind`, `metadata.name` and `metadata.namespace`; fails (reason
    /// `Invalid`) on anything that cannot be applied.
    pub fn parse(ordinal: i32, manifest: &Value) -> Result<ManifestId, ApplyError> {
        let Some(object) = manifest.as_object() else {
            return Err(ApplyError::invalid(ordinal, "is not a JSON object"));
        };
        let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or_default();
        let api_version = text("apiVersion");
        let kind = text("kind");
        if api_version.is_empty() || kind.is_empty() {
            return Err(ApplyError::invalid(
                ordinal,
                "apiVersion and kind are required",
            ));
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        if version.is_empty()
            || version.contains('/')
            || (group.is_empty() && api_version.contains('/'))
        {
            return Err(ApplyError::invalid(
                ordinal,
                format!("apiVersion {api_version:?} is not GROUP/VERSION or VERSION"),
            ));
        }
        let metadata = object.get("metadata").and_then(Value::as_object);
        let meta_text = |key: &str| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        let Some(name) = meta_text("name") else {
            return Err(ApplyError::invalid(
                ordinal,
                format!("{kind} has no metadata.name (generateName cannot be applied)"),
            ));
        };
        Ok(ManifestId {
            group: group.to_string(),
            version: version.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            namespace: meta_text("namespace").map(str::to_string),
        })
    }

    /// `apiVersion` as written.
    pub fn api_version(&self) -> String {
        api_version(&self.group, &self.version)
    }

    fn gvk(&self) -> GroupVersionKind {
        GroupVersionKind::gvk(&self.group, &self.version, &self.kind)
    }

    fn step(&self) -> Step {
        match (self.group.as_str(), self.kind.as_str()) {
            ("", "Namespace") => Step::Namespaces,
            (CRD_GROUP, "CustomResourceDefinition") => Step::Crds,
            _ => Step::Rest,
        }
    }
}

/// The steps of applying a work, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Namespaces,
    Crds,
    Rest,
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
            client,
            discovery: RwLock::new(discovery),
            discovered_at: Mutex::new(started),
            concurrency: DEFAULT_CONCURRENCY,
            crd_timeout: CRD_ESTABLISHED_TIMEOUT,
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
    pub async fn apply_work(&self, work: &ManifestWork) -> Vec<ManifestOutcome> {
        let manifests = &work.spec.workload.manifests;
        let mut outcomes: Vec<Option<ManifestOutcome>> = vec![None; manifests.len()];
        let mut steps: [Vec<Pending>; 3] = [Vec::new(), Vec::new(), Vec::new()];
        let mut crds = WorkCrds::default();
        for (index, manifest) in manifests.iter().enumerate() {
            let ordinal = index as i32;
            match ManifestId::parse(ordinal, manifest) {
                Ok(id) => {
                    let step = id.step();
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
        for outcome in self.apply_all(work, namespaces, &crds).await {
            let index = outcome.ordinal as usize;
            outcomes[index] = Some(outcome);
        }

        if !crd_manifests.is_empty() {
            let applied = futures::stream::iter(crd_manifests)
                .map(|p| async move {
                    let outcome = self.apply_one(work, p, &WorkCrds::default()).await;
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

        for outcome in self.apply_all(work, rest, &crds).await {
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
        pending: Vec<Pending>,
        crds: &WorkCrds,
    ) -> Vec<ManifestOutcome> {
        futures::stream::iter(pending)
            .map(|p| self.apply_one(work, p, crds))
            .buffered(self.concurrency)
            .collect()
            .await
    }

    /// Resolves the kind of the manifest and applies it by its update strategy.
    async fn apply_one(&self, work: &ManifestWork, p: Pending, crds: &WorkCrds) -> ManifestOutcome {
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
        let strategy = manifest_config(work, &reference)
            .update_strategy
            .cloned()
            .unwrap_or_default();
        let result = self
            .apply_object(&reference, &ar, manifest, &strategy)
            .await
            .map(|obj| with_types(obj, &ar));
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

    async fn apply_object(
        &self,
        r: &ResourceRef,
        ar: &ApiResource,
        manifest: &Value,
        strategy: &UpdateStrategy,
    ) -> Result<DynamicObject, ApplyError> {
        let api: Api<DynamicObject> = if r.is_namespaced() {
            Api::namespaced_with(self.client.clone(), &r.namespace, ar)
        } else {
            Api::all_with(self.client.clone(), ar)
        };
        match strategy.type_ {
            UpdateStrategyType::Update => {
                let params = PatchParams::apply(FIELD_MANAGER).force();
                server_side_apply(&api, r, manifest, &params).await
            }
            UpdateStrategyType::ServerSideApply => {
                let config = strategy.server_side_apply.clone().unwrap_or_default();
                let manager = config
                    .field_manager
                    .as_deref()
                    .filter(|m| !m.is_empty())
                    .unwrap_or(FIELD_MANAGER);
                let mut params = PatchParams::apply(manager);
                if config.force {
                    params = params.force();
                }
                server_side_apply(&api, r, manifest, &params)
                    .await
                    .map_err(|mut e| {
                        // A conflict with another field manager stays until someone
                        // changes the work or the other manager lets go.
                        if !config.force && e.reason == "Conflict" {
                            e.retryable = false;
                        }
                        e
                    })
            }
            UpdateStrategyType::CreateOnly => {
                if let Some(existing) = call(r, "get", api.get_opt(&r.name)).await? {
                    return Ok(existing);
                }
                let object: DynamicObject = serde_json::from_value(body(manifest, r))
                    .map_err(|e| ApplyError::new("Invalid", format!("{r}: {e}"), false))?;
                let params = PostParams {
                    dry_run: false,
                    field_manager: Some(FIELD_MANAGER.to_string()),
                };
                match call(r, "create", api.create(&params, &object)).await {
                    // Created by someone else in between: still never updated.
                    Err(e) if e.reason == "AlreadyExists" => call(r, "get", api.get_opt(&r.name))
                        .await?
                        .ok_or_else(|| ApplyError::not_found(r)),
                    other => other,
                }
            }
            UpdateStrategyType::ReadOnly => call(r, "get", api.get_opt(&r.name))
                .await?
                .ok_or_else(|| ApplyError::not_found(r)),
        }
    }

    /// Polls the CRD until it is Established (or [`CRD_ESTABLISHED_TIMEOUT`] passes; then
    /// why not, from its conditions).
    async fn wait_established(&self, applied: &DynamicObject) -> Result<(), String> {
        if crd_established(&applied.data) {
            return Ok(());
        }
        let name = applied.metadata.name.clone().unwrap_or_default();
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let deadline = Instant::now() + self.crd_timeout;
        let mut delay = Duration::from_millis(50);
        let mut last = String::from("not Established yet");
        loop {
            match tokio::time::timeout(REQUEST_TIMEOUT, api.get_opt(&name)).await {
                Ok(Ok(Some(crd))) => {
                    let conditions = crd
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .cloned()
                        .unwrap_or_default();
                    if conditions
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                    {
                        return Ok(());
                    }
                    let failing: Vec<String> = conditions
                        .iter()
                        .filter(|c| c.status != "True")
                        .map(|c| {
                            let text = c.message.clone().unwrap_or_default();
                            format!("{}={}: {}", c.type_, c.status, text)
                        })
                        .collect();
                    if !failing.is_empty() {
                        last = failing.join("; ");
                    }
                }
                Ok(Ok(None)) => last = "it is gone".to_string(),
                Ok(Err(e)) => last = ApplyError::from_kube(e).to_string(),
                Err(_) => last = "no answer from the apiserver".to_string(),
            }
            if Instant::now() + delay > deadline {
                return Err(format!("{last} (waited {:?})", self.crd_timeout));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(500));
        }
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
        if uid.is_empty() {
            return Err(ApplyError::new(
                "Invalid",
                format!("refusing to delete {r} without the uid it was applied with"),
                false,
            ));
        }
        let api = r.api(self.client.clone());
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

async fn server_side_apply(
    api: &Api<DynamicObject>,
    r: &ResourceRef,
    manifest: &Value,
    params: &PatchParams,
) -> Result<DynamicObject, ApplyError> {
    let body = body(manifest, r);
    call(r, "apply", api.patch(&r.name, params, &Patch::Apply(&body))).await
}

/// One apiserver call, bounded in time, its error in Kubernetes' words.
async fn call<T>(
    r: &ResourceRef,
    what: &str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApplyError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(ApplyError::from_kube),
        Err(_) => Err(ApplyError::timeout(&format!("{what} {r}"))),
    }
}

/// The manifest as sent: in the namespace it resolved to (none when cluster-scoped),
/// without the server-set metadata a manifest copied from `kubectl get -o yaml` carries
/// (an apply with `managedFields` or a stale `resourceVersion` would be refused).
fn body(manifest: &Value, r: &ResourceRef) -> Value {
    let mut body = manifest.clone();
    if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        for key in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "managedFields",
            "generation",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            metadata.remove(key);
        }
        if r.is_namespaced() {
            metadata.insert("namespace".into(), Value::String(r.namespace.clone()));
        } else {
            metadata.remove("namespace");
        }
    }
    body
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

fn api_version(group: &str, version: &str) -> String {
    if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    }
}

/// `deployments.apps`, `configmaps`: how the apiserver names a resource in messages.
fn qualified_resource(r: &ResourceRef) -> String {
    if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    }
}

/// Failures whose status code says "try again" but which no retry soon will mend: a
/// namespace that does not exist (404 on the namespace itself, not the object) and a
/// manifest whose fields do not fit the kind's schema (the apiserver answers 500 "failed
/// to create typed patch object", e.g. for `data: {a: 1}` in a ConfigMap). They make the
/// work Degraded at once, so a `hub wait` fails in seconds instead of after
/// `--degraded-after`; the resync still tries them again each period, so a namespace
/// created later heals the work.
fn needs_a_person(status: &kube::core::Status) -> bool {
    let missing_namespace = status.code == 404
        && status
            .details
            .as_ref()
            .is_some_and(|d| d.kind == "namespaces");
    let schema_mismatch = status.code == 500
        && status
            .message
            .contains("failed to create typed patch object");
    missing_namespace || schema_mismatch
}

/// Whether a failure with this HTTP status may pass by itself.
fn retryable_code(code: u16) -> bool {
    match code {
        // The apiserver, an admission webhook or etcd in trouble; too many requests; a
        // credential being rotated; a missing namespace that may come; a conflict with a
        // concurrent writer.
        500.. | 429 | 408 | 401 | 404 | 409 | 410 => true,
        // Forbidden, Invalid, BadRequest, MethodNotAllowed, too large...: a person must act.
        _ => false,
    }
}

fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// An error and its sources, `: `-separated, each cause once.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reference(group: &str, resource: &str, namespace: &str, name: &str) -> ResourceRef {
        ResourceRef {
            group: group.into(),
            version: "v1".into(),
            kind: "Kind".into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn wildcards_match_like_ocm() {
        assert!(wildcard_match("web", "web"));
        assert!(!wildcard_match("web", "web-1"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("web-*", "web-1"));
        assert!(!wildcard_match("web-*", "api-1"));
        assert!(wildcard_match("*-1", "web-1"));
        assert!(wildcard_match("a*b*c", "a-x-b-y-c"));
        assert!(!wildcard_match("a*b*c", "a-x-c"));
        assert!(!wildcard_match("ab*ba", "aba"));
        assert!(!wildcard_match("", "x"));
    }

    #[test]
    fn manifest_configs_merge_first_match_per_field() {
        let mut work = ManifestWork::new("c", "w", vec![]);
        work.spec.manifest_configs = serde_json::from_value(json!([
            {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "other", "namespace": "ns"},
             "updateStrategy": {"type": "ReadOnly"}},
            {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "web", "namespace": "*"},
             "feedbackRules": [{"type": "WellKnownStatus"}]},
            {"resourceIdentifier": {"group": "apps", "resource": "deployments", "name": "w*", "namespace": "ns"},
             "updateStrategy": {"type": "CreateOnly"}, "feedbackRules": [{"type": "JSONPaths", "jsonPaths": [{"name": "x", "path": ".x"}]}]},
        ]))
        .unwrap();
        let config = manifest_config(&work, &reference("apps", "deployments", "ns", "web"));
        assert_eq!(config.feedback_rules.len(), 1);
        assert_eq!(
            config.feedback_rules[0].type_,
            api::FeedbackType::WellKnownStatus
        );
        assert_eq!(
            config.update_strategy.map(|s| s.type_),
            Some(UpdateStrategyType::CreateOnly)
        );
        let none = manifest_config(&work, &reference("", "deployments", "ns", "web"));
        assert!(none.feedback_rules.is_empty() && none.update_strategy.is_none());
    }

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
        assert_eq!(core.step(), Step::Namespaces);
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
    fn bodies_lose_server_fields_and_get_their_namespace() {
        let manifest = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "resourceVersion": "5", "uid": "u", "managedFields": [], "labels": {"x": "y"}},
            "data": {"k": "v"},
        });
        let sent = body(&manifest, &reference("", "configmaps", "default", "a"));
        assert_eq!(
            sent,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "a", "labels": {"x": "y"}, "namespace": "default"},
                   "data": {"k": "v"}})
        );
        let cluster = body(
            &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "namespace": "z"}}),
            &reference("", "namespaces", "", "a"),
        );
        assert_eq!(cluster["metadata"], json!({"name": "a"}));
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

    #[test]
    fn kubernetes_errors_keep_their_words() {
        let status = kube::core::Status {
            status: Some(kube::core::response::StatusSummary::Failure),
            code: 403,
            message: "deployments.apps \"x\" is forbidden: User \"u\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"n\"".into(),
            metadata: None,
            reason: "Forbidden".into(),
            details: None,
        };
        let err = ApplyError::from_kube(kube::Error::Api(Box::new(status.clone())));
        assert_eq!(err.reason, "Forbidden");
        assert_eq!(err.message, status.message);
        assert!(!err.retryable);
        for (code, retryable) in [
            (500, true),
            (503, true),
            (429, true),
            (422, false),
            (400, false),
            (404, true),
        ] {
            let s = kube::core::Status {
                code,
                reason: String::new(),
                message: String::new(),
                ..status.clone()
            };
            let err = ApplyError::from_kube(kube::Error::Api(Box::new(s)));
            assert_eq!(err.retryable, retryable, "{code}");
            assert!(!err.reason.is_empty() && !err.message.is_empty());
        }
        // A missing namespace and a manifest that does not fit the schema need a person.
        let missing_namespace = kube::core::Status {
            code: 404,
            reason: "NotFound".into(),
            message: "namespaces \"gone\" not found".into(),
            details: Some(kube::core::response::StatusDetails {
                name: "gone".into(),
                group: String::new(),
                kind: "namespaces".into(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            }),
            ..status.clone()
        };
        assert!(!ApplyError::from_kube(kube::Error::Api(Box::new(missing_namespace))).retryable);
        let typed_patch = kube::core::Status {
            code: 500,
            reason: "InternalError".into(),
            message: "failed to create typed patch object (/v1, Kind=ConfigMap): .data.a: expected string, got &value.valueUnstructured{Value:1}".into(),
            ..status.clone()
        };
        assert!(!ApplyError::from_kube(kube::Error::Api(Box::new(typed_patch))).retryable);
        let nf = ApplyError::not_found(&reference("apps", "deployments", "n", "web"));
        assert_eq!(nf.message, "deployments.apps \"web\" not found");
    }
}
