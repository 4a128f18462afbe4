//! The store contract: the same suite runs on SQLite and on a real Postgres, through the
//! service layer (which is what every handler calls), each test on its own database.

use std::sync::Arc;
use std::time::{Duration, Instant};

use api::selector::Selector;
use api::{CLEANUP_FINALIZER, Condition, ManagedCluster, ManifestWork, ManifestWorkStatus};
use hub::service::{Block, Error, Hub, Indexed, WorkQuery};
use hub::store::{Change, ChangeKind, ObjectKind, Store, StoredObject};
use serde_json::json;
use testkit::postgres::TestPostgres;

/// A fresh hub on a fresh database of the given backend; the tempdir keeps SQLite alive.
struct Fixture {
    hub: Arc<Hub>,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("hub.db").display());
    let hub = Hub::start(hub::store::connect(&url).await.unwrap())
        .await
        .unwrap();
    Fixture {
        hub,
        url,
        _dir: Some(dir),
    }
}

async fn postgres() -> Fixture {
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let hub = Hub::start(hub::store::connect(&url).await.unwrap())
        .await
        .unwrap();
    Fixture {
        hub,
        url,
        _dir: None,
    }
}

fn work(name: &str, labels: serde_json::Value, manifests: serde_json::Value) -> ManifestWork {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"workload": {"manifests": manifests}}
    }))
    .unwrap()
}

fn cm(name: &str, value: &str) -> serde_json::Value {
    json!([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}, "data": {"v": value}}])
}

async fn cluster(hub: &Hub, name: &str, labels: &[(&str, &str)]) {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    hub.put_cluster(name, ManagedCluster::new(name, labels), None)
        .await
        .unwrap();
}

fn rv(w: &ManifestWork) -> u64 {
    w.metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

fn list_query(cluster: Option<&str>) -> WorkQuery {
    WorkQuery {
        cluster: cluster.map(str::to_string),
        ..Default::default()
    }
}

async fn create_read_and_round_trip(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let mut w = work("w1", json!({"app": "web"}), cm("a", "1"));
    w.spec.executor = Some(api::ManifestWorkExecutor::service_account(
        "ops", "deployer",
    ));
    w.spec
        .extra
        .insert("futureField".into(), json!({"deep": true}));
    w.spec.workload.manifests[0]["unmodelled"] = json!({"deep": [1, "x", null]});
    let created = f
        .hub
        .put_work("c1", "w1", w.clone(), None, None)
        .await
        .unwrap();
    assert!(created.value.created);
    let m = &created.value.work.metadata;
    assert!(m.uid.is_some() && m.creation_timestamp.is_some());
    assert_eq!(m.generation, Some(1));
    assert_eq!(m.namespace.as_deref(), Some("c1"));
    let Indexed { data: got, index } = f.hub.get_work("c1", "w1", None).await.unwrap();
    let got = got.unwrap();
    assert_eq!(
        got.spec, w.spec,
        "the spec, with fields we do not model, comes back unchanged"
    );
    assert!(index >= rv(&got));
    assert!(
        f.hub
            .get_work("c1", "nope", None)
            .await
            .unwrap()
            .data
            .is_none()
    );
}

async fn generation_and_resource_version(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let w = work("w1", json!({}), cm("a", "1"));
    let first = f
        .hub
        .put_work("c1", "w1", w.clone(), None, None)
        .await
        .unwrap()
        .value
        .work;
    let same = f
        .hub
        .put_work("c1", "w1", w.clone(), None, None)
        .await
        .unwrap();
    assert!(!same.value.created);
    assert_eq!(
        rv(&same.value.work),
        rv(&first),
        "a no-op put changes nothing"
    );
    let relabelled = f
        .hub
        .put_work(
            "c1",
            "w1",
            work("w1", json!({"x": "y"}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap()
        .value
        .work;
    assert!(rv(&relabelled) > rv(&first));
    assert_eq!(
        relabelled.metadata.generation,
        Some(1),
        "labels are not the spec"
    );
    let changed = f
        .hub
        .put_work(
            "c1",
            "w1",
            work("w1", json!({"x": "y"}), cm("a", "2")),
            None,
            None,
        )
        .await
        .unwrap()
        .value
        .work;
    assert_eq!(changed.metadata.generation, Some(2));
    assert_eq!(changed.metadata.uid, first.metadata.uid);
    assert_eq!(
        changed.metadata.creation_timestamp,
        first.metadata.creation_timestamp
    );
}

async fn optimistic_concurrency(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let first = f
        .hub
        .put_work("c1", "w1", work("w1", json!({}), cm("a", "1")), None, None)
        .await
        .unwrap()
        .value
        .work;
    let mut stale = work("w1", json!({}), cm("a", "2"));
    stale.metadata.resource_version = Some("1".into());
    let e = f
        .hub
        .put_work("c1", "w1", stale.clone(), None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    let e = f
        .hub
        .put_work(
            "c1",
            "w1",
            work("w1", json!({}), cm("a", "2")),
            Some("\"1\"".into()),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed(_)), "{e:?}");
    stale.metadata.resource_version = first.metadata.resource_version.clone();
    let tag = format!("\"{}\"", rv(&first));
    let ok = f
        .hub
        .put_work("c1", "w1", stale, Some(tag), None)
        .await
        .unwrap()
        .value
        .work;
    assert_eq!(ok.metadata.generation, Some(2));
    let Indexed {
        data: unchanged,
        index: _,
    } = f.hub.get_work("c1", "w1", None).await.unwrap();
    assert_eq!(
        unchanged.unwrap().spec.workload.manifests,
        cm("a", "2").as_array().unwrap().clone()
    );
    let e = f
        .hub
        .put_work(
            "nope",
            "w1",
            work("w1", json!({}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::NotFound(_)),
        "a work for an unknown cluster is 404: {e:?}"
    );
}

async fn deletion_with_and_without_finalizers(f: Fixture) {
    cluster(&f.hub, "plain", &[]).await;
    f.hub
        .put_work("plain", "w", work("w", json!({}), cm("a", "1")), None, None)
        .await
        .unwrap();
    let d = f.hub.delete_work("plain", "w", None).await.unwrap();
    assert!(d.value.gone, "no agent, no finalizer: removed at once");
    assert!(
        f.hub
            .get_work("plain", "w", None)
            .await
            .unwrap()
            .data
            .is_none()
    );

    cluster(&f.hub, "joined", &[]).await;
    f.hub.mark_cluster_joined("joined").await.unwrap();
    let w = f
        .hub
        .put_work(
            "joined",
            "w",
            work("w", json!({}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap()
        .value
        .work;
    assert_eq!(w.metadata.finalizers, [CLEANUP_FINALIZER]);
    // A user's PUT cannot drop the agent's finalizer.
    let mut sneaky = work("w", json!({}), cm("a", "2"));
    sneaky.metadata.finalizers = vec![];
    let w = f
        .hub
        .put_work("joined", "w", sneaky, None, None)
        .await
        .unwrap()
        .value
        .work;
    assert_eq!(w.metadata.finalizers, [CLEANUP_FINALIZER]);
    let d = f.hub.delete_work("joined", "w", None).await.unwrap();
    assert!(!d.value.gone);
    assert!(d.value.work.metadata.deletion_timestamp.is_some());
    assert!(
        d.value
            .work
            .condition("Deleting")
            .is_some_and(Condition::is_true)
    );
    let e = f
        .hub
        .put_work(
            "joined",
            "w",
            work("w", json!({}), cm("a", "3")),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Deleting(_)), "{e:?}");
    let r = f
        .hub
        .remove_work_finalizer("joined", "w", CLEANUP_FINALIZER)
        .await
        .unwrap();
    assert!(r.value.gone);
    assert!(
        f.hub
            .get_work("joined", "w", None)
            .await
            .unwrap()
            .data
            .is_none()
    );
}

fn status_at(generation: i64, reason: &str) -> ManifestWorkStatus {
    ManifestWorkStatus {
        conditions: vec![Condition {
            type_: "Applied".into(),
            status: "True".into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: Some(generation),
            last_transition_time: None,
        }],
        ..Default::default()
    }
}

async fn status_writes_never_roll_back(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    f.hub
        .put_work("c1", "w", work("w", json!({}), cm("a", "1")), None, None)
        .await
        .unwrap();
    f.hub
        .put_work("c1", "w", work("w", json!({}), cm("a", "2")), None, None)
        .await
        .unwrap();
    let w = f
        .hub
        .put_work_status("c1", "w", status_at(2, "New"))
        .await
        .unwrap();
    assert_eq!(w.value.work.condition("Applied").unwrap().reason, "New");
    let w = f
        .hub
        .put_work_status("c1", "w", status_at(1, "Old"))
        .await
        .unwrap();
    assert_eq!(
        w.value.work.condition("Applied").unwrap().reason,
        "New",
        "an older observedGeneration is ignored"
    );
    // A user's PUT keeps the agent's status.
    let w = f
        .hub
        .put_work(
            "c1",
            "w",
            work("w", json!({"l": "v"}), cm("a", "2")),
            None,
            None,
        )
        .await
        .unwrap()
        .value
        .work;
    assert_eq!(w.condition("Applied").unwrap().reason, "New");
    let mut bad = status_at(2, "X");
    bad.conditions[0].status = "Maybe".into();
    assert!(matches!(
        f.hub.put_work_status("c1", "w", bad).await,
        Err(Error::Invalid { .. })
    ));
}

async fn selectors_and_pages(f: Fixture) {
    cluster(&f.hub, "a", &[("env", "prod")]).await;
    cluster(&f.hub, "b", &[("env", "dev")]).await;
    for c in ["a", "b"] {
        for i in 0..5 {
            let tier = if i % 2 == 0 { "web" } else { "db" };
            f.hub
                .put_work(
                    c,
                    &format!("w{i}"),
                    work("x", json!({"tier": tier}), cm("a", "1")),
                    None,
                    None,
                )
                .await
                .unwrap_err();
            f.hub
                .put_work(
                    c,
                    &format!("w{i}"),
                    work(&format!("w{i}"), json!({"tier": tier}), cm("a", "1")),
                    None,
                    None,
                )
                .await
                .unwrap();
        }
    }
    let q = WorkQuery {
        selector: Selector::parse("tier=web").unwrap(),
        ..list_query(None)
    };
    assert_eq!(f.hub.list_works(q).await.unwrap().items.len(), 6);
    let q = WorkQuery {
        selector: Selector::parse("tier in (db),tier!=web").unwrap(),
        ..list_query(Some("a"))
    };
    assert_eq!(f.hub.list_works(q).await.unwrap().items.len(), 2);
    let q = WorkQuery {
        cluster_selector: Selector::parse("env=prod").unwrap(),
        ..list_query(None)
    };
    let items = f.hub.list_works(q).await.unwrap().items;
    assert!(
        items.len() == 5
            && items
                .iter()
                .all(|w| w.metadata.namespace.as_deref() == Some("a"))
    );
    // Pages of 3 over 10 works: every work once, in order.
    let mut seen = Vec::new();
    let mut cont = None;
    loop {
        let q = WorkQuery {
            limit: 3,
            continue_: cont,
            ..list_query(None)
        };
        let page = f.hub.list_works(q).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|w| {
            format!(
                "{}/{}",
                w.metadata.namespace.as_deref().unwrap(),
                w.metadata.name
            )
        }));
        cont = page.metadata.continue_;
        if cont.is_none() {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 10);
    assert_eq!(seen, sorted);
    let bad = WorkQuery {
        continue_: Some("!!".into()),
        ..list_query(None)
    };
    assert!(matches!(
        f.hub.list_works(bad).await,
        Err(Error::Malformed(_))
    ));
}

/// Lists longer than a backend reads at once (SQLite reads 128 works per statement): every
/// work once, in key order, each key with its own document, however pages and clusters
/// fall against those groups.
async fn long_lists_keep_key_order_and_documents(f: Fixture) {
    let sizes = [("a", 200), ("b", 130)];
    for (c, n) in sizes {
        cluster(&f.hub, c, &[]).await;
        let puts = (0..n).map(|i| {
            let name = format!("w{i:03}");
            let w = work(&name, json!({}), cm("a", &format!("{c}/{name}")));
            let hub = f.hub.clone();
            async move { hub.put_work(c, &name, w, None, None).await.unwrap() }
        });
        futures::future::join_all(puts).await;
    }
    let store = f.hub.store();
    let keys = |works: &[hub::store::StoredWork]| -> Vec<(String, String)> {
        for w in works {
            let doc: ManifestWork = w.decode().unwrap();
            let value = &doc.spec.workload.manifests[0]["data"]["v"];
            let key = format!("{}/{}", w.cluster, w.name);
            assert_eq!(doc.metadata.name, w.name, "{key} carries another document");
            assert_eq!(
                value.as_str(),
                Some(key.as_str()),
                "{key} carries another document"
            );
        }
        works
            .iter()
            .map(|w| (w.cluster.clone(), w.name.clone()))
            .collect()
    };
    let expected: Vec<(String, String)> = sizes
        .iter()
        .flat_map(|(c, n)| (0..*n).map(move |i| (c.to_string(), format!("w{i:03}"))))
        .collect();

    let all = store.list_works(None, None, u32::MAX).await.unwrap();
    assert_eq!(keys(&all), expected);
    let a = store.list_works(Some("a"), None, u32::MAX).await.unwrap();
    assert_eq!(keys(&a), expected[..200]);
    // Another cluster's key as the start: the cluster's list from its first work.
    let b = store
        .list_works(Some("b"), Some(("a", "w150")), u32::MAX)
        .await
        .unwrap();
    assert_eq!(keys(&b), expected[200..]);
    // A start inside a group, and a limit that ends exactly on one.
    let mid = store
        .list_works(Some("a"), Some(("a", "w071")), 128)
        .await
        .unwrap();
    assert_eq!(keys(&mid), expected[72..200]);
    let past = store
        .list_works(Some("a"), Some(("a", "w199")), 128)
        .await
        .unwrap();
    assert!(past.is_empty());
    // Pages of 129 across clusters: the pages join into the whole list.
    let mut paged = Vec::new();
    let mut after: Option<(String, String)> = None;
    loop {
        let from = after.as_ref().map(|(c, n)| (c.as_str(), n.as_str()));
        let page = store.list_works(None, from, 129).await.unwrap();
        assert!(page.len() <= 129);
        paged.extend(keys(&page));
        match page.last() {
            Some(last) if page.len() == 129 => {
                after = Some((last.cluster.clone(), last.name.clone()))
            }
            _ => break,
        }
    }
    assert_eq!(paged, expected);
}

async fn cluster_deletion(f: Fixture) {
    cluster(&f.hub, "gone", &[]).await;
    f.hub
        .put_work("gone", "w", work("w", json!({}), cm("a", "1")), None, None)
        .await
        .unwrap();
    let d = f.hub.delete_cluster("gone", false, None).await.unwrap();
    assert!(
        d.value.removed && d.value.works_left.is_empty(),
        "no agent: everything goes at once: {d:?}"
    );
    assert!(
        f.hub
            .get_cluster("gone", None)
            .await
            .unwrap()
            .data
            .is_none()
    );

    cluster(&f.hub, "held", &[]).await;
    f.hub.mark_cluster_joined("held").await.unwrap();
    f.hub
        .put_work(
            "held",
            "w1",
            work("w1", json!({}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap();
    f.hub
        .put_work(
            "held",
            "w2",
            work("w2", json!({}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap();
    let d = f.hub.delete_cluster("held", false, None).await.unwrap();
    assert!(!d.value.removed);
    assert_eq!(d.value.works_left, ["w1", "w2"]);
    let Indexed { data: w, index: _ } = f.hub.get_work("held", "w1", None).await.unwrap();
    assert!(
        w.unwrap().metadata.deletion_timestamp.is_some(),
        "the cluster's works are deleting"
    );
    let e = f
        .hub
        .put_work(
            "held",
            "w3",
            work("w3", json!({}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Deleting(_)), "{e:?}");
    f.hub
        .remove_work_finalizer("held", "w1", CLEANUP_FINALIZER)
        .await
        .unwrap();
    assert!(
        f.hub
            .get_cluster("held", None)
            .await
            .unwrap()
            .data
            .is_some(),
        "one work is left"
    );
    f.hub
        .remove_work_finalizer("held", "w2", CLEANUP_FINALIZER)
        .await
        .unwrap();
    assert!(
        f.hub
            .get_cluster("held", None)
            .await
            .unwrap()
            .data
            .is_none(),
        "the last work took the cluster with it"
    );

    cluster(&f.hub, "forced", &[]).await;
    f.hub.mark_cluster_joined("forced").await.unwrap();
    f.hub
        .put_work(
            "forced",
            "w",
            work("w", json!({}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap();
    let d = f.hub.delete_cluster("forced", true, None).await.unwrap();
    assert!(d.value.removed);
    assert_eq!(
        d.value.works_left,
        ["w"],
        "force lists what the agent never cleaned"
    );
    assert!(
        f.hub
            .get_work("forced", "w", None)
            .await
            .unwrap()
            .data
            .is_none()
    );
}

async fn blocking_queries(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    cluster(&f.hub, "c2", &[]).await;
    f.hub
        .put_work("c1", "w", work("w", json!({}), cm("a", "1")), None, None)
        .await
        .unwrap();
    let index = f
        .hub
        .list_works(list_query(Some("c1")))
        .await
        .unwrap()
        .metadata
        .index;

    // Nothing changes: the wait runs out and answers the same index.
    let q = WorkQuery {
        block: Some(Block {
            index,
            wait: Duration::from_millis(300),
        }),
        ..list_query(Some("c1"))
    };
    let start = Instant::now();
    let l = f.hub.list_works(q.clone()).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(250));
    assert_eq!(l.metadata.index, index);

    // A write to another cluster does not wake c1's waiter; a write to c1 does.
    let hub = f.hub.clone();
    let q = WorkQuery {
        block: Some(Block {
            index,
            wait: Duration::from_secs(30),
        }),
        ..list_query(Some("c1"))
    };
    let waiter = tokio::spawn(async move { hub.list_works(q).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.hub
        .put_work(
            "c2",
            "other",
            work("other", json!({}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiter.is_finished(), "c2's write woke c1's waiter");
    f.hub
        .put_work("c1", "w2", work("w2", json!({}), cm("a", "1")), None, None)
        .await
        .unwrap();
    let l = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.items.len(), 2);
    assert!(l.metadata.index > index);

    // The agent's view: its own status writes do not wake it.
    let index = l.metadata.index;
    let hub = f.hub.clone();
    let q = WorkQuery {
        block: Some(Block {
            index,
            wait: Duration::from_secs(30),
        }),
        ignore_status_changes: true,
        ..list_query(Some("c1"))
    };
    let waiter = tokio::spawn(async move { hub.list_works(q).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.hub
        .put_work_status("c1", "w", status_at(1, "Done"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !waiter.is_finished(),
        "a status write woke the agent's own watch"
    );
    f.hub.delete_work("c1", "w2", None).await.unwrap();
    let l = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(l.items.len(), 1, "the deleted work is simply absent");

    // A single object's wait wakes on its deletion and reads as gone.
    let Indexed { data: _, index } = f.hub.get_work("c1", "w", None).await.unwrap();
    let hub = f.hub.clone();
    let waiter = tokio::spawn(async move {
        hub.get_work(
            "c1",
            "w",
            Some(Block {
                index,
                wait: Duration::from_secs(30),
            }),
        )
        .await
        .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    f.hub.delete_work("c1", "w", None).await.unwrap();
    let Indexed {
        data: w,
        index: after,
    } = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(w.is_none() && after > index);
}

/// Many writers at once and one blocking reader: the reader sees every acknowledged write
/// within a second of its acknowledgement, and no wait runs out.
async fn concurrent_writers_and_a_blocking_reader(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let hub = f.hub.clone();
    let reader = tokio::spawn(async move {
        let mut index = hub.index();
        let mut seen = std::collections::HashMap::<String, Instant>::new();
        while seen.len() < 400 {
            let q = WorkQuery {
                block: Some(Block {
                    index,
                    wait: Duration::from_secs(30),
                }),
                ..list_query(Some("c1"))
            };
            let start = Instant::now();
            let l = hub.list_works(q).await.unwrap();
            assert!(
                start.elapsed() < Duration::from_secs(29),
                "a wait ran out with writes pending"
            );
            for w in l.items {
                seen.entry(w.metadata.name.clone())
                    .or_insert_with(Instant::now);
            }
            index = l.metadata.index;
        }
        seen
    });
    let mut writers = Vec::new();
    for t in 0..16 {
        let hub = f.hub.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..25 {
                let name = format!("w-{t}-{i}");
                hub.put_work(
                    "c1",
                    &name,
                    work(&name, json!({}), cm("a", "1")),
                    None,
                    None,
                )
                .await
                .unwrap();
                acked.push((name, Instant::now()));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    let seen = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .expect("the reader saw every write")
        .unwrap();
    for (name, at) in acked {
        let seen_at = seen[&name];
        assert!(
            seen_at.saturating_duration_since(at) < Duration::from_secs(1),
            "{name} was seen {:?} after its ack",
            seen_at - at
        );
    }
}

async fn data_survives_a_restart(f: Fixture) {
    cluster(&f.hub, "c1", &[("k", "v")]).await;
    f.hub
        .put_work(
            "c1",
            "w",
            work("w", json!({"a": "b"}), cm("a", "1")),
            None,
            None,
        )
        .await
        .unwrap();
    let index = f.hub.index();
    let reopened = Hub::start(hub::store::connect(&f.url).await.unwrap())
        .await
        .unwrap();
    assert_eq!(reopened.index(), index, "the index lives in the database");
    let Indexed { data: w, index: _ } = reopened.get_work("c1", "w", None).await.unwrap();
    assert_eq!(w.unwrap().metadata.labels["a"], "b");
    let Indexed { data: c, index: _ } = reopened.get_cluster("c1", None).await.unwrap();
    assert_eq!(c.unwrap().metadata.labels["k"], "v");
    let w = reopened
        .put_work("c1", "w2", work("w2", json!({}), cm("a", "1")), None, None)
        .await
        .unwrap()
        .value
        .work;
    assert_eq!(rv(&w), index + 1, "indexes continue where they stopped");
}

/// A work's audit entry commits with the write, in the writer's batch: present for every
/// acknowledged write, absent for a refused one.
async fn audit_commits_with_the_write(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let by = || {
        Some(hub::service::Caller {
            actor: "api:ci".into(),
            source: "127.0.0.1:9".into(),
        })
    };
    let w = work("w1", json!({}), cm("a", "1"));
    f.hub
        .put_work("c1", "w1", w.clone(), None, by())
        .await
        .unwrap();
    let e = f
        .hub
        .put_work("c1", "w1", w, Some("\"1\"".into()), by())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PreconditionFailed(_)), "{e:?}");
    f.hub.delete_work("c1", "w1", by()).await.unwrap();
    let target = "clusters/c1/manifestworks/w1";
    let log = f.hub.store().list_audit(Some(target), 10).await.unwrap();
    let actions: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|e| (e.action.as_str(), e.actor.as_str(), e.source.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("work.delete", "api:ci", "127.0.0.1:9"),
            ("work.put", "api:ci", "127.0.0.1:9")
        ]
    );
    assert_eq!(log[1].details["created"], true);
    assert_eq!(log[1].details["generation"], 1);
    assert_eq!(log[0].details["removed"], true);

    // Tokens are not indexed, but their entries commit with their rows too: a revocation
    // of a token that is not there (any more) writes nothing.
    let caller = by().unwrap();
    let token = f
        .hub
        .create_token(&api::TokenRequest::default(), &caller)
        .await
        .unwrap();
    f.hub.revoke_token(&token.id, &caller).await.unwrap();
    let again = f.hub.revoke_token(&token.id, &caller).await.unwrap_err();
    assert!(matches!(again, Error::NotFound(_)), "{again:?}");
    let target = format!("tokens/{}", token.id);
    let log = f.hub.store().list_audit(Some(&target), 10).await.unwrap();
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["token.revoke", "token.create"]);
    assert_eq!(log[1].details["kind"], json!(token.kind));
}

/// Writes to one work that land in the same writer batch see each other: the batch's
/// cached reads and held-back upserts behave as if each write ran alone, in order.
async fn writes_to_one_work_in_one_batch_see_each_other(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let hub = f.hub.clone();
        tasks.push(tokio::spawn(async move {
            let w = work("same", json!({}), cm("a", &i.to_string()));
            hub.put_work("c1", "same", w, None, None).await
        }));
    }
    let mut versions = std::collections::BTreeSet::new();
    let mut created = 0;
    for t in tasks {
        let w = t.await.unwrap().unwrap();
        created += usize::from(w.value.created);
        versions.insert(rv(&w.value.work));
    }
    assert_eq!(created, 1, "exactly one write creates the work");
    assert_eq!(
        versions.len(),
        40,
        "every write got its own resourceVersion"
    );
    let Indexed {
        data: stored,
        index: _,
    } = f.hub.get_work("c1", "same", None).await.unwrap();
    let stored = stored.unwrap();
    assert_eq!(
        stored.metadata.generation,
        Some(40),
        "each content change counts"
    );
    assert_eq!(rv(&stored), *versions.last().unwrap());
    // A create and a delete racing in one batch: whichever order, the result is
    // consistent with the answers.
    let (a, b) = tokio::join!(
        f.hub.put_work(
            "c1",
            "brief",
            work("brief", json!({}), cm("a", "1")),
            None,
            None
        ),
        f.hub.delete_work("c1", "brief", None)
    );
    let Indexed {
        data: now,
        index: _,
    } = f.hub.get_work("c1", "brief", None).await.unwrap();
    match b {
        Ok(d) if d.value.gone => assert!(a.is_ok() && now.is_none(), "deleted after create"),
        Ok(d) => panic!("delete of an unfinalized work not gone at once: {d:?}"),
        Err(Error::NotFound(_)) => assert!(now.is_some(), "deleted before it existed"),
        Err(e) => panic!("{e:?}"),
    }
}

/// Lease renewals are written in batches (more than one statement's worth here), a
/// renewal older than the stored one never moves it back, and the hub counts renewals it
/// has not written yet.
async fn lease_renewals_batch_and_never_go_back(f: Fixture) {
    let store = f.hub.store();
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(60);
    let t1 = t0 + chrono::Duration::nanoseconds(30_500_000_001);
    let rows: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        (0..2_500).map(|i| (format!("c{i:04}"), t1)).collect();
    store.renew_leases(&rows).await.unwrap();
    let leases = store.leases().await.unwrap();
    assert_eq!(leases.len(), 2_500);
    assert!(
        leases.values().all(|at| *at == t1),
        "stored to the nanosecond"
    );

    store
        .renew_leases(&[
            ("c0000".into(), t0),
            ("c0001".into(), t1 + chrono::Duration::seconds(1)),
        ])
        .await
        .unwrap();
    let leases = store.leases().await.unwrap();
    assert_eq!(
        leases["c0000"], t1,
        "an older renewal does not move a lease back"
    );
    assert_eq!(leases["c0001"], t1 + chrono::Duration::seconds(1));

    cluster(&f.hub, "beat", &[]).await;
    // The lease check re-reads a cluster only when this version moves: it must be the
    // document's own.
    let Indexed {
        data: beat,
        index: _,
    } = f.hub.get_cluster("beat", None).await.unwrap();
    let versions = store.cluster_versions().await.unwrap();
    assert_eq!(
        versions,
        [(
            "beat".to_string(),
            beat.unwrap()
                .metadata
                .resource_version
                .unwrap()
                .parse()
                .unwrap()
        )]
    );
    let listed = store.list_clusters().await.unwrap();
    assert_eq!(
        listed[0].metadata.resource_version.as_deref(),
        Some(versions[0].1.to_string().as_str())
    );
    f.hub
        .renew_lease("beat", &api::LeaseRenewal::default())
        .await
        .unwrap();
    assert!(
        f.hub.leases().await.unwrap().contains_key("beat"),
        "pending renewals count"
    );
    f.hub.flush_leases().await.unwrap();
    assert!(
        store.leases().await.unwrap().contains_key("beat"),
        "flushed to the store"
    );
}

/// The key of the Secret placeholders is made once per database: every hub on it (here
/// three more, started together) shows the same placeholder for a value, and another
/// database has a key of its own.
async fn secret_placeholders_are_shared_by_the_hubs_of_a_database(f: Fixture) {
    let value = json!("4711");
    let mine = f.hub.placeholder_key().placeholder(&value);
    assert!(mine.as_str().unwrap().starts_with("hmac-sha256:"), "{mine}");
    let starts = (0..3).map(|_| {
        let url = f.url.clone();
        tokio::spawn(async move {
            Hub::start(hub::store::connect(&url).await.unwrap())
                .await
                .unwrap()
        })
    });
    for start in starts.collect::<Vec<_>>() {
        let other = start.await.unwrap();
        assert_eq!(other.placeholder_key().placeholder(&value), mine);
    }
    let elsewhere = sqlite().await;
    assert_ne!(elsewhere.hub.placeholder_key().placeholder(&value), mine);
}

/// An agent's assertion id is spent once: a second use is refused (also when two uses race,
/// as two hubs on one Postgres would), another issuer's same id is its own, and expired
/// ids are purged so the table does not grow, after which the id counts as new.
async fn assertion_ids_are_single_use_until_purged(f: Fixture) {
    let store = f.hub.store();
    let now = chrono::Utc::now().timestamp();
    assert!(
        store
            .use_assertion_id("cluster:a", "j1", now + 300, now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .use_assertion_id("cluster:a", "j1", now + 300, now)
            .await
            .unwrap(),
        "a replay"
    );
    assert!(
        store
            .use_assertion_id("cluster:b", "j1", now + 300, now)
            .await
            .unwrap(),
        "ids are per issuer"
    );
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .use_assertion_id("cluster:a", "race", now + 300, now)
                    .await
            })
        })
        .collect();
    let mut firsts = 0;
    for r in racers {
        firsts += usize::from(r.await.unwrap().unwrap());
    }
    assert_eq!(firsts, 1, "exactly one of racing uses wins");

    // An id kept until `now - 1` has expired: purged, and new again afterwards.
    assert!(
        store
            .use_assertion_id("cluster:a", "old", now - 1, now - 100)
            .await
            .unwrap()
    );
    assert!(
        store
            .use_assertion_id("cluster:a", "old-2", now - 1, now - 100)
            .await
            .unwrap()
    );
    assert_eq!(store.purge_assertion_ids(now).await.unwrap(), 2);
    assert_eq!(store.purge_assertion_ids(now).await.unwrap(), 0);
    assert!(
        !store
            .use_assertion_id("cluster:a", "j1", now + 300, now)
            .await
            .unwrap(),
        "live ids stay"
    );
    assert!(
        store
            .use_assertion_id("cluster:a", "old", now + 300, now)
            .await
            .unwrap()
    );
    // Not purged yet but expired: counts as new too (the assertion's own expiry refused it).
    assert!(
        store
            .use_assertion_id("cluster:a", "stale", now - 1, now - 100)
            .await
            .unwrap()
    );
    assert!(
        store
            .use_assertion_id("cluster:a", "stale", now + 300, now)
            .await
            .unwrap()
    );
}

/// Ids from requests (a registration's, a token's) that no stored id can have are "not
/// found" before any query: a NUL byte used to make Postgres fail (503 and an ERROR log).
async fn unusable_ids_are_not_found(f: Fixture) {
    let admin = hub::service::Caller {
        actor: "admin".into(),
        source: "test".into(),
    };
    for id in ["a\0b", "\0", "", &"x".repeat(10_000), "bad id"] {
        assert!(
            f.hub
                .get_registration(id, None)
                .await
                .unwrap()
                .data
                .is_none(),
            "{id:?}"
        );
        assert!(
            matches!(
                f.hub.decide_registration(id, true, None).await,
                Err(Error::NotFound(_))
            ),
            "{id:?}"
        );
        assert!(
            matches!(
                f.hub.revoke_token(id, &admin).await,
                Err(Error::NotFound(_))
            ),
            "{id:?}"
        );
    }
}

/// An op that writes (a work held back for the batch's last statement, a cluster row sent
/// at once, a change, an audit entry) and then refuses, as a placement fan-out failing on
/// its last cluster would.
struct WritesThenRefuses {
    /// A work another op of the batch also writes.
    shared: String,
}

#[async_trait::async_trait]
impl hub::service::WriteOp for WritesThenRefuses {
    type Output = ();

    fn reads(&self) -> hub::service::writer::Reads {
        hub::service::writer::Reads {
            works: vec![("c1".into(), self.shared.clone())],
            clusters: vec!["c1".into(), "refused".into()],
        }
    }

    async fn apply(&self, batch: &mut hub::service::writer::Batch<'_>) -> Result<(), Error> {
        let index = batch.next_index();
        let mut w = work(&self.shared, json!({"refused": "yes"}), cm("x", "refused"));
        w.metadata.namespace = Some("c1".into());
        w.metadata.resource_version = Some(index.to_string());
        let old = batch.tx.get_work("c1", &self.shared).await?;
        batch.tx.put_work(&w, index).await?;
        batch.record_work("c1", &self.shared, old.as_ref(), Some(&w), false);
        let mut c = ManagedCluster::new("refused", Default::default());
        c.metadata.resource_version = Some(batch.next_index().to_string());
        batch.tx.put_cluster(&c, batch.next_index()).await?;
        batch.record_cluster("refused", None, Some(&c));
        batch.audit(hub::store::NewAuditEntry {
            actor: "test".into(),
            action: "test.refused".into(),
            target: "clusters/refused".into(),
            source: "test".into(),
            details: json!({}),
        });
        Err(Error::Conflict("refused after writing".into()))
    }
}

/// Each op of a batch runs under its own savepoint: one refused after writing leaves no
/// row, no change (index) and no audit entry, while the ops batched with it commit.
async fn a_refused_op_leaves_no_trace_in_its_batch(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let start = f.hub.index();
    let by = || {
        Some(hub::service::Caller {
            actor: "admin".into(),
            source: "test".into(),
        })
    };
    // Queued together, so the writer takes them into the same batches, refused ops between
    // accepted ones that write the same works.
    let n = 20;
    let accepted = (0..n).map(|i| {
        let hub = f.hub.clone();
        let by = by();
        async move {
            hub.put_work(
                "c1",
                &format!("w{i}"),
                work(&format!("w{i}"), json!({}), cm("x", "ok")),
                None,
                by,
            )
            .await
        }
    });
    let refused = (0..n).map(|i| {
        let hub = f.hub.clone();
        async move {
            hub.write(WritesThenRefuses {
                shared: format!("w{i}"),
            })
            .await
        }
    });
    let (accepted, refused) = tokio::join!(
        futures::future::join_all(accepted),
        futures::future::join_all(refused)
    );
    for r in refused {
        assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    }
    let mut indexes = Vec::new();
    for r in accepted {
        let w = r.unwrap();
        assert!(w.value.created);
        assert_eq!(w.index, rv(&w.value.work), "a write answers its own index");
        indexes.push(w.index);
    }
    indexes.sort();
    assert_eq!(
        indexes,
        (start + 1..=start + n).collect::<Vec<_>>(),
        "the refused ops took no index"
    );
    assert_eq!(f.hub.index(), start + n);
    assert_eq!(f.hub.store().current_index().await.unwrap(), start + n);
    for i in 0..n {
        let w = f
            .hub
            .get_work("c1", &format!("w{i}"), None)
            .await
            .unwrap()
            .data
            .unwrap();
        assert!(
            w.metadata.labels.is_empty(),
            "the refused op's work stayed: {w:?}"
        );
        assert_eq!(
            w.spec.workload.manifests,
            cm("x", "ok").as_array().unwrap().clone()
        );
    }
    assert!(
        f.hub
            .get_cluster("refused", None)
            .await
            .unwrap()
            .data
            .is_none()
    );
    let log = f.hub.store().list_audit(None, 1000).await.unwrap();
    assert!(log.iter().all(|e| e.action != "test.refused"), "{log:?}");
    assert_eq!(
        log.iter().filter(|e| e.action == "work.put").count(),
        n as usize
    );
    let changes = f.hub.store().changes_since(start, 1000).await.unwrap();
    assert_eq!(changes.len(), n as usize);
    assert!(
        changes
            .iter()
            .all(|c| c.cluster == "c1" && c.labels.is_empty())
    );
}

/// A fleet object's JSON text, as a hub would have serialized it (key order kept).
fn fleet_text(name: &str, value: &str) -> String {
    format!(r#"{{"metadata":{{"name":"{name}"}},"spec":{{"z":"{value}","a":[1,null]}}}}"#)
}

/// A change to a fleet object at `index`, as the writer records it.
fn fleet_change(index: u64, kind: ObjectKind, namespace: &str, name: &str) -> Change {
    Change {
        index,
        kind: kind.into(),
        cluster: namespace.into(),
        name: name.into(),
        labels: Default::default(),
        prev_labels: None,
        status_only: false,
        has_ttl: None,
    }
}

fn keys(objects: &[StoredObject]) -> Vec<(&str, &str)> {
    objects
        .iter()
        .map(|o| (o.namespace.as_str(), o.name.as_str()))
        .collect()
}

/// Fleet objects written in a transaction are read back by kind, namespace and name, with
/// their text unchanged and the index of their write as resource version; a replace moves
/// the version, a delete removes only its object, and kinds never see each other's objects.
async fn fleet_objects_put_get_list_delete(f: Fixture) {
    let store = f.hub.store();
    let mut tx = store.begin_write(&[], &[]).await.unwrap();
    let base = tx.base_index();
    let writes = [
        (ObjectKind::Placement, "ns-b", "p2"),
        (ObjectKind::Placement, "ns-a", "p1"),
        (ObjectKind::Placement, "ns-a", "p0"),
        (ObjectKind::PlacementDecisions, "ns-a", "p1"),
        (ObjectKind::ManifestWorkReplicaSet, "ns-a", "p1"),
    ];
    let mut changes = Vec::new();
    for (i, (kind, ns, name)) in writes.into_iter().enumerate() {
        let index = base + 1 + i as u64;
        let text = fleet_text(name, &format!("{kind:?}"));
        tx.put_object(kind, ns, name, &text, index).await.unwrap();
        changes.push(fleet_change(index, kind, ns, name));
    }
    let seen = tx
        .get_object(ObjectKind::Placement, "ns-a", "p1")
        .await
        .unwrap()
        .expect("the transaction sees its own write");
    assert_eq!(seen.resource_version, base + 2);
    assert!(
        tx.get_object(ObjectKind::Placement, "ns-a", "nope")
            .await
            .unwrap()
            .is_none()
    );
    tx.commit(&changes, &[]).await.unwrap();

    let p1 = store
        .get_object(ObjectKind::Placement, "ns-a", "p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        p1,
        StoredObject {
            kind: ObjectKind::Placement,
            namespace: "ns-a".into(),
            name: "p1".into(),
            resource_version: base + 2,
            object: fleet_text("p1", "Placement"),
        },
        "the text comes back byte for byte"
    );
    let decoded: serde_json::Value = p1.decode().unwrap();
    assert_eq!(decoded["spec"]["z"], "Placement");
    let set = store
        .get_object(ObjectKind::ManifestWorkReplicaSet, "ns-a", "p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(set.object, fleet_text("p1", "ManifestWorkReplicaSet"));
    assert!(
        store
            .get_object(ObjectKind::ManifestWorkReplicaSet, "ns-a", "p0")
            .await
            .unwrap()
            .is_none(),
        "a placement is not a set"
    );
    let all = store
        .list_objects(ObjectKind::Placement, None)
        .await
        .unwrap();
    assert_eq!(
        keys(&all),
        [("ns-a", "p0"), ("ns-a", "p1"), ("ns-b", "p2")],
        "ordered by namespace, then name"
    );
    assert!(all.iter().all(|o| o.kind == ObjectKind::Placement));
    let in_a = store
        .list_objects(ObjectKind::Placement, Some("ns-a"))
        .await
        .unwrap();
    assert_eq!(keys(&in_a), [("ns-a", "p0"), ("ns-a", "p1")]);
    assert!(
        store
            .list_objects(ObjectKind::Placement, Some("ns-c"))
            .await
            .unwrap()
            .is_empty()
    );
    let decisions = store
        .list_objects(ObjectKind::PlacementDecisions, None)
        .await
        .unwrap();
    assert_eq!(keys(&decisions), [("ns-a", "p1")]);

    let mut tx = store.begin_write(&[], &[]).await.unwrap();
    let index = tx.base_index() + 1;
    assert_eq!(tx.base_index(), base + 5);
    tx.put_object(
        ObjectKind::Placement,
        "ns-a",
        "p1",
        &fleet_text("p1", "v2"),
        index,
    )
    .await
    .unwrap();
    tx.delete_object(ObjectKind::Placement, "ns-b", "p2")
        .await
        .unwrap();
    tx.delete_object(ObjectKind::Placement, "ns-b", "never-was")
        .await
        .unwrap();
    assert!(
        tx.get_object(ObjectKind::Placement, "ns-b", "p2")
            .await
            .unwrap()
            .is_none(),
        "the transaction sees its own delete"
    );
    tx.commit(
        &[
            fleet_change(index, ObjectKind::Placement, "ns-a", "p1"),
            fleet_change(index + 1, ObjectKind::Placement, "ns-b", "p2"),
        ],
        &[],
    )
    .await
    .unwrap();
    let p1 = store
        .get_object(ObjectKind::Placement, "ns-a", "p1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (p1.resource_version, p1.object.as_str()),
        (index, fleet_text("p1", "v2").as_str())
    );
    assert_eq!(
        keys(
            &store
                .list_objects(ObjectKind::Placement, None)
                .await
                .unwrap()
        ),
        [("ns-a", "p0"), ("ns-a", "p1")]
    );
    assert!(
        store
            .get_object(ObjectKind::PlacementDecisions, "ns-a", "p1")
            .await
            .unwrap()
            .is_some(),
        "deleting a placement's row leaves its decisions' row to its owner"
    );
}

/// Changes to fleet objects come back from the change log with their kind, their namespace
/// (in `cluster`) and their name, in index order among the other kinds' changes.
async fn fleet_object_changes_are_logged_by_kind(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let store = f.hub.store();
    let mut tx = store.begin_write(&[], &[]).await.unwrap();
    let base = tx.base_index();
    let kinds = [
        ObjectKind::Placement,
        ObjectKind::PlacementDecisions,
        ObjectKind::ManifestWorkReplicaSet,
    ];
    let mut changes = Vec::new();
    for (i, kind) in kinds.into_iter().enumerate() {
        let index = base + 1 + i as u64;
        tx.put_object(kind, "team-a", "web", &fleet_text("web", "x"), index)
            .await
            .unwrap();
        changes.push(fleet_change(index, kind, "team-a", "web"));
    }
    tx.commit(&changes, &[]).await.unwrap();
    // A change of an older kind after them.
    cluster(&f.hub, "c2", &[]).await;

    let log = store.changes_since(base, 100).await.unwrap();
    let got: Vec<(u64, ChangeKind, &str, &str)> = log
        .iter()
        .map(|c| (c.index, c.kind, c.cluster.as_str(), c.name.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (base + 1, ChangeKind::Placement, "team-a", "web"),
            (base + 2, ChangeKind::PlacementDecisions, "team-a", "web"),
            (
                base + 3,
                ChangeKind::ManifestWorkReplicaSet,
                "team-a",
                "web"
            ),
            (base + 4, ChangeKind::Cluster, "c2", "c2"),
        ]
    );
    assert_eq!(store.current_index().await.unwrap(), base + 4);
}

/// Each work change says whether the work, as written, has a `ttlSecondsAfterFinished`
/// (what lets the TTL controller skip reading the others); other kinds say nothing.
async fn work_changes_say_whether_the_work_has_a_ttl(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    let base = f.hub.store().current_index().await.unwrap();
    let mut with_ttl = work("ttl", json!({}), cm("a", "1"));
    with_ttl.spec.delete_option = Some(
        serde_json::from_value(
            json!({"propagationPolicy": "Foreground", "ttlSecondsAfterFinished": 60}),
        )
        .unwrap(),
    );
    f.hub
        .put_work("c1", "ttl", with_ttl, None, None)
        .await
        .unwrap();
    let plain = work("plain", json!({}), cm("b", "1"));
    f.hub
        .put_work("c1", "plain", plain, None, None)
        .await
        .unwrap();
    f.hub.delete_work("c1", "ttl", None).await.unwrap();
    cluster(&f.hub, "c2", &[]).await;

    let log = f.hub.store().changes_since(base, 100).await.unwrap();
    let got: Vec<(ChangeKind, &str, Option<bool>)> = log
        .iter()
        .map(|c| (c.kind, c.name.as_str(), c.has_ttl))
        .collect();
    assert_eq!(
        got,
        [
            (ChangeKind::Work, "ttl", Some(true)),
            (ChangeKind::Work, "plain", Some(false)),
            (ChangeKind::Work, "ttl", Some(false)),
            (ChangeKind::Cluster, "c2", None),
        ],
        "a deleted work has no TTL left to run"
    );
}

/// An undone op's fleet-object writes are gone, whatever it wrote first (its savepoint is
/// sent before its first write), while the ops before and after it keep theirs.
async fn an_undone_op_leaves_no_fleet_object(f: Fixture) {
    let store = f.hub.store();
    let kind = ObjectKind::ManifestWorkReplicaSet;
    let mut tx = store.begin_write(&[], &[]).await.unwrap();
    let index = tx.base_index() + 1;
    tx.begin_op();
    tx.put_object(kind, "ns", "kept", &fleet_text("kept", "1"), index)
        .await
        .unwrap();
    tx.end_op().await.unwrap();

    // Its first write a put, then a replace and a new object.
    tx.begin_op();
    tx.put_object(kind, "ns", "kept", &fleet_text("kept", "undone"), index + 1)
        .await
        .unwrap();
    tx.put_object(kind, "ns", "new", &fleet_text("new", "undone"), index + 1)
        .await
        .unwrap();
    tx.undo_op().await.unwrap();
    // Its first write a delete.
    tx.begin_op();
    tx.delete_object(kind, "ns", "kept").await.unwrap();
    tx.undo_op().await.unwrap();
    let seen = tx.get_object(kind, "ns", "kept").await.unwrap().unwrap();
    assert_eq!(
        (seen.resource_version, seen.object),
        (index, fleet_text("kept", "1")),
        "the transaction sees the kept write again"
    );
    assert!(tx.get_object(kind, "ns", "new").await.unwrap().is_none());

    tx.begin_op();
    tx.put_object(kind, "ns", "after", &fleet_text("after", "1"), index + 1)
        .await
        .unwrap();
    tx.end_op().await.unwrap();
    tx.commit(
        &[
            fleet_change(index, kind, "ns", "kept"),
            fleet_change(index + 1, kind, "ns", "after"),
        ],
        &[],
    )
    .await
    .unwrap();

    let all = store.list_objects(kind, Some("ns")).await.unwrap();
    assert_eq!(keys(&all), [("ns", "after"), ("ns", "kept")]);
    assert_eq!(all[1].object, fleet_text("kept", "1"));
    assert_eq!(all[1].resource_version, index);
}

/// An op that stores one fleet object and succeeds (it records no change: the writer's
/// fleet ops are not this suite's business, only what the store keeps of them).
struct PutsObject {
    kind: ObjectKind,
    name: String,
    text: String,
}

#[async_trait::async_trait]
impl hub::service::WriteOp for PutsObject {
    type Output = ();

    async fn apply(&self, batch: &mut hub::service::writer::Batch<'_>) -> Result<(), Error> {
        let index = batch.next_index();
        batch
            .tx
            .put_object(self.kind, "fleet", &self.name, &self.text, index)
            .await?;
        Ok(())
    }
}

/// An op that writes fleet objects (its first write one), a work and an audit entry, then
/// refuses, as a set controller failing halfway through its fan-out would.
struct WritesObjectsThenRefuses {
    /// A placement another op of the batch also writes.
    shared: String,
}

#[async_trait::async_trait]
impl hub::service::WriteOp for WritesObjectsThenRefuses {
    type Output = ();

    fn reads(&self) -> hub::service::writer::Reads {
        hub::service::writer::Reads {
            works: vec![("c1".into(), self.shared.clone())],
            clusters: vec!["c1".into()],
        }
    }

    async fn apply(&self, batch: &mut hub::service::writer::Batch<'_>) -> Result<(), Error> {
        let index = batch.next_index();
        let tx = &mut batch.tx;
        tx.put_object(
            ObjectKind::Placement,
            "fleet",
            &self.shared,
            &fleet_text(&self.shared, "refused"),
            index,
        )
        .await?;
        tx.put_object(
            ObjectKind::ManifestWorkReplicaSet,
            "fleet",
            &format!("lonely-{}", self.shared),
            &fleet_text("lonely", "refused"),
            index,
        )
        .await?;
        tx.delete_object(ObjectKind::PlacementDecisions, "fleet", "kept")
            .await?;
        let mut w = work(&self.shared, json!({"refused": "yes"}), cm("x", "refused"));
        w.metadata.namespace = Some("c1".into());
        w.metadata.resource_version = Some(index.to_string());
        let old = batch.tx.get_work("c1", &self.shared).await?;
        batch.tx.put_work(&w, index).await?;
        batch.record_work("c1", &self.shared, old.as_ref(), Some(&w), false);
        batch.audit(hub::store::NewAuditEntry {
            actor: "test".into(),
            action: "test.refused".into(),
            target: "placements/fleet".into(),
            source: "test".into(),
            details: json!({}),
        });
        Err(Error::Conflict("refused after writing".into()))
    }
}

/// Ops refused in the writer's batches leave no fleet object behind, written or deleted,
/// while the ops batched with them keep theirs.
async fn a_refused_op_leaves_no_fleet_object_in_its_batch(f: Fixture) {
    cluster(&f.hub, "c1", &[]).await;
    f.hub
        .write(PutsObject {
            kind: ObjectKind::PlacementDecisions,
            name: "kept".into(),
            text: fleet_text("kept", "decided"),
        })
        .await
        .unwrap();
    let start = f.hub.index();
    let n = 20;
    let accepted = (0..n).map(|i| {
        let hub = f.hub.clone();
        async move {
            hub.write(PutsObject {
                kind: ObjectKind::Placement,
                name: format!("p{i}"),
                text: fleet_text(&format!("p{i}"), "ok"),
            })
            .await
        }
    });
    let refused = (0..n).map(|i| {
        let hub = f.hub.clone();
        async move {
            hub.write(WritesObjectsThenRefuses {
                shared: format!("p{i}"),
            })
            .await
        }
    });
    let (accepted, refused) = tokio::join!(
        futures::future::join_all(accepted),
        futures::future::join_all(refused)
    );
    for r in refused {
        assert!(matches!(r, Err(Error::Conflict(_))), "{r:?}");
    }
    for r in accepted {
        r.unwrap();
    }
    let store = f.hub.store();
    let placements = store
        .list_objects(ObjectKind::Placement, None)
        .await
        .unwrap();
    assert_eq!(placements.len(), n);
    for p in &placements {
        assert_eq!(
            p.object,
            fleet_text(&p.name, "ok"),
            "a refused op's placement stayed"
        );
    }
    assert!(
        store
            .list_objects(ObjectKind::ManifestWorkReplicaSet, None)
            .await
            .unwrap()
            .is_empty(),
        "a refused op's set stayed"
    );
    let kept = store
        .get_object(ObjectKind::PlacementDecisions, "fleet", "kept")
        .await
        .unwrap();
    assert_eq!(
        kept.map(|k| k.object),
        Some(fleet_text("kept", "decided")),
        "a refused op's delete stayed"
    );
    assert!(
        store
            .list_works(Some("c1"), None, 100)
            .await
            .unwrap()
            .is_empty(),
        "a refused op's work stayed"
    );
    let log = store.list_audit(None, 1000).await.unwrap();
    assert!(log.iter().all(|e| e.action != "test.refused"), "{log:?}");
    assert_eq!(
        store.current_index().await.unwrap(),
        start,
        "no change was logged"
    );
}

/// The only hub of a database leads, and its leadership holds while nothing happens to it.
async fn the_only_hub_leads(f: Fixture) {
    let mut lead = f
        .hub
        .store()
        .lead("fleet-controllers")
        .await
        .unwrap()
        .expect("nobody else leads");
    lead.check().await.unwrap();
    lead.check().await.unwrap();
}

/// Hubs sharing a Postgres take turns: one leader per name, another takes over within
/// seconds once the leader lets go, and a leader whose session is cut learns it at its next
/// check (and the lock is free for another hub).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leadership_is_one_hub_at_a_time() {
    use sqlx::Connection;
    let pg = TestPostgres::shared().await.unwrap();
    let url = pg.fresh_database().await.unwrap();
    let a = hub::store::PgStore::connect(&url).await.unwrap();
    let b = hub::store::PgStore::connect(&url).await.unwrap();
    let mut first = a.lead("x").await.unwrap().expect("the first hub leads");
    first.check().await.unwrap();
    assert!(b.lead("x").await.unwrap().is_none(), "one leader at a time");
    assert!(a.lead("x").await.unwrap().is_none(), "also for its own hub");
    let mut other = b
        .lead("y")
        .await
        .unwrap()
        .expect("another name, another lock");
    other.check().await.unwrap();
    first.check().await.unwrap();

    drop(first);
    let takeover = async {
        loop {
            if let Some(l) = b.lead("x").await.unwrap() {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut second = tokio::time::timeout(Duration::from_secs(5), takeover)
        .await
        .expect("the second hub leads within seconds of the first letting go");
    second.check().await.unwrap();
    assert!(a.lead("x").await.unwrap().is_none());

    // Cut the leader's session, as a database restart or a network failure would.
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    let pids: Vec<(i32,)> = sqlx::query_as(
        "SELECT pid FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'fleethub lead x'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(pids.len(), 1, "the leader's own connection: {pids:?}");
    let (terminated,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1)")
        .bind(pids[0].0)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(terminated);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (alive,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1")
                .bind(pids[0].0)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if alive == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the backend did not end");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(second.check().await.is_err(), "the cut leader learns it");
    assert!(second.check().await.is_err(), "and stays cut");
    other.check().await.unwrap();
    let mut third = a
        .lead("x")
        .await
        .unwrap()
        .expect("the lock died with the session");
    third.check().await.unwrap();
}

macro_rules! contract {
    ($backend:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::$backend().await).await;
                }
            )*
        }
    };
}

contract!(sqlite: create_read_and_round_trip, generation_and_resource_version, optimistic_concurrency,
    deletion_with_and_without_finalizers, status_writes_never_roll_back, selectors_and_pages,
    cluster_deletion, blocking_queries, concurrent_writers_and_a_blocking_reader, data_survives_a_restart,
    audit_commits_with_the_write, writes_to_one_work_in_one_batch_see_each_other,
    lease_renewals_batch_and_never_go_back, secret_placeholders_are_shared_by_the_hubs_of_a_database,
    assertion_ids_are_single_use_until_purged, unusable_ids_are_not_found,
    a_refused_op_leaves_no_trace_in_its_batch, fleet_objects_put_get_list_delete,
    fleet_object_changes_are_logged_by_kind, an_undone_op_leaves_no_fleet_object,
    a_refused_op_leaves_no_fleet_object_in_its_batch, the_only_hub_leads,
    work_changes_say_whether_the_work_has_a_ttl, long_lists_keep_key_order_and_documents);
contract!(postgres: create_read_and_round_trip, generation_and_resource_version, optimistic_concurrency,
    deletion_with_and_without_finalizers, status_writes_never_roll_back, selectors_and_pages,
    cluster_deletion, blocking_queries, concurrent_writers_and_a_blocking_reader, data_survives_a_restart,
    audit_commits_with_the_write, writes_to_one_work_in_one_batch_see_each_other,
    lease_renewals_batch_and_never_go_back, secret_placeholders_are_shared_by_the_hubs_of_a_database,
    assertion_ids_are_single_use_until_purged, unusable_ids_are_not_found,
    a_refused_op_leaves_no_trace_in_its_batch, fleet_objects_put_get_list_delete,
    fleet_object_changes_are_logged_by_kind, an_undone_op_leaves_no_fleet_object,
    a_refused_op_leaves_no_fleet_object_in_its_batch, the_only_hub_leads,
    work_changes_say_whether_the_work_has_a_ttl, long_lists_keep_key_order_and_documents);
