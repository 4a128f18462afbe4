//! `/api/v1/openapi.json`, generated with utoipa from the route table below.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Required,
};

/// (method, path, operation id, summary, takes a body, needs a token)
const ROUTES: &[(HttpMethod, &str, &str, &str, bool, bool)] = &[
    (
        HttpMethod::Get,
        "/healthz",
        "healthz",
        "Liveness",
        false,
        false,
    ),
    (
        HttpMethod::Get,
        "/readyz",
        "readyz",
        "Readiness: the database answers",
        false,
        false,
    ),
    (
        HttpMethod::Get,
        "/metrics",
        "metrics",
        "Prometheus metrics",
        false,
        false,
    ),
    (
        HttpMethod::Get,
        "/api/v1/openapi.json",
        "openapi",
        "This document",
        false,
        false,
    ),
    (
        HttpMethod::Get,
        "/api/v1/cluster-info",
        "clusterInfo",
        "CA bundle and server URL, for pinning",
        false,
        false,
    ),
    (
        HttpMethod::Get,
        "/api/v1/clusters",
        "listClusters",
        "List clusters (labelSelector, index, wait)",
        false,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/clusters/{cluster}",
        "getCluster",
        "Read a cluster",
        false,
        true,
    ),
    (
        HttpMethod::Put,
        "/api/v1/clusters/{cluster}",
        "putCluster",
        "Create or update a cluster (admin)",
        true,
        true,
    ),
    (
        HttpMethod::Delete,
        "/api/v1/clusters/{cluster}",
        "deleteCluster",
        "Delete a cluster and its works (force=true: at once)",
        false,
        true,
    ),
    (
        HttpMethod::Put,
        "/api/v1/clusters/{cluster}/labels",
        "putClusterLabels",
        "Set or remove cluster labels (admin)",
        true,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/clusters/{cluster}/manifestworks",
        "listWorks",
        "List a cluster's works (labelSelector, limit, continue, index, wait)",
        false,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/clusters/{cluster}/manifestworks/{name}",
        "getWork",
        "Read a work (index, wait)",
        false,
        true,
    ),
    (
        HttpMethod::Put,
        "/api/v1/clusters/{cluster}/manifestworks/{name}",
        "putWork",
        "Create or replace a work (If-Match, metadata.resourceVersion)",
        true,
        true,
    ),
    (
        HttpMethod::Delete,
        "/api/v1/clusters/{cluster}/manifestworks/{name}",
        "deleteWork",
        "Ask for a work's deletion",
        false,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/clusters/{cluster}/manifestworks/{name}/history",
        "getWorkHistory",
        "The work's own audit entries, newest first (readers of the work; limit)",
        false,
        true,
    ),
    (
        HttpMethod::Put,
        "/api/v1/clusters/{cluster}/manifestworks/{name}/status",
        "putWorkStatus",
        "Write a work's status (agent)",
        true,
        true,
    ),
    (
        HttpMethod::Delete,
        "/api/v1/clusters/{cluster}/manifestworks/{name}/finalizers",
        "removeWorkFinalizer",
        "Remove a finalizer (agent; ?name=)",
        false,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/manifestworks",
        "listAllWorks",
        "List works across clusters (labelSelector, clusterSelector, index, wait)",
        false,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/manifestworks/summary",
        "summarizeWorks",
        "Per work name across clusters: applied/available/ready/degraded/progressing/unknown counts and failing resources (name, labelSelector, clusterSelector, index, wait)",
        false,
        true,
    ),
    (
        HttpMethod::Post,
        "/api/v1/clusters/{cluster}/revoke",
        "revokeCluster",
        "Cut a cluster's agent off at once (admin)",
        false,
        true,
    ),
    (
        HttpMethod::Put,
        "/api/v1/clusters/{cluster}/lease",
        "renewLease",
        "Renew the cluster's lease (agent)",
        true,
        true,
    ),
    (
        HttpMethod::Post,
        "/api/v1/clusters/{cluster}/credentials",
        "issueCredentials",
        "Trade an assertion signed by the agent's key for an access token",
        true,
        false,
    ),
    (
        HttpMethod::Post,
        "/api/v1/tokens",
        "createToken",
        "Create a bootstrap or api token (admin)",
        true,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/tokens",
        "listTokens",
        "List tokens without secrets (admin)",
        false,
        true,
    ),
    (
        HttpMethod::Delete,
        "/api/v1/tokens/{id}",
        "revokeToken",
        "Revoke a token (admin)",
        false,
        true,
    ),
    (
        HttpMethod::Post,
        "/api/v1/registrations",
        "register",
        "Ask to join (bootstrap token)",
        true,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/registrations",
        "listRegistrations",
        "List join requests (admin; index, wait)",
        false,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/registrations/{id}",
        "getRegistration",
        "Read a join request (admin or the joining agent; index, wait)",
        false,
        true,
    ),
    (
        HttpMethod::Post,
        "/api/v1/registrations/{id}/accept",
        "acceptRegistration",
        "Accept a join request (admin)",
        false,
        true,
    ),
    (
        HttpMethod::Post,
        "/api/v1/registrations/{id}/deny",
        "denyRegistration",
        "Deny a join request (admin)",
        false,
        true,
    ),
    (
        HttpMethod::Get,
        "/api/v1/audit",
        "listAudit",
        "The audit log, newest first (admin; target, limit)",
        false,
        true,
    ),
];

fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut items: Vec<(&str, PathItem)> = Vec::new();
    for (method, path, id, summary, body, auth) in ROUTES {
        let mut op = OperationBuilder::new()
            .operation_id(Some(*id))
            .summary(Some(*summary));
        for seg in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(seg)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True),
            );
        }
        if *body {
            let content = ContentBuilder::new().build();
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", content.clone())
                    .content("application/yaml", content)
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        if *auth {
            op = op.security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        for (code, what) in [
            ("200", "OK"),
            ("400", "malformed"),
            ("401", "unauthorized"),
            ("404", "not_found"),
            ("422", "invalid"),
        ] {
            op = op.response(code, ResponseBuilder::new().description(what).build());
        }
        let op = op.build();
        match items.iter_mut().find(|(p, _)| p == path) {
            Some((_, item)) => item.merge_operations(PathItem::new(method.clone(), op)),
            None => items.push((path, PathItem::new(method.clone(), op))),
        }
    }
    for (p, item) in items {
        paths = paths.path(p, item);
    }
    let bearer = SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build());
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("fleethub hub API")
                .version("v1")
                .build(),
        )
        .paths(paths.build())
        .components(Some(
            ComponentsBuilder::new()
                .security_scheme("bearer", bearer)
                .build(),
        ))
        .build()
}

/// Serves the document (built once).
pub async fn serve() -> Json<&'static OpenApi> {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    Json(DOC.get_or_init(document))
}
