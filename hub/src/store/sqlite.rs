//! The SQLite backend: the embedded default for a single hub.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::{IndexStream, StoreError, sql::sql_store};

/// ManifestWorks, clusters and settings in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    const BACKEND: &'static str = "sqlite";

    /// Opens (creating when missing) and migrates the database.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // WAL with synchronous=NORMAL survives a killed process (only an OS crash may lose
        // the last commits), and lets readers run beside the writer.
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
        Ok(SqliteStore { pool })
    }

    /// `BEGIN IMMEDIATE` takes the database write lock up front, so the index read here
    /// cannot move until commit.
    async fn begin_locked(
        &self,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Sqlite>, u64), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (v,): (i64,) = sqlx::query_as("SELECT value FROM hub_index WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        Ok((tx, v as u64))
    }

    async fn listen_impl(&self) -> Result<Option<IndexStream>, StoreError> {
        Ok(None)
    }
}

impl SqliteTx {
    /// One process owns a SQLite database: nobody else to tell.
    async fn announce(&mut self, _last: u64) -> Result<(), StoreError> {
        Ok(())
    }
}

sql_store!(store: SqliteStore, tx: SqliteTx, db: sqlx::Sqlite);
