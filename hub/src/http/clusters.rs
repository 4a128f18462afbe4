//! ManagedCluster handlers.

use std::collections::BTreeMap;

use api::ManagedCluster;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::extract::{Doc, ListParams, Principal};
use super::{AppState, respond};
use crate::service::Error;

fn cluster_response(status: StatusCode, index: u64, c: &ManagedCluster) -> Response {
    let etag = c
        .metadata
        .resource_version
        .as_deref()
        .map(crate::service::works::etag);
    respond(status, index, etag, Json(c))
}

/// `GET /api/v1/clusters`, with `labelSelector` and blocking `index`.
pub async fn list(
    State(state): State<AppState>,
    _who: Principal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params?;
    let list = state
        .hub
        .list_clusters(&params.selector()?, params.block()?)
        .await?;
    Ok(respond(
        StatusCode::OK,
        list.metadata.index,
        None,
        Json(list),
    ))
}

/// `GET /api/v1/clusters/{cluster}`.
pub async fn get(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    let Query(params) = params?;
    match state.hub.get_cluster(&name, params.block()?).await? {
        (Some(c), index) => Ok(cluster_response(StatusCode::OK, index, &c)),
        (None, index) => Ok(respond(
            StatusCode::NOT_FOUND,
            index,
            None,
            Error::NotFound(format!("cluster {name:?} not found")),
        )),
    }
}

/// `PUT /api/v1/clusters/{cluster}` (admin): create or update labels, taints, acceptance.
pub async fn put(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<Path<String>, PathRejection>,
    Doc(cluster): Doc<ManagedCluster>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    let existed = state.hub.get_cluster(&name, None).await?.0.is_some();
    let c = state.hub.put_cluster(&name, cluster).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(cluster_response(status, state.hub.index(), &c))
}

/// `PUT /api/v1/clusters/{cluster}/labels` (admin): `{"k": "v", "gone": null}`.
pub async fn put_labels(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<Path<String>, PathRejection>,
    Doc(labels): Doc<BTreeMap<String, Option<String>>>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    let c = state.hub.set_cluster_labels(&name, labels).await?;
    Ok(cluster_response(StatusCode::OK, state.hub.index(), &c))
}

/// Query of a cluster deletion.
#[derive(Debug, Deserialize)]
pub struct DeleteParams {
    /// Remove the records now, whatever the agent did.
    pub force: Option<String>,
}

/// `DELETE /api/v1/clusters/{cluster}[?force=true]`: 200 when gone, 202 while its agent
/// cleans up its works.
pub async fn delete(
    State(state): State<AppState>,
    _who: Principal,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    let Query(params) = params?;
    let force = match params.force.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Error::Malformed(format!(
                "force must be true or false, not {other:?}"
            )));
        }
    };
    let d = state.hub.delete_cluster(&name, force).await?;
    let status = if d.removed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(respond(status, state.hub.index(), None, Json(d)))
}
