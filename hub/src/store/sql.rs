//! The SQL shared by both backends. Both dialects take `$N` placeholders and the same
//! schema shape, so the implementation is written once and stamped out per database;
//! each backend supplies only how a write batch begins and ends (where Postgres saves
//! round trips with statements SQLite lacks) and how to listen.

/// Implements [`Store`](super::Store) for `$store` and [`WriteTx`](super::WriteTx) for
/// `$tx` over the sqlx database `$db`, whose transaction is held in a `$conn` (a connection
/// inside it). The backend module provides
/// `$store::begin_batch(works, clusters)` (a `$tx` holding the index lock, with those
/// read), `$tx::finish_and_commit(changes, audit)` (the batch's last statements and COMMIT),
/// `$store::listen_impl`, `$store::lead_impl`, `$store::list_works_impl` (a list's read,
/// which each backend's client library makes fast its own way), `$store::BACKEND` and
/// `$store::WRITER_APART` (see [`Store::writer_apart`](super::Store::writer_apart)).
macro_rules! sql_store {
    (store: $store:ident, tx: $tx:ident, conn: $conn:ty, db: $db:ty) => {
        $crate::store::sql_fetch::sql_fetch!($db);
        $crate::store::sql_objects::sql_objects!($db);

        /// A write transaction on this backend, holding the index lock.
        ///
        /// It caches what it read and wrote, and holds work upserts back until commit (or
        /// until a query needs them), so a batch of N work writes costs a few statements
        /// instead of 3N round trips: under load the writer's serial round trips, not the
        /// database, bounded the create rate.
        pub struct $tx {
            tx: $conn,
            base: u64,
            /// Works as this transaction sees them (`None`: known not to exist).
            works: std::collections::HashMap<(String, String), Option<$crate::store::CachedWork>>,
            /// Clusters as this transaction sees them.
            clusters: std::collections::HashMap<String, Option<api::ManagedCluster>>,
            /// Work upserts not yet sent: key → (resourceVersion, JSON).
            pending: std::collections::BTreeMap<(String, String), (i64, std::sync::Arc<str>)>,
            /// Works this transaction read as absent (under the index lock, which every
            /// writer of works holds) and sent nothing for since: their held-back upserts
            /// may be plain inserts (Postgres's batch makes them so). A key leaves it when a statement for it is sent (and
            /// does not come back, even when its savepoint is rolled back: an upsert is
            /// always right, a plain insert only for a row surely absent).
            absent: std::collections::HashSet<(String, String)>,
            /// How to undo the current op, between `begin_op` and its end.
            undo: Option<$crate::store::Undo>,
        }
        impl $tx {
            fn new(tx: $conn, base: u64) -> Self {
                $tx {
                    tx,
                    base,
                    works: Default::default(),
                    clusters: Default::default(),
                    pending: Default::default(),
                    absent: Default::default(),
                    undo: None,
                }
            }

            /// Caches a work as this transaction sees it (journaled inside an op).
            fn cache_work(
                &mut self,
                key: (String, String),
                work: Option<$crate::store::CachedWork>,
            ) {
                if let Some(u) = &mut self.undo {
                    u.works.push((key.clone(), self.works.get(&key).cloned()));
                }
                self.works.insert(key, work);
            }

            /// Caches a cluster as this transaction sees it (journaled inside an op).
            fn cache_cluster(&mut self, name: String, cluster: Option<api::ManagedCluster>) {
                if let Some(u) = &mut self.undo {
                    u.clusters.push((name.clone(), self.clusters.get(&name).cloned()));
                }
                self.clusters.insert(name, cluster);
            }

            /// Holds back (`Some`) or drops (`None`) a work upsert (journaled inside an op).
            fn set_pending(
                &mut self,
                key: (String, String),
                upsert: Option<(i64, std::sync::Arc<str>)>,
            ) {
                if let Some(u) = &mut self.undo {
                    u.pending.push((key.clone(), self.pending.get(&key).cloned()));
                }
                match upsert {
                    Some(v) => self.pending.insert(key, v),
                    None => self.pending.remove(&key),
                };
            }

            /// Opens the op's savepoint before its first statement that writes: an op
            /// that only holds work upserts back costs no round trip for it.
            async fn before_write(&mut self) -> Result<(), $crate::store::StoreError> {
                if let Some(u) = &mut self.undo
                    && !u.sent
                {
                    sqlx::query("SAVEPOINT fleethub_op").execute(&mut *self.tx).await?;
                    u.sent = true;
                }
                Ok(())
            }

            /// Sends the held-back work upserts as one multi-row statement.
            async fn flush_works(&mut self) -> Result<(), $crate::store::StoreError> {
                if self.pending.is_empty() {
                    return Ok(());
                }
                self.before_write().await?;
                if let Some(u) = &mut self.undo {
                    // Rolling the savepoint back unsends these; they are held back again.
                    u.pending
                        .extend(self.pending.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
                }
                let pending = std::mem::take(&mut self.pending);
                for key in pending.keys() {
                    self.absent.remove(key);
                }
                let mut qb: sqlx::QueryBuilder<$db> = sqlx::QueryBuilder::new(
                    "INSERT INTO works (cluster, name, resource_version, object) ",
                );
                qb.push_values(pending, |mut b, ((cluster, name), (rv, object))| {
                    b.push_bind(cluster)
                        .push_bind(name)
                        .push_bind(rv)
                        .push_bind(object.to_string());
                });
                qb.push(
                    " ON CONFLICT (cluster, name) DO UPDATE \
                     SET resource_version = excluded.resource_version, object = excluded.object",
                );
                qb.build().execute(&mut *self.tx).await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::WriteTx for $tx {
            fn base_index(&self) -> u64 {
                self.base
            }

            async fn get_work(
                &mut self,
                cluster: &str,
                name: &str,
            ) -> Result<Option<api::ManifestWork>, $crate::store::StoreError> {
                let key = (cluster.to_string(), name.to_string());
                if let Some(w) = self.works.get(&key) {
                    return w.as_ref().map(|w| w.work(&key)).transpose();
                }
                let w = fetch_work(&mut *self.tx, cluster, name).await?;
                if w.is_none() {
                    // As this transaction sees it now, under the index lock.
                    self.absent.insert(key.clone());
                }
                self.cache_work(key, w.clone().map(|w| $crate::store::CachedWork::Read(Box::new(w))));
                Ok(w)
            }

            async fn work_names(
                &mut self,
                cluster: &str,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                // The query must see this transaction's new works.
                self.flush_works().await?;
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT name FROM works WHERE cluster = $1 ORDER BY name")
                        .bind(cluster)
                        .fetch_all(&mut *self.tx)
                        .await?;
                Ok(rows.into_iter().map(|(n,)| n).collect())
            }

            async fn put_work(
                &mut self,
                work: &api::ManifestWork,
                index: u64,
            ) -> Result<std::sync::Arc<str>, $crate::store::StoreError> {
                let object: std::sync::Arc<str> = serde_json::to_string(work).map_err(|source| {
                    $crate::store::StoreError::Corrupt {
                        what: format!("work {}", work.metadata.name),
                        source,
                    }
                })?
                .into();
                let key = (
                    work.metadata.namespace.clone().unwrap_or_default(),
                    work.metadata.name.clone(),
                );
                self.cache_work(
                    key.clone(),
                    Some($crate::store::CachedWork::Written(object.clone())),
                );
                self.set_pending(key, Some((index as i64, object.clone())));
                Ok(object)
            }

            async fn delete_work(
                &mut self,
                cluster: &str,
                name: &str,
            ) -> Result<(), $crate::store::StoreError> {
                let key = (cluster.to_string(), name.to_string());
                self.set_pending(key.clone(), None);
                self.absent.remove(&key);
                self.cache_work(key, None);
                self.before_write().await?;
                sqlx::query("DELETE FROM works WHERE cluster = $1 AND name = $2")
                    .bind(cluster)
                    .bind(name)
                    .execute(&mut *self.tx)
                    .await?;
                Ok(())
            }

            async fn get_cluster(
                &mut self,
                name: &str,
            ) -> Result<Option<api::ManagedCluster>, $crate::store::StoreError> {
                if let Some(c) = self.clusters.get(name) {
                    return Ok(c.clone());
                }
                let c = fetch_cluster(&mut *self.tx, name).await?;
                self.cache_cluster(name.to_string(), c.clone());
                Ok(c)
            }

            async fn put_cluster(
                &mut self,
                cluster: &api::ManagedCluster,
                index: u64,
            ) -> Result<(), $crate::store::StoreError> {
                let object = serde_json::to_string(cluster).map_err(|source| {
                    $crate::store::StoreError::Corrupt {
                        what: format!("cluster {}", cluster.metadata.name),
                        source,
                    }
                })?;
                self.before_write().await?;
                sqlx::query(
                    "INSERT INTO clusters (name, resource_version, object) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE \
                     SET resource_version = excluded.resource_version, object = excluded.object",
                )
                .bind(&cluster.metadata.name)
                .bind(index as i64)
                .bind(object)
                .execute(&mut *self.tx)
                .await?;
                self.cache_cluster(cluster.metadata.name.clone(), Some(cluster.clone()));
                Ok(())
            }

            async fn delete_cluster(&mut self, name: &str) -> Result<(), $crate::store::StoreError> {
                self.cache_cluster(name.to_string(), None);
                self.before_write().await?;
                for sql in [
                    "DELETE FROM clusters WHERE name = $1",
                    "DELETE FROM agents WHERE cluster = $1",
                    "DELETE FROM leases WHERE cluster = $1",
                ] {
                    sqlx::query(sql).bind(name).execute(&mut *self.tx).await?;
                }
                Ok(())
            }

            async fn get_registration(
                &mut self,
                id: &str,
            ) -> Result<Option<api::Registration>, $crate::store::StoreError> {
                fetch_registration(&mut *self.tx, id).await
            }

            async fn put_registration(
                &mut self,
                registration: &api::Registration,
                index: u64,
            ) -> Result<(), $crate::store::StoreError> {
                let object = $crate::store::encode("registration", registration)?;
                self.before_write().await?;
                sqlx::query(
                    "INSERT INTO registrations (id, cluster, resource_version, object) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (id) DO UPDATE \
                     SET resource_version = excluded.resource_version, object = excluded.object",
                )
                .bind(&registration.id)
                .bind(&registration.cluster_name)
                .bind(index as i64)
                .bind(object)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn get_agent(
                &mut self,
                cluster: &str,
            ) -> Result<Option<$crate::store::Agent>, $crate::store::StoreError> {
                fetch_agent(&mut *self.tx, cluster).await
            }

            async fn put_agent(
                &mut self,
                agent: &$crate::store::Agent,
            ) -> Result<(), $crate::store::StoreError> {
                self.before_write().await?;
                sqlx::query(
                    "INSERT INTO agents (cluster, public_key, registration_id, generation, revoked) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (cluster) DO UPDATE \
                     SET public_key = excluded.public_key, registration_id = excluded.registration_id, \
                         generation = excluded.generation, revoked = excluded.revoked",
                )
                .bind(&agent.cluster)
                .bind(&agent.public_key)
                .bind(&agent.registration_id)
                .bind(agent.generation)
                .bind(agent.revoked)
                .execute(&mut *self.tx)
                .await?;
                Ok(())
            }

            async fn get_object(
                &mut self,
                kind: $crate::store::ObjectKind,
                namespace: &str,
                name: &str,
            ) -> Result<Option<$crate::store::StoredObject>, $crate::store::StoreError> {
                fetch_object(&mut *self.tx, kind, namespace, name).await
            }

            async fn put_object(
                &mut self,
                kind: $crate::store::ObjectKind,
                namespace: &str,
                name: &str,
                object: &str,
                index: u64,
            ) -> Result<(), $crate::store::StoreError> {
                // Sent at once, under the op's savepoint, so undoing the op undoes it.
                self.before_write().await?;
                upsert_object(&mut *self.tx, kind, namespace, name, object, index).await
            }

            async fn delete_object(
                &mut self,
                kind: $crate::store::ObjectKind,
                namespace: &str,
                name: &str,
            ) -> Result<(), $crate::store::StoreError> {
                self.before_write().await?;
                remove_object(&mut *self.tx, kind, namespace, name).await
            }

            fn begin_op(&mut self) {
                self.undo = Some(Default::default());
            }

            async fn end_op(&mut self) -> Result<(), $crate::store::StoreError> {
                if self.undo.take().is_some_and(|u| u.sent) {
                    sqlx::query("RELEASE SAVEPOINT fleethub_op")
                        .execute(&mut *self.tx)
                        .await?;
                }
                Ok(())
            }

            async fn undo_op(&mut self) -> Result<(), $crate::store::StoreError> {
                let Some(u) = self.undo.take() else {
                    return Ok(());
                };
                if u.sent {
                    for sql in ["ROLLBACK TO SAVEPOINT fleethub_op", "RELEASE SAVEPOINT fleethub_op"] {
                        sqlx::query(sql).execute(&mut *self.tx).await?;
                    }
                }
                u.restore(&mut self.works, &mut self.clusters, &mut self.pending);
                Ok(())
            }

            async fn commit(
                self: Box<Self>,
                changes: &[$crate::store::Change],
                audit: &[$crate::store::NewAuditEntry],
            ) -> Result<(), $crate::store::StoreError> {
                self.finish_and_commit(changes, audit).await
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn begin_write(
                &self,
                works: &[(String, String)],
                clusters: &[String],
            ) -> Result<Box<dyn $crate::store::WriteTx>, $crate::store::StoreError> {
                Ok(Box::new(self.begin_batch(works, clusters).await?))
            }

            fn writer_apart(&self) -> bool {
                Self::WRITER_APART
            }

            async fn current_index(&self) -> Result<u64, $crate::store::StoreError> {
                let (v,): (i64,) = sqlx::query_as("SELECT value FROM hub_index WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(v as u64)
            }

            async fn changes_since(
                &self,
                index: u64,
                limit: u32,
            ) -> Result<Vec<$crate::store::Change>, $crate::store::StoreError> {
                fetch_changes(&self.pool, index, limit).await
            }

            async fn prune_changes(&self, below: u64) -> Result<u64, $crate::store::StoreError> {
                $crate::store::sql_retention::prune_changes!(&self.pool, below)
            }

            async fn prune_audit(
                &self,
                before: chrono::DateTime<chrono::Utc>,
                limit: u32,
            ) -> Result<u64, $crate::store::StoreError> {
                $crate::store::sql_retention::prune_audit!(&self.pool, before, limit)
            }

            async fn reclaim_work_space(&self) -> Result<(), $crate::store::StoreError> {
                $crate::store::sql_retention::reclaim_work_space!(&self.pool, Self::BACKEND)
            }

            async fn get_work(
                &self,
                cluster: &str,
                name: &str,
            ) -> Result<Option<api::ManifestWork>, $crate::store::StoreError> {
                fetch_work(&self.pool, cluster, name).await
            }

            async fn list_works(
                &self,
                cluster: Option<&str>,
                after: Option<(&str, &str)>,
                limit: u32,
            ) -> Result<Vec<$crate::store::StoredWork>, $crate::store::StoreError> {
                self.list_works_impl(cluster, after, limit).await
            }

            async fn count_works(&self) -> Result<u64, $crate::store::StoreError> {
                let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM works")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n as u64)
            }

            async fn get_cluster(
                &self,
                name: &str,
            ) -> Result<Option<api::ManagedCluster>, $crate::store::StoreError> {
                fetch_cluster(&self.pool, name).await
            }

            async fn cluster_versions(
                &self,
            ) -> Result<Vec<(String, u64)>, $crate::store::StoreError> {
                let rows: Vec<(String, i64)> =
                    sqlx::query_as("SELECT name, resource_version FROM clusters")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows
                    .into_iter()
                    .map(|(n, rv)| (n, u64::try_from(rv).unwrap_or_default()))
                    .collect())
            }

            async fn list_clusters(
                &self,
            ) -> Result<Vec<api::ManagedCluster>, $crate::store::StoreError> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT object FROM clusters ORDER BY name")
                        .fetch_all(&self.pool)
                        .await?;
                rows.iter()
                    .map(|(o,)| $crate::store::decode("cluster", o))
                    .collect()
            }

            async fn get_setting(
                &self,
                key: &str,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT value FROM settings WHERE key = $1")
                        .bind(key)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(v,)| v))
            }

            async fn init_setting(
                &self,
                key: &str,
                value: &str,
            ) -> Result<String, $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
                let (v,): (String,) = sqlx::query_as("SELECT value FROM settings WHERE key = $1")
                    .bind(key)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(v)
            }

            async fn put_setting(
                &self,
                key: &str,
                value: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO settings (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )
                .bind(key)
                .bind(value)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn insert_token(
                &self,
                token: &$crate::store::StoredToken,
                audit: &$crate::store::NewAuditEntry,
            ) -> Result<(), $crate::store::StoreError> {
                let object = $crate::store::encode("token", &token.token)?;
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO tokens (id, secret_sha256, uses, object) VALUES ($1, $2, 0, $3)")
                    .bind(&token.token.id)
                    .bind(&token.secret_sha256)
                    .bind(object)
                    .execute(&mut *tx)
                    .await?;
                insert_audit(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn get_token(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::StoredToken>, $crate::store::StoreError> {
                let row: Option<(String, i64, String)> =
                    sqlx::query_as("SELECT secret_sha256, uses, object FROM tokens WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map($crate::store::token_from_row).transpose()
            }

            async fn list_tokens(
                &self,
            ) -> Result<Vec<$crate::store::StoredToken>, $crate::store::StoreError> {
                let rows: Vec<(String, i64, String)> =
                    sqlx::query_as("SELECT secret_sha256, uses, object FROM tokens ORDER BY id")
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map($crate::store::token_from_row).collect()
            }

            async fn delete_token(
                &self,
                id: &str,
                audit: &$crate::store::NewAuditEntry,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query("DELETE FROM tokens WHERE id = $1").bind(id).execute(&mut *tx).await?;
                let found = r.rows_affected() > 0;
                if found {
                    insert_audit(&mut *tx, audit).await?;
                }
                tx.commit().await?;
                Ok(found)
            }

            async fn use_token(
                &self,
                id: &str,
                max_uses: Option<u64>,
            ) -> Result<bool, $crate::store::StoreError> {
                // One statement, so concurrent joins cannot both take the last use.
                let r = sqlx::query("UPDATE tokens SET uses = uses + 1 WHERE id = $1 AND ($2 < 0 OR uses < $2)")
                    .bind(id)
                    .bind(max_uses.map(|m| m as i64).unwrap_or(-1))
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn get_registration(
                &self,
                id: &str,
            ) -> Result<Option<api::Registration>, $crate::store::StoreError> {
                fetch_registration(&self.pool, id).await
            }

            async fn list_registrations(
                &self,
            ) -> Result<Vec<api::Registration>, $crate::store::StoreError> {
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT object FROM registrations ORDER BY resource_version")
                        .fetch_all(&self.pool)
                        .await?;
                rows.iter().map(|(o,)| $crate::store::decode("registration", o)).collect()
            }

            async fn get_agent(
                &self,
                cluster: &str,
            ) -> Result<Option<$crate::store::Agent>, $crate::store::StoreError> {
                fetch_agent(&self.pool, cluster).await
            }

            async fn renew_leases(
                &self,
                leases: &[(String, chrono::DateTime<chrono::Utc>)],
            ) -> Result<(), $crate::store::StoreError> {
                // One statement per 1,000 rows: well inside both databases' limits on
                // bound parameters, and one commit for a whole second of heartbeats.
                for chunk in leases.chunks(1000) {
                    let mut qb: sqlx::QueryBuilder<$db> =
                        sqlx::QueryBuilder::new("INSERT INTO leases (cluster, renewed_at) ");
                    qb.push_values(chunk, |mut b, (cluster, at)| {
                        // Fixed-width (nanoseconds, `+00:00`): the WHERE below compares text.
                        b.push_bind(cluster.clone())
                            .push_bind(at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, false));
                    });
                    qb.push(
                        " ON CONFLICT (cluster) DO UPDATE SET renewed_at = excluded.renewed_at \
                         WHERE excluded.renewed_at > leases.renewed_at",
                    );
                    qb.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn leases(
                &self,
            ) -> Result<std::collections::BTreeMap<String, chrono::DateTime<chrono::Utc>>, $crate::store::StoreError> {
                let rows: Vec<(String, String)> = sqlx::query_as("SELECT cluster, renewed_at FROM leases")
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|(c, t)| {
                        chrono::DateTime::parse_from_rfc3339(&t).ok().map(|t| (c, t.with_timezone(&chrono::Utc)))
                    })
                    .collect())
            }

            async fn list_audit(
                &self,
                target_prefix: Option<&str>,
                limit: u32,
            ) -> Result<Vec<api::AuditEntry>, $crate::store::StoreError> {
                let rows: Vec<(i64, String, String, String, String, String, String)> = sqlx::query_as(
                    "SELECT id, at, actor, action, target, source, details FROM audit \
                     WHERE $1 = '' OR target = $1 OR target LIKE $1 || '/%' ORDER BY id DESC LIMIT $2",
                )
                .bind(target_prefix.unwrap_or(""))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, at, actor, action, target, source, details)| api::AuditEntry {
                        id,
                        at: chrono::DateTime::parse_from_rfc3339(&at)
                            .map(|t| t.with_timezone(&chrono::Utc))
                            .unwrap_or_default(),
                        actor,
                        action,
                        target,
                        source,
                        details: serde_json::from_str(&details).unwrap_or_default(),
                    })
                    .collect())
            }

            async fn use_assertion_id(
                &self,
                issuer: &str,
                jti: &str,
                expires_at: i64,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "INSERT INTO assertion_ids (issuer, jti, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE assertion_ids.expires_at < $4",
                )
                .bind(issuer)
                .bind(jti)
                .bind(expires_at)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn purge_assertion_ids(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM assertion_ids WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn listen(
                &self,
            ) -> Result<Option<$crate::store::IndexStream>, $crate::store::StoreError> {
                self.listen_impl().await
            }

            async fn get_object(
                &self,
                kind: $crate::store::ObjectKind,
                namespace: &str,
                name: &str,
            ) -> Result<Option<$crate::store::StoredObject>, $crate::store::StoreError> {
                fetch_object(&self.pool, kind, namespace, name).await
            }

            async fn list_objects(
                &self,
                kind: $crate::store::ObjectKind,
                namespace: Option<&str>,
            ) -> Result<Vec<$crate::store::StoredObject>, $crate::store::StoreError> {
                fetch_objects(&self.pool, kind, namespace).await
            }

            async fn lead(
                &self,
                name: &str,
            ) -> Result<Option<Box<dyn $crate::store::Leadership>>, $crate::store::StoreError> {
                self.lead_impl(name).await
            }

            async fn snapshot(
                &self,
            ) -> Result<$crate::store::backup::Snapshot, $crate::store::StoreError> {
                self.snapshot_impl().await
            }

            fn backend(&self) -> &'static str {
                Self::BACKEND
            }
        }
    };
}

pub(crate) use sql_store;
