//! What `klusterlet run --metrics-listen ADDR` serves: `/metrics` (Prometheus text, the
//! same `metrics` recorder the hub uses), `/healthz` and `/livez`.
//!
//! * `/healthz`: 200 while the agent's loops run and the hub was reached recently (a
//!   token minted, a lease renewed or the works listed within three lease intervals, at
//!   least a minute); 503 otherwise, with the reason. A readiness probe: an agent cut off
//!   from its hub keeps its workloads running, but is not doing its job.
//! * `/livez`: 200 while the agent's loops run. A liveness probe: restarting an agent
//!   because the hub is down would not bring the hub back.
//!
//! The metrics (names are the contract for dashboards):
//! * `klusterlet_reconciles_total`: reconciles of works run;
//! * `klusterlet_reconcile_failures_total{error}`: of those, failed, by kind of error
//!   (`hub`, `hub_no_answer`, `cluster`, `ledger`...);
//! * `klusterlet_reconcile_duration_seconds`: how long a reconcile took;
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
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (tests); then ours only renders zeros.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Whether the agent is healthy, and why not: asked on each `/healthz` and `/livez`.
pub trait Health: Send + Sync + 'static {
    /// `Err(why)` when the agent's loops stopped.
    fn alive(&self) -> Result<(), String>;
    /// `Err(why)` when the loops stopped or the hub was not reached recently.
    fn healthy(&self) -> Result<(), String>;
}

/// The router of the metrics port; it never binds ([`serve`] does).
pub fn router(health: Arc<dyn Health>) -> Router {
    recorder();
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .with_state(health)
}

/// Binds `addr` (before anything else starts, so a taken port fails the start).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Listen { addr, source })
}

/// Serves the metrics port on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    health: Arc<dyn Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let addr = listener.local_addr().ok();
    tracing::info!(addr = ?addr, "serving /metrics, /healthz and /livez");
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

    #[tokio::test]
    async fn healthz_says_why_not() {
        let sick = router(Arc::new(Fixed(Err(
            "the hub was last reached 5m ago".into()
        ))));
        let (status, body) = get(sick.clone(), "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("5m ago"), "{body}");
        assert_eq!(get(sick, "/livez").await.0, StatusCode::OK);
        let well = router(Arc::new(Fixed(Ok(()))));
        assert_eq!(get(well, "/healthz").await.0, StatusCode::OK);
    }
}
