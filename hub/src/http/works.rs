//! ManifestWork handlers: extract, call the service, shape the response.

use api::{ManifestWork, StatusUpdate};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::extract::{Doc, ListParams, Principal};
use super::{AppState, respond};
use crate::service::{Error, WorkQuery, WorkWrite, works};

type WorkPath = Path<(String, String)>;

fn work_response(status: StatusCode, index: u64, work: &ManifestWork) -> Response {
    let etag = work.metadata.resource_version.as_deref().map(works::etag);
    respond(status, index, etag, Json(work))
}

fn write_response(state: &AppState, w: WorkWrite) -> Response {
    let status = if w.created {
        StatusCode::CREATED
    } else if w.work.metadata.deletion_timestamp.is_some() && !w.gone {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    work_response(status, state.hub.index(), &w.work)
}

/// `PUT /api/v1/clusters/{cluster}/manifestworks/{name}`: create or replace.
pub async fn put(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<WorkPath, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
    Doc(work): Doc<ManifestWork>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let if_match = headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let w = state.hub.put_work(&cluster, &name, work, if_match).await?;
    Ok(write_response(&state, w))
}

/// `GET /api/v1/clusters/{cluster}/manifestworks/{name}`, blocking with `index`.
pub async fn get(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<WorkPath, axum::extract::rejection::PathRejection>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let Query(params) = params?;
    let (work, index) = state.hub.get_work(&cluster, &name, params.block()?).await?;
    match work {
        Some(w) => Ok(work_response(StatusCode::OK, index, &w)),
        None => {
            let err = Error::NotFound(format!(
                "manifestwork {name:?} not found in cluster {cluster:?}"
            ));
            Ok(respond(StatusCode::NOT_FOUND, index, None, err))
        }
    }
}

/// `GET /api/v1/clusters/{cluster}/manifestworks`, blocking with `index`.
pub async fn list(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Error> {
    let Path(cluster) = path?;
    let Query(params) = params?;
    list_with(state, Some(cluster), params).await
}

/// `GET /api/v1/manifestworks`: across clusters, with `clusterSelector`.
pub async fn list_all(
    State(state): State<AppState>,
    _who: Principal,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params?;
    list_with(state, None, params).await
}

async fn list_with(
    state: AppState,
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
        ignore_status_changes: false,
    };
    let list = state.hub.list_works(query).await?;
    Ok(respond(
        StatusCode::OK,
        list.metadata.index,
        None,
        Json(list),
    ))
}

/// `DELETE /api/v1/clusters/{cluster}/manifestworks/{name}`: 200 when gone, 202 while the
/// agent cleans up.
pub async fn delete(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<WorkPath, axum::extract::rejection::PathRejection>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let w = state.hub.delete_work(&cluster, &name).await?;
    Ok(write_response(&state, w))
}

/// `PUT .../manifestworks/{name}/status`: the agent's report.
pub async fn put_status(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<WorkPath, axum::extract::rejection::PathRejection>,
    Doc(update): Doc<StatusUpdate>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let work = state
        .hub
        .put_work_status(&cluster, &name, update.status)
        .await?;
    Ok(work_response(StatusCode::OK, state.hub.index(), &work))
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
    _who: Principal,
    path: Result<WorkPath, axum::extract::rejection::PathRejection>,
    params: Result<Query<FinalizerParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Error> {
    let Path((cluster, name)) = path?;
    let Query(params) = params?;
    let finalizer = params.name.filter(|n| !n.is_empty()).ok_or_else(|| {
        Error::Malformed("name of the finalizer is required: ?name=klusterlet/cleanup".into())
    })?;
    let w = state
        .hub
        .remove_work_finalizer(&cluster, &name, &finalizer)
        .await?;
    Ok(work_response(StatusCode::OK, state.hub.index(), &w.work).into_response())
}
