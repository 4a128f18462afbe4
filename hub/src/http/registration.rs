//! Tokens, join requests and the audit log.

use api::{RegistrationRequest, TokenRequest};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::extract::{Doc, ListParams, Principal, Source};
use super::{AppState, caller, list_response, respond};
use crate::service::Error;

type IdPath = Result<Path<String>, PathRejection>;

/// `POST /api/v1/tokens` (admin).
pub async fn create_token(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    Doc(req): Doc<TokenRequest>,
) -> Result<Response, Error> {
    who.require_admin()?;
    let token = state.hub.create_token(&req, &caller(&who, from)).await?;
    Ok(respond(
        StatusCode::CREATED,
        state.hub.index(),
        None,
        Json(token),
    ))
}

/// `GET /api/v1/tokens` (admin): without secrets.
pub async fn list_tokens(State(state): State<AppState>, who: Principal) -> Result<Response, Error> {
    who.require_admin()?;
    let list = state.hub.list_tokens().await?;
    Ok(list_response(&state, list))
}

/// `DELETE /api/v1/tokens/{id}` (admin).
pub async fn revoke_token(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: IdPath,
) -> Result<Response, Error> {
    let Path(id) = path?;
    who.require_admin()?;
    state.hub.revoke_token(&id, &caller(&who, from)).await?;
    Ok(respond(
        StatusCode::OK,
        state.hub.index(),
        None,
        Json(json!({"id": id, "revoked": true})),
    ))
}

/// `POST /api/v1/registrations` (bootstrap token): ask to join.
pub async fn register(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    Doc(req): Doc<RegistrationRequest>,
) -> Result<Response, Error> {
    let Principal::Bootstrap { token } = &who else {
        return Err(Error::Forbidden(format!(
            "{} is not a bootstrap token; only bootstrap tokens may ask to join",
            who.actor()
        )));
    };
    let w = state
        .hub
        .register(token, &req, Some(caller(&who, from)))
        .await?;
    Ok(respond(StatusCode::CREATED, w.index, None, Json(w.value)))
}

/// `GET /api/v1/registrations` (admin), blocking with `index`.
pub async fn list_registrations(
    State(state): State<AppState>,
    who: Principal,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params?;
    who.require_admin()?;
    let list = state.hub.list_registrations(params.block()?).await?;
    Ok(list_response(&state, list))
}

/// `GET /api/v1/registrations/{id}`: the admin, or the joining agent proving itself with
/// an assertion signed by the key it registered (works after the bootstrap token expired).
pub async fn get_registration(
    State(state): State<AppState>,
    who: Principal,
    path: IdPath,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Path(id) = path?;
    let Query(params) = params?;
    match &who {
        Principal::Admin => {}
        Principal::Registrant { registration_id } if *registration_id == id => {}
        other => {
            return Err(Error::Forbidden(format!(
                "{} may not read registration {id}",
                other.actor()
            )));
        }
    }
    let read = state.hub.get_registration(&id, params.block()?).await?;
    match read.data {
        Some(r) => Ok(respond(StatusCode::OK, read.index, None, Json(r))),
        None => Ok(respond(
            StatusCode::NOT_FOUND,
            read.index,
            None,
            Error::NotFound(format!("registration {id:?} not found")),
        )),
    }
}

/// `POST /api/v1/registrations/{id}/accept` (admin).
pub async fn accept(
    state: State<AppState>,
    who: Principal,
    source: Source,
    path: IdPath,
) -> Result<Response, Error> {
    decide(state, who, source, path, true).await
}

/// `POST /api/v1/registrations/{id}/deny` (admin).
pub async fn deny(
    state: State<AppState>,
    who: Principal,
    source: Source,
    path: IdPath,
) -> Result<Response, Error> {
    decide(state, who, source, path, false).await
}

async fn decide(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: IdPath,
    accept: bool,
) -> Result<Response, Error> {
    let Path(id) = path?;
    who.require_admin()?;
    let w = state
        .hub
        .decide_registration(&id, accept, Some(caller(&who, from)))
        .await?;
    Ok(respond(StatusCode::OK, w.index, None, Json(w.value)))
}

/// Query of the audit log.
#[derive(Debug, Deserialize)]
pub struct AuditParams {
    /// Only entries for this target and below (e.g. `clusters/c1`).
    pub target: Option<String>,
    /// Most entries (default 100, at most 10,000).
    pub limit: Option<String>,
}

/// `GET /api/v1/audit` (admin), newest first.
pub async fn audit(
    State(state): State<AppState>,
    who: Principal,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(params) = params?;
    who.require_admin()?;
    audit_list(&state, params.target.as_deref(), params.limit.as_deref()).await
}

/// The audit entries of `target` and below (all when absent), newest first, as an
/// `AuditList` response; `limit` is the query parameter as given.
pub async fn audit_list(
    state: &AppState,
    target: Option<&str>,
    limit: Option<&str>,
) -> Result<Response, Error> {
    let list = state.hub.list_audit(target, limit).await?;
    Ok(list_response(state, list))
}
