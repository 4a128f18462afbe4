//! The Postgres writer's kept connection (issue 20, `hub/src/store/pg_batch.rs`): batches
//! reuse one connection without the pool's test, so what the test used to catch must still
//! be caught: a connection the server cut between two writes, and a batch that read many
//! works at once. The writer runs on a runtime of its own with a pool of its own, whose
//! sessions operators can tell apart and count (docs/operations.md budgets 2).

use std::sync::Arc;

use api::{ManagedCluster, ManifestWork};
use hub::service::Hub;
use serde_json::json;
use testkit::postgres::TestPostgres;

async fn hub(url: &str) -> Arc<Hub> {
    Hub::start(hub::store::connect(url).await.unwrap())
        .await
        .unwrap()
}

/// A fresh database on the shared test server.
async fn fresh_url() -> String {
    let pg = TestPostgres::shared().await.unwrap();
    pg.fresh_database().await.unwrap()
}

/// A hub on a fresh database with cluster `c1`.
async fn hub_with_c1(url: &str) -> Arc<Hub> {
    let hub = hub(url).await;
    hub.put_cluster("c1", ManagedCluster::new("c1", Default::default()), None)
        .await
        .unwrap();
    hub
}

/// A session of our own on the database.
async fn session(url: &str) -> sqlx::PgConnection {
    <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap()
}

fn work(name: &str, value: &str) -> ManifestWork {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"workload": {"manifests": [{"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
            // Text that would end a naive quote of the statement, should it ever get there.
            "data": {"v": value, "q": "it's $f$ $f1$ \\ '; DROP TABLE works; --"}}]}}
    }))
    .unwrap()
}

/// Ends every other session of the database, as a failover or a balancer's
/// `shutdown-sessions` does.
async fn cut_sessions(url: &str) -> u64 {
    let mut conn = session(url).await;
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    n as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_right_after_the_writers_connection_was_cut_succeeds() {
    let url = fresh_url().await;
    let hub = hub_with_c1(&url).await;
    hub.put_work("c1", "before", work("before", "1"), None, None)
        .await
        .unwrap();

    // Within the second the writer keeps its connection, without the pool's test.
    assert!(cut_sessions(&url).await >= 1, "the hub had sessions to cut");
    let after = hub
        .put_work("c1", "after", work("after", "2"), None, None)
        .await;
    assert!(
        after.is_ok(),
        "a write after the connection was cut is not refused: {after:?}"
    );

    for (name, value) in [("before", "1"), ("after", "2")] {
        let got = hub.get_work("c1", name, None).await.unwrap().data.unwrap();
        let data = &got.spec.workload.manifests[0]["data"];
        assert_eq!(data["v"], value, "{name} was stored");
        assert_eq!(data["q"], "it's $f$ $f1$ \\ '; DROP TABLE works; --");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_read_and_replace_many_works_at_once() {
    let url = fresh_url().await;
    let hub = hub(&url).await;
    for c in ["c1", "c2"] {
        hub.put_cluster(c, ManagedCluster::new(c, Default::default()), None)
            .await
            .unwrap();
    }
    // 64 writers at once, twice over the same names: the second round's batches prefetch
    // works that exist, in two clusters, and replace them.
    for round in ["1", "2"] {
        let writes = (0..64).map(|i| {
            let hub = hub.clone();
            let (cluster, name) = (format!("c{}", i % 2 + 1), format!("w{i}"));
            tokio::spawn(async move {
                hub.put_work(&cluster, &name, work(&name, round), None, None)
                    .await
                    .map(|w| w.value.work.metadata.generation)
            })
        });
        for (i, w) in futures::future::join_all(writes)
            .await
            .into_iter()
            .enumerate()
        {
            let generation = w.unwrap().unwrap();
            assert_eq!(
                generation,
                Some(if round == "1" { 1 } else { 2 }),
                "w{i}, round {round}: the second write saw the first"
            );
        }
    }
    let got = hub.get_work("c2", "w63", None).await.unwrap().data.unwrap();
    assert_eq!(got.spec.workload.manifests[0]["data"]["v"], "2");
}

/// The sessions of the database named `name` in `pg_stat_activity`.
async fn sessions_named(url: &str, name: &str) -> i64 {
    let mut conn = session(url).await;
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_writes_through_at_most_two_sessions_of_its_own() {
    let url = fresh_url().await;
    let hub = hub(&url).await;
    assert_eq!(
        sessions_named(&url, "fleethub writer").await,
        0,
        "the writer opens its sessions as it first writes"
    );
    hub.put_cluster("c1", ManagedCluster::new("c1", Default::default()), None)
        .await
        .unwrap();
    // Many writers at once, and a cut in the middle: the writer replaces its session.
    for round in 0..3 {
        let writes = (0..32).map(|i| {
            let hub = hub.clone();
            let name = format!("w{round}-{i}");
            tokio::spawn(async move {
                hub.put_work("c1", &name, work(&name, "v"), None, None)
                    .await
                    .map(|_| ())
            })
        });
        for w in futures::future::join_all(writes).await {
            w.unwrap().unwrap();
        }
        let writer = sessions_named(&url, "fleethub writer").await;
        assert!(
            (1..=2).contains(&writer),
            "round {round}: {writer} writer sessions, budgeted 2"
        );
        if round == 1 {
            cut_sessions(&url).await;
        }
    }
    assert_eq!(hub.count_works().await.unwrap(), 96);
}

/// Rows that sequential scans of `works` have read, as the statistics show them after
/// every other session of the database ended (a session reports its counts as it ends, or
/// after a while idle).
async fn works_rows_scanned(url: &str) -> i64 {
    cut_sessions(url).await;
    let mut conn = session(url).await;
    // The ended sessions report as they exit: read until the count holds still.
    let mut last = -1;
    for _ in 0..50 {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables WHERE relname = 'works'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if n == last {
            return n;
        }
        last = n;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    last
}

/// The batch's reads run a plan Postgres keeps for the writer's session (issue 20): one
/// made while `works` was small, and analyzed as small, must still look works up by key
/// once the table has grown, not scan all of it for each write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_reads_look_works_up_by_key_after_the_table_grew() {
    let url = fresh_url().await;
    let hub = hub_with_c1(&url).await;
    hub.put_work("c1", "w0", work("w0", "v"), None, None)
        .await
        .unwrap();
    let mut conn = session(&url).await;
    sqlx::query("ANALYZE works")
        .execute(&mut conn)
        .await
        .unwrap();
    drop(conn);
    let before = works_rows_scanned(&url).await;
    // The writer's new session plans its reads now, with statistics of one work.
    hub.put_work("c1", "w1", work("w1", "v"), None, None)
        .await
        .unwrap();
    // Then the table grows by 20,000 works (written past the hub: only their number
    // matters here) without a new ANALYZE, as in the minute before autovacuum's.
    let mut conn = session(&url).await;
    sqlx::query(
        "INSERT INTO works (cluster, name, resource_version, object) \
         SELECT 'c2', 'bulk-' || i, 1, '{}' FROM generate_series(1, 20000) AS i",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    for i in 2..22 {
        let name = format!("w{i}");
        hub.put_work("c1", &name, work(&name, "v"), None, None)
            .await
            .unwrap();
    }
    let scanned = works_rows_scanned(&url).await - before;
    assert!(
        scanned < 20_000,
        "20 writes read {scanned} rows of works by sequential scans; a lookup by key reads none"
    );
    assert_eq!(hub.count_works().await.unwrap(), 20_022);
}

/// One number the database reports, read on a session of our own.
async fn number(url: &str, sql: &'static str) -> i64 {
    let mut conn = session(url).await;
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap();
    n
}

/// Transactions of the database that rolled back (a failed write batch is one).
async fn rollbacks(url: &str) -> i64 {
    number(
        url,
        "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()",
    )
    .await
}

/// Holds the index lock from a session of our own until the returned sender is dropped
/// or sent to: the writer's next batch waits for it, and every write queued meanwhile
/// lands in the batch after that one, in the order queued.
async fn hold_the_index_lock(url: &str) -> tokio::sync::oneshot::Sender<()> {
    let mut conn = session(url).await;
    sqlx::raw_sql("BEGIN; SELECT 1 FROM hub_index WHERE id = 1 FOR UPDATE")
        .execute(&mut conn)
        .await
        .unwrap();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = released.await;
        sqlx::raw_sql("COMMIT").execute(&mut conn).await.unwrap();
    });
    release
}

/// A batch inserts the works it read as absent without `ON CONFLICT` (issue 20). In one
/// batch: a work created and written again; one created, then sent early by a cluster's
/// deletion (which lists the cluster's works, so the batch's held-back inserts go first),
/// then written again; one deleted and created again; a replace; a create. Each lands as
/// written, and no batch fails (a failed batch is retried one write at a time and would
/// still land, so the database's count of rolled-back transactions is what tells).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_works_are_plain_inserts_and_batches_still_land() {
    let url = fresh_url().await;
    let hub = hub_with_c1(&url).await;
    hub.put_cluster("d1", ManagedCluster::new("d1", Default::default()), None)
        .await
        .unwrap();
    for name in ["old", "gone"] {
        hub.put_work("c1", name, work(name, "1"), None, None)
            .await
            .unwrap();
    }
    // Statistics reach pg_stat_database as sessions report: let them settle first.
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let before = rollbacks(&url).await;
    let release = hold_the_index_lock(&url).await;
    let put = |name: &'static str, value: &'static str| {
        let hub = hub.clone();
        tokio::spawn(async move {
            hub.put_work("c1", name, work(name, value), None, None)
                .await
                .map(|_| ())
        })
    };
    // The first write's batch waits for the lock; the rest queue behind it, in this order.
    let mut writes = vec![put("plug", "1")];
    let queue = |writes: &mut Vec<_>, w| writes.push(w);
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for (name, value) in [("twice", "a"), ("twice", "b"), ("early", "a")] {
        queue(&mut writes, put(name, value));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let one = hub.clone();
    queue(
        &mut writes,
        tokio::spawn(async move { one.delete_cluster("d1", false, None).await.map(|_| ()) }),
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    queue(&mut writes, put("early", "b"));
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let one = hub.clone();
    queue(
        &mut writes,
        tokio::spawn(async move { one.delete_work("c1", "gone", None).await.map(|_| ()) }),
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    for (name, value) in [("gone", "2"), ("old", "2"), ("new", "1")] {
        queue(&mut writes, put(name, value));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    release.send(()).unwrap();
    for w in futures::future::join_all(writes).await {
        w.unwrap().unwrap();
    }
    for (name, value) in [
        ("twice", "b"),
        ("early", "b"),
        ("gone", "2"),
        ("old", "2"),
        ("new", "1"),
    ] {
        let w = hub.get_work("c1", name, None).await.unwrap().data.unwrap();
        assert_eq!(w.spec.workload.manifests[0]["data"]["v"], value, "{name}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(
        rollbacks(&url).await - before,
        0,
        "a write batch failed and was retried one write at a time"
    );
}

/// Should a work the batch read as absent exist by its insert after all (written past
/// the index lock, which no hub does), the plain insert fails rather than overwrite it,
/// and nothing of the batch commits; read again, the work is replaced as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_work_inserted_past_the_lock_fails_the_batch_instead_of_being_overwritten() {
    let url = fresh_url().await;
    let store = hub::store::connect(&url).await.unwrap();
    let key = [("c1".to_string(), "w1".to_string())];
    let mut tx = store.begin_write(&key, &[]).await.unwrap();
    assert!(tx.get_work("c1", "w1").await.unwrap().is_none());
    let mut theirs = work("w1", "theirs");
    theirs.metadata.namespace = Some("c1".into());
    let mut conn = session(&url).await;
    sqlx::query(
        "INSERT INTO works (cluster, name, resource_version, object) VALUES ('c1', 'w1', 7, $1)",
    )
    .bind(serde_json::to_string(&theirs).unwrap())
    .execute(&mut conn)
    .await
    .unwrap();
    let mut ours = work("w1", "ours");
    ours.metadata.namespace = Some("c1".into());
    tx.put_work(&ours, 1).await.unwrap();
    let change = hub::store::Change {
        index: 1,
        kind: hub::store::ChangeKind::Work,
        cluster: "c1".into(),
        name: "w1".into(),
        labels: Default::default(),
        prev_labels: None,
        status_only: false,
        has_ttl: Some(false),
    };
    let err = tx
        .commit(std::slice::from_ref(&change), &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("duplicate key"), "{err}");
    let (rv, index): (i64, String) = sqlx::query_as(
        "SELECT w.resource_version, i.value::text FROM works w, hub_index i \
         WHERE w.cluster = 'c1' AND w.name = 'w1' AND i.id = 1",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        (rv, index.as_str()),
        (7, "0"),
        "nothing of the failed batch committed"
    );
    let mut tx = store.begin_write(&key, &[]).await.unwrap();
    let read = tx.get_work("c1", "w1").await.unwrap().unwrap();
    assert_eq!(read.spec.workload.manifests[0]["data"]["v"], "theirs");
    tx.put_work(&ours, 1).await.unwrap();
    tx.commit(&[change], &[]).await.unwrap();
    let (object,): (String,) =
        sqlx::query_as("SELECT object FROM works WHERE cluster = 'c1' AND name = 'w1'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(object.contains("ours"), "{object}");
}

/// `VACUUM`s of `works` run by a session (the hub's), not by autovacuum, so far; statistics
/// settle as sessions report.
async fn works_vacuums(url: &str) -> i64 {
    number(
        url,
        "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'works'",
    )
    .await
}

/// The works' replaced versions are reclaimed once 200 status writes add up, however many
/// checks they are spread over: each check counts only what was published since the one
/// before (issue 20), and a check with too few does not vacuum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_writes_add_up_across_checks_to_a_reclaim() {
    use hub::service::retention::{RECLAIM_AFTER_STATUS_WRITES, StatusWrites};
    let url = fresh_url().await;
    let hub = hub_with_c1(&url).await;
    hub.put_work("c1", "w", work("w", "v"), None, None)
        .await
        .unwrap();
    let status = |i: usize| api::ManifestWorkStatus {
        conditions: vec![api::Condition {
            type_: "Applied".into(),
            status: "True".into(),
            reason: "Applied".into(),
            message: format!("report {i}"),
            observed_generation: Some(1),
            last_transition_time: None,
        }],
        ..Default::default()
    };
    let mut count = StatusWrites::after(hub.index());
    let before = works_vacuums(&url).await;
    let first = RECLAIM_AFTER_STATUS_WRITES * 3 / 4;
    for i in 0..first {
        hub.put_work_status("c1", "w", status(i)).await.unwrap();
        // Creates in between do not count.
        if i % 50 == 0 {
            let name = format!("n{i}");
            hub.put_work("c1", &name, work(&name, "v"), None, None)
                .await
                .unwrap();
        }
    }
    hub.reclaim_work_space(&mut count).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        works_vacuums(&url).await,
        before,
        "{first} status writes: not yet"
    );
    for i in first..RECLAIM_AFTER_STATUS_WRITES {
        hub.put_work_status("c1", "w", status(i)).await.unwrap();
    }
    hub.reclaim_work_space(&mut count).await.unwrap();
    let mut vacuums = before;
    for _ in 0..20 {
        vacuums = works_vacuums(&url).await;
        if vacuums > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(
        vacuums > before,
        "200 status writes over two checks: vacuumed"
    );
    assert_eq!(count, StatusWrites::after(hub.index()), "counting afresh");
}

/// The timeline the server writes on, as the writer records it.
async fn server_timeline(url: &str) -> String {
    let (t,): (String,) = sqlx::query_as("SELECT left(pg_walfile_name(pg_current_wal_lsn()), 8)")
        .fetch_one(&mut session(url).await)
        .await
        .unwrap();
    t
}

async fn recorded_timeline(url: &str) -> Option<String> {
    sqlx::query_as::<_, (String,)>("SELECT value FROM settings WHERE key = 'wal_timeline'")
        .fetch_optional(&mut session(url).await)
        .await
        .unwrap()
        .map(|(t,)| t)
}

/// A promotion (failover, switchover) starts a new timeline, and a commit the old primary
/// showed but never replicated may have been seen by a hub. The first write on the new
/// timeline moves the index past the gap, so no index a hub saw on the old one is given to
/// another write; every hub's waiters wake and read again. (The promotion itself is
/// `postgres_ha`'s; here the recorded timeline is made an old one, which is what a
/// promotion leaves behind.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_write_after_a_promotion_moves_the_index_past_the_gap() {
    const GAP: u64 = 1_000_000;
    let url = fresh_url().await;
    let writer = hub_with_c1(&url).await;
    let other = hub(&url).await;
    let before = writer
        .put_work("c1", "before", work("before", "1"), None, None)
        .await
        .unwrap()
        .index;
    let timeline = server_timeline(&url).await;
    assert_eq!(
        recorded_timeline(&url).await.as_deref(),
        Some(timeline.as_str()),
        "the first write records the timeline"
    );
    let index_before: i64 = number(&url, "SELECT value FROM hub_index WHERE id = 1").await;
    assert_eq!(index_before as u64, before, "no gap without a promotion");

    sqlx::query("UPDATE settings SET value = '000000FF' WHERE key = 'wal_timeline'")
        .execute(&mut session(&url).await)
        .await
        .unwrap();
    // The other hub waits for what comes after the write it saw.
    let waiting = {
        let other = other.clone();
        tokio::spawn(async move {
            other
                .list_works(hub::service::work_lists::WorkQuery {
                    cluster: Some("c1".into()),
                    block: Some(hub::service::query::Block {
                        index: before,
                        wait: std::time::Duration::from_secs(30),
                    }),
                    ..Default::default()
                })
                .await
                .unwrap()
        })
    };
    let after = writer
        .put_work("c1", "after", work("after", "2"), None, None)
        .await
        .unwrap();
    assert!(
        after.index > before + GAP,
        "the write after the promotion is past the gap: {before} then {}",
        after.index
    );
    assert_eq!(
        after.value.work.metadata.resource_version,
        Some(after.index.to_string())
    );
    assert_eq!(
        recorded_timeline(&url).await,
        Some(timeline),
        "recorded again"
    );
    let next = writer
        .put_work("c1", "next", work("next", "3"), None, None)
        .await
        .unwrap()
        .index;
    assert_eq!(next, after.index + 1, "one gap per promotion");

    let list = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the other hub's waiter woke")
        .unwrap();
    assert!(list.metadata.index >= after.index, "{:?}", list.metadata);
    assert!(
        list.items.iter().any(|w| w.metadata.name == "after"),
        "the other hub's answer past the gap holds the write"
    );
    // Both hubs answer past the gap from now on.
    for hub in [&writer, &other] {
        let l = hub
            .list_works(hub::service::work_lists::WorkQuery {
                cluster: Some("c1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(l.metadata.index >= after.index);
        assert_eq!(l.items.len(), 3);
    }
}
