//! Router tests of `spec.executor`: a bad executor is 422 with its field path; only
//! admins and tokens with the `executor` verb may set, change or remove one, on a work or
//! on a ManifestWorkReplicaSet's template; a write that keeps it needs only `write`.

use axum::http::StatusCode;
use serde_json::{Value, json};

mod common;
use common::router::{Api, api, assert_error};

const W: &str = "/api/v1/clusters/c1/manifestworks/w1";
const S: &str = "/api/v1/namespaces/apps/manifestworkreplicasets/s1";

fn executor(name: &str) -> Value {
    json!({"subject": {"type": "ServiceAccount",
        "serviceAccount": {"namespace": "ops", "name": name}}})
}

fn work(executor: Option<Value>, data: &str) -> Value {
    let mut w = json!({
        "apiVersion": "work.open-cluster-management.io/v1",
        "kind": "ManifestWork",
        "metadata": {"name": "w1"},
        "spec": {"workload": {"manifests": [{"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "default"}, "data": {"k": data}}]}},
    });
    if let Some(e) = executor {
        w["spec"]["executor"] = e;
    }
    w
}

fn set(executor: Option<Value>) -> Value {
    let mut s = json!({
        "apiVersion": "work.open-cluster-management.io/v1alpha1",
        "kind": "ManifestWorkReplicaSet",
        "spec": {
            "placementRefs": [{"name": "p"}],
            "manifestWorkTemplate": work(None, "1")["spec"].clone(),
        },
    });
    if let Some(e) = executor {
        s["spec"]["manifestWorkTemplate"]["executor"] = e;
    }
    s
}

async fn setup() -> Api {
    let api = api().await;
    let r = api
        .admin("PUT", "/api/v1/clusters/c1", Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    api
}

/// An API token on cluster c1 with these verbs; returns its Authorization header.
async fn token(api: &Api, verbs: &[&str]) -> String {
    let r = api
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"kind": "api", "clusters": ["c1"], "verbs": verbs})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    format!("Bearer {}", r.body["token"].as_str().unwrap())
}

async fn put(api: &Api, auth: &str, uri: &str, body: &Value) -> common::router::Reply {
    api.call(
        "PUT",
        uri,
        Some("application/json"),
        body.to_string(),
        &[("authorization", auth)],
    )
    .await
}

#[tokio::test]
async fn a_bad_executor_is_422_with_its_field_path() {
    let api = setup().await;
    for (bad, field) in [
        (
            json!({"subject": {"type": "User", "serviceAccount": {"namespace": "ops", "name": "a"}}}),
            "spec.executor.subject.type",
        ),
        (
            json!({"subject": {"type": "ServiceAccount"}}),
            "spec.executor.subject.serviceAccount",
        ),
        (
            json!({"subject": {"type": "ServiceAccount", "serviceAccount": {"namespace": "Ops!", "name": "a"}}}),
            "spec.executor.subject.serviceAccount.namespace",
        ),
        (json!({}), "spec.executor.subject"),
    ] {
        let r = api.admin("PUT", W, Some(work(Some(bad), "1"))).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        assert!(r.body.to_string().contains(field), "{field}: {}", r.body);
        assert_eq!(
            api.admin("GET", W, None).await.status,
            StatusCode::NOT_FOUND
        );
    }
    // In a set's template, under the template's path.
    let r = api
        .admin(
            "PUT",
            S,
            Some(set(Some(json!({"subject": {"type": "User"}})))),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert!(
        r.body
            .to_string()
            .contains("spec.manifestWorkTemplate.executor.subject.type"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn only_the_executor_verb_sets_changes_or_removes_an_executor() {
    let api = setup().await;
    let writer = token(&api, &["read", "write"]).await;
    let executor_writer = token(&api, &["read", "write", "executor"]).await;

    // A plain writer may not set one: 403 naming the verb, nothing stored.
    let r = put(&api, &writer, W, &work(Some(executor("admin-sa")), "1")).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("executor verb"),
        "{}",
        r.body
    );
    assert_eq!(
        api.admin("GET", W, None).await.status,
        StatusCode::NOT_FOUND
    );

    // Without an executor, `write` is enough.
    let r = put(&api, &writer, W, &work(None, "1")).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);

    // A token with the verb sets it.
    let r = put(
        &api,
        &executor_writer,
        W,
        &work(Some(executor("deployer")), "1"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["spec"]["executor"], executor("deployer"));

    // The plain writer may change the manifests while keeping the executor...
    let r = put(&api, &writer, W, &work(Some(executor("deployer")), "2")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["spec"]["workload"]["manifests"][0]["data"]["k"], "2");
    // ...but neither change nor remove it.
    for (body, verb) in [
        (work(Some(executor("admin-sa")), "3"), "change"),
        (work(None, "3"), "remove"),
    ] {
        let r = put(&api, &writer, W, &body).await;
        assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
        assert!(
            r.body["message"].as_str().unwrap().contains(verb),
            "{}",
            r.body
        );
    }
    let stored = api.admin("GET", W, None).await.body;
    assert_eq!(stored["spec"]["executor"], executor("deployer"));
    assert_eq!(stored["spec"]["workload"]["manifests"][0]["data"]["k"], "2");

    // Admins may.
    let r = api
        .admin("PUT", W, Some(work(Some(executor("other")), "3")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = api.admin("PUT", W, Some(work(None, "3"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert!(r.body["spec"].get("executor").is_none(), "{}", r.body);
}

#[tokio::test]
async fn a_sets_template_executor_needs_the_verb_too() {
    let api = setup().await;
    let writer = token(&api, &["read", "write"]).await;
    let executor_writer = token(&api, &["read", "write", "executor"]).await;

    let r = put(&api, &writer, S, &set(Some(executor("deployer")))).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("executor verb"),
        "{}",
        r.body
    );
    let r = put(&api, &executor_writer, S, &set(Some(executor("deployer")))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // Kept: fine with `write`; removed: refused.
    let r = put(&api, &writer, S, &set(Some(executor("deployer")))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = put(&api, &writer, S, &set(None)).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let stored = api.admin("GET", S, None).await.body;
    assert_eq!(
        stored["spec"]["manifestWorkTemplate"]["executor"],
        executor("deployer")
    );
}
