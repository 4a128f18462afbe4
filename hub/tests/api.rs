//! Router tests with `oneshot` on a real SQLite store: every bad input gets the documented
//! status and JSON error body, and changes nothing.
//!
//! Bad inputs tried: no token, a wrong token, a malformed Authorization header; malformed
//! JSON, malformed YAML, several YAML documents, non-UTF-8 bytes, an empty body, a body that
//! is an array, a field of the wrong type, an unknown enum value; a body over the limit;
//! a work name and a cluster name that are not DNS-1123, a cluster name over 63 characters;
//! manifests without apiVersion, kind or metadata.name; a body namespace or name that
//! differs from the path; a plain manifest sent as a work; a stale resourceVersion; a failed
//! If-Match; a work for an unknown cluster; a PUT to a deleting work; a bad index, wait,
//! limit, selector and continue token; bad cluster labels; an unknown path and method.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use hub::service::Hub;
use serde_json::{Value, json};

mod common;
use common::router::{Api, TOKEN, api, api_with_limit, assert_error};

const W: &str = "/api/v1/clusters/c1/manifestworks/w1";

fn good_work() -> Value {
    json!({
        "apiVersion": "work.open-cluster-management.io/v1",
        "kind": "ManifestWork",
        "metadata": {"name": "w1", "labels": {"app": "web"}},
        "spec": {"workload": {"manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"}, "data": {"k": "v"}}
        ]}}
    })
}

async fn with_work() -> (Api, String) {
    let api = api().await;
    assert_eq!(
        api.admin("PUT", "/api/v1/clusters/c1", Some(json!({})))
            .await
            .status,
        StatusCode::CREATED
    );
    let r = api.admin("PUT", W, Some(good_work())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rv = r.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(r.headers["etag"], format!("\"{rv}\"").as_str());
    assert!(r.headers.contains_key("x-hub-index"));
    (api, rv)
}

/// The stored work is still exactly the one created.
async fn assert_unchanged(api: &Api, rv: &str) {
    let r = api.admin("GET", W, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.body["metadata"]["resourceVersion"], rv,
        "a refused request changed the work"
    );
    assert_eq!(r.body["spec"], good_work()["spec"]);
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let (api, _) = with_work().await;
    let r = api.call("GET", W, None, Body::empty(), &[]).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(r.headers["www-authenticate"], "Bearer");
    let r = api
        .call(
            "GET",
            W,
            None,
            Body::empty(),
            &[("authorization", "Bearer wrong")],
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = api
        .call(
            "GET",
            W,
            None,
            Body::empty(),
            &[("authorization", "Basic abc")],
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = api
        .call(
            "PUT",
            W,
            Some("application/json"),
            good_work().to_string(),
            &[],
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    for open in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/openapi.json",
        "/api/v1/cluster-info",
    ] {
        assert_eq!(
            api.call("GET", open, None, Body::empty(), &[]).await.status,
            StatusCode::OK,
            "{open}"
        );
    }
}

#[tokio::test]
async fn malformed_bodies_are_400_with_a_position() {
    let (api, rv) = with_work().await;
    let r = api
        .raw(
            "PUT",
            W,
            "application/json",
            "{\"spec\": {\"workload\": [1,}",
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap()
            .contains("line 1 column"),
        "{}",
        r.body
    );
    let r = api
        .raw(
            "PUT",
            W,
            "application/yaml",
            "metadata:\n  name: w1\nspec: [\n  x: y\n",
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    assert!(
        r.body["message"].as_str().unwrap().contains("line"),
        "{}",
        r.body
    );
    let r = api
        .raw(
            "PUT",
            W,
            "application/yaml",
            "metadata: {name: w1}\n---\nmetadata: {name: w2}\n",
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    let r = api
        .raw("PUT", W, "application/json", vec![0xffu8, 0xfe, 0x00])
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    let r = api.raw("PUT", W, "application/json", "").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    let r = api.raw("PUT", W, "application/json", "[1, 2]").await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let r = api
        .raw(
            "PUT",
            W,
            "application/json",
            r#"{"spec": {"workload": {"manifests": 5}}}"#,
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(r.body["details"][0]["field"], "spec.workload.manifests");
    let r = api
        .raw(
            "PUT",
            W,
            "application/json",
            r#"{"spec": {"deleteOption": {"propagationPolicy": "Sometimes"}}}"#,
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(
        r.body["details"][0]["field"],
        "spec.deleteOption.propagationPolicy"
    );
    assert_unchanged(&api, &rv).await;
}

#[tokio::test]
async fn yaml_and_sniffed_bodies_are_accepted() {
    let (api, _) = with_work().await;
    let yaml = "apiVersion: work.open-cluster-management.io/v1\nkind: ManifestWork\nmetadata:\n  name: w2\nspec:\n  workload:\n    manifests:\n    - apiVersion: v1\n      kind: ConfigMap\n      metadata: {name: a}\n";
    for ct in [
        "application/yaml",
        "application/x-yaml",
        "text/yaml",
        "application/x-www-form-urlencoded",
    ] {
        let r = api
            .raw("PUT", "/api/v1/clusters/c1/manifestworks/w2", ct, yaml)
            .await;
        assert!(r.status.is_success(), "{ct}: {}", r.body);
    }
    let r = api
        .raw(
            "PUT",
            "/api/v1/clusters/c1/manifestworks/w3",
            "text/plain",
            good_work().to_string().replace("w1", "w3"),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test]
async fn too_large_is_413() {
    let api = api_with_limit(4096).await;
    api.admin("PUT", "/api/v1/clusters/c1", Some(json!({})))
        .await;
    let mut w = good_work();
    w["spec"]["workload"]["manifests"][0]["data"]["k"] = json!("x".repeat(8192));
    let r = api.admin("PUT", W, Some(w)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert_eq!(
        api.admin("GET", W, None).await.status,
        StatusCode::NOT_FOUND
    );
}

/// A status is larger than its work (per manifest: conditions, messages, feedback), so its
/// limit is 16 times the work's: a status body over the work limit reaches the handler
/// (here refused 403, since only the cluster's agent writes status), one over 16 times it
/// is 413 before.
#[tokio::test]
async fn status_writes_have_a_larger_limit_than_works() {
    let api = api_with_limit(4096).await;
    api.admin("PUT", "/api/v1/clusters/c1", Some(json!({})))
        .await;
    let status = |bytes: usize| {
        json!({"status": {"conditions": [{"type": "Applied", "status": "True", "reason": "x",
                                          "message": "m".repeat(bytes)}]}})
    };
    let path = "/api/v1/clusters/c1/manifestworks/w1/status";
    let r = api.admin("PUT", path, Some(status(8192))).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = api.admin("PUT", path, Some(status(16 * 4096 + 1))).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
}

#[tokio::test]
async fn invalid_works_are_422_naming_the_field() {
    let (api, rv) = with_work().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/api/v1/clusters/c1/manifestworks/Bad_Name",
            json!({}),
            "metadata.name",
        ),
        (
            "/api/v1/clusters/Bad_Cluster/manifestworks/w1",
            json!({}),
            "cluster",
        ),
        (
            "/api/v1/clusters/cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc/manifestworks/w1",
            json!({}),
            "cluster",
        ),
        (
            W,
            json!({"spec": {"workload": {"manifests": [{"kind": "ConfigMap", "metadata": {"name": "a"}}]}}}),
            "spec.workload.manifests[0].apiVersion",
        ),
        (
            W,
            json!({"spec": {"workload": {"manifests": [{"apiVersion": "v1", "metadata": {"name": "a"}}]}}}),
            "spec.workload.manifests[0].kind",
        ),
        (
            W,
            json!({"spec": {"workload": {"manifests": [good_work()["spec"]["workload"]["manifests"][0], {"apiVersion": "v1", "kind": "ConfigMap"}]}}}),
            "spec.workload.manifests[1].metadata.name",
        ),
        (
            W,
            json!({"metadata": {"namespace": "c2"}}),
            "metadata.namespace",
        ),
        (W, json!({"metadata": {"name": "w2"}}), "metadata.name"),
        (
            W,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "w1"}}),
            "apiVersion",
        ),
        (
            W,
            json!({"metadata": {"labels": {"bad key": "v"}}}),
            "metadata.labels[bad key]",
        ),
    ];
    for (uri, body, field) in cases {
        let r = api.admin("PUT", uri, Some(body)).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
        let fields: Vec<&str> = r.body["details"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{uri}: expected {field} in {fields:?}"
        );
    }
    assert_unchanged(&api, &rv).await;
}

#[tokio::test]
async fn conflicts_preconditions_and_missing_objects() {
    let (api, rv) = with_work().await;
    let mut stale = good_work();
    stale["metadata"]["resourceVersion"] = json!("999");
    stale["spec"]["workload"]["manifests"][0]["data"]["k"] = json!("changed");
    assert_error(
        &api.admin("PUT", W, Some(stale)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    let auth = format!("Bearer {TOKEN}");
    let r = api
        .call(
            "PUT",
            W,
            Some("application/json"),
            good_work().to_string(),
            &[("authorization", &auth), ("if-match", "\"999\"")],
        )
        .await;
    assert_error(&r, StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_unchanged(&api, &rv).await;
    let etag = format!("\"{rv}\"");
    let mut changed = good_work();
    changed["spec"]["workload"]["manifests"][0]["data"]["k"] = json!("changed");
    let r = api
        .call(
            "PUT",
            W,
            Some("application/json"),
            changed.to_string(),
            &[("authorization", &auth), ("if-match", &etag)],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["metadata"]["generation"], 2);
    assert_error(
        &api.admin(
            "PUT",
            "/api/v1/clusters/nope/manifestworks/w1",
            Some(good_work()),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &api.admin("GET", "/api/v1/clusters/c1/manifestworks/nope", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &api.admin("DELETE", "/api/v1/clusters/c1/manifestworks/nope", None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &api.admin("GET", "/api/v1/clusters/nope", None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn queries_are_checked() {
    let (api, _) = with_work().await;
    for q in [
        "index=abc",
        "index=-1",
        "index=1&wait=forever",
        "limit=ten",
        "labelSelector=a%20in%20b",
        "labelSelector=%3D%3D",
        "continue=%21%21",
    ] {
        let r = api
            .admin(
                "GET",
                &format!("/api/v1/clusters/c1/manifestworks?{q}"),
                None,
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    }
    let r = api
        .admin("GET", "/api/v1/manifestworks?clusterSelector=%21%21", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    let r = api
        .admin("DELETE", "/api/v1/clusters/c1?force=maybe", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    let r = api.admin("DELETE", &format!("{W}/finalizers"), None).await;
    // Only the cluster's agent removes finalizers and writes status.
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = api
        .admin(
            "PUT",
            "/api/v1/clusters/c1/labels",
            Some(json!({"bad key": "v"})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let r = api
        .admin("PUT", "/api/v1/clusters/c1/labels", Some(json!({"ok": 5})))
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let r = api.admin("GET", "/api/v1/nothing-here", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = api.admin("POST", W, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["code"], "malformed");
}

#[tokio::test]
async fn lists_labels_and_deletion_over_http() {
    let (api, _) = with_work().await;
    let r = api
        .admin(
            "GET",
            "/api/v1/clusters/c1/manifestworks?labelSelector=app%3Dweb",
            None,
        )
        .await;
    assert_eq!(r.body["kind"], "ManifestWorkList");
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let index = r.body["metadata"]["index"].as_u64().unwrap();
    assert_eq!(r.headers["x-hub-index"], index.to_string().as_str());
    let r = api
        .admin(
            "GET",
            "/api/v1/clusters/c1/manifestworks?labelSelector=app%3Ddb",
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);
    let r = api
        .admin(
            "PUT",
            "/api/v1/clusters/c1/labels",
            Some(json!({"env": "prod"})),
        )
        .await;
    assert_eq!(r.body["metadata"]["labels"]["env"], "prod");
    let r = api
        .admin(
            "GET",
            "/api/v1/manifestworks?clusterSelector=env%3Dprod",
            None,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = api
        .admin(
            "PUT",
            "/api/v1/clusters/c1/labels",
            Some(json!({"env": null})),
        )
        .await;
    assert!(r.body["metadata"]["labels"].get("env").is_none());
    let r = api.admin("GET", "/api/v1/clusters", None).await;
    assert_eq!(r.body["kind"], "ManagedClusterList");
    let r = api
        .admin(
            "GET",
            "/api/v1/manifestworks/summary?name=w1&labelSelector=app%3Dweb",
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["kind"], "ManifestWorkSummaryList");
    assert_eq!(r.body["items"][0]["name"], "w1");
    assert_eq!(r.body["items"][0]["clusters"], 1);
    assert_eq!(r.body["items"][0]["unknown"], 1, "no agent reported yet");
    let r = api
        .admin("GET", "/api/v1/manifestworks/summary?index=x", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "malformed");
    let r = api.admin("DELETE", W, None).await;
    assert_eq!(r.status, StatusCode::OK, "no agent holds it: gone at once");
    assert_eq!(
        api.admin("GET", W, None).await.status,
        StatusCode::NOT_FOUND
    );
    let r = api.admin("DELETE", "/api/v1/clusters/c1", None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["removed"], true);
    let r = api.admin("GET", "/metrics", None).await;
    let text = r.body.as_str().unwrap();
    assert!(text.contains("hub_http_requests_total"), "{text}");
    assert!(text.contains("hub_works_stored"), "{text}");
}

/// Requests are counted by route, method and status. A client may send any token as a
/// method; each used to become a series of its own, kept in memory for good, so that
/// anyone could grow the hub without end. Methods outside HTTP's standard ones count as
/// `other`. (Bad inputs: invented methods on a route and on no route.)
#[tokio::test]
async fn invented_methods_are_counted_as_other() {
    let (api, _) = with_work().await;
    for method in ["BREW", "WHEN", "X-1"] {
        for uri in ["/api/v1/clusters/c1", "/no/such/route"] {
            let r = api.admin(method, uri, None).await;
            assert!(r.status.is_client_error(), "{method} {uri}: {}", r.status);
        }
    }
    assert_eq!(
        api.admin("GET", "/api/v1/clusters/c1", None).await.status,
        StatusCode::OK
    );
    let r = api.admin("GET", "/metrics", None).await;
    let text = r.body.as_str().unwrap();
    let counted = |method: &str| {
        text.lines().any(|l| {
            l.starts_with("hub_http_requests_total{")
                && l.contains("route=\"/api/v1/clusters/{cluster}\"")
                && l.contains(&format!("method=\"{method}\""))
        })
    };
    assert!(counted("other"), "{text}");
    assert!(counted("GET"), "{text}");
    for method in ["BREW", "WHEN", "X-1"] {
        assert!(!text.contains(&format!("method=\"{method}\"")), "{text}");
    }
}

/// A list serves most works as their stored text; each item must still read exactly as a
/// GET of that work does: with the `Deleting` condition of a work being deleted, and
/// unchanged where the text merely mentions `deletionTimestamp` or `Secret`.
#[tokio::test]
async fn list_items_read_as_single_reads_do() {
    let (api, _) = with_work().await;
    api.hub.mark_cluster_joined("c1").await.unwrap();
    let mut tricky = good_work();
    tricky["metadata"]["name"] = json!("w2");
    tricky["spec"]["workload"]["manifests"][0]["data"] =
        json!({"note": "\"deletionTimestamp\" and \"Secret\" are only words here"});
    let r = api
        .admin("PUT", "/api/v1/clusters/c1/manifestworks/w2", Some(tricky))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let mut doomed = good_work();
    doomed["metadata"]["name"] = json!("w3");
    let r = api
        .admin("PUT", "/api/v1/clusters/c1/manifestworks/w3", Some(doomed))
        .await;
    assert_eq!(r.body["metadata"]["finalizers"][0], api::CLEANUP_FINALIZER);
    let r = api
        .admin("DELETE", "/api/v1/clusters/c1/manifestworks/w3", None)
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);

    let list = api
        .admin("GET", "/api/v1/clusters/c1/manifestworks", None)
        .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(
        list.headers["content-type"], "application/json",
        "{:?}",
        list.headers
    );
    let items = list.body["items"].as_array().unwrap();
    let names: Vec<&str> = items
        .iter()
        .map(|w| w["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["w1", "w2", "w3"]);
    for item in items {
        let one = api
            .admin(
                "GET",
                &format!(
                    "/api/v1/clusters/c1/manifestworks/{}",
                    item["metadata"]["name"].as_str().unwrap()
                ),
                None,
            )
            .await;
        assert_eq!(item, &one.body, "a listed work differs from its GET");
    }
    let deleting = &items[2]["status"]["conditions"];
    assert!(
        deleting
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Deleting" && c["status"] == "True"),
        "{deleting}"
    );
    // Pages of one carry the same items, and a continue token until the last.
    let mut paged = Vec::new();
    let mut next = String::new();
    loop {
        let r = api
            .admin(
                "GET",
                &format!("/api/v1/clusters/c1/manifestworks?limit=1&continue={next}"),
                None,
            )
            .await;
        paged.extend(r.body["items"].as_array().unwrap().clone());
        match r.body["metadata"]["continue"].as_str() {
            Some(c) => next = c.to_string(),
            None => break,
        }
    }
    assert_eq!(&paged, items);
}

/// A token with `write` but not `read` learns nothing of a work it could not GET: not its
/// content from a DELETE's (or PUT's) answer, not its current version from a refused
/// If-Match or resourceVersion.
#[tokio::test]
async fn write_only_tokens_get_no_content_back() {
    let (api, rv) = with_work().await;
    let r = api
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"kind": "api", "clusters": ["c1"], "verbs": ["write"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let auth = format!("Bearer {}", r.body["token"].as_str().unwrap());
    let call = |method: &'static str, body: Option<Value>, if_match: Option<&'static str>| {
        let auth = auth.clone();
        let api = &api;
        async move {
            let mut headers = vec![("authorization", auth.as_str())];
            if let Some(tag) = if_match {
                headers.push(("if-match", tag));
            }
            match body {
                Some(b) => {
                    api.call(method, W, Some("application/json"), b.to_string(), &headers)
                        .await
                }
                None => api.call(method, W, None, Body::empty(), &headers).await,
            }
        }
    };
    assert_error(
        &call("GET", None, None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    // A stale If-Match or resourceVersion is refused without naming the current version.
    let r = call("PUT", Some(good_work()), Some("\"999\"")).await;
    assert_error(&r, StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert!(!r.body.to_string().contains(&rv), "{}", r.body);
    assert!(!r.headers.contains_key("etag"), "{:?}", r.headers);
    let mut stale = good_work();
    stale["metadata"]["resourceVersion"] = json!("999");
    let r = call("PUT", Some(stale), None).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    assert!(!r.body.to_string().contains(&rv), "{}", r.body);
    assert_unchanged(&api, &rv).await;

    // The agent reports status: feedback a write-only token must not read back.
    let status = json!({"status": {"conditions": [{
        "type": "Applied", "status": "True", "reason": "AppliedManifestWorkComplete",
        "message": "status-only-the-readers-see", "lastTransitionTime": "2025-01-01T00:00:00Z",
        "observedGeneration": 1
    }]}});
    let agent_write = api
        .hub
        .put_work_status(
            "c1",
            "w1",
            serde_json::from_value(status["status"].clone()).unwrap(),
        )
        .await;
    assert!(agent_write.is_ok(), "{agent_write:?}");

    // Its own write is answered with the work's identity, not its content.
    let mut mine = good_work();
    mine["spec"]["workload"]["manifests"][0]["data"]["k"] = json!("mine");
    let r = call("PUT", Some(mine), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["metadata"]["name"], "w1");
    let text = r.body.to_string();
    for leak in [
        "status-only-the-readers-see",
        "mine",
        "ConfigMap",
        "\"app\"",
    ] {
        assert!(!text.contains(leak), "PUT answer shows {leak:?}: {text}");
    }
    // It was written all the same, as the admin (who may read) sees.
    let r = api.admin("GET", W, None).await;
    assert_eq!(
        r.body["spec"]["workload"]["manifests"][0]["data"]["k"],
        "mine"
    );
    assert_eq!(r.body["metadata"]["labels"]["app"], "web");

    // The DELETE answer carries no manifests, labels or status either.
    let r = call("DELETE", None, None).await;
    assert!(
        r.status == StatusCode::OK || r.status == StatusCode::ACCEPTED,
        "{}",
        r.body
    );
    assert_eq!(r.body["metadata"]["name"], "w1");
    let text = r.body.to_string();
    for leak in [
        "status-only-the-readers-see",
        "mine",
        "ConfigMap",
        "\"app\"",
    ] {
        assert!(!text.contains(leak), "DELETE answer shows {leak:?}: {text}");
    }
}

/// Secret data reads as keyed placeholders for a token without the `secrets` verb: in
/// `data` and `stringData`, in kubectl's last-applied copy and in status feedback read from
/// the Secret; not an unkeyed hash a PIN falls to offline; the same on every hub of the
/// database; refused when written back; and a dry run masks local values alike (`hub diff`).
#[tokio::test]
async fn secret_placeholders_are_keyed_and_cover_every_copy() {
    use sha2::{Digest, Sha256};
    let api = api().await;
    assert_eq!(
        api.admin("PUT", "/api/v1/clusters/c1", Some(json!({})))
            .await
            .status,
        StatusCode::CREATED
    );
    let last_applied = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"pin": "4711"}}).to_string();
    let work = json!({
        "apiVersion": "work.open-cluster-management.io/v1",
        "kind": "ManifestWork",
        "metadata": {"name": "w1"},
        "spec": {"workload": {"manifests": [
            {"apiVersion": "v1", "kind": "Secret",
             "metadata": {"name": "s", "namespace": "default",
                          "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied}},
             "stringData": {"pin": "4711"}, "data": {"raw": "NDcxMQ=="}}
        ]}}
    });
    let r = api.admin("PUT", W, Some(work.clone())).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let rv = r.body["metadata"]["resourceVersion"].clone();
    let status: api::ManifestWorkStatus = serde_json::from_value(json!({
        "resourceStatus": {"manifests": [{
            "resourceMeta": {"ordinal": 0, "group": "", "version": "v1", "kind": "Secret",
                             "resource": "secrets", "name": "s", "namespace": "default"},
            "conditions": [],
            "statusFeedback": {"values": [
                {"name": "pin", "fieldValue": {"type": "String", "string": "4711"}},
                {"name": "n", "fieldValue": {"type": "Integer", "integer": 4711}}
            ]}
        }]}
    }))
    .unwrap();
    let reported = api.hub.put_work_status("c1", "w1", status).await;
    assert!(reported.is_ok(), "{reported:?}");
    let rv_after_status =
        api.admin("GET", W, None).await.body["metadata"]["resourceVersion"].clone();

    let r = api
        .admin(
            "POST",
            "/api/v1/tokens",
            Some(json!({"kind": "api", "clusters": ["c1"], "verbs": ["read", "write"]})),
        )
        .await;
    let auth = format!("Bearer {}", r.body["token"].as_str().unwrap());
    let as_token = |method: &'static str, uri: &'static str, body: Option<Value>| {
        let auth = auth.clone();
        let api = &api;
        async move {
            let headers = [("authorization", auth.as_str())];
            match body {
                Some(b) => {
                    api.call(
                        method,
                        uri,
                        Some("application/json"),
                        b.to_string(),
                        &headers,
                    )
                    .await
                }
                None => api.call(method, uri, None, Body::empty(), &headers).await,
            }
        }
    };

    let read = as_token("GET", W, None).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    let listed = as_token("GET", "/api/v1/clusters/c1/manifestworks", None).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    for (what, body) in [("GET", &read.body), ("list", &listed.body["items"][0])] {
        let text = body.to_string();
        assert!(
            !text.contains("4711") && !text.contains("NDcxMQ"),
            "{what} shows the secret: {text}"
        );
        let m = &body["spec"]["workload"]["manifests"][0];
        let pin = m["stringData"]["pin"].as_str().unwrap();
        let unkeyed = hex::encode(Sha256::digest(b"4711"));
        assert!(pin.starts_with("hmac-sha256:"), "{pin}");
        assert!(
            !pin.contains(&unkeyed),
            "{what}: an unkeyed hash of the PIN: {pin}"
        );
        assert!(
            m["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
                .as_str()
                .is_some_and(|a| a.starts_with("hmac-sha256:")),
            "{what}: {m}"
        );
        for v in body["status"]["resourceStatus"]["manifests"][0]["statusFeedback"]["values"]
            .as_array()
            .unwrap()
        {
            assert!(
                v["fieldValue"]["string"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("hmac-sha256:")),
                "{what}: feedback of a Secret in clear: {v}"
            );
        }
    }
    let pin = read.body["spec"]["workload"]["manifests"][0]["stringData"]["pin"].clone();

    // Another hub on the same database shows the same placeholder.
    let store = hub::store::connect(&format!("sqlite://{}", api.dir().join("hub.db").display()))
        .await
        .unwrap();
    let other = Hub::start(store).await.unwrap();
    assert_eq!(other.placeholder_key().placeholder(&json!("4711")), pin);

    // Written back, the placeholders are refused and nothing changes.
    let r = as_token("PUT", W, Some(read.body.clone())).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");

    // A dry run of the clear work shows the same placeholders and stores nothing.
    let r = as_token(
        "PUT",
        "/api/v1/clusters/c1/manifestworks/w1?dryRun=All",
        Some(work.clone()),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        r.body["spec"]["workload"]["manifests"][0]["stringData"]["pin"],
        pin
    );
    assert!(!r.body.to_string().contains("4711"), "{}", r.body);
    let mut changed = work.clone();
    changed["spec"]["workload"]["manifests"][0]["stringData"]["pin"] = json!("0000");
    let r = as_token(
        "PUT",
        "/api/v1/clusters/c1/manifestworks/w1?dryRun=All",
        Some(changed),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_ne!(
        r.body["spec"]["workload"]["manifests"][0]["stringData"]["pin"],
        pin
    );
    assert_error(
        &as_token(
            "PUT",
            "/api/v1/clusters/c1/manifestworks/w1?dryRun=Some",
            Some(work.clone()),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "malformed",
    );
    let r = api.admin("GET", W, None).await;
    assert_eq!(r.body["metadata"]["resourceVersion"], rv_after_status);
    assert_ne!(rv, Value::Null);
    assert_eq!(
        r.body["spec"]["workload"]["manifests"][0]["stringData"]["pin"],
        "4711"
    );

    // A write that stores the clear work answers it masked, like a read.
    let mut updated = work.clone();
    updated["spec"]["workload"]["manifests"][0]["stringData"]["pin"] = json!("1234");
    let r = as_token("PUT", W, Some(updated)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let text = r.body.to_string();
    for leak in ["1234", "4711", "NDcxMQ"] {
        assert!(
            !text.contains(leak),
            "the write's answer shows {leak:?}: {text}"
        );
    }
    let r = api.admin("GET", W, None).await;
    assert_eq!(
        r.body["spec"]["workload"]["manifests"][0]["stringData"]["pin"],
        "1234"
    );
}

/// A create's and a replace's answers are the work as a read then shows it, headers too.
#[tokio::test]
async fn a_writes_answer_is_the_work_as_stored() {
    let api = api().await;
    api.admin("PUT", "/api/v1/clusters/c1", Some(json!({})))
        .await;
    let mut work = json!({
        "metadata": {"name": "w1", "labels": {"app": "a"}},
        "spec": {"workload": {"manifests": [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "cm", "namespace": "default"}, "data": {"k": "v \"q\" \u{e9}"}}
        ]}}
    });
    for expected in [StatusCode::CREATED, StatusCode::OK] {
        let written = api.admin("PUT", W, Some(work.clone())).await;
        assert_eq!(written.status, expected, "{}", written.body);
        let read = api.admin("GET", W, None).await;
        assert_eq!(written.body, read.body);
        for h in ["etag", "x-hub-index"] {
            assert!(
                written.headers.get(h).is_some(),
                "the write's answer has no {h}"
            );
        }
        assert_eq!(written.headers.get("etag"), read.headers.get("etag"));
        assert_eq!(
            written.headers.get("content-type").unwrap(),
            "application/json"
        );
        work["spec"]["workload"]["manifests"][0]["data"]["k"] = json!("changed");
    }
}

/// The OpenAPI document and the router agree: every path the router serves is documented,
/// the document names no other, and each path answers exactly the documented methods.
#[tokio::test]
async fn the_openapi_document_and_the_router_agree() {
    let api = api().await;
    let doc = api
        .call("GET", "/api/v1/openapi.json", None, Body::empty(), &[])
        .await
        .body;
    let documented: BTreeMap<&str, BTreeSet<String>> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = item.as_object().unwrap().keys();
            (path.as_str(), methods.map(|m| m.to_uppercase()).collect())
        })
        .collect();
    // axum lists its routes nowhere public; its Debug output names each path once, as
    // `RouteId(n): "/path"`, before the fallback router's.
    let debug = format!("{:?}", api.app);
    let routes = &debug[..debug.find("fallback_router").unwrap()];
    let served: BTreeSet<&str> = routes
        .split("): \"")
        .skip(1)
        .map(|rest| &rest[..rest.find('"').unwrap()])
        .collect();
    assert_eq!(
        documented.keys().copied().collect::<BTreeSet<_>>(),
        served,
        "documented paths (left) and routed paths (right)"
    );
    for (path, methods) in &documented {
        let uri: String = path
            .split('/')
            .map(|s| if s.starts_with('{') { "x" } else { s })
            .collect::<Vec<_>>()
            .join("/");
        for method in ["GET", "PUT", "POST", "DELETE", "PATCH"] {
            // Without credentials: a routed method refuses with 401 (or serves to anyone),
            // never 405, and changes nothing.
            let status = api
                .call(method, &uri, None, Body::empty(), &[])
                .await
                .status;
            assert_eq!(
                status != StatusCode::METHOD_NOT_ALLOWED,
                methods.contains(method),
                "{method} {path} answered {status}, documented: {methods:?}"
            );
        }
    }
}

/// `X-Hub-Index` of a write is the index of that write, even while other writes commit
/// around it: a blocking read from it then sees every later change, and nothing of the
/// write itself is reported as newer than it is. It used to be the hub's index read after
/// the commit, which concurrent writes had moved on.
#[tokio::test]
async fn a_write_answers_its_own_index_under_concurrent_writes() {
    let (api, _) = with_work().await;
    let api = Arc::new(api);
    let writes = (0..40).map(|i| {
        let api = api.clone();
        tokio::spawn(async move {
            let mut work = good_work();
            work["metadata"]["name"] = json!(format!("w-{i}"));
            let uri = format!("/api/v1/clusters/c1/manifestworks/w-{i}");
            let created = api.admin("PUT", &uri, Some(work.clone())).await;
            work["metadata"]["labels"]["round"] = json!("2");
            let replaced = api.admin("PUT", &uri, Some(work)).await;
            let labels = api
                .admin(
                    "PUT",
                    "/api/v1/clusters/c1/labels",
                    Some(json!({format!("k{i}"): "v"})),
                )
                .await;
            (created, replaced, labels)
        })
    });
    for w in futures::future::join_all(writes).await {
        let (created, replaced, labels) = w.unwrap();
        for (r, status) in [
            (created, StatusCode::CREATED),
            (replaced, StatusCode::OK),
            (labels, StatusCode::OK),
        ] {
            assert_eq!(r.status, status, "{}", r.body);
            assert_eq!(
                r.headers["x-hub-index"].to_str().unwrap(),
                r.body["metadata"]["resourceVersion"].as_str().unwrap(),
                "the index of the write itself: {}",
                r.body
            );
        }
    }
    // A write that changes nothing answers the index of the state it saw, never a later one.
    let before = api.hub.index();
    let r = api.admin("PUT", W, Some(good_work())).await;
    assert_eq!(r.status, StatusCode::OK);
    let index: u64 = r.headers["x-hub-index"].to_str().unwrap().parse().unwrap();
    assert!(index <= before, "{index} > {before}");
}

/// A work written for a cluster without a joined agent says so in its status (issue 15,
/// item 7), again when its spec changes; the agent's first status report replaces it, and
/// a cluster with an agent gets no such condition.
#[tokio::test]
async fn a_work_for_a_cluster_without_an_agent_says_nothing_applies_it() {
    let (api, _) = with_work().await;
    let r = api.admin("GET", W, None).await;
    let conditions = r.body["status"]["conditions"].as_array().unwrap().clone();
    assert_eq!(conditions.len(), 1, "{conditions:?}");
    let c = &conditions[0];
    assert_eq!(c["type"], "AgentJoined");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "NoAgent");
    assert_eq!(c["observedGeneration"], 1);
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("klusterlet join") && message.contains("hub accept c1"),
        "{message}"
    );

    let mut changed = good_work();
    changed["spec"]["workload"]["manifests"][0]["data"]["k"] = json!("v2");
    let r = api.admin("PUT", W, Some(changed)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"]["conditions"][0]["observedGeneration"], 2);

    // The agent joins and reports: its status replaces the hub's word.
    api.hub.mark_cluster_joined("c1").await.unwrap();
    let report: api::ManifestWorkStatus = serde_json::from_value(json!({"conditions": [
        {"type": "Applied", "status": "True", "reason": "AppliedManifestWorkComplete",
         "message": "applied", "observedGeneration": 2}
    ]}))
    .unwrap();
    api.hub.put_work_status("c1", "w1", report).await.unwrap();
    let r = api.admin("GET", W, None).await;
    let types: Vec<&str> = r.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Applied"]);

    let mut other = good_work();
    other["metadata"]["name"] = json!("w2");
    let r = api
        .admin("PUT", "/api/v1/clusters/c1/manifestworks/w2", Some(other))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(
        r.body["status"]["conditions"]
            .as_array()
            .is_none_or(|c| c.is_empty()),
        "{}",
        r.body
    );
}
