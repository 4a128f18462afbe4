//! The fleethub agent as a library: `join` a hub, `run` next to (or inside) a managed
//! cluster, print an access `token`, `unjoin`.
//!
//! * [`cli`]: the command line; [`run`]: `klusterlet run`, the agent's loops put together.
//! * [`hub`]: everything between the agent and the hub: its [`hub::identity`] (key,
//!   assertions, the state `join` leaves), [`hub::join`], the [`hub::session`] holding the
//!   access token, the [`hub::lease`] loop and the [`hub::claims`] it reports.
//! * [`work`]: the work controller: [`work::controller`] (following the hub, watches,
//!   resync), [`work::runner`] (queue, backoff), [`work::reconcile`] (one work),
//!   [`work::ledger`] (what each work applied, kept on the managed cluster).
//! * [`apply`]: the apply engine and the update strategies.
//! * [`status`]: readiness, feedback and the conditions reported for a work.
//! * [`telemetry`]: `/metrics`, `/healthz`, `/livez` and `/readyz` (`run --metrics-listen`).
//!
//! Dependencies point one way: `cli` -> `run` -> `work` -> (`hub`, `apply`, `status`);
//! `status` -> `apply`; `hub` and `work` record into `telemetry`, which imports none of
//! them; nothing below imports from above.
#![forbid(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod hub;
pub mod run;
pub mod status;
pub mod telemetry;
pub mod work;

use std::time::Duration;

use tokio::sync::watch;

use api::ClientError;

/// Why a command failed; each kind has its exit code (the same codes as the `hub` CLI).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad flags or bad local input: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The hub answered with an error or could not be reached: exit 1 (4xx other than
    /// 401/403) or 4 (unreachable, 5xx, 401, 403).
    /// (Boxed: a `ClientError` is large and errors travel through every loop.)
    #[error(transparent)]
    Hub(Box<ClientError>),
    /// The hub did not answer in time: exit 4.
    #[error("no answer from the hub at {url} within {after:?}")]
    NoAnswer {
        /// The hub's URL.
        url: String,
        /// How long the call waited.
        after: std::time::Duration,
    },
    /// A recent call for an access token failed and the agent waits before asking again,
    /// so its loops do not hammer a hub that is down: exit 4.
    #[error(
        "not asking the hub for an access token for another {wait:?}: the last attempt failed: {last}"
    )]
    Waiting {
        /// How long until the next attempt.
        wait: std::time::Duration,
        /// The last attempt's failure.
        last: String,
    },
    /// The server at `--hub` is not the hub `--ca-hash` pins (a man in the middle, or the
    /// wrong hash): exit 4, like any other failure to reach the hub safely.
    #[error(
        "the hub's CA does not match --ca-hash: expected {expected}, the server at {server} presented {actual}; refusing to go on (a man in the middle, or a wrong --ca-hash)"
    )]
    CaMismatch {
        /// The server asked.
        server: String,
        /// `--ca-hash`.
        expected: String,
        /// What the server presented.
        actual: String,
    },
    /// The local identity is missing or unusable: exit 1.
    #[error(transparent)]
    Identity(#[from] hub::identity::IdentityError),
    /// The managed cluster could not be read: exit 1.
    #[error(transparent)]
    Claims(#[from] hub::claims::ClaimsError),
    /// Refused on this side or by an admin (a denied join, a data dir holding another
    /// identity): exit 1.
    #[error("{0}")]
    Refused(String),
    /// A wait ran out: exit 3.
    #[error("{0}")]
    TimedOut(String),
    /// The apply engine could not start (discovery of the managed cluster failed): exit 1.
    #[error("managed cluster: {0}")]
    Apply(#[from] apply::ApplyError),
    /// A call to the managed cluster's API failed: exit 1.
    #[error("managed cluster: {0}")]
    Kube(#[from] KubeError),
    /// The agent's ledger could not be read or written: exit 1.
    #[error("managed cluster: {0}")]
    Ledger(#[from] work::ledger::LedgerError),
    /// `--metrics-listen` could not be bound: exit 1.
    #[error("--metrics-listen {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why binding it failed.
        #[source]
        source: std::io::Error,
    },
}

impl From<ClientError> for Error {
    fn from(e: ClientError) -> Self {
        Error::Hub(Box::new(e))
    }
}

impl Error {
    /// The process exit code: 0 ok, 1 refused or denied, 2 usage, 3 timed out, 4 hub
    /// unreachable (or not the pinned hub), 5xx, 401 or 403.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Hub(e) => e.exit_code(),
            Error::CaMismatch { .. } | Error::NoAnswer { .. } | Error::Waiting { .. } => 4,
            Error::Identity(_)
            | Error::Claims(_)
            | Error::Refused(_)
            | Error::Apply(_)
            | Error::Kube(_)
            | Error::Ledger(_)
            | Error::Listen { .. } => 1,
            Error::TimedOut(_) => 3,
        }
    }

    /// Whether the failure looks like an outage of the hub rather than a refusal: no
    /// answer in time, waiting after one, or a hub error [`api::retry::is_transient`]
    /// calls transient.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::NoAnswer { .. } | Error::Waiting { .. } => true,
            Error::Hub(e) => api::retry::is_transient(e),
            _ => false,
        }
    }

    /// The kind of error, as the `error` label of the failure metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Hub(_) => "hub",
            Error::NoAnswer { .. } => "hub_no_answer",
            Error::Waiting { .. } => "hub_waiting",
            Error::CaMismatch { .. } => "hub_ca_mismatch",
            Error::Identity(_) => "identity",
            Error::Claims(_) => "claims",
            Error::Refused(_) => "refused",
            Error::TimedOut(_) => "timed_out",
            Error::Apply(_) | Error::Kube(_) => "cluster",
            Error::Ledger(_) => "ledger",
            Error::Listen { .. } => "listen",
        }
    }
}

/// Sleeps for `delay`, or less when asked to stop; returns whether to stop.
pub(crate) async fn sleep_or_stop(delay: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stop.changed() => true,
    }
}
/// A failed call to a managed cluster's apiserver, as one line: the verb, the resource and
/// the apiserver's own message (kube's `Display` of an API error appends a debug dump of
/// the whole Status, which is what users saw before).
#[derive(Debug)]
pub struct KubeError {
    /// `list`, `patch`, `create`...
    pub verb: &'static str,
    /// `nodes`, `namespaces/open-cluster-management-agent`, `configmaps in namespace x`...
    pub resource: String,
    /// What kube-rs returned.
    pub error: kube::Error,
}

impl KubeError {
    /// The error of `verb` on `resource`.
    pub fn new(verb: &'static str, resource: impl Into<String>, error: kube::Error) -> Self {
        KubeError {
            verb,
            resource: resource.into(),
            error,
        }
    }

    /// The HTTP status the apiserver answered, if it answered.
    pub fn code(&self) -> Option<u16> {
        match &self.error {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        }
    }
}

impl std::fmt::Display for KubeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let KubeError {
            verb,
            resource,
            error,
        } = self;
        match error {
            kube::Error::Api(status) => write!(
                f,
                "{verb} {resource}: {} ({} {})",
                status.message, status.code, status.reason
            ),
            other => write!(f, "{verb} {resource}: {}", Chain(other)),
        }
    }
}

impl std::error::Error for KubeError {
    // The API error's own text is in the message already; its deeper causes (a
    // connection's) are not.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.error {
            kube::Error::Api(_) => None,
            other => std::error::Error::source(other),
        }
    }
}

/// An error with its chain of causes, for messages and logs: `a: b: c`, skipping a cause
/// whose text the message already shows.
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            source = cause.source();
        }
        f.write_str(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(status: u16) -> ClientError {
        ClientError::Api {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            body: api::ErrorBody {
                code: "x".into(),
                message: "m".into(),
                details: None,
            },
        }
    }

    #[test]
    fn exit_codes_follow_the_hub_cli() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::Refused("x".into()).exit_code(), 1);
        assert_eq!(Error::TimedOut("x".into()).exit_code(), 3);
        assert_eq!(Error::from(api_error(409)).exit_code(), 1);
        assert_eq!(Error::from(api_error(401)).exit_code(), 4);
        assert_eq!(Error::from(api_error(403)).exit_code(), 4);
        assert_eq!(Error::from(api_error(503)).exit_code(), 4);
        let mitm = Error::CaMismatch {
            server: "https://h".into(),
            expected: "sha256:aa".into(),
            actual: "sha256:bb".into(),
        };
        assert_eq!(mitm.exit_code(), 4);
        let text = mitm.to_string();
        assert!(
            text.contains("sha256:aa") && text.contains("sha256:bb"),
            "{text}"
        );
    }

    #[test]
    fn chains_show_causes_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {0}")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner(#[source] std::io::Error);
        let e = Outer(Inner(std::io::Error::other("connection refused")));
        assert_eq!(Chain(&e).to_string(), "outer: inner: connection refused");
    }
}
