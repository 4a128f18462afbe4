//! ManagedCluster handlers, including the agent's lease and credentials.

use std::collections::BTreeMap;

use api::{CredentialRequest, LeaseRenewal, ManagedCluster};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

use super::extract::{Doc, ListParams, Principal, Source};
use super::{AppState, caller, list_response, respond};
use crate::service::Error;
use crate::service::access::Action;
use crate::service::works::etag;

type ClusterPath = Result<Path<String>, PathRejection>;

fn cluster_response(status: StatusCode, index: u64, c: &ManagedCluster) -> Response {
    let etag = c.metadata.resource_version.as_deref().map(etag);
    respond(status, index, etag, Json(c))
}

/// `GET /api/v1/clusters`, with `labelSelector` and blocking `index`; filtered to the
/// caller's scope.
pub async fn list(
    State(state): State<AppState>,
    who: Principal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params?;
    let list = state
        .hub
        .list_clusters_for(&who, &params.selector()?, params.block()?)
        .await?;
    Ok(list_response(&state, list))
}

/// `GET /api/v1/clusters/{cluster}`.
pub async fn get(
    State(state): State<AppState>,
    who: Principal,
    path: ClusterPath,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    let Query(params) = params?;
    state.hub.authorize(&who, &name, Action::Read).await?;
    let read = state.hub.read_cluster(&name, params.block()?).await?;
    match read.data {
        Some(c) => Ok(cluster_response(StatusCode::OK, read.index, &c)),
        None => Ok(respond(
            StatusCode::NOT_FOUND,
            read.index,
            None,
            Error::NotFound(format!("cluster {name:?} not found")),
        )),
    }
}

/// `PUT /api/v1/clusters/{cluster}` (admin): create or update labels, taints, acceptance.
pub async fn put(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: ClusterPath,
    Doc(cluster): Doc<ManagedCluster>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    who.require_admin()?;
    let w = state
        .hub
        .put_cluster(&name, cluster, Some(caller(&who, from)))
        .await?;
    let status = if w.value.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(cluster_response(status, w.index, &w.value.cluster))
}

/// `PUT /api/v1/clusters/{cluster}/labels` (admin): `{"k": "v", "gone": null}`.
pub async fn put_labels(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: ClusterPath,
    Doc(labels): Doc<BTreeMap<String, Option<String>>>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    who.require_admin()?;
    let w = state
        .hub
        .set_cluster_labels(&name, labels, Some(caller(&who, from)))
        .await?;
    Ok(cluster_response(StatusCode::OK, w.index, &w.value))
}

/// Query of a cluster deletion.
#[derive(Debug, Deserialize)]
pub struct DeleteParams {
    /// Remove the records now, whatever the agent did.
    pub force: Option<String>,
}

/// `DELETE /api/v1/clusters/{cluster}[?force=true]` (admin): 200 when gone, 202 while its
/// agent cleans up its works.
pub async fn delete(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: ClusterPath,
    params: Result<Query<DeleteParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    let Query(params) = params?;
    who.require_admin()?;
    let force = match params.force.as_deref() {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(Error::Malformed(format!(
                "force must be true or false, not {other:?}"
            )));
        }
    };
    let w = state
        .hub
        .delete_cluster(&name, force, Some(caller(&who, from)))
        .await?;
    let status = if w.value.removed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(respond(status, w.index, None, Json(w.value)))
}

/// `POST /api/v1/clusters/{cluster}/revoke` (admin): the agent's credentials stop working
/// at once; nothing is deleted.
pub async fn revoke(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: ClusterPath,
) -> Result<Response, Error> {
    let Path(name) = path?;
    who.require_admin()?;
    let w = state
        .hub
        .revoke_cluster(&name, Some(caller(&who, from)))
        .await?;
    Ok(cluster_response(StatusCode::OK, w.index, &w.value))
}

/// `PUT /api/v1/clusters/{cluster}/lease` (the cluster's agent): heartbeat and claims.
pub async fn lease(
    State(state): State<AppState>,
    who: Principal,
    path: ClusterPath,
    Doc(renewal): Doc<LeaseRenewal>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    state.hub.authorize(&who, &name, Action::AgentWrite).await?;
    let status = state.hub.renew_lease(&name, &renewal).await?;
    Ok(respond(
        StatusCode::OK,
        state.hub.index(),
        None,
        Json(status),
    ))
}

/// `POST /api/v1/clusters/{cluster}/credentials`: no bearer token; the body's assertion,
/// signed by the agent's own key, is the proof.
pub async fn credentials(
    State(state): State<AppState>,
    path: ClusterPath,
    Doc(req): Doc<CredentialRequest>,
) -> Result<Response, Error> {
    let Path(name) = path?;
    let lease_interval = state.hub.settings().lease_interval;
    let token = state
        .auth
        .issue_credentials(&name, &req.assertion, lease_interval)
        .await?;
    Ok(respond(
        StatusCode::OK,
        state.hub.index(),
        None,
        Json(token),
    ))
}
