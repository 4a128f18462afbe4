//! `hub serve`: open the store, set up TLS and credentials, serve until a signal.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use api::ClientConfig;

use crate::config::ServeArgs;
use crate::http::{AppState, ClusterInfo, router};
use crate::serve::{FdBudget, Limits, Server};
use crate::service::authn::Auth;
use crate::service::retention::Retention;
use crate::service::{Hub, HubSettings};
use crate::tls::CaBundle;

/// A hub that is listening.
pub struct Running {
    /// The URL clients use.
    pub url: String,
    /// Where the client config was written.
    pub client_config: PathBuf,
    server: Server,
    hub: Arc<Hub>,
}

impl Running {
    /// Stops accepting connections and lets in-flight requests finish within `grace`.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        self.server.shutdown(grace).await;
        // Heartbeats received since the last flush, so a restart does not lose them.
        if let Err(e) = self.hub.flush_leases().await {
            tracing::warn!(error = %e, "writing the last lease renewals failed");
        }
        Ok(())
    }
}

/// Runs `hub serve` until SIGINT or SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let grace = args.shutdown_grace;
    let running = start(args).await?;
    shutdown_signal().await;
    tracing::info!(grace = ?grace, "shutting down; finishing in-flight requests");
    running.shutdown(grace).await
}

/// What `hub serve` takes from its flags and files before it opens the database.
struct Resolved {
    admin_token: Option<String>,
    limits: Limits,
    retention: Retention,
    data_dir: PathBuf,
    database_url: String,
    /// `--tls-cert`/`--tls-key` read: the chain, the key and the CA clients trust.
    given_tls: Option<(String, String, String)>,
}

/// Reads and checks the flags and the files they name, the one home of these rules for
/// both `hub serve` and `--check-config`. Creates a missing data dir only when asked.
fn resolve(args: &ServeArgs, create_data_dir: bool) -> anyhow::Result<Resolved> {
    let admin_token = match (&args.admin_token, &args.admin_token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(crate::config::read_admin_token_file(path)?),
        (None, None) => None,
    };
    if args.header_timeout.is_zero() || args.idle_timeout.is_zero() {
        bail!("--header-timeout and --idle-timeout must be longer than zero");
    }
    let limits = connection_limits(
        args.max_connections,
        args.header_timeout,
        args.idle_timeout,
        args.max_work_bytes,
    )?;
    let retention = Retention::new(args.audit_retention, args.change_log_retention)?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(api::config::default_hub_data_dir);
    if create_data_dir {
        create_private_dir(&data_dir)?;
    } else if let Ok(meta) = std::fs::metadata(&data_dir) {
        if !meta.is_dir() {
            bail!("the data dir {} is not a directory", data_dir.display());
        }
        check_private(&data_dir, &meta)?;
    }
    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("hub.db").display()));
    let given_tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = read(cert)?;
            let ca = match &args.tls_ca {
                Some(ca) => read(ca)?,
                None => chain.clone(),
            };
            let key = read(key)?;
            server_tls(&chain, &key).context("loading the TLS certificate and key")?;
            Some((chain, key, ca))
        }
        _ => None,
    };
    Ok(Resolved {
        admin_token,
        limits,
        retention,
        data_dir,
        database_url,
        given_tls,
    })
}

/// `hub serve --check-config`: what `hub serve` would use, one line each, or why it would
/// not start. Reads the database's schema version without migrating it.
pub async fn check_config(args: &ServeArgs) -> anyhow::Result<Vec<String>> {
    let resolved = resolve(args, false)?;
    let url = redact_url(&resolved.database_url);
    let report = crate::store::inspect(&resolved.database_url)
        .await
        .with_context(|| format!("checking the database {url}"))?;
    let schema = match (report.applied.last(), report.pending.as_slice()) {
        (None, _) => format!(
            "new database: {} migrations will be applied at start",
            report.pending.len()
        ),
        (Some(at), []) => format!("schema at migration {at}, up to date"),
        (Some(at), pending) => {
            format!("schema at migration {at}: migrations {pending:?} will be applied at start")
        }
    };
    Ok(vec![
        format!("listen: {}", args.listen),
        format!("data dir: {}", resolved.data_dir.display()),
        format!("database: {url}: {schema}"),
        format!(
            "tls: {}",
            if resolved.given_tls.is_some() {
                "the given certificate and key (they match)"
            } else {
                "the hub's own CA (created in the database on first start)"
            }
        ),
        format!(
            "admin token: {}",
            if resolved.admin_token.is_some() {
                "given"
            } else {
                "the stored one (generated on first start)"
            }
        ),
        format!("max connections: {}", resolved.limits.max_connections),
        format!(
            "retention: audit {}, change log {} indexes",
            match resolved.retention.audit {
                Some(d) if d.as_secs() % 3600 == 0 => format!("{}h", d.as_secs() / 3600),
                Some(d) => format!("{}s", d.as_secs()),
                None => "every entry".into(),
            },
            resolved.retention.change_log_indexes
        ),
    ])
}

/// Starts serving and returns at once.
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    let Resolved {
        admin_token,
        limits,
        retention,
        data_dir,
        database_url,
        given_tls,
    } = resolve(&args, true)?;
    let ServeArgs {
        listen,
        advertise_address,
        access_token_ttl,
        lease_interval,
        lease_grace,
        bootstrap_token_ttl,
        signing_key_max_age,
        ..
    } = args;
    // The metrics recorder first: series the service registers at start (its writer's
    // error counters at zero) would otherwise go to no recorder and never be served.
    crate::http::metrics_handle();
    let store = crate::store::connect(&database_url)
        .await
        .with_context(|| format!("opening the database {}", redact_url(&database_url)))?;
    tracing::info!(backend = store.backend(), "store ready");
    let hub = Hub::start_with(
        store.clone(),
        HubSettings {
            lease_interval,
            lease_grace: lease_grace.unwrap_or(lease_interval * 5),
            bootstrap_token_ttl,
            retention,
        },
    )
    .await
    .context("starting the hub service")?;
    crate::controllers::start(&hub);
    let (auth, known_token) = Auth::init(store.clone(), admin_token.as_deref(), access_token_ttl)
        .await
        .context("loading the admin token")?;
    let auth = auth.with_cluster_cache(hub.cluster_cache());

    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    let port = listener.local_addr()?.port();
    let Advertised {
        url,
        hosts,
        warning,
    } = advertised(listen, port, &advertise_address);
    if let Some(warning) = warning {
        tracing::warn!("{warning}");
    }

    let (chain_pem, key_pem, ca_pem) = match given_tls {
        Some(given) => given,
        None => {
            let ca = CaBundle::load_or_create(&*store)
                .await
                .context("loading the hub CA")?;
            let serving = ca
                .issue_serving_cert(&hosts)
                .context("issuing the serving certificate")?;
            (serving.chain_pem, serving.key_pem, ca.cert_pem)
        }
    };
    let ca_hash = api::auth::ca_hash(&ca_pem)
        .map_err(anyhow::Error::msg)
        .context("hashing the CA certificate")?;
    let rustls = server_tls(&chain_pem, &key_pem).context("loading the TLS certificate and key")?;

    let client_config = data_dir.join("client.yaml");
    write_client_config(&client_config, &url, &ca_pem, known_token, &auth)?;

    let auth = Arc::new(auth);
    tokio::spawn(rotate_signing_keys(
        Arc::downgrade(&auth),
        signing_key_max_age,
    ));
    let state = AppState {
        hub: hub.clone(),
        auth,
        cluster_info: Arc::new(ClusterInfo {
            server: url.clone(),
            certificate_authority_data: ca_pem,
            ca_hash,
        }),
        max_body_bytes: limits.max_body_bytes,
    };
    let app = router(state);
    let server = Server::start(listener, rustls, app, limits).context("serving")?;
    tracing::info!(%url, client_config = %client_config.display(), max_connections = limits.max_connections, "hub listening");
    println!("hub listening on {url}");
    println!(
        "client config written to {} (the hub CLI reads it with no flags)",
        client_config.display()
    );
    Ok(Running {
        url,
        client_config,
        server,
        hub,
    })
}

/// The connection cap from the open-file limit (raised to the hard limit first), or the
/// one configured if it fits under it.
fn connection_limits(
    configured: Option<u32>,
    header_timeout: Duration,
    idle_timeout: Duration,
    max_body_bytes: usize,
) -> anyhow::Result<Limits> {
    let budget = FdBudget::from_process().context("reading the open-file limit")?;
    let max_connections = match configured.map(|c| c as usize) {
        Some(c) if c > budget.max_connections => {
            tracing::warn!(
                configured = c,
                fd_limit = budget.fd_limit,
                max_connections = budget.max_connections,
                "--max-connections is above what the open-file limit allows; using the lower cap (raise `ulimit -n` / LimitNOFILE)"
            );
            budget.max_connections
        }
        Some(c) => c,
        None => budget.max_connections,
    };
    Ok(Limits {
        max_connections,
        header_timeout,
        idle_timeout,
        max_body_bytes,
    })
}

/// Where clients reach the hub.
#[derive(Debug, PartialEq)]
struct Advertised {
    /// The URL of the client config and join commands (first advertised host).
    url: String,
    /// The names and addresses the hub's own serving certificate is for.
    hosts: Vec<String>,
    /// What to tell the operator when the hub is reachable from elsewhere but named only
    /// for this machine.
    warning: Option<String>,
}

fn advertised(listen: SocketAddr, port: u16, advertise: &[String]) -> Advertised {
    let given: Vec<String> = advertise
        .iter()
        .map(|h| {
            h.trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string()
        })
        .filter(|h| !h.is_empty())
        .collect();
    let mut warning = None;
    let host = match given.first() {
        Some(h) => h.clone(),
        None if listen.ip().is_unspecified() => {
            warning = Some(format!(
                "listening on all interfaces ({listen}) but no --advertise-address is set: the \
                 serving certificate, the client config and join commands name only 127.0.0.1 \
                 and localhost, so agents and clients on other machines cannot reach or verify \
                 this hub. Set --advertise-address (or HUB_ADVERTISE_ADDRESS, comma-separated) \
                 to the host names and IP addresses they use; the first one goes into the URL"
            ));
            "127.0.0.1".to_string()
        }
        None => listen.ip().to_string(),
    };
    let url = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };
    let mut hosts = given;
    hosts.extend(["127.0.0.1", "localhost", "::1"].map(String::from));
    hosts.push(host);
    if !listen.ip().is_unspecified() {
        hosts.push(listen.ip().to_string());
    }
    let mut seen = std::collections::HashSet::new();
    hosts.retain(|h| seen.insert(h.clone()));
    Advertised {
        url,
        hosts,
        warning,
    }
}

/// The rustls server config for a PEM chain and key, offering HTTP/2 and HTTP/1.1.
fn server_tls(chain_pem: &str, key_pem: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("reading the certificate chain")?;
    if chain.is_empty() {
        bail!("the certificate file holds no certificate");
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).context("reading the key")?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the key does not fit the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes `client.yaml` with the admin token when this process knows it: given, generated
/// now, or already in the previous file and still valid.
fn write_client_config(
    path: &Path,
    url: &str,
    ca_pem: &str,
    known: Option<String>,
    auth: &Auth,
) -> anyhow::Result<()> {
    let token = known.or_else(|| {
        ClientConfig::load(path)
            .ok()
            .and_then(|c| c.token)
            .filter(|t| auth.is_admin_token(t))
    });
    if token.is_none() {
        tracing::warn!(path = %path.display(), "the admin token is not known to this process (set HUB_ADMIN_TOKEN or --admin-token-file); client config written without it");
    }
    let cfg = ClientConfig {
        server: url.to_string(),
        ca_data: Some(ca_pem.to_string()),
        token,
    };
    cfg.save(path)
        .with_context(|| format!("writing {}", path.display()))
}

/// Makes sure the data dir is private to this user. A missing one is created 0700; an
/// existing one keeps its mode (it may be shared on purpose, and the hub did not make it),
/// but one that group or others may write is refused: whoever can write it can swap the
/// database or the client config under the hub.
fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => {
            anyhow::bail!("the data dir {} is not a directory", dir.display())
        }
        Ok(meta) => check_private(dir, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .with_context(|| format!("creating {}", parent.display()))?;
            }
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
                .create(dir)
                .with_context(|| format!("creating the data dir {}", dir.display()))
        }
        Err(e) => Err(e).with_context(|| format!("reading the data dir {}", dir.display())),
    }
}

#[cfg(unix)]
fn check_private(dir: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        anyhow::bail!(
            "the data dir {} is writable by other users (mode {mode:o}); give a directory \
             only you may write, e.g. a new one inside it (the hub creates a missing one 0700)",
            dir.display()
        );
    }
    if mode & 0o077 != 0 {
        tracing::warn!(dir = %dir.display(), mode = format!("{mode:o}"), "the data dir is readable by other users; the hub leaves its mode alone");
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_dir: &Path, _meta: &std::fs::Metadata) -> anyhow::Result<()> {
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// The URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Rotates the JWT signing key by age, at start and hourly, while the hub runs.
async fn rotate_signing_keys(auth: std::sync::Weak<Auth>, max_age: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let Some(auth) = auth.upgrade() else { return };
        match auth.rotate_if_older_than(max_age).await {
            Ok(Some(kid)) => tracing::info!(%kid, "rotated the JWT signing key"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "could not check the signing key's age"),
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(all(test, unix))]
mod data_dir_tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn data_dirs_are_created_private_and_shared_ones_refused_untouched() {
        let root = tempfile::tempdir().unwrap();
        let missing = root.path().join("a/b/hub");
        create_private_dir(&missing).unwrap();
        assert_eq!(mode(&missing), 0o700);

        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        for m in [0o1777, 0o777, 0o770, 0o702] {
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(m)).unwrap();
            let err = create_private_dir(&shared).unwrap_err();
            assert!(
                format!("{err:#}").contains("writable by other users"),
                "{err:#}"
            );
            assert_eq!(
                mode(&shared),
                m,
                "the mode of a dir the hub did not create changed"
            );
        }
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&shared).unwrap();
        assert_eq!(mode(&shared), 0o755);

        let file = root.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert!(create_private_dir(&file).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listening_everywhere_without_an_advertised_address_warns() {
        let a = advertised(addr("0.0.0.0:8443"), 8443, &[]);
        assert_eq!(a.url, "https://127.0.0.1:8443");
        let warning = a.warning.expect("a warning");
        assert!(warning.contains("--advertise-address"), "{warning}");
        assert!(warning.contains("HUB_ADVERTISE_ADDRESS"), "{warning}");
        let a = advertised(addr("[::]:8443"), 8443, &[]);
        assert!(a.warning.is_some());
    }

    #[test]
    fn no_warning_when_advertised_or_listening_on_one_address() {
        assert_eq!(advertised(addr("127.0.0.1:8443"), 8443, &[]).warning, None);
        assert_eq!(
            advertised(addr("10.0.0.5:8443"), 8443, &[]).url,
            "https://10.0.0.5:8443"
        );
        let a = advertised(addr("0.0.0.0:8443"), 8443, &["hub.example.com".into()]);
        assert_eq!(a.warning, None);
        assert_eq!(a.url, "https://hub.example.com:8443");
    }

    #[test]
    fn every_advertised_address_goes_into_the_certificate_the_first_into_the_url() {
        let a = advertised(
            addr("0.0.0.0:8443"),
            8443,
            &[
                "hub.example.com".into(),
                " 10.0.0.5".into(),
                "".into(),
                "[fd00::1]".into(),
            ],
        );
        assert_eq!(a.url, "https://hub.example.com:8443");
        assert_eq!(
            a.hosts,
            [
                "hub.example.com",
                "10.0.0.5",
                "fd00::1",
                "127.0.0.1",
                "localhost",
                "::1"
            ]
        );
        let a = advertised(addr("0.0.0.0:8443"), 8443, &["fd00::1".into()]);
        assert_eq!(a.url, "https://[fd00::1]:8443");
    }

    #[test]
    fn advertise_address_takes_several_values_and_comma_lists() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let cli = Cli::try_parse_from([
            "hub",
            "--advertise-address",
            "a.example.com",
            "--advertise-address",
            "b.example.com,10.0.0.5",
        ])
        .unwrap();
        assert_eq!(
            cli.serve.advertise_address,
            ["a.example.com", "b.example.com", "10.0.0.5"]
        );
    }
}
