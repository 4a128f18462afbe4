//! The operations of fleet placement: Placements, their decisions and explanations, and
//! ManifestWorkReplicaSets.

use api::List;
use api::fleet::{ManifestWorkReplicaSet, Placement, PlacementDecision, PlacementExplanation};
use schemars::generate::SchemaGenerator;
use schemars::{JsonSchema, Schema};

use super::Query::*;
use super::{Body, Caller, ONE_OBJECT, Operation, named, of};

fn placement_list(generator: &mut SchemaGenerator) -> Schema {
    let schema = <List<Placement>>::json_schema(generator);
    named(generator, "PlacementList", schema)
}

fn set_list(generator: &mut SchemaGenerator) -> Schema {
    let schema = <List<ManifestWorkReplicaSet>>::json_schema(generator);
    named(generator, "ManifestWorkReplicaSetList", schema)
}

fn decision_list(generator: &mut SchemaGenerator) -> Schema {
    let schema = <List<PlacementDecision>>::json_schema(generator);
    named(generator, "PlacementDecisionList", schema)
}

const PLACEMENT: &[(u16, Body)] = &[(200, Body::Json(of::<Placement>))];
const PLACEMENT_PUT: &[(u16, Body)] = &[
    (200, Body::Json(of::<Placement>)),
    (201, Body::Json(of::<Placement>)),
];
const SET: &[(u16, Body)] = &[(200, Body::Json(of::<ManifestWorkReplicaSet>))];
const SET_PUT: &[(u16, Body)] = &[
    (200, Body::Json(of::<ManifestWorkReplicaSet>)),
    (201, Body::Json(of::<ManifestWorkReplicaSet>)),
];
const EXPLANATION: &[(u16, Body)] = &[(200, Body::Json(of::<PlacementExplanation>))];
/// Errors of a fleet object write: not found, conflict, too large, invalid, database down.
const WRITE: &[u16] = &[404, 409, 412, 413, 422, 503];
const LIST_QUERY: &[super::Query] = &[LabelSelector, Index, Wait, Epoch];
const BLOCKING_GET: &[super::Query] = &[Index, Wait, Epoch];

/// The operations, appended to the document's table.
pub(super) const OPERATIONS: &[Operation] = &[
    Operation {
        method: "GET",
        path: "/api/v1/placements",
        id: "listAllPlacements",
        summary: "Placements of every namespace (readers: admin, api tokens with read)",
        body: None,
        query: LIST_QUERY,
        ok: &[(200, Body::Json(placement_list))],
        errors: &[503],
        caller: Caller::Token,
    },
    Operation {
        method: "POST",
        path: "/api/v1/placements/preview",
        id: "previewPlacement",
        summary: "Every cluster the caller may read, chosen or not and why, for the Placement in the body (nothing stored)",
        body: Some(of::<Placement>),
        query: &[],
        ok: EXPLANATION,
        errors: &[413, 422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/namespaces/{ns}/placements",
        id: "listPlacements",
        summary: "Placements of a namespace",
        body: None,
        query: LIST_QUERY,
        ok: &[(200, Body::Json(placement_list))],
        errors: &[422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/namespaces/{ns}/placements/{name}",
        id: "getPlacement",
        summary: "One placement, blocking with index",
        body: None,
        query: BLOCKING_GET,
        ok: PLACEMENT,
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "PUT",
        path: "/api/v1/namespaces/{ns}/placements/{name}",
        id: "putPlacement",
        summary: "Create or replace a placement's spec (admin, api tokens with write)",
        body: Some(of::<Placement>),
        query: &[],
        ok: PLACEMENT_PUT,
        errors: WRITE,
        caller: Caller::Token,
    },
    Operation {
        method: "DELETE",
        path: "/api/v1/namespaces/{ns}/placements/{name}",
        id: "deletePlacement",
        summary: "Delete a placement and its decisions",
        body: None,
        query: &[],
        ok: PLACEMENT,
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/namespaces/{ns}/placements/{name}/decisions",
        id: "getPlacementDecisions",
        summary: "OCM's PlacementDecisionList of a placement (clusters the caller may read), blocking with index",
        body: None,
        query: BLOCKING_GET,
        ok: &[(200, Body::Json(decision_list))],
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/namespaces/{ns}/placements/{name}/explain",
        id: "explainPlacement",
        summary: "Every cluster the caller may read: chosen or not, why, and its scores",
        body: None,
        query: &[],
        ok: EXPLANATION,
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/manifestworkreplicasets",
        id: "listAllManifestWorkReplicaSets",
        summary: "ManifestWorkReplicaSets of every namespace",
        body: None,
        query: LIST_QUERY,
        ok: &[(200, Body::Json(set_list))],
        errors: &[503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/namespaces/{ns}/manifestworkreplicasets",
        id: "listManifestWorkReplicaSets",
        summary: "ManifestWorkReplicaSets of a namespace",
        body: None,
        query: LIST_QUERY,
        ok: &[(200, Body::Json(set_list))],
        errors: &[422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/namespaces/{ns}/manifestworkreplicasets/{name}",
        id: "getManifestWorkReplicaSet",
        summary: "One ManifestWorkReplicaSet, blocking with index",
        body: None,
        query: BLOCKING_GET,
        ok: SET,
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "PUT",
        path: "/api/v1/namespaces/{ns}/manifestworkreplicasets/{name}",
        id: "putManifestWorkReplicaSet",
        summary: "Create or replace a set (admin, api tokens with write; its works reach only clusters the writer may write)",
        body: Some(of::<ManifestWorkReplicaSet>),
        query: &[],
        ok: SET_PUT,
        errors: WRITE,
        caller: Caller::Token,
    },
    Operation {
        method: "DELETE",
        path: "/api/v1/namespaces/{ns}/manifestworkreplicasets/{name}",
        id: "deleteManifestWorkReplicaSet",
        summary: "Ask for a set's deletion (its works follow its cascadeDeletionPolicy)",
        body: None,
        query: &[],
        ok: &[(202, Body::Json(of::<ManifestWorkReplicaSet>))],
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
];
