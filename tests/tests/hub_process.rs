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

/// A tmpfs of a given size mounted on a temporary dir, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount -t tmpfs failed (the test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Grows (or shrinks) it in place, without unmounting.
    fn resize(&self, size: &str) {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes a file until the disk is full.
    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path().join("filler")).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        // Whatever is left is smaller than a block: take it byte by byte.
        while f.write_all(&[0]).is_ok() && f.flush().is_ok() {}
        let _ = f.sync_all();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the hub's process may still hold files there for a moment.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A work with some kilobytes of data, so that a write needs new pages.
fn bulky_work(cluster: &str, name: &str) -> ManifestWork {
    ManifestWork::new(
        cluster,
        name,
        vec![
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"k": "x".repeat(8 * 1024)}}),
        ],
    )
}

/// A SQLite hub whose disk fills up answers writes with 503 and is not ready, loses no
/// acknowledged write, and once the disk grows again (no restart) writes and is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_hub_recovers_from_a_full_disk_without_a_restart() {
    init();
    let disk = SmallDisk::mount("4m");
    let data_dir = disk.path().join("hub");
    let hub = HubProcess::start(&data_dir, &[]).await.unwrap();
    let client = hub.client().unwrap();
    let ready = || {
        let client = client.clone();
        async move {
            client
                .request(reqwest::Method::GET, "/readyz")
                .send()
                .await
                .map(|r| r.status())
        }
    };
    client
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    let mut acked = Vec::new();
    for i in 0..5 {
        let name = format!("before-{i}");
        client
            .put_work(&bulky_work("c1", &name), None)
            .await
            .unwrap();
        acked.push(name);
    }

    disk.fill();
    let mut refused = None;
    for i in 0..200 {
        let name = format!("full-{i}");
        match client.put_work(&bulky_work("c1", &name), None).await {
            Ok(_) => acked.push(name),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("200 writes of 8 KiB each fit on a full 4 MiB disk");
    assert_eq!(
        refused.status(),
        Some(reqwest::StatusCode::SERVICE_UNAVAILABLE),
        "{refused}"
    );
    assert_eq!(
        ready().await.unwrap(),
        reqwest::StatusCode::SERVICE_UNAVAILABLE,
        "/readyz says ok while writes cannot commit"
    );

    disk.resize("64m");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = None;
    let mut recovered = false;
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        let name = format!("after-{i}");
        match client.put_work(&bulky_work("c1", &name), None).await {
            Ok(_) => {
                acked.push(name);
                recovered = true;
                break;
            }
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "writes still fail 30 s after the disk grew: {last:?}; log:\n{}",
        hub.log_text()
    );
    // Every pooled connection is usable again, not just the one that answered first.
    for j in 0..30 {
        let name = format!("again-{j}");
        client
            .put_work(&bulky_work("c1", &name), None)
            .await
            .unwrap_or_else(|e| panic!("write {j} after recovery: {e}"));
        acked.push(name);
    }
    assert_eq!(ready().await.unwrap(), reqwest::StatusCode::OK);
    for name in &acked {
        let w = client
            .get_work("c1", name, &ListOptions::default())
            .await
            .unwrap_or_else(|e| panic!("acknowledged work {name} lost: {e}"));
        assert_eq!(
            w.value.spec.workload.manifests[0]["data"]["k"]
                .as_str()
                .map(str::len),
            Some(8 * 1024)
        );
    }
    drop(hub);
}
