//! A rolling upgrade of hubs on one Postgres, with the previous release's binary
//! (`testkit::releases::PREVIOUS`, built by `tests/tools/build-release.sh`) beside the
//! current one, as an operator upgrades a fleet of hubs behind a balancer:
//!
//! 1. two hubs of the previous release create the schema and serve behind HAProxy (TCP,
//!    TLS passed through); 20 simulated agents and two writers use the balancer, and a
//!    blocking reader follows the writers' cluster;
//! 2. two current hubs start on the same database (applying the migrations the previous
//!    release lacks, if any) and join the balancer: for a while old and new serve side by
//!    side, and one more writer writes to each hub directly, so both binaries take writes
//!    and serve the same change feed;
//! 3. the old hubs are stopped as systemd stops them (SIGTERM): their agents move to the
//!    new hubs.
//!
//! Nothing acknowledged may be lost, the reader may see no duplicate or missing change,
//! no client may see an error, and every agent renews again. Then an old hub started on the
//! upgraded database either serves (no migration differs) or refuses with the message
//! docs/operations.md shows (a newer schema), never anything in between.

use std::time::{Duration, Instant};

use api::{ClientConfig, HubClient, ManagedCluster};
use testkit::ha::{Fleet, Reader, Verdict, Writers};
use testkit::patroni::HaProxy;
use testkit::postgres::TestPostgres;
use testkit::procs::{HubProcess, free_port};
use testkit::releases::{self, PREVIOUS, migration_versions};

const LEASE: Duration = Duration::from_secs(3);
const AGENTS: usize = 20;
const PACE: Duration = Duration::from_millis(200);

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Writers and a reader of one cluster.
struct Load {
    writers: Writers,
    reader: Reader,
}

async fn load(admin: &HubClient, cfg: &ClientConfig, cluster: &str, writers: usize) -> Load {
    admin
        .put_cluster(&ManagedCluster::new(cluster, Default::default()))
        .await
        .unwrap();
    Load {
        writers: Writers::start(cfg, cluster, writers, PACE).unwrap(),
        reader: Reader::start(&HubClient::new(cfg).unwrap(), cluster),
    }
}

/// Stops the load and checks it: something acknowledged, nothing failed, lost, duplicated
/// or missed.
async fn check(what: &str, admin: &HubClient, load: Load) {
    let writes = load.writers.stop().await;
    let verdict = Verdict::check(admin, writes, load.reader).await.unwrap();
    eprintln!(
        "rolling_upgrade: {what}: acked {}, failed {} ({:?}), lost {}, duplicate {}, missing {}",
        verdict.acked,
        verdict.failed,
        verdict.first_error,
        verdict.lost.len(),
        verdict.duplicates.len(),
        verdict.missing.len()
    );
    assert!(verdict.acked > 0, "{what}: nothing acknowledged");
    assert!(verdict.clean(), "{what}: {verdict:?}");
    assert_eq!(
        verdict.failed, 0,
        "{what}: a client saw errors: {verdict:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn old_and_new_hubs_serve_side_by_side_and_the_old_ones_stop_unnoticed() {
    init();
    let _ = testkit::fleet::raise_open_file_limit();
    // First: building the old release relinks this workspace's hub afterwards.
    let old = releases::release(PREVIOUS).expect("the previous release's hub");
    eprintln!("rolling_upgrade: {PREVIOUS} hub at {}", old.hub.display());
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let lease = format!("{}s", LEASE.as_secs());
    let args = [
        "--database-url",
        url.as_str(),
        "--lease-interval",
        lease.as_str(),
        "--advertise-address",
        "localhost",
    ];
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let mut old_hubs = Vec::new();
    for i in 0..2 {
        old_hubs.push(
            HubProcess::start_binary(&old.hub, dirs[i].path(), ports[i], &args)
                .await
                .expect("an old hub"),
        );
    }
    // All four servers from the start; the new ones are down until they listen.
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("    server hub{i} 127.0.0.1:{p} check\n"))
        .collect();
    let lb = HaProxy::start(
        &format!(
            "    balance leastconn\n    option httpchk GET /healthz\n    \
             http-check expect status 200\n    \
             default-server inter 1s fastinter 500ms downinter 500ms fall 2 rise 1 \
             on-marked-down shutdown-sessions check-ssl verify none\n{servers}"
        ),
        None,
    )
    .expect("hub balancer");
    let mut cfg = ClientConfig::load(&old_hubs[0].client_config_path()).unwrap();
    cfg.server = format!("https://localhost:{}", lb.port());
    let admin = HubClient::new(&cfg).unwrap();
    // Until HAProxy has marked the new hubs' ports down.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let fleet = Fleet::join(&admin, &cfg, "ru-agent", AGENTS, LEASE)
        .await
        .expect("agents join through the old hubs");
    fleet
        .wait_all_renewed(Instant::now(), Duration::from_secs(60))
        .await
        .expect("every agent renews");
    let through_lb = load(&admin, &cfg, "ru-balancer", 2).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The current release joins.
    let mut new_hubs = Vec::new();
    for i in 2..4 {
        new_hubs.push(
            HubProcess::start_on(dirs[i].path(), ports[i], &args)
                .await
                .expect("a new hub on the old hubs' database"),
        );
    }
    let mut direct = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut hub_cfg = cfg.clone();
        hub_cfg.server = format!("https://localhost:{port}");
        direct.push(load(&admin, &hub_cfg, &format!("ru-hub{i}"), 1).await);
    }
    eprintln!("rolling_upgrade: 2 old and 2 new hubs serving");
    tokio::time::sleep(Duration::from_secs(8)).await;
    for (i, d) in direct.into_iter().enumerate() {
        let what = if i < 2 { "old hub" } else { "new hub" };
        check(&format!("{what} {i}, side by side"), &admin, d).await;
    }

    // The old hubs stop, as `systemctl stop` stops them.
    let stopped = Instant::now();
    for hub in &mut old_hubs {
        hub.signal("TERM").unwrap();
    }
    for hub in &mut old_hubs {
        assert!(
            hub.wait_exit(Duration::from_secs(20)).unwrap(),
            "an old hub did not exit cleanly:\n{}",
            hub.log_text()
        );
    }
    let agents_back = fleet
        .wait_all_renewed(stopped, Duration::from_secs(30))
        .await
        .unwrap_or_else(|| {
            panic!(
                "{} agents did not renew after the old hubs stopped",
                fleet.not_renewed_since(stopped)
            )
        });
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!(
        "rolling_upgrade: old hubs stopped; every agent renewed within {agents_back:.1} s ({})",
        through_lb.writers.timeline(stopped)
    );
    check("through the balancer", &admin, through_lb).await;
    fleet.stop().await;

    // An old hub started again on the upgraded schema: serves, or refuses cleanly.
    let current = migration_versions(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations/postgres"),
    )
    .unwrap();
    let previous = old
        .migrations("postgres")
        .expect("the previous release's source tree");
    assert!(
        current.starts_with(&previous),
        "the previous release's migrations {previous:?} must be a prefix of {current:?}"
    );
    let again = tempfile::tempdir().unwrap();
    let port = free_port();
    let restarted = HubProcess::start_binary(&old.hub, again.path(), port, &args).await;
    if current == previous {
        let _hub = restarted.expect("no migration differs: the old hub serves");
        // Its data dir is new, so its client.yaml has no admin token: the fleet's config.
        let mut direct = cfg.clone();
        direct.server = format!("https://localhost:{port}");
        let works = HubClient::new(&direct)
            .unwrap()
            .list_works(Some("ru-balancer"), &Default::default())
            .await
            .unwrap();
        assert!(!works.value.items.is_empty());
    } else {
        let refused = format!("{:#}", restarted.err().expect("the old hub must refuse"));
        assert!(
            refused.contains("schema is newer than this hub"),
            "{refused}"
        );
    }
    drop(lb);
    drop(new_hubs);
}
