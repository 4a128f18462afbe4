//! Placement and ManifestWorkReplicaSet handlers: extract, authorize, call the service,
//! shape the response.

use api::fleet::{ManifestWorkReplicaSet, PLACEMENT_API_VERSION, Placement, SET_API_VERSION};
use api::{ListMeta, ManifestWork};
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;

use super::extract::{Doc, ListParams, Principal, Source};
use super::{AppState, caller, respond};
use crate::service::access::authorize_fleet;
use crate::service::namespaced::Namespaced;
use crate::service::secrets::mask_secrets;
use crate::service::{Error, works};

type OnePath = Result<Path<(String, String)>, PathRejection>;
type NsPath = Result<Path<String>, PathRejection>;
type Params = Result<Query<ListParams>, QueryRejection>;

fn if_match(headers: &HeaderMap) -> Option<String> {
    headers
        .get("if-match")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A single object, with its ETag.
fn one<T: Namespaced>(status: StatusCode, index: u64, object: &T) -> Response {
    let etag = object
        .metadata()
        .resource_version
        .as_deref()
        .map(works::etag);
    respond(status, index, etag, Json(json!(object)))
}

/// A set as `who` may see it: Secret data in its template masked without the `secrets`
/// verb, as in a work.
fn shown(
    state: &AppState,
    who: &Principal,
    mut set: ManifestWorkReplicaSet,
) -> ManifestWorkReplicaSet {
    if !who.sees_secrets() {
        let mut work = ManifestWork {
            api_version: api::WORK_API_VERSION.into(),
            kind: "ManifestWork".into(),
            metadata: Default::default(),
            spec: std::mem::take(&mut set.spec.manifest_work_template),
            status: Default::default(),
            extra: Default::default(),
        };
        mask_secrets(state.hub.placeholder_key(), &mut work);
        set.spec.manifest_work_template = work.spec;
    }
    set
}

/// An OCM-shaped list.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<T> {
    api_version: &'static str,
    kind: &'static str,
    metadata: ListMeta,
    items: Vec<T>,
}

/// `at`: the index the list is consistent with and its epoch.
fn list_body<T: Serialize>(
    api_version: &'static str,
    kind: &'static str,
    at: (u64, &str),
    items: Vec<T>,
) -> Response {
    let (index, epoch) = at;
    let metadata = ListMeta {
        continue_: None,
        index,
        epoch: Some(epoch.to_string()),
    };
    respond(
        StatusCode::OK,
        index,
        None,
        Json(ListBody {
            api_version,
            kind,
            metadata,
            items,
        }),
    )
}

/// What a caller is shown of an object: a set's template has Secret data masked for a
/// token without the `secrets` verb.
pub trait Shown: Namespaced {
    /// The `apiVersion` of its lists.
    const API_VERSION: &'static str;
    /// The `kind` of its lists.
    const LIST_KIND: &'static str;
    /// The object as `who` may see it.
    fn shown(self, state: &AppState, who: &Principal) -> Self;
}

impl Shown for Placement {
    const API_VERSION: &'static str = PLACEMENT_API_VERSION;
    const LIST_KIND: &'static str = "PlacementList";
    fn shown(self, _: &AppState, _: &Principal) -> Self {
        self
    }
}

impl Shown for ManifestWorkReplicaSet {
    const API_VERSION: &'static str = SET_API_VERSION;
    const LIST_KIND: &'static str = "ManifestWorkReplicaSetList";
    fn shown(self, state: &AppState, who: &Principal) -> Self {
        shown(state, who, self)
    }
}

/// `GET /api/v1/namespaces/{ns}/placements/{name}` and
/// `.../manifestworkreplicasets/{name}`, blocking with `index`.
pub async fn get<T: Shown>(
    State(state): State<AppState>,
    who: Principal,
    path: OnePath,
    params: Params,
) -> Result<Response, Error> {
    let Path((ns, name)) = path?;
    let Query(params) = params?;
    authorize_fleet(&who, false)?;
    let read = state
        .hub
        .get_namespaced::<T>(&ns, &name, params.block()?)
        .await?;
    Ok(match read.data {
        Some(o) => one(StatusCode::OK, read.index, &o.shown(&state, &who)),
        None => respond(
            StatusCode::NOT_FOUND,
            read.index,
            None,
            crate::service::namespaced::not_found::<T>(&ns, &name),
        ),
    })
}

async fn list<T: Shown>(
    state: &AppState,
    who: &Principal,
    ns: Option<&str>,
    params: &ListParams,
) -> Result<Response, Error> {
    authorize_fleet(who, false)?;
    let read = state
        .hub
        .list_namespaced::<T>(ns, &params.selector()?, params.block()?)
        .await?;
    let items: Vec<T> = read.data.into_iter().map(|o| o.shown(state, who)).collect();
    Ok(list_body(
        T::API_VERSION,
        T::LIST_KIND,
        (read.index, state.hub.epoch()),
        items,
    ))
}

/// `GET /api/v1/namespaces/{ns}/placements` and `.../manifestworkreplicasets`.
pub async fn list_in<T: Shown>(
    State(state): State<AppState>,
    who: Principal,
    path: NsPath,
    params: Params,
) -> Result<Response, Error> {
    let Path(ns) = path?;
    let Query(params) = params?;
    list::<T>(&state, &who, Some(&ns), &params).await
}

/// `GET /api/v1/placements` and `/api/v1/manifestworkreplicasets`: every namespace.
pub async fn list_all<T: Shown>(
    State(state): State<AppState>,
    who: Principal,
    params: Params,
) -> Result<Response, Error> {
    let Query(params) = params?;
    list::<T>(&state, &who, None, &params).await
}

/// `PUT /api/v1/namespaces/{ns}/placements/{name}` and
/// `.../manifestworkreplicasets/{name}`: create (201) or replace (200) the spec.
pub async fn put<T: Shown>(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: OnePath,
    headers: HeaderMap,
    Doc(object): Doc<T>,
) -> Result<Response, Error> {
    let Path((ns, name)) = path?;
    authorize_fleet(&who, true)?;
    let by = Some(caller(&who, from));
    let w = state
        .hub
        .put_namespaced(&ns, &name, object, if_match(&headers), &who, by)
        .await?;
    let status = if w.value.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(one(status, w.index, &w.value.object.shown(&state, &who)))
}

/// `DELETE /api/v1/namespaces/{ns}/placements/{name}`: the placement and its decisions go
/// at once (the sets following it then keep no work).
pub async fn delete_placement(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: OnePath,
) -> Result<Response, Error> {
    let Path((ns, name)) = path?;
    authorize_fleet(&who, true)?;
    let w = state
        .hub
        .delete_placement(&ns, &name, Some(caller(&who, from)))
        .await?;
    Ok(one(StatusCode::OK, w.index, &w.value))
}

/// `DELETE /api/v1/namespaces/{ns}/manifestworkreplicasets/{name}`: 202 while the set
/// controller removes (or releases) its works.
pub async fn delete_set(
    State(state): State<AppState>,
    who: Principal,
    Source(from): Source,
    path: OnePath,
) -> Result<Response, Error> {
    let Path((ns, name)) = path?;
    authorize_fleet(&who, true)?;
    let w = state
        .hub
        .delete_set(&ns, &name, Some(caller(&who, from)))
        .await?;
    Ok(one(
        StatusCode::ACCEPTED,
        w.index,
        &shown(&state, &who, w.value),
    ))
}

/// `GET .../placements/{name}/decisions`: OCM's PlacementDecisionList, blocking with
/// `index`; clusters outside the caller's read scope are left out.
pub async fn decisions(
    State(state): State<AppState>,
    who: Principal,
    path: OnePath,
    params: Params,
) -> Result<Response, Error> {
    let Path((ns, name)) = path?;
    let Query(params) = params?;
    authorize_fleet(&who, false)?;
    let readable = state.hub.readable_clusters(&who).await?;
    let read = state
        .hub
        .placement_decisions(&ns, &name, params.block()?, readable.as_deref())
        .await?;
    Ok(list_body(
        PLACEMENT_API_VERSION,
        "PlacementDecisionList",
        (read.index, state.hub.epoch()),
        read.data,
    ))
}

/// `GET .../placements/{name}/explain`: every cluster the caller may read, chosen or not,
/// and why.
pub async fn explain(
    State(state): State<AppState>,
    who: Principal,
    path: OnePath,
) -> Result<Response, Error> {
    let Path((ns, name)) = path?;
    authorize_fleet(&who, false)?;
    let read = state.hub.explain_placement(&ns, &name, &who).await?;
    Ok(respond(StatusCode::OK, read.index, None, Json(read.data)))
}

/// `POST /api/v1/placements/preview`: the same for the placement in the body; nothing is
/// stored.
pub async fn preview(
    State(state): State<AppState>,
    who: Principal,
    Doc(placement): Doc<Placement>,
) -> Result<Response, Error> {
    authorize_fleet(&who, false)?;
    let read = state.hub.preview_placement(placement, &who).await?;
    Ok(respond(StatusCode::OK, read.index, None, Json(read.data)))
}
