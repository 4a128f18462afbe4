//! The one error type of the service layer; the HTTP layer turns it into the error body of
//! DESIGN.md.

use api::FieldError;

use crate::store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 `malformed`: the body or a parameter could not be parsed.
    #[error("{0}")]
    Malformed(String),
    /// 401 `unauthorized`: no valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`: valid credentials without the right.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: stale resourceVersion or an object in the way.
    #[error("{0}")]
    Conflict(String),
    /// 409 `owned`: a ManifestWorkReplicaSet keeps this work; change it through the set.
    #[error("{message}")]
    Owned {
        /// What happened.
        message: String,
        /// The set, `<namespace>/<name>`.
        set: String,
    },
    /// 409 `deleting`: the object is being deleted.
    #[error("{0}")]
    Deleting(String),
    /// 412 `precondition_failed`: `If-Match` did not match.
    #[error("{0}")]
    PreconditionFailed(String),
    /// 413 `too_large`.
    #[error("{0}")]
    TooLarge(String),
    /// 422 `invalid`: the fields listed are wrong.
    #[error("{message}")]
    Invalid {
        /// Summary.
        message: String,
        /// Each invalid field.
        fields: Vec<FieldError>,
    },
    /// 503 `unavailable`: the database cannot be reached.
    #[error("the hub's database is unavailable")]
    Unavailable(#[source] StoreError),
    /// 500 `internal`.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    /// A 422 for one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Error::Invalid {
            message: format!("{field}: {message}"),
            fields: vec![FieldError { field, message }],
        }
    }

    /// A 503: the database did not answer in time.
    pub fn timed_out() -> Self {
        Error::Unavailable(StoreError::Database(sqlx::Error::PoolTimedOut))
    }

    /// A 422 for several fields.
    pub fn invalid_fields(fields: Vec<FieldError>) -> Self {
        let message = fields
            .iter()
            .map(|f| format!("{}: {}", f.field, f.message))
            .collect::<Vec<_>>()
            .join("; ");
        Error::Invalid { message, fields }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(_) | StoreError::CommitUnknown(_) => Error::Unavailable(e),
            other => Error::Internal(other.to_string()),
        }
    }
}

/// The service's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
