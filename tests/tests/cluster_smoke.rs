//! The Kubernetes test-cluster harness against the real binaries: what a test can do with
//! each option, that RBAC is enforced, that clusters are independent, and that they go
//! away (on drop, on panic, and when the test process is killed).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;
use testkit::cluster::{ClusterMode, ClusterOptions, NODE_NAME, TestCluster};

/// Set in the child process of `a_killed_test_process_leaves_no_cluster_behind`.
const HELPER_ENV: &str = "FLEETHUB_CLUSTER_SMOKE_HELPER";

/// How long a Deployment may take to become Available in a full cluster. It takes well
/// under a second on an idle machine; CI runs several clusters on two cores.
const AVAILABLE_DEADLINE: Duration = Duration::from_secs(90);

#[tokio::test]
async fn apiserver_only_serves_namespaces_crds_custom_resources_and_deployments()
-> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::apiserver_only()).await?;
    eprintln!(
        "apiserver-only cluster started in {:.1?}, RSS {} MiB",
        cluster.startup_time(),
        cluster.rss_kib()? / 1024
    );
    assert_eq!(cluster.mode(), ClusterMode::ApiserverOnly);
    let names: Vec<&str> = cluster.pids().iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["etcd", "kube-apiserver"]);
    let client = cluster.client();

    // The release k8s-openapi's v1_33 feature speaks, with a version clients can parse.
    let version = client.apiserver_version().await?;
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    assert!(version.git_version.starts_with("v1.33."), "{version:?}");

    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &namespace("smoke"))
        .await?;
    assert!(namespaces.get_opt("smoke").await?.is_some());

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.smoke.fleethub.test" },
        "spec": {
            "group": "smoke.fleethub.test",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "properties": { "size": { "type": "integer" } },
                    }},
                }},
            }],
        },
    }))?;
    crds.create(&PostParams::default(), &crd).await?;
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(
            crds,
            "widgets.smoke.fleethub.test",
            conditions::is_crd_established(),
        ),
    )
    .await
    .context("the CRD did not become Established within 30 s")??;

    let gvk = GroupVersionKind::gvk("smoke.fleethub.test", "v1", "Widget");
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "smoke",
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    let widget = |size: serde_json::Value| -> anyhow::Result<DynamicObject> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "smoke.fleethub.test/v1",
            "kind": "Widget",
            "metadata": { "name": "w1" },
            "spec": { "size": size },
        }))?)
    };
    widgets
        .create(&PostParams::default(), &widget(json!(3))?)
        .await?;
    let stored = widgets.get("w1").await?;
    assert_eq!(stored.data["spec"]["size"], 3);
    // The CRD's schema is enforced by the real server.
    match widgets
        .create(&PostParams::default(), &widget(json!("big"))?)
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 422, "{status:?}"),
        other => bail!("a widget violating the schema was not rejected: {other:?}"),
    }

    // Server-side apply, as the klusterlet does.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "smoke");
    deployments
        .patch(
            "web",
            &PatchParams::apply("cluster-smoke"),
            &Patch::Apply(deployment("web", 2)),
        )
        .await?;
    let stored = deployments.get("web").await?;
    assert_eq!(stored.spec.and_then(|s| s.replicas), Some(2));
    let managers: Vec<String> = stored
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|f| f.manager)
        .collect();
    assert_eq!(managers, ["cluster-smoke"]);
    Ok(())
}

#[tokio::test]
async fn full_cluster_makes_a_deployment_available() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::full()).await?;
    eprintln!(
        "full cluster started in {:.1?}, RSS {} MiB",
        cluster.startup_time(),
        cluster.rss_kib()? / 1024
    );
    let client = cluster.client();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace("apps"))
        .await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "apps");
    let created = Instant::now();
    deployments
        .patch(
            "web",
            &PatchParams::apply("cluster-smoke"),
            &Patch::Apply(deployment("web", 2)),
        )
        .await?;

    let deadline = created + AVAILABLE_DEADLINE;
    loop {
        let status = deployments.get("web").await?.status.unwrap_or_default();
        if status.available_replicas == Some(2) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the Deployment was not Available within {AVAILABLE_DEADLINE:?}: {status:?}\n\
                 controller-manager log:\n{}\nscheduler log:\n{}\nkwok log:\n{}",
                cluster.log("kube-controller-manager"),
                cluster.log("kube-scheduler"),
                cluster.log("kwok")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("Deployment available after {:.1?}", created.elapsed());

    // Real pods behind it: scheduled by kube-scheduler onto the KWOK node, Running.
    let pods = Api::<Pod>::namespaced(client, "apps")
        .list(&ListParams::default().labels("app=web"))
        .await?;
    assert_eq!(pods.items.len(), 2);
    for pod in pods.items {
        assert_eq!(
            pod.spec.and_then(|s| s.node_name).as_deref(),
            Some(NODE_NAME)
        );
        assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));
    }
    Ok(())
}

#[tokio::test]
async fn an_identity_without_rights_gets_403_forbidden() -> anyhow::Result<()> {
    let cluster = TestCluster::start(ClusterOptions::apiserver_only()).await?;
    let nobody = cluster.user_client("nobody", &[]).await?;

    let forbidden = |result: Result<_, kube::Error>, what: &str| match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {
            assert_eq!(status.reason, "Forbidden", "{status:?}");
            assert!(
                status.message.contains("User \"nobody\""),
                "{}",
                status.message
            );
        }
        other => panic!("{what} by a user without rights: expected 403, got {other:?}"),
    };
    forbidden(
        Api::<Namespace>::all(nobody.clone())
            .list(&ListParams::default())
            .await
            .map(drop),
        "listing namespaces",
    );
    let config_maps: Api<ConfigMap> = Api::namespaced(nobody.clone(), "default");
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": { "name": "note" },
        "data": { "text": "hello" },
    }))?;
    forbidden(
        config_maps
            .create(&PostParams::default(), &config_map)
            .await
            .map(drop),
        "creating a ConfigMap",
    );

    // The 403 is RBAC's doing: a Role and RoleBinding grant exactly what they say.
    let admin = cluster.client();
    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "configmap-writer" },
        "rules": [{ "apiGroups": [""], "resources": ["configmaps"],
                    "verbs": ["create", "get", "list"] }],
    }))?;
    Api::<Role>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": { "name": "nobody-writes-configmaps" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "configmap-writer" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                       "name": "nobody" }],
    }))?;
    Api::<RoleBinding>::namespaced(admin, "default")
        .create(&PostParams::default(), &binding)
        .await?;
    // The authorizer sees new bindings through a watch, a moment later.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match config_maps
            .create(&PostParams::default(), &config_map)
            .await
        {
            Ok(_) => break,
            Err(kube::Error::Api(status)) if status.code == 403 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => bail!("creating a ConfigMap after the RoleBinding: {err}"),
        }
    }
    forbidden(
        Api::<Namespace>::all(nobody)
            .list(&ListParams::default())
            .await
            .map(drop),
        "listing namespaces (not granted)",
    );
    Ok(())
}

#[tokio::test]
async fn two_clusters_run_side_by_side_and_stop_separately() -> anyhow::Result<()> {
    let (a, b) = tokio::try_join!(
        TestCluster::start(ClusterOptions::apiserver_only()),
        TestCluster::start(ClusterOptions::apiserver_only()),
    )?;
    assert_ne!(a.server_url(), b.server_url());
    assert_ne!(a.dir(), b.dir());

    let (ns_a, ns_b) = (
        Api::<Namespace>::all(a.client()),
        Api::<Namespace>::all(b.client()),
    );
    ns_a.create(&PostParams::default(), &namespace("only-in-a"))
        .await?;
    assert!(ns_a.get_opt("only-in-a").await?.is_some());
    assert!(ns_b.get_opt("only-in-a").await?.is_none());

    // Each cluster's CA signs only its own identities.
    let b_kubeconfig = b.kubeconfig_path().to_path_buf();
    let mut a_with_b_identity = a.config().clone();
    let b_config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&b_kubeconfig)?,
        &Default::default(),
    )
    .await?;
    a_with_b_identity.auth_info = b_config.auth_info.clone();
    let stranger = kube::Client::try_from(a_with_b_identity)?;
    match Api::<Namespace>::all(stranger)
        .list(&ListParams::default())
        .await
    {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => bail!("cluster a accepted cluster b's admin certificate: {other:?}"),
    }

    let (a_pids, a_dir, a_url) = (a.pids(), a.dir().to_path_buf(), a.server_url().to_owned());
    tokio::task::spawn_blocking(move || drop(a)).await?;
    assert_gone(&a_pids, &a_dir, &a_url, Duration::ZERO);

    // b did not notice.
    assert!(ns_b.get_opt("default").await?.is_some());
    assert!(b_kubeconfig.exists());
    Ok(())
}

#[tokio::test]
async fn tests_can_share_one_cluster_with_a_namespace_each() -> anyhow::Result<()> {
    let cluster = TestCluster::shared(ClusterMode::ApiserverOnly).await?;
    let again = TestCluster::shared(ClusterMode::ApiserverOnly).await?;
    assert!(
        std::ptr::eq(cluster, again),
        "the shared cluster started twice"
    );
    assert_eq!(cluster.mode(), ClusterMode::ApiserverOnly);

    let (a, b) = (
        cluster.fresh_namespace().await?,
        cluster.fresh_namespace().await?,
    );
    assert_ne!(a, b);
    let config_map: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "same" } }))?;
    // The same name in both namespaces: no conflict, and each sees only its own.
    for namespace in [&a, &b] {
        Api::<ConfigMap>::namespaced(cluster.client(), namespace)
            .create(&PostParams::default(), &config_map)
            .await?;
    }
    let in_a = Api::<ConfigMap>::namespaced(cluster.client(), &a)
        .list(&ListParams::default().fields("metadata.name=same"))
        .await?;
    assert_eq!(in_a.items.len(), 1);
    assert_eq!(
        in_a.items[0].metadata.namespace.as_deref(),
        Some(a.as_str())
    );
    Ok(())
}

#[test]
fn a_panicking_test_still_stops_its_cluster() {
    let mut seen = None;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let cluster = runtime
            .block_on(TestCluster::start(ClusterOptions::apiserver_only()))
            .expect("start a cluster");
        seen = Some((
            cluster.pids(),
            cluster.dir().to_path_buf(),
            cluster.server_url().to_owned(),
        ));
        panic!("the test fails while its cluster runs");
    }));
    assert!(result.is_err());
    let (pids, dir, url) = seen.expect("the cluster started");
    assert_gone(&pids, &dir, &url, Duration::ZERO);
}

/// Runs this test binary again as a child that starts a cluster and reports it, kills
/// the child with SIGKILL (no destructor runs) and checks that the watchdog stops the
/// cluster's processes and removes its directory. In the child, this same test is the
/// helper: it starts the cluster, prints it and waits to be killed.
#[test]
fn a_killed_test_process_leaves_no_cluster_behind() -> anyhow::Result<()> {
    if std::env::var_os(HELPER_ENV).is_some() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let cluster = runtime.block_on(TestCluster::start(ClusterOptions::apiserver_only()))?;
        let pids: Vec<String> = cluster.pids().iter().map(|(_, p)| p.to_string()).collect();
        println!(
            "CLUSTER {} {} {}",
            cluster.server_url(),
            cluster.dir().display(),
            pids.join(",")
        );
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "a_killed_test_process_leaves_no_cluster_behind",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    let mut reported = None;
    for line in stdout.lines() {
        // libtest prints the test's name on the same line first.
        let line = line?;
        if let Some((_, rest)) = line.split_once("CLUSTER ") {
            let fields: Vec<&str> = rest.split(' ').collect();
            let [url, dir, pids] = fields[..] else {
                bail!("unexpected report {rest:?}");
            };
            let pids = pids
                .split(',')
                .map(|p| Ok(("process", p.parse()?)))
                .collect::<anyhow::Result<Vec<(&str, u32)>>>()?;
            reported = Some((url.to_owned(), PathBuf::from(dir), pids));
            break;
        }
    }
    child.kill()?;
    let status = child.wait()?;
    let (url, dir, pids) =
        reported.with_context(|| format!("the helper ({status}) reported no cluster"))?;
    assert!(dir.exists(), "the cluster was gone before its test process");
    // The watchdog notices at once; the processes get 5 s before SIGKILL.
    assert_gone(&pids, &dir, &url, Duration::from_secs(20));
    Ok(())
}

fn namespace(name: &str) -> Namespace {
    serde_json::from_value(json!({ "metadata": { "name": name } })).expect("a namespace")
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                // KWOK never pulls it.
                "spec": { "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] },
            },
        },
    }))
    .expect("a deployment")
}

/// Asserts, within `patience`, that the processes no longer run (a zombie left to an init
/// process that reaps late counts as stopped), the apiserver no longer accepts
/// connections and the directory is gone.
fn assert_gone(pids: &[(&str, u32)], dir: &Path, server_url: &str, patience: Duration) {
    let port: u16 = server_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the server URL");
    let deadline = Instant::now() + patience;
    loop {
        let running: Vec<_> = pids.iter().filter(|(_, pid)| running(*pid)).collect();
        let accepting =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
                .is_ok();
        let dir_exists = dir.exists();
        if running.is_empty() && !accepting && !dir_exists {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "cluster still around: running {running:?}, port {port} accepting={accepting}, \
                 {} exists={dir_exists}",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        !status
            .lines()
            .any(|line| line.starts_with("State:") && line.contains('Z'))
    })
}
