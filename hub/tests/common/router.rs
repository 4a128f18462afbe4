//! A router on a real SQLite store, driven with `oneshot`: the fixture of the router tests.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use hub::http::{AppState, ClusterInfo, router};
use hub::service::Hub;
use hub::service::authn::Auth;
use serde_json::Value;
use tower::ServiceExt;

pub const TOKEN: &str = "test-admin-token";

/// A router on a fresh SQLite store, driven with `oneshot`.
pub struct Api {
    /// The router.
    pub app: Router,
    /// Its service.
    pub hub: Arc<Hub>,
    _dir: tempfile::TempDir,
}

/// A router with this body limit.
pub async fn api_with_limit(max_body_bytes: usize) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = hub::store::connect(&format!("sqlite://{}", dir.path().join("hub.db").display()))
        .await
        .unwrap();
    let hub = Hub::start(store.clone()).await.unwrap();
    let (auth, _) = Auth::init(
        store.clone(),
        Some(TOKEN),
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let state = AppState {
        hub: hub.clone(),
        auth: Arc::new(auth),
        cluster_info: Arc::new(ClusterInfo {
            server: "https://127.0.0.1:1".into(),
            certificate_authority_data: "PEM".into(),
            ca_hash: "sha256:00".into(),
        }),
        max_body_bytes,
    };
    Api {
        app: router(state),
        hub,
        _dir: dir,
    }
}

/// A router with the default body limit.
pub async fn api() -> Api {
    api_with_limit(500 * 1024).await
}

/// An answer: status, headers, the body as JSON (or a JSON string of its text).
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: axum::http::HeaderMap,
    /// The body.
    pub body: Value,
}

impl Api {
    /// Where its SQLite file lives.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// Any request.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        content_type: Option<&str>,
        body: impl Into<Body>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .app
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request as the admin, with an optional JSON body.
    pub async fn admin(&self, method: &str, uri: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        match body {
            Some(b) => {
                self.call(
                    method,
                    uri,
                    Some("application/json"),
                    b.to_string(),
                    &[("authorization", &auth)],
                )
                .await
            }
            None => {
                self.call(
                    method,
                    uri,
                    None,
                    Body::empty(),
                    &[("authorization", &auth)],
                )
                .await
            }
        }
    }

    /// A request as the admin with a raw body.
    pub async fn raw(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        self.call(
            method,
            uri,
            Some(content_type),
            body,
            &[("authorization", &auth)],
        )
        .await
    }
}

/// The documented error body with this status and code.
pub fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert_eq!(r.body["code"], code, "body: {}", r.body);
    assert!(
        r.body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "body: {}",
        r.body
    );
}

/// A router whose hub also runs its controllers (lease expiry, placement, sets), as `hub
/// serve` does.
pub async fn api_with_controllers() -> Api {
    let api = api().await;
    hub::controllers::start(&api.hub);
    api
}

impl Api {
    /// GETs `uri` (as the admin) until `done` holds for its body, blocking on the hub's
    /// change index between tries; fails after `within`.
    pub async fn until(
        &self,
        uri: &str,
        within: std::time::Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + within;
        let mut index = 0u64;
        loop {
            let sep = if uri.contains('?') { '&' } else { '?' };
            let r = self
                .admin("GET", &format!("{uri}{sep}index={index}&wait=2s"), None)
                .await;
            if r.status == StatusCode::OK && done(&r.body) {
                return r.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{uri} did not get there within {within:?}; last answer {}: {}",
                r.status,
                r.body
            );
            index = r
                .headers
                .get("x-hub-index")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
}
