//! The database schema's version: migrating at start, refusing a schema newer than this
//! binary knows, and reading where a database stands without changing it
//! (`hub serve --check-config`).
//!
//! Versions are the numbers of the files in `migrations/<backend>/`; sqlx records each
//! applied one in `_sqlx_migrations`. A hub of an older release meets a newer schema in a
//! rolling upgrade gone backwards (or a downgrade): running on it could write rows the new
//! schema's readers misread, so it refuses before touching anything.

use std::ops::Deref;

use sqlx::Acquire;
use sqlx::migrate::{Migrate, MigrateError, Migrator};

use super::StoreError;

/// The table sqlx records applied migrations in.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Where a database's schema stands against this binary's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaReport {
    /// The migrations the database has applied, in order (empty: a new database).
    pub applied: Vec<i64>,
    /// The newest migration this binary knows.
    pub known: i64,
    /// This binary's migrations the database lacks: applied at the next start.
    pub pending: Vec<i64>,
}

impl SchemaReport {
    fn new(migrator: &Migrator, applied: Vec<i64>) -> Self {
        let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
        let pending = migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        SchemaReport {
            applied,
            known,
            pending,
        }
    }

    /// The first applied migration this binary does not know (written by a newer hub).
    pub fn unknown(&self, migrator: &Migrator) -> Option<i64> {
        self.applied
            .iter()
            .copied()
            .find(|v| !migrator.version_exists(*v))
    }
}

/// Applies this binary's pending migrations, after refusing a schema it does not know.
pub(super) async fn migrate<'a, A>(migrator: &Migrator, conn: A) -> Result<(), StoreError>
where
    A: Acquire<'a>,
    <A::Connection as Deref>::Target: Migrate,
{
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    migrator.run(conn).await.map_err(|e| match e {
        // sqlx checks every applied migration against ours before applying any, so
        // nothing was changed when it says one is missing or modified.
        MigrateError::VersionMissing(found) => StoreError::SchemaNewer { found, known },
        MigrateError::VersionMismatch(version) => StoreError::SchemaModified { version },
        other => StoreError::Migrate(other),
    })
}

/// The report for a database no hub has migrated yet (no migrations table).
pub(super) fn new_database(migrator: &Migrator) -> SchemaReport {
    SchemaReport::new(migrator, Vec::new())
}

/// Reads which migrations a database has applied, without creating or changing anything.
/// Only for a database that has sqlx's table ([`table_exists_sql`] says).
pub(super) async fn inspect<'a, A>(migrator: &Migrator, conn: A) -> Result<SchemaReport, StoreError>
where
    A: Acquire<'a>,
    <A::Connection as Deref>::Target: Migrate,
{
    let mut conn = conn.acquire().await?;
    let applied = conn
        .list_applied_migrations(MIGRATIONS_TABLE)
        .await?
        .into_iter()
        .map(|m| m.version)
        .collect();
    let report = SchemaReport::new(migrator, applied);
    if let Some(found) = report.unknown(migrator) {
        return Err(StoreError::SchemaNewer {
            found,
            known: report.known,
        });
    }
    Ok(report)
}

/// The query that says whether sqlx's migrations table exists, per backend.
pub(super) fn table_exists_sql(backend: &str) -> &'static str {
    match backend {
        "postgres" => "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
        _ => {
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrator() -> Migrator {
        sqlx::migrate!("../migrations/sqlite")
    }

    #[test]
    fn a_report_names_what_is_pending_and_what_is_unknown() {
        let m = migrator();
        let known = m.iter().map(|m| m.version).max().unwrap();
        let fresh = SchemaReport::new(&m, vec![]);
        assert_eq!(fresh.known, known);
        assert_eq!(fresh.pending.len(), m.iter().count());
        assert_eq!(fresh.unknown(&m), None);

        let behind = SchemaReport::new(&m, vec![1]);
        assert!(!behind.pending.contains(&1));
        assert_eq!(behind.pending.len(), m.iter().count() - 1);

        let newer = SchemaReport::new(&m, (1..=known + 1).collect());
        assert!(newer.pending.is_empty());
        assert_eq!(newer.unknown(&m), Some(known + 1));
    }
}
