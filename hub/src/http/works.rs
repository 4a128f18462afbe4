//! ManifestWork handlers: extract, authorize, call the service, audit, shape the response.

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
use crate::service::{Error, StoredWorks, WorkQuery, WorkWrite, Written, works};

type WorkPath = Result<Path<(String, String)>, PathRejection>;

fn work_response(
    state: &AppState,
    status: StatusCode,
    index: u64,
    who: &Principal,
    mut work: ManifestWork,
) -> Response {
    if !who.sees_secrets() {
        mask_secrets(state.hub.placeholder_key(), &mut work);
    }
    let etag = work.metadata.resource_version.as_deref().map(works::etag);
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
    let work = if reads { w.work } else { write_receipt(w.work) };
    let status = if w.created {
        StatusCode::CREATED
    } else if work.metadata.deletion_timestamp.is_some() && !w.gone {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    work_response(state, status, index, who, work)
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
        Some(w) => Ok(work_response(&state, StatusCode::OK, index, &who, w)),
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
    let body = work_list_body(&page, state.hub.epoch(), mask)?;
    Ok(respond(
        StatusCode::OK,
        page.index,
        None,
        ([(header::CONTENT_TYPE, "application/json")], body),
    ))
}

/// The JSON of a `ManifestWorkList` from works as stored: the list's envelope around each
/// work's text, most of them as stored (see [`works::listed_json`]), in chunks of about
/// 64 KiB. Parsing 10,000 works and serializing them again took most of a full list's
/// time; chunks rather than one buffer keep the copy in memory the allocator reuses.
fn work_list_body(
    page: &StoredWorks,
    epoch: &str,
    mask: Option<&PlaceholderKey>,
) -> Result<Body, Error> {
    const CHUNK: usize = 64 * 1024;
    let meta = ListMeta {
        continue_: page.continue_.clone(),
        index: page.index,
        epoch: Some(epoch.to_string()),
    };
    let meta = serde_json::to_vec(&meta).map_err(|e| Error::Internal(e.to_string()))?;
    let mut chunks = Vec::new();
    let mut chunk = Vec::with_capacity(CHUNK);
    chunk.extend_from_slice(br#"{"apiVersion":"v1","kind":"ManifestWorkList","metadata":"#);
    chunk.extend_from_slice(&meta);
    chunk.extend_from_slice(br#","items":["#);
    for (i, work) in page.items.iter().enumerate() {
        let text = works::listed_json(work, mask)?;
        if chunk.len() + text.len() + 1 > CHUNK && !chunk.is_empty() {
            chunks.push(Bytes::from(std::mem::replace(
                &mut chunk,
                Vec::with_capacity(CHUNK),
            )));
        }
        if i > 0 {
            chunk.push(b',');
        }
        chunk.extend_from_slice(text.as_bytes());
    }
    chunk.extend_from_slice(b"]}");
    chunks.push(Bytes::from(chunk));
    Ok(Body::from_stream(futures::stream::iter(
        chunks.into_iter().map(Ok::<_, std::convert::Infallible>),
    )))
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
