//! `/api/v1/openapi.json` (OpenAPI 3.1): the operation table below plus the JSON Schemas
//! that `schemars` derives from the `api` wire types.
//!
//! The document is precise enough for a schema-driven fuzzer (`tests/fuzz/schemathesis.sh`)
//! to build meaningful requests and to check the answers: every query parameter a handler
//! reads, the body each write takes (derived in the shape serde accepts, so a body that
//! breaks the schema must be refused with a 4xx), the statuses each operation can answer
//! and the error body. Names and values the service checks beyond their shape (DNS names,
//! label syntax) are described, not encoded as patterns: the service is the judge of those.
//!
//! The table is independent of the router; `hub/tests/api.rs` checks that the two agree.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use api::{
    AccessToken, ClusterDeletion, ClusterInfo, CredentialRequest, ErrorBody, LeaseRenewal,
    LeaseStatus, List, ManagedCluster, ManifestWork, RegistrationRequest, StatusUpdate,
    TokenRequest,
};
use axum::Json;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::transform::{Transform, transform_subschemas};
use schemars::{JsonSchema, Schema, json_schema};
use serde_json::{Map, Value, json};

mod fleet;

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

/// A schema in `components.schemas`, returned as a `$ref` to it.
type Shape = fn(&mut SchemaGenerator) -> Schema;

/// A response body.
#[derive(Clone, Copy)]
enum Body {
    /// `application/json` of this shape.
    Json(Shape),
    /// `text/plain`.
    Text,
    /// A file of this media type.
    File(&'static str),
}

/// One operation of the API.
struct Operation {
    method: &'static str,
    path: &'static str,
    id: &'static str,
    summary: &'static str,
    /// The request body, if the operation takes one (JSON or YAML).
    body: Option<Shape>,
    query: &'static [Query],
    /// Success statuses and their body.
    ok: &'static [(u16, Body)],
    /// Error statuses besides 400 (always possible for a bad path or query) and the auth
    /// statuses that follow from `caller`.
    errors: &'static [u16],
    caller: Caller,
}

/// The derived schema of an `api` type, by its Rust name.
fn of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// Puts a schema that is not a type of its own under `name`.
fn named(generator: &mut SchemaGenerator, name: &str, schema: Schema) -> Schema {
    generator
        .definitions_mut()
        .insert(name.to_string(), schema.to_value());
    json_schema!({"$ref": format!("#/components/schemas/{name}")})
}

/// Any JSON object (the answers not typed in this document yet).
fn object(generator: &mut SchemaGenerator) -> Schema {
    named(generator, "Object", json_schema!({"type": "object"}))
}

/// A list of objects of any kind (`ManifestWorkList`, `TokenList`, ...).
fn list(generator: &mut SchemaGenerator) -> Schema {
    let schema = <List<Map<String, Value>>>::json_schema(generator);
    named(generator, "List", schema)
}

/// The body of `PUT /api/v1/clusters/{cluster}/labels`, the map the handler reads.
fn label_patch(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = <BTreeMap<String, Option<String>>>::json_schema(generator);
    schema.insert(
        "description".into(),
        "label key to its new value, or null to remove it".into(),
    );
    named(generator, "LabelPatch", schema)
}

/// Answers that are a single JSON object.
const CLUSTER: &[(u16, Body)] = &[(200, Body::Json(of::<ManagedCluster>))];
const WORK: &[(u16, Body)] = &[(200, Body::Json(of::<ManifestWork>))];
const OBJECT: &[(u16, Body)] = &[(200, Body::Json(object))];
const LIST: &[(u16, Body)] = &[(200, Body::Json(list))];
const TEXT: &[(u16, Body)] = &[(200, Body::Text)];

use Query::*;
const LIST_QUERY: &[Query] = &[LabelSelector, Index, Wait, Epoch];
const WORK_LIST_QUERY: &[Query] = &[LabelSelector, Limit, Continue, Index, Wait, Epoch];
const BLOCKING_GET: &[Query] = &[Index, Wait, Epoch];
/// Errors of a write that takes a body: too large, invalid, conflicting, database down.
const BODY_WRITE: &[u16] = &[404, 409, 413, 422, 503];
/// Errors of an operation on one named object.
const ONE_OBJECT: &[u16] = &[404, 422, 503];

const OPERATIONS: &[Operation] = &[
    Operation {
        method: "GET",
        path: "/healthz",
        id: "healthz",
        summary: "Liveness",
        body: None,
        query: &[],
        ok: TEXT,
        errors: &[],
        caller: Caller::Anyone,
    },
    Operation {
        method: "GET",
        path: "/readyz",
        id: "readyz",
        summary: "Readiness: the database answers",
        body: None,
        query: &[],
        ok: TEXT,
        errors: &[503],
        caller: Caller::Anyone,
    },
    Operation {
        method: "GET",
        path: "/metrics",
        id: "metrics",
        summary: "Prometheus metrics",
        body: None,
        query: &[],
        ok: TEXT,
        errors: &[],
        caller: Caller::Anyone,
    },
    Operation {
        method: "GET",
        path: "/version",
        id: "version",
        summary: "The hub's version",
        body: None,
        query: &[],
        ok: OBJECT,
        errors: &[],
        caller: Caller::Anyone,
    },
    Operation {
        method: "GET",
        path: "/api/v1/openapi.json",
        id: "openapi",
        summary: "This document",
        body: None,
        query: &[],
        ok: OBJECT,
        errors: &[],
        caller: Caller::Anyone,
    },
    Operation {
        method: "GET",
        path: "/api/v1/cluster-info",
        id: "clusterInfo",
        summary: "CA bundle and server URL, for pinning",
        body: None,
        query: &[],
        ok: &[(200, Body::Json(of::<ClusterInfo>))],
        errors: &[],
        caller: Caller::Anyone,
    },
    Operation {
        method: "GET",
        path: "/api/v1/clusters",
        id: "listClusters",
        summary: "List clusters (labelSelector, index, wait)",
        body: None,
        query: LIST_QUERY,
        ok: LIST,
        errors: &[503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/clusters/{cluster}",
        id: "getCluster",
        summary: "Read a cluster (index, wait)",
        body: None,
        query: BLOCKING_GET,
        ok: CLUSTER,
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}",
        id: "putCluster",
        summary: "Create or update a cluster (admin)",
        body: Some(of::<ManagedCluster>),
        query: &[],
        ok: &[
            (200, Body::Json(of::<ManagedCluster>)),
            (201, Body::Json(of::<ManagedCluster>)),
        ],
        errors: BODY_WRITE,
        caller: Caller::Token,
    },
    Operation {
        method: "DELETE",
        path: "/api/v1/clusters/{cluster}",
        id: "deleteCluster",
        summary: "Delete a cluster and its works (force=true: at once)",
        body: None,
        query: &[Force],
        ok: &[
            (200, Body::Json(of::<ClusterDeletion>)),
            (202, Body::Json(of::<ClusterDeletion>)),
        ],
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}/labels",
        id: "putClusterLabels",
        summary: "Set or remove cluster labels (admin)",
        body: Some(label_patch),
        query: &[],
        ok: CLUSTER,
        errors: BODY_WRITE,
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/clusters/{cluster}/manifestworks",
        id: "listWorks",
        summary: "List a cluster's works (labelSelector, limit, continue, index, wait)",
        body: None,
        query: WORK_LIST_QUERY,
        ok: LIST,
        errors: &[422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}",
        id: "getWork",
        summary: "Read a work (index, wait)",
        body: None,
        query: BLOCKING_GET,
        ok: WORK,
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}",
        id: "putWork",
        summary: "Create or replace a work (If-Match, metadata.resourceVersion; dryRun=All only checks)",
        body: Some(of::<ManifestWork>),
        query: &[DryRun],
        ok: &[
            (200, Body::Json(of::<ManifestWork>)),
            (201, Body::Json(of::<ManifestWork>)),
        ],
        errors: &[404, 409, 412, 413, 422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "DELETE",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}",
        id: "deleteWork",
        summary: "Ask for a work's deletion",
        body: None,
        query: &[],
        ok: &[
            (200, Body::Json(of::<ManifestWork>)),
            (202, Body::Json(of::<ManifestWork>)),
        ],
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}/history",
        id: "getWorkHistory",
        summary: "The work's own audit entries, newest first (readers of the work; limit)",
        body: None,
        query: &[HistoryLimit],
        ok: LIST,
        errors: &[422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}/status",
        id: "putWorkStatus",
        summary: "Write a work's status (agent)",
        body: Some(of::<StatusUpdate>),
        query: &[],
        ok: WORK,
        errors: BODY_WRITE,
        caller: Caller::Token,
    },
    Operation {
        method: "DELETE",
        path: "/api/v1/clusters/{cluster}/manifestworks/{name}/finalizers",
        id: "removeWorkFinalizer",
        summary: "Remove a finalizer (agent; ?name=)",
        body: None,
        query: &[Finalizer],
        ok: WORK,
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/manifestworks",
        id: "listAllWorks",
        summary: "List works across clusters (labelSelector, clusterSelector, limit, continue, index, wait)",
        body: None,
        query: &[
            LabelSelector,
            ClusterSelector,
            Limit,
            Continue,
            Index,
            Wait,
            Epoch,
        ],
        ok: LIST,
        errors: &[503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/manifestworks/summary",
        id: "summarizeWorks",
        summary: "Per work name across clusters: applied/available/ready/degraded/progressing/unknown counts and failing resources (name, labelSelector, clusterSelector, index, wait)",
        body: None,
        query: &[WorkName, LabelSelector, ClusterSelector, Index, Wait, Epoch],
        ok: LIST,
        errors: &[503],
        caller: Caller::Token,
    },
    Operation {
        method: "POST",
        path: "/api/v1/clusters/{cluster}/revoke",
        id: "revokeCluster",
        summary: "Cut a cluster's agent off at once (admin)",
        body: None,
        query: &[],
        ok: CLUSTER,
        errors: ONE_OBJECT,
        caller: Caller::Token,
    },
    Operation {
        method: "PUT",
        path: "/api/v1/clusters/{cluster}/lease",
        id: "renewLease",
        summary: "Renew the cluster's lease (agent)",
        body: Some(of::<LeaseRenewal>),
        query: &[],
        ok: &[(200, Body::Json(of::<LeaseStatus>))],
        errors: BODY_WRITE,
        caller: Caller::Token,
    },
    Operation {
        method: "POST",
        path: "/api/v1/clusters/{cluster}/credentials",
        id: "issueCredentials",
        summary: "Trade an assertion signed by the agent's key for an access token",
        body: Some(of::<CredentialRequest>),
        query: &[],
        ok: &[(200, Body::Json(of::<AccessToken>))],
        errors: &[401, 403, 404, 413, 422, 503],
        caller: Caller::Assertion,
    },
    Operation {
        method: "POST",
        path: "/api/v1/tokens",
        id: "createToken",
        summary: "Create a bootstrap or api token (admin)",
        body: Some(of::<TokenRequest>),
        query: &[],
        ok: &[(201, Body::Json(object))],
        errors: &[413, 422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/tokens",
        id: "listTokens",
        summary: "List tokens without secrets (admin)",
        body: None,
        query: &[],
        ok: LIST,
        errors: &[503],
        caller: Caller::Token,
    },
    Operation {
        method: "DELETE",
        path: "/api/v1/tokens/{id}",
        id: "revokeToken",
        summary: "Revoke a token (admin)",
        body: None,
        query: &[],
        ok: OBJECT,
        errors: &[404, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "POST",
        path: "/api/v1/registrations",
        id: "register",
        summary: "Ask to join (bootstrap token)",
        body: Some(of::<RegistrationRequest>),
        query: &[],
        ok: &[(201, Body::Json(object))],
        errors: &[409, 413, 422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/registrations",
        id: "listRegistrations",
        summary: "List join requests (admin; index, wait)",
        body: None,
        query: BLOCKING_GET,
        ok: LIST,
        errors: &[503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/registrations/{id}",
        id: "getRegistration",
        summary: "Read a join request (admin or the joining agent; index, wait)",
        body: None,
        query: BLOCKING_GET,
        ok: OBJECT,
        errors: &[404, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "POST",
        path: "/api/v1/registrations/{id}/accept",
        id: "acceptRegistration",
        summary: "Accept a join request (admin)",
        body: None,
        query: &[],
        ok: OBJECT,
        errors: &[404, 409, 422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "POST",
        path: "/api/v1/registrations/{id}/deny",
        id: "denyRegistration",
        summary: "Deny a join request (admin)",
        body: None,
        query: &[],
        ok: OBJECT,
        errors: &[404, 409, 422, 503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/audit",
        id: "listAudit",
        summary: "The audit log, newest first (admin; target, limit)",
        body: None,
        query: &[Target, HistoryLimit],
        ok: LIST,
        errors: &[503],
        caller: Caller::Token,
    },
    Operation {
        method: "GET",
        path: "/api/v1/backup",
        id: "backup",
        summary: "A consistent copy of the SQLite database, taken while serving (admin; 409 on Postgres)",
        body: None,
        query: &[],
        ok: &[(200, Body::File("application/vnd.sqlite3"))],
        errors: &[409, 503],
        caller: Caller::Token,
    },
];

/// A query parameter some handler reads.
#[derive(Clone, Copy)]
enum Query {
    LabelSelector,
    ClusterSelector,
    /// The page size of a list.
    Limit,
    /// `limit` of the audit log and a work's history.
    HistoryLimit,
    Continue,
    Index,
    Wait,
    Epoch,
    Force,
    /// `name` of the finalizer to remove.
    Finalizer,
    /// `name` of the works to summarize.
    WorkName,
    DryRun,
    Target,
}

/// How a query parameter is described.
struct Parameter {
    /// Its name on the wire.
    name: &'static str,
    required: bool,
    schema: Value,
    description: &'static str,
}

impl Query {
    fn parameter(self) -> Parameter {
        let string = json!({"type": "string"});
        let (name, required, schema, description) = match self {
            LabelSelector => (
                "labelSelector",
                false,
                string,
                "kubectl-style label selector: `app=web,tier!=db,env in (a,b),!legacy`",
            ),
            ClusterSelector => (
                "clusterSelector",
                false,
                string,
                "label selector on the works' clusters",
            ),
            Limit => (
                "limit",
                false,
                json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
                "page size; 0 or absent: everything (pages are cut at 10,000)",
            ),
            HistoryLimit => (
                "limit",
                false,
                json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
                "most entries (default 100, at most 10,000)",
            ),
            Continue => (
                "continue",
                false,
                string,
                "the `metadata.continue` of the previous page",
            ),
            Index => (
                "index",
                false,
                json!({"type": "integer", "minimum": 0, "maximum": u64::MAX}),
                "block until something the answer holds changed past this change index",
            ),
            Wait => (
                "wait",
                false,
                json!({"type": "string", "pattern": "^ *([0-9]+|([0-9]+(\\.[0-9]*)?(ms|s|m|h))+) *$"}),
                "how long to block with `index`: `250ms`, `30s`, `5m`, `1m30s`, or seconds (default 60 s, at most 300 s)",
            ),
            Epoch => (
                "epoch",
                false,
                json!({"type": "string", "pattern": "^[0-9a-f]{1,64}$"}),
                "the `X-Hub-Epoch` the `index` was read in; another one (the database was restored since) answers at once, from scratch",
            ),
            Force => (
                "force",
                false,
                json!({"type": "boolean"}),
                "remove the records at once, whatever the agent did",
            ),
            Finalizer => (
                "name",
                true,
                json!({"type": "string", "minLength": 1}),
                "the finalizer to remove, e.g. `klusterlet/cleanup`",
            ),
            WorkName => ("name", false, string, "only works of this name"),
            DryRun => (
                "dryRun",
                false,
                json!({"type": "string", "enum": ["All"]}),
                "`All`: check the work and answer it as a read by this caller would show it (Secret data masked without the `secrets` verb); nothing is stored",
            ),
            Target => (
                "target",
                false,
                string,
                "only entries for this target and below, e.g. `clusters/c1`",
            ),
        };
        Parameter {
            name,
            required,
            schema,
            description,
        }
    }

    /// Whether the handlers treat the parameter sent empty (`?wait=&limit=`) as absent, as
    /// Kubernetes does.
    fn empty_means_absent(self) -> bool {
        !matches!(self, Finalizer | WorkName)
    }
}

fn error_description(code: u16) -> &'static str {
    match code {
        400 => "malformed: the body, a path segment or a query parameter cannot be parsed",
        401 => "unauthorized: no valid credentials",
        403 => "forbidden: valid credentials without the right",
        404 => "not_found",
        409 => "conflict (stale resourceVersion) or deleting",
        412 => "precondition_failed: If-Match did not match",
        413 => "too_large: the body is over --max-work-bytes",
        422 => "invalid: details name each bad field",
        503 => "unavailable: the database cannot be reached",
        _ => "error",
    }
}

fn operation(route: &Operation, generator: &mut SchemaGenerator) -> Value {
    let mut parameters = Vec::new();
    for segment in route
        .path
        .split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    {
        parameters.push(json!({
            "name": segment,
            "in": "path",
            "required": true,
            "schema": {"type": "string", "minLength": 1},
        }));
    }
    for query in route.query {
        let Parameter {
            name,
            required,
            schema,
            description,
        } = query.parameter();
        let mut parameter = json!({
            "name": name,
            "in": "query",
            "required": required,
            "description": description,
            "schema": schema,
        });
        if query.empty_means_absent() {
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
        let schema = body(generator);
        op["requestBody"] = json!({
            "required": true,
            "content": {
                "application/json": {"schema": schema},
                "application/yaml": {"schema": schema},
            }
        });
    }
    if route.caller == Caller::Token {
        op["security"] = json!([{"bearer": []}]);
    }
    for (code, body) in route.ok {
        let (media, schema) = match body {
            Body::Json(shape) => ("application/json", shape(generator)),
            Body::Text => (
                "text/plain",
                named(generator, "text", json_schema!({"type": "string"})),
            ),
            Body::File(media) => (*media, json_schema!({"type": "string", "format": "binary"})),
        };
        op["responses"][code.to_string()] = json!({
            "description": "OK",
            "content": {media: {"schema": schema}},
        });
    }
    let auth: &[u16] = match route.caller {
        Caller::Token => &[401, 403],
        Caller::Anyone | Caller::Assertion => &[],
    };
    let error_body = of::<ErrorBody>(generator);
    for code in [400].iter().chain(auth).chain(route.errors) {
        op["responses"][code.to_string()] = json!({
            "description": error_description(*code),
            "content": {"application/json": {"schema": error_body}},
        });
    }
    op
}

/// Gives every derived integer the range of its Rust type: a fuzzer then builds numbers the
/// type holds, and one past the range is a value the hub must refuse.
#[derive(Clone)]
struct IntegerRanges;

impl Transform for IntegerRanges {
    fn transform(&mut self, schema: &mut Schema) {
        let range = match schema.get("format").and_then(Value::as_str) {
            Some("int32") => Some((json!(i32::MIN), json!(i32::MAX))),
            Some("uint32") => Some((json!(0), json!(u32::MAX))),
            Some("int64") => Some((json!(i64::MIN), json!(i64::MAX))),
            Some("uint64") => Some((json!(0), json!(u64::MAX))),
            _ => None,
        };
        if let Some((minimum, maximum)) = range {
            schema.insert("minimum".into(), minimum);
            schema.insert("maximum".into(), maximum);
        }
        transform_subschemas(self, schema);
    }
}

fn document() -> Value {
    // JSON Schema 2020-12 is OpenAPI 3.1's dialect; schemars' deserialize contract (its
    // default) describes what serde accepts, which is what the fuzzer must respect.
    let mut generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.definitions_path = "/components/schemas".into();
            settings.meta_schema = None;
        })
        .with_transform(IntegerRanges)
        .into_generator();
    let mut paths = Map::new();
    for route in OPERATIONS.iter().chain(fleet::OPERATIONS) {
        let method = route.method.to_ascii_lowercase();
        let op = operation(route, &mut generator);
        paths
            .entry(route.path)
            .or_insert_with(|| json!({}))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(method, op);
    }
    let schemas: BTreeMap<String, Value> = generator.take_definitions(true).into_iter().collect();
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
    fn every_reference_resolves_and_every_operation_is_there() {
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
        assert_eq!(operations, OPERATIONS.len() + fleet::OPERATIONS.len());
    }

    #[test]
    fn derived_integers_carry_their_range() {
        let doc = document();
        let ordinal =
            &doc["components"]["schemas"]["ManifestResourceMeta"]["properties"]["ordinal"];
        assert_eq!(ordinal["minimum"], json!(i32::MIN), "{ordinal}");
        assert_eq!(ordinal["maximum"], json!(i32::MAX), "{ordinal}");
    }

    #[test]
    fn a_list_says_its_index_epoch() {
        let doc = document();
        let epoch = &doc["components"]["schemas"]["ListMeta"]["properties"]["epoch"];
        assert!(
            epoch["description"]
                .as_str()
                .is_some_and(|d| d.contains("X-Hub-Epoch")),
            "{epoch}"
        );
    }
}
