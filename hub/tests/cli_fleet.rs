//! The fleet nouns of the `hub` CLI as a user runs them: Placements and
//! ManifestWorkReplicaSets applied, listed, described, previewed, waited for and deleted,
//! with the real binary against a real `hub serve` (its placement and set controllers
//! included), asserting on stdout, stderr and exit codes. Clusters have no agents here;
//! the test that needs an agent's reports drives an in-process hub's service instead.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::fleet::{ManifestWorkReplicaSet, Placement};
use api::{ClientConfig, HubClient, ListOptions, ManagedCluster, ManifestWorkStatus};
use common::{Cli, HubServe, Run};
use serde_json::{Value, json};

const PLACEMENT: &str = "placement.cluster.open-cluster-management.io";
const SET: &str = "manifestworkreplicaset.work.open-cluster-management.io";

/// A Placement choosing the clusters labelled `env=<env>`.
fn placement_yaml(name: &str, env: &str) -> String {
    format!(
        "apiVersion: cluster.open-cluster-management.io/v1beta1
kind: Placement
metadata:
  name: {name}
spec:
  predicates:
  - requiredClusterSelector:
      labelSelector:
        matchLabels: {{env: {env}}}
"
    )
}

/// A set of one ConfigMap over the placement `placement`.
fn set_yaml(name: &str, placement: &str, data: &str) -> String {
    format!(
        "apiVersion: work.open-cluster-management.io/v1alpha1
kind: ManifestWorkReplicaSet
metadata:
  name: {name}
spec:
  placementRefs:
  - name: {placement}
  manifestWorkTemplate:
    workload:
      manifests:
      - apiVersion: v1
        kind: ConfigMap
        metadata: {{name: {name}, namespace: default}}
        data: {{k: {data}}}
"
    )
}

/// Polls `check` every 100 ms until it holds, for at most 20 s (the controllers are woken
/// by the change feed, so this takes well under a second when things work).
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Registers a cluster the hub accepts (no agent), with these labels.
async fn accepted_cluster(client: &HubClient, name: &str, labels: &[(&str, &str)]) {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut cluster = ManagedCluster::new(name, labels);
    cluster.spec.hub_accepts_client = true;
    client.put_cluster(&cluster).await.unwrap();
}

async fn selected(client: &HubClient, ns: &str, name: &str) -> i32 {
    client
        .get_placement(ns, name, &ListOptions::default())
        .await
        .map(|p| p.value.status.number_of_selected_clusters)
        .unwrap_or(-1)
}

async fn set_total(client: &HubClient, ns: &str, name: &str) -> i32 {
    client
        .get_set(ns, name, &ListOptions::default())
        .await
        .map(|s| s.value.status.summary.total)
        .unwrap_or(-1)
}

/// The cells of the first line of `text` whose first cell is `first` (indented tables too).
fn row(text: &str, first: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cells| cells.first().map(String::as_str) == Some(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_describe_and_delete_placements_and_sets() {
    let hub = HubServe::start().await;
    let client = hub.client();
    accepted_cluster(&client, "c1", &[("env", "prod")]).await;
    accepted_cluster(&client, "c2", &[("env", "prod")]).await;
    accepted_cluster(&client, "c3", &[("env", "dev")]).await;

    // One file, both kinds, no --cluster: created, then unchanged, then configured.
    let file = hub.write(
        "fleet.yaml",
        &format!(
            "{}---\n{}",
            placement_yaml("prod", "prod"),
            set_yaml("web", "prod", "v1")
        ),
    );
    let f = file.to_str().unwrap();
    assert_eq!(
        hub.cli(&["apply", "-f", f]).await.ok(),
        format!("{PLACEMENT}/prod created\n{SET}/web created\n")
    );
    assert_eq!(
        hub.cli(&["apply", "-f", f]).await.ok(),
        format!("{PLACEMENT}/prod unchanged\n{SET}/web unchanged\n")
    );
    hub.write(
        "fleet.yaml",
        &format!(
            "{}---\n{}",
            placement_yaml("prod", "prod"),
            set_yaml("web", "prod", "v2")
        ),
    );
    assert_eq!(
        hub.cli(&["apply", "-f", f]).await.ok(),
        format!("{PLACEMENT}/prod unchanged\n{SET}/web configured\n")
    );
    // -n puts a document without a namespace elsewhere; a namespace that disagrees with
    // -n is a usage error and nothing is sent.
    let other = hub.write("other.yaml", &placement_yaml("dev", "dev"));
    let o = other.to_str().unwrap();
    hub.cli(&["apply", "-f", o, "-n", "team-a"]).await.ok();
    let clash = hub.write(
        "clash.yaml",
        &placement_yaml("x", "dev").replace("  name: x\n", "  name: x\n  namespace: team-b\n"),
    );
    let err = hub
        .cli(&["apply", "-f", clash.to_str().unwrap(), "-n", "team-a"])
        .await;
    assert!(err.fails(2).contains("does not match --namespace"), "{err}");
    // Works still need a cluster.
    let cm = hub.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    );
    let err = hub
        .cli(&["apply", "-f", cm.to_str().unwrap(), "--name", "w"])
        .await;
    assert!(err.fails(2).contains("--cluster"), "{err}");

    eventually("placement prod selects c1 and c2", || async {
        selected(&client, "default", "prod").await == 2
    })
    .await;
    eventually("set web keeps two works", || async {
        set_total(&client, "default", "web").await == 2
    })
    .await;

    // get placements: OCM's columns; -A adds the namespace.
    let run = hub.cli(&["get", "placements"]).await;
    assert_eq!(
        run.table()[0],
        ["NAME", "SUCCEEDED", "REASON", "SELECTEDCLUSTERS", "AGE"]
    );
    let prod = run.row("prod");
    assert_eq!((prod[1].as_str(), prod[3].as_str()), ("True", "2"), "{run}");
    let run = hub.cli(&["get", "placements", "-A"]).await;
    assert_eq!(run.table()[0][0], "NAMESPACE");
    assert_eq!(run.row("team-a")[1], "dev");
    assert_eq!(run.row("default")[1], "prod");
    let run = hub.cli(&["get", "placement", "prod", "-o", "name"]).await;
    assert_eq!(run.ok(), "placement/prod\n");
    let json = hub
        .cli(&["get", "placement", "prod", "-o", "json"])
        .await
        .json();
    assert_eq!(
        json,
        hub.api_get("/api/v1/namespaces/default/placements/prod")
            .await
    );
    let run = hub.cli(&["get", "placements", "-n", "nowhere"]).await;
    assert_eq!(run.ok(), "");
    assert_eq!(run.stderr, "No resources found in nowhere namespace.\n");
    let err = hub.cli(&["get", "placement", "missing"]).await;
    assert!(err.fails(1).contains("NotFound"), "{err}");

    // get decisions: one row per decided cluster.
    let run = hub.cli(&["get", "decisions", "prod"]).await;
    let table = run.table();
    assert_eq!(table[0], ["NAME", "GROUP", "CLUSTER"]);
    let mut clusters: Vec<&str> = table[1..].iter().map(|r| r[2].as_str()).collect();
    clusters.sort();
    assert_eq!(clusters, ["c1", "c2"], "{run}");
    let doc = hub
        .cli(&["get", "decisions", "prod", "-o", "json"])
        .await
        .json();
    assert_eq!(doc["kind"], "PlacementDecisionList");
    assert_eq!(
        doc["apiVersion"],
        "cluster.open-cluster-management.io/v1beta1"
    );

    // get mwrs: the reasons and the summary.
    let run = hub.cli(&["get", "mwrs"]).await;
    assert_eq!(
        run.table()[0],
        [
            "NAME",
            "PLACEMENT",
            "FOUND",
            "TOTAL",
            "APPLIED",
            "AVAILABLE",
            "AGE"
        ]
    );
    let web = run.row("web");
    assert_eq!(web[3], "2", "{run}");
    // Without agents nothing is applied.
    assert_eq!((web[4].as_str(), web[5].as_str()), ("0", "0"), "{run}");
    let run = hub
        .cli(&[
            "get",
            "manifestworkreplicasets",
            "web",
            "-o",
            "jsonpath={.spec.placementRefs[0].name}",
        ])
        .await;
    assert_eq!(run.ok(), "prod");
    // The works the set keeps, one per decided cluster, named after it.
    let run = hub.cli(&["get", "works", "-A"]).await;
    let mut holders: Vec<String> = run
        .table()
        .into_iter()
        .filter(|r| r.get(1).map(String::as_str) == Some("web"))
        .map(|r| r[0].clone())
        .collect();
    holders.sort();
    assert_eq!(holders, ["c1", "c2"], "{run}");

    // describe placement: every cluster, chosen or not, and why.
    let run = hub.cli(&["describe", "placement", "prod"]).await;
    let text = run.ok();
    assert!(text.contains("Selected:         2\n"), "{text}");
    assert!(text.contains("PlacementSatisfied"), "{text}");
    let header = row(text, "CLUSTER");
    assert_eq!(header, ["CLUSTER", "SELECTED", "SCORE", "GROUP", "WHY"]);
    assert_eq!(row(text, "c1")[1], "yes");
    assert_eq!(row(text, "c2")[1], "yes");
    let c3 = row(text, "c3");
    assert_eq!(c3[1], "filtered", "{text}");
    assert!(c3.len() > 4, "c3 says why it was not chosen: {text}");
    let doc = hub
        .cli(&["describe", "placement", "prod", "-o", "json"])
        .await
        .json();
    assert_eq!(doc["kind"], "PlacementDescription");
    assert_eq!(doc["explanation"]["clusters"].as_array().unwrap().len(), 3);

    // describe mwrs: the per-cluster table.
    let run = hub.cli(&["describe", "mwrs", "web"]).await;
    let text = run.ok();
    assert_eq!(
        row(text, "CLUSTER"),
        [
            "CLUSTER",
            "PLACEMENT",
            "REPLICAS",
            "APPLIED",
            "AVAILABLE",
            "MESSAGE"
        ]
    );
    assert_eq!(row(text, "c1")[1], "prod", "{text}");
    assert!(
        text.contains("Placements:       prod (rollout All)"),
        "{text}"
    );

    // wait: nothing applies without agents, so the timeout runs out (exit 3) saying why;
    // a set that does not exist is refused (exit 1).
    let run = hub
        .cli(&["wait", "mwrs", "web", "--for", "Applied", "--timeout", "1s"])
        .await;
    assert!(
        run.fails(3).contains(
            "timed out after 1s waiting for manifestworkreplicaset \"web\" (namespace default) to be Applied"
        ),
        "{run}"
    );
    assert!(run.took < Duration::from_secs(15), "{run}");
    let run = hub.cli(&["wait", "mwrs", "nope", "--timeout", "1s"]).await;
    assert!(run.fails(1).contains("not found"), "{run}");

    // delete: the set (its works go with it: Background), then the placement.
    let run = hub
        .cli(&["delete", "mwrs", "web", "--timeout", "30s"])
        .await;
    assert_eq!(
        run.ok(),
        format!("{SET} \"web\" deleted (namespace default)\n")
    );
    let err = hub.cli(&["get", "mwrs", "web"]).await;
    assert!(err.fails(1).contains("NotFound"), "{err}");
    eventually("the set's works are gone", || async {
        client
            .list_works(None, &ListOptions::default())
            .await
            .is_ok_and(|l| l.value.items.iter().all(|w| w.metadata.name != "web"))
    })
    .await;
    let run = hub
        .cli(&["delete", "placement", "dev", "-n", "team-a"])
        .await;
    assert_eq!(
        run.ok(),
        format!("{PLACEMENT} \"dev\" deleted (namespace team-a)\n")
    );
    let err = hub
        .cli(&["delete", "placement", "dev", "-n", "team-a"])
        .await;
    assert!(err.fails(1).contains("NotFound"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_answers_without_storing_and_names_bad_fields() {
    let hub = HubServe::start().await;
    accepted_cluster(&hub.client(), "c1", &[("env", "prod")]).await;
    accepted_cluster(&hub.client(), "c2", &[("env", "dev")]).await;

    let file = hub.write("dev.yaml", &placement_yaml("try", "dev"));
    let f = file.to_str().unwrap();
    let run = hub.cli(&["placement", "preview", "-f", f]).await;
    let text = run.ok();
    assert!(text.contains("Selected:         1\n"), "{text}");
    assert_eq!(row(text, "c2")[1], "yes", "{text}");
    assert_eq!(row(text, "c1")[1], "filtered", "{text}");
    let doc = hub
        .cli(&["placement", "preview", "-f", f, "-o", "json"])
        .await
        .json();
    let chosen: Vec<&str> = doc["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["selected"] == true)
        .map(|c| c["clusterName"].as_str().unwrap())
        .collect();
    assert_eq!(chosen, ["c2"]);
    // Nothing was stored.
    let err = hub.cli(&["get", "placement", "try"]).await;
    assert!(err.fails(1).contains("NotFound"), "{err}");
    // From stdin too.
    let run = Cli::new(&["placement", "preview", "-f", "-", "-o", "yaml"])
        .env("HUB_CONFIG", hub.config_path().to_str().unwrap())
        .stdin(&placement_yaml("try", "prod"))
        .run()
        .await;
    assert!(run.ok().contains("clusterName: c1"), "{run}");

    // A bad selector operator: the hub refuses (exit 1) naming the field.
    let bad = hub.write(
        "bad.yaml",
        "apiVersion: cluster.open-cluster-management.io/v1beta1
kind: Placement
metadata: {name: bad}
spec:
  predicates:
  - requiredClusterSelector:
      labelSelector:
        matchExpressions: [{key: env, operator: Near, values: [prod]}]
",
    );
    let run = hub
        .cli(&["placement", "preview", "-f", bad.to_str().unwrap()])
        .await;
    let err = run.fails(1);
    assert!(err.contains("Invalid"), "{run}");
    assert!(
        err.contains("spec.predicates[0].requiredClusterSelector.labelSelector"),
        "{run}"
    );
    // Not a Placement, or several documents: usage errors before anything is sent.
    let two = hub.write(
        "two.yaml",
        &format!(
            "{}---\n{}",
            placement_yaml("a", "x"),
            placement_yaml("b", "y")
        ),
    );
    let run = hub
        .cli(&["placement", "preview", "-f", two.to_str().unwrap()])
        .await;
    assert!(run.fails(2).contains("exactly one Placement"), "{run}");
    let cm = hub.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    );
    let run = hub
        .cli(&["placement", "preview", "-f", cm.to_str().unwrap()])
        .await;
    assert!(run.fails(2).contains("not a Placement"), "{run}");
}

const TOKEN: &str = "cli-fleet-admin-token";

/// An in-process hub over plain HTTP whose service the test drives to play the agents
/// (joined clusters, works' status), with the CLI run against it.
struct InProcessHub {
    hub: Arc<hub::service::Hub>,
    url: String,
    client: HubClient,
    _dir: tempfile::TempDir,
}

impl InProcessHub {
    async fn start() -> InProcessHub {
        common::init();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = hub::store::connect(&url).await.unwrap();
        let service = hub::service::Hub::start(store.clone()).await.unwrap();
        // As `hub serve` does: lease expiry, placement and set controllers.
        hub::controllers::start(&service);
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
        tokio::spawn(async move { axum::serve(listener, hub::http::router(state)).await });
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
            _dir: dir,
        }
    }

    /// A cluster whose agent joined and renews its lease.
    async fn joined_cluster(&self, name: &str, labels: &[(&str, &str)]) {
        accepted_cluster(&self.client, name, labels).await;
        self.hub.mark_cluster_joined(name).await.unwrap();
        self.hub
            .renew_lease(name, &api::LeaseRenewal::default())
            .await
            .unwrap();
    }

    /// Reports the work `name` on `cluster` as its agent would, at its current generation.
    async fn report(&self, cluster: &str, name: &str, conditions: &[(&str, &str)]) {
        let work = self
            .client
            .get_work(cluster, name, &ListOptions::default())
            .await
            .unwrap()
            .value;
        let generation = work.metadata.generation.unwrap_or(1);
        let conditions: Vec<Value> = conditions
            .iter()
            .map(|(t, s)| json!({"type": t, "status": s, "reason": "Test", "observedGeneration": generation}))
            .collect();
        let status: ManifestWorkStatus =
            serde_json::from_value(json!({ "conditions": conditions })).unwrap();
        self.hub
            .put_work_status(cluster, name, status)
            .await
            .unwrap();
    }

    fn cli(&self, args: &[&str]) -> Cli {
        Cli::new(args)
            .env("HUB_SERVER", &self.url)
            .env("HUB_TOKEN", TOKEN)
    }
}

const READY: [(&str, &str); 3] = [
    ("Applied", "True"),
    ("Available", "True"),
    ("Ready", "True"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_mwrs_exits_0_when_every_work_is_ready_and_1_when_one_degrades() {
    let h = InProcessHub::start().await;
    h.joined_cluster("c1", &[("env", "prod")]).await;
    h.joined_cluster("c2", &[("env", "prod")]).await;
    let placement: Placement = serde_saphyr::from_str(&placement_yaml("prod", "prod")).unwrap();
    h.client.put_placement("default", &placement).await.unwrap();
    let set: ManifestWorkReplicaSet =
        serde_saphyr::from_str(&set_yaml("web", "prod", "v1")).unwrap();
    h.client.put_set("default", &set).await.unwrap();
    let client = h.client.clone();
    eventually("the set keeps two works", || async {
        set_total(&client, "default", "web").await == 2
    })
    .await;

    // One cluster reports Ready; the wait blocks until the other does, then exits 0.
    h.report("c1", "web", &READY).await;
    let waiting = tokio::spawn(
        h.cli(&["wait", "mwrs", "web", "--for", "Ready", "--timeout", "60s"])
            .run(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reported = Instant::now();
    h.report("c2", "web", &READY).await;
    let run: Run = waiting.await.unwrap();
    let out = run.ok();
    assert!(reported.elapsed() < Duration::from_secs(10), "{run}");
    assert!(
        out.contains("cluster c1: Applied=True Available=True Ready=True"),
        "{run}"
    );
    assert!(
        out.contains("manifestworkreplicaset \"web\" (namespace default) Ready"),
        "{run}"
    );

    // `apply --wait` of the set: unchanged, and already Ready.
    let file = h._dir.path().join("set.yaml");
    std::fs::write(&file, set_yaml("web", "prod", "v1")).unwrap();
    let run = h
        .cli(&[
            "apply",
            "-f",
            file.to_str().unwrap(),
            "--wait",
            "--timeout",
            "30s",
        ])
        .run()
        .await;
    let out = run.ok();
    assert!(out.starts_with(&format!("{SET}/web unchanged\n")), "{run}");
    assert!(
        out.contains("  cluster c2: Applied=True Available=True Ready=True\n"),
        "{run}"
    );
    assert!(
        out.ends_with("manifestworkreplicaset \"web\" (namespace default) Ready\n"),
        "{run}"
    );

    // A Degraded work fails the wait at once, naming the cluster.
    h.report("c2", "web", &[("Applied", "True"), ("Degraded", "True")])
        .await;
    let run = h
        .cli(&[
            "wait",
            "mwrs",
            "web",
            "--for",
            "Available",
            "--timeout",
            "60s",
            "-o",
            "json",
        ])
        .run()
        .await;
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("Degraded on cluster c2"), "{run}");
    assert!(run.took < Duration::from_secs(20), "{run}");
    let doc = run.document();
    assert_eq!(doc["kind"], "SetWaitResult");
    assert_eq!(doc["status"], "failed");

    // --for delete: met once the set is gone.
    let waiting = tokio::spawn(
        h.cli(&["wait", "mwrs", "web", "--for", "delete", "--timeout", "60s"])
            .run(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.client.delete_set("default", "web").await.unwrap();
    let run = waiting.await.unwrap();
    assert!(run.ok().contains("deleted"), "{run}");
}
