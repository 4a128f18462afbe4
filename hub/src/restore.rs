//! `hub restore`: put a backup in place of the hub's SQLite database, with the hubs
//! stopped; or give a database restored by other means (`pg_restore`, a point-in-time
//! recovery) a new index epoch.

use std::path::PathBuf;

use clap::Args;

use crate::store::StoreError;
use crate::store::backup::{self, RestoreError};

/// Settings of `hub restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup to restore (a file `hub backup` wrote).
    #[arg(long, value_name = "FILE", required_unless_present = "new_epoch")]
    pub from: Option<PathBuf>,
    /// Only give the database a new index epoch, changing nothing else: after restoring
    /// it with pg_restore, a point-in-time recovery or a file copy.
    #[arg(long, conflicts_with = "from")]
    pub new_epoch: bool,
    /// The hub's data dir, whose hub.db is replaced [default: ~/.local/share/hub].
    #[arg(long, env = "HUB_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The database, when not the data dir's hub.db (sqlite://PATH; postgres://... with
    /// --new-epoch only).
    #[arg(long, env = "HUB_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

/// Runs `hub restore`; returns the exit code: 0 restored; 1 refused (a hub serves from
/// the database) or failed; 2 bad input (no such file, not a fleethub database, damaged,
/// a schema newer than this hub).
pub async fn run(args: RestoreArgs) -> i32 {
    let RestoreArgs {
        from,
        new_epoch,
        data_dir,
        database_url,
    } = args;
    let url = database_url.unwrap_or_else(|| {
        let dir = data_dir.unwrap_or_else(api::config::default_hub_data_dir);
        format!("sqlite://{}", dir.join("hub.db").display())
    });
    let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if new_epoch {
        let epoch = backup::new_epoch();
        return match backup::set_epoch(&url, &epoch).await {
            Ok(()) => {
                println!(
                    "new index epoch {epoch}: clients list again from scratch when they next reach a hub"
                );
                0
            }
            Err(e) => {
                eprintln!("hub restore: {e}");
                1
            }
        };
    }
    if postgres {
        eprintln!(
            "hub restore: {url:?} is Postgres: restore it with pg_restore (or your point-in-time recovery), then run `hub restore --new-epoch --database-url ...` with the hubs stopped (docs/operations.md)"
        );
        return 2;
    }
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        eprintln!("hub restore: {}", StoreError::UnsupportedUrl(url));
        return 2;
    };
    let database = PathBuf::from(path.split('?').next().unwrap_or(path));
    let Some(from) = from else {
        eprintln!("hub restore: --from FILE is required");
        return 2;
    };
    if !from.is_file() {
        eprintln!("hub restore: {}: no such file", from.display());
        return 2;
    }
    if let Some(dir) = database.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        // A fresh machine: the data dir as `hub serve` makes it, private.
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        if let Err(e) = builder.create(dir) {
            eprintln!("hub restore: cannot create {}: {e}", dir.display());
            return 1;
        }
    }
    match backup::restore(&from, &database).await {
        Ok(done) => {
            let schema = done.info.schema.iter().max().copied().unwrap_or(0);
            println!(
                "restored {} into {}: index {}, schema {schema}, {} works; new index epoch {}",
                from.display(),
                database.display(),
                done.info.index,
                done.info.works,
                done.epoch,
            );
            match &done.replaced {
                Some(old) => println!("the replaced database is kept as {}", old.display()),
                None => println!("there was no database to replace"),
            }
            println!(
                "start the hub now; agents keep what they applied, list again, and apply what differs (works deleted after the backup come back and are applied again)"
            );
            0
        }
        Err(e) => {
            eprintln!("hub restore: {e}");
            match e {
                RestoreError::InUse(_) | RestoreError::Io { .. } => 1,
                RestoreError::Store(StoreError::Database(_)) => 1,
                _ => 2,
            }
        }
    }
}
