//! `hub backup --to FILE`: a consistent copy of the hub's database, taken by the running
//! hub while it serves (`GET /api/v1/backup`) and written to a private file here.

use std::io::Write;
use std::path::{Path, PathBuf};

use api::{ClientError, ErrorBody};
use clap::Args;
use reqwest::Method;

use super::support::connection::ConnectionArgs;
use super::support::error::CliError;
use super::support::output;

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// The flags of `hub backup` (its help text is on [`super::ClientCommand::Backup`]).
#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The file to write (mode 0600); it must not exist unless --force.
    #[arg(long, value_name = "FILE")]
    pub to: PathBuf,
    /// Replace FILE if it exists (only once the new copy is complete).
    #[arg(long)]
    pub force: bool,
    /// How to reach the hub.
    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs `hub backup`.
pub async fn run(args: BackupArgs) -> Result<(), CliError> {
    let BackupArgs {
        to,
        force,
        connection,
    } = args;
    if !force && std::fs::symlink_metadata(&to).is_ok() {
        return Err(CliError::Usage(format!(
            "{} exists: choose another file, or pass --force to replace it",
            to.display()
        )));
    }
    // The partial file is made before asking the hub, so an unwritable place costs the
    // hub no copy.
    let partial = partial_path(&to);
    let mut file = create_private(&partial)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", partial.display())))?;
    let removal = RemoveOnDrop(partial.clone());
    let client = connection.client()?;
    let url = format!("{}/api/v1/backup", client.base_url());
    let transport = |source| ClientError::Transport {
        url: url.clone(),
        source,
    };
    let mut resp = client
        .request(Method::GET, "/api/v1/backup")
        .send()
        .await
        .map_err(transport)?;
    let status = resp.status();
    if !status.is_success() {
        let bytes = resp.bytes().await.map_err(transport)?;
        let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
            code: "unknown".into(),
            message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            details: None,
        });
        return Err(ClientError::Api { status, body }.into());
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (index, epoch, schema) = (
        header("x-hub-index").unwrap_or_default(),
        header("x-hub-epoch").unwrap_or_default(),
        header("x-hub-schema").unwrap_or_default(),
    );
    let expected = resp.content_length();
    let mut written: u64 = 0;
    let mut head = Vec::with_capacity(SQLITE_MAGIC.len());
    while let Some(chunk) = resp.chunk().await.map_err(transport)? {
        if head.len() < SQLITE_MAGIC.len() {
            let take = (SQLITE_MAGIC.len() - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        }
        file.write_all(&chunk)
            .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", partial.display())))?;
        written += chunk.len() as u64;
    }
    if expected.is_some_and(|n| n != written) || head != SQLITE_MAGIC {
        return Err(ClientError::Decode(format!(
            "the backup arrived incomplete ({written} of {} bytes); nothing was written to {}",
            expected.map_or("?".to_string(), |n| n.to_string()),
            to.display()
        ))
        .into());
    }
    file.sync_all()
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", partial.display())))?;
    drop(file);
    if !force && std::fs::symlink_metadata(&to).is_ok() {
        return Err(CliError::Usage(format!(
            "{} appeared meanwhile: not replaced (pass --force to replace it)",
            to.display()
        )));
    }
    std::fs::rename(&partial, &to)
        .map_err(|e| CliError::Usage(format!("cannot write {}: {e}", to.display())))?;
    std::mem::forget(removal);
    output::print(&format!(
        "backup of index {index} (epoch {epoch}, schema {schema}): {written} bytes written to {} (mode 0600; it holds every work, Secret data included, and the hub's keys: keep it as you keep the hub's data dir)\n",
        to.display()
    ));
    Ok(())
}

/// `FILE` → `.FILE.partial` beside it.
fn partial_path(to: &Path) -> PathBuf {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    to.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// A new file of mode 0600.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
