//! Every request counted by route, method and status, and timed
//! (`hub_http_requests_total`, `hub_http_request_duration_seconds`).
//!
//! A series is looked up in the recorder once and kept: building its labels and finding it
//! in the recorder for every request cost 2.4 % of the hub's CPU under a stream of creates
//! (docs/benchmarks.md). The label values come from bounded sets, so the kept series (and
//! the recorder's) cannot grow without end whatever clients send: routes are the router's
//! patterns (or `unmatched`), a method outside HTTP's standard ones is `other`, and a
//! status is one of the few the hub answers.

use std::collections::HashMap;
use std::sync::{LazyLock, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use metrics::{Counter, Histogram};

/// The series kept so far: by route, then (method, status) → the counter and the timer.
type Series = HashMap<String, Vec<(&'static str, u16, Counter, Histogram)>>;

static SERIES: LazyLock<RwLock<Series>> = LazyLock::new(Default::default);

/// A request being counted and timed, from the edge middleware's start to its answer.
pub(super) struct Tracked {
    route: Option<MatchedPath>,
    method: &'static str,
    start: Instant,
}

impl Tracked {
    /// Starts timing `req`.
    pub(super) fn start(req: &Request) -> Tracked {
        Tracked {
            route: req.extensions().get::<MatchedPath>().cloned(),
            method: method_label(req.method()),
            start: Instant::now(),
        }
    }

    /// Counts and times the request by its answer.
    pub(super) fn finish(self, resp: &Response) {
        let route = self.route.as_ref().map_or("unmatched", |p| p.as_str());
        let (counter, timer) = series(route, self.method, resp.status().as_u16());
        counter.increment(1);
        timer.record(self.start.elapsed().as_secs_f64());
    }
}

/// The method's label: its name for HTTP's standard methods, else `other` (a client may
/// send any token as a method, and each would otherwise be a series of its own).
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    STANDARD
        .iter()
        .find(|(m, _)| m == method)
        .map_or("other", |(_, name)| name)
}

/// The counter and the timer of a route, method and status, registered on first use.
fn series(route: &str, method: &'static str, status: u16) -> (Counter, Histogram) {
    let kept = |series: &Series| {
        series.get(route).and_then(|v| {
            v.iter()
                .find(|s| s.0 == method && s.1 == status)
                .map(|s| (s.2.clone(), s.3.clone()))
        })
    };
    if let Some(found) = SERIES.read().ok().as_deref().and_then(kept) {
        return found;
    }
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    let counter = metrics::counter!("hub_http_requests_total", &labels);
    let timer = metrics::histogram!("hub_http_request_duration_seconds", &labels[..2]);
    if let Ok(mut series) = SERIES.write()
        && kept(&series).is_none()
    {
        series.entry(route.to_string()).or_default().push((
            method,
            status,
            counter.clone(),
            timer.clone(),
        ));
    }
    (counter, timer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_ones_share_one_label() {
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(method_label(&Method::TRACE), "TRACE");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
    }
}
