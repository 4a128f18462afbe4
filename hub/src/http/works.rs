//! ManifestWork handlers: extract, authorize, call the service, audit, shape the response.

use std::borrow::Cow;

use api::{ErrorBody, ListMeta, ManifestWork, StatusUpdate};
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::extract::{Doc, ListParams, Principal, Source};
use super::{AppState, caller, list_response, respond};
use crate::service::access::{Action, write_receipt};
use crate::service::executor::may_set_executor;
use crate::service::secrets::{PlaceholderKey, mask_secrets, reject_placeholders};
use crate::service::{Error, StoredWork, StoredWorks, WorkQuery, WorkWrite, Written, works};

type WorkPath = Result<Path<(String, String)>, PathRejection>;

/// A work's answer, Secret data masked for a caller without the `secrets` verb. `stored`,
/// the work's JSON as the write just stored it, is sent as is when nothing is masked
/// (instead of serializing the work again).
fn work_response(
    state: &AppState,
    status: StatusCode,
    index: u64,
    who: &Principal,
    mut work: ManifestWork,
    stored: Option<std::sync::Arc<str>>,
) -> Response {
    let etag = work.metadata.resource_version.as_deref().map(works::etag);
    if who.sees_secrets() {
        if let Some(json) = stored {
            let body = (
                [(header::CONTENT_TYPE, "application/json")],
                Bytes::copy_from_slice(json.as_bytes()),
            );
            return respond(status, index, etag, body);
        }
    } else {
        mask_secrets(state.hub.placeholder_key(), &mut work);
    }
    respond(status, index, etag, Json(work))
}

/// `reads`: whether the caller may read the work; else it gets a receipt without content.
/// `X-Hub-Index` is the write's own index, not the hub's index read afterwards.
fn write_response(
    state: &AppState,
    who: &Principal,
    written: Written<WorkWrite>,
    reads: bool,
) -> Response {
    let Written { value: w, index } = written;
    let (work, stored) = if reads {
        (w.work, w.stored)
    } else {
        (write_receipt(w.work), None)
    };
    let status = if w.created {
        StatusCode::CREATED
    } else if work.metadata.deletion_timestamp.is_some() && !w.gone {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    work_response(state, status, index, who, work, stored)
}

/// Whether `who`, already allowed to write `cluster`'s works, may also read them.
async fn reads(state: &AppState, who: &Principal, cluster: &str) -> Result<bool, Error> {
    match state.hub.authorize(who, cluster, Action::Read).await {
        Ok(()) => Ok(true),
        Err(Error::Forbidden(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

fn target(cluster: &str, name: &str) -> String {
    format!("clusters/{cluster}/manifestworks/{name}")
}

/// Query of a PUT.
#[derive(Debug, Deserialize)]
pub struct PutParams {
    /// `All`: check the work and answer it as a read would show it (Secret data masked for
    /// a token without the `secrets` verb), storing nothing. `hub diff` compares with it.
    #[serde(rename = "dryRun")]
    pub dry_run: Option<String>,
}

/// `PUT /api/v1/clusters/{cluster}/manifestworks/{name}`: create or replace; with
/// `?dryRun=All` only check.
pub async fn put(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: WorkPath,
    params: Result<Query<PutParams>, QueryRejection>,
    headers: HeaderMap,
    Doc(work): Doc<ManifestWork>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let Query(params) = params?;
    let dry_run = match params.dry_run.as_deref().filter(|v| !v.is_empty()) {
        None => false,
        Some("All") => true,
        Some(other) => {
            return Err(Error::Malformed(format!(
                "dryRun={other:?}: the only value is All"
            )));
        }
    };
    state
        .hub
        .authorize(&who, &cluster, Action::WriteWorks)
        .await?;
    reject_placeholders(&work)?;
    if dry_run {
        let work = state.hub.check_work(&cluster, &name, work)?;
        return Ok(work_response(
            &state,
            StatusCode::OK,
            state.hub.index(),
            &who,
            work,
            None,
        ));
    }
    let reads = reads(&state, &who, &cluster).await?;
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let by = caller(&who, from);
    let rights = works::WriterRights {
        reads,
        executor: may_set_executor(&who),
    };
    let w = state
        .hub
        .put_work_for(&cluster, &name, work, if_match, rights, Some(by))
        .await?;
    Ok(write_response(&state, &who, w, reads))
}

/// `GET /api/v1/clusters/{cluster}/manifestworks/{name}`, blocking with `index`.
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    path: WorkPath,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let Query(params) = params?;
    state.hub.authorize(&who, &cluster, Action::Read).await?;
    let read = state.hub.get_work(&cluster, &name, params.block()?).await?;
    let index = read.index;
    match read.data {
        Some(w) => Ok(work_response(&state, StatusCode::OK, index, &who, w, None)),
        None => {
            // Says whether the hub deleted it: an agent cleans up a deleted work's objects
            // at once, and keeps those of a work the hub never had for its eviction grace.
            let deleted = state.hub.work_deletion(&cluster, &name).await?;
            let body = ErrorBody {
                code: "not_found".into(),
                message: format!("manifestwork {name:?} not found in cluster {cluster:?}"),
                details: deleted.map(|at| json!({ "deleted": true, "deletedAt": at })),
            };
            Ok(respond(StatusCode::NOT_FOUND, index, None, Json(body)))
        }
    }
}

/// Query of a work's history.
#[derive(Debug, Deserialize)]
pub struct HistoryParams {
    /// Most entries (default 100, at most 10,000).
    pub limit: Option<String>,
}

/// `GET /api/v1/clusters/{cluster}/manifestworks/{name}/history`: the work's own entries
/// of the audit log, newest first, for anyone who may read the work (DESIGN.md Security);
/// the whole log stays admin-only. It outlives the work, so a deleted work has one too.
pub async fn history(
    State(state): State<AppState>,
    who: Principal,
    path: WorkPath,
    params: Result<Query<HistoryParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let Query(params) = params?;
    state.hub.authorize(&who, &cluster, Action::Read).await?;
    super::registration::audit_list(
        &state,
        Some(&target(&cluster, &name)),
        params.limit.as_deref(),
    )
    .await
}

/// `GET /api/v1/clusters/{cluster}/manifestworks`, blocking with `index`.
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path(cluster) = path?;
    let Query(params) = params?;
    state.hub.authorize(&who, &cluster, Action::Read).await?;
    list_with(state, who, Some(cluster), params).await
}

/// `GET /api/v1/manifestworks`: across clusters, with `clusterSelector`; filtered to the
/// caller's scope.
pub async fn list_all(
    State(state): State<AppState>,
    who: Principal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params?;
    list_with(state, who, None, params).await
}

async fn list_with(
    state: AppState,
    who: Principal,
    cluster: Option<String>,
    params: ListParams,
) -> Result<Response, Error> {
    let query = WorkQuery {
        cluster,
        selector: params.selector()?,
        cluster_selector: params.cluster_selector()?,
        limit: params.limit()?,
        continue_: params.continue_.clone().filter(|c| !c.is_empty()),
        block: params.block()?,
        // A cluster's agent is not woken by its own status writes.
        ignore_status_changes: matches!(who, Principal::Agent { .. }),
        scope: state.hub.readable_clusters(&who).await?,
    };
    let page = state.hub.list_stored_works(query).await?;
    let mask = (!who.sees_secrets()).then(|| state.hub.placeholder_key());
    let index = page.index;
    let body = work_list_body(page, state.hub.epoch(), mask)?;
    Ok(respond(
        StatusCode::OK,
        index,
        None,
        ([(header::CONTENT_TYPE, "application/json")], body),
    ))
}

/// The JSON of a `ManifestWorkList` from works as stored: the list's envelope around each
/// work's text, most of them as stored (see [`works::listed_json`]), in chunks of about
/// 64 KiB. Parsing 10,000 works and serializing them again took most of a full list's
/// time, so the texts are joined as they are.
///
/// The works that need rewriting (being deleted, Secrets to mask) are rewritten here, so
/// that an error is still a status code; the chunks are then made as the connection takes
/// them ([`ListChunks`]).
fn work_list_body(
    mut page: StoredWorks,
    epoch: &str,
    mask: Option<&PlaceholderKey>,
) -> Result<Body, Error> {
    for work in &mut page.items {
        let rewritten = match works::listed_json(work, mask)? {
            Cow::Owned(text) => Some(text),
            Cow::Borrowed(_) => None,
        };
        if let Some(text) = rewritten {
            work.object = text;
        }
    }
    let meta = ListMeta {
        continue_: page.continue_,
        index: page.index,
        epoch: Some(epoch.to_string()),
    };
    let meta = serde_json::to_vec(&meta).map_err(|e| Error::Internal(e.to_string()))?;
    let mut head = Vec::with_capacity(ListChunks::SIZE);
    head.extend_from_slice(br#"{"apiVersion":"v1","kind":"ManifestWorkList","metadata":"#);
    head.extend_from_slice(&meta);
    head.extend_from_slice(br#","items":["#);
    Ok(Body::from_stream(futures::stream::iter(
        ListChunks::new(head, page.items).map(Ok::<_, std::convert::Infallible>),
    )))
}

/// A list's body, made a chunk at a time as the connection asks for the next (hyper
/// buffers a few hundred KiB per stream). Each work's text is dropped once copied. Built
/// all at once, a list of 10,000 works held its 14 MB twice (works and chunks); made as
/// sent, it holds them once, and takes ~4,500 fresh pages per list instead of ~6,600
/// (docs/benchmarks.md, "Issue 20, target 3").
struct ListChunks {
    /// The envelope up to the first item, not yet sent.
    head: Option<Vec<u8>>,
    /// The works not yet copied into a chunk.
    items: std::vec::IntoIter<StoredWork>,
    /// Whether no work has been copied yet (no comma before the next).
    first: bool,
    /// Whether the closing `]}` went out.
    done: bool,
}

impl ListChunks {
    /// A chunk's size, unless one work's text is larger.
    const SIZE: usize = 64 * 1024;

    /// The chunks of `head` (the envelope up to the first item) and `items`, then `]}`.
    fn new(head: Vec<u8>, items: Vec<StoredWork>) -> Self {
        ListChunks {
            head: Some(head),
            items: items.into_iter(),
            first: true,
            done: false,
        }
    }
}

impl Iterator for ListChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let mut chunk = self
            .head
            .take()
            .unwrap_or_else(|| Vec::with_capacity(Self::SIZE));
        loop {
            let Some(next) = self.items.as_slice().first() else {
                chunk.extend_from_slice(b"]}");
                self.done = true;
                return Some(Bytes::from(chunk));
            };
            if !chunk.is_empty() && chunk.len() + next.object.len() + 1 > Self::SIZE {
                return Some(Bytes::from(chunk));
            }
            let work = self.items.next()?;
            if !std::mem::take(&mut self.first) {
                chunk.push(b',');
            }
            chunk.extend_from_slice(work.object.as_bytes());
        }
    }
}

/// `DELETE /api/v1/clusters/{cluster}/manifestworks/{name}`: 200 when gone, 202 while the
/// agent cleans up.
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: WorkPath,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    state
        .hub
        .authorize(&who, &cluster, Action::WriteWorks)
        .await?;
    let reads = reads(&state, &who, &cluster).await?;
    let w = state
        .hub
        .delete_work(&cluster, &name, Some(caller(&who, from)))
        .await?;
    Ok(write_response(&state, &who, w, reads))
}

/// `PUT .../manifestworks/{name}/status`: the agent's report.
pub async fn put_status(
    State(state): State<AppState>,
    who: Principal,
    path: WorkPath,
    Doc(update): Doc<StatusUpdate>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    state
        .hub
        .authorize(&who, &cluster, Action::AgentWrite)
        .await?;
    let w = state
        .hub
        .put_work_status(&cluster, &name, update.status)
        .await?;
    Ok(work_response(
        &state,
        StatusCode::OK,
        w.index,
        &who,
        w.value.work,
        w.value.stored,
    ))
}

/// Query of the finalizer removal.
#[derive(Debug, Deserialize)]
pub struct FinalizerParams {
    /// The finalizer to remove.
    pub name: Option<String>,
}

/// `DELETE .../manifestworks/{name}/finalizers?name=F`: the agent is done cleaning up.
pub async fn remove_finalizer(
    State(state): State<AppState>,
    who: Principal,
    path: WorkPath,
    params: Result<Query<FinalizerParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let Query(params) = params?;
    state
        .hub
        .authorize(&who, &cluster, Action::AgentWrite)
        .await?;
    let finalizer = params.name.filter(|n| !n.is_empty()).ok_or_else(|| {
        Error::Malformed("name of the finalizer is required: ?name=klusterlet/cleanup".into())
    })?;
    let w = state
        .hub
        .remove_work_finalizer(&cluster, &name, &finalizer)
        .await?;
    Ok(work_response(
        &state,
        StatusCode::OK,
        w.index,
        &who,
        w.value.work,
        w.value.stored,
    ))
}

/// Query of the summary: the list parameters and an optional work name.
#[derive(Debug, Deserialize)]
pub struct SummaryParams {
    /// Only works of this name.
    pub name: Option<String>,
    /// The usual list parameters.
    #[serde(flatten)]
    pub list: ListParams,
}

/// `GET /api/v1/manifestworks/summary`: per work name across the caller's clusters,
/// blocking with `index` like a list.
pub async fn summary(
    State(state): State<AppState>,
    who: Principal,
    params: Result<Query<SummaryParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(SummaryParams { name, list: params }) = params?;
    let query = WorkQuery {
        cluster: None,
        selector: params.selector()?,
        cluster_selector: params.cluster_selector()?,
        limit: 0,
        continue_: None,
        block: params.block()?,
        ignore_status_changes: false,
        scope: state.hub.readable_clusters(&who).await?,
    };
    let body = state.hub.summarize_works(query, name.as_deref()).await?;
    Ok(list_response(&state, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(name: &str, pad: usize) -> StoredWork {
        StoredWork {
            cluster: "c1".into(),
            name: name.into(),
            object: json!({"metadata": {"name": name}, "pad": "x".repeat(pad)}).to_string(),
        }
    }

    fn chunks_of(items: Vec<StoredWork>) -> Vec<Bytes> {
        ListChunks::new(br#"{"items":["#.to_vec(), items).collect()
    }

    /// The chunks join into the list's JSON with every work once, in order, whatever the
    /// works' sizes against the chunk size: none, small ones across many chunks, one larger
    /// than a chunk (a chunk of its own), and sizes that fill a chunk to the byte.
    #[test]
    fn list_chunks_join_into_the_whole_list() {
        // A first work whose text ends exactly at the chunk size.
        let exact = ListChunks::SIZE - br#"{"items":["#.len() - stored("fill", 0).object.len();
        let cases: Vec<Vec<(String, usize)>> = vec![
            vec![],
            (0..500).map(|i| (format!("w{i:03}"), 300)).collect(),
            vec![
                ("a".into(), 10),
                ("huge".into(), 3 * ListChunks::SIZE),
                ("b".into(), 10),
            ],
            vec![("fill".into(), exact), ("next".into(), 0)],
        ];
        for case in cases {
            let items: Vec<StoredWork> = case.iter().map(|(n, p)| stored(n, *p)).collect();
            let sizes: Vec<usize> = items.iter().map(|w| w.object.len()).collect();
            let chunks = chunks_of(items);
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let list: serde_json::Value = serde_json::from_slice(&joined).unwrap();
            let names: Vec<&str> = list["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["metadata"]["name"].as_str().unwrap())
                .collect();
            let want: Vec<&str> = case.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, want);
            // A chunk outgrows the size only to hold one work that does by itself.
            let largest = sizes.iter().copied().max().unwrap_or(0);
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len() <= ListChunks::SIZE.max(largest + 3)),
                "chunk sizes {:?}",
                chunks.iter().map(|c| c.len()).collect::<Vec<_>>()
            );
        }
    }
}
