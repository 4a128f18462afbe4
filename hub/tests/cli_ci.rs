//! The CI commands of the `hub` CLI without a managed cluster: the real binary against an
//! in-process hub over plain HTTP, whose service the test drives to play the agent (write
//! a work's status, renew a lease). Exit codes, stdout, stderr and `-o json` shapes.
//! The end-to-end versions with real agents and a real cluster are in
//! klusterlet/tests/ci.rs.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{ClientConfig, HubClient, ManagedCluster, ManifestWork, ManifestWorkStatus};
use serde_json::{Value, json};

use common::{Cli, Run};

const TOKEN: &str = "cli-ci-admin-token";

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// An in-process hub over plain HTTP whose service the test can reach directly.
struct InProcessHub {
    hub: Arc<hub::service::Hub>,
    url: String,
    client: HubClient,
    dir: tempfile::TempDir,
}

impl InProcessHub {
    async fn start() -> InProcessHub {
        init();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = hub::store::connect(&url).await.unwrap();
        let service = hub::service::Hub::start(store.clone()).await.unwrap();
        let (auth, _) =
            hub::service::authn::Auth::init(store.clone(), Some(TOKEN), Duration::from_secs(3600))
                .await
                .unwrap();
        let state = hub::http::AppState {
            hub: service.clone(),
            auth: Arc::new(auth),
            cluster_info: Arc::new(hub::http::ClusterInfo {
                server: "http://127.0.0.1".into(),
                certificate_authority_data: String::new(),
                ca_hash: String::new(),
            }),
            max_body_bytes: 500 * 1024,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = hub::http::router(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = HubClient::new(&ClientConfig {
            server: url.clone(),
            ca_data: None,
            token: Some(TOKEN.into()),
        })
        .unwrap();
        InProcessHub {
            hub: service,
            url,
            client,
            dir,
        }
    }

    /// A cluster whose agent joined and renews its lease.
    async fn joined_cluster(&self, name: &str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.client
            .put_cluster(&ManagedCluster::new(name, labels))
            .await
            .unwrap();
        self.hub.mark_cluster_joined(name).await.unwrap();
        self.hub
            .renew_lease(name, &api::LeaseRenewal::default())
            .await
            .unwrap();
    }

    async fn put(&self, cluster: &str, name: &str, manifests: Vec<Value>) -> ManifestWork {
        let w = ManifestWork::new(cluster, name, manifests);
        self.client.put_work(&w, None).await.unwrap().value
    }

    /// Writes a work's status as its agent would.
    async fn status(&self, cluster: &str, name: &str, status: Value) {
        let status: ManifestWorkStatus = serde_json::from_value(status).unwrap();
        self.hub
            .put_work_status(cluster, name, status)
            .await
            .unwrap();
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    async fn cli(&self, args: &[&str]) -> Run {
        cli(args, &[("HUB_SERVER", &self.url), ("HUB_TOKEN", TOKEN)]).await
    }
}

/// Runs the CLI with these environment variables only.
async fn cli(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cli = Cli::new(args);
    for (k, v) in envs {
        cli = cli.env(k, v);
    }
    cli.run().await
}

fn cm(name: &str, v: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "ns"}, "data": {"v": v}})
}

fn condition(type_: &str, status: &str, generation: i64) -> Value {
    json!({"type": type_, "status": status, "reason": "Test", "observedGeneration": generation})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_exits_0_1_or_3_from_what_the_agent_reports() {
    let h = InProcessHub::start().await;
    h.joined_cluster("c1", &[]).await;
    h.put("c1", "web", vec![cm("a", "1")]).await;

    // Nothing reported: exit 3 after the timeout, saying what is pending.
    let run = h
        .cli(&["wait", "work", "web", "--cluster", "c1", "--timeout", "1s"])
        .await;
    assert_eq!(run.code, 3, "{run}");
    assert_eq!(
        run.stderr.trim(),
        "error: timed out after 1s waiting for manifestwork \"web\" to be Ready; still pending: \
         cluster c1: waiting for the agent to report (generation 1)",
        "{run}"
    );
    assert!(run.took < Duration::from_secs(10), "{run}");

    // The agent reports while the CLI waits: the blocking GET returns at once.
    let waiting = tokio::spawn({
        let (url, args) = (
            h.url.clone(),
            [
                "wait",
                "work",
                "web",
                "--cluster",
                "c1",
                "--timeout",
                "100s",
                "-o",
                "json",
            ],
        );
        async move { cli(&args, &[("HUB_SERVER", &url), ("HUB_TOKEN", TOKEN)]).await }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reported = Instant::now();
    h.status(
        "c1",
        "web",
        json!({"conditions": [condition("Applied", "True", 1), condition("Ready", "True", 1)]}),
    )
    .await;
    let run = waiting.await.unwrap();
    assert_eq!(run.code, 0, "{run}");
    assert!(reported.elapsed() < Duration::from_secs(10), "{run}");
    let doc = run.document();
    assert_eq!(doc["apiVersion"], "v1");
    assert_eq!(doc["kind"], "WaitResult");
    assert_eq!(doc["for"], "Ready");
    assert_eq!(doc["status"], "done");
    assert!(doc["elapsedSeconds"].is_number());
    let r = &doc["results"][0];
    assert_eq!(r["cluster"], "c1");
    assert_eq!(r["work"], "web");
    assert_eq!(r["status"], "done");
    assert_eq!(r["generation"], 1);
    assert_eq!(r["pending"], json!([]));
    assert_eq!(r["failed"], json!([]));
    assert!(r.get("action").is_none(), "{r}");
    // With -o, the progress went to stderr.
    assert!(
        run.stderr.contains("cluster c1: Ready (generation 1)"),
        "{run}"
    );

    // A new generation: the old Ready no longer counts; Degraded at it fails at once.
    let w = h.put("c1", "web", vec![cm("a", "2")]).await;
    assert_eq!(w.metadata.generation, Some(2));
    h.status(
        "c1",
        "web",
        json!({
            "conditions": [condition("Applied", "False", 2), condition("Degraded", "True", 2), condition("Ready", "True", 1)],
            "resourceStatus": {"manifests": [{
                "resourceMeta": {"ordinal": 0, "version": "v1", "kind": "ConfigMap", "resource": "configmaps", "namespace": "ns", "name": "a"},
                "conditions": [{"type": "Applied", "status": "False", "reason": "Forbidden", "observedGeneration": 2,
                                "message": "configmaps \"a\" is forbidden: User \"agent\" cannot patch resource \"configmaps\""}]
            }]}
        }),
    )
    .await;
    let run = h
        .cli(&[
            "wait",
            "work",
            "web",
            "--cluster",
            "c1",
            "--timeout",
            "100s",
        ])
        .await;
    assert_eq!(run.code, 1, "{run}");
    assert_eq!(
        run.stderr.trim(),
        "error: manifestwork \"web\" failed on cluster c1: ConfigMap ns/a: Forbidden: configmaps \"a\" is forbidden: User \"agent\" cannot patch resource \"configmaps\"",
        "{run}"
    );
    assert!(run.took < Duration::from_secs(10), "{run}");

    // Waiting for a deletion: not asked for yet (exit 3), then done once the work is gone.
    let run = h
        .cli(&[
            "wait",
            "work",
            "web",
            "--cluster",
            "c1",
            "--for",
            "delete",
            "--timeout",
            "1s",
        ])
        .await;
    assert_eq!(run.code, 3, "{run}");
    assert!(run.stderr.contains("no deletion was asked for"), "{run}");
    h.client.delete_work("c1", "web").await.unwrap();
    h.hub
        .remove_work_finalizer("c1", "web", api::CLEANUP_FINALIZER)
        .await
        .unwrap();
    let run = h
        .cli(&["wait", "work", "web", "--cluster", "c1", "--for", "Deleted"])
        .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stdout.ends_with("s\n") && run.stdout.contains("deleted on 1 of 1 cluster"),
        "{run}"
    );

    // A missing work is a refusal; a bad --for a usage error.
    let run = h.cli(&["wait", "work", "nope", "--cluster", "c1"]).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("not found"), "{run}");
    let run = h
        .cli(&[
            "wait",
            "work",
            "x",
            "--cluster",
            "c1",
            "--for",
            "condition=Ready=False",
        ])
        .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(
        run.stderr.contains("only Ready=True can be waited for"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_a_lease_is_unavailable_and_never_done() {
    let h = InProcessHub::start().await;
    // A cluster record with no agent: its work can be Ready in the hub's eyes, but nobody
    // vouches for it.
    h.client
        .put_cluster(&ManagedCluster::new("lonely", Default::default()))
        .await
        .unwrap();
    h.put("lonely", "web", vec![cm("a", "1")]).await;
    h.status(
        "lonely",
        "web",
        json!({"conditions": [condition("Ready", "True", 1)]}),
    )
    .await;
    let run = h
        .cli(&[
            "wait",
            "work",
            "web",
            "--cluster",
            "lonely",
            "--timeout",
            "1s",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(run.code, 3, "{run}");
    assert!(
        run.stderr
            .contains("cluster lonely: unavailable (no agent has joined; no lease yet)"),
        "{run}"
    );
    let doc = run.document();
    assert_eq!(doc["status"], "timeout");
    assert_eq!(doc["results"][0]["status"], "unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_prints_results_and_waits_over_a_selector() {
    let h = InProcessHub::start().await;
    h.joined_cluster("a1", &[("env", "ci")]).await;
    h.joined_cluster("a2", &[("env", "ci")]).await;
    let file = h.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: ns}\ndata: {v: '1'}\n",
    );
    // Without --wait: one result per cluster, done once the hub took it.
    let run = h
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster-selector",
            "env=ci",
            "--name",
            "web",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(run.code, 0, "{run}");
    let doc = run.document();
    assert_eq!(doc["kind"], "ApplyResult");
    assert_eq!(doc["for"], Value::Null);
    assert_eq!(doc["status"], "done");
    let rows: Vec<(&str, &str, &str)> = doc["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["cluster"].as_str().unwrap(),
                r["action"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(rows, [("a1", "created", "done"), ("a2", "created", "done")]);
    // --quiet: nothing on stdout.
    let run = h
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster-selector",
            "env=ci",
            "--name",
            "web",
            "--quiet",
        ])
        .await;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run}");
    // --for and --timeout need --wait.
    let run = h
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster",
            "a1",
            "--name",
            "web",
            "--for",
            "Ready",
        ])
        .await;
    assert_eq!(run.code, 2, "{run}");
    let run = h
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster",
            "a1",
            "--name",
            "web",
            "--wait",
            "--for",
            "delete",
        ])
        .await;
    assert_eq!(run.code, 2, "{run}");

    // --wait over the selector: done only when both clusters are.
    let waiting = tokio::spawn({
        let url = h.url.clone();
        let args = [
            "apply",
            "-f",
            &file,
            "--cluster-selector",
            "env=ci",
            "--name",
            "web",
            "--wait",
            "--for",
            "Applied",
            "--timeout",
            "100s",
        ]
        .map(String::from);
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args, &[("HUB_SERVER", &url), ("HUB_TOKEN", TOKEN)]).await
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    h.status(
        "a1",
        "web",
        json!({"conditions": [condition("Applied", "True", 1)]}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!waiting.is_finished(), "done before a2 was");
    h.status(
        "a2",
        "web",
        json!({"conditions": [condition("Applied", "True", 1)]}),
    )
    .await;
    let run = waiting.await.unwrap();
    assert_eq!(run.code, 0, "{run}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&"manifestwork.work.open-cluster-management.io/web unchanged (cluster a1)"),
        "{run}"
    );
    assert!(
        lines.contains(&"cluster a1: Applied (generation 1)"),
        "{run}"
    );
    assert!(
        lines.contains(&"cluster a2: Applied (generation 1)"),
        "{run}"
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("manifestwork \"web\" Applied on 2 of 2 clusters after "),
        "{run}"
    ); // The summary the curl + jq example of docs/ci.md reads says the same.
    let summary = h
        .client
        .summary(Some("web"), &api::ListOptions::default())
        .await
        .unwrap();
    let s = &summary.value.items[0];
    assert_eq!(
        (s.name.as_str(), s.clusters, s.applied, s.degraded),
        ("web", 2, 2, 0)
    );
    assert!(summary.index > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_exits_like_kubectl_and_hides_secret_data() {
    let h = InProcessHub::start().await;
    h.joined_cluster("c1", &[("env", "ci")]).await;
    let secret = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cfg, namespace: ns}}\ndata: {{v: '1'}}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {{name: s, namespace: ns}}\nstringData: {{password: {v}}}\n"
        )
    };
    let file = h.write("app.yaml", &secret("first-s3cret"));
    // Nothing on the hub yet: everything would be created.
    let run = diff(&h, &file).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout
            .starts_with("diff manifestwork app (cluster c1) (new: the hub has no such work)\n"),
        "{run}"
    );
    assert!(
        run.stdout.contains("  + added    v1/ConfigMap ns/cfg\n"),
        "{run}"
    );
    assert!(
        run.stdout.contains("  + added    v1/Secret ns/s\n"),
        "{run}"
    );
    assert!(!run.stdout.contains("first-s3cret"), "{run}");
    let run = h
        .cli(&[
            "apply",
            "-f",
            &file,
            "--cluster",
            "c1",
            "--name",
            "app",
            "-q",
        ])
        .await;
    assert_eq!(run.code, 0, "{run}");
    let run = diff(&h, &file).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run}");
    // A new secret value: a difference, shown only as hashes.
    let changed = h.write("changed.yaml", &secret("second-s3cret"));
    let run = diff(&h, &changed).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains("  ~ changed  v1/Secret ns/s\n"),
        "{run}"
    );
    for sign in ['-', '+'] {
        assert!(
            run.stdout.lines().any(|l| l.starts_with(sign)
                && l.trim_start_matches(sign)
                    .trim()
                    .starts_with("password: hmac-sha256:")),
            "{run}"
        );
    }

    assert!(!run.stdout.contains("s3cret"), "{run}");
    let run = h
        .cli(&[
            "diff",
            "-f",
            &changed,
            "--cluster",
            "c1",
            "--name",
            "app",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(run.code, 1, "{run}");
    let doc = run.document();
    assert_eq!(doc["kind"], "DiffResult");
    assert_eq!(doc["differences"], true);
    let r = &doc["results"][0];
    assert_eq!(r["status"], "changed");
    assert_eq!(
        r["manifests"]["changed"],
        json!([{"apiVersion": "v1", "kind": "Secret", "namespace": "ns", "name": "s"}])
    );
    assert_eq!(r["manifests"]["added"], json!([]));
    assert!(!run.stdout.contains("s3cret"), "{run}");

    // A CI token without the `secrets` verb reads keyed placeholders it cannot compute;
    // diff has the hub mask the local values (a dry run) and still tells same from changed.
    let ci = h
        .client
        .create_token(&api::TokenRequest {
            kind: api::TokenKind::Api,
            clusters: vec!["c1".into()],
            verbs: vec![api::Verb::Read, api::Verb::Write],
            ..Default::default()
        })
        .await
        .unwrap()
        .token
        .unwrap();
    let masked_diff = |file: String| {
        let (url, ci) = (h.url.clone(), ci.clone());
        async move {
            cli(
                &["diff", "-f", &file, "--cluster", "c1", "--name", "app"],
                &[("HUB_SERVER", &url), ("HUB_TOKEN", &ci)],
            )
            .await
        }
    };
    let run = masked_diff(file.clone()).await;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run}");
    let run = masked_diff(changed.clone()).await;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stdout.contains("  ~ changed  v1/Secret ns/s\n"),
        "{run}"
    );
    assert!(!run.stdout.contains("s3cret"), "{run}");

    // Errors are more than 1: a selector matching nothing (2), bad input (2), no hub (4).
    let run = h
        .cli(&[
            "diff",
            "-f",
            &file,
            "--cluster-selector",
            "env=none",
            "--name",
            "app",
        ])
        .await;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("no cluster matches"), "{run}");
    let bad = h.write("bad.yaml", "a: [1, 2\n");
    let run = h
        .cli(&["diff", "-f", &bad, "--cluster", "c1", "--name", "app"])
        .await;
    assert_eq!(run.code, 2, "{run}");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let run = cli(
        &["diff", "-f", &file, "--cluster", "c1", "--name", "app"],
        &[("HUB_SERVER", &closed), ("HUB_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(run.code, 4, "{run}");
    // The same hub unreachable when a wait starts: 4 (during a wait it is retried).
    let run = cli(
        &["wait", "work", "app", "--cluster", "c1", "--timeout", "5s"],
        &[("HUB_SERVER", &closed), ("HUB_TOKEN", TOKEN)],
    )
    .await;
    assert_eq!(run.code, 4, "{run}");
    assert!(run.stderr.contains("cannot reach the hub"), "{run}");
}

async fn diff(h: &InProcessHub, file: &str) -> Run {
    h.cli(&["diff", "-f", file, "--cluster", "c1", "--name", "app"])
        .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_status_feedback_and_history() {
    let h = InProcessHub::start().await;
    h.joined_cluster("c1", &[("env", "ci")]).await;
    h.put("c1", "web", vec![cm("a", "1")]).await;
    h.status(
        "c1",
        "web",
        json!({
            "conditions": [condition("Applied", "True", 1), condition("Ready", "True", 1)],
            "resourceStatus": {"manifests": [{
                "resourceMeta": {"ordinal": 0, "version": "v1", "kind": "ConfigMap", "resource": "configmaps", "namespace": "ns", "name": "a"},
                "conditions": [condition("Applied", "True", 1), condition("Ready", "True", 1)],
                "statusFeedback": {"values": [{"name": "keys", "fieldValue": {"type": "Integer", "integer": 1}}]}
            }]}
        }),
    )
    .await;
    let run = h.cli(&["describe", "work", "web", "--cluster", "c1"]).await;
    assert_eq!(run.code, 0, "{run}");
    for want in [
        "Name:             web\n",
        "Cluster:          c1\n",
        "Generation:       1\n",
        "ConfigMap   ns/a",
        "ConfigMap ns/a: keys=1",
        "Recent changes:",
        "admin   work.put",
    ] {
        assert!(run.stdout.contains(want), "missing {want:?}: {run}");
    }
    let run = h
        .cli(&["describe", "work", "web", "--cluster", "c1", "-o", "json"])
        .await;
    let doc = run.document();
    assert_eq!(doc["kind"], "WorkDescription");
    assert_eq!(doc["work"]["metadata"]["name"], "web");
    assert_eq!(doc["recentChanges"][0]["action"], "work.put");

    // DESIGN.md: a work's own history is for anyone who may read the work, not only
    // admins; a token scoped elsewhere gets 403 and exit 4.
    let token = |clusters: &[&str]| {
        let req = api::TokenRequest {
            kind: api::TokenKind::Api,
            clusters: clusters.iter().map(|c| c.to_string()).collect(),
            verbs: vec![api::Verb::Read],
            ..Default::default()
        };
        let client = h.client.clone();
        async move { client.create_token(&req).await.unwrap().token.unwrap() }
    };
    let reader = token(&["c1"]).await;
    let run = cli(
        &["describe", "work", "web", "--cluster", "c1", "-o", "json"],
        &[("HUB_SERVER", &h.url), ("HUB_TOKEN", &reader)],
    )
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(
        run.document()["recentChanges"][0]["actor"],
        "admin",
        "{run}"
    );
    let outsider = token(&["c2"]).await;
    let run = cli(
        &["describe", "work", "web", "--cluster", "c1"],
        &[("HUB_SERVER", &h.url), ("HUB_TOKEN", &outsider)],
    )
    .await;
    assert_eq!(run.code, 4, "{run}");
    assert!(run.stderr.contains("may not read"), "{run}");
    let history = h.client.work_history("c1", "web", Some(0)).await.unwrap();
    assert!(history.items.is_empty(), "limit=0 gives none: {history:?}");

    let run = h.cli(&["describe", "cluster", "c1"]).await;
    assert_eq!(run.code, 0, "{run}");
    for want in [
        "Name:             c1\n",
        "Labels:           env=ci\n",
        "Works:            1 (1 applied, 1 ready, 0 degraded)\n",
        "ManagedClusterConditionAvailable   True",
    ] {
        assert!(run.stdout.contains(want), "missing {want:?}: {run}");
    }
    let run = h.cli(&["describe", "cluster", "c1", "-o", "yaml"]).await;
    assert_eq!(run.code, 0, "{run}");
    let doc: Value = serde_saphyr::from_str(&run.stdout).unwrap();
    assert_eq!(doc["kind"], "ClusterDescription");
    assert_eq!(doc["works"]["total"], 1);
    assert!(doc["leaseAgeSeconds"].is_number(), "{run}");
    let run = h
        .cli(&["describe", "work", "nope", "--cluster", "c1"])
        .await;
    assert_eq!(run.code, 1, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_scripts_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef hub"),
        ("fish", "complete -c hub"),
    ] {
        let run = cli(&["completion", shell], &[]).await;
        assert_eq!(run.code, 0, "{run}");
        assert!(run.stdout.contains(marker), "{shell}: {run}");
        for verb in ["apply", "wait", "diff", "describe", "serve"] {
            assert!(run.stdout.contains(verb), "{shell} lacks {verb}");
        }
    }
    let run = cli(&["completion", "tcsh"], &[]).await;
    assert_eq!(run.code, 2, "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_label_and_revoke_print_documents_and_keep_quiet() {
    let h = InProcessHub::start().await;
    h.joined_cluster("c1", &[]).await;
    h.put("c1", "web", vec![cm("a", "1")]).await;
    // The agent's finalizer keeps it: a DeleteResult with the timeout and what is pending.
    let run = h
        .cli(&[
            "delete",
            "work",
            "web",
            "--cluster",
            "c1",
            "--timeout",
            "1s",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(run.code, 3, "{run}");
    let doc = run.document();
    assert_eq!(doc["kind"], "DeleteResult");
    assert_eq!(doc["status"], "timeout");
    assert_eq!(doc["results"][0]["kind"], "ManifestWork");
    assert_eq!(doc["results"][0]["cluster"], "c1");
    assert_eq!(doc["results"][0]["status"], "timeout");
    assert!(
        doc["results"][0]["pending"]
            .as_str()
            .unwrap()
            .contains("klusterlet/cleanup")
    );
    h.hub
        .remove_work_finalizer("c1", "web", api::CLEANUP_FINALIZER)
        .await
        .unwrap();
    let run = h
        .cli(&["delete", "work", "web", "--cluster", "c1", "-o", "yaml"])
        .await;
    assert_eq!(run.code, 1, "gone already: {run}");
    h.put("c1", "quiet", vec![cm("q", "1")]).await;
    let run = h
        .cli(&[
            "delete",
            "work",
            "quiet",
            "--cluster",
            "c1",
            "--wait=false",
            "--quiet",
        ])
        .await;
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{run}");

    let run = h
        .cli(&["label", "cluster", "c1", "env=ci", "-o", "json"])
        .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.document()["metadata"]["labels"]["env"], "ci");
    let run = h.cli(&["revoke", "cluster", "c1", "-o", "json"]).await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.document()["spec"]["hubAcceptsClient"], false);
}
