//! The REST API v1: router, shared state, system endpoints, serving over TLS.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::service::authn::Auth;
use crate::service::{Caller, Hub};

mod backup;
mod clusters;
pub mod error;
pub mod extract;
mod fleet;
mod openapi;
mod registration;
mod tracked;
mod works;

pub use api::ClusterInfo;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The service.
    pub hub: Arc<Hub>,
    /// Token verification.
    pub auth: Arc<Auth>,
    /// Served at `/api/v1/cluster-info`.
    pub cluster_info: Arc<ClusterInfo>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

/// A response with the change index (`X-Hub-Index`) and, for single objects, the `ETag`.
pub fn respond(
    status: StatusCode,
    index: u64,
    etag: Option<String>,
    body: impl IntoResponse,
) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    let mut index = HeaderValue::from(index);
    // "Never indexed" in HTTP/2's header compression: a value new with nearly every
    // answer only churns the connection's HPACK table (~2 KiB each of 10,000 agents).
    index.set_sensitive(true);
    h.insert("x-hub-index", index);
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
        h.insert(axum::http::header::ETAG, tag);
    }
    resp
}

/// A list's answer: its index in `X-Hub-Index` (and `metadata.index`) and its index epoch
/// in `metadata.epoch`, the value the epoch middleware sends as `X-Hub-Epoch`, so that a
/// list kept without its headers still says which history its index belongs to.
fn list_response<T: serde::Serialize>(state: &AppState, mut list: api::List<T>) -> Response {
    list.metadata.epoch = Some(state.hub.epoch().to_string());
    respond(StatusCode::OK, list.metadata.index, None, Json(list))
}

/// Who writes, for the audit entry that commits with the write.
fn caller(who: &extract::Principal, source: String) -> Caller {
    Caller {
        actor: who.actor(),
        source,
    }
}

/// The process-wide Prometheus recorder (one per process, shared by every router in it).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("hub_http_request_duration_seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                    30.0, 120.0, 300.0,
                ],
            )
            .expect("static buckets are valid");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (tests); then ours only renders zeros.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Builds the router. It never binds: tests drive it with `oneshot`, `serve` binds.
pub fn router(state: AppState) -> Router {
    metrics_handle();
    let api = Router::new()
        .route("/cluster-info", get(cluster_info))
        .route("/openapi.json", get(openapi::serve))
        .route("/clusters", get(clusters::list))
        .route(
            "/clusters/{cluster}",
            get(clusters::get)
                .put(clusters::put)
                .delete(clusters::delete),
        )
        .route("/clusters/{cluster}/labels", put(clusters::put_labels))
        .route("/clusters/{cluster}/manifestworks", get(works::list))
        .route(
            "/clusters/{cluster}/manifestworks/{name}",
            get(works::get).put(works::put).delete(works::delete),
        )
        .route(
            "/clusters/{cluster}/manifestworks/{name}/status",
            put(works::put_status).layer(DefaultBodyLimit::max(status_body_limit(
                state.max_body_bytes,
            ))),
        )
        .route(
            "/clusters/{cluster}/manifestworks/{name}/history",
            get(works::history),
        )
        .route(
            "/clusters/{cluster}/manifestworks/{name}/finalizers",
            axum::routing::delete(works::remove_finalizer),
        )
        .route("/manifestworks", get(works::list_all))
        .route("/manifestworks/summary", get(works::summary))
        .route("/clusters/{cluster}/revoke", post(clusters::revoke))
        .route("/clusters/{cluster}/lease", put(clusters::lease))
        .route(
            "/clusters/{cluster}/credentials",
            post(clusters::credentials),
        )
        .route(
            "/tokens",
            post(registration::create_token).get(registration::list_tokens),
        )
        .route(
            "/tokens/{id}",
            axum::routing::delete(registration::revoke_token),
        )
        .route(
            "/registrations",
            post(registration::register).get(registration::list_registrations),
        )
        .route("/registrations/{id}", get(registration::get_registration))
        .route("/registrations/{id}/accept", post(registration::accept))
        .route("/registrations/{id}/deny", post(registration::deny))
        .route("/audit", get(registration::audit))
        .route("/backup", get(backup::get))
        .route("/placements", get(fleet::list_all::<api::fleet::Placement>))
        .route("/placements/preview", post(fleet::preview))
        .route(
            "/namespaces/{ns}/placements",
            get(fleet::list_in::<api::fleet::Placement>),
        )
        .route(
            "/namespaces/{ns}/placements/{name}",
            get(fleet::get::<api::fleet::Placement>)
                .put(fleet::put::<api::fleet::Placement>)
                .delete(fleet::delete_placement),
        )
        .route(
            "/namespaces/{ns}/placements/{name}/decisions",
            get(fleet::decisions),
        )
        .route(
            "/namespaces/{ns}/placements/{name}/explain",
            get(fleet::explain),
        )
        .route(
            "/manifestworkreplicasets",
            get(fleet::list_all::<api::fleet::ManifestWorkReplicaSet>),
        )
        .route(
            "/namespaces/{ns}/manifestworkreplicasets",
            get(fleet::list_in::<api::fleet::ManifestWorkReplicaSet>),
        )
        .route(
            "/namespaces/{ns}/manifestworkreplicasets/{name}",
            get(fleet::get::<api::fleet::ManifestWorkReplicaSet>)
                .put(fleet::put::<api::fleet::ManifestWorkReplicaSet>)
                .delete(fleet::delete_set),
        );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .route("/version", get(version))
        .nest("/api/v1", api)
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(state.max_body_bytes))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(state.clone(), edge))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Every request's way in and out: counts and times it, refuses a NUL in its URI, admits
/// it by its index epoch, and sends ours (`X-Hub-Epoch`) with the answer.
///
/// One middleware rather than one per concern: each `from_fn` layer boxes its own future
/// and the next service's for every request, and 10,000 agents each hold a blocking read
/// parked in the hub all the time (~2.7 KiB per agent less; docs/benchmarks.md). It sits
/// outside the panic catcher, so a panic's 500 is counted and carries the epoch too.
async fn edge(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let tracked = tracked::Tracked::start(&req);
    let epoch = state.hub.epoch().to_string();
    let resp = match refuse_nul(&req).and_then(|()| backup::admit_epoch(&epoch, &mut req)) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    };
    let resp = backup::with_epoch(resp, &epoch);
    tracked.finish(&resp);
    resp
}

/// Refuses a NUL character (`%00`) anywhere in the path or the query with a 400. No name,
/// id, selector or token may hold one, and Postgres cannot even compare text with one: the
/// query fails, which used to surface as a 503.
fn refuse_nul(req: &Request) -> Result<(), crate::service::Error> {
    let uri = req.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        return Err(crate::service::Error::Malformed(
            "the path or query holds a NUL character (%00)".into(),
        ));
    }
    Ok(())
}

/// How much larger than a work its status may be. An agent reports per manifest its
/// identity, four or five conditions with messages and its feedback values: ~1.3 KiB for a
/// ConfigMap of a few hundred bytes, so a work of 500 small manifests under the work limit
/// had a status over it, which the hub refused (413) and the agent retried for ever.
const STATUS_BODY_FACTOR: usize = 16;

/// The body limit of a status write for a work body limit of `max_work_bytes`.
pub fn status_body_limit(max_work_bytes: usize) -> usize {
    max_work_bytes.saturating_mul(STATUS_BODY_FACTOR)
}

/// A panic is a bug of ours: log it, answer the usual 500 body, keep serving.
fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    crate::service::Error::Internal(format!("panic: {detail}")).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

/// The hub's version, for `hub version` (as kube-apiserver's `/version`, served to anyone:
/// it tells no more than the TLS handshake's behaviour does).
async fn version() -> axum::Json<api::ServerVersion> {
    axum::Json(api::ServerVersion::current())
}

/// Ready when the database answers and writes commit.
async fn readyz(State(state): State<AppState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.hub.ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok").into_response(),
        Ok(Err(e)) => e.into_response(),
        Err(_) => crate::service::Error::timed_out().into_response(),
    }
}

async fn render_metrics(State(state): State<AppState>) -> Response {
    if let Ok(n) = state.hub.count_works().await {
        metrics::gauge!("hub_works_stored").set(n as f64);
    }
    if let Ok(counts) = state.hub.count_clusters_by_availability().await {
        for (status, n) in counts {
            metrics::gauge!("hub_clusters", "available" => status).set(n as f64);
        }
    }
    metrics::gauge!("hub_blocking_queries_waiting").set(state.hub.waiters() as f64);
    metrics::gauge!("hub_change_index").set(state.hub.index() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        metrics_handle().render(),
    )
        .into_response()
}

async fn cluster_info(State(state): State<AppState>) -> Json<ClusterInfo> {
    Json((*state.cluster_info).clone())
}
