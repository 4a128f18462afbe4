//! The `hub` CLI as a user runs it: the real binary as a process against a real
//! `hub serve` (SQLite, its own CA, the `client.yaml` it writes), asserting on stdout,
//! stderr and exit codes.
//!
//! One test drives an in-process hub over plain HTTP instead, because it needs what no
//! REST call can do yet: mark a cluster as joined by an agent, so that works get the
//! agent's finalizer and deletion has something to wait for.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{ClientConfig, HubClient, ListOptions, ManagedCluster, ManifestWork};
use common::{CLUSTER, Cli, HUB, HubServe, WORK, free_port, init};
use serde_json::{Value, json};

fn work_yaml(name: &str, namespace: Option<&str>, data: &str) -> String {
    let ns = namespace
        .map(|n| format!("  namespace: {n}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: work.open-cluster-management.io/v1
kind: ManifestWork
metadata:
  name: {name}
{ns}spec:
  workload:
    manifests:
    - apiVersion: v1
      kind: ConfigMap
      metadata: {{name: {name}, namespace: default}}
      data: {{k: {data}}}
"
    )
}

fn manifest_names(work: &Value) -> Vec<String> {
    work["spec"]["workload"]["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_and_delete_like_kubectl() {
    let hub = HubServe::start().await;
    hub.add_cluster("c1", &[]).await;

    // A ManifestWork document: created, then unchanged, then configured.
    let file = hub.write("work.yaml", &work_yaml("web", Some("c1"), "v1"));
    let f = file.to_str().unwrap();
    let apply = ["apply", "-f", f, "--cluster", "c1"];
    assert_eq!(
        hub.cli(&apply).await.ok(),
        format!("{WORK}/web created (cluster c1)\n")
    );
    assert_eq!(
        hub.cli(&apply).await.ok(),
        format!("{WORK}/web unchanged (cluster c1)\n")
    );
    hub.write("work.yaml", &work_yaml("web", Some("c1"), "v2"));
    assert_eq!(
        hub.cli(&apply).await.ok(),
        format!("{WORK}/web configured (cluster c1)\n")
    );

    // A directory of plain manifests becomes one work, files in lexical order, only
    // *.yaml, *.yml and *.json.
    hub.write(
        "bundle/10-b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b1}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b2}\n",
    );
    hub.write(
        "bundle/02-a.json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}"#,
    );
    hub.write(
        "bundle/20-c.yml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: c}\n",
    );
    hub.write("bundle/README.txt", "not a manifest");
    let dir = hub.dir.path().join("bundle");
    let run = hub
        .cli(&[
            "apply",
            "-f",
            dir.to_str().unwrap(),
            "--cluster",
            "c1",
            "--name",
            "bundle",
        ])
        .await;
    assert_eq!(run.ok(), format!("{WORK}/bundle created (cluster c1)\n"));

    // Stdin, and -f repeated: the manifests of both inputs, in order.
    let extra = hub.write(
        "extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-file}\n",
    );
    let stdin_doc = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-stdin}\n";
    let run = Cli::new(&[
        "apply",
        "-f",
        "-",
        "-f",
        extra.to_str().unwrap(),
        "--cluster",
        "c1",
        "--name",
        "piped",
    ])
    .env("HUB_CONFIG", hub.config_path().to_str().unwrap())
    .stdin(stdin_doc)
    .run()
    .await;
    assert_eq!(run.ok(), format!("{WORK}/piped created (cluster c1)\n"));
    let piped = hub.api_get("/api/v1/clusters/c1/manifestworks/piped").await;
    assert_eq!(manifest_names(&piped), ["from-stdin", "from-file"]);
    // A ManifestWork file next to plain manifests is refused as a mix.
    let run = Cli::new(&[
        "apply",
        "-f",
        "-",
        "-f",
        f,
        "--cluster",
        "c1",
        "--name",
        "piped",
    ])
    .env("HUB_CONFIG", hub.config_path().to_str().unwrap())
    .stdin(stdin_doc)
    .run()
    .await;
    assert!(run.fails(2).contains("mixes"), "{run}");

    // -o json prints the object exactly as the API returns it.
    let run = hub
        .cli(&["get", "works", "bundle", "--cluster", "c1", "-o", "json"])
        .await;
    let bundle = run.json();
    assert_eq!(
        bundle,
        hub.api_get("/api/v1/clusters/c1/manifestworks/bundle")
            .await
    );
    assert_eq!(manifest_names(&bundle), ["a", "b1", "b2", "c"]);
    // -o yaml is the same object.
    let run = hub
        .cli(&["get", "works", "bundle", "--cluster", "c1", "-o", "yaml"])
        .await;
    let yaml: Value = serde_saphyr::from_str(run.ok()).unwrap();
    assert_eq!(yaml, bundle);

    // Lists: the List the API returns.
    let list = hub
        .cli(&["get", "works", "--cluster", "c1", "-o", "json"])
        .await;
    let list = list.json();
    assert_eq!(list["kind"], "ManifestWorkList");
    assert_eq!(
        list["items"],
        hub.api_get("/api/v1/clusters/c1/manifestworks").await["items"]
    );

    // Paging is followed: one work per page gives the same list.
    let paged = hub
        .cli(&[
            "get",
            "works",
            "--cluster",
            "c1",
            "-o",
            "json",
            "--chunk-size",
            "1",
        ])
        .await
        .json();
    assert_eq!(paged["items"], list["items"]);
    assert_eq!(paged["items"].as_array().unwrap().len(), 3);

    // The table: columns, manifest counts, unreported conditions as "-".
    let table = hub.cli(&["get", "works", "--cluster", "c1"]).await.table();
    assert_eq!(
        table[0],
        ["NAME", "MANIFESTS", "APPLIED", "AVAILABLE", "READY", "AGE"]
    );
    let rows: Vec<&[String]> = table[1..].iter().map(|r| &r[..5]).collect();
    assert_eq!(
        rows,
        [
            ["bundle", "4", "-", "-", "-"],
            ["piped", "2", "-", "-", "-"],
            ["web", "1", "-", "-", "-"]
        ]
    );
    // Across clusters (-A, also the default without --cluster): a CLUSTER column.
    for args in [&["get", "works", "-A"][..], &["get", "works"]] {
        let table = hub.cli(args).await.table();
        assert_eq!(table[0][..2], ["CLUSTER", "NAME"]);
        assert_eq!(table[1][..2], ["c1", "bundle"]);
    }
    // Wide: generation, resourceVersion, labels.
    let table = hub
        .cli(&["get", "works", "web", "--cluster", "c1", "-o", "wide"])
        .await
        .table();
    assert_eq!(table[0][6..], ["GENERATION", "RESOURCEVERSION", "LABELS"]);
    assert_eq!(table[1][6], "2", "configured once: generation 2");
    assert_eq!(table[1][8], "<none>");

    // A name that does not exist: the hub's refusal, exit 1.
    let run = hub.cli(&["get", "works", "nope", "--cluster", "c1"]).await;
    assert!(
        run.fails(1).starts_with("Error from server (NotFound): "),
        "{run}"
    );
    assert!(run.stdout.is_empty(), "{run}");

    // Delete: gone at once (no agent holds a finalizer), then not found.
    let run = hub.cli(&["delete", "work", "web", "--cluster", "c1"]).await;
    assert_eq!(run.ok(), format!("{WORK} \"web\" deleted (cluster c1)\n"));
    let run = hub.cli(&["get", "works", "web", "--cluster", "c1"]).await;
    assert!(run.fails(1).contains("NotFound"), "{run}");
    let run = hub.cli(&["delete", "work", "web", "--cluster", "c1"]).await;
    assert!(run.fails(1).contains("NotFound"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_and_sends_nothing() {
    let hub = HubServe::start().await;
    hub.add_cluster("c1", &[]).await;
    let work = hub.write("work.yaml", &work_yaml("web", Some("c1"), "v1"));
    let other_ns = hub.write("other.yaml", &work_yaml("web", Some("c2"), "v1"));
    let plain = hub.write(
        "plain.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    );
    let mixed = hub.write(
        "mixed.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\n",
            work_yaml("web", Some("c1"), "v1")
        ),
    );
    let broken = hub.write("broken.yaml", "kind: [ConfigMap\n");
    let p = |p: &Path| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-f".into(), p(&mixed), "--name".into(), "x".into()],
            "mixes ManifestWork documents",
        ),
        (
            vec!["-f".into(), p(&work), "-f".into(), p(&plain)],
            "mixes ManifestWork documents",
        ),
        // The namespace of a ManifestWork is its cluster: a document for c2 sent with
        // --cluster c1 is a mistake in the input, found before anything is sent, so it
        // is a usage error (2) like other bad input, not a refusal by the hub (1).
        (vec!["-f".into(), p(&other_ns)], "does not match --cluster"),
        (vec!["-f".into(), p(&plain)], "--name"),
        (
            vec!["-f".into(), p(&work), "--name".into(), "x".into()],
            "--name",
        ),
        (
            vec!["-f".into(), p(&plain), "--name".into(), "Not_A_Name".into()],
            "--name",
        ),
        (
            vec!["-f".into(), "/nonexistent/x.yaml".into()],
            "cannot read",
        ),
        (vec!["-f".into(), p(&broken)], "invalid YAML"),
    ];
    for (args, message) in cases {
        let mut full = vec!["apply", "--cluster", "c1"];
        full.extend(args.iter().map(String::as_str));
        let run = hub.cli(&full).await;
        let err = run.fails(2);
        assert!(err.starts_with("error: "), "{run}");
        assert!(err.contains(message), "wanted {message:?}: {run}");
        assert_eq!(err.lines().count(), 1, "one line: {run}");
        assert!(run.stdout.is_empty(), "{run}");
    }
    // Usage errors of clap: no target cluster, both targets, a bad selector.
    let w = p(&work);
    for args in [
        vec!["apply", "-f", &w],
        vec![
            "apply",
            "-f",
            &w,
            "--cluster",
            "c1",
            "--cluster-selector",
            "a=b",
        ],
        vec!["apply", "-f", &w, "--cluster-selector", "a in (b"],
        vec!["get", "works", "-l", "a in (b"],
        vec!["get", "works", "web"],
        vec![
            "delete",
            "work",
            "web",
            "--cluster",
            "c1",
            "--timeout",
            "soon",
        ],
    ] {
        hub.cli(&args).await.fails(2);
    }
    let works = hub
        .client()
        .list_works(None, &ListOptions::default())
        .await
        .unwrap()
        .value;
    assert!(
        works.items.is_empty(),
        "nothing was sent: {:?}",
        works.items
    );

    // A refusal by the hub is 1: a cluster that does not exist.
    let w9 = hub.write("c9.yaml", &work_yaml("web", Some("c9"), "v1"));
    let run = hub
        .cli(&["apply", "-f", w9.to_str().unwrap(), "--cluster", "c9"])
        .await;
    assert!(
        run.fails(1)
            .starts_with("Error from server (NotFound): manifestwork \"web\" (cluster c9)"),
        "{run}"
    );

    // --dry-run prints what would be sent, offline, and sends nothing.
    let plain = p(&plain);
    let run = Cli::new(&[
        "apply",
        "-f",
        &plain,
        "--cluster",
        "c1",
        "--name",
        "dry",
        "--dry-run",
    ])
    .env("HUB_SERVER", "https://127.0.0.1:1")
    .run()
    .await;
    let docs: Vec<Value> = serde_saphyr::from_multiple(run.ok()).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0]["metadata"],
        json!({"name": "dry", "namespace": "c1"})
    );
    assert_eq!(
        docs[0]["spec"]["workload"]["manifests"][0]["metadata"]["name"],
        "a"
    );
    assert!(
        hub.client()
            .list_works(None, &ListOptions::default())
            .await
            .unwrap()
            .value
            .items
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_is_found_from_flags_env_or_files_and_failures_exit_4_or_2() {
    let hub = HubServe::start().await;
    let config = hub.config();

    // The data dir's client.yaml, found through HUB_DATA_DIR with nothing else set.
    let run = Cli::new(&["get", "clusters"])
        .env("HUB_DATA_DIR", hub.data_dir().to_str().unwrap())
        .run()
        .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stderr.trim(), "No resources found.", "{run}");

    // Flags alone.
    let ca = hub.write("ca.pem", config.ca_data.as_deref().unwrap());
    let token = config.token.clone().unwrap();
    let run = Cli::new(&[
        "get",
        "clusters",
        "--server",
        &config.server,
        "--token",
        &token,
        "--ca-file",
        ca.to_str().unwrap(),
    ])
    .run()
    .await;
    assert_eq!(run.code, 0, "{run}");
    // Environment alone.
    let run = Cli::new(&["get", "clusters"])
        .env("HUB_SERVER", &config.server)
        .env("HUB_TOKEN", &token)
        .env("HUB_CA_FILE", ca.to_str().unwrap())
        .run()
        .await;
    assert_eq!(run.code, 0, "{run}");

    // A wrong token beats the file's: 401 is exit 4.
    let run = Cli::new(&["get", "clusters"])
        .env("HUB_CONFIG", hub.config_path().to_str().unwrap())
        .env("HUB_TOKEN", "wrong")
        .run()
        .await;
    assert!(
        run.fails(4).starts_with("Error from server (Unauthorized)"),
        "{run}"
    );
    let run = hub.cli(&["get", "works", "--token", "wrong"]).await;
    run.fails(4);

    // Nothing listening: exit 4.
    let unreachable = format!("https://127.0.0.1:{}", free_port());
    let run = hub
        .cli(&["get", "clusters", "--server", unreachable.as_str()])
        .await;
    let err = run.fails(4);
    assert!(
        err.starts_with(&format!("error: cannot reach the hub at {unreachable}")),
        "{run}"
    );
    assert_eq!(err.lines().count(), 1, "{run}");

    // The wrong CA: the hub is not trusted, exit 4, and the token is never sent.
    let other = rcgen::generate_simple_self_signed(vec!["other-ca".to_string()]).unwrap();
    let other_ca = hub.write("other-ca.pem", &other.cert.pem());
    let run = hub
        .cli(&["get", "clusters", "--ca-file", other_ca.to_str().unwrap()])
        .await;
    run.fails(4);

    // No hub anywhere: a usage problem (2) saying how to point at one.
    let run = Cli::new(&["get", "works"]).run().await;
    let err = run.fails(2);
    assert!(err.contains("no hub to talk to"), "{run}");
    assert!(
        err.contains("--server") && err.contains("HUB_CONFIG"),
        "{run}"
    );
    let run = Cli::new(&["get", "works", "--config", "/nonexistent/client.yaml"])
        .run()
        .await;
    assert!(run.fails(2).contains("/nonexistent/client.yaml"), "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_set_removed_and_selected() {
    let hub = HubServe::start().await;
    hub.add_cluster("c1", &[]).await;
    hub.add_cluster("c2", &[("env", "dev")]).await;

    let run = hub
        .cli(&["label", "cluster", "c1", "env=prod", "tier=web"])
        .await;
    assert_eq!(run.ok(), format!("{CLUSTER}/c1 labeled\n"));
    let table = hub.cli(&["get", "clusters"]).await.table();
    assert_eq!(
        table[0],
        ["NAME", "ACCEPTED", "JOINED", "AVAILABLE", "LABELS", "AGE"]
    );
    assert_eq!(
        table[1][..5],
        ["c1", "false", "-", "-", "env=prod,tier=web"]
    );
    assert_eq!(table[2][..5], ["c2", "false", "-", "-", "env=dev"]);

    let run = hub.cli(&["label", "cluster", "c1", "tier-"]).await;
    assert_eq!(run.ok(), format!("{CLUSTER}/c1 unlabeled\n"));
    let table = hub.cli(&["get", "clusters", "c1"]).await.table();
    assert_eq!(table[1][4], "env=prod");

    let table = hub
        .cli(&["get", "clusters", "-l", "env=prod"])
        .await
        .table();
    assert_eq!(table.len(), 2, "header and c1: {table:?}");
    assert_eq!(table[1][0], "c1");
    let run = hub
        .cli(&["get", "clusters", "-l", "env=prod", "-o", "json"])
        .await;
    let list = run.json();
    assert_eq!(list["kind"], "ManagedClusterList");
    assert_eq!(
        list["items"][0]["metadata"]["labels"],
        json!({"env": "prod"})
    );

    hub.cli(&["label", "cluster", "c1", "bad key=x"])
        .await
        .fails(2);
    hub.cli(&["label", "cluster", "c1", "env"]).await.fails(2);
    let run = hub.cli(&["label", "cluster", "nope", "a=b"]).await;
    assert!(run.fails(1).contains("NotFound"), "{run}");
    let run = hub.cli(&["get", "clusters", "nope"]).await;
    assert!(
        run.fails(1).starts_with("Error from server (NotFound)"),
        "{run}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_and_delete_over_a_cluster_selector() {
    let hub = HubServe::start().await;
    hub.add_cluster("c1", &[("env", "prod")]).await;
    hub.add_cluster("c2", &[("env", "prod")]).await;
    hub.add_cluster("c3", &[("env", "dev")]).await;
    // Whatever namespace the document has, each matching cluster gets its own copy.
    let file = hub.write("work.yaml", &work_yaml("web", Some("somewhere"), "v1"));
    let apply = [
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--cluster-selector",
        "env=prod",
    ];
    assert_eq!(
        hub.cli(&apply).await.ok(),
        format!("{WORK}/web created (cluster c1)\n{WORK}/web created (cluster c2)\n")
    );
    assert_eq!(
        hub.cli(&apply).await.ok(),
        format!("{WORK}/web unchanged (cluster c1)\n{WORK}/web unchanged (cluster c2)\n")
    );
    let list = hub.cli(&["get", "works", "-A", "-o", "json"]).await.json();
    let placed: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["metadata"]["namespace"].as_str().unwrap(),
                w["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(placed, [("c1", "web"), ("c2", "web")]);

    let none = [
        "apply",
        "-f",
        file.to_str().unwrap(),
        "--cluster-selector",
        "env=nowhere",
    ];
    assert!(hub.cli(&none).await.fails(1).contains("no cluster matches"));

    let run = hub
        .cli(&["delete", "work", "web", "--cluster-selector", "env=prod"])
        .await;
    assert_eq!(
        run.ok(),
        format!("{WORK} \"web\" deleted (cluster c1)\n{WORK} \"web\" deleted (cluster c2)\n")
    );
    let works = hub
        .client()
        .list_works(None, &ListOptions::default())
        .await
        .unwrap()
        .value;
    assert!(works.items.is_empty(), "{:?}", works.items);
    let run = hub
        .cli(&["delete", "work", "web", "--cluster-selector", "env=prod"])
        .await;
    assert!(run.fails(1).contains("not found"), "{run}");

    // Deleting a cluster without works: gone at once.
    let run = hub.cli(&["delete", "cluster", "c3"]).await;
    assert_eq!(run.ok(), format!("{CLUSTER} \"c3\" deleted\n"));
    hub.cli(&["get", "clusters", "c3"]).await.fails(1);
}

/// An in-process hub over plain HTTP whose service the test can reach directly.
struct InProcessHub {
    hub: Arc<hub::service::Hub>,
    url: String,
    client: HubClient,
    _dir: tempfile::TempDir,
}

const TOKEN: &str = "cli-test-admin-token";

impl InProcessHub {
    async fn start() -> InProcessHub {
        init();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let store = hub::store::connect(&url).await.unwrap();
        let service = hub::service::Hub::start(store.clone()).await.unwrap();
        let (auth, _) = hub::service::authn::Auth::init(
            store.clone(),
            Some(TOKEN),
            std::time::Duration::from_secs(3600),
        )
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
            _dir: dir,
        }
    }

    fn cli(&self, args: &[&str]) -> Cli {
        Cli::new(args)
            .env("HUB_SERVER", &self.url)
            .env("HUB_TOKEN", TOKEN)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_waits_for_the_agent_with_blocking_gets_and_times_out_with_exit_3() {
    let h = InProcessHub::start().await;
    h.client
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    // An agent joined: works get its finalizer, and deletion waits for it. The agent's
    // part (removing the finalizer) is played through the service, which the admin token
    // may not do over REST.
    h.hub.mark_cluster_joined("c1").await.unwrap();
    for name in ["w1", "w2"] {
        let w = ManifestWork::new(
            "c1",
            name,
            vec![json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})],
        );
        let put = h.client.put_work(&w, None).await.unwrap().value;
        assert_eq!(put.metadata.finalizers, [api::CLEANUP_FINALIZER]);
    }

    // Nobody removes the finalizer: exit 3, saying what is pending.
    let started = Instant::now();
    let run = h
        .cli(&["delete", "work", "w1", "--cluster", "c1", "--timeout", "1s"])
        .run()
        .await;
    let err = run.fails(3);
    assert!(err.starts_with("error: timed out after 1s"), "{run}");
    assert!(err.contains("klusterlet/cleanup"), "{run}");
    assert!(started.elapsed() < Duration::from_secs(20), "{run}");
    assert!(run.stdout.is_empty(), "{run}");

    // --wait=false returns at once.
    let run = h
        .cli(&["delete", "work", "w1", "--cluster", "c1", "--wait=false"])
        .run()
        .await;
    assert_eq!(run.ok(), format!("{WORK} \"w1\" deleted (cluster c1)\n"));

    // The agent finishes while the CLI waits: the blocking GET wakes up at once, long
    // before the timeout.
    let waiting = tokio::spawn(
        h.cli(&[
            "delete",
            "work",
            "w1",
            "--cluster",
            "c1",
            "--timeout",
            "100s",
        ])
        .run(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let finished_at = Instant::now();
    h.hub
        .remove_work_finalizer("c1", "w1", api::CLEANUP_FINALIZER)
        .await
        .unwrap();
    let run = waiting.await.unwrap();
    assert_eq!(run.ok(), format!("{WORK} \"w1\" deleted (cluster c1)\n"));
    assert!(
        finished_at.elapsed() < Duration::from_secs(10),
        "the wait noticed the deletion late: {:?}",
        finished_at.elapsed()
    );

    // A cluster with a work its agent has not cleaned up: exit 3 naming the work.
    let run = h
        .cli(&["delete", "cluster", "c1", "--timeout", "1s"])
        .run()
        .await;
    let err = run.fails(3);
    assert!(err.contains("cluster c1") && err.contains("w2"), "{run}");
    let waiting = tokio::spawn(
        h.cli(&["delete", "cluster", "c1", "--timeout", "100s"])
            .run(),
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    h.hub
        .remove_work_finalizer("c1", "w2", api::CLEANUP_FINALIZER)
        .await
        .unwrap();
    let run = waiting.await.unwrap();
    assert_eq!(run.ok(), format!("{CLUSTER} \"c1\" deleted\n"));
    assert!(h.client.get_cluster("c1").await.unwrap_err().is_not_found());
}

/// What a kubectl user reaches for: `-o name`, `--no-headers`, `-w`, `version`, the
/// connection flags before the verb, an empty `HUB_CA_FILE`, and an object without `kind`
/// caught before anything is sent (exit 2, said once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_habits_work() {
    let hub = HubServe::start().await;
    hub.add_cluster("c1", &[]).await;
    let work = hub.write("w.yaml", &work_yaml("web", Some("c1"), "v1"));
    let run = hub
        .cli(&["apply", "-f", work.to_str().unwrap(), "--cluster", "c1"])
        .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(
        run.stderr
            .contains("warning: cluster c1 has no joined agent"),
        "applying where no agent runs says so: {run}"
    );

    let run = hub
        .cli(&["get", "works", "--cluster", "c1", "-o", "name"])
        .await;
    assert_eq!(run.stdout, "manifestwork/web\n", "{run}");
    let run = hub.cli(&["get", "clusters", "-o", "name"]).await;
    assert_eq!(run.stdout, "managedcluster/c1\n", "{run}");
    let run = hub
        .cli(&["get", "works", "--cluster", "c1", "--no-headers"])
        .await;
    assert!(run.stdout.starts_with("web "), "{run}");
    assert_eq!(run.stdout.lines().count(), 1, "{run}");

    let run = hub.cli(&["version"]).await;
    assert_eq!(run.code, 0, "{run}");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        run.stdout,
        format!("Client Version: {version}\nServer Version: {version} (API v1)\n"),
        "{run}"
    );

    // Connection flags before the verb, as with kubectl; an empty HUB_CA_FILE is unset.
    let config = hub.config();
    let run = Cli::new(&[
        "--config",
        hub.config_path().to_str().unwrap(),
        "get",
        "clusters",
        "-o",
        "name",
    ])
    .env("HUB_CA_FILE", "")
    .run()
    .await;
    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.stdout, "managedcluster/c1\n", "{run}");
    let run = Cli::new(&["--server", &config.server, "version", "--client"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{run}");

    // Without kind: caught here, exit 2, the message once.
    let nokind = hub.write(
        "nokind.yaml",
        "apiVersion: v1\nmetadata: {name: a, namespace: default}\ndata: {a: b}\n",
    );
    let run = hub
        .cli(&[
            "apply",
            "-f",
            nokind.to_str().unwrap(),
            "--cluster",
            "c1",
            "--name",
            "x",
        ])
        .await;
    assert_eq!(run.code, 2, "{run}");
    assert_eq!(run.stderr.matches("no kind").count(), 1, "{run}");

    // -w: the list, then each change as a row.
    let mut watch = tokio::process::Command::new(HUB)
        .args(["get", "works", "--cluster", "c1", "-w", "--no-headers"])
        .env("HUB_CONFIG", hub.config_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(watch.stdout.take().unwrap()));
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the list first")
        .unwrap()
        .unwrap();
    assert!(first.starts_with("web "), "{first}");
    let second = hub.write("w2.yaml", &work_yaml("api", Some("c1"), "v1"));
    let run = hub
        .cli(&["apply", "-f", second.to_str().unwrap(), "--cluster", "c1"])
        .await;
    assert_eq!(run.code, 0, "{run}");
    let next = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the new work is printed as it is created")
        .unwrap()
        .unwrap();
    assert!(next.starts_with("api "), "{next}");
    watch.kill().await.unwrap();
}

/// `-o jsonpath=TEMPLATE` as kubectl's: a path, literal text and `{"\n"}`, `{range}`.
/// Bad input: a malformed template and an unknown output format exit 2 with the reason,
/// before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prints_jsonpath_templates_like_kubectl() {
    let hub = HubServe::start().await;
    hub.add_cluster("c1", &[("env", "prod")]).await;
    hub.add_cluster("c2", &[]).await;
    for (name, cluster) in [("web", "c1"), ("api", "c1"), ("web", "c2")] {
        let file = hub.write(
            &format!("{name}-{cluster}.yaml"),
            &work_yaml(name, Some(cluster), "v1"),
        );
        hub.cli(&["apply", "-f", file.to_str().unwrap(), "--cluster", cluster])
            .await
            .ok();
    }
    let run = hub
        .cli(&[
            "get",
            "works",
            "--cluster",
            "c1",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await;
    assert_eq!(run.ok(), "api web", "{run}");
    let run = hub
        .cli(&[
            "get",
            "work",
            "web",
            "--cluster",
            "c1",
            "-o",
            r#"jsonpath={.metadata.name}{"\n"}"#,
        ])
        .await;
    assert_eq!(run.ok(), "web\n", "{run}");
    let run = hub
        .cli(&[
            "get",
            "works",
            "-A",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}"#,
        ])
        .await;
    assert_eq!(run.ok(), "c1/api\nc1/web\nc2/web\n", "{run}");
    // Keys with dots are escaped as kubectl escapes them.
    let run = hub
        .cli(&[
            "get",
            "cluster",
            "c1",
            "-o",
            r"jsonpath={.metadata.labels.env}",
        ])
        .await;
    assert_eq!(run.ok(), "prod", "{run}");
    // The other lists take templates too.
    let run = hub.cli(&["get", "tokens", "-o", "jsonpath={.kind}"]).await;
    assert!(run.ok().ends_with("List"), "{run}");

    // Bad input: exit 2, the reason named.
    for (template, why) in [
        ("jsonpath={.items[*]", "unclosed `{`"),
        ("jsonpath={range .items[*]}{.a}", "without `{end}`"),
        ("jsonpath={items}", "paths start with `.`"),
        ("jsonpath={.items[?(@.a==)]}", "path"),
        (
            "jsonpathx",
            "expected wide, name, json, yaml or jsonpath=TEMPLATE",
        ),
    ] {
        let run = hub.cli(&["get", "works", "-A", "-o", template]).await;
        let err = run.fails(2);
        assert!(err.contains(why), "{template}: {run}");
        assert_eq!(run.stdout, "", "{run}");
    }
}

/// Contexts for several hubs in one client config file, as kubeconfig has them:
/// `hub config get-contexts|current-context|use-context`, `--context` and `HUB_CONTEXT`;
/// a file in the one-hub format keeps working. Bad input: an unknown context exits 2
/// naming the known ones; `current-context` with none set exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_choose_among_hubs_in_one_config_file() {
    let hub = HubServe::start().await;
    hub.add_cluster("c1", &[]).await;
    let config = hub.config();
    let ca = config.ca_data.clone().unwrap();
    let token = config.token.clone().unwrap();
    let unreachable = format!("https://127.0.0.1:{}", free_port());
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let file = hub.write(
        "contexts.yaml",
        &format!(
            "currentContext: down\ncontexts:\n- name: down\n  server: {unreachable}\n  token: x\n- name: local\n  server: {}\n  token: {token}\n  caData: |\n{}",
            config.server,
            indent(&ca)
        ),
    );
    let path = file.to_str().unwrap();
    let with = |args: &[&str]| {
        let mut all = vec!["--config", path];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run_with = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Cli::new(&args).run().await
    };

    let run = run_with(with(&["config", "get-contexts"])).await;
    assert_eq!(
        run.table(),
        [
            vec!["CURRENT", "NAME", "SERVER"],
            vec!["*", "down", unreachable.as_str()],
            vec!["local", config.server.as_str()],
        ],
        "{run}"
    );
    assert_eq!(
        run_with(with(&["config", "current-context"])).await.ok(),
        "down\n"
    );
    // The current context is unreachable: exit 4; --context and HUB_CONTEXT pick another.
    run_with(with(&["get", "clusters", "-o", "name"]))
        .await
        .fails(4);
    let run = run_with(with(&[
        "--context",
        "local",
        "get",
        "clusters",
        "-o",
        "name",
    ]))
    .await;
    assert_eq!(run.ok(), "managedcluster/c1\n", "{run}");
    let run = Cli::new(&["get", "clusters", "-o", "name"])
        .env("HUB_CONFIG", path)
        .env("HUB_CONTEXT", "local")
        .run()
        .await;
    assert_eq!(run.ok(), "managedcluster/c1\n", "{run}");
    // use-context writes the file; then the plain command reaches the hub.
    let run = run_with(with(&["config", "use-context", "local"])).await;
    assert_eq!(run.ok(), "Switched to context \"local\".\n", "{run}");
    assert_eq!(
        run_with(with(&["config", "current-context"])).await.ok(),
        "local\n"
    );
    let run = run_with(with(&["get", "clusters", "-o", "name"])).await;
    assert_eq!(run.ok(), "managedcluster/c1\n", "{run}");

    // Bad input: an unknown context, for any command and for use-context.
    for args in [
        with(&["--context", "nope", "get", "clusters"]),
        with(&["config", "use-context", "nope"]),
        with(&["--context", "nope", "config", "current-context"]),
    ] {
        let run = run_with(args).await;
        let err = run.fails(2);
        assert!(
            err.contains("no context named \"nope\" (contexts: down, local)"),
            "{run}"
        );
    }
    assert_eq!(
        run_with(with(&["config", "current-context"])).await.ok(),
        "local\n"
    );

    // The one-hub format (what `hub serve` writes) works as before and has no contexts.
    let single = hub.config_path();
    let single = single.to_str().unwrap();
    let run = Cli::new(&["--config", single, "get", "clusters", "-o", "name"])
        .run()
        .await;
    assert_eq!(run.ok(), "managedcluster/c1\n", "{run}");
    let run = Cli::new(&["--config", single, "config", "get-contexts"])
        .run()
        .await;
    assert_eq!(run.code, 0, "{run}");
    assert!(run.stderr.contains("No contexts in"), "{run}");
    Cli::new(&["--config", single, "config", "current-context"])
        .run()
        .await
        .fails(1);
    let run = Cli::new(&["--config", single, "--context", "prod", "get", "clusters"])
        .run()
        .await;
    assert!(
        run.fails(2)
            .contains("no context named \"prod\" (contexts: none)"),
        "{run}"
    );
}

/// The usage line of every verb shows no connection flag as required: they may come from
/// the environment or the client config file.
#[tokio::test]
async fn usage_lines_do_not_require_connection_flags() {
    for verb in [
        "apply",
        "diff",
        "wait work",
        "describe work",
        "get works",
        "get clusters",
        "delete work",
        "label cluster",
        "token create",
        "accept",
        "revoke cluster",
        "version",
        "config use-context",
    ] {
        let mut args: Vec<&str> = verb.split(' ').collect();
        args.push("-h");
        let run = Cli::new(&args).run().await;
        let usage = run
            .ok()
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap()
            .to_string();
        for flag in ["--server", "--token", "--ca-file", "--config", "--context"] {
            assert!(!usage.contains(flag), "{verb}: {usage}");
        }
    }
}
