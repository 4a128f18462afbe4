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
use super::{AppState, respond};
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
    let token = state.hub.create_token(&req).await?;
    let details = json!({"kind": token.kind, "expiresAt": token.expires_at, "autoAccept": token.auto_accept, "clusters": token.clusters, "verbs": token.verbs});
    state
        .hub
        .audit(
            &who,
            "token.create",
            &format!("tokens/{}", token.id),
            &from,
            details,
        )
        .await;
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
    Ok(respond(
        StatusCode::OK,
        list.metadata.index,
        None,
        Json(list),
    ))
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
    state.hub.revoke_token(&id).await?;
    state
        .hub
        .audit(
            &who,
            "token.revoke",
            &format!("tokens/{id}"),
            &from,
            json!({}),
        )
        .await;
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
    let reg = state.hub.register(token, &req).await?;
    let details = json!({"cluster": reg.cluster_name, "state": reg.state, "publicKeyHash": reg.public_key_hash});
    state
        .hub
        .audit(
            &who,
            "registration.create",
            &format!("registrations/{}", reg.id),
            &from,
            details,
        )
        .await;
    Ok(respond(
        StatusCode::CREATED,
        state.hub.index(),
        None,
        Json(reg),
    ))
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
    Ok(respond(
        StatusCode::OK,
        list.metadata.index,
        None,
        Json(list),
    ))
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
    match state.hub.get_registration(&id, params.block()?).await? {
        (Some(r), index) => Ok(respond(StatusCode::OK, index, None, Json(r))),
        (None, index) => Ok(respond(
            StatusCode::NOT_FOUND,
            index,
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
    let reg = state.hub.decide_registration(&id, accept).await?;
    let action = if accept {
        "registration.accept"
    } else {
        "registration.deny"
    };
    state
        .hub
        .audit(
            &who,
            action,
            &format!("registrations/{id}"),
            &from,
            json!({"cluster": reg.cluster_name}),
        )
        .await;
    Ok(respond(StatusCode::OK, state.hub.index(), None, Json(reg)))
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
    let limit = match limit {
        None | Some("") => 100,
        Some(l) => l
            .parse::<u32>()
            .map_err(|_| {
                Error::Malformed(format!("limit must be a non-negative integer, not {l:?}"))
            })?
            .min(10_000),
    };
    let items = state
        .hub
        .store()
        .list_audit(target.filter(|t| !t.is_empty()), limit)
        .await?;
    let list = api::List::new("AuditList", items, state.hub.index(), None);
    Ok(respond(
        StatusCode::OK,
        list.metadata.index,
        None,
        Json(list),
    ))
}
