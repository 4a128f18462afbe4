//! What `klusterlet run --metrics-listen ADDR` serves: `/metrics` (Prometheus text, the
//! same `metrics` recorder the hub uses), `/healthz`, `/livez` and `/readyz`.
//!
//! * `/healthz`: 200 while the agent's loops run and the hub was reached recently (a
//!   token minted, a lease renewed or the works listed within three lease intervals, at
//!   least a minute); 503 otherwise, with the reason. A readiness probe: an agent cut off
//!   from its hub keeps its workloads running, but is not doing its job.
//! * `/livez`: 200 while the agent's loops run. A liveness probe: restarting an agent
//!   because the hub is down would not bring the hub back.
//! * `/readyz`: 200 once the agent has read the first complete list of its works from the
//!   hub and reconciled every work of it once (applied, or failed and retrying), and while
//!   `/healthz` holds; 503 with the reason before (a fresh or restarted agent) and when cut
//!   off from the hub.
//!
//! The metrics (names are the contract for dashboards):
//! * `klusterlet_reconciles_total`: reconciles of works run;
//! * `klusterlet_reconcile_failures_total{error}`: of those, failed, by kind of error
//!   (`hub`, `hub_no_answer`, `cluster`, `ledger`...);
//! * `klusterlet_reconcile_duration_seconds`: how long a reconcile took;
//! * `klusterlet_manifest_failures_total{reason}`: manifests whose apply failed, by
//!   Kubernetes' reason (`Forbidden`, `NotFound`, `Invalid`, `Conflict`, ...) or ours
//!   (`UnknownKind`, `Unreachable`, `CrdNotEstablished`); a reason outside that known set
//!   (a webhook's own) counts as `Other`;
//! * `klusterlet_apply_duration_seconds`: how long one manifest's apply call took (the
//!   server-side apply or update and what it reads first), failed or not;
//! * `klusterlet_queue_depth`: works waiting in the runner's queue (not the running ones);
//! * `klusterlet_hub_requests_total{operation,outcome}`: calls to the hub, `operation`
//!   one of `list_works`, `get_work`, `put_status`, `remove_finalizer`, `renew_lease`,
//!   `mint_token`; `outcome` `ok`, `error` (the hub answered with an error) or
//!   `unreachable` (no answer);
//! * `klusterlet_hub_request_duration_seconds{operation}`: how long they took (a blocking
//!   `list_works` takes up to `--watch-wait`);
//! * `klusterlet_last_lease_renewal_timestamp_seconds`: unix time of the last lease
//!   renewal the hub accepted;
//! * `klusterlet_works`: works of this cluster the agent holds (its latest list);
//! * `klusterlet_hub_connected`: 1 while the last call to the hub succeeded, else 0.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// Counter: reconciles run.
pub const RECONCILES: &str = "klusterlet_reconciles_total";
/// Counter: reconciles failed, label `error`.
pub const RECONCILE_FAILURES: &str = "klusterlet_reconcile_failures_total";
/// Histogram: seconds a reconcile took.
pub const RECONCILE_DURATION: &str = "klusterlet_reconcile_duration_seconds";
/// Gauge: works in the agent's latest list.
pub const WORKS: &str = "klusterlet_works";
/// Gauge: 1 while the last call to the hub succeeded.
pub const HUB_CONNECTED: &str = "klusterlet_hub_connected";
/// Counter: manifests whose apply failed, label `reason`.
pub const MANIFEST_FAILURES: &str = "klusterlet_manifest_failures_total";
/// Histogram: seconds one manifest's apply call took.
pub const APPLY_DURATION: &str = "klusterlet_apply_duration_seconds";
/// Gauge: works waiting in the runner's queue.
pub const QUEUE_DEPTH: &str = "klusterlet_queue_depth";
/// Counter: calls to the hub, labels `operation` and `outcome`.
pub const HUB_REQUESTS: &str = "klusterlet_hub_requests_total";
/// Histogram: seconds a call to the hub took, label `operation`.
pub const HUB_REQUEST_DURATION: &str = "klusterlet_hub_request_duration_seconds";
/// Gauge: unix seconds of the last lease renewal the hub accepted.
pub const LAST_LEASE: &str = "klusterlet_last_lease_renewal_timestamp_seconds";

/// Counts one manifest's apply call.
pub fn applied(took: Duration) {
    metrics::histogram!(APPLY_DURATION).record(took.as_secs_f64());
}

/// The failure reasons the `reason` label may take; any other is `Other`. A webhook may
/// answer with a reason of its own: the label stays a short, known word (no message, no
/// unbounded series).
const KNOWN_REASONS: &[&str] = &[
    "AlreadyExists",
    "BadRequest",
    "Conflict",
    "CrdNotEstablished",
    "Expired",
    "Forbidden",
    "Gone",
    "InternalError",
    "Invalid",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "RequestEntityTooLarge",
    "ServerTimeout",
    "ServiceUnavailable",
    "Timeout",
    "TooManyRequests",
    "Unauthorized",
    "UnknownKind",
    "Unreachable",
    "UnsupportedMediaType",
];

/// The `reason` label of a failure.
pub fn reason_label(reason: &str) -> &'static str {
    KNOWN_REASONS
        .iter()
        .find(|k| **k == reason)
        .copied()
        .unwrap_or("Other")
}

/// Counts one manifest whose apply failed, by reason.
pub fn manifest_failed(reason: &str) {
    metrics::counter!(MANIFEST_FAILURES, "reason" => reason_label(reason)).increment(1);
}

/// Runs one call to the hub and counts it by `operation` and outcome.
pub async fn hub_call<T>(
    operation: &'static str,
    call: impl Future<Output = Result<T, api::ClientError>>,
) -> Result<T, api::ClientError> {
    let started = std::time::Instant::now();
    let result = call.await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(api::ClientError::Api { .. }) => "error",
        Err(_) => "unreachable",
    };
    metrics::counter!(HUB_REQUESTS, "operation" => operation, "outcome" => outcome).increment(1);
    metrics::histogram!(HUB_REQUEST_DURATION, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    result
}

/// Records a lease renewal the hub accepted, now.
pub fn lease_renewed() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    metrics::gauge!(LAST_LEASE).set(now.as_secs_f64());
}

/// Records how many works wait in the runner's queue.
pub fn queue_depth(depth: usize) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

/// Counts one reconcile: its duration, and its failure by kind.
pub fn reconciled(took: Duration, failure: Option<&'static str>) {
    metrics::counter!(RECONCILES).increment(1);
    metrics::histogram!(RECONCILE_DURATION).record(took.as_secs_f64());
    if let Some(kind) = failure {
        metrics::counter!(RECONCILE_FAILURES, "error" => kind).increment(1);
    }
}

/// The process-wide Prometheus recorder, installed on first use (without it the
/// `metrics` macros record nothing, which is what an agent without `--metrics-listen`
/// wants).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(RECONCILE_DURATION.into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                ],
            )
            .expect("static buckets are valid")
            .set_buckets_for_metric(
                Matcher::Full(APPLY_DURATION.into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ],
            )
            .expect("static buckets are valid")
            .set_buckets_for_metric(
                Matcher::Full(HUB_REQUEST_DURATION.into()),
                &[
                    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    120.0,
                ],
            )
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (tests); then ours only renders zeros.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Whether the agent is healthy, and why not: asked on each `/healthz`, `/livez` and
/// `/readyz`.
pub trait Health: Send + Sync + 'static {
    /// `Err(why)` when the agent's loops stopped.
    fn alive(&self) -> Result<(), String>;
    /// `Err(why)` when the loops stopped or the hub was not reached recently.
    fn healthy(&self) -> Result<(), String>;
    /// `Err(why)` until the first list of works was read and reconciled, and whenever
    /// [`healthy`](Health::healthy) fails.
    fn ready(&self) -> Result<(), String>;
}

/// The router of the metrics port; it never binds ([`serve`] does).
pub fn router(health: Arc<dyn Health>) -> Router {
    recorder();
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Binds `addr` (before anything else starts, so a taken port fails the start), and
/// installs the recorder.
///
/// The recorder must be in place before the first metric: a count recorded without it is
/// lost for good. Installed when the metrics port was first served, from a task of its
/// own, it was sometimes not there yet when the agent's first list, status report and
/// reconcile were counted (building it calibrates a clock, up to ~200 ms on a busy
/// machine), and `/metrics` never showed them.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Listen { addr, source })?;
    recorder();
    Ok(listener)
}

/// Serves the metrics port on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    health: Arc<dyn Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving /metrics, /healthz, /livez and /readyz");
    if let Err(e) = axum::serve(listener, router(health))
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "the metrics port failed");
    }
}

async fn render_metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        recorder().render(),
    )
        .into_response()
}

async fn healthz(State(health): State<Arc<dyn Health>>) -> Response {
    answer(health.healthy())
}

async fn livez(State(health): State<Arc<dyn Health>>) -> Response {
    answer(health.alive())
}

async fn readyz(State(health): State<Arc<dyn Health>>) -> Response {
    answer(health.ready())
}

fn answer(result: Result<(), String>) -> Response {
    match result {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    struct Fixed(Result<(), String>);

    impl Health for Fixed {
        fn alive(&self) -> Result<(), String> {
            Ok(())
        }
        fn healthy(&self) -> Result<(), String> {
            self.0.clone()
        }
        fn ready(&self) -> Result<(), String> {
            self.healthy()
                .and(Err("the first list of works was not reconciled yet".into()))
        }
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[test]
    fn failure_reasons_are_known_words() {
        assert_eq!(reason_label("Forbidden"), "Forbidden");
        assert_eq!(reason_label("UnknownKind"), "UnknownKind");
        assert_eq!(reason_label("denied by policy web-42: see ticket"), "Other");
    }

    #[tokio::test]
    async fn healthz_says_why_not() {
        let sick = router(Arc::new(Fixed(Err(
            "the hub was last reached 5m ago".into()
        ))));
        let (status, body) = get(sick.clone(), "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("5m ago"), "{body}");
        assert_eq!(get(sick.clone(), "/livez").await.0, StatusCode::OK);
        let (status, body) = get(sick, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("5m ago"), "{body}");
        let well = router(Arc::new(Fixed(Ok(()))));
        assert_eq!(get(well.clone(), "/healthz").await.0, StatusCode::OK);
        let (status, body) = get(well, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not reconciled yet"), "{body}");
    }
}
