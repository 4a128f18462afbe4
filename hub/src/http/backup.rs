//! `GET /api/v1/backup`: a consistent copy of the hub's SQLite database, streamed while
//! the hub serves (as `etcdctl snapshot save` or `consul snapshot save` take theirs
//! through the server); and the index epoch on every response.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::io::AsyncReadExt;

use super::extract::{Principal, Source};
use super::{AppState, caller, respond};
use crate::service::Error;
use crate::service::backup::check_epoch;

/// The media type of a SQLite database file.
const SQLITE_MEDIA_TYPE: &str = "application/vnd.sqlite3";
/// Bytes per chunk of the streamed copy.
const CHUNK: usize = 256 * 1024;

/// `GET /api/v1/backup`: admins only; audited as `hub.backup`. 409 on a Postgres hub.
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
) -> Result<Response, Error> {
    let snapshot = state.hub.backup(&who, caller(&who, from)).await?;
    let file = tokio::fs::File::from_std(snapshot.file);
    let body = Body::from_stream(futures::stream::unfold(file, |mut file| async move {
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    }));
    let mut resp = respond(StatusCode::OK, snapshot.index, None, body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SQLITE_MEDIA_TYPE),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(snapshot.bytes));
    h.insert("x-hub-schema", HeaderValue::from(snapshot.schema));
    Ok(resp)
}

/// Admits a request by its `epoch` parameter, for the edge middleware (`super::edge`), which
/// sends `ours` as `X-Hub-Epoch` with every response ([`with_epoch`]): a blocking read whose
/// `epoch` is not this database's is answered at once (its `index` and `wait` are dropped),
/// because its `index` belongs to another history (a restore happened) and waiting for
/// changes past it could sit on changes it never saw. A malformed epoch is refused.
pub(super) fn admit_epoch(ours: &str, req: &mut Request) -> Result<(), Error> {
    let Some(query) = req.uri().query() else {
        return Ok(());
    };
    let mut theirs = None;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "epoch" {
            theirs = Some(v.into_owned());
        }
    }
    if let Some(theirs) = theirs.filter(|t| !t.is_empty()) {
        check_epoch(&theirs)?;
        if theirs != ours {
            strip_index(req);
        }
    }
    Ok(())
}

/// `resp` with `X-Hub-Epoch: epoch`.
pub(super) fn with_epoch(mut resp: Response, epoch: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(epoch) {
        resp.headers_mut().insert("x-hub-epoch", v);
    }
    resp
}

/// Drops `index` (and `wait`) from the query: the read answers at once, from scratch.
fn strip_index(req: &mut Request) {
    let uri = req.uri().clone();
    let Some(query) = uri.query() else { return };
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k != "index" && k != "wait")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(kept)
        .finish();
    let path_and_query = if query.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{query}", uri.path())
    };
    let mut parts = uri.into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(new) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = new;
        }
    }
}
