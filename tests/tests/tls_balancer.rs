//! Hubs behind a balancer that terminates TLS (docs/operations.md, "TLS terminated at
//! HAProxy"), and the serving certificate's names (`--advertise-address`). The pass-through
//! mode is `tests/tests/postgres_ha.rs`.
//!
//! * Three hubs share a Postgres database behind HAProxy in `mode http`: its certificate for
//!   the balancer's name (`localhost`) is issued from the **hub CA**, read from the
//!   database's `settings` as an operator exports it, and it re-encrypts to the hubs,
//!   verifying them against that CA. Agents pin the hub CA and join, renew and block on
//!   their works through it; writers and the `hub` CLI (CI) work through it; one hub is
//!   killed: every agent renews again, no acknowledged write is lost, the blocking reader
//!   sees no duplicate or missing change.
//! * `--advertise-address` given twice, once with a comma-separated list: the serving
//!   certificate names every one (plus 127.0.0.1), and the client config the first.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use api::{ClientConfig, HubClient, ManagedCluster};
use sqlx::Connection;
use testkit::ha::{Fleet, Reader, Verdict, Writers};
use testkit::patroni::HaProxy;
use testkit::postgres::TestPostgres;
use testkit::procs::{HubProcess, binary};

const LEASE: Duration = Duration::from_secs(3);
const AGENTS: usize = 30;

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The hub CA (certificate and key PEM) as an operator exports it from the database: the
/// `tls.ca` setting, one JSON value.
async fn export_hub_ca(database_url: &str) -> (String, String) {
    let mut conn = sqlx::PgConnection::connect(database_url).await.unwrap();
    let value: String = sqlx::query_scalar("SELECT value FROM settings WHERE key = 'tls.ca'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
    let ca: serde_json::Value = serde_json::from_str(&value).unwrap();
    (
        ca["cert_pem"].as_str().unwrap().to_string(),
        ca["key_pem"].as_str().unwrap().to_string(),
    )
}

/// HAProxy's `crt` file (leaf, CA, key) for `name`, issued from the CA with `openssl` as
/// docs/operations.md shows (the same commands, in `dir`).
fn balancer_pem(dir: &Path, name: &str, ca_cert: &str, ca_key: &str) -> String {
    std::fs::write(dir.join("hub-ca.pem"), ca_cert).unwrap();
    std::fs::write(dir.join("hub-ca.key"), ca_key).unwrap();
    let san = format!("subjectAltName=DNS:{name}");
    let subject = format!("/CN={name}");
    let steps: [&[&str]; 2] = [
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "lb.key",
            "-subj",
            &subject,
            "-addext",
            &san,
            "-addext",
            "extendedKeyUsage=serverAuth",
            "-out",
            "lb.csr",
        ],
        &[
            "x509",
            "-req",
            "-in",
            "lb.csr",
            "-CA",
            "hub-ca.pem",
            "-CAkey",
            "hub-ca.key",
            "-days",
            "365",
            "-copy_extensions",
            "copy",
            "-out",
            "lb.crt",
        ],
    ];
    for step in steps {
        let out = Command::new("openssl")
            .args(step)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {step:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_file(dir.join("hub-ca.key")).unwrap();
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap();
    format!("{}{}{}", read("lb.crt"), ca_cert, read("lb.key"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_terminated_at_haproxy_with_the_hub_ca_and_a_hub_killed_loses_nothing() {
    init();
    let _ = testkit::fleet::raise_open_file_limit();
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let lease = format!("{}s", LEASE.as_secs());
    let args = [
        "--database-url",
        url.as_str(),
        "--lease-interval",
        lease.as_str(),
    ];
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut hubs = Vec::new();
    for d in &dirs {
        hubs.push(HubProcess::start(d.path(), &args).await.expect("hub"));
    }

    let (ca_cert, ca_key) = export_hub_ca(&url).await;
    let lb_dir = tempfile::tempdir().unwrap();
    let crt = lb_dir.path().join("hub.pem");
    let ca_file = lb_dir.path().join("hub-ca.pem");
    std::fs::write(
        &crt,
        balancer_pem(lb_dir.path(), "localhost", &ca_cert, &ca_key),
    )
    .unwrap();
    // Re-encrypted to the hubs, whose certificates are verified against the hub CA; the
    // health check speaks HTTP/1.1 (the hubs serve both), the requests HTTP/2.
    let servers: String = hubs
        .iter()
        .enumerate()
        .map(|(i, h)| format!("    server hub{i} 127.0.0.1:{}\n", h.port))
        .collect();
    let lb = HaProxy::start_bind(
        &format!("ssl crt {} alpn h2,http/1.1", crt.display()),
        &format!(
            "    mode http\n    balance leastconn\n    option httpchk GET /healthz\n    \
             http-check expect status 200\n    \
             default-server check inter 1s fastinter 500ms downinter 500ms fall 2 rise 1 \
             ssl verify required ca-file {} alpn h2 check-alpn http/1.1\n{servers}",
            ca_file.display()
        ),
        Some(lb_dir.path()),
    )
    .expect("a TLS-terminating balancer");
    let mut cfg = ClientConfig::load(&hubs[0].client_config_path()).unwrap();
    assert_eq!(cfg.ca_data.as_deref(), Some(ca_cert.as_str()));
    cfg.server = format!("https://localhost:{}", lb.port());
    let admin = HubClient::new(&cfg).unwrap();

    // CI through the balancer: the `hub` CLI with a client config naming it.
    let cli_config = lb_dir.path().join("client.yaml");
    cfg.save(&cli_config).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(binary("hub").unwrap())
            .args(args)
            .env("HUB_CONFIG", &cli_config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "hub {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };

    let fleet = Fleet::join(&admin, &cfg, "tls-agent", AGENTS, LEASE)
        .await
        .expect("agents join through the terminating balancer");
    fleet
        .wait_all_renewed(Instant::now(), Duration::from_secs(60))
        .await
        .expect("every agent renews");
    assert!(cli(&["get", "clusters"]).contains("tls-agent-000"));

    let cluster = "tls-writes";
    admin
        .put_cluster(&ManagedCluster::new(cluster, Default::default()))
        .await
        .unwrap();
    let writers = Writers::start(&cfg, cluster, 3, Duration::from_millis(250)).unwrap();
    let reader = Reader::start(&HubClient::new(&cfg).unwrap(), cluster);
    tokio::time::sleep(Duration::from_secs(4)).await;

    let killed = Instant::now();
    hubs[0].stop();
    let agents_back = fleet
        .wait_all_renewed(killed, Duration::from_secs(60))
        .await
        .unwrap_or_else(|| {
            panic!(
                "{} agents did not renew after a hub was killed\n{}",
                fleet.not_renewed_since(killed),
                lb.log_text()
            )
        });
    let writes_back = writers
        .wait_writes_back(killed, Duration::from_secs(60))
        .await
        .expect("writes through the balancer after the kill");
    tokio::time::sleep(Duration::from_secs(3)).await;
    eprintln!(
        "tls_balancer: hub killed: writes back {writes_back:.1} s, every agent renewed {agents_back:.1} s; {}",
        writers.timeline(killed)
    );
    let verdict = Verdict::check(&admin, writers.stop().await, reader)
        .await
        .unwrap();
    eprintln!("tls_balancer: {verdict:?}");
    assert!(verdict.acked > 0);
    assert!(verdict.clean(), "{verdict:?}");
    // The CLI still works through the balancer, and sees every acknowledged work.
    let listed = cli(&["get", "works", "--cluster", cluster, "-o", "name"]);
    assert!(
        listed.lines().count() >= verdict.acked,
        "{} listed, {} acknowledged",
        listed.lines().count(),
        verdict.acked
    );
    fleet.stop().await;
    drop(lb);
}

/// The names in the certificate a TLS server on `port` presents (`openssl`'s text).
fn served_names(port: u16) -> String {
    let chain = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl");
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    x509.stdin.take().unwrap().write_all(&chain.stdout).unwrap();
    let out = x509.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn every_advertised_address_is_in_the_serving_certificate() {
    init();
    let dir = tempfile::tempdir().unwrap();
    // The first name goes into client.yaml, through which the harness waits for the hub,
    // so it must resolve here.
    let hub = HubProcess::start(
        dir.path(),
        &[
            "--advertise-address",
            "localhost,hub.example.test,lb.example.test",
            "--advertise-address",
            "10.11.12.13",
        ],
    )
    .await
    .unwrap();
    let names = served_names(hub.port);
    for name in [
        "DNS:localhost",
        "DNS:hub.example.test",
        "DNS:lb.example.test",
        "IP Address:10.11.12.13",
        "IP Address:127.0.0.1",
    ] {
        assert!(names.contains(name), "{name} not in {names}");
    }
    let cfg = ClientConfig::load(&hub.client_config_path()).unwrap();
    assert_eq!(
        cfg.server,
        format!("https://localhost:{}", hub.port),
        "the first advertised name is the one clients are given"
    );
}
