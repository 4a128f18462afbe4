//! `/api/v1/openapi.json` (OpenAPI 3.1), generated from the route table below.
//!
//! The document is precise enough for a schema-driven fuzzer (`tests/fuzz/schemathesis.sh`)
//! to build meaningful requests and to check the answers: every query parameter a handler
//! reads, the body each write takes (the shape serde accepts, so a body that breaks the
//! schema must be refused with a 4xx), the statuses each operation can answer and the
//! error body. Names and values the service checks beyond their shape (DNS names, label
//! syntax) are described, not encoded as patterns: the service is the judge of those.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{Map, Value, json};

/// Who may call an operation, which decides the auth statuses it can answer.
#[derive(Clone, Copy, PartialEq)]
enum Caller {
    /// No credentials needed.
    Anyone,
    /// A bearer token (admin, api, bootstrap or agent, as the summary says).
    Token,
    /// No bearer token: the body carries a signed assertion.
    Assertion,
}

/// One operation of the API.
struct Route {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    /// The request body's schema in `components.schemas`, if the operation takes one.
    body: Option<&'static str>,
    /// Query parameters, by name (see [`query_parameter`]).
    query: &'static [&'static str],
    /// Success statuses and the schema (in `components.schemas`) of their body.
    ok: &'static [(&'static str, &'static str)],
    /// Error statuses besides 400 (always possible for a bad path or query) and the
    /// auth statuses that follow from `caller`.
    errors: &'static [&'static str],
    caller: Caller,
}

const LIST: &[&str] = &["labelSelector", "index", "wait"];
const WORK_LIST: &[&str] = &["labelSelector", "limit", "continue", "index", "wait"];
const ALL_WORK_LIST: &[&str] = &[
    "labelSelector",
    "clusterSelector",
    "limit",
    "continue",
    "index",
    "wait",
];
const BLOCKING_GET: &[&str] = &["index", "wait"];
/// Errors of a write that takes a body: too large, invalid, conflicting, database down.
const BODY_WRITE: &[&str] = &["404", "409", "413", "422", "503"];

const ROUTES: &[Route] = &[
    Route {
        method: "GET",
        path: "/healthz",
        id: "healthz",
        summary: "Liveness",
        body: None,
        query: &[],
        ok: &[("200", "text")],
        errors: &[],
        caller: Caller::Anyone,
    },
    Route {
        method: "GET",
        path: "/readyz",
        id: "readyz",
        summary: "Readiness: the database answers",
        body: None,
        query: &[],
        ok: &[("200", "text")],
        errors: &["503"],
        caller: Caller::Anyone,
    },
    Route {
        method: "GET",
        path: "/metrics",
        id: "metrics",
        summary: "Prometheus metrics",
        body: None,
        query: &[],
        ok: &[("200", "text")],
        errors: &[],
        caller: Caller::Anyone,
    },
    Route {
        method: "GET",
        path: "/version",
        id: "version",
        summary: "The hub's version",
        body: None,
        query: &[],
        ok: &[("200", "Object")],
        errors: &[],
        caller: Caller::Anyone,
    },
    Route {
        method: "GET",
        path: "/api/v1/openapi.json",
        id: "openapi",
        summary: "This document",
        body: None,
        query: &[],
        ok: &[("200", "Object")],
        errors: &[],
        caller: Caller::Anyone,
    },
    Route {
        method: "GET",
        path: "/api/v1/cluster-info",
        id: "clusterInfo",
        summary: "CA bundle and server URL, for pinning",
        body: None,
        query: &[],
        ok: &[("200", "ClusterInfo")],
        errors: &[],
        caller: Caller::Anyone,
    },
    Route {
        method: "GET",
        path: "/api/v1/clusters",
        id: "listClusters",
        summary: "List clusters (labelSelector, index, wait)",
        body: None,
        query: LIST,
        ok: &[("200", "List")],
        errors: &["503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/clusters/{cluster}",
        id: "getCluster",
        summary: "Read a cluster (index, wait)",
        body: None,
        query: BLOCKING_GET,
        ok: &[("200", "ManagedCluster")],
        errors: &["404", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}",
        id: "putCluster",
        summary: "Create or update a cluster (admin)",
        body: Some("ManagedCluster"),
        query: &[],
        ok: &[("200", "ManagedCluster"), ("201", "ManagedCluster")],
        errors: BODY_WRITE,
        caller: Caller::Token,
    },
    Route {
        method: "DELETE",
        path: "/api/v1/clusters/{cluster}",
        id: "deleteCluster",
        summary: "Delete a cluster and its works (force=true: at once)",
        body: None,
        query: &["force"],
        ok: &[("200", "ClusterDeletion"), ("202", "ClusterDeletion")],
        errors: &["404", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}/labels",
        id: "putClusterLabels",
        summary: "Set or remove cluster labels (admin)",
        body: Some("LabelPatch"),
        query: &[],
        ok: &[("200", "ManagedCluster")],
        errors: BODY_WRITE,
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/clusters/{cluster}/manifestworks",
        id: "listWorks",
        summary: "List a cluster's works (labelSelector, limit, continue, index, wait)",
        body: None,
        query: WORK_LIST,
        ok: &[("200", "List")],
        errors: &["422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}",
        id: "getWork",
        summary: "Read a work (index, wait)",
        body: None,
        query: BLOCKING_GET,
        ok: &[("200", "ManifestWork")],
        errors: &["404", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}",
        id: "putWork",
        summary: "Create or replace a work (If-Match, metadata.resourceVersion; dryRun=All only checks)",
        body: Some("ManifestWork"),
        query: &["dryRun"],
        ok: &[("200", "ManifestWork"), ("201", "ManifestWork")],
        errors: &["404", "409", "412", "413", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "DELETE",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}",
        id: "deleteWork",
        summary: "Ask for a work's deletion",
        body: None,
        query: &[],
        ok: &[("200", "ManifestWork"), ("202", "ManifestWork")],
        errors: &["404", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}/history",
        id: "getWorkHistory",
        summary: "The work's own audit entries, newest first (readers of the work; limit)",
        body: None,
        query: &["historyLimit"],
        ok: &[("200", "List")],
        errors: &["422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}/status",
        id: "putWorkStatus",
        summary: "Write a work's status (agent)",
        body: Some("StatusUpdate"),
        query: &[],
        ok: &[("200", "ManifestWork")],
        errors: BODY_WRITE,
        caller: Caller::Token,
    },
    Route {
        method: "DELETE",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}/finalizers",
        id: "removeWorkFinalizer",
        summary: "Remove a finalizer (agent; ?name=)",
        body: None,
        query: &["finalizer"],
        ok: &[("200", "ManifestWork")],
        errors: &["404", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/manifestworks",
        id: "listAllWorks",
        summary: "List works across clusters (labelSelector, clusterSelector, limit, continue, index, wait)",
        body: None,
        query: ALL_WORK_LIST,
        ok: &[("200", "List")],
        errors: &["503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/manifestworks/summary",
        id: "summarizeWorks",
        summary: "Per work name across clusters: applied/available/ready/degraded/progressing/unknown counts and failing resources (name, labelSelector, clusterSelector, index, wait)",
        body: None,
        query: &[
            "workName",
            "labelSelector",
            "clusterSelector",
            "index",
            "wait",
        ],
        ok: &[("200", "List")],
        errors: &["503"],
        caller: Caller::Token,
    },
    Route {
        method: "POST",
        path: "/api/v1/clusters/{cluster}/revoke",
        id: "revokeCluster",
        summary: "Cut a cluster's agent off at once (admin)",
        body: None,
        query: &[],
        ok: &[("200", "ManagedCluster")],
        errors: &["404", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}/lease",
        id: "renewLease",
        summary: "Renew the cluster's lease (agent)",
        body: Some("LeaseRenewal"),
        query: &[],
        ok: &[("200", "LeaseStatus")],
        errors: BODY_WRITE,
        caller: Caller::Token,
    },
    Route {
        method: "POST",
        path: "/api/v1/clusters/{cluster}/credentials",
        id: "issueCredentials",
        summary: "Trade an assertion signed by the agent's key for an access token",
        body: Some("CredentialRequest"),
        query: &[],
        ok: &[("200", "AccessToken")],
        errors: &["401", "403", "404", "413", "422", "503"],
        caller: Caller::Assertion,
    },
    Route {
        method: "POST",
        path: "/api/v1/tokens",
        id: "createToken",
        summary: "Create a bootstrap or api token (admin)",
        body: Some("TokenRequest"),
        query: &[],
        ok: &[("201", "Object")],
        errors: &["413", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/tokens",
        id: "listTokens",
        summary: "List tokens without secrets (admin)",
        body: None,
        query: &[],
        ok: &[("200", "List")],
        errors: &["503"],
        caller: Caller::Token,
    },
    Route {
        method: "DELETE",
        path: "/api/v1/tokens/{id}",
        id: "revokeToken",
        summary: "Revoke a token (admin)",
        body: None,
        query: &[],
        ok: &[("200", "Object")],
        errors: &["404", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "POST",
        path: "/api/v1/registrations",
        id: "register",
        summary: "Ask to join (bootstrap token)",
        body: Some("RegistrationRequest"),
        query: &[],
        ok: &[("201", "Object")],
        errors: &["409", "413", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/registrations",
        id: "listRegistrations",
        summary: "List join requests (admin; index, wait)",
        body: None,
        query: BLOCKING_GET,
        ok: &[("200", "List")],
        errors: &["503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/registrations/{id}",
        id: "getRegistration",
        summary: "Read a join request (admin or the joining agent; index, wait)",
        body: None,
        query: BLOCKING_GET,
        ok: &[("200", "Object")],
        errors: &["404", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "POST",
        path: "/api/v1/registrations/{id}/accept",
        id: "acceptRegistration",
        summary: "Accept a join request (admin)",
        body: None,
        query: &[],
        ok: &[("200", "Object")],
        errors: &["404", "409", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "POST",
        path: "/api/v1/registrations/{id}/deny",
        id: "denyRegistration",
        summary: "Deny a join request (admin)",
        body: None,
        query: &[],
        ok: &[("200", "Object")],
        errors: &["404", "409", "422", "503"],
        caller: Caller::Token,
    },
    Route {
        method: "GET",
        path: "/api/v1/audit",
        id: "listAudit",
        summary: "The audit log, newest first (admin; target, limit)",
        body: None,
        query: &["target", "historyLimit"],
        ok: &[("200", "List")],
        errors: &["503"],
        caller: Caller::Token,
    },
];

/// Query parameters (keys of the route table) that the handlers treat as absent when they
/// are sent empty (`?wait=&limit=`), as Kubernetes does.
const EMPTY_MEANS_ABSENT: &[&str] = &[
    "labelSelector",
    "clusterSelector",
    "limit",
    "historyLimit",
    "continue",
    "index",
    "wait",
    "force",
    "target",
    "dryRun",
];

/// A query parameter by its key in the route table: (name on the wire, required, schema,
/// description).
fn query_parameter(key: &str) -> (&'static str, bool, Value, &'static str) {
    let string = json!({"type": "string"});
    match key {
        "labelSelector" => (
            "labelSelector",
            false,
            string,
            "kubectl-style label selector: `app=web,tier!=db,env in (a,b),!legacy`",
        ),
        "clusterSelector" => (
            "clusterSelector",
            false,
            string,
            "label selector on the works' clusters",
        ),
        "limit" => (
            "limit",
            false,
            json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
            "page size; 0 or absent: everything (pages are cut at 10,000)",
        ),
        "historyLimit" => (
            "limit",
            false,
            json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
            "most entries (default 100, at most 10,000)",
        ),
        "continue" => (
            "continue",
            false,
            string,
            "the `metadata.continue` of the previous page",
        ),
        "index" => (
            "index",
            false,
            json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
            "block until something the answer holds changed past this change index",
        ),
        "wait" => (
            "wait",
            false,
            json!({"type": "string", "pattern": "^ *([0-9]+|([0-9]+(\\.[0-9]*)?(ms|s|m|h))+) *$"}),
            "how long to block with `index`: `250ms`, `30s`, `5m`, `1m30s`, or seconds (default 60 s, at most 300 s)",
        ),
        "force" => (
            "force",
            false,
            json!({"type": "boolean"}),
            "remove the records at once, whatever the agent did",
        ),
        "finalizer" => (
            "name",
            true,
            json!({"type": "string", "minLength": 1}),
            "the finalizer to remove, e.g. `klusterlet/cleanup`",
        ),
        "workName" => ("name", false, string, "only works of this name"),
        "dryRun" => (
            "dryRun",
            false,
            json!({"type": "string", "enum": ["All"]}),
            "`All`: check the work and answer it as a read by this caller would show it (Secret data masked without the `secrets` verb); nothing is stored",
        ),
        "target" => (
            "target",
            false,
            string,
            "only entries for this target and below, e.g. `clusters/c1`",
        ),
        other => unreachable!("query parameter {other} is not described"),
    }
}

/// JSON Schemas of the bodies, in the shape serde accepts: optional fields (`Option`) are
/// nullable, fields with a default are not required, unknown fields are kept.
fn schemas() -> Vec<(&'static str, Value)> {
    let string_map = json!({"type": "object", "additionalProperties": {"type": "string"}});
    let i64_or_null =
        json!({"type": ["integer", "null"], "minimum": i64::MIN, "maximum": i64::MAX});
    let time_or_null = json!({"type": ["string", "null"], "format": "date-time"});
    let condition = json!({
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "description": "True, False or Unknown"},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": i64_or_null,
            "lastTransitionTime": time_or_null,
        }
    });
    let claim = json!({
        "type": "object",
        "required": ["name", "value"],
        "properties": {"name": {"type": "string"}, "value": {"type": "string"}}
    });
    let resource_identifier = json!({
        "type": "object",
        "properties": {
            "group": {"type": "string"},
            "resource": {"type": "string"},
            "name": {"type": "string"},
            "namespace": {"type": "string"},
        }
    });
    vec![
        (
            "ErrorBody",
            json!({
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "enum": ["malformed", "unauthorized", "forbidden", "not_found", "conflict", "deleting", "precondition_failed", "too_large", "invalid", "unavailable", "internal"]},
                    "message": {"type": "string"},
                    "details": {"description": "for `invalid`: the fields, `[{\"field\", \"message\"}]`"},
                }
            }),
        ),
        ("Object", json!({"type": "object"})),
        ("text", json!({"type": "string"})),
        (
            "List",
            json!({
                "type": "object",
                "required": ["apiVersion", "kind", "metadata", "items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {
                        "type": "object",
                        "required": ["index"],
                        "properties": {"continue": {"type": "string"}, "index": {"type": "integer", "minimum": 0}}
                    },
                    "items": {"type": "array", "items": {"type": "object"}},
                }
            }),
        ),
        (
            "ObjectMeta",
            json!({
                "type": "object",
                "description": "name and namespace must match the path when given; labels and annotations are checked like Kubernetes'",
                "properties": {
                    "name": {"type": "string"},
                    "namespace": {"type": ["string", "null"]},
                    "labels": string_map,
                    "annotations": string_map,
                    "uid": {"type": ["string", "null"]},
                    "generation": i64_or_null,
                    "resourceVersion": {"type": ["string", "null"]},
                    "creationTimestamp": time_or_null,
                    "deletionTimestamp": time_or_null,
                    "finalizers": {"type": "array", "items": {"type": "string"}},
                }
            }),
        ),
        (
            "ManifestWorkStatus",
            json!({
                "type": "object",
                "properties": {
                    "conditions": {"type": "array", "items": condition},
                    "resourceStatus": {
                        "type": ["object", "null"],
                        "properties": {
                            "manifests": {"type": "array", "items": {
                                "type": "object",
                                "required": ["resourceMeta"],
                                "properties": {
                                    "resourceMeta": {
                                        "type": "object",
                                        "required": ["ordinal"],
                                        "properties": {
                                            "ordinal": {"type": "integer", "minimum": i32::MIN, "maximum": i32::MAX},
                                            "group": {"type": "string"},
                                            "version": {"type": "string"},
                                            "kind": {"type": "string"},
                                            "resource": {"type": "string"},
                                            "name": {"type": "string"},
                                            "namespace": {"type": "string"},
                                        }
                                    },
                                    "conditions": {"type": "array", "items": condition},
                                    "statusFeedback": {
                                        "type": ["object", "null"],
                                        "properties": {"values": {"type": "array", "items": {
                                            "type": "object",
                                            "required": ["name", "fieldValue"],
                                            "properties": {
                                                "name": {"type": "string"},
                                                "fieldValue": {
                                                    "type": "object",
                                                    "required": ["type"],
                                                    "properties": {
                                                        "type": {"type": "string"},
                                                        "integer": i64_or_null,
                                                        "string": {"type": ["string", "null"]},
                                                        "boolean": {"type": ["boolean", "null"]},
                                                        "jsonRaw": {"type": ["string", "null"]},
                                                    }
                                                }
                                            }
                                        }}}
                                    }
                                }
                            }}
                        }
                    }
                }
            }),
        ),
        (
            "ManifestWork",
            json!({
                "type": "object",
                "description": "OCM's work.open-cluster-management.io/v1 ManifestWork; status is the agent's and ignored here",
                "properties": {
                    "apiVersion": {"type": "string", "description": "work.open-cluster-management.io/v1"},
                    "kind": {"type": "string", "description": "ManifestWork"},
                    "metadata": {"$ref": "#/components/schemas/ObjectMeta"},
                    "spec": {
                        "type": "object",
                        "properties": {
                            "workload": {
                                "type": "object",
                                "properties": {"manifests": {
                                    "type": "array",
                                    "description": "Kubernetes objects, each with apiVersion, kind and metadata.name",
                                    "items": {"type": "object"}
                                }}
                            },
                            "deleteOption": {
                                "type": ["object", "null"],
                                "properties": {
                                    "propagationPolicy": {"type": "string", "enum": ["Foreground", "Orphan", "SelectivelyOrphan"]},
                                    "selectivelyOrphans": {
                                        "type": ["object", "null"],
                                        "properties": {"orphaningRules": {"type": "array", "items": resource_identifier}}
                                    },
                                    "ttlSecondsAfterFinished": i64_or_null,
                                }
                            },
                            "manifestConfigs": {"type": "array", "items": {
                                "type": "object",
                                "required": ["resourceIdentifier"],
                                "properties": {
                                    "resourceIdentifier": resource_identifier,
                                    "feedbackRules": {"type": "array", "items": {
                                        "type": "object",
                                        "required": ["type"],
                                        "properties": {
                                            "type": {"type": "string", "enum": ["WellKnownStatus", "JSONPaths"]},
                                            "jsonPaths": {"type": "array", "items": {
                                                "type": "object",
                                                "required": ["name", "path"],
                                                "properties": {"name": {"type": "string"}, "path": {"type": "string"}}
                                            }}
                                        }
                                    }},
                                    "updateStrategy": {
                                        "type": ["object", "null"],
                                        "properties": {
                                            "type": {"type": "string", "enum": ["Update", "CreateOnly", "ServerSideApply", "ReadOnly"]},
                                            "serverSideApply": {
                                                "type": ["object", "null"],
                                                "properties": {
                                                    "force": {"type": "boolean"},
                                                    "fieldManager": {"type": ["string", "null"]},
                                                }
                                            }
                                        }
                                    }
                                }
                            }}
                        }
                    },
                    "status": {"$ref": "#/components/schemas/ManifestWorkStatus"},
                }
            }),
        ),
        (
            "StatusUpdate",
            json!({
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"$ref": "#/components/schemas/ManifestWorkStatus"}}
            }),
        ),
        (
            "ManagedCluster",
            json!({
                "type": "object",
                "description": "OCM's cluster.open-cluster-management.io/v1 ManagedCluster; status is the hub's and ignored here",
                "properties": {
                    "apiVersion": {"type": "string"},
                    "kind": {"type": "string"},
                    "metadata": {"$ref": "#/components/schemas/ObjectMeta"},
                    "spec": {
                        "type": "object",
                        "properties": {
                            "hubAcceptsClient": {"type": "boolean"},
                            "taints": {"type": "array"},
                        }
                    },
                    "status": {
                        "type": "object",
                        "properties": {
                            "conditions": {"type": "array", "items": condition},
                            "claims": {"type": "array", "items": claim},
                            "version": {
                                "type": ["object", "null"],
                                "properties": {"kubernetes": {"type": "string"}}
                            },
                            "lastLeaseTime": time_or_null,
                        }
                    },
                }
            }),
        ),
        (
            "LabelPatch",
            json!({
                "type": "object",
                "description": "label key to its new value, or null to remove it",
                "additionalProperties": {"type": ["string", "null"]}
            }),
        ),
        (
            "TokenRequest",
            json!({
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["bootstrap", "api"]},
                    "ttl": {"type": ["string", "null"], "description": "a duration: `1h`, `168h`"},
                    "maxUses": {"type": ["integer", "null"], "minimum": 0, "maximum": u64::MAX},
                    "autoAccept": {"type": "boolean"},
                    "labels": string_map,
                    "clusters": {"type": "array", "items": {"type": "string"}},
                    "clusterSelector": {"type": ["string", "null"]},
                    "verbs": {"type": "array", "items": {"type": "string", "enum": ["read", "write", "secrets"]}},
                    "description": {"type": "string"},
                }
            }),
        ),
        (
            "RegistrationRequest",
            json!({
                "type": "object",
                "required": ["clusterName", "publicKey"],
                "properties": {
                    "clusterName": {"type": "string"},
                    "labels": string_map,
                    "claims": {"type": "array", "items": claim},
                    "publicKey": {"type": "string", "description": "PEM SubjectPublicKeyInfo, ECDSA P-256"},
                }
            }),
        ),
        (
            "LeaseRenewal",
            json!({
                "type": "object",
                "properties": {"claims": {"type": ["array", "null"], "items": claim}}
            }),
        ),
        (
            "LeaseStatus",
            json!({
                "type": "object",
                "required": ["leaseIntervalSeconds", "renewedAt"],
                "properties": {
                    "leaseIntervalSeconds": {"type": "integer", "minimum": 0},
                    "renewedAt": {"type": "string", "format": "date-time"},
                }
            }),
        ),
        (
            "CredentialRequest",
            json!({
                "type": "object",
                "required": ["assertion"],
                "properties": {"assertion": {"type": "string", "description": "an ES256 JWT signed by the agent's key"}}
            }),
        ),
        (
            "AccessToken",
            json!({
                "type": "object",
                "required": ["accessToken", "expiresAt", "leaseIntervalSeconds"],
                "properties": {
                    "accessToken": {"type": "string"},
                    "expiresAt": {"type": "string", "format": "date-time"},
                    "leaseIntervalSeconds": {"type": "integer", "minimum": 0},
                }
            }),
        ),
        (
            "ClusterInfo",
            json!({
                "type": "object",
                "required": ["server", "certificateAuthorityData", "caHash"],
                "properties": {
                    "server": {"type": "string"},
                    "certificateAuthorityData": {"type": "string"},
                    "caHash": {"type": "string"},
                }
            }),
        ),
        (
            "ClusterDeletion",
            json!({
                "type": "object",
                "required": ["cluster", "removed", "worksLeft"],
                "properties": {
                    "cluster": {"type": "string"},
                    "removed": {"type": "boolean"},
                    "worksLeft": {"type": "array", "items": {"type": "string"}},
                }
            }),
        ),
    ]
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn error_description(code: &str) -> &'static str {
    match code {
        "400" => "malformed: the body, a path segment or a query parameter cannot be parsed",
        "401" => "unauthorized: no valid credentials",
        "403" => "forbidden: valid credentials without the right",
        "404" => "not_found",
        "409" => "conflict (stale resourceVersion) or deleting",
        "412" => "precondition_failed: If-Match did not match",
        "413" => "too_large: the body is over --max-work-bytes",
        "422" => "invalid: details name each bad field",
        "503" => "unavailable: the database cannot be reached",
        _ => "error",
    }
}

fn operation(route: &Route) -> Value {
    let mut parameters = Vec::new();
    for seg in route
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    {
        parameters.push(json!({
            "name": seg,
            "in": "path",
            "required": true,
            "schema": {"type": "string", "minLength": 1},
        }));
    }
    for key in route.query {
        let (name, required, schema, description) = query_parameter(key);
        let mut parameter = json!({
            "name": name,
            "in": "query",
            "required": required,
            "description": description,
            "schema": schema,
        });
        if EMPTY_MEANS_ABSENT.contains(key) {
            parameter["allowEmptyValue"] = json!(true);
        }
        parameters.push(parameter);
    }
    let mut op = json!({
        "operationId": route.id,
        "summary": route.summary,
        "parameters": parameters,
        "responses": {},
    });
    if let Some(body) = route.body {
        op["requestBody"] = json!({
            "required": true,
            "content": {
                "application/json": {"schema": reference(body)},
                "application/yaml": {"schema": reference(body)},
            }
        });
    }
    if route.caller == Caller::Token {
        op["security"] = json!([{"bearer": []}]);
    }
    for (code, body) in route.ok {
        let media = if *body == "text" {
            "text/plain"
        } else {
            "application/json"
        };
        op["responses"][*code] = json!({
            "description": "OK",
            "content": {media: {"schema": reference(body)}},
        });
    }
    let auth: &[&str] = match route.caller {
        Caller::Token => &["401", "403"],
        Caller::Anyone | Caller::Assertion => &[],
    };
    for code in ["400"].iter().chain(auth).chain(route.errors) {
        op["responses"][*code] = json!({
            "description": error_description(code),
            "content": {"application/json": {"schema": reference("ErrorBody")}},
        });
    }
    op
}

fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let method = route.method.to_ascii_lowercase();
        paths
            .entry(route.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(method, operation(route));
    }
    let schemas: Map<String, Value> = schemas()
        .into_iter()
        .map(|(name, schema)| (name.to_string(), schema))
        .collect();
    json!({
        "openapi": "3.1.0",
        "info": {"title": "fleethub hub API", "version": "v1"},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

/// Serves the document (built once).
pub async fn serve() -> Json<&'static Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(document))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves_and_every_route_is_there() {
        let doc = document();
        let text = doc.to_string();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name = piece.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "dangling reference to {name}"
            );
        }
        let operations: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum();
        assert_eq!(operations, ROUTES.len());
    }

    #[test]
    fn query_parameters_are_described() {
        for route in ROUTES {
            for key in route.query {
                let (name, _, schema, description) = query_parameter(key);
                assert!(!name.is_empty() && !description.is_empty());
                assert!(schema.get("type").is_some(), "{key}");
            }
        }
    }
}
