//! `hub serve`: open the store, set up TLS and credentials, serve until a signal.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::ClientConfig;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;

use crate::auth::Auth;
use crate::config::ServeArgs;
use crate::http::{AppState, ClusterInfo, router};
use crate::service::{Hub, HubSettings};
use crate::tls::{self, CaBundle};

/// A hub that is listening.
pub struct Running {
    /// The URL clients use.
    pub url: String,
    /// Where the client config was written.
    pub client_config: PathBuf,
    handle: Handle<std::net::SocketAddr>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    hub: Arc<Hub>,
}

impl Running {
    /// Stops accepting connections and lets in-flight requests finish within `grace`.
    pub async fn shutdown(self, grace: Duration) -> anyhow::Result<()> {
        self.handle.graceful_shutdown(Some(grace));
        self.task.await.context("server task")?.context("server")?;
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

/// Starts serving and returns at once.
pub async fn start(args: ServeArgs) -> anyhow::Result<Running> {
    let ServeArgs {
        listen,
        data_dir,
        database_url,
        advertise_address,
        tls_cert,
        tls_key,
        tls_ca,
        admin_token,
        admin_token_file,
        max_work_bytes,
        access_token_ttl,
        lease_interval,
        lease_grace,
        bootstrap_token_ttl,
        signing_key_max_age,
        log_format: _,
        shutdown_grace: _,
    } = args;
    let admin_token = match (admin_token, admin_token_file) {
        (Some(token), _) => Some(token),
        (None, Some(path)) => Some(crate::config::read_admin_token_file(&path)?),
        (None, None) => None,
    };
    let data_dir = data_dir.unwrap_or_else(api::config::default_hub_data_dir);
    create_private_dir(&data_dir)?;
    let database_url =
        database_url.unwrap_or_else(|| format!("sqlite://{}", data_dir.join("hub.db").display()));
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
        },
    )
    .await
    .context("starting the hub service")?;
    let (auth, known_token) = Auth::init(store.clone(), admin_token.as_deref(), access_token_ttl)
        .await
        .context("loading the admin token")?;
    let auth = auth.with_cluster_cache(hub.cluster_cache());

    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    let host = advertise_address.unwrap_or_else(|| {
        if listen.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            listen.ip().to_string()
        }
    });
    let url = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };

    let (chain_pem, key_pem, ca_pem) = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => {
            let chain = read(&cert)?;
            let ca = match tls_ca {
                Some(ca) => read(&ca)?,
                None => chain.clone(),
            };
            (chain, read(&key)?, ca)
        }
        _ => {
            let ca = CaBundle::load_or_create(&*store)
                .await
                .context("loading the hub CA")?;
            let mut hosts = vec![
                host.clone(),
                "127.0.0.1".into(),
                "localhost".into(),
                "::1".into(),
            ];
            if !listen.ip().is_unspecified() {
                hosts.push(listen.ip().to_string());
            }
            let serving = ca
                .issue_serving_cert(&hosts)
                .context("issuing the serving certificate")?;
            (serving.chain_pem, serving.key_pem, ca.cert_pem)
        }
    };
    let ca_hash = tls::ca_hash(&ca_pem).context("hashing the CA certificate")?;
    let rustls = RustlsConfig::from_pem(chain_pem.into_bytes(), key_pem.into_bytes())
        .await
        .context("loading the TLS certificate and key")?;

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
        max_body_bytes: max_work_bytes,
    };
    let app = router(state);
    let handle = Handle::new();
    let server = axum_server::from_tcp_rustls(listener, rustls)?.handle(handle.clone());
    let task = tokio::spawn(async move {
        server
            .serve(app.into_make_service_with_connect_info::<std::net::SocketAddr>())
            .await
    });
    tracing::info!(%url, client_config = %client_config.display(), "hub listening");
    println!("hub listening on {url}");
    println!(
        "client config written to {} (the hub CLI reads it with no flags)",
        client_config.display()
    );
    Ok(Running {
        url,
        client_config,
        handle,
        task,
        hub,
    })
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
mod tests {
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
