//! Backups of the embedded database, the index epoch, and putting a backup in place.
//!
//! * A backup is SQLite's `VACUUM INTO` on a pooled connection: one read transaction on
//!   the live database (in WAL mode readers never block the writer, and the writer never
//!   blocks them), written into a new file of mode 0600 beside the database. The file is
//!   opened and unlinked at once, so nothing is left behind if the client goes away; its
//!   open handle is what the hub streams.
//! * The **epoch** names one history of the change index. A database gets a random one
//!   when it is created, and a new one when a backup is restored into place: indexes of
//!   two epochs are not comparable, so a client that sees the epoch change lists again
//!   from scratch instead of trusting an index it saw before the restore.
//! * Postgres is backed up with its own tools (`pg_dump`, `pg_basebackup`); only its epoch
//!   is renewed here after such a restore.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};

use super::StoreError;

/// The setting holding the database's index epoch.
pub const EPOCH_SETTING: &str = "index_epoch";

/// The first 16 bytes of every SQLite database file.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// A fresh epoch: 16 random hex digits.
pub fn new_epoch() -> String {
    let mut bytes = [0u8; 8];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    hex::encode(bytes)
}

/// Whether `text` has the shape of an epoch (what clients may send back): 1 to 64
/// lowercase hex digits.
pub fn is_epoch(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A consistent copy of the database, open and already unlinked.
#[derive(Debug)]
pub struct Snapshot {
    /// The copy, positioned at its start.
    pub file: std::fs::File,
    /// Its size.
    pub bytes: u64,
    /// The change index it holds.
    pub index: u64,
    /// The newest migration it has.
    pub schema: i64,
}

/// What a backup file holds, read without changing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    /// The change index it holds.
    pub index: u64,
    /// Its migrations, in order.
    pub schema: Vec<i64>,
    /// The epoch it was taken in (`None`: taken before epochs existed).
    pub epoch: Option<String>,
    /// The works it holds.
    pub works: u64,
}

/// Why a file cannot be restored, or restoring failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Reading or writing a file failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is no SQLite database.
    #[error("{0} is not a fleethub backup: not a SQLite database file")]
    NotSqlite(PathBuf),
    /// A SQLite database, but not one a hub wrote.
    #[error("{0} is not a fleethub backup: a SQLite database without the hub's tables")]
    NotFleethub(PathBuf),
    /// SQLite found it damaged.
    #[error("{path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// `PRAGMA quick_check`'s first complaint.
        detail: String,
    },
    /// A hub has the database open.
    #[error(
        "a hub is serving from {0} (the database is in use): stop it first (`systemctl stop fleethub-hub`), then restore"
    )]
    InUse(PathBuf),
    /// The database failed otherwise (a newer schema reads as [`StoreError::SchemaNewer`]).
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + use<> {
    let path = path.to_path_buf();
    move |source| RestoreError::Io { what, path, source }
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A new file of mode 0600 that must not exist yet: a backup holds token hashes, key
/// material and the data of Secret manifests.
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)
}

/// Copies the database at `database` (its file) into a private file beside it with one
/// `VACUUM INTO` on `pool`, reads what the copy holds, and returns it open and unlinked.
pub(super) async fn snapshot(
    pool: &sqlx::SqlitePool,
    database: &Path,
) -> Result<Snapshot, StoreError> {
    let dir = database.parent().unwrap_or(Path::new("."));
    let name = database
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hub.db".into());
    let path = dir.join(format!(".{name}.backup-{}", new_epoch()));
    create_private(&path).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    // The file is removed on every path out, also when the copy fails halfway.
    let _remove = RemoveOnDrop(&path);
    sqlx::query("VACUUM INTO $1")
        .bind(path.to_string_lossy().into_owned())
        .execute(pool)
        .await?;
    let info = read_info(&path).await?;
    let file = std::fs::File::open(&path).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
    let bytes = file
        .metadata()
        .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?
        .len();
    Ok(Snapshot {
        file,
        bytes,
        index: info.index,
        schema: info.schema.iter().copied().max().unwrap_or(0),
    })
}

struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// What a SQLite file of the hub holds, opened read-only. Refuses what is not one.
async fn read_info(path: &Path) -> Result<BackupInfo, StoreError> {
    let opts = SqliteConnectOptions::from_str(&sqlite_url(path))?
        .read_only(true)
        .immutable(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await?;
    let result = async {
        let (index,): (i64,) = sqlx::query_as("SELECT value FROM hub_index WHERE id = 1")
            .fetch_one(&pool)
            .await?;
        let schema: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
                .fetch_all(&pool)
                .await?;
        let epoch: Option<(String,)> = sqlx::query_as("SELECT value FROM settings WHERE key = $1")
            .bind(EPOCH_SETTING)
            .fetch_optional(&pool)
            .await?;
        let (works,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM works")
            .fetch_one(&pool)
            .await?;
        Ok::<_, StoreError>(BackupInfo {
            index: index.max(0) as u64,
            schema: schema.into_iter().map(|(v,)| v).collect(),
            epoch: epoch.map(|(e,)| e),
            works: works.max(0) as u64,
        })
    }
    .await;
    pool.close().await;
    result
}

/// Checks that `path` is a hub database this binary can serve: a SQLite file, not
/// damaged, with the hub's tables and no migration newer than this binary knows.
pub async fn check_backup(path: &Path) -> Result<BackupInfo, RestoreError> {
    let mut magic = [0u8; 16];
    let mut file = std::fs::File::open(path).map_err(io("cannot open", path))?;
    if !file.metadata().map_err(io("cannot read", path))?.is_file() {
        return Err(RestoreError::NotSqlite(path.to_path_buf()));
    }
    if file.read_exact(&mut magic).is_err() || &magic != SQLITE_MAGIC {
        return Err(RestoreError::NotSqlite(path.to_path_buf()));
    }
    let url = sqlite_url(path);
    let opts = SqliteConnectOptions::from_str(&url)
        .map_err(StoreError::from)?
        .read_only(true)
        .immutable(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(StoreError::from)?;
    let (check,): (String,) = sqlx::query_as("PRAGMA quick_check(1)")
        .fetch_one(&pool)
        .await
        .map_err(|e| RestoreError::Damaged {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    let (tables,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name IN ('_sqlx_migrations', 'hub_index', 'works', 'settings')",
    )
    .fetch_one(&pool)
    .await
    .map_err(StoreError::from)?;
    pool.close().await;
    if check != "ok" {
        return Err(RestoreError::Damaged {
            path: path.to_path_buf(),
            detail: check,
        });
    }
    if tables != 4 {
        return Err(RestoreError::NotFleethub(path.to_path_buf()));
    }
    // Refuses a schema this binary does not know, as `hub serve` would.
    super::SqliteStore::inspect(&format!("{url}?immutable=1")).await?;
    Ok(read_info(path).await?)
}

/// Where a restore left things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// What the restored database holds.
    pub info: BackupInfo,
    /// The new epoch.
    pub epoch: String,
    /// Where the replaced database was moved (`None`: there was none).
    pub replaced: Option<PathBuf>,
}

/// Puts the backup at `from` in place of the SQLite database `database`, with a new
/// epoch. The replaced database (checkpointed first, so its WAL is in it) is renamed to
/// `<database>.replaced-<UTC time>`; nothing is deleted. Refuses while a hub has the
/// database open.
pub async fn restore(from: &Path, database: &Path) -> Result<Restored, RestoreError> {
    let info = check_backup(from).await?;
    let dir = database.parent().unwrap_or(Path::new("."));
    let name = database
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "hub.db".into());
    let replaced = if database.exists() {
        checkpoint_unused(database).await?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        Some(dir.join(format!("{name}.replaced-{stamp}")))
    } else {
        None
    };
    // The copy is made complete (new epoch, synced) under a temporary name, then renamed
    // into place: a crash halfway leaves either database whole.
    let staging = dir.join(format!(".{name}.restoring-{}", new_epoch()));
    let remove = RemoveOnDrop(&staging);
    {
        let mut out = create_private(&staging).map_err(io("cannot create", &staging))?;
        let mut input = std::fs::File::open(from).map_err(io("cannot open", from))?;
        std::io::copy(&mut input, &mut out).map_err(io("cannot write", &staging))?;
        out.sync_all().map_err(io("cannot write", &staging))?;
    }
    let epoch = new_epoch();
    set_epoch(&sqlite_url(&staging), &epoch).await?;
    if let Some(old) = &replaced {
        std::fs::rename(database, old).map_err(io("cannot move aside", database))?;
    }
    std::fs::rename(&staging, database).map_err(io("cannot put in place", database))?;
    std::mem::forget(remove);
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Restored {
        info,
        epoch,
        replaced,
    })
}

/// Checkpoints the database's WAL into it and closes it, after making sure no other
/// process (a serving hub) has it open: in WAL mode every connection holds a shared lock
/// on the file, so an exclusive one is granted only when nobody else has it open.
async fn checkpoint_unused(database: &Path) -> Result<(), RestoreError> {
    let opts = SqliteConnectOptions::from_str(&sqlite_url(database))
        .map_err(StoreError::from)?
        .locking_mode(sqlx::sqlite::SqliteLockingMode::Exclusive)
        .busy_timeout(std::time::Duration::from_millis(200));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(opts)
        .await
        .map_err(StoreError::from)?;
    let locked = async {
        // A write transaction takes the exclusive lock and keeps it (locking_mode).
        sqlx::query("BEGIN EXCLUSIVE").execute(&pool).await?;
        sqlx::query("COMMIT").execute(&pool).await?;
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&pool)
            .await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    pool.close().await;
    match locked {
        Ok(()) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.message().contains("locked") => {
            Err(RestoreError::InUse(database.to_path_buf()))
        }
        Err(e) => Err(StoreError::from(e).into()),
    }
}

/// Gives the database at `url` a new epoch, changing nothing else (no migration): after
/// a restore by other means (`pg_restore`, a point-in-time recovery, a file copy).
pub async fn set_epoch(url: &str, epoch: &str) -> Result<(), StoreError> {
    let sql = "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        let r = sqlx::query(sql)
            .bind(EPOCH_SETTING)
            .bind(epoch)
            .execute(&pool)
            .await;
        pool.close().await;
        r?;
    } else if url.starts_with("sqlite:") {
        let opts = SqliteConnectOptions::from_str(url)?;
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        let r = sqlx::query(sql)
            .bind(EPOCH_SETTING)
            .bind(epoch)
            .execute(&pool)
            .await;
        pool.close().await;
        r?;
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_hex_and_differ() {
        let (a, b) = (new_epoch(), new_epoch());
        assert!(is_epoch(&a) && is_epoch(&b));
        assert_ne!(a, b);
        assert!(!is_epoch(""));
        assert!(!is_epoch("ABC"));
        assert!(!is_epoch(&"a".repeat(65)));
    }

    #[tokio::test]
    async fn a_snapshot_is_restorable_and_a_restore_moves_the_old_database_aside() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("hub.db");
        let store = super::super::SqliteStore::connect(&sqlite_url(&live))
            .await
            .unwrap();
        use super::super::Store;
        store.init_setting(EPOCH_SETTING, "00aa").await.unwrap();
        let mut snap = store.snapshot().await.unwrap();
        assert!(snap.bytes > 0);
        // Unlinked at once: nothing but the database (and its WAL) in the directory.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n.starts_with("hub.db")), "{names:?}");
        let copy = dir.path().join("copy.db");
        std::io::copy(&mut snap.file, &mut std::fs::File::create(&copy).unwrap()).unwrap();
        let info = check_backup(&copy).await.unwrap();
        assert_eq!(info.epoch.as_deref(), Some("00aa"));

        // Served: refused.
        let err = restore(&copy, &live).await.unwrap_err();
        assert!(matches!(err, RestoreError::InUse(_)), "{err}");
        drop(store);
        // Nothing served any more (the pool closes as the store drops).
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let done = restore(&copy, &live).await.unwrap();
        assert_ne!(done.epoch, "00aa");
        assert!(done.replaced.as_ref().unwrap().exists());
        let now = read_info(&live).await.unwrap();
        assert_eq!(now.epoch.as_deref(), Some(done.epoch.as_str()));

        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"hello").unwrap();
        assert!(matches!(
            check_backup(&junk).await.unwrap_err(),
            RestoreError::NotSqlite(_)
        ));
    }
}
