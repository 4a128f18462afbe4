//! The real `hub` binary as processes: restarts, `kill -9`, graceful shutdown, and two hubs
//! on one Postgres waking each other's waiters.

use std::time::{Duration, Instant};

use api::{ListOptions, ManagedCluster, ManifestWork};
use serde_json::json;
use testkit::postgres::TestPostgres;
use testkit::procs::HubProcess;

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn work(cluster: &str, name: &str) -> ManifestWork {
    ManifestWork::new(
        cluster,
        name,
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"k": "v"}}),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_data_survives_kill_9_and_restart() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::start(dir.path(), &[]).await.unwrap();
    let client = hub.client().unwrap();
    client
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    // Writers run while the hub is killed; every acknowledged write must be there after.
    let mut writers = Vec::new();
    for t in 0..8 {
        let client = client.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                let name = format!("w-{t}-{i}");
                match client.put_work(&work("c1", &name), None).await {
                    Ok(_) => acked.push(name),
                    Err(_) => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let token = client.clone();
    let started = Instant::now();
    hub.kill_and_restart().await.unwrap();
    let restart = started.elapsed();
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 50,
        "the writers wrote too little before the kill: {}",
        acked.len()
    );
    let client = hub.client().unwrap();
    let listed = client
        .list_works(Some("c1"), &ListOptions::default())
        .await
        .unwrap()
        .value;
    let names: std::collections::HashSet<String> =
        listed.items.into_iter().map(|w| w.metadata.name).collect();
    let lost: Vec<&String> = acked.iter().filter(|n| !names.contains(*n)).collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost after kill -9: {lost:?}"
    );
    println!(
        "kill -9 with 8 writers: {} acknowledged writes, none lost; restart to ready took {restart:?}",
        acked.len()
    );
    drop(token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let mut hub = HubProcess::start(dir.path(), &[]).await.unwrap();
    let client = hub.client().unwrap();
    client
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    let index = client
        .list_works(Some("c1"), &ListOptions::default())
        .await
        .unwrap()
        .index;
    let waiter = {
        let client = client.clone();
        tokio::spawn(async move {
            let opts = ListOptions {
                index: Some(index),
                wait: Some(Duration::from_secs(2)),
                ..Default::default()
            };
            client.list_works(Some("c1"), &opts).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    hub.signal("TERM").unwrap();
    let r = waiter.await.unwrap();
    assert!(r.is_ok(), "the in-flight blocking query was cut: {r:?}");
    assert!(
        hub.wait_exit(Duration::from_secs(10)).unwrap(),
        "hub serve did not exit 0 after SIGTERM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_on_one_postgres_wake_each_other() {
    init();
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let args = [
        "--database-url",
        url.as_str(),
        "--admin-token",
        "shared-admin-token",
    ];
    let a = HubProcess::start(d1.path(), &args).await.unwrap();
    let b = HubProcess::start(d2.path(), &args).await.unwrap();
    let (ca, cb) = (a.client().unwrap(), b.client().unwrap());
    let info = |c: &api::HubClient| {
        let c = c.clone();
        async move {
            c.send::<serde_json::Value>(c.request(reqwest::Method::GET, "/api/v1/cluster-info"))
                .await
                .unwrap()
                .value["caHash"]
                .clone()
        }
    };
    assert_eq!(
        info(&ca).await,
        info(&cb).await,
        "both hubs serve under the CA in the database"
    );

    ca.put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    let mut latencies = Vec::new();
    for i in 0..5 {
        let index = cb
            .list_works(Some("c1"), &ListOptions::default())
            .await
            .unwrap()
            .index;
        let waiter = {
            let cb = cb.clone();
            tokio::spawn(async move {
                let opts = ListOptions {
                    index: Some(index),
                    wait: Some(Duration::from_secs(30)),
                    ..Default::default()
                };
                let r = cb.list_works(Some("c1"), &opts).await.unwrap();
                (r, Instant::now())
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let name = format!("w{i}");
        ca.put_work(&work("c1", &name), None).await.unwrap();
        let written = Instant::now();
        let (r, woke) = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("hub B's waiter never woke")
            .unwrap();
        assert!(
            r.value.items.iter().any(|w| w.metadata.name == name),
            "hub B's answer lacks the write made on hub A"
        );
        latencies.push(woke.saturating_duration_since(written));
    }
    latencies.sort();
    println!("write on hub A -> waiter on hub B woke after: {latencies:?}");
    assert!(
        latencies[2] < Duration::from_secs(5),
        "waking across hubs took {latencies:?}"
    );
}

/// `--admin-token-file` gives the admin token without showing it in `ps`; `--admin-token`
/// still works but warns that it does show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_from_a_file_and_a_warning_for_the_flag() {
    init();
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("admin-token");
    std::fs::write(&file, "token-from-a-file\n").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(
        &dir.path().join("hub"),
        &["--admin-token-file", file.to_str().unwrap()],
    )
    .await
    .unwrap();
    let cfg = api::ClientConfig::load(&hub.client_config_path()).unwrap();
    assert_eq!(cfg.token.as_deref(), Some("token-from-a-file"));
    hub.client()
        .unwrap()
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .expect("the token from the file is the admin token");
    assert!(
        !hub.log_text().contains("visible to every user"),
        "{}",
        hub.log_text()
    );
    drop(hub);

    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(
        &dir.path().join("hub"),
        &["--admin-token", "token-on-the-command-line"],
    )
    .await
    .unwrap();
    assert!(
        hub.log_text().contains("visible to every user in `ps`"),
        "no warning for --admin-token; log:\n{}",
        hub.log_text()
    );
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A data dir others may write (like /tmp, mode 1777) is refused and keeps its mode; an
/// existing private one keeps its mode too (a missing one is created 0700: `hub::server`'s
/// unit tests, as the test harness makes the dir for the hub's log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_dir_is_private_and_never_chmoded() {
    init();
    let root = tempfile::tempdir().unwrap();
    let shared = root.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o1777);
    let refused = HubProcess::start(&shared, &[]).await;
    let err = format!("{:#}", refused.err().expect("a 1777 data dir was accepted"));
    assert!(err.contains("writable by other users"), "{err}");
    assert_eq!(
        mode(&shared),
        0o1777,
        "the hub changed the mode of a shared dir"
    );
    assert!(!shared.join("hub.db").exists());

    let existing = root.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    set_mode(&existing, 0o750);
    let hub = HubProcess::start(&existing, &[]).await.unwrap();
    assert_eq!(
        mode(&existing),
        0o750,
        "the hub changed the mode of a dir it did not create"
    );
    drop(hub);
}
