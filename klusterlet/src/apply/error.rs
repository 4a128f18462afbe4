//! Why a manifest could not be applied, in Kubernetes' own words, and which apiserver
//! answers may pass by themselves.

use std::fmt;
use std::sync::Arc;

use super::REQUEST_TIMEOUT;

/// Why a manifest could not be applied, in Kubernetes' own words. Two errors are equal
/// when their reason, message and retryability are (the source is not compared).
#[derive(Debug, Clone)]
pub struct ApplyError {
    /// Kubernetes' reason (`Forbidden`, `Invalid`, `Conflict`, `NotFound`...) or ours
    /// (`UnknownKind`, `CrdNotEstablished`, `Unreachable`).
    pub reason: String,
    /// Kubernetes' message, e.g. `deployments.apps "x" is forbidden: User "y" cannot create
    /// resource "deployments" in API group "apps" in the namespace "z"`.
    pub message: String,
    /// Whether trying again may help (network errors, 5xx, a CRD not yet established,
    /// an unknown kind whose CRD may come later); `false` for Invalid, Forbidden...
    pub retryable: bool,
    /// The failure of kube-rs it came from, when it did not answer with a Status (a
    /// connection's failure): its causes are in `message` already, and in `source()`.
    source: Option<Arc<kube::Error>>,
}

impl PartialEq for ApplyError {
    fn eq(&self, other: &Self) -> bool {
        self.reason == other.reason
            && self.message == other.message
            && self.retryable == other.retryable
    }
}

impl Eq for ApplyError {}

impl ApplyError {
    /// An error with this reason and message.
    pub fn new(reason: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        ApplyError {
            reason: reason.into(),
            message: message.into(),
            retryable,
            source: None,
        }
    }

    /// A failed call to the apiserver: Kubernetes' reason and message when it answered,
    /// `Unreachable` (retryable) when it could not be reached.
    pub fn from_kube(err: kube::Error) -> Self {
        match err {
            kube::Error::Api(status) => {
                if let Some(message) = super::conflict::conflict_message(&status) {
                    // Retryable as any 409; the ServerSideApply strategy makes it final
                    // when not forced.
                    return ApplyError::new("Conflict", message, true);
                }
                let code = status.code;
                let reason = if status.reason.is_empty() {
                    reason_for_code(code).to_string()
                } else {
                    status.reason.clone()
                };
                let message = if status.message.is_empty() {
                    format!("the server answered {code} {reason}")
                } else {
                    status.message.clone()
                };
                let retryable = retryable_apiserver_code(code) && !needs_a_person(&status);
                ApplyError::new(reason, message, retryable)
            }
            kube::Error::SerdeError(e) => ApplyError::new(
                "InternalError",
                format!("unreadable answer from the apiserver: {e}"),
                true,
            ),
            kube::Error::BuildRequest(e) => ApplyError::new("Invalid", e.to_string(), false),
            other => ApplyError {
                source: Some(Arc::new(other)),
                ..ApplyError::new("Unreachable", String::new(), true)
            }
            .with_chain(),
        }
    }

    /// The message of an `Unreachable` error: its source with every cause.
    fn with_chain(mut self) -> Self {
        if let Some(source) = &self.source {
            self.message = chain(source.as_ref());
        }
        self
    }

    pub(super) fn timeout(what: &str) -> Self {
        ApplyError::new(
            "Timeout",
            format!("{what}: no answer from the apiserver within {REQUEST_TIMEOUT:?}"),
            true,
        )
    }

    pub(super) fn invalid(ordinal: i32, message: impl fmt::Display) -> Self {
        ApplyError::new("Invalid", format!("manifest {ordinal}: {message}"), false)
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for ApplyError {
    // An apiserver's answer is all in `message`; a connection's failure keeps its chain.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Failures whose status code says "try again" but which no retry soon will mend: a
/// namespace that does not exist (404 on the namespace itself, not the object) and a
/// manifest whose fields do not fit the kind's schema (the apiserver answers 500 "failed
/// to create typed patch object", e.g. for `data: {a: 1}` in a ConfigMap). They make the
/// work Degraded at once, so a `hub wait` fails in seconds instead of after
/// `--degraded-after`; the resync still tries them again each period, so a namespace
/// created later heals the work.
fn needs_a_person(status: &kube::core::Status) -> bool {
    let missing_namespace = status.code == 404
        && status
            .details
            .as_ref()
            .is_some_and(|d| d.kind == "namespaces");
    let schema_mismatch = status.code == 500
        && status
            .message
            .contains("failed to create typed patch object");
    missing_namespace || schema_mismatch
}

/// Whether an apiserver answer with this HTTP status may pass by itself (the
/// klusterlet's rule for the managed cluster; a hub error's is `api::retry`).
fn retryable_apiserver_code(code: u16) -> bool {
    match code {
        // The apiserver, an admission webhook or etcd in trouble; too many requests; a
        // credential being rotated; a missing namespace that may come; a conflict with a
        // concurrent writer.
        500.. | 429 | 408 | 401 | 404 | 409 | 410 => true,
        // Forbidden, Invalid, BadRequest, MethodNotAllowed, too large...: a person must act.
        _ => false,
    }
}

fn reason_for_code(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// An error and its sources, `: `-separated, each cause once.
pub(super) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// One apiserver call, bounded in time, its error in Kubernetes' words.
pub(super) async fn call<T>(
    r: &impl fmt::Display,
    what: &str,
    request: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, ApplyError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(ApplyError::from_kube),
        Err(_) => Err(ApplyError::timeout(&format!("{what} {r}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_errors_keep_their_words() {
        let status = kube::core::Status {
            status: Some(kube::core::response::StatusSummary::Failure),
            code: 403,
            message: "deployments.apps \"x\" is forbidden: User \"u\" cannot patch resource \"deployments\" in API group \"apps\" in the namespace \"n\"".into(),
            metadata: None,
            reason: "Forbidden".into(),
            details: None,
        };
        let err = ApplyError::from_kube(kube::Error::Api(Box::new(status.clone())));
        assert_eq!(err.reason, "Forbidden");
        assert_eq!(err.message, status.message);
        assert!(!err.retryable);
        for (code, retryable) in [
            (500, true),
            (503, true),
            (429, true),
            (422, false),
            (400, false),
            (404, true),
        ] {
            let s = kube::core::Status {
                code,
                reason: String::new(),
                message: String::new(),
                ..status.clone()
            };
            let err = ApplyError::from_kube(kube::Error::Api(Box::new(s)));
            assert_eq!(err.retryable, retryable, "{code}");
            assert!(!err.reason.is_empty() && !err.message.is_empty());
        }
        // A missing namespace and a manifest that does not fit the schema need a person.
        let missing_namespace = kube::core::Status {
            code: 404,
            reason: "NotFound".into(),
            message: "namespaces \"gone\" not found".into(),
            details: Some(kube::core::response::StatusDetails {
                name: "gone".into(),
                group: String::new(),
                kind: "namespaces".into(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: 0,
            }),
            ..status.clone()
        };
        assert!(!ApplyError::from_kube(kube::Error::Api(Box::new(missing_namespace))).retryable);
        let typed_patch = kube::core::Status {
            code: 500,
            reason: "InternalError".into(),
            message: "failed to create typed patch object (/v1, Kind=ConfigMap): .data.a: expected string, got &value.valueUnstructured{Value:1}".into(),
            ..status.clone()
        };
        assert!(!ApplyError::from_kube(kube::Error::Api(Box::new(typed_patch))).retryable);
        // A server-side apply conflict names each field and its manager.
        let conflict = kube::core::Status {
            code: 409,
            reason: "Conflict".into(),
            message: "Apply failed with 1 conflict: conflict with \"kubectl\" using v1: .data.k"
                .into(),
            details: Some(kube::core::response::StatusDetails {
                causes: vec![kube::core::response::StatusCause {
                    reason: "FieldManagerConflict".into(),
                    message: "conflict with \"kubectl\" using v1".into(),
                    field: ".data.k".into(),
                }],
                name: "cm".into(),
                group: String::new(),
                kind: "configmaps".into(),
                uid: String::new(),
                retry_after_seconds: 0,
            }),
            ..status.clone()
        };
        let err = ApplyError::from_kube(kube::Error::Api(Box::new(conflict)));
        assert_eq!(err.reason, "Conflict");
        assert!(
            err.message.contains(".data.k (field manager \"kubectl\")"),
            "{}",
            err.message
        );
    }

    #[test]
    fn an_unreachable_apiserver_keeps_the_source() {
        let io = std::io::Error::other("connection refused");
        let err = ApplyError::from_kube(kube::Error::Service(Box::new(io)));
        assert_eq!(err.reason, "Unreachable");
        assert!(err.retryable);
        assert!(
            err.message.contains("connection refused"),
            "{}",
            err.message
        );
        let source = std::error::Error::source(&err).expect("the kube error is kept");
        assert!(source.to_string().contains("connection refused") || source.source().is_some());
        // Shown once, as before.
        assert_eq!(crate::Chain(&err).to_string(), err.to_string());
    }
}
