//! The hub's connection handling against the real `hub` binary: slow clients under a small
//! open-file limit, errors an HTTP/2 client can read, small round trips without Nagle's
//! delay, and the advertised addresses in the serving certificate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::{ClientConfig, HubClient, ListOptions, ManagedCluster, ManifestWork};
use serde_json::{Value, json};
use testkit::procs::HubProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The tests here measure time limits and latencies; run together on a 2-core machine
/// (500 slow connections next to a latency count) they would mostly measure each other.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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

fn ca_pem(hub: &HubProcess) -> String {
    ClientConfig::load(&hub.client_config_path())
        .unwrap()
        .ca_data
        .expect("client.yaml has the CA")
}

/// A TLS client config trusting the hub's CA and offering `alpn`.
fn tls_client(hub: &HubProcess, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem(hub).as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A fresh client (its own connection pool) with the hub's CA and admin token.
fn fresh_client(hub: &HubProcess) -> HubClient {
    hub.client().unwrap()
}

/// A connection that never finishes: plain TCP that never starts TLS, or TLS and half a
/// request header.
enum Slow {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Slow {
    /// Waits until the hub closes the connection (EOF or reset); false if it is still open
    /// at the deadline.
    async fn closed_by(&mut self, deadline: tokio::time::Instant) -> bool {
        let mut buf = [0u8; 1024];
        loop {
            let read = match self {
                Slow::Tcp(s) => tokio::time::timeout_at(deadline, s.read(&mut buf)).await,
                Slow::Tls(s) => tokio::time::timeout_at(deadline, s.read(&mut buf)).await,
            };
            match read {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                // A 408 or similar before the close is fine: keep reading to the end.
                Ok(Ok(_)) => continue,
            }
        }
    }
}

async fn open_slow(
    port: u16,
    tls: &tokio_rustls::TlsConnector,
    handshake: bool,
) -> anyhow::Result<Slow> {
    // Bounded, so that a hub that stopped accepting fails the test rather than hanging it.
    let bound = Duration::from_secs(2);
    let tcp = tokio::time::timeout(bound, TcpStream::connect(("127.0.0.1", port))).await??;
    if !handshake {
        return Ok(Slow::Tcp(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut s = tokio::time::timeout(bound, tls.connect(name, tcp)).await??;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await?;
    s.flush().await?;
    Ok(Slow::Tls(Box::new(s)))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// 500 connections that never send a whole request header, against a hub that may open
/// 256 files: `/healthz` answers new clients throughout, an agent-like client with a
/// blocking query parked on its HTTP/2 connection keeps working, the hub never runs out of
/// descriptors, and every slow connection is closed within the header timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_exhaust_a_hub_with_256_descriptors() {
    let _serial = SERIAL.lock().await;
    init();
    let dir = tempfile::tempdir().unwrap();
    let header_timeout = Duration::from_secs(10); // the default
    let hub = HubProcess::start_with_fd_limit(dir.path(), 256, &[])
        .await
        .unwrap();
    let pid = hub.pid().unwrap();

    // The agent-like client: one HTTP/2 connection, opened before the attack, with a
    // blocking query parked on it for the whole attack.
    let agent = fresh_client(&hub);
    let index = agent
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap()
        .index;
    let parked = {
        let agent = agent.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = agent
                .list_works(
                    Some("c1"),
                    &ListOptions {
                        index: Some(index),
                        wait: Some(Duration::from_secs(50)),
                        ..Default::default()
                    },
                )
                .await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let tls = tokio_rustls::TlsConnector::from(tls_client(&hub, &[b"http/1.1"]));
    let mut slow = Vec::new();
    let mut refused = 0;
    let attack_started = Instant::now();
    for i in 0..500 {
        if attack_started.elapsed() > Duration::from_secs(30) {
            break;
        }
        // One in five never even starts TLS.
        match open_slow(hub.port, &tls, i % 5 != 0).await {
            Ok(s) => slow.push((Instant::now(), s)),
            Err(_) => refused += 1,
        }
    }
    let opened = attack_started.elapsed();
    let fds = open_fds(pid);
    println!(
        "opened {} slow connections ({refused} refused) in {opened:?}; the hub has {fds} files open",
        slow.len()
    );
    assert!(
        refused < 50,
        "the hub stopped accepting: {refused} of 500 connections failed to open"
    );
    assert!(fds < 256, "the hub holds {fds} files of its 256");

    // New clients get through while the attacker holds the cap.
    for i in 0..5 {
        let started = Instant::now();
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            fresh_client(&hub)
                .request(reqwest::Method::GET, "/healthz")
                .send(),
        )
        .await
        .unwrap_or_else(|_| panic!("/healthz #{i} hung during the attack"))
        .unwrap_or_else(|e| panic!("/healthz #{i} failed during the attack: {e:?}"));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
        assert!(started.elapsed() < Duration::from_secs(2));
        // The attacker keeps coming.
        if let Ok(s) = open_slow(hub.port, &tls, true).await {
            slow.push((Instant::now(), s));
        }
    }

    // The agent's connection: a write through it, which wakes its parked query.
    agent
        .put_work(&work("c1", "during-attack"), None)
        .await
        .unwrap();
    let (got, waited) = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("the parked blocking query never returned")
        .unwrap();
    let got = got.expect("the parked blocking query failed during the attack");
    assert!(
        got.value
            .items
            .iter()
            .any(|w| w.metadata.name == "during-attack"),
        "the blocking query returned without the work written during the attack"
    );
    assert!(
        waited < Duration::from_secs(45),
        "the blocking query returned by its timeout, not by the write: {waited:?}"
    );

    // Every slow connection is closed by the hub within the header timeout (plus the time
    // a handshake may take and some scheduling slack).
    let mut still_open = 0;
    let mut closes = Vec::new();
    for (opened_at, mut s) in slow {
        closes.push(tokio::spawn(async move {
            let deadline =
                tokio::time::Instant::from_std(opened_at) + header_timeout + Duration::from_secs(3);
            s.closed_by(deadline).await
        }));
    }
    for c in closes {
        if !c.await.unwrap() {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "slow connections left open past the header timeout"
    );
    let log = hub.log_text();
    assert!(
        !log.contains("Too many open files"),
        "the hub ran out of descriptors:\n{log}"
    );
    // And the hub is fine afterwards.
    let resp = fresh_client(&hub)
        .request(reqwest::Method::GET, "/readyz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// A reqwest client speaking HTTP/2 only (ALPN `h2`), with the hub's CA and admin token.
fn h2_client(hub: &HubProcess) -> (reqwest::Client, String, String) {
    let cfg = ClientConfig::load(&hub.client_config_path()).unwrap();
    let certs = reqwest::Certificate::from_pem_bundle(cfg.ca_data.unwrap().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only(certs)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    (client, cfg.server, cfg.token.unwrap())
}

/// Sends `body` with PUT and returns the status, the HTTP version and the JSON error code,
/// or what went wrong.
async fn put_bytes(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> Result<(u16, reqwest::Version, String), String> {
    let resp = client
        .put(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let version = resp.version();
    let bytes = resp.bytes().await.map_err(|e| format!("body: {e:?}"))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))?;
    Ok((
        status,
        version,
        v["code"].as_str().unwrap_or_default().to_string(),
    ))
}

/// A body the hub does not read (unknown path) or stops reading (over the size limit) still
/// gets its JSON 404 / 413 over HTTP/2, every time, instead of a reset stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_read_the_404_and_413_of_a_body_the_hub_does_not_read() {
    let _serial = SERIAL.lock().await;
    init();
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path(), &[]).await.unwrap();
    hub.client()
        .unwrap()
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    let (client, server, token) = h2_client(&hub);
    let max_body = 500 * 1024; // the default --max-work-bytes
    let cases = [
        (
            format!("{server}/api/v1/nope"),
            1024 * 1024,
            404,
            "not_found",
        ),
        (
            format!("{server}/api/v1/clusters/c1/manifestworks/big"),
            2 * max_body,
            413,
            "too_large",
        ),
        // Far beyond what the hub drains: answered, then the stream reset with NO_ERROR.
        (
            format!("{server}/api/v1/nope"),
            16 * 1024 * 1024,
            404,
            "not_found",
        ),
    ];
    for (url, size, status, code) in &cases {
        let mut failures = Vec::new();
        let rounds = if *size > 4 * 1024 * 1024 { 10 } else { 50 };
        for _ in 0..rounds {
            match put_bytes(&client, url, &token, vec![b' '; *size]).await {
                Ok((s, v, c)) if s == *status && v == reqwest::Version::HTTP_2 && c == *code => {}
                other => failures.push(format!("{other:?}")),
            }
        }
        assert!(
            failures.is_empty(),
            "PUT {size} bytes to {url}: {} of {rounds} did not get a readable {status}: {:?}",
            failures.len(),
            &failures[..failures.len().min(3)]
        );
    }
    // curl, whose HTTP/2 stack reported "Stream error in the HTTP/2 framing layer" (exit
    // 92), when it is installed.
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok()
    {
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, ca_pem(&hub)).unwrap();
        let body = dir.path().join("body");
        std::fs::write(&body, vec![b' '; 2 * max_body]).unwrap();
        for (url, _, status, _) in &cases[..2] {
            let mut bad = Vec::new();
            for _ in 0..20 {
                let out = tokio::process::Command::new("curl")
                    .args(["-sS", "--http2", "-X", "PUT", "-o", "/dev/null"])
                    .args(["-w", "%{http_code} %{http_version}"])
                    .arg("--cacert")
                    .arg(&ca)
                    .args(["-H", &format!("authorization: Bearer {token}")])
                    .args(["-H", "content-type: application/json"])
                    .arg("--data-binary")
                    .arg(format!("@{}", body.display()))
                    .arg(url)
                    .output()
                    .await
                    .unwrap();
                let got = String::from_utf8_lossy(&out.stdout).to_string();
                if !out.status.success() || got != format!("{status} 2") {
                    bad.push(format!(
                        "exit {:?}, {got:?}, {}",
                        out.status.code(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            assert!(bad.is_empty(), "curl PUT to {url}: {bad:?}");
        }
    }
}

/// Small sequential requests over one connection: with Nagle's algorithm on the hub's
/// socket, a response written in two pieces waited for the client's delayed ACK, and some
/// round trips took 40 ms more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_round_trips_do_not_wait_for_delayed_acks() {
    let _serial = SERIAL.lock().await;
    init();
    // The data in memory where there is a tmpfs: an fsync stall of a busy disk is not
    // what this counts.
    let dir = match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    };
    let hub = HubProcess::start(dir.path(), &[]).await.unwrap();
    let client = hub.client().unwrap();
    client
        .put_cluster(&ManagedCluster::new("c1", Default::default()))
        .await
        .unwrap();
    let http1 =
        HubClient::new_http1(&ClientConfig::load(&hub.client_config_path()).unwrap()).unwrap();
    for (name, client) in [("HTTP/2", client), ("HTTP/1.1", http1)] {
        client.put_work(&work("c1", "warm"), None).await.unwrap();
        let mut puts = Vec::new();
        let mut gets = Vec::new();
        for i in 0..40 {
            let started = Instant::now();
            client
                .put_work(&work("c1", &format!("w{i}")), None)
                .await
                .unwrap();
            puts.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            client
                .get_work("c1", "warm", &ListOptions::default())
                .await
                .unwrap();
            gets.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        puts.sort_by(f64::total_cmp);
        gets.sort_by(f64::total_cmp);
        println!("{name} PUT ms: {puts:.1?}");
        println!("{name} GET ms: {gets:.1?}");
        // With Nagle about one PUT in five took 40-55 ms (measured: 8 of 40 over HTTP/2);
        // without, none over 25 ms. A few slow ones are allowed for a busy machine.
        let slow = puts.iter().chain(&gets).filter(|ms| **ms >= 38.0).count();
        assert!(
            slow <= 3,
            "{name}: {slow} of 80 small requests took 38 ms or more (the delayed-ACK step): PUT {puts:.1?} GET {gets:.1?}"
        );
    }
}

/// `--advertise-address` given twice: the first names the URL, both are in the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_advertised_address_is_in_the_serving_certificate() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(
        dir.path(),
        &[
            // The first must resolve here: the harness reaches the hub by its URL.
            "--advertise-address",
            "localhost",
            "--advertise-address",
            "hub.fleet.test,10.11.12.13",
        ],
    )
    .await
    .unwrap();
    let cfg = ClientConfig::load(&hub.client_config_path()).unwrap();
    assert_eq!(cfg.server, format!("https://localhost:{}", hub.port));
    let certs = reqwest::Certificate::from_pem_bundle(ca_pem(&hub).as_bytes()).unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], hub.port));
    for host in ["localhost", "hub.fleet.test"] {
        let client = reqwest::Client::builder()
            .tls_certs_only(certs.clone())
            .resolve(host, addr)
            .build()
            .unwrap();
        let resp = client
            .get(format!("https://{host}:{}/healthz", hub.port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{host}: {e:?}"));
        assert_eq!(resp.status(), 200, "{host}");
    }
    // A name not advertised is refused by certificate verification.
    let client = reqwest::Client::builder()
        .tls_certs_only(certs)
        .resolve("other.fleet.test", addr)
        .build()
        .unwrap();
    assert!(
        client
            .get(format!("https://other.fleet.test:{}/healthz", hub.port))
            .send()
            .await
            .is_err()
    );
}
