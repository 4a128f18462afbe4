//! `hub serve` settings: every flag also reads an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable, coloured on a terminal.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Settings of `hub serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on. Use 0.0.0.0:8443 so agents on other machines can reach it.
    #[arg(long, env = "HUB_LISTEN", default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// Where the embedded database, the client config and other state live
    /// [default: ~/.local/share/hub].
    #[arg(long, env = "HUB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// postgres://... for Postgres; default: SQLite in the data dir.
    #[arg(long, env = "HUB_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Host name or IP address clients and agents use to reach this hub; goes into the
    /// serving certificate, and the first one into the URL of the client config and join
    /// commands. Repeat it (or separate with commas) for more names [default: the listen
    /// address, or 127.0.0.1 when listening on all interfaces, with a warning].
    #[arg(long, env = "HUB_ADVERTISE_ADDRESS", value_delimiter = ',')]
    pub advertise_address: Vec<String>,
    /// PEM certificate chain to serve instead of the hub's own CA-signed one.
    #[arg(long, env = "HUB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "HUB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA bundle clients should trust when --tls-cert is given [default: the chain in
    /// --tls-cert].
    #[arg(long, env = "HUB_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The admin bearer token. Default: generated on first start, stored hashed, and
    /// written to <data-dir>/client.yaml. On the command line it shows in `ps`: prefer
    /// --admin-token-file or the environment variable.
    #[arg(long, env = "HUB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin bearer token (its first line; surrounding whitespace is
    /// ignored), e.g. a mounted Kubernetes Secret.
    #[arg(long, env = "HUB_ADMIN_TOKEN_FILE", conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// Largest request body (a work), in bytes.
    #[arg(long, env = "HUB_MAX_WORK_BYTES", default_value_t = 500 * 1024)]
    pub max_work_bytes: usize,
    /// Log format [default: pretty].
    #[arg(long, env = "HUB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
    /// Lifetime of the access tokens agents get (they renew at two thirds of it).
    #[arg(long, env = "HUB_ACCESS_TOKEN_TTL", default_value = "1h", value_parser = api::parse_duration)]
    pub access_token_ttl: std::time::Duration,
    /// How often agents renew their lease; the hub tells them.
    #[arg(long, env = "HUB_LEASE_INTERVAL", default_value = "10s", value_parser = api::parse_duration)]
    pub lease_interval: std::time::Duration,
    /// How long after its last renewal a cluster turns Unknown [default: 5 lease intervals].
    #[arg(long, env = "HUB_LEASE_GRACE", value_parser = api::parse_duration)]
    pub lease_grace: Option<std::time::Duration>,
    /// Lifetime of bootstrap tokens created without --ttl.
    #[arg(long, env = "HUB_BOOTSTRAP_TOKEN_TTL", default_value = "24h", value_parser = api::parse_duration)]
    pub bootstrap_token_ttl: std::time::Duration,
    /// Rotate the JWT signing key once the newest is older than this (checked at start and
    /// hourly); older keys keep verifying the tokens they signed.
    #[arg(long, env = "HUB_SIGNING_KEY_MAX_AGE", default_value = "720h", value_parser = api::parse_duration)]
    pub signing_key_max_age: std::time::Duration,
    /// How long in-flight requests may run after SIGTERM/SIGINT (e.g. 30s).
    #[arg(long, env = "HUB_SHUTDOWN_GRACE", default_value = "30s", value_parser = api::parse_duration)]
    pub shutdown_grace: std::time::Duration,
    /// Most connections served at once; beyond it a new connection replaces the one idle
    /// the longest, or is closed [default and maximum: the open-file limit minus 128 kept
    /// for the database and files; the hub raises its soft limit to the hard one first].
    #[arg(long, env = "HUB_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,
    /// Time a client has for the TLS handshake and for each request header; an HTTP/1
    /// connection that sends nothing for this long is closed too.
    #[arg(long, env = "HUB_HEADER_TIMEOUT", default_value = "10s", value_parser = api::parse_duration)]
    pub header_timeout: std::time::Duration,
    /// A connection with no request in flight for this long is closed (agents keep a
    /// blocking query in flight, so theirs stay open).
    #[arg(long, env = "HUB_IDLE_TIMEOUT", default_value = "90s", value_parser = api::parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// Delete audit entries older than this (checked every minute); 0 keeps every entry.
    /// At least 24h otherwise. A work's deletion is its audit entry, which agents read to
    /// clean up at once: past the retention they wait for their eviction grace instead.
    #[arg(long, env = "HUB_AUDIT_RETENTION", default_value = "0s", value_parser = api::parse_duration)]
    pub audit_retention: std::time::Duration,
    /// Change-log rows kept, in indexes behind the latest (blocking queries and other hubs
    /// read the recent log; one that fell further behind re-reads what it follows).
    /// At least 1000.
    #[arg(long, env = "HUB_CHANGE_LOG_RETENTION", default_value_t = crate::service::retention::DEFAULT_CHANGE_LOG_INDEXES)]
    pub change_log_retention: u64,
    /// Check the flags, the files they name and the database (reachable, its schema one
    /// this hub can serve), print what would be used, and exit: 0 when `hub serve` would
    /// start, 1 with the reason when not. Changes nothing; binds no port.
    #[arg(long)]
    pub check_config: bool,
}

/// Whether `--admin-token` itself is among these command-line arguments (not the
/// environment variable, nor `--admin-token-file`): then any user who can list processes
/// can read the token.
pub fn admin_token_on_command_line<I, S>(args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    args.into_iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .take_while(|a| a != "--")
        .any(|a| a == "--admin-token" || a.starts_with("--admin-token="))
}

/// Reads the admin token from `--admin-token-file`: the first line, trimmed.
pub fn read_admin_token_file(path: &std::path::Path) -> Result<String, AdminTokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| AdminTokenFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = text.lines().next().unwrap_or_default().trim();
    if token.is_empty() {
        return Err(AdminTokenFileError::Empty(path.to_path_buf()));
    }
    Ok(token.to_string())
}

/// Why `--admin-token-file` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AdminTokenFileError {
    /// The file could not be read.
    #[error("reading the admin token file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Its first line is blank.
    #[error("the admin token file {} is empty", .0.display())]
    Empty(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_is_told_from_the_file_and_the_env() {
        assert!(admin_token_on_command_line([
            "hub",
            "serve",
            "--admin-token",
            "x"
        ]));
        assert!(admin_token_on_command_line([
            "hub",
            "serve",
            "--admin-token=x"
        ]));
        assert!(!admin_token_on_command_line([
            "hub",
            "serve",
            "--admin-token-file",
            "f"
        ]));
        assert!(!admin_token_on_command_line([
            "hub",
            "serve",
            "--admin-token-file=f"
        ]));
        assert!(!admin_token_on_command_line(["hub", "serve"]));
    }

    #[test]
    fn the_token_file_gives_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "  s3cret \nignored\n").unwrap();
        assert_eq!(read_admin_token_file(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_admin_token_file(&path),
            Err(AdminTokenFileError::Empty(_))
        ));
        assert!(matches!(
            read_admin_token_file(&dir.path().join("missing")),
            Err(AdminTokenFileError::Read { .. })
        ));
    }
}
