//! The hub through the failures of a highly available Postgres (Patroni, synchronous
//! replication, HAProxy routing to the leader) and of one of three hubs behind a TCP
//! balancer, all real processes (`testkit::patroni`).
//!
//! One test, one rig, scenarios in turn: three `hub serve` share the Patroni cluster's
//! database through its HAProxy and sit behind a second HAProxy (TLS passed through); four
//! writers create works through the hubs' balancer, 100 simulated agents renew their leases
//! and block on their works through it, and a blocking reader follows the writers' cluster.
//! Then, each under that load:
//!
//! 1. `kill -9` of the leader's postmaster (Patroni restarts it, or fails over);
//! 2. `kill -9` of the whole leader node, Patroni and Postgres (the lock expires, the
//!    synchronous standby takes over); the node is then started again and rejoins;
//! 3. `patronictl switchover --force`;
//! 4. `kill -9` of one hub: its agents' connections drop and they land on the others.
//!
//! Each must lose no acknowledged write (every one read back), show the blocking reader no
//! duplicate or missing change, and come back within generous bounds; the seconds are
//! printed (`postgres_ha:` lines, run with `--nocapture`) for docs/benchmarks.md.
//!
//! `FLEETHUB_HA_FAULTS` (a comma-separated list of `postgres`, `node`, `switchover`, `hub`)
//! runs those faults in that order instead, to repeat one; `FLEETHUB_HA_LOG_DIR` keeps the
//! hubs', HAProxys' and Patroni's logs there (they are kept in a temporary directory when
//! the test fails, and the output says where).

use std::time::{Duration, Instant};

use api::{ClientConfig, HubClient, ManagedCluster};
use testkit::ha::{Fleet, KeptLogs, Reader, Verdict, Writers};
use testkit::patroni::{HaProxy, PatroniCluster};
use testkit::procs::HubProcess;

/// Lease interval of the hubs (what agents renew at).
const LEASE: Duration = Duration::from_secs(3);
/// Simulated agents.
const AGENTS: usize = 100;
/// Writers, each starting a write every `PACE`.
const WRITERS: usize = 4;
const PACE: Duration = Duration::from_millis(250);
/// How far the hub moves its index on a new timeline (`hub/src/store/pg_batch.rs`).
const TIMELINE_GAP: u64 = 1_000_000;
/// Generous bounds: Patroni's TTL is 20 s, HAProxy needs about 1.5 s to mark a server
/// down and 0.5 s to mark one up (`testkit::patroni::HAPROXY_CHECKS`), and CI shares two
/// cores among several test processes.
const WRITES_BACK_WITHIN: Duration = Duration::from_secs(90);
const AGENTS_BACK_WITHIN: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    KillPostgres,
    KillNode,
    Switchover,
    KillHub,
}

/// The faults to run: `FLEETHUB_HA_FAULTS`, else each once.
fn faults() -> Vec<Fault> {
    let Ok(list) = std::env::var("FLEETHUB_HA_FAULTS") else {
        return vec![
            Fault::KillPostgres,
            Fault::KillNode,
            Fault::Switchover,
            Fault::KillHub,
        ];
    };
    list.split(',')
        .map(|f| match f.trim() {
            "postgres" => Fault::KillPostgres,
            "node" => Fault::KillNode,
            "switchover" => Fault::Switchover,
            "hub" => Fault::KillHub,
            other => panic!(
                "FLEETHUB_HA_FAULTS: unknown fault {other:?} (postgres, node, switchover, hub)"
            ),
        })
        .collect()
}

struct Figures {
    fault: Fault,
    leader_back: Option<f64>,
    writes_back: f64,
    agents_back: f64,
    verdict: Verdict,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_hub_survives_postgres_failovers_and_agents_survive_a_hub_kill() {
    let _ = testkit::fleet::raise_open_file_limit();
    let mut db = PatroniCluster::start(2).await.expect("patroni cluster");
    eprintln!("postgres_ha: cluster up\n{}", db.members().await);

    let url = db.url();
    let lease = format!("{}s", LEASE.as_secs());
    let args = [
        "--database-url",
        url.as_str(),
        "--lease-interval",
        lease.as_str(),
        // The balancer's name, as agents and CI address it; the serving certificate must
        // cover it (127.0.0.1 is always covered).
        "--advertise-address",
        "localhost",
    ];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut hubs = Vec::new();
    for d in &dirs {
        hubs.push(HubProcess::start(d.path(), &args).await.expect("hub"));
    }
    // Pass-through TLS: HAProxy balances TCP; a hub is taken out when /healthz stops
    // answering (not /readyz, which fails on every hub alike while the database fails
    // over and would leave the balancer with no server at all).
    let servers: String = hubs
        .iter()
        .enumerate()
        .map(|(i, h)| format!("    server hub{i} 127.0.0.1:{} check\n", h.port))
        .collect();
    let lb = HaProxy::start(
        &format!(
            "    balance leastconn\n    option httpchk GET /healthz\n    \
             http-check expect status 200\n    \
             default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions \
             check-ssl verify none\n{servers}"
        ),
        None,
    )
    .expect("hub balancer");
    eprintln!("postgres_ha: 3 hubs behind HAProxy on port {}", lb.port());
    // Declared after every process of the rig: dropped (and so copied) before they stop.
    let mut logs = KeptLogs::new();
    for (name, path) in db.log_files() {
        logs.add(name, path);
    }
    for (i, d) in dirs.iter().enumerate() {
        logs.add(format!("hub{i}.log"), d.path().join("hub.log"));
    }
    logs.add("haproxy-hubs.log", lb.log_path());
    let mut cfg = ClientConfig::load(&hubs[0].client_config_path()).unwrap();
    cfg.server = format!("https://localhost:{}", lb.port());
    let admin = HubClient::new(&cfg).unwrap();

    let fleet = Fleet::join(&admin, &cfg, "ha-agent", AGENTS, LEASE)
        .await
        .expect("agents join");
    // Every agent renews once before any fault.
    let joined = Instant::now();
    fleet
        .wait_all_renewed(joined, Duration::from_secs(60))
        .await
        .expect("every agent renews");
    eprintln!("postgres_ha: {AGENTS} agents joined and renewing");

    let mut figures = Vec::new();
    for (round, fault) in faults().into_iter().enumerate() {
        let cluster = format!("ha-{round}-{fault:?}").to_lowercase();
        admin
            .put_cluster(&ManagedCluster::new(&cluster, Default::default()))
            .await
            .unwrap();
        let writers = Writers::start(&cfg, &cluster, WRITERS, PACE).expect("writers");
        let reader = Reader::start(&HubClient::new(&cfg).unwrap(), &cluster);
        tokio::time::sleep(Duration::from_secs(5)).await;

        let leader = db.leader().await.expect("a leader before the fault");
        let at = Instant::now();
        let at_wall = chrono::Utc::now();
        // Wall-clock time, to find the fault in the kept logs.
        eprintln!(
            "postgres_ha: {fault:?} (leader node{leader}) at {}",
            at_wall.format("%H:%M:%S%.3f UTC")
        );
        match fault {
            Fault::KillPostgres => db.kill_postgres(leader).unwrap(),
            Fault::KillNode => db.kill_node(leader).unwrap(),
            Fault::Switchover => {
                let out = db.switchover().await.unwrap();
                eprintln!("postgres_ha: {out}");
            }
            Fault::KillHub => hubs[0].stop(),
        }
        // Poll Patroni, the writers and the agents until each is back.
        let mut leader_back = None;
        let mut seen_down = false;
        let mut writes_back = None;
        let mut agents_back = None;
        // A node kill or a switchover moves the leader: poll until Patroni shows the new
        // one too (writes may come back first, when HAProxy's check of the new leader
        // falls between two of our polls). A postmaster kill may never show a change.
        let leader_moves = matches!(fault, Fault::KillNode | Fault::Switchover);
        while at.elapsed() < AGENTS_BACK_WITHIN
            && (writes_back.is_none()
                || agents_back.is_none()
                || (leader_moves && leader_back.is_none()))
        {
            if leader_back.is_none() && fault != Fault::KillHub {
                match db.leader().await {
                    None => seen_down = true,
                    Some(l) if l != leader || seen_down => {
                        leader_back = Some(at.elapsed().as_secs_f64())
                    }
                    Some(_) => {}
                }
            }
            writes_back = writes_back.or(writers.writes_back_after(at));
            agents_back = agents_back.or(fleet.all_renewed_after(at));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let writes_back = writes_back.unwrap_or_else(|| {
            panic!(
                "{fault:?}: no write succeeded within {WRITES_BACK_WITHIN:?}\n{}",
                db.logs()
            )
        });
        assert!(
            writes_back < WRITES_BACK_WITHIN.as_secs_f64(),
            "{fault:?}: writes back after {writes_back} s"
        );
        let agents_back = agents_back.unwrap_or_else(|| {
            panic!(
                "{fault:?}: {} agents had not renewed within {AGENTS_BACK_WITHIN:?}",
                fleet.not_renewed_since(at)
            )
        });
        // Writes are back for good only once none has failed for a while: a switchover's
        // writes fail on and off until HAProxy has marked the old leader down and the new
        // one up, later than the first write that went through.
        let quiet = Duration::from_secs(3);
        while at.elapsed() < AGENTS_BACK_WITHIN
            && (writers.back_after(at).is_none()
                || writers.last_failure().is_some_and(|t| t.elapsed() < quiet))
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // A little steady load after recovery, then count.
        tokio::time::sleep(quiet).await;
        // From the fault until writes worked again (after the last failure), not just
        // until one went through (a switchover starts a few seconds after the command).
        let writes_back = writers.back_after(at).unwrap_or(writes_back);
        eprintln!("postgres_ha: {fault:?}: {}", writers.timeline(at));
        let writes = writers.stop().await;
        if leader_moves {
            // The promoted standby starts a new timeline, and the first write on it moves
            // the index past anything the old primary may have shown a hub (docs/operations.md,
            // "High availability"): the acknowledged indexes jump once by the gap.
            let mut indexes: Vec<u64> = writes.acks.iter().map(|a| a.index).collect();
            indexes.sort_unstable();
            let jumps = indexes
                .windows(2)
                .filter(|w| w[1] - w[0] > TIMELINE_GAP)
                .count();
            assert_eq!(
                jumps,
                1,
                "{fault:?}: the index jumps past the gap once ({} acks, {:?}..{:?})",
                indexes.len(),
                indexes.first(),
                indexes.last()
            );
        }
        let verdict = Verdict::check(&admin, writes, reader).await.unwrap();
        eprintln!(
            "postgres_ha: {fault:?}: leader back {leader_back:?} s, writes back {writes_back:.1} s, \
             agents renewed {agents_back:.1} s; acked {}, failed {} ({:?}), lost {}, \
             duplicate {}, missing {}, index regressions {}",
            verdict.acked,
            verdict.failed,
            verdict.first_error,
            verdict.lost.len(),
            verdict.duplicates.len(),
            verdict.missing.len(),
            verdict.index_regressions
        );
        assert!(verdict.acked > 0, "{fault:?}: nothing acknowledged");
        assert!(verdict.clean(), "{fault:?}: {verdict:?}");
        // Every agent kept renewing, so no cluster may have been marked unavailable (with
        // the unreachable taint, which moves placements), not even for a moment: the
        // Available condition is True and has not changed since before the fault.
        let flipped = flipped_clusters(&admin, at_wall).await;
        assert!(
            flipped.is_empty(),
            "{fault:?}: {} clusters were marked unavailable although their agents renewed: {flipped:?}",
            flipped.len()
        );
        figures.push(Figures {
            fault,
            leader_back,
            writes_back,
            agents_back,
            verdict,
        });

        // Back to full strength for the next fault.
        match fault {
            Fault::KillNode => {
                db.restart_node(leader).unwrap();
                db.wait_healthy(Duration::from_secs(180)).await.unwrap();
            }
            Fault::KillHub => hubs[0].start_again().await.unwrap(),
            _ => db.wait_healthy(Duration::from_secs(180)).await.unwrap(),
        }
    }
    fleet.stop().await;

    eprintln!("postgres_ha: summary (load: {})", load_average());
    for f in &figures {
        eprintln!(
            "postgres_ha: | {:?} | {} | {:.1} | {} | {:.1} | {} | {} | {} |",
            f.fault,
            f.leader_back.map_or("-".to_string(), |s| format!("{s:.1}")),
            f.writes_back,
            // The goal: writes back within Patroni's failover time + < 2 s.
            f.leader_back
                .map_or("-".to_string(), |l| format!("{:+.1}", f.writes_back - l)),
            f.agents_back,
            f.verdict.acked,
            f.verdict.failed,
            f.verdict.lost.len()
        );
    }
    // The hub kill: agents back within seconds (the goal is 5 s; generous for CI).
    let hub_kill = figures.iter().find(|f| f.fault == Fault::KillHub).unwrap();
    assert!(
        hub_kill.agents_back < 30.0,
        "agents back after {} s",
        hub_kill.agents_back
    );
    drop(logs);
    drop(lb);
    drop(hubs);
}

/// The simulated agents' clusters whose Available condition is not True, or changed after
/// `since`.
async fn flipped_clusters(admin: &HubClient, since: chrono::DateTime<chrono::Utc>) -> Vec<String> {
    let list = admin
        .list_clusters(&Default::default())
        .await
        .expect("list clusters")
        .value;
    list.items
        .iter()
        .filter(|c| c.metadata.name.starts_with("ha-agent-"))
        .filter(|c| {
            c.condition(api::status::CLUSTER_AVAILABLE)
                .is_none_or(|a| !a.is_true() || a.last_transition_time.is_none_or(|t| t > since))
        })
        .map(|c| c.metadata.name.clone())
        .collect()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}
