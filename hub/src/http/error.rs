//! Errors as HTTP responses: the `{"code","message","details"}` body of DESIGN.md, for our
//! own errors and for axum's rejections alike.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::service::Error;

impl Error {
    /// The HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::Malformed(_) => (StatusCode::BAD_REQUEST, "malformed"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::Deleting(_) => (StatusCode::CONFLICT, "deleting"),
            Error::Owned { .. } => (StatusCode::CONFLICT, "owned"),
            Error::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let details = match &self {
            Error::Invalid { fields, .. } => Some(json!(fields)),
            Error::Owned { set, .. } => Some(json!({ "manifestWorkReplicaSet": set })),
            _ => None,
        };
        let message = match &self {
            // 5xx details go to the log, never to the client.
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                self.to_string()
            }
            Error::Unavailable(source) => {
                tracing::error!(error = %source, "database unavailable");
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut body = json!({"code": code, "message": message});
        if let Some(d) = details {
            body["details"] = d;
        }
        let mut resp = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<PathRejection> for Error {
    fn from(r: PathRejection) -> Self {
        Error::Malformed(format!("bad path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Self {
        Error::Malformed(format!("bad query: {}", r.body_text()))
    }
}

/// The JSON 404 for paths no route serves.
pub async fn no_route(uri: axum::http::Uri) -> Error {
    Error::NotFound(format!("no such path: {}", uri.path()))
}

/// The JSON 405 for a method a route does not serve.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    let body = json!({"code": "malformed", "message": format!("{method} is not allowed on {}", uri.path())});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}
