//! The Postgres backend (production; several hubs may share one database).

use std::time::Duration;

use futures::StreamExt;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};

use super::{IndexStream, StoreError, sql::sql_store};

/// The channel on which hubs announce committed indexes to each other.
const CHANNEL: &str = "hub_changes";

/// This process's tag on its NOTIFYs (`<instance> <index>`), so its listener skips its own:
/// the writer publishes its changes itself, and re-reading them from the database cost a
/// catch-up query for nearly half of all batches under load. Hubs in one process (tests
/// only) share it and so hear each other through the feed's one-second poll instead.
static INSTANCE: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| uuid::Uuid::new_v4().simple().to_string());

/// ManifestWorks, clusters and settings in Postgres.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    const BACKEND: &'static str = "postgres";

    /// Connects and applies migrations (sqlx serialises concurrent migrators with an
    /// advisory lock, so hubs may start together).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PgStore { pool })
    }

    /// Begins a transaction and takes the index row lock; every hub's writer queues here,
    /// which is what makes indexes follow commit order.
    async fn begin_locked(
        &self,
    ) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, u64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let (v,): (i64,) = sqlx::query_as("SELECT value FROM hub_index WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *tx)
            .await?;
        Ok((tx, v as u64))
    }

    async fn listen_impl(&self) -> Result<Option<IndexStream>, StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(CHANNEL).await?;
        let stream = listener.into_stream().filter_map(|n| async move {
            match n {
                Err(e) => Some(Err(e.into())),
                Ok(n) => match n.payload().split_once(' ') {
                    Some((from, _)) if from == INSTANCE.as_str() => None,
                    Some((_, index)) => Some(Ok(index.parse::<u64>().unwrap_or(0))),
                    // A hub of an older version: a bare index.
                    None => Some(Ok(n.payload().parse::<u64>().unwrap_or(0))),
                },
            }
        });
        Ok(Some(stream.boxed()))
    }
}

impl PgTx {
    /// NOTIFY is delivered at commit, so other hubs never hear of an uncommitted index.
    async fn announce(&mut self, last: u64) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(format!("{} {last}", *INSTANCE))
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }
}

sql_store!(store: PgStore, tx: PgTx, db: sqlx::Postgres);
