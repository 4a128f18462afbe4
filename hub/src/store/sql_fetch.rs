//! The single-row reads, the row-by-row read of a list, the change log's read and the audit
//! insert that the store and its write transactions use, through a pool or a transaction:
//! stamped out per database by
//! [`sql_store`](super::sql::sql_store), which invokes [`sql_fetch`] first.

/// Defines `fetch_work`, `fetch_works_after`, `fetch_cluster`, `fetch_changes`,
/// `insert_audit`, `fetch_registration` and `fetch_agent` over the sqlx database `$db`.
macro_rules! sql_fetch {
    ($db:ty) => {
        /// One work, through a pool or a transaction.
        async fn fetch_work<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            cluster: &str,
            name: &str,
        ) -> Result<Option<api::ManifestWork>, $crate::store::StoreError> {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT object FROM works WHERE cluster = $1 AND name = $2")
                    .bind(cluster)
                    .bind(name)
                    .fetch_optional(e)
                    .await?;
            row.map(|(o,)| $crate::store::decode(&format!("work {cluster}/{name}"), &o))
                .transpose()
        }

        /// Works in key order after `after`, at most `limit`, a row each: the read behind
        /// [`Store::list_works`]($crate::store::Store::list_works) (see
        /// [`list_start`]($crate::store::list_start) for where it starts).
        async fn fetch_works_after<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            cluster: Option<&str>,
            after: Option<(&str, &str)>,
            limit: u32,
        ) -> Result<Vec<$crate::store::StoredWork>, $crate::store::StoreError> {
            let (from_cluster, from_name) = $crate::store::list_start(cluster, after);
            let sql = if cluster.is_some() {
                "SELECT cluster, name, object FROM works \
                 WHERE cluster = $1 AND name > $2 ORDER BY name LIMIT $3"
            } else {
                // A row comparison is one range of the key's index; an `OR` is not.
                "SELECT cluster, name, object FROM works \
                 WHERE (cluster, name) > ($1, $2) ORDER BY cluster, name LIMIT $3"
            };
            let rows: Vec<(String, String, String)> = sqlx::query_as(sql)
                .bind(from_cluster)
                .bind(from_name)
                .bind(limit as i64)
                .fetch_all(e)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(cluster, name, object)| $crate::store::StoredWork {
                    cluster,
                    name,
                    object,
                })
                .collect())
        }

        /// One cluster, through a pool or a transaction.
        async fn fetch_cluster<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            name: &str,
        ) -> Result<Option<api::ManagedCluster>, $crate::store::StoreError> {
            let row: Option<(String,)> = sqlx::query_as("SELECT object FROM clusters WHERE name = $1")
                .bind(name)
                .fetch_optional(e)
                .await?;
            row.map(|(o,)| $crate::store::decode(&format!("cluster {name}"), &o))
                .transpose()
        }

        /// Up to `limit` changes after `index`, in index order.
        async fn fetch_changes<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            index: u64,
            limit: u32,
        ) -> Result<Vec<$crate::store::Change>, $crate::store::StoreError> {
            type Row = (i64, i32, String, String, String, Option<String>, bool, Option<bool>);
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT idx, CAST(kind AS INTEGER), cluster, name, labels, prev_labels, \
                 status_only, has_ttl FROM changes WHERE idx > $1 ORDER BY idx LIMIT $2",
            )
            .bind(index as i64)
            .bind(limit as i64)
            .fetch_all(e)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(idx, kind, cluster, name, labels, prev, status_only, has_ttl)| {
                    $crate::store::Change {
                        index: idx as u64,
                        kind: $crate::store::ChangeKind::from_stored(kind),
                        cluster,
                        name,
                        labels: $crate::store::parse_labels(&labels),
                        prev_labels: prev.as_deref().map($crate::store::parse_labels),
                        status_only,
                        has_ttl,
                    }
                })
                .collect())
        }

        /// One audit entry, on the pool or inside the transaction of the change it records.
        async fn insert_audit<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            entry: &$crate::store::NewAuditEntry,
        ) -> Result<(), $crate::store::StoreError> {
            sqlx::query(
                "INSERT INTO audit (at, actor, action, target, source, details) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(chrono::Utc::now().to_rfc3339())
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(&entry.source)
            .bind(entry.details.to_string())
            .execute(e)
            .await?;
            Ok(())
        }

        /// One registration, through a pool or a transaction.
        async fn fetch_registration<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            id: &str,
        ) -> Result<Option<api::Registration>, $crate::store::StoreError> {
            let row: Option<(String,)> = sqlx::query_as("SELECT object FROM registrations WHERE id = $1")
                .bind(id)
                .fetch_optional(e)
                .await?;
            row.map(|(o,)| $crate::store::decode(&format!("registration {id}"), &o))
                .transpose()
        }

        /// A cluster's agent, through a pool or a transaction.
        async fn fetch_agent<'e, E: sqlx::Executor<'e, Database = $db>>(
            e: E,
            cluster: &str,
        ) -> Result<Option<$crate::store::Agent>, $crate::store::StoreError> {
            let row: Option<(String, String, String, i64, bool)> = sqlx::query_as(
                "SELECT cluster, public_key, registration_id, generation, revoked FROM agents WHERE cluster = $1",
            )
            .bind(cluster)
            .fetch_optional(e)
            .await?;
            Ok(row.map($crate::store::agent_from_row))
        }
    };
}

pub(crate) use sql_fetch;
