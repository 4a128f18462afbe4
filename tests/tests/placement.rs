//! Fleet placement end to end (issue 17), with real processes only: `hub serve` (SQLite,
//! or two hubs on one Postgres), and for the work itself three full managed clusters
//! (kube-apiserver, controller-manager, scheduler and a KWOK node each) with a `klusterlet`
//! each.
//!
//! * Decisions alone, on clusters an admin created with labels (no agents): selection by
//!   label, expression, CEL and cluster set; `numberOfClusters: 1` keeps its pick when
//!   another cluster becomes better scored; a spread over two zones; decision groups; a
//!   relabelled cluster leaving the decisions (seen through a blocking GET, not a poll);
//!   explain and preview giving every cluster its reasons; bad placements refused with
//!   field paths; a set waiting for its missing placement and owning its works.
//! * One set over three full clusters: a replica split of 10 weighted 2:1:1, an override
//!   on one cluster's ConfigMap, a relabel moving the work, `hub wait mwrs`, failover of a
//!   frozen agent's cluster, and the Orphan and Background cascade policies.
//! * A scoped token's set never reaches a cluster outside its scope.
//! * Two hubs on one Postgres: `kill -9` the one running the controllers; the other takes
//!   over and a relabel still moves the decisions.
//!
//! Deadlines are generous bounds on something that must become true; waits on the hub are
//! blocking GETs (`?index=N&wait=`), never fixed sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use api::fleet::{
    ManifestWorkReplicaSet, PlacementExplanation, SET_LABEL, TAINT_UNREACHABLE, conditions,
};
use api::{HubClient, ListOptions, ManagedCluster, ManifestWork, TokenKind, TokenRequest, Verb};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use kube::api::Api;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::cluster::{ClusterOptions, TestCluster};
use testkit::postgres::TestPostgres;
use testkit::procs::{HubProcess, binary};

/// A generous bound on anything that must become true (a decision, an agent acting).
const DEADLINE: Duration = Duration::from_secs(90);

/// How long one blocking GET waits for a change.
const BLOCK: &str = "20s";

/// The namespace the placements and sets of these tests live in.
const NS: &str = "apps";

fn init() {
    // kube's rustls and the hub's both link ring and aws-lc-rs; pick one for the process.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The last `n` lines of a log, for failure messages.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn placement_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/placements/{name}")
}

fn set_path(ns: &str, name: &str) -> String {
    format!("/api/v1/namespaces/{ns}/manifestworkreplicasets/{name}")
}

/// A Placement document as an OCM user writes it.
fn placement(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "cluster.open-cluster-management.io/v1beta1",
        "kind": "Placement",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
}

/// A ManifestWorkReplicaSet document.
fn set(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "work.open-cluster-management.io/v1alpha1",
        "kind": "ManifestWorkReplicaSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    })
}

/// A placement whose only predicate is these labels.
fn by_labels(labels: Value) -> Value {
    json!({"predicates": [{"requiredClusterSelector": {"labelSelector": {"matchLabels": labels}}}]})
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// What the hub answered.
#[derive(Debug)]
struct Answer {
    what: String,
    status: StatusCode,
    body: Value,
    index: u64,
}

impl Answer {
    /// Asserts a 2xx and returns the answer.
    fn ok(self) -> Answer {
        assert!(self.status.is_success(), "{} answered {self:#?}", self.what);
        self
    }

    /// The field paths of a 422's details.
    fn fields(&self) -> Vec<String> {
        self.body["details"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["field"].as_str().map(str::to_string))
            .collect()
    }
}

/// A client of one hub, with that hub's log for failure messages.
#[derive(Clone)]
struct Client {
    http: HubClient,
    log: PathBuf,
}

impl Client {
    /// The admin client of a hub.
    fn admin(hub: &HubProcess) -> Client {
        Client {
            http: hub.client().expect("the hub's admin client"),
            log: hub.data_dir.join("hub.log"),
        }
    }

    /// The same hub with another bearer token.
    fn with_token(&self, token: &str) -> Client {
        Client {
            http: self.http.with_token(Some(token.to_string())),
            log: self.log.clone(),
        }
    }

    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 80)
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let what = format!("{method} {path}");
        let mut rb = self
            .http
            .request(method, path)
            .timeout(Duration::from_secs(120));
        if let Some(b) = body {
            rb = rb.json(b);
        }
        self.answer(what, rb).await
    }

    async fn answer(&self, what: String, rb: reqwest::RequestBuilder) -> Answer {
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}\nhub log:\n{}", self.log_tail()));
        let status = resp.status();
        let header_index = resp
            .headers()
            .get("x-hub-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let bytes = resp.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        let index = header_index
            .or_else(|| body["metadata"]["index"].as_u64())
            .unwrap_or(0);
        Answer {
            what,
            status,
            body,
            index,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }

    async fn put(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::PUT, path, Some(body)).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None).await
    }

    /// PUT of a YAML text, as `kubectl apply -f` users send it.
    async fn put_yaml(&self, path: &str, text: &str) -> Answer {
        let rb = self
            .http
            .request(Method::PUT, path)
            .header("content-type", "application/yaml")
            .body(text.to_string());
        self.answer(format!("PUT {path} (YAML)"), rb).await
    }

    /// A GET that blocks until what it returns changed past `index` (or `BLOCK` ran out).
    async fn get_after(&self, path: &str, index: Option<u64>) -> Answer {
        match index {
            None => self.get(path).await,
            Some(i) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                self.get(&format!("{path}{sep}index={i}&wait={BLOCK}"))
                    .await
            }
        }
    }

    /// Creates (or replaces) a cluster record with these labels, as an admin does for a
    /// cluster without an agent.
    async fn cluster(&self, name: &str, labels: &[(&str, &str)]) {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.http
            .put_cluster(&accepted(ManagedCluster::new(name, labels)))
            .await
            .unwrap_or_else(|e| panic!("PUT cluster {name}: {e}"));
    }

    /// Sets (`Some`) or removes (`None`) cluster labels.
    async fn label(&self, name: &str, changes: &[(&str, Option<&str>)]) {
        let changes = changes
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect();
        self.http
            .set_cluster_labels(name, &changes)
            .await
            .unwrap_or_else(|e| panic!("labelling cluster {name}: {e}"));
    }

    async fn put_placement(&self, name: &str, spec: Value) -> Answer {
        self.put(&placement_path(NS, name), &placement(name, spec))
            .await
            .ok()
    }

    async fn put_set(&self, name: &str, spec: Value) -> Answer {
        self.put(&set_path(NS, name), &set(name, spec)).await.ok()
    }

    /// The decided clusters of a placement (all its PlacementDecisions), the raw list and
    /// its index; with `index`, once they changed past it. A placement not decided yet
    /// (404) has none.
    async fn decisions(&self, name: &str, index: Option<u64>) -> (BTreeSet<String>, Answer) {
        let a = self
            .get_after(&format!("{}/decisions", placement_path(NS, name)), index)
            .await;
        if a.status == StatusCode::NOT_FOUND {
            return (BTreeSet::new(), a);
        }
        let a = a.ok();
        let decided = a.body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| {
                d["status"]["decisions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|d| d["clusterName"].as_str().map(str::to_string))
            .collect();
        (decided, a)
    }

    /// Waits (blocking GETs) until the placement's decisions satisfy `done`.
    async fn wait_decisions(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&BTreeSet<String>) -> bool,
    ) -> BTreeSet<String> {
        let deadline = Instant::now() + DEADLINE;
        let mut index = None;
        loop {
            let asked = Instant::now();
            let (decided, a) = self.decisions(name, index).await;
            if done(&decided) {
                return decided;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: placement {name} still decides {decided:?} after {DEADLINE:?}\n{:#}\nexplain: {:#}\nhub log:\n{}",
                a.body,
                self.get(&format!("{}/explain", placement_path(NS, name)))
                    .await
                    .body,
                self.log_tail()
            );
            pace(index, a.index, asked).await;
            index = Some(a.index);
        }
    }

    async fn explain(&self, name: &str) -> PlacementExplanation {
        let a = self
            .get(&format!("{}/explain", placement_path(NS, name)))
            .await
            .ok();
        serde_json::from_value(a.body.clone())
            .unwrap_or_else(|e| panic!("explain is not a PlacementExplanation ({e}): {a:#?}"))
    }

    /// The set and the index of the answer.
    async fn get_set(&self, name: &str, index: Option<u64>) -> (ManifestWorkReplicaSet, u64) {
        let a = self.get_after(&set_path(NS, name), index).await.ok();
        let s = serde_json::from_value(a.body.clone())
            .unwrap_or_else(|e| panic!("not a ManifestWorkReplicaSet ({e}): {a:#?}"));
        (s, a.index)
    }

    /// Waits (blocking GETs) until the set's status satisfies `done`.
    async fn wait_set(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&ManifestWorkReplicaSet) -> bool,
    ) -> ManifestWorkReplicaSet {
        let deadline = Instant::now() + DEADLINE;
        let mut index = None;
        loop {
            let asked = Instant::now();
            let (s, i) = self.get_set(name, index).await;
            if done(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: set {name} not there after {DEADLINE:?}: {:#}\nworks: {:#?}\nhub log:\n{}",
                serde_json::to_value(&s.status).unwrap_or_default(),
                self.set_works(name).await,
                self.log_tail()
            );
            pace(index, i, asked).await;
            index = Some(i);
        }
    }

    /// The works the set keeps, by cluster (found by the set's label).
    async fn set_works(&self, name: &str) -> BTreeMap<String, ManifestWork> {
        let opts = ListOptions {
            label_selector: Some(format!("{SET_LABEL}={NS}.{name}")),
            ..Default::default()
        };
        self.http
            .list_works(None, &opts)
            .await
            .unwrap_or_else(|e| panic!("listing the works of set {name}: {e}"))
            .value
            .items
            .into_iter()
            .map(|w| (w.metadata.namespace.clone().unwrap_or_default(), w))
            .collect()
    }

    /// Waits (blocking lists) until the set's works are on exactly these clusters, none of
    /// them being deleted.
    async fn wait_set_works(&self, name: &str, clusters: &BTreeSet<String>) {
        let deadline = Instant::now() + DEADLINE;
        let opts = |index| ListOptions {
            label_selector: Some(format!("{SET_LABEL}={NS}.{name}")),
            index,
            wait: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let mut index = None;
        loop {
            let asked = Instant::now();
            let list = self
                .http
                .list_works(None, &opts(index))
                .await
                .unwrap_or_else(|e| panic!("listing the works of set {name}: {e}"));
            let on: BTreeSet<String> = list
                .value
                .items
                .iter()
                .filter(|w| w.metadata.deletion_timestamp.is_none())
                .filter_map(|w| w.metadata.namespace.clone())
                .collect();
            let deleting = list
                .value
                .items
                .iter()
                .any(|w| w.metadata.deletion_timestamp.is_some());
            if &on == clusters && !deleting {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "set {name}'s works are on {on:?} (deleting: {deleting}), not {clusters:?}, after {DEADLINE:?}\nhub log:\n{}",
                self.log_tail()
            );
            let got = list.index.max(list.value.metadata.index);
            pace(index, got, asked).await;
            index = Some(got);
        }
    }
}

/// Keeps a wait loop from spinning when the hub answered a blocking GET at once without
/// anything new (the index did not move): that is a bug to report, not a reason to hammer
/// the hub.
async fn pace(asked_index: Option<u64>, got_index: u64, asked: Instant) {
    if asked_index == Some(got_index) && asked.elapsed() < Duration::from_millis(500) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The record as an admin creates it for a cluster without an agent: accepted, so
/// placements may choose it (only accepted clusters are eligible).
fn accepted(mut cluster: ManagedCluster) -> ManagedCluster {
    cluster.spec.hub_accepts_client = true;
    cluster
}

/// A hub on SQLite with ~1 s lease timings, and its admin client.
async fn hub(dir: &tempfile::TempDir) -> (HubProcess, Client) {
    init();
    let hub = HubProcess::start(
        &dir.path().join("hub"),
        &["--lease-interval", "1s", "--lease-grace", "3s"],
    )
    .await
    .expect("hub serve starts");
    let admin = Client::admin(&hub);
    (hub, admin)
}

/// The status of a set's condition, with its reason.
fn set_condition(s: &ManifestWorkReplicaSet, type_: &str) -> Option<(String, String)> {
    s.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

// ---------------------------------------------------------------------------------------
// Decisions, on clusters without agents.
// ---------------------------------------------------------------------------------------

/// Four clusters: two cluster sets, two zones, two environments.
async fn four_clusters(admin: &Client) {
    let set = api::fleet::CLUSTER_SET_LABEL;
    admin
        .cluster("a", &[("env", "prod"), ("zone", "east"), (set, "blue")])
        .await;
    admin
        .cluster("b", &[("env", "prod"), ("zone", "west"), (set, "blue")])
        .await;
    admin
        .cluster("c", &[("env", "dev"), ("zone", "east"), (set, "red")])
        .await;
    admin
        .cluster("d", &[("env", "dev"), ("zone", "west")])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_select_by_label_expression_cel_and_cluster_set() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    four_clusters(&admin).await;

    // An OCM user's YAML, unchanged.
    admin
        .put_yaml(
            &placement_path(NS, "prod"),
            "apiVersion: cluster.open-cluster-management.io/v1beta1
kind: Placement
metadata:
  name: prod
  namespace: apps
spec:
  predicates:
    - requiredClusterSelector:
        labelSelector:
          matchLabels:
            env: prod
",
        )
        .await
        .ok();
    admin
        .put_placement(
            "west",
            json!({"predicates": [{"requiredClusterSelector": {"labelSelector": {
                "matchExpressions": [{"key": "zone", "operator": "In", "values": ["west"]}]}}}]}),
        )
        .await;
    admin
        .put_placement(
            "dev-by-cel",
            json!({"predicates": [{"requiredClusterSelector": {"celSelector": {
                "celExpressions": ["managedCluster.metadata.labels[\"env\"] == \"dev\""]}}}]}),
        )
        .await;
    admin
        .put_placement("blue", json!({"clusterSets": ["blue"]}))
        .await;
    let mut red_dev = by_labels(json!({"env": "dev"}));
    red_dev["clusterSets"] = json!(["red"]);
    admin.put_placement("red-dev", red_dev).await;
    admin.put_placement("everything", json!({})).await;

    for (name, want) in [
        ("prod", names(&["a", "b"])),
        ("west", names(&["b", "d"])),
        ("dev-by-cel", names(&["c", "d"])),
        ("blue", names(&["a", "b"])),
        ("red-dev", names(&["c"])),
        ("everything", names(&["a", "b", "c", "d"])),
    ] {
        admin
            .wait_decisions(name, "selection", |d| d == &want)
            .await;
    }

    // The decisions read as OCM's: PlacementDecisions labelled with their placement; the
    // placement's status counts them and says it is satisfied.
    let (_, list) = admin.decisions("prod", None).await;
    for item in list.body["items"].as_array().unwrap() {
        assert_eq!(item["kind"], "PlacementDecision", "{item:#}");
        assert_eq!(
            item["apiVersion"], "cluster.open-cluster-management.io/v1beta1",
            "{item:#}"
        );
        assert_eq!(
            item["metadata"]["labels"][api::fleet::PLACEMENT_LABEL],
            "prod",
            "{item:#}"
        );
    }
    let p = admin.get(&placement_path(NS, "prod")).await.ok().body;
    assert_eq!(p["status"]["numberOfSelectedClusters"], 2, "{p:#}");
    assert!(
        p["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == conditions::PLACEMENT_SATISFIED && c["status"] == "True"),
        "{p:#}"
    );
    // Across namespaces the list has them all.
    let all = admin.get("/api/v1/placements").await.ok().body;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(6), "{all:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_cluster_with_the_default_policy_keeps_its_pick() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    for name in ["u1", "u2", "u3"] {
        admin.cluster(name, &[("role", "db")]).await;
    }
    admin
        .put_placement("unique", {
            let mut p = by_labels(json!({"role": "db"}));
            p["numberOfClusters"] = json!(1);
            p
        })
        .await;
    let first = admin
        .wait_decisions("unique", "one cluster decided", |d| d.len() == 1)
        .await;
    let chosen = first.iter().next().unwrap().clone();
    let mut unchosen = ["u1", "u2", "u3"].into_iter().filter(|c| *c != chosen);
    let (relabelled, better) = (unchosen.next().unwrap(), unchosen.next().unwrap());

    // Make the chosen cluster worse on Balance than `better`: another placement now
    // decides it alone.
    admin
        .put_placement(
            "pin",
            json!({"predicates": [{"requiredClusterSelector": {"celSelector": {
                "celExpressions": [format!("managedCluster.metadata.name == \"{chosen}\"")]}}}]}),
        )
        .await;
    admin
        .wait_decisions("pin", "the pin", |d| d == &names(&[&chosen]))
        .await;
    // Relabel an unchosen cluster, which re-evaluates every placement that selects it, and
    // make that visible through a placement that follows the new label.
    admin
        .put_placement("gold", by_labels(json!({"tier": "gold"})))
        .await;
    admin.label(relabelled, &[("tier", Some("gold"))]).await;
    admin
        .wait_decisions("gold", "the relabel seen", |d| d == &names(&[relabelled]))
        .await;

    let explained = admin.explain("unique").await;
    let balance = |c: &str| {
        explained
            .clusters
            .iter()
            .find(|e| e.cluster_name == c)
            .and_then(|e| e.scores.get("Balance").copied())
    };
    assert!(
        balance(better) > balance(&chosen),
        "{better} (decided by no other placement) scores better on Balance than {chosen}: {explained:#?}"
    );
    // The pick stays: a blocking GET sees no change, and the decision is still the first.
    let (now, a) = admin.decisions("unique", None).await;
    assert_eq!(
        now,
        first,
        "a still-qualifying cluster is not swapped\nexplain: {explained:#?}\nhub log:\n{}",
        admin.log_tail()
    );
    let (later, _) = admin.decisions("unique", Some(a.index)).await;
    assert_eq!(later, first, "a still-qualifying cluster is not swapped");
    assert!(
        explained
            .clusters
            .iter()
            .any(|e| e.cluster_name == chosen && e.selected),
        "{explained:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spread_over_two_zones_takes_one_cluster_from_each() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    // Name order alone would pick both eastern clusters.
    for (name, zone) in [
        ("s1", "east"),
        ("s2", "east"),
        ("s3", "west"),
        ("s4", "west"),
    ] {
        admin
            .cluster(name, &[("app", "spread"), ("zone", zone)])
            .await;
    }
    let mut spec = by_labels(json!({"app": "spread"}));
    spec["numberOfClusters"] = json!(2);
    spec["spreadPolicy"] = json!({"spreadConstraints": [
        {"topologyKey": "zone", "topologyKeyType": "Label", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}
    ]});
    admin.put_placement("spread", spec).await;
    let decided = admin
        .wait_decisions("spread", "two clusters", |d| d.len() == 2)
        .await;
    let east = decided
        .iter()
        .filter(|c| ["s1", "s2"].contains(&c.as_str()));
    assert_eq!(east.count(), 1, "one per zone: {decided:?}");
    let explained = admin.explain("spread").await;
    assert_eq!(explained.clusters.len(), 4, "{explained:#?}");
    for e in explained.clusters.iter().filter(|e| !e.selected) {
        assert!(
            !e.reasons.is_empty(),
            "an unchosen cluster says why: {e:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_groups_take_named_groups_first_then_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    for name in ["g1", "g2", "g3", "g4", "g5"] {
        let canary = if name == "g2" || name == "g4" {
            "true"
        } else {
            "false"
        };
        admin
            .cluster(name, &[("app", "groups"), ("canary", canary)])
            .await;
    }
    // By number, and by a percentage of the five decided clusters (40% = 2): the same.
    for (placement_name, per_group) in [("by-number", json!(2)), ("by-percent", json!("40%"))] {
        let mut spec = by_labels(json!({"app": "groups"}));
        spec["decisionStrategy"] = json!({"groupStrategy": {
            "decisionGroups": [{"groupName": "canary", "groupClusterSelector": {"labelSelector": {"matchLabels": {"canary": "true"}}}}],
            "clustersPerDecisionGroup": per_group,
        }});
        admin.put_placement(placement_name, spec).await;
        admin
            .wait_decisions(placement_name, "five clusters", |d| d.len() == 5)
            .await;
        let p = admin
            .get(&placement_path(NS, placement_name))
            .await
            .ok()
            .body;
        let groups: Vec<(i64, String, i64)> = p["status"]["decisionGroups"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|g| {
                (
                    g["decisionGroupIndex"].as_i64().unwrap_or(-1),
                    g["decisionGroupName"].as_str().unwrap_or("").to_string(),
                    g["clustersCount"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(
            groups,
            [
                (0, "canary".into(), 2),
                (1, String::new(), 2),
                (2, String::new(), 1)
            ],
            "{placement_name}: {p:#}"
        );
        // The canaries are group 0, in the decisions' labels and in explain.
        let (_, list) = admin.decisions(placement_name, None).await;
        let group0: BTreeSet<String> = list.body["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| d["metadata"]["labels"][api::fleet::DECISION_GROUP_INDEX_LABEL] == "0")
            .flat_map(|d| {
                d["status"]["decisions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|d| d["clusterName"].as_str().map(str::to_string))
            .collect();
        assert_eq!(group0, names(&["g2", "g4"]), "{:#}", list.body);
        let explained = admin.explain(placement_name).await;
        for e in &explained.clusters {
            assert!(e.selected, "{e:#?}");
            let canary = e.cluster_name == "g2" || e.cluster_name == "g4";
            assert_eq!(
                e.decision_group.as_deref() == Some("canary"),
                canary,
                "{explained:#?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relabelled_cluster_leaves_the_decisions_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    four_clusters(&admin).await;
    admin
        .put_placement("prod", by_labels(json!({"env": "prod"})))
        .await;
    admin
        .wait_decisions("prod", "both prod clusters", |d| d == &names(&["a", "b"]))
        .await;
    let (_, before) = admin.decisions("prod", None).await;

    // A blocking GET parked on the decisions is woken by the change the relabel causes.
    let waiter = {
        let admin = admin.clone();
        tokio::spawn(async move {
            let (decided, _) = admin.decisions("prod", Some(before.index)).await;
            (decided, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let relabelled = Instant::now();
    admin.label("b", &[("env", Some("staging"))]).await;
    let (decided, woke) = waiter.await.unwrap();
    let took = woke - relabelled;
    println!("decisions changed {took:?} after the relabel");
    assert_eq!(
        decided,
        names(&["a"]),
        "the first answer after the relabel no longer has b (woken after {took:?})"
    );
    assert!(
        took < Duration::from_secs(10),
        "woken by the change, not by the wait running out: {took:?}"
    );
    // And back in.
    admin.label("b", &[("env", Some("prod"))]).await;
    admin
        .wait_decisions("prod", "b back", |d| d == &names(&["a", "b"]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_preview_give_every_cluster_its_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    four_clusters(&admin).await;
    // A cluster in maintenance: a NoSelect taint the placement does not tolerate.
    let mut tainted = ManagedCluster::new(
        "e",
        [("env".to_string(), "prod".to_string())]
            .into_iter()
            .collect(),
    );
    tainted.spec.taints = vec![json!({"key": "example.com/maintenance", "effect": "NoSelect"})];
    admin.http.put_cluster(&accepted(tainted)).await.unwrap();

    admin
        .put_placement("prod", by_labels(json!({"env": "prod"})))
        .await;
    admin
        .wait_decisions("prod", "prod clusters", |d| d == &names(&["a", "b"]))
        .await;
    let explained = admin.explain("prod").await;
    let listed: BTreeSet<String> = explained
        .clusters
        .iter()
        .map(|e| e.cluster_name.clone())
        .collect();
    assert_eq!(listed, names(&["a", "b", "c", "d", "e"]), "{explained:#?}");
    // Decided ones first.
    let selected: Vec<bool> = explained.clusters.iter().map(|e| e.selected).collect();
    assert_eq!(
        selected,
        [true, true, false, false, false],
        "{explained:#?}"
    );
    let why = |c: &str| {
        let e = explained
            .clusters
            .iter()
            .find(|e| e.cluster_name == c)
            .unwrap();
        (e.feasible, e.reasons.join(" "))
    };
    for c in ["c", "d"] {
        let (feasible, reasons) = why(c);
        assert!(!feasible, "{c}: {explained:#?}");
        assert!(
            reasons.contains("env"),
            "{c}'s reason names the label that failed: {reasons:?}"
        );
    }
    let (feasible, reasons) = why("e");
    assert!(!feasible, "{explained:#?}");
    assert!(
        reasons.contains("example.com/maintenance"),
        "e's reason names the taint not tolerated: {reasons:?}"
    );
    assert_eq!(explained.status.number_of_selected_clusters, 2);

    // Preview: the same answer for a placement not stored, and nothing is stored.
    let mut ghost = placement("ghost", by_labels(json!({"zone": "east"})));
    ghost["spec"]["tolerations"] =
        json!([{"key": "example.com/maintenance", "operator": "Exists"}]);
    let preview = admin
        .call(Method::POST, "/api/v1/placements/preview", Some(&ghost))
        .await
        .ok();
    let preview: PlacementExplanation = serde_json::from_value(preview.body.clone())
        .unwrap_or_else(|e| panic!("preview is not a PlacementExplanation ({e}): {preview:#?}"));
    let chosen: BTreeSet<String> = preview
        .clusters
        .iter()
        .filter(|e| e.selected)
        .map(|e| e.cluster_name.clone())
        .collect();
    assert_eq!(chosen, names(&["a", "c"]), "{preview:#?}");
    assert_eq!(preview.clusters.len(), 5, "{preview:#?}");
    let gone = admin.get(&placement_path(NS, "ghost")).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{gone:#?}");
    let all = admin.get("/api/v1/placements").await.ok().body;
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1), "{all:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_placements_are_refused_with_field_paths() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    let pred = "spec.predicates[0].requiredClusterSelector";
    let cases = [
        (
            json!({"predicates": [{"requiredClusterSelector": {"labelSelector": {
                "matchExpressions": [{"key": "env", "operator": "Equals", "values": ["x"]}]}}}]}),
            format!("{pred}.labelSelector.matchExpressions[0].operator"),
        ),
        (
            json!({"predicates": [{"requiredClusterSelector": {"celSelector": {
                "celExpressions": ["managedCluster.metadata.labels["]}}}]}),
            format!("{pred}.celSelector.celExpressions[0]"),
        ),
        (
            json!({"prioritizerPolicy": {"mode": "Exact", "configurations": [
                {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "Cheapest"}, "weight": 1}]}}),
            "spec.prioritizerPolicy.configurations[0].scoreCoordinate.builtIn".into(),
        ),
        (
            json!({"spreadPolicy": {"spreadConstraints": [
                {"topologyKey": "zone", "topologyKeyType": "Label", "maxSkew": 0}]}}),
            "spec.spreadPolicy.spreadConstraints[0].maxSkew".into(),
        ),
        (
            json!({"numberOfClusters": -1}),
            "spec.numberOfClusters".into(),
        ),
    ];
    for (i, (spec, field)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        for (what, a) in [
            (
                "PUT",
                admin
                    .put(&placement_path(NS, &name), &placement(&name, spec.clone()))
                    .await,
            ),
            (
                "preview",
                admin
                    .call(
                        Method::POST,
                        "/api/v1/placements/preview",
                        Some(&placement(&name, spec.clone())),
                    )
                    .await,
            ),
        ] {
            assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {a:#?}");
            assert_eq!(a.body["code"], "invalid", "{what}: {a:#?}");
            assert!(
                a.fields().iter().any(|f| f.starts_with(field.as_str())),
                "{what}: the details name {field}: {a:#?}"
            );
        }
        let stored = admin.get(&placement_path(NS, &name)).await;
        assert_eq!(
            stored.status,
            StatusCode::NOT_FOUND,
            "nothing stored: {stored:#?}"
        );
    }
    // Every bad field at once: each is named.
    let everything = json!({
        "numberOfClusters": -1,
        "predicates": [{"requiredClusterSelector": {
            "labelSelector": {"matchExpressions": [{"key": "env", "operator": "Equals", "values": ["x"]}]},
            "celSelector": {"celExpressions": ["managedCluster.metadata.labels["]},
        }}],
        "prioritizerPolicy": {"mode": "Exact", "configurations": [
            {"scoreCoordinate": {"type": "BuiltIn", "builtIn": "Cheapest"}, "weight": 1}]},
        "spreadPolicy": {"spreadConstraints": [
            {"topologyKey": "zone", "topologyKeyType": "Label", "maxSkew": 0}]},
    });
    let a = admin
        .put(
            &placement_path(NS, "all-bad"),
            &placement("all-bad", everything),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{a:#?}");
    for (_, field) in &cases {
        assert!(
            a.fields().iter().any(|f| f.starts_with(field.as_str())),
            "the details name {field}: {a:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_waits_for_its_placement_and_owns_its_works() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    four_clusters(&admin).await;
    let template = json!({"workload": {"manifests": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hello", "namespace": "default"}, "data": {"v": "1"}}
    ]}});
    admin
        .put_set(
            "hello",
            json!({"manifestWorkTemplate": template, "placementRefs": [{"name": "later"}]}),
        )
        .await;
    let s = admin
        .wait_set("hello", "placement missing", |s| {
            set_condition(s, conditions::PLACEMENT_VERIFIED).is_some()
        })
        .await;
    assert_eq!(
        set_condition(&s, conditions::PLACEMENT_VERIFIED),
        Some(("False".into(), "PlacementDecisionNotFound".into())),
        "{:#?}",
        s.status
    );
    assert!(admin.set_works("hello").await.is_empty());

    // The placement arrives: the set follows it, one work per decided cluster.
    admin
        .put_placement("later", by_labels(json!({"env": "prod"})))
        .await;
    admin.wait_set_works("hello", &names(&["a", "b"])).await;
    let s = admin
        .wait_set("hello", "placement verified", |s| {
            set_condition(s, conditions::PLACEMENT_VERIFIED).is_some_and(|(st, _)| st == "True")
                && s.status.summary.total == 2
        })
        .await;
    let listed: BTreeSet<String> = s
        .status
        .clusters
        .iter()
        .map(|c| c.cluster_name.clone())
        .collect();
    assert_eq!(listed, names(&["a", "b"]), "{:#?}", s.status);
    assert_eq!(
        s.status.placements_summary.first().map(|p| p.name.as_str()),
        Some("later"),
        "{:#?}",
        s.status
    );

    // Its works are named after it and changed only through it.
    let works = admin.set_works("hello").await;
    let mut work = works.get("a").cloned().unwrap();
    assert_eq!(work.metadata.name, "hello");
    assert_eq!(
        work.metadata.labels.get(SET_LABEL).map(String::as_str),
        Some("apps.hello")
    );
    work.metadata
        .labels
        .insert("edited".into(), "by-hand".into());
    let refused = admin
        .put(
            "/api/v1/clusters/a/manifestworks/hello",
            &serde_json::to_value(&work).unwrap(),
        )
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:#?}");
    assert_eq!(refused.body["code"], "owned", "{refused:#?}");
    assert!(
        refused.body["details"].to_string().contains("hello"),
        "the details name the set: {refused:#?}"
    );
    let refused = admin.delete("/api/v1/clusters/b/manifestworks/hello").await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:#?}");
    assert_eq!(refused.body["code"], "owned", "{refused:#?}");

    // A cluster relabelled out of the placement loses its work.
    admin.label("b", &[("env", Some("staging"))]).await;
    admin.wait_set_works("hello", &names(&["a"])).await;
}

// ---------------------------------------------------------------------------------------
// One set over three full clusters with real agents.
// ---------------------------------------------------------------------------------------

/// A managed cluster, its agent's data dir and its running `klusterlet run`.
struct Member {
    name: &'static str,
    cluster: TestCluster,
    data: PathBuf,
    agent: Option<tokio::process::Child>,
}

impl Member {
    fn log_path(&self) -> PathBuf {
        self.data.with_extension("log")
    }

    fn log(&self) -> String {
        tail(
            &std::fs::read_to_string(self.log_path()).unwrap_or_default(),
            40,
        )
    }

    /// `klusterlet run` with ~1 s timings.
    fn run(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = tokio::process::Command::new(binary("klusterlet").unwrap())
            .arg("run")
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig_path())
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--resync", "1s", "--degraded-after", "2s"])
            .env("KLUSTERLET_LOG", "info,klusterlet=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("klusterlet run starts");
        self.agent = Some(child);
    }

    /// Sends SIGSTOP or SIGCONT to the agent.
    fn signal(&self, signal: &str) {
        let pid = self.agent.as_ref().and_then(|c| c.id()).expect("running");
        let ok = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal} {pid}");
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.cluster.client(), "shop")
    }

    /// `data.color` of the shop's settings, if the ConfigMap exists.
    async fn color(&self) -> Option<String> {
        Api::<ConfigMap>::namespaced(self.cluster.client(), "shop")
            .get_opt("settings")
            .await
            .unwrap_or_else(|e| panic!("{}: reading configmap: {e}", self.name))
            .and_then(|cm| cm.data)
            .and_then(|d| d.get("color").cloned())
    }

    /// Waits until the shop's Deployment runs `replicas` available replicas here.
    async fn wait_deployment(&self, replicas: i32) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let d = self
                .deployments()
                .get_opt("web")
                .await
                .unwrap_or_else(|e| panic!("{}: reading deployment: {e}", self.name));
            let spec = d.as_ref().and_then(|d| d.spec.as_ref()?.replicas);
            let available = d
                .as_ref()
                .and_then(|d| d.status.as_ref()?.available_replicas);
            if spec == Some(replicas) && available == Some(replicas) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: deployment web has spec.replicas {spec:?}, available {available:?}, not {replicas}, after {DEADLINE:?}\nagent log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until an object is gone from this cluster's API server (or being deleted:
    /// a Deployment may keep a deletionTimestamp while its pods go).
    async fn wait_gone<K>(&self, api: Api<K>, name: &str)
    where
        K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match api.get_opt(name).await.unwrap() {
                None => return,
                Some(o) if o.meta().deletion_timestamp.is_some() => return,
                Some(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "{}: {name} still there after {DEADLINE:?}; agent log:\n{}",
                self.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        // A stopped agent would not die from kill_on_drop's SIGKILL until continued.
        if let Some(pid) = self.agent.as_ref().and_then(|c| c.id()) {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &pid.to_string()])
                .status();
        }
    }
}

/// The shop: a namespace, its settings and a Deployment KWOK's node runs (its replicas
/// are the split's to set).
fn shop_template() -> Value {
    json!({"workload": {"manifests": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"},
         "data": {"color": "blue"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
         "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "web", "image": "nginx"}],
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                },
            },
         }},
    ]}})
}

/// The weight of each cluster in the shop's split: 2 for `tier=big`, else 1.
fn shop_spec() -> Value {
    json!({
        "manifestWorkTemplate": shop_template(),
        "placementRefs": [{"name": "shop", "rolloutStrategy": {"type": "All"}}],
        "overrides": [{
            "clusterSelector": {"labelSelector": {"matchLabels": {"color": "green"}}},
            "manifest": {"kind": "ConfigMap", "name": "settings"},
            "patch": {"data": {"color": "green"}},
        }],
        "replicaSplit": {
            "workload": {"kind": "Deployment", "name": "web"},
            "totalReplicas": 10,
            "strategy": "Weighted",
            "weights": [
                {"clusterSelector": {"labelSelector": {"matchLabels": {"tier": "big"}}}, "weight": 2},
                {"clusterSelector": {}, "weight": 1},
            ],
        },
    })
}

/// Each cluster's replica share in the set's status.
fn shares(s: &ManifestWorkReplicaSet) -> BTreeMap<String, i32> {
    s.status
        .clusters
        .iter()
        .filter_map(|c| Some((c.cluster_name.clone(), c.replicas?)))
        .collect()
}

/// Asserts the shares are the documented rounding of `total` over `weights`: they sum to
/// the total, and each is its exact quota rounded down or up.
fn assert_split(shares: &BTreeMap<String, i32>, weights: &BTreeMap<&str, i32>, total: i32) {
    let keys: BTreeSet<&str> = shares.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        weights.keys().copied().collect(),
        "a share per decided cluster: {shares:?}"
    );
    assert_eq!(shares.values().sum::<i32>(), total, "{shares:?}");
    let sum: i32 = weights.values().sum();
    for (c, w) in weights {
        let quota = f64::from(total) * f64::from(*w) / f64::from(sum);
        let share = f64::from(shares[*c]);
        assert!(
            share == quota.floor() || share == quota.ceil(),
            "{c}'s share {share} is its quota {quota:.2} rounded: {shares:?}"
        );
    }
}

/// Whether every decided cluster's work is Available and every cluster has its share.
fn available_on(s: &ManifestWorkReplicaSet, clusters: &BTreeSet<String>) -> bool {
    let listed: BTreeSet<String> = s
        .status
        .clusters
        .iter()
        .map(|c| c.cluster_name.clone())
        .collect();
    let n = i32::try_from(clusters.len()).unwrap_or(i32::MAX);
    &listed == clusters
        && s.status.summary.total == n
        && s.status.summary.available == n
        && shares(s).len() == clusters.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_over_three_clusters_splits_overrides_moves_fails_over_and_cascades() {
    init();
    let started = Instant::now();
    let step = |what: &str| println!("[{:>6.1?}] {what}", started.elapsed());
    let dir = tempfile::tempdir().unwrap();
    let (hub, admin) = hub(&dir).await;
    let (c1, c2, c3) = tokio::join!(
        TestCluster::start(ClusterOptions::full()),
        TestCluster::start(ClusterOptions::full()),
        TestCluster::start(ClusterOptions::full()),
    );
    let mut members = Vec::new();
    for (name, cluster, labels) in [
        ("big", c1, &["fleet=shop", "tier=big"][..]),
        ("green", c2, &["fleet=shop", "color=green"][..]),
        ("plain", c3, &["fleet=shop"][..]),
    ] {
        let cluster = cluster.expect("start a managed cluster");
        let data = dir.path().join(format!("agent-{name}"));
        hub.join_klusterlet(
            &binary("klusterlet").unwrap(),
            name,
            cluster.kubeconfig_path(),
            &data,
            labels,
        )
        .await
        .expect("klusterlet join");
        let mut m = Member {
            name,
            cluster,
            data,
            agent: None,
        };
        m.run();
        members.push(m);
    }
    let member = |name: &str| members.iter().find(|m| m.name == name).unwrap();
    let weight = |name: &str| if name == "big" { 2 } else { 1 };
    let weights = |clusters: &BTreeSet<String>| -> BTreeMap<&'static str, i32> {
        ["big", "green", "plain"]
            .into_iter()
            .filter(|c| clusters.contains(*c))
            .map(|c| (c, weight(c)))
            .collect()
    };
    step("three clusters joined");

    // 1. The shop over every fleet cluster: 10 replicas weighted 2:1:1, green's settings
    // overridden.
    admin
        .put_placement("shop", by_labels(json!({"fleet": "shop"})))
        .await;
    admin.put_set("shop", shop_spec()).await;
    // The CLI waits until the set is Available on every decided cluster and exits 0.
    let wait = tokio::process::Command::new(binary("hub").unwrap())
        .args(["wait", "mwrs", "shop", "-n", NS, "--for", "Available"])
        .args(["--timeout", "120s"])
        .env_remove("HUB_SERVER")
        .env_remove("HUB_TOKEN")
        .env_remove("HUB_CA_FILE")
        .env("HUB_CONFIG", hub.client_config_path())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert_eq!(
        wait.status.code(),
        Some(0),
        "hub wait mwrs: {}{}",
        String::from_utf8_lossy(&wait.stdout),
        String::from_utf8_lossy(&wait.stderr)
    );
    let all = names(&["big", "green", "plain"]);
    let s = admin
        .wait_set("shop", "Available on three clusters", |s| {
            available_on(s, &all)
        })
        .await;
    let split = shares(&s);
    assert_split(&split, &weights(&all), 10);
    assert_eq!(split["big"], 5, "{split:?}");
    for m in &members {
        m.wait_deployment(split[m.name]).await;
    }
    assert_eq!(member("green").color().await.as_deref(), Some("green"));
    assert_eq!(member("big").color().await.as_deref(), Some("blue"));
    assert_eq!(member("plain").color().await.as_deref(), Some("blue"));
    step("shop available, split 5/3/2, green overridden");

    // 2. Relabelled out of the fleet: plain's work goes, from the hub and from plain's
    // API server, and the shares are recomputed over the two left.
    admin.label("plain", &[("fleet", None)]).await;
    let two = names(&["big", "green"]);
    let s = admin
        .wait_set("shop", "moved off plain", |s| available_on(s, &two))
        .await;
    admin.wait_set_works("shop", &two).await;
    let plain = member("plain");
    plain.wait_gone(plain.deployments(), "web").await;
    let split = shares(&s);
    assert_split(&split, &weights(&two), 10);
    member("big").wait_deployment(split["big"]).await;
    member("green").wait_deployment(split["green"]).await;
    step("relabel moved the work off plain");
    admin.label("plain", &[("fleet", Some("shop"))]).await;
    let s = admin
        .wait_set("shop", "back on three", |s| available_on(s, &all))
        .await;
    assert_split(&shares(&s), &weights(&all), 10);

    // 3. Failover: two of three clusters; one agent frozen past its lease grace, its
    // cluster is tainted unreachable and replaced, the work follows.
    admin
        .put_placement("shop", {
            let mut p = by_labels(json!({"fleet": "shop"}));
            p["numberOfClusters"] = json!(2);
            p
        })
        .await;
    let pair = admin
        .wait_decisions("shop", "two of three", |d| d.len() == 2)
        .await;
    let s = admin
        .wait_set("shop", "on the two decided", |s| available_on(s, &pair))
        .await;
    assert_split(&shares(&s), &weights(&pair), 10);
    let spare = all.difference(&pair).next().unwrap().clone();
    member(&spare)
        .wait_gone(member(&spare).deployments(), "web")
        .await;
    let frozen = pair.iter().next().unwrap().clone();
    let kept = pair.iter().nth(1).unwrap().clone();
    step(&format!("decided {pair:?}; freezing {frozen}'s agent"));
    member(&frozen).signal("STOP");
    let frozen_at = Instant::now();
    let replaced = names(&[&kept, &spare]);
    admin
        .wait_decisions("shop", "the frozen cluster replaced", |d| d == &replaced)
        .await;
    let s = admin
        .wait_set("shop", "Available on the replacement", |s| {
            available_on(s, &replaced)
        })
        .await;
    println!(
        "failover: work Available on {spare} {:?} after freezing {frozen}",
        frozen_at.elapsed()
    );
    let split = shares(&s);
    assert_split(&split, &weights(&replaced), 10);
    member(&spare).wait_deployment(split[&spare]).await;
    member(&kept).wait_deployment(split[&kept]).await;
    let cluster = admin.http.get_cluster(&frozen).await.unwrap().value;
    assert!(
        cluster
            .spec
            .taints
            .iter()
            .any(|t| t["key"] == TAINT_UNREACHABLE),
        "the frozen cluster is tainted: {cluster:#?}"
    );
    // Thawed, the agent finds its work deleted and removes what it created.
    member(&frozen).signal("CONT");
    member(&frozen)
        .wait_gone(member(&frozen).deployments(), "web")
        .await;
    admin.wait_set_works("shop", &replaced).await;
    // Back and reachable, it does not take its place back: the decision is stable.
    let deadline = Instant::now() + DEADLINE;
    let mut index = None;
    loop {
        let opts = ListOptions {
            index,
            wait: Some(Duration::from_secs(20)),
            ..Default::default()
        };
        let c = admin.http.get_cluster_with(&frozen, &opts).await.unwrap();
        if !c
            .value
            .spec
            .taints
            .iter()
            .any(|t| t["key"] == TAINT_UNREACHABLE)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{frozen} still tainted after it came back: {:#?}",
            c.value
        );
        index = Some(c.index);
    }
    let (decided, _) = admin.decisions("shop", None).await;
    assert_eq!(decided, replaced, "the replacement stays");
    step("failover done");

    // 4. Orphan: deleting the set leaves its works, no longer owned, and their objects.
    admin
        .put_set(
            "keep",
            json!({
                "manifestWorkTemplate": {"workload": {"manifests": [
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kept", "namespace": "default"}, "data": {"v": "1"}}
                ]}},
                "placementRefs": [{"name": "shop"}],
                "cascadeDeletionPolicy": "Orphan",
            }),
        )
        .await;
    admin
        .wait_set("keep", "keep applied", |s| {
            s.status.summary.total == 2 && s.status.summary.applied == 2
        })
        .await;
    admin.delete(&set_path(NS, "keep")).await.ok();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if admin.get(&set_path(NS, "keep")).await.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < deadline, "set keep not gone");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for c in &replaced {
        let work = admin
            .http
            .get_work(c, "keep", &ListOptions::default())
            .await
            .unwrap_or_else(|e| panic!("Orphan leaves the work on {c}: {e}"))
            .value;
        assert!(
            work.metadata.deletion_timestamp.is_none()
                && !work.metadata.labels.contains_key(SET_LABEL),
            "an orphaned work is the user's now: {work:#?}"
        );
        // So the user may change it.
        admin.http.put_work(&work, None).await.unwrap();
        let cm = Api::<ConfigMap>::namespaced(member(c).cluster.client(), "default")
            .get_opt("kept")
            .await
            .unwrap();
        assert!(cm.is_some(), "{c}: the orphaned work's ConfigMap stays");
    }
    step("orphan done");

    // 5. Background (the default): the works go, and the agents delete what they made.
    admin.delete(&set_path(NS, "shop")).await.ok();
    admin.wait_set_works("shop", &BTreeSet::new()).await;
    for c in &replaced {
        member(c).wait_gone(member(c).deployments(), "web").await;
    }
    for m in &members {
        assert!(
            m.deployments()
                .get_opt("web")
                .await
                .unwrap()
                .is_none_or(|d| d.meta().deletion_timestamp.is_some()),
            "{}: no shop left",
            m.name
        );
    }
    step("done");
}

// ---------------------------------------------------------------------------------------
// Scope.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_tokens_set_never_leaves_its_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (_hub, admin) = hub(&dir).await;
    for (name, env) in [("dev-1", "dev"), ("dev-2", "dev"), ("prod-1", "prod")] {
        admin.cluster(name, &[("app", "shop"), ("env", env)]).await;
    }
    let secret = admin
        .http
        .create_token(&TokenRequest {
            kind: TokenKind::Api,
            cluster_selector: Some("env=dev".into()),
            verbs: vec![Verb::Read, Verb::Write],
            description: "the dev team".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .token
        .expect("the token's secret");
    let dev = admin.with_token(&secret);

    // The placement (an admin's) decides all three; the set is the dev team's.
    admin
        .put_placement("shop", by_labels(json!({"app": "shop"})))
        .await;
    admin
        .wait_decisions("shop", "all three", |d| d.len() == 3)
        .await;
    let spec = json!({
        "manifestWorkTemplate": {"workload": {"manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "team", "namespace": "default"}, "data": {"v": "1"}}
        ]}},
        "placementRefs": [{"name": "shop"}],
    });
    dev.put_set("team", spec.clone()).await;
    let in_scope = names(&["dev-1", "dev-2"]);
    admin.wait_set_works("team", &in_scope).await;
    let s = admin
        .wait_set("team", "prod-1 explained", |s| {
            s.status
                .clusters
                .iter()
                .any(|c| c.cluster_name == "prod-1" && !c.message.is_empty())
        })
        .await;
    assert_eq!(s.status.summary.total, 2, "{:#?}", s.status);
    let prod = s
        .status
        .clusters
        .iter()
        .find(|c| c.cluster_name == "prod-1")
        .unwrap();
    assert!(
        prod.message.contains("prod-1")
            && (prod.message.contains("writer") || prod.message.contains("scope")),
        "the set says why prod-1 has no work: {prod:#?}"
    );
    // No work of the set, ever, on prod-1 (not even one being deleted).
    let on_prod = admin
        .http
        .list_works(Some("prod-1"), &ListOptions::default())
        .await
        .unwrap()
        .value
        .items;
    assert!(on_prod.is_empty(), "{on_prod:#?}");

    // The scope is the last writer's: an admin's write reaches prod-1, the team's next
    // write takes it back.
    admin.put_set("team", spec.clone()).await;
    admin
        .wait_set_works("team", &names(&["dev-1", "dev-2", "prod-1"]))
        .await;
    dev.put_set("team", spec).await;
    admin.wait_set_works("team", &in_scope).await;
}

// ---------------------------------------------------------------------------------------
// Two hubs on one Postgres.
// ---------------------------------------------------------------------------------------

/// The line a hub logs when it takes the controllers' lock.
const LEADER_LINE: &str = "this hub runs the fleet controllers";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_postgres_hand_over_the_controllers() {
    init();
    let pg = TestPostgres::shared().await.expect("start postgres");
    let url = pg.fresh_database().await.unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = [
        "--database-url",
        url.as_str(),
        "--admin-token",
        "shared-admin-token",
        "--lease-interval",
        "1s",
        "--lease-grace",
        "3s",
    ];
    let mut hubs = [
        HubProcess::start(d1.path(), &args).await.unwrap(),
        HubProcess::start(d2.path(), &args).await.unwrap(),
    ];
    // Exactly one of them runs the controllers.
    let deadline = Instant::now() + DEADLINE;
    let leader = loop {
        let leading: Vec<usize> = (0..2)
            .filter(|i| hubs[*i].log_text().contains(LEADER_LINE))
            .collect();
        match leading[..] {
            [one] => break one,
            [] => {}
            _ => panic!(
                "both hubs run the controllers:\n{}\n---\n{}",
                tail(&hubs[0].log_text(), 40),
                tail(&hubs[1].log_text(), 40)
            ),
        }
        assert!(
            Instant::now() < deadline,
            "no hub says {LEADER_LINE:?}:\n{}\n---\n{}",
            tail(&hubs[0].log_text(), 40),
            tail(&hubs[1].log_text(), 40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let other = 1 - leader;
    let survivor = Client::admin(&hubs[other]);

    // Written through the hub that does not lead: decided by the one that does.
    four_clusters(&survivor).await;
    survivor
        .put_placement("prod", by_labels(json!({"env": "prod"})))
        .await;
    survivor
        .wait_decisions("prod", "before the kill", |d| d == &names(&["a", "b"]))
        .await;

    hubs[leader].signal("KILL").unwrap();
    hubs[leader].wait_exit(Duration::from_secs(10)).unwrap();
    let killed = Instant::now();
    survivor.label("c", &[("env", Some("prod"))]).await;
    let moved = survivor
        .wait_decisions("prod", "after the kill", |d| d == &names(&["a", "b", "c"]))
        .await;
    let took = killed.elapsed();
    println!("decisions moved {took:?} after the leader was killed");
    assert_eq!(moved, names(&["a", "b", "c"]));
    assert!(
        took < Duration::from_secs(20),
        "the other hub took over within seconds, not {took:?}"
    );
    assert!(
        hubs[other].log_text().contains(LEADER_LINE),
        "the survivor says it runs the controllers now:\n{}",
        tail(&hubs[other].log_text(), 40)
    );
}
