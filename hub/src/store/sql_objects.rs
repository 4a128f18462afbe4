//! The SQL of namespaced fleet objects (`fleet_objects`), through a pool or a transaction:
//! stamped out per database by [`sql_store`](super::sql::sql_store), which invokes
//! [`sql_objects`] first and calls these from both the store and its write transactions.

use super::{ObjectKind, StoredObject};

/// A `fleet_objects` row: (namespace, name, resource_version, object).
pub(super) type ObjectRow = (String, String, i64, String);

/// The stored object of a row of `kind`.
pub(super) fn object_from_row(
    kind: ObjectKind,
    (namespace, name, rv, object): ObjectRow,
) -> StoredObject {
    StoredObject {
        kind,
        namespace,
        name,
        resource_version: u64::try_from(rv).unwrap_or_default(),
        object,
    }
}

/// The `kind` column's value. Bound as INTEGER on both databases: SQLite has no narrower
/// type to bind, and Postgres compares and assigns it to SMALLINT directly.
pub(super) fn kind_code(kind: ObjectKind) -> i32 {
    kind as i32
}

/// Defines `fetch_object`, `fetch_objects`, `upsert_object` and `remove_object` over the
/// sqlx database `$db`.
macro_rules! sql_objects {
    ($db:ty) => {
        /// One fleet object, through a pool or a transaction.
        async fn fetch_object<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            kind: $crate::store::ObjectKind,
            namespace: &str,
            name: &str,
        ) -> Result<Option<$crate::store::StoredObject>, $crate::store::StoreError> {
            let row: Option<$crate::store::sql_objects::ObjectRow> = sqlx::query_as(
                "SELECT namespace, name, resource_version, object FROM fleet_objects \
                 WHERE kind = $1 AND namespace = $2 AND name = $3",
            )
            .bind($crate::store::sql_objects::kind_code(kind))
            .bind(namespace)
            .bind(name)
            .fetch_optional(e)
            .await?;
            Ok(row.map(|r| $crate::store::sql_objects::object_from_row(kind, r)))
        }

        /// The fleet objects of a kind ordered by (namespace, name); one namespace or all.
        async fn fetch_objects<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            kind: $crate::store::ObjectKind,
            namespace: Option<&str>,
        ) -> Result<Vec<$crate::store::StoredObject>, $crate::store::StoreError> {
            let rows: Vec<$crate::store::sql_objects::ObjectRow> = sqlx::query_as(
                "SELECT namespace, name, resource_version, object FROM fleet_objects \
                 WHERE kind = $1 AND ($2 IS NULL OR namespace = $2) ORDER BY namespace, name",
            )
            .bind($crate::store::sql_objects::kind_code(kind))
            .bind(namespace)
            .fetch_all(e)
            .await?;
            Ok(rows
                .into_iter()
                .map(|r| $crate::store::sql_objects::object_from_row(kind, r))
                .collect())
        }

        /// Inserts or replaces a fleet object.
        async fn upsert_object<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            kind: $crate::store::ObjectKind,
            namespace: &str,
            name: &str,
            object: &str,
            index: u64,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO fleet_objects (kind, namespace, name, resource_version, object) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, namespace, name) DO UPDATE \
                 SET resource_version = excluded.resource_version, object = excluded.object",
            )
            .bind($crate::store::sql_objects::kind_code(kind))
            .bind(namespace)
            .bind(name)
            .bind(i64::try_from(index).unwrap_or(i64::MAX))
            .bind(object)
            .execute(e)
            .await?;
            Ok(())
        }

        /// Removes a fleet object.
        async fn remove_object<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            kind: $crate::store::ObjectKind,
            namespace: &str,
            name: &str,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "DELETE FROM fleet_objects WHERE kind = $1 AND namespace = $2 AND name = $3",
            )
            .bind($crate::store::sql_objects::kind_code(kind))
            .bind(namespace)
            .bind(name)
            .execute(e)
            .await?;
            Ok(())
        }
    };
}

pub(crate) use sql_objects;
