//! Why a command failed, its exit code, and the one line a person reads about it.

use api::ClientError;

/// Why a command failed; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or bad local input (an unreadable file, mixed documents): exit 2.
    #[error("{0}")]
    Usage(String),
    /// The hub answered with an error or could not be reached: exit 1 or 4.
    #[error(transparent)]
    Client(Box<ClientError>),
    /// The request cannot be carried out, decided on this side (a selector matching no
    /// cluster): exit 1.
    #[error("{0}")]
    Refused(String),
    /// A wait ran out: exit 3.
    #[error("{0}")]
    TimedOut(String),
    /// A work failed on a cluster (Degraded at its current generation): exit 1.
    #[error("{0}")]
    Failed(String),
    /// The errors were printed already as they happened; exit with this code.
    #[error("failed (exit code {0})")]
    Reported(i32),
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError::Client(Box::new(e))
    }
}

impl CliError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Client(e) => e.exit_code(),
            CliError::Refused(_) | CliError::Failed(_) => 1,
            CliError::TimedOut(_) => 3,
            CliError::Reported(code) => *code,
        }
    }

    /// Prints the error as one line on stderr (nothing for `Reported`) and returns the
    /// exit code.
    pub fn report(&self) -> i32 {
        match self {
            CliError::Client(e) => eprintln!("{}", describe_client_error(e, None)),
            CliError::Reported(_) => {}
            other => eprintln!("error: {other}"),
        }
        self.exit_code()
    }
}

/// One line for a client error, kubectl style: `Error from server (NotFound): ...` when
/// the hub answered, `error: ...` otherwise. `about` names the object concerned.
pub fn describe_client_error(err: &ClientError, about: Option<&str>) -> String {
    let about = about.map(|a| format!("{a}: ")).unwrap_or_default();
    match err {
        ClientError::Api { status, body } => {
            let reason = if body.code == "unknown" {
                format!("HTTP {}", status.as_u16())
            } else {
                camel_case(&body.code)
            };
            let mut line = format!("Error from server ({reason}): {about}{}", body.message);
            if let Some(fields) = body.details.as_ref().and_then(|d| d.as_array()) {
                let fields: Vec<String> = fields
                    .iter()
                    .filter_map(|f| {
                        let field = f.get("field")?.as_str()?;
                        let message = f.get("message")?.as_str()?;
                        Some(format!("{field}: {message}"))
                    })
                    // The message often is the one field's error already.
                    .filter(|f| !body.message.contains(f.as_str()))
                    .collect();
                if !fields.is_empty() {
                    line.push_str(&format!(" ({})", fields.join("; ")));
                }
            }
            if matches!(status.as_u16(), 401 | 403) {
                line.push_str(
                    " (check --token, HUB_TOKEN or the token in the client config: --config, HUB_CONFIG, <data-dir>/client.yaml)",
                );
            }
            line
        }
        ClientError::Transport { url, source } => {
            // reqwest's own message repeats the URL; its causes say what happened.
            let why = match std::error::Error::source(source) {
                Some(cause) => error_chain(cause),
                None => source.to_string(),
            };
            let mut line = format!("error: {about}cannot reach the hub at {url}: {why}");
            if why.contains("UnknownIssuer") || why.contains("unknown issuer") {
                line.push_str(
                    " (the hub's certificate is not signed by a CA this client trusts: pass                      --ca-file with the hub's CA, or use the client.yaml `hub serve` wrote,                      which carries it: --config FILE or HUB_CONFIG)",
                );
            }
            line
        }
        other => format!("error: {about}{other}"),
    }
}

/// An error and its sources, joined by `: `, without repeating a message its cause
/// already contains.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        let msg = e.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// `not_found` → `NotFound`.
fn camel_case(code: &str) -> String {
    code.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::ErrorBody;
    use reqwest::StatusCode;

    fn api_error(status: u16, code: &str, message: &str) -> ClientError {
        ClientError::Api {
            status: StatusCode::from_u16(status).unwrap(),
            body: ErrorBody {
                code: code.into(),
                message: message.into(),
                details: None,
            },
        }
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CliError::Refused("x".into()).exit_code(), 1);
        assert_eq!(CliError::TimedOut("x".into()).exit_code(), 3);
        assert_eq!(CliError::Failed("x".into()).exit_code(), 1);
        assert_eq!(
            CliError::from(api_error(404, "not_found", "x")).exit_code(),
            1
        );
        assert_eq!(
            CliError::from(api_error(409, "conflict", "x")).exit_code(),
            1
        );
        assert_eq!(
            CliError::from(api_error(401, "unauthorized", "x")).exit_code(),
            4
        );
        assert_eq!(
            CliError::from(api_error(403, "forbidden", "x")).exit_code(),
            4
        );
        assert_eq!(
            CliError::from(api_error(503, "unavailable", "x")).exit_code(),
            4
        );
    }

    #[test]
    fn server_errors_read_like_kubectl() {
        let e = api_error(404, "not_found", "manifestwork \"w\" not found");
        assert_eq!(
            describe_client_error(&e, None),
            "Error from server (NotFound): manifestwork \"w\" not found"
        );
        let e = ClientError::Api {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: ErrorBody {
                code: "invalid".into(),
                message: "the work is invalid".into(),
                details: Some(serde_json::json!([
                    {"field": "spec.workload.manifests[0].kind", "message": "is required"}
                ])),
            },
        };
        assert_eq!(
            describe_client_error(&e, Some("manifestwork \"w\" (cluster c1)")),
            "Error from server (Invalid): manifestwork \"w\" (cluster c1): the work is invalid (spec.workload.manifests[0].kind: is required)"
        );
    }
}
