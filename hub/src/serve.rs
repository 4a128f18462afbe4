//! Serving the router over TLS on our own accept loop.
//!
//! What a generic server does not do for us, and why it matters here:
//! * **A connection cap below the descriptor limit.** Every connection holds a file
//!   descriptor; when the process runs out, the database pool cannot open a file and the
//!   accept loop spins on `EMFILE`. Connections beyond the cap are accepted and closed at
//!   once (not left in the kernel's backlog), or make room by evicting the connection that
//!   has waited longest without a request in flight.
//! * **Timeouts for peers that never get to a request**: the TLS handshake and the first
//!   request header must each arrive within the header timeout, and a connection with no
//!   request in flight is closed after the idle timeout. Agents park blocking queries on
//!   their HTTP/2 connection, so a connection with a request in flight is never idle.
//! * **`TCP_NODELAY`** on every accepted socket: with Nagle's algorithm and the peer's
//!   delayed ACK, a response written in two segments waited ~40 ms for the second.
//! * **Errors that an HTTP/2 client can read**: a handler that answers without reading the
//!   request body (404, 401, 413) used to drop the body first, and h2 then reset the stream
//!   with `CANCEL`, often before the client had read the answer. The body left over is
//!   drained (within a budget) before answering, and what is beyond the budget is held
//!   until the answer is sent, so the reset that follows is `NO_ERROR` (RFC 9113 §8.1).

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, oneshot, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Descriptors kept free of connections: the database pool (SQLite opens three files per
/// connection, Postgres one socket each), the listener, the runtime's epoll and event
/// descriptors, log files and the files read at start.
pub const FD_HEADROOM: u64 = 128;

/// How much of a request body nobody read is drained before answering, at least.
const DRAIN_MIN_BYTES: usize = 1024 * 1024;

/// How long draining a body nobody read may take before the answer goes out anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection asked to close (evicted, idle, shutting down) may take to finish
/// the response it is writing before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// HTTP/2 pings on connections with nothing to send, so a peer that vanished (a powered-off
/// agent, a dropped NAT mapping) frees its connection within interval + timeout.
const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// At most one warning about refused connections per this long.
const WARN_EVERY: Duration = Duration::from_secs(5);

/// Connection limits and timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time for the TLS handshake, and for each request header to arrive.
    pub header_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// The router's body limit: the drain budget is twice this.
    pub max_body_bytes: usize,
}

/// The connection cap when none is configured, and the limit it derives from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The process's open-file limit (soft, after raising it to the hard limit).
    pub fd_limit: u64,
    /// The largest cap that leaves [`FD_HEADROOM`] descriptors free.
    pub max_connections: usize,
}

impl FdBudget {
    /// Raises the soft open-file limit to the hard one (as Go's runtime does: the soft
    /// default of 1024 is far below the 10,000 agents a hub serves), then derives the cap.
    pub fn from_process() -> std::io::Result<FdBudget> {
        let fd_limit = match rlimit::increase_nofile_limit(rlimit::INFINITY) {
            Ok(raised) => raised,
            Err(e) => {
                // Not fatal: serve within the soft limit as it is.
                tracing::warn!(error = %e, "could not raise the open-file limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE)?.0
            }
        };
        Ok(FdBudget::for_limit(fd_limit))
    }

    /// The cap that leaves [`FD_HEADROOM`] of `fd_limit` descriptors free (at least 1).
    pub fn for_limit(fd_limit: u64) -> FdBudget {
        // An unlimited or huge limit still needs a number a semaphore can hold.
        let usable = fd_limit.saturating_sub(FD_HEADROOM).clamp(1, 1 << 20);
        FdBudget {
            fd_limit,
            max_connections: usable as usize,
        }
    }
}

/// A server accepting connections; [`shutdown`](Self::shutdown) stops it.
pub struct Server {
    phase: watch::Sender<Phase>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    accept_loop: tokio::task::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Stop accepting; let connections finish what is in flight.
    Draining,
    /// Drop every connection now.
    Stopped,
}

impl Server {
    /// Serves `app` over TLS on `listener` until [`shutdown`](Self::shutdown).
    pub fn start(
        listener: std::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        app: Router,
        limits: Limits,
    ) -> std::io::Result<Server> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        // The series exist from the start, so a dashboard shows 0 rather than nothing.
        metrics::counter!("hub_connections_refused_total").increment(0);
        metrics::counter!("hub_connections_evicted_total").increment(0);
        let (phase, _) = watch::channel(Phase::Serving);
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let shared = Arc::new(Shared {
            app,
            tls: TlsAcceptor::from(tls),
            http: http_builder(limits.header_timeout),
            limits,
            conns: Registry::default(),
            phase: phase.subscribe(),
        });
        let accept_loop = tokio::spawn(accept_loop(listener, shared, slots.clone()));
        Ok(Server {
            phase,
            slots,
            max_connections: limits.max_connections,
            accept_loop,
        })
    }

    /// Stops accepting connections and lets in-flight requests finish within `grace`;
    /// connections still open after it are dropped.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.phase.send(Phase::Draining);
        let _ = self.accept_loop.await;
        let all = u32::try_from(self.max_connections).unwrap_or(u32::MAX);
        if tokio::time::timeout(grace, self.slots.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.max_connections - self.slots.available_permits(),
                "connections still open after the shutdown grace; closing them"
            );
            let _ = self.phase.send(Phase::Stopped);
            let _ = tokio::time::timeout(CLOSE_GRACE, self.slots.acquire_many(all)).await;
        }
    }
}

/// What every connection task shares.
struct Shared {
    app: Router,
    tls: TlsAcceptor,
    http: auto::Builder<TokioExecutor>,
    limits: Limits,
    conns: Registry,
    phase: watch::Receiver<Phase>,
}

fn http_builder(header_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also closes an HTTP/1 keep-alive connection that sends nothing for this long:
        // hyper starts the timer as soon as it waits for the next request's header.
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, slots: Arc<Semaphore>) {
    let mut phase = shared.phase.clone();
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            _ = phase.wait_for(|p| *p != Phase::Serving) => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: accept fails at once again,
                // so pause instead of spinning; connections wait in the backlog meanwhile.
                refusals.accept_failed(&e);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = configure(&tcp) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let Some(slot) = take_slot(&slots, &shared.conns).await else {
            refusals.refused(shared.limits.max_connections);
            drop(tcp);
            continue;
        };
        tokio::spawn(serve_connection(tcp, peer, slot, shared.clone()));
    }
}

/// Socket options for every accepted connection.
pub fn configure(tcp: &TcpStream) -> std::io::Result<()> {
    tcp.set_nodelay(true)
}

/// A free connection slot, or one made free by evicting the connection that has waited
/// longest with no request in flight; `None` when every connection is busy.
async fn take_slot(slots: &Arc<Semaphore>, conns: &Registry) -> Option<OwnedSemaphorePermit> {
    if let Ok(slot) = slots.clone().try_acquire_owned() {
        return Some(slot);
    }
    if !conns.evict_one() {
        return None;
    }
    metrics::counter!("hub_connections_evicted_total").increment(1);
    // An evicted connection with nothing in flight closes at once; one that just got a
    // request finishes it first, and then this connection is refused rather than waiting.
    tokio::time::timeout(Duration::from_millis(200), slots.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
}

/// Counts refused connections and failed accepts, and warns at most every few seconds.
#[derive(Default)]
struct Refusals {
    last_warning: Option<Instant>,
    refused: u64,
    failed: u64,
}

impl Refusals {
    fn refused(&mut self, cap: usize) {
        metrics::counter!("hub_connections_refused_total").increment(1);
        self.refused += 1;
        if self.due() {
            tracing::warn!(
                refused = self.refused,
                max_connections = cap,
                "at the connection cap and every connection is busy: closing new connections (raise --max-connections or the open-file limit)"
            );
            self.refused = 0;
        }
    }

    fn accept_failed(&mut self, error: &std::io::Error) {
        self.failed += 1;
        if self.due() {
            tracing::warn!(error = %error, failed = self.failed, "accepting a connection failed");
            self.failed = 0;
        }
    }

    fn due(&mut self) -> bool {
        let now = Instant::now();
        if self
            .last_warning
            .is_some_and(|t| now.duration_since(t) < WARN_EVERY)
        {
            return false;
        }
        self.last_warning = Some(now);
        true
    }
}

/// The open connections, for eviction.
#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Activity>>>,
    next_id: AtomicU64,
}

impl Registry {
    fn register(&self, activity: Arc<Activity>) -> Registered<'_> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, activity);
        metrics::gauge!("hub_connections_open").increment(1.0);
        Registered { registry: self, id }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the connection to close that has had no request in flight the longest,
    /// preferring one that never sent a request (a slow or stalled handshake or header)
    /// over an idle keep-alive one. Runs only at the cap, so a scan is fine.
    fn evict_one(&self) -> bool {
        let conns = self.lock();
        let victim = conns
            .values()
            .filter(|a| {
                a.in_flight.load(Ordering::Acquire) == 0 && !a.evicted.load(Ordering::Relaxed)
            })
            .min_by_key(|a| {
                (
                    a.served.load(Ordering::Relaxed),
                    a.idle_since_ms.load(Ordering::Relaxed),
                )
            });
        match victim {
            Some(a) => {
                a.evicted.store(true, Ordering::Relaxed);
                a.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

struct Registered<'a> {
    registry: &'a Registry,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
        metrics::gauge!("hub_connections_open").decrement(1.0);
    }
}

/// What a connection is doing, shared between its task, its requests and the registry.
struct Activity {
    epoch: Instant,
    /// Requests whose response has not been sent completely.
    in_flight: AtomicUsize,
    /// A request header arrived on this connection.
    served: AtomicBool,
    /// When `in_flight` last dropped to zero (or the connection opened), in ms since epoch.
    idle_since_ms: AtomicU64,
    evicted: AtomicBool,
    evict: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn mark_idle(&self) {
        self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// When this connection is due to close for idleness if nothing happens before;
    /// `None` while a request is in flight.
    fn idle_deadline(&self, limits: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let allowed = if self.served.load(Ordering::Relaxed) {
            limits.idle_timeout
        } else {
            limits.header_timeout
        };
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(self.epoch + since + allowed)
    }
}

/// One request in flight on a connection, until its response body is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> InFlight {
        activity.served.store(true, Ordering::Relaxed);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.mark_idle();
        }
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
    shared: Arc<Shared>,
) {
    let activity = Arc::new(Activity::new());
    let _registered = shared.conns.register(activity.clone());
    let mut phase = shared.phase.clone();
    let tls = tokio::select! {
        handshake = tokio::time::timeout(shared.limits.header_timeout, shared.tls.accept(tcp)) => {
            match handshake {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
        _ = activity.evict.notified() => return,
        _ = phase.wait_for(|p| *p != Phase::Serving) => return,
    };
    // The header timeout for the first request starts now.
    activity.mark_idle();
    let builder = match tls.get_ref().1.alpn_protocol() {
        Some(b"h2") => shared.http.clone().http2_only(),
        Some(b"http/1.1") => shared.http.clone().http1_only(),
        // No ALPN may still be HTTP/2 with prior knowledge: hyper reads the preface.
        _ => shared.http.clone(),
    };
    let service = {
        let shared = shared.clone();
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            handle(shared.clone(), activity.clone(), peer, req)
        })
    };
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    // Asked to close gracefully (finish in-flight requests, take no new ones)...
    let mut shutting_down = false;
    // ...and dropped at this instant if it has not closed by then.
    let mut drop_at: Option<tokio::time::Instant> = None;
    loop {
        let check = match (drop_at, activity.idle_deadline(&shared.limits)) {
            (Some(at), _) => at,
            (None, Some(idle)) => idle.into(),
            // Busy: look again after a while (a parked blocking query lasts up to a minute).
            (None, None) => tokio::time::Instant::now() + shared.limits.idle_timeout,
        };
        let close = tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = tokio::time::sleep_until(check) => {
                if drop_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                    return;
                }
                let idle = activity
                    .idle_deadline(&shared.limits)
                    .is_some_and(|d| d <= Instant::now());
                if idle {
                    tracing::debug!(%peer, served = activity.served.load(Ordering::Relaxed), "closing an idle connection");
                }
                idle
            }
            _ = activity.evict.notified() => {
                tracing::debug!(%peer, "evicting an idle connection to make room at the connection cap");
                true
            }
            changed = phase.changed() => {
                let now = *phase.borrow_and_update();
                if changed.is_err() || now == Phase::Stopped {
                    return;
                }
                if !shutting_down {
                    // In-flight requests run on; Server::shutdown bounds them by its grace.
                    conn.as_mut().graceful_shutdown();
                    shutting_down = true;
                }
                false
            }
        };
        if close {
            if !activity.served.load(Ordering::Relaxed) {
                // Never sent a request: nothing to finish.
                return;
            }
            if !shutting_down {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            drop_at.get_or_insert(tokio::time::Instant::now() + CLOSE_GRACE);
        }
    }
}

/// One request: the router with the peer address, tracked in flight until its response
/// is sent, with the body the router left unread drained first.
async fn handle(
    shared: Arc<Shared>,
    activity: Arc<Activity>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let in_flight = InFlight::start(&activity);
    let (mut parts, body) = req.into_parts();
    parts.extensions.insert(ConnectInfo(peer));
    let (body, unread) = if body.is_end_stream() {
        (Body::new(body), None)
    } else {
        let (tx, rx) = oneshot::channel();
        (
            Body::new(Returned {
                inner: Some(body),
                unread: Some(tx),
            }),
            Some(rx),
        )
    };
    let resp = shared
        .app
        .clone()
        .oneshot(Request::from_parts(parts, body))
        .await?;
    let held = match unread.and_then(|mut rx| rx.try_recv().ok()) {
        Some(mut rest) => {
            let budget = shared
                .limits
                .max_body_bytes
                .saturating_mul(2)
                .max(DRAIN_MIN_BYTES);
            match tokio::time::timeout(DRAIN_TIMEOUT, drain(&mut rest, budget)).await {
                Ok(true) => None,
                _ => Some(rest),
            }
        }
        None => None,
    };
    Ok(resp.map(|body| {
        Body::new(Tracked {
            inner: body,
            _in_flight: in_flight,
            _request_body: held,
        })
    }))
}

/// Reads and discards `body` up to `budget` bytes; whether it ended within them.
async fn drain(body: &mut Incoming, budget: usize) -> bool {
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if read > budget {
                return false;
            }
        }
    }
    true
}

/// The request body as the router sees it: dropped before its end (a handler that answers
/// without reading it), it goes back to [`handle`] instead of resetting the stream.
struct Returned {
    inner: Option<Incoming>,
    unread: Option<oneshot::Sender<Incoming>>,
}

impl HttpBody for Returned {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(HttpBody::size_hint)
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        if let (Some(body), Some(tx)) = (self.inner.take(), self.unread.take())
            && !body.is_end_stream()
        {
            let _ = tx.send(body);
        }
    }
}

/// A response body that keeps its request counted in flight, and the request body nobody
/// read open, until the response is sent.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
    _request_body: Option<Incoming>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_headroom_below_the_descriptor_limit() {
        assert_eq!(FdBudget::for_limit(256).max_connections, 128);
        assert_eq!(FdBudget::for_limit(20_000).max_connections, 19_872);
        assert_eq!(FdBudget::for_limit(64).max_connections, 1);
        assert_eq!(
            FdBudget::for_limit(rlimit::INFINITY).max_connections,
            1 << 20
        );
    }

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (tcp, _) = listener.accept().await.unwrap();
        assert!(!tcp.nodelay().unwrap(), "the kernel default is Nagle on");
        configure(&tcp).unwrap();
        assert!(tcp.nodelay().unwrap());
        drop(client.await.unwrap());
    }
}
