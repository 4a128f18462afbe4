//! `spec.executor`: a work applied as a ServiceAccount of the managed cluster, not as the
//! agent.
//!
//! Before each write of a manifest the agent asks the apiserver with a
//! SubjectAccessReview (`authorization.k8s.io/v1`) whether the ServiceAccount may do what
//! the write needs, then writes through a client that impersonates the ServiceAccount, so
//! the apiserver's RBAC checks the ServiceAccount's rights, never the agent's. A refusal
//! fails that manifest only ("not allowed to patch ...", as OCM's work agent words it).
//!
//! What is checked, by update strategy (OCM asks create, update, patch, get and, for
//! objects the work deletes, delete, because its Update strategy reads and replaces; ours
//! only server-side applies):
//! * `Update`, `ServerSideApply`: `create` and `patch` (an apply of an absent object
//!   creates it).
//! * `CreateOnly`: `get` and `create`.
//! * `ReadOnly`: `get`.
//! * Deleting an object (dropped from the work, or the work deleted): `delete`.
//!
//! Impersonation sets the user `system:serviceaccount:<ns>:<name>` and no groups: the
//! apiserver adds a ServiceAccount's groups itself, so the agent needs `impersonate` on
//! `serviceaccounts` only, never on `groups` (which would let it act as `system:masters`).
//! The SubjectAccessReview names the groups explicitly (`system:serviceaccounts`,
//! `system:serviceaccounts:<ns>`, `system:authenticated`), as OCM does, since a review is
//! not filled in by the apiserver.
//!
//! Answers are cached for [`ALLOWED_TTL`] (allowed) and [`REFUSED_TTL`] (refused). The
//! cache only saves round trips: the impersonated write is still authorized by the
//! apiserver each time, so a stale "allowed" cannot let the ServiceAccount do more than
//! its RBAC says (the write then fails with Kubernetes' own "forbidden"). A refusal is
//! kept briefly so that granting the rights takes effect within seconds. OCM keeps answers
//! until an RBAC object changes (it watches every Role and binding of the cluster); a
//! short expiry gives nearly the same freshness without those watches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api::{ExecutorServiceAccount, ManifestWorkExecutor, UpdateStrategyType};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use super::REQUEST_TIMEOUT;
use super::error::ApplyError;
use super::resource::ResourceRef;

/// How long an "allowed" answer of a SubjectAccessReview is reused.
pub const ALLOWED_TTL: Duration = Duration::from_secs(60);
/// How long a refusal is reused: short, so granting the rights takes effect soon.
pub const REFUSED_TTL: Duration = Duration::from_secs(5);
/// Above this many cached answers, expired ones are dropped on the next insert.
const MAX_ANSWERS: usize = 4096;

/// The verbs applying a manifest with this update strategy needs.
pub fn apply_verbs(strategy: UpdateStrategyType) -> &'static [&'static str] {
    match strategy {
        UpdateStrategyType::Update | UpdateStrategyType::ServerSideApply => &["create", "patch"],
        UpdateStrategyType::CreateOnly => &["get", "create"],
        UpdateStrategyType::ReadOnly => &["get"],
    }
}

/// The verbs deleting an object needs.
pub const DELETE_VERBS: &[&str] = &["delete"];

/// The SubjectAccessReview asking whether `sa` may `verb` the object `r`.
pub fn review(sa: &ExecutorServiceAccount, r: &ResourceRef, verb: &str) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(sa.username()),
            groups: Some(sa.groups()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(r.group.clone()),
                version: Some(r.version.clone()),
                resource: Some(r.resource.clone()),
                namespace: Some(r.namespace.clone()).filter(|n| !n.is_empty()),
                name: Some(r.name.clone()),
                verb: Some(verb.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// `deployments.apps "web" in namespace "b"`, `namespaces "b"`.
fn describe(r: &ResourceRef) -> String {
    let resource = if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    if r.namespace.is_empty() {
        format!("{resource} {:?}", r.name)
    } else {
        format!("{resource} {:?} in namespace {:?}", r.name, r.namespace)
    }
}

/// One question to the apiserver: may this ServiceAccount do this verb to this object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Question {
    account: ExecutorServiceAccount,
    verb: String,
    object: ResourceRef,
}

/// A cached answer: allowed, or why not.
#[derive(Debug, Clone)]
struct Answer {
    refusal: Option<String>,
    at: Instant,
}

impl Answer {
    fn fresh(&self, now: Instant) -> bool {
        let ttl = if self.refusal.is_none() {
            ALLOWED_TTL
        } else {
            REFUSED_TTL
        };
        now.duration_since(self.at) < ttl
    }
}

/// Checks executors' rights and hands out clients that impersonate them.
pub struct Executors {
    /// The agent's own client: asks the SubjectAccessReviews.
    agent: kube::Client,
    /// The agent's configuration, from which impersonating clients are made; `None`: no
    /// work with an executor is applied at all.
    config: Option<kube::Config>,
    clients: Mutex<HashMap<ExecutorServiceAccount, kube::Client>>,
    answers: Mutex<HashMap<Question, Answer>>,
}

impl std::fmt::Debug for Executors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executors")
            .field("impersonates", &self.config.is_some())
            .finish_non_exhaustive()
    }
}

impl Executors {
    /// Executors checked with `agent` and impersonated from `config` (`None`: works
    /// naming an executor fail, they are never applied with the agent's rights).
    pub fn new(agent: kube::Client, config: Option<kube::Config>) -> Self {
        Executors {
            agent,
            config,
            clients: Mutex::new(HashMap::new()),
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// The client to do `verbs` to `r` with: the agent's own when the work names no
    /// executor; else, once a SubjectAccessReview allowed each verb, one impersonating the
    /// executor. A refusal (reason `Forbidden`, retried: someone may grant the rights)
    /// says "not allowed to <verb> <resource>".
    pub async fn client(
        &self,
        executor: Option<&ManifestWorkExecutor>,
        r: &ResourceRef,
        verbs: &[&str],
    ) -> Result<kube::Client, ApplyError> {
        let Some(executor) = executor else {
            return Ok(self.agent.clone());
        };
        let Some(sa) = executor.account() else {
            return Err(ApplyError::new(
                "Invalid",
                "spec.executor must name a ServiceAccount (subject.type ServiceAccount with serviceAccount.namespace and name); not applied with the agent's own rights",
                false,
            ));
        };
        for verb in verbs {
            if let Some(why) = self.refusal(sa, r, verb).await? {
                return Err(ApplyError::new(
                    "Forbidden",
                    format!(
                        "executor {} is not allowed to {verb} {}{why}",
                        sa.username(),
                        describe(r)
                    ),
                    true,
                ));
            }
        }
        self.impersonating(sa)
    }

    /// Why `sa` may not `verb` `r` (`Some("")` without a reason given), from the cache or
    /// a SubjectAccessReview; `None` when it may.
    async fn refusal(
        &self,
        sa: &ExecutorServiceAccount,
        r: &ResourceRef,
        verb: &str,
    ) -> Result<Option<String>, ApplyError> {
        let question = Question {
            account: sa.clone(),
            verb: verb.to_string(),
            object: r.clone(),
        };
        let now = Instant::now();
        if let Some(answer) = self
            .answers
            .lock()
            .expect("executor answers lock")
            .get(&question)
            .filter(|a| a.fresh(now))
        {
            return Ok(answer.refusal.clone());
        }
        let api: Api<SubjectAccessReview> = Api::all(self.agent.clone());
        let asked = tokio::time::timeout(
            REQUEST_TIMEOUT,
            api.create(&PostParams::default(), &review(sa, r, verb)),
        )
        .await
        .map_err(|_| ApplyError::timeout("SubjectAccessReview"))?
        .map_err(|e| {
            let mut err = ApplyError::from_kube(e);
            err.message = format!("checking the executor's rights: {}", err.message);
            err
        })?;
        let status = asked.status.unwrap_or_default();
        let refusal = (!status.allowed).then(|| {
            status
                .reason
                .filter(|reason| !reason.is_empty())
                .map(|reason| format!(" ({reason})"))
                .unwrap_or_default()
        });
        tracing::debug!(executor = %sa.username(), verb, resource = %r, allowed = refusal.is_none(), "SubjectAccessReview");
        let mut answers = self.answers.lock().expect("executor answers lock");
        if answers.len() >= MAX_ANSWERS {
            answers.retain(|_, a| a.fresh(now));
        }
        answers.insert(
            question,
            Answer {
                refusal: refusal.clone(),
                at: Instant::now(),
            },
        );
        Ok(refusal)
    }

    /// The client impersonating `sa` (one per ServiceAccount, made once).
    fn impersonating(&self, sa: &ExecutorServiceAccount) -> Result<kube::Client, ApplyError> {
        let mut clients = self.clients.lock().expect("executor clients lock");
        if let Some(client) = clients.get(sa) {
            return Ok(client.clone());
        }
        let Some(config) = &self.config else {
            return Err(ApplyError::new(
                "Forbidden",
                format!(
                    "not allowed to apply as executor {}: this agent was started without a configuration to impersonate it with",
                    sa.username()
                ),
                false,
            ));
        };
        let client = kube::Client::try_from(impersonation(config, sa)).map_err(|e| {
            ApplyError::new(
                "Invalid",
                format!(
                    "a client impersonating {} could not be made: {e}",
                    sa.username()
                ),
                false,
            )
        })?;
        clients.insert(sa.clone(), client.clone());
        Ok(client)
    }
}

/// The agent's configuration acting as `sa`: user `system:serviceaccount:<ns>:<name>`,
/// no groups (the apiserver adds the ServiceAccount's own).
pub fn impersonation(config: &kube::Config, sa: &ExecutorServiceAccount) -> kube::Config {
    let mut config = config.clone();
    config.auth_info.impersonate = Some(sa.username());
    config.auth_info.impersonate_groups = None;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(namespace: &str) -> ResourceRef {
        ResourceRef {
            group: "apps".into(),
            version: "v1".into(),
            kind: "Deployment".into(),
            resource: "deployments".into(),
            namespace: namespace.into(),
            name: "web".into(),
        }
    }

    fn sa() -> ExecutorServiceAccount {
        ExecutorServiceAccount {
            namespace: "ops".into(),
            name: "deployer".into(),
        }
    }

    #[test]
    fn a_review_asks_for_the_service_account_and_the_object() {
        let sar = review(&sa(), &deployment("b"), "patch");
        let spec = &sar.spec;
        assert_eq!(
            spec.user.as_deref(),
            Some("system:serviceaccount:ops:deployer")
        );
        assert_eq!(
            spec.groups.as_deref().unwrap(),
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ops",
                "system:authenticated"
            ]
        );
        let attrs = spec.resource_attributes.as_ref().unwrap();
        assert_eq!(attrs.verb.as_deref(), Some("patch"));
        assert_eq!(attrs.group.as_deref(), Some("apps"));
        assert_eq!(attrs.resource.as_deref(), Some("deployments"));
        assert_eq!(attrs.namespace.as_deref(), Some("b"));
        assert_eq!(attrs.name.as_deref(), Some("web"));
        // Its wire form is what the apiserver expects.
        let wire = serde_json::to_value(&sar).unwrap();
        assert_eq!(wire["apiVersion"], "authorization.k8s.io/v1");
        assert_eq!(wire["kind"], "SubjectAccessReview");
        assert_eq!(wire["spec"]["resourceAttributes"]["verb"], "patch");
    }

    #[test]
    fn a_cluster_scoped_object_is_asked_without_a_namespace() {
        let mut ns = deployment("");
        ns.group = String::new();
        ns.resource = "namespaces".into();
        let sar = review(&sa(), &ns, "create");
        let attrs = sar.spec.resource_attributes.unwrap();
        assert_eq!(attrs.namespace, None);
        assert_eq!(attrs.group.as_deref(), Some(""));
        assert_eq!(describe(&ns), "namespaces \"web\"");
        assert_eq!(
            describe(&deployment("b")),
            "deployments.apps \"web\" in namespace \"b\""
        );
    }

    #[test]
    fn each_strategy_asks_for_what_its_write_does() {
        assert_eq!(apply_verbs(UpdateStrategyType::Update), ["create", "patch"]);
        assert_eq!(
            apply_verbs(UpdateStrategyType::ServerSideApply),
            ["create", "patch"]
        );
        assert_eq!(
            apply_verbs(UpdateStrategyType::CreateOnly),
            ["get", "create"]
        );
        assert_eq!(apply_verbs(UpdateStrategyType::ReadOnly), ["get"]);
        assert_eq!(DELETE_VERBS, ["delete"]);
    }

    #[test]
    fn impersonation_names_the_user_and_no_groups() {
        let mut config = kube::Config::new("https://127.0.0.1:6443".parse().unwrap());
        config.auth_info.impersonate_groups = Some(vec!["system:masters".into()]);
        let acting = impersonation(&config, &sa());
        assert_eq!(
            acting.auth_info.impersonate.as_deref(),
            Some("system:serviceaccount:ops:deployer")
        );
        assert_eq!(acting.auth_info.impersonate_groups, None);
        assert_eq!(acting.cluster_url, config.cluster_url);
    }

    #[test]
    fn refusals_expire_sooner_than_permissions() {
        let now = Instant::now();
        let allowed = Answer {
            refusal: None,
            at: now,
        };
        let refused = Answer {
            refusal: Some(String::new()),
            at: now,
        };
        let later = now + REFUSED_TTL;
        assert!(allowed.fresh(later));
        assert!(!refused.fresh(later));
        assert!(!allowed.fresh(now + ALLOWED_TTL));
    }
}
