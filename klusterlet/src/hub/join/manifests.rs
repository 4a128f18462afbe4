//! What `klusterlet join --print-manifests` prints: everything needed to run the agent
//! inside the managed cluster.
//!
//! * Namespace `open-cluster-management-agent` (`--namespace`).
//! * ServiceAccount `klusterlet`.
//! * ClusterRole + ClusterRoleBinding `klusterlet`: read-only, what the claims and the
//!   readiness watches need (nodes, the `/version` endpoint, list/watch of Deployments,
//!   StatefulSets, DaemonSets, Jobs, Pods and PVCs). Each is optional: without it the agent
//!   warns once and reports less (no node claims; readiness at each resync).
//! * Role + RoleBinding `klusterlet` in the agent's namespace: its ledger (ConfigMaps).
//!   With these two the agent does its own bookkeeping and nothing else.
//! * ClusterRole + ClusterRoleBinding `klusterlet-work`: applying arbitrary works needs
//!   every verb on every resource, so this role is necessarily as broad as cluster-admin.
//!   It is separate so an admin can narrow it (say, to the kinds the fleet's works use, or
//!   to a RoleBinding per namespace); a work touching something outside it then reports
//!   the apiserver's "forbidden" on that manifest and the others still apply. Its two
//!   narrow rules, `impersonate` on serviceaccounts and `create` on subjectaccessreviews,
//!   are what works with `spec.executor` need; keep them when narrowing.
//! * Secret `klusterlet-identity`: `agent.key` and `state.yaml` from the data dir.
//! * Deployment `klusterlet`: one replica (two agents must never share one identity, so
//!   the strategy is Recreate), running `klusterlet run --data-dir /var/lib/klusterlet` as
//!   a non-root user with a read-only root filesystem, serving `/metrics` on port 8080
//!   with a liveness probe on `/livez` and a readiness probe on `/healthz`.

use clap::Args;
use serde_json::{Value, json};

use crate::hub::identity::{Identity, KEY_FILE, STATE_FILE};

/// Where the Secret is mounted inside the agent's pod.
pub const IN_CLUSTER_DATA_DIR: &str = "/var/lib/klusterlet";

/// The port of `/metrics`, `/healthz` and `/livez` inside the agent's pod.
pub const METRICS_PORT: u16 = 8080;
/// `run --metrics-listen` inside the agent's pod.
const METRICS_LISTEN: &str = "0.0.0.0:8080";

/// Options of `--print-manifests`.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// Namespace the agent runs in (with --print-manifests).
    #[arg(long, default_value = "open-cluster-management-agent")]
    pub namespace: String,
    /// The agent's container image (with --print-manifests).
    #[arg(long, default_value = concat!("fleethub/klusterlet:", env!("CARGO_PKG_VERSION")))]
    pub image: String,
}

impl Default for ManifestArgs {
    fn default() -> Self {
        ManifestArgs {
            namespace: "open-cluster-management-agent".into(),
            image: concat!("fleethub/klusterlet:", env!("CARGO_PKG_VERSION")).into(),
        }
    }
}

/// The manifests as one YAML stream.
pub fn render(identity: &Identity, args: &ManifestArgs) -> String {
    objects(identity, args)
        .iter()
        .map(|o| serde_saphyr::to_string(o).expect("manifests serialize"))
        .map(|doc| format!("---\n{doc}"))
        .collect()
}

/// The manifests as JSON values, in the order to apply them.
pub fn objects(identity: &Identity, args: &ManifestArgs) -> Vec<Value> {
    let ManifestArgs { namespace, image } = args;
    let labels =
        json!({"app.kubernetes.io/name": "klusterlet", "app.kubernetes.io/part-of": "fleethub"});
    let meta = |name: &str| json!({"name": name, "labels": labels});
    let namespaced = |name: &str| json!({"name": name, "namespace": namespace, "labels": labels});
    let subject = json!([{"kind": "ServiceAccount", "name": "klusterlet", "namespace": namespace}]);
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta(namespace)}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": namespaced("klusterlet")}),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta("klusterlet"),
            "rules": [
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                {"nonResourceURLs": ["/version", "/version/"], "verbs": ["get"]},
                {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["list", "watch"]},
                {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch"]},
                {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims"], "verbs": ["list", "watch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta("klusterlet"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "klusterlet"},
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": namespaced("klusterlet"),
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": namespaced("klusterlet"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "klusterlet"},
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {
                "name": "klusterlet-work",
                "labels": labels,
                "annotations": {
                    "fleethub.io/description": "Applies the hub's ManifestWorks: as broad as the works need. Narrow it to the kinds and namespaces your works use; manifests outside it report Forbidden."
                },
            },
            "rules": [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                // Works with spec.executor: acting as a ServiceAccount after asking whether
                // it may. Kept when the rule above is narrowed; never `impersonate` on
                // users or groups (that would reach system:masters).
                {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
                {"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta("klusterlet-work"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "klusterlet-work"},
            "subjects": subject,
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": namespaced("klusterlet-identity"),
            "type": "Opaque",
            "stringData": {
                KEY_FILE: identity.key.private_pem(),
                STATE_FILE: identity.state.to_yaml(),
            },
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": namespaced("klusterlet"),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/name": "klusterlet"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "klusterlet",
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            // The Secret's files belong to this group (mode 0440), so
                            // the non-root agent can read them and nobody else can.
                            "fsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"},
                        },
                        "containers": [{
                            "name": "klusterlet",
                            "image": image,
                            "args": [
                                "run", "--data-dir", IN_CLUSTER_DATA_DIR, "--namespace", namespace,
                                "--metrics-listen", METRICS_LISTEN,
                            ],
                            "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
                            // Restarted only when its loops stopped; taken out of
                            // readiness while the hub cannot be reached (telemetry.rs).
                            "livenessProbe": {
                                "httpGet": {"path": "/livez", "port": "metrics"},
                                "periodSeconds": 10,
                                "failureThreshold": 3,
                            },
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "metrics"},
                                "periodSeconds": 10,
                            },
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [{
                                "name": "identity",
                                "mountPath": IN_CLUSTER_DATA_DIR,
                                "readOnly": true,
                            }],
                        }],
                        "volumes": [{
                            "name": "identity",
                            "secret": {"secretName": "klusterlet-identity", "defaultMode": 0o440},
                        }],
                    },
                },
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::identity::{AgentKey, JoinState};

    fn identity() -> Identity {
        Identity {
            state: JoinState {
                server: "https://hub.example.com:8443".into(),
                certificate_authority_data:
                    "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n".into(),
                ca_hash: format!("sha256:{}", "a".repeat(64)),
                cluster_name: "edge-1".into(),
                registration_id: "r-1".into(),
                requested_at: chrono::Utc::now(),
            },
            key: AgentKey::generate().unwrap(),
        }
    }

    /// Splits a YAML stream at its `---` lines (a PEM's `-----END` must not split it).
    fn split_documents(text: &str) -> Vec<String> {
        let mut docs: Vec<String> = Vec::new();
        for line in text.lines() {
            if line == "---" {
                docs.push(String::new());
            } else if let Some(doc) = docs.last_mut() {
                doc.push_str(line);
                doc.push('\n');
            }
        }
        docs
    }

    #[test]
    fn the_stream_parses_back_and_carries_the_identity() {
        let id = identity();
        let args = ManifestArgs {
            namespace: "agents".into(),
            image: "registry.example.com/klusterlet:dev".into(),
        };
        let text = render(&id, &args);
        let docs: Vec<Value> = split_documents(&text)
            .iter()
            .map(|d| serde_saphyr::from_str(d).unwrap())
            .collect();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
                "Secret",
                "Deployment"
            ]
        );
        assert_eq!(docs[0]["metadata"]["name"], "agents");
        let secret = &docs[8];
        assert_eq!(secret["metadata"]["namespace"], "agents");
        let key_pem = secret["stringData"]["agent.key"].as_str().unwrap();
        let key = AgentKey::from_pem(key_pem).unwrap();
        assert_eq!(key.public_key_pem(), id.key.public_key_pem());
        let state = JoinState::parse(secret["stringData"]["state.yaml"].as_str().unwrap()).unwrap();
        assert_eq!(state, id.state);
        let container = &docs[9]["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example.com/klusterlet:dev");
        assert_eq!(
            container["args"],
            json!([
                "run",
                "--data-dir",
                "/var/lib/klusterlet",
                "--namespace",
                "agents",
                "--metrics-listen",
                "0.0.0.0:8080"
            ]),
            "the ledger lives in the namespace whose Role grants its ConfigMaps"
        );
        assert_eq!(container["ports"][0]["containerPort"], METRICS_PORT);
        assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
        assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/healthz");
        // The agent's own cluster-wide role is read-only; it writes only ConfigMaps in its
        // namespace; the broad role for the works is the separate klusterlet-work.
        let claims_role = &docs[2];
        assert_eq!(claims_role["metadata"]["name"], "klusterlet");
        for rule in claims_role["rules"].as_array().unwrap() {
            for verb in rule["verbs"].as_array().unwrap() {
                assert!(["get", "list", "watch"].contains(&verb.as_str().unwrap()));
            }
        }
        let ledger_role = &docs[4];
        assert_eq!(ledger_role["metadata"]["namespace"], "agents");
        assert_eq!(ledger_role["rules"][0]["resources"], json!(["configmaps"]));
        assert_eq!(docs[6]["metadata"]["name"], "klusterlet-work");
        // Executors: impersonating ServiceAccounts (never users or groups) and asking
        // SubjectAccessReviews survive a narrowing of the broad rule.
        let work_rules = docs[6]["rules"].as_array().unwrap();
        assert!(work_rules.contains(
            &json!({"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]})
        ));
        assert!(work_rules.contains(&json!({"apiGroups": ["authorization.k8s.io"], "resources": ["subjectaccessreviews"], "verbs": ["create"]})));
        for binding in [&docs[3], &docs[5], &docs[7]] {
            assert_eq!(binding["subjects"][0]["namespace"], "agents");
        }
    }

    #[test]
    fn default_image_is_this_version() {
        assert_eq!(
            ManifestArgs::default().image,
            format!("fleethub/klusterlet:{}", env!("CARGO_PKG_VERSION"))
        );
    }
}
