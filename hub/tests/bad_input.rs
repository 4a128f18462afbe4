//! Bad input at scale, as property tests: generated bodies for `PUT
//! /api/v1/clusters/{cluster}/manifestworks/{name}` go through the real router on a real
//! SQLite store, so each one takes the handler's own path: the `Doc<ManifestWork>`
//! extractor (UTF-8, JSON or YAML by content type or sniffing, duplicate keys, decoding
//! with the field named) and then the service's validation of names, labels and manifests.
//!
//! Bad inputs tried:
//! * arbitrary bytes, and soups of JSON and YAML tokens (brackets, anchors, aliases, tags,
//!   document markers, indentation), under every content type and none;
//! * valid works in JSON and YAML cut short, with a byte flipped, or with invalid UTF-8
//!   (a lone continuation byte, an overlong encoding, a surrogate, 0xFF) spliced in;
//! * wrong types: each modelled field of a good work replaced by a value of another JSON
//!   type (null where not nullable, booleans, integers, floats, integers past i64, strings,
//!   arrays, objects), unknown enum values, timestamps that are not RFC 3339;
//! * nesting of 50 to 20,000 levels, of arrays and of objects, as the whole body, inside a
//!   manifest, under an unknown field and as a label value, in JSON and in YAML;
//! * bad names: work and cluster names in the path and `metadata.name`/`namespace` that are
//!   empty, too long, uppercase, with `_`, dots in the wrong place, unicode or control
//!   characters (percent-encoded into the path), and label keys and values likewise;
//! * bad manifests: not objects, or without `apiVersion`, `kind` or `metadata.name`;
//! * duplicate keys, in JSON and in YAML, at the top and nested;
//! * big documents: long strings, thousands of labels or manifests, bodies over the limit;
//! * a NUL (`%00`) in path segments and query values of reads and writes;
//! * an `epoch` that is not 1 to 64 lowercase hex digits, on blocking reads.
//!
//! Every answer must be a 2xx or a 4xx whose body is the JSON `ErrorBody` with the code
//! that belongs to its status (and for 422 the list of bad fields); never a 5xx, a panic
//! (the router turns one into a 500), a body that is not JSON, or a hang. Valid works with
//! arbitrary manifest content are stored and read back unchanged, from JSON and from YAML.
//!
//! Each property runs a bounded number of cases (all of them together well under 30 s in
//! a debug build); `PROPTEST_CASES=N` runs N cases of each instead.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use hub::http::{AppState, ClusterInfo, router};
use hub::service::Hub;
use hub::service::authn::Auth;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};
use tower::ServiceExt;

const TOKEN: &str = "fuzz-admin-token";
/// The body limit of these tests' hub; documents are generated on both sides of it.
const MAX_BODY: usize = 64 * 1024;

/// A hub on a fresh SQLite store with cluster `c1`, driven on a current-thread runtime so
/// each generated case is one plain function call.
struct Fixture {
    app: Router,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let app = rt.block_on(async {
            let store = hub::store::connect(&url).await.unwrap();
            let hub = Hub::start(store.clone()).await.unwrap();
            let (auth, _) = Auth::init(store, Some(TOKEN), std::time::Duration::from_secs(3600))
                .await
                .unwrap();
            router(AppState {
                hub,
                auth: Arc::new(auth),
                cluster_info: Arc::new(ClusterInfo {
                    server: "https://127.0.0.1:1".into(),
                    certificate_authority_data: "PEM".into(),
                    ca_hash: "sha256:00".into(),
                }),
                max_body_bytes: MAX_BODY,
            })
        });
        let f = Fixture { app, rt, _dir: dir };
        let a = f.call(
            "PUT",
            "/api/v1/clusters/c1",
            Some("application/json"),
            b"{}",
        );
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
        f
    }

    fn call(&self, method: &str, uri: &str, content_type: Option<&str>, body: &[u8]) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {TOKEN}"));
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(Body::from(body.to_vec())).unwrap();
        self.rt.block_on(async {
            // A hang is a failure too: nothing here blocks by design.
            let resp = tokio::time::timeout(
                std::time::Duration::from_secs(20),
                self.app.clone().oneshot(req),
            )
            .await
            .expect("the hub answered within 20 s")
            .unwrap();
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec();
            Answer { status, body }
        })
    }

    fn put_work(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Answer {
        self.call("PUT", path, content_type, body)
    }
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body)
            .chars()
            .take(600)
            .collect()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// The rule: a 2xx, or a 4xx with the JSON error body whose code belongs to the status.
fn check(a: &Answer) -> Result<(), TestCaseError> {
    let status = a.status;
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "status {status}: {}",
        a.text()
    );
    if status.is_success() {
        return Ok(());
    }
    let body: api::ErrorBody = serde_json::from_slice(&a.body).map_err(|e| {
        TestCaseError::fail(format!("{status} without an ErrorBody ({e}): {}", a.text()))
    })?;
    let allowed: &[&str] = match status.as_u16() {
        400 => &["malformed"],
        404 => &["not_found"],
        409 => &["conflict", "deleting"],
        412 => &["precondition_failed"],
        413 => &["too_large"],
        422 => &["invalid"],
        other => {
            return Err(TestCaseError::fail(format!(
                "unexpected status {other}: {}",
                a.text()
            )));
        }
    };
    prop_assert!(
        allowed.contains(&body.code.as_str()),
        "{status} with code {}",
        body.code
    );
    prop_assert!(!body.message.is_empty(), "{status} with an empty message");
    if status == StatusCode::UNPROCESSABLE_ENTITY {
        let fields: Vec<api::FieldError> = body
            .details
            .clone()
            .and_then(|d| serde_json::from_value(d).ok())
            .unwrap_or_default();
        prop_assert!(
            !fields.is_empty(),
            "422 without the bad fields: {}",
            a.text()
        );
    }
    Ok(())
}

/// Like [`check`], and the answer must be a refusal.
fn check_refused(a: &Answer) -> Result<(), TestCaseError> {
    check(a)?;
    prop_assert!(
        a.status.is_client_error(),
        "accepted ({}): {}",
        a.status,
        a.text()
    );
    Ok(())
}

fn config(cases: u32) -> Config {
    let mut c = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    // Failures print the shrunk input; no regression files in the source tree.
    c.failure_persistence = None;
    c
}

fn run<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(config(cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

const W: &str = "/api/v1/clusters/c1/manifestworks/w1";

fn good_work() -> Value {
    json!({
        "apiVersion": "work.open-cluster-management.io/v1",
        "kind": "ManifestWork",
        "metadata": {
            "name": "w1",
            "namespace": "c1",
            "labels": {"app": "web"},
            "annotations": {"example.com/note": "hi"},
            "generation": 3,
            "resourceVersion": null,
            "creationTimestamp": "2024-01-02T03:04:05Z",
            "finalizers": []
        },
        "spec": {
            "workload": {"manifests": [
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "default"}, "data": {"k": "v"}}
            ]},
            "deleteOption": {"propagationPolicy": "Foreground", "ttlSecondsAfterFinished": 10},
            "manifestConfigs": [{
                "resourceIdentifier": {"group": "", "resource": "configmaps", "name": "cm", "namespace": "default"},
                "feedbackRules": [{"type": "JSONPaths", "jsonPaths": [{"name": "k", "path": ".data.k"}]}],
                "updateStrategy": {"type": "ServerSideApply", "serverSideApply": {"force": true, "fieldManager": "m"}}
            }]
        },
        "status": {"conditions": [{"type": "Applied", "status": "True", "observedGeneration": 1}]}
    })
}

fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).expect("a JSON value serializes as YAML")
}

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/yaml"),
    Some("application/x-yaml"),
    Some("text/yaml"),
    Some("text/plain"),
    Some("application/octet-stream"),
    Some("application/merge-patch+json"),
];

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    proptest::sample::select(CONTENT_TYPES)
}

/// Pieces of JSON and YAML syntax; concatenated at random they reach far more parser
/// states than uniform bytes do.
const TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\"a\"",
    "\"metadata\"",
    "\"spec\"",
    "\"name\"",
    "1",
    "-1",
    "1e999",
    "0.5",
    "null",
    "true",
    "~",
    "\n",
    "\n  ",
    "- ",
    "---\n",
    "...\n",
    "&a ",
    "*a",
    "!!str ",
    "!!binary ",
    "!custom ",
    "? ",
    "|\n  ",
    ">-\n  ",
    "#",
    "%YAML 1.2\n",
    "\\u0000",
    "\\ud800",
    "\t",
    "<<: *a\n",
    "\u{feff}",
    "é",
    "'",
    "''",
    "\\",
];

fn token_soup() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(proptest::sample::select(TOKENS), 0..200)
        .prop_map(|t| t.concat().into_bytes())
}

#[test]
fn arbitrary_bytes_are_refused_with_a_json_error() {
    let f = Fixture::new();
    let bytes = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        token_soup(),
        "\\PC{0,300}".prop_map(String::into_bytes),
    ];
    run(768, (content_type(), bytes), |(ct, body)| {
        let a = f.put_work(W, ct, &body);
        check(&a)
    });
}

/// How a valid document is broken.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    Splice(usize, &'static [u8]),
}

const BAD_UTF8: &[&[u8]] = &[
    b"\x80",
    b"\xc3\x28",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xff",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
];

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Damage::Flip(i, x)),
        (any::<usize>(), proptest::sample::select(BAD_UTF8))
            .prop_map(|(i, b)| Damage::Splice(i, b)),
    ]
}

#[test]
fn damaged_documents_are_refused_with_a_json_error() {
    let f = Fixture::new();
    let json_text = good_work().to_string().into_bytes();
    let yaml_text = yaml(&good_work()).into_bytes();
    run(512, (any::<bool>(), damage()), |(as_yaml, d)| {
        let mut body = if as_yaml {
            yaml_text.clone()
        } else {
            json_text.clone()
        };
        let ct = if as_yaml {
            "application/yaml"
        } else {
            "application/json"
        };
        let len = body.len();
        let invalid_utf8 = match d {
            Damage::Truncate(i) => {
                body.truncate(i % len);
                false
            }
            Damage::Flip(i, x) => {
                body[i % len] ^= x;
                std::str::from_utf8(&body).is_err()
            }
            Damage::Splice(i, bytes) => {
                let at = i % len;
                body.splice(at..at, bytes.iter().copied());
                true
            }
        };
        let a = f.put_work(W, Some(ct), &body);
        check(&a)?;
        if invalid_utf8 {
            prop_assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
        }
        Ok(())
    });
}

/// A JSON value of any type, up to a small depth.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The JSON type of a value, as the wire types tell them apart.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Null,
    Bool,
    Int,
    BigInt,
    Float,
    Str,
    Array,
    Object,
}

fn kind(v: &Value) -> Kind {
    match v {
        Value::Null => Kind::Null,
        Value::Bool(_) => Kind::Bool,
        Value::Number(n) if n.is_i64() => Kind::Int,
        Value::Number(n) if n.is_u64() => Kind::BigInt,
        Value::Number(_) => Kind::Float,
        Value::String(_) => Kind::Str,
        Value::Array(_) => Kind::Array,
        Value::Object(_) => Kind::Object,
    }
}

use Kind::*;

/// Modelled fields of a ManifestWork (JSON pointers into [`good_work`]) and the types
/// serde takes there; any other type must be a 422.
const FIELDS: &[(&str, &[Kind])] = &[
    ("/apiVersion", &[Str]),
    ("/kind", &[Str]),
    ("/metadata", &[Object]),
    ("/metadata/name", &[Str]),
    ("/metadata/namespace", &[Str, Null]),
    ("/metadata/labels", &[Object]),
    ("/metadata/labels/app", &[Str]),
    ("/metadata/annotations", &[Object]),
    ("/metadata/annotations/example.com~1note", &[Str]),
    ("/metadata/generation", &[Int, Null]),
    ("/metadata/resourceVersion", &[Str, Null]),
    ("/metadata/creationTimestamp", &[Null]),
    ("/metadata/finalizers", &[Array]),
    ("/spec", &[Object]),
    ("/spec/workload", &[Object]),
    ("/spec/workload/manifests", &[Array]),
    ("/spec/workload/manifests/0", &[Object]),
    ("/spec/deleteOption", &[Object, Null]),
    ("/spec/deleteOption/propagationPolicy", &[]),
    ("/spec/deleteOption/ttlSecondsAfterFinished", &[Int, Null]),
    ("/spec/manifestConfigs", &[Array]),
    ("/spec/manifestConfigs/0", &[Object]),
    // serde's derived structs without a flattened `extra` also take their fields as a
    // sequence (`["", "deployments", "web", "default"]`): a known leniency, not refused.
    (
        "/spec/manifestConfigs/0/resourceIdentifier",
        &[Object, Array],
    ),
    ("/spec/manifestConfigs/0/resourceIdentifier/name", &[Str]),
    ("/spec/manifestConfigs/0/feedbackRules", &[Array]),
    ("/spec/manifestConfigs/0/feedbackRules/0/type", &[]),
    (
        "/spec/manifestConfigs/0/feedbackRules/0/jsonPaths/0/path",
        &[Str],
    ),
    (
        "/spec/manifestConfigs/0/updateStrategy",
        &[Object, Null, Array],
    ),
    ("/spec/manifestConfigs/0/updateStrategy/type", &[]),
    (
        "/spec/manifestConfigs/0/updateStrategy/serverSideApply/force",
        &[Bool],
    ),
    ("/status", &[Object]),
    ("/status/conditions", &[Array]),
    ("/status/conditions/0/type", &[Str]),
    ("/status/conditions/0/observedGeneration", &[Int, Null]),
];

#[test]
fn wrong_types_are_422() {
    let f = Fixture::new();
    let cases = (
        proptest::sample::select(FIELDS),
        any_json(),
        any::<bool>(),
    )
        .prop_filter("a type the field does not take", |((_, kinds), v, _)| {
            !kinds.contains(&kind(v))
                // Enums and timestamps (empty `kinds`) take some strings: only other
                // strings are wrong there, and `any_json` makes those too.
                && !matches!(v.as_str(), Some("Foreground" | "Orphan" | "SelectivelyOrphan" | "WellKnownStatus" | "JSONPaths" | "Update" | "CreateOnly" | "ServerSideApply" | "ReadOnly"))
        });
    run(768, cases, |((pointer, _), value, as_yaml)| {
        let mut doc = good_work();
        *doc.pointer_mut(pointer)
            .expect("the pointer is in good_work") = value;
        let (ct, body) = if as_yaml {
            ("application/yaml", yaml(&doc))
        } else {
            ("application/json", doc.to_string())
        };
        let a = f.put_work(W, Some(ct), body.as_bytes());
        check_refused(&a)?;
        prop_assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
        Ok(())
    });
}

/// Where deep nesting is put.
#[derive(Debug, Clone, Copy)]
enum Nest {
    Body,
    Manifest,
    UnknownField,
    LabelValue,
}

/// The value `nested_text` spells. Built directly: `json!` would serialize the inner value
/// again at every level.
fn nested(depth: usize, arrays: bool) -> Value {
    let mut v = json!("bottom");
    for _ in 0..depth {
        v = if arrays {
            Value::Array(vec![v])
        } else {
            Value::Object(Map::from_iter([("n".to_string(), v)]))
        };
    }
    v
}

/// The same document as text, built without recursion (serializers recurse too).
fn nested_text(depth: usize, arrays: bool, as_yaml: bool) -> String {
    let (open, close) = match (arrays, as_yaml) {
        (true, _) => ("[", "]"),
        (false, false) => ("{\"n\":", "}"),
        (false, true) => ("{n: ", "}"),
    };
    format!("{}\"bottom\"{}", open.repeat(depth), close.repeat(depth))
}

#[test]
fn deep_nesting_is_refused_or_stored_intact() {
    let f = Fixture::new();
    let place = prop_oneof![
        Just(Nest::Body),
        Just(Nest::Manifest),
        Just(Nest::UnknownField),
        Just(Nest::LabelValue)
    ];
    // 10,000 levels of `{"n":` still fit under the body limit, so the parsers see them.
    let depth = prop_oneof![50..140usize, 140..2_000usize, Just(10_000usize)];
    run(
        96,
        (place, depth, any::<bool>(), any::<bool>()),
        |(place, depth, arrays, as_yaml)| {
            let marker = "\"@@deep@@\"";
            let mut doc = good_work();
            match place {
                Nest::Body => {}
                Nest::Manifest => {
                    doc["spec"]["workload"]["manifests"][0]["data"] = json!("@@deep@@")
                }
                Nest::UnknownField => doc["spec"]["x-deep"] = json!("@@deep@@"),
                Nest::LabelValue => doc["metadata"]["labels"]["app"] = json!("@@deep@@"),
            }
            let deep = nested_text(depth, arrays, as_yaml);
            // JSON is valid YAML (flow style), so one text serves both content types.
            let body = match place {
                Nest::Body => deep,
                _ => doc.to_string().replace(marker, &deep),
            };
            let ct = if as_yaml {
                "application/yaml"
            } else {
                "application/json"
            };
            let a = f.put_work(W, Some(ct), body.as_bytes());
            check(&a)?;
            // Where the deep value lands in the stored work, if it may be accepted at all.
            let kept = match place {
                _ if depth >= 2_000 => None,
                Nest::Body if !arrays => Some(("/n", depth - 1)),
                Nest::Body | Nest::LabelValue => None,
                Nest::Manifest => Some(("/spec/workload/manifests/0/data", depth)),
                Nest::UnknownField => Some(("/spec/x-deep", depth)),
            };
            match kept {
                None => prop_assert!(a.status.is_client_error(), "accepted: {}", a.status),
                Some((pointer, depth)) if a.status.is_success() => {
                    // What was accepted must read back, whatever its depth.
                    let got = f.call("GET", W, None, b"");
                    prop_assert_eq!(got.status, StatusCode::OK, "{}", got.text());
                    let got = got.json();
                    let want = nested(depth, arrays);
                    prop_assert!(
                        got.pointer(pointer) == Some(&want),
                        "the nested value changed"
                    );
                }
                Some(_) => {}
            }
            Ok(())
        },
    );
}

/// Strings that are not DNS-1123 names (labels or subdomains), each broken its own way.
fn bad_dns_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{254,300}",
        "[a-z]{1,5}[A-Z_][a-z]{0,5}",
        "-[a-z]{1,5}",
        "[a-z]{1,5}-",
        "[a-z]{1,5}\\.\\.[a-z]{1,5}",
        "\\.[a-z]{1,5}",
        "[a-z]{0,3}[^a-z0-9.\\-]{1,3}[a-z]{0,3}",
        "[a-z]{1,3}[\u{0}-\u{1f}\u{7f}][a-z]{1,3}",
        "[a-z]{1,3} [a-z]{1,3}",
    ]
}

/// Strings that are neither label keys nor label values.
fn bad_label() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{64,100}",
        "[-_.][a-z]{1,5}",
        "[a-z]{1,5}[-_.]",
        "[a-z]{0,3}[^A-Za-z0-9_./\\-]{1,3}[a-z]{0,3}",
    ]
}

/// Strings that are not label keys (prefixes included).
fn bad_label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        bad_label(),
        Just(String::new()),
        "[A-Z]{1,5}/[a-z]{1,5}",
        "/[a-z]{1,5}",
        "[a-z]{1,5}/",
        "[a-z]{1,5}/[a-z]{1,5}/[a-z]{1,5}",
    ]
}

fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Where a bad name goes.
#[derive(Debug, Clone, Copy)]
enum NameSpot {
    PathWork,
    PathCluster,
    BodyName,
    BodyNamespace,
    LabelKey,
    LabelValue,
    AnnotationKey,
}

#[test]
fn bad_names_and_labels_are_refused() {
    let f = Fixture::new();
    let spot = prop_oneof![
        Just(NameSpot::PathWork),
        Just(NameSpot::PathCluster),
        Just(NameSpot::BodyName),
        Just(NameSpot::BodyNamespace),
        Just(NameSpot::LabelKey),
        Just(NameSpot::LabelValue),
        Just(NameSpot::AnnotationKey),
    ];
    let cases = spot.prop_flat_map(|spot| {
        let name = match spot {
            NameSpot::LabelKey | NameSpot::AnnotationKey => bad_label_key().boxed(),
            NameSpot::LabelValue => bad_label().boxed(),
            _ => bad_dns_name().boxed(),
        };
        (Just(spot), name, any::<bool>())
    });
    run(512, cases, |(spot, name, as_yaml)| {
        let mut doc = good_work();
        let mut path = W.to_string();
        match spot {
            NameSpot::PathWork => {
                path = format!("/api/v1/clusters/c1/manifestworks/{}", encode(&name));
                doc["metadata"]["name"] = json!("");
            }
            NameSpot::PathCluster => {
                path = format!("/api/v1/clusters/{}/manifestworks/w1", encode(&name));
                doc["metadata"]["namespace"] = Value::Null;
            }
            NameSpot::BodyName => doc["metadata"]["name"] = json!(name),
            NameSpot::BodyNamespace => doc["metadata"]["namespace"] = json!(name),
            NameSpot::LabelKey => doc["metadata"]["labels"] = json!({ name.clone(): "v" }),
            NameSpot::LabelValue => doc["metadata"]["labels"] = json!({ "k": name.clone() }),
            NameSpot::AnnotationKey => {
                doc["metadata"]["annotations"] = json!({ name.clone(): "v" })
            }
        }
        let (ct, body) = if as_yaml {
            ("application/yaml", yaml(&doc))
        } else {
            ("application/json", doc.to_string())
        };
        let a = f.put_work(&path, Some(ct), body.as_bytes());
        // An empty body name or namespace means "take the path's"; every other bad name
        // is refused.
        let allowed_empty =
            name.is_empty() && matches!(spot, NameSpot::BodyName | NameSpot::BodyNamespace);
        if allowed_empty {
            check(&a)
        } else {
            check_refused(&a)
        }
    });
}

fn bad_manifest() -> impl Strategy<Value = Value> {
    prop_oneof![
        any_json().prop_filter("not an object", |v| !v.is_object()),
        Just(json!({})),
        Just(json!({"kind": "ConfigMap", "metadata": {"name": "a"}})),
        Just(json!({"apiVersion": "v1", "metadata": {"name": "a"}})),
        Just(json!({"apiVersion": "v1", "kind": "ConfigMap"})),
        Just(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": ""}})),
        Just(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 7}})),
        Just(json!({"apiVersion": "", "kind": "ConfigMap", "metadata": {"name": "a"}})),
        Just(json!({"apiVersion": ["v1"], "kind": "ConfigMap", "metadata": {"name": "a"}})),
        Just(json!({"apiVersion": "v1", "kind": null, "metadata": {"name": "a"}})),
        Just(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": []})),
    ]
}

#[test]
fn bad_manifests_are_422() {
    let f = Fixture::new();
    run(
        256,
        (bad_manifest(), 0..3usize, any::<bool>()),
        |(m, at, as_yaml)| {
            let mut doc = good_work();
            let manifests = doc["spec"]["workload"]["manifests"].as_array_mut().unwrap();
            manifests.insert(at.min(manifests.len()), m);
            let (ct, body) = if as_yaml {
                ("application/yaml", yaml(&doc))
            } else {
                ("application/json", doc.to_string())
            };
            let a = f.put_work(W, Some(ct), body.as_bytes());
            check_refused(&a)?;
            prop_assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text());
            Ok(())
        },
    );
}

/// Duplicate keys, spliced into the text of a good work at several levels.
const DUPLICATES: &[(&str, &str)] = &[
    (
        "{\"apiVersion\":",
        "{\"kind\":\"ManifestWork\",\"kind\":\"ManifestWork\",\"apiVersion\":",
    ),
    (
        "\"labels\":{\"app\":\"web\"}",
        "\"labels\":{\"app\":\"web\",\"app\":\"db\"}",
    ),
    ("\"name\":\"w1\"", "\"name\":\"w1\",\"name\":\"w1\""),
    (
        "\"data\":{\"k\":\"v\"}",
        "\"data\":{\"k\":\"v\",\"k\":\"v\"}",
    ),
    ("\"spec\":{", "\"spec\":{},\"spec\":{"),
];

#[test]
fn duplicate_keys_are_400() {
    let f = Fixture::new();
    let text = serde_json::to_string(&good_work()).unwrap();
    run(
        64,
        (
            proptest::sample::select(DUPLICATES),
            any::<bool>(),
            any::<bool>(),
        ),
        |((from, to), as_yaml, sniff)| {
            prop_assert!(text.contains(from));
            let body = text.replacen(from, to, 1);
            let ct = match (as_yaml, sniff) {
                (_, true) => None,
                (true, false) => Some("application/yaml"),
                (false, false) => Some("application/json"),
            };
            let a = f.put_work(W, ct, body.as_bytes());
            check_refused(&a)?;
            prop_assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
            prop_assert!(a.text().contains("duplicate"), "{}", a.text());
            Ok(())
        },
    );
}

/// Big documents near and over the body limit.
#[derive(Debug, Clone)]
enum Big {
    LongString(usize),
    Labels(usize),
    Manifests(usize),
    Padding(usize),
}

#[test]
fn big_documents_are_stored_or_413() {
    let f = Fixture::new();
    let big = prop_oneof![
        (1..200_000usize).prop_map(Big::LongString),
        (1..5_000usize).prop_map(Big::Labels),
        (1..2_000usize).prop_map(Big::Manifests),
        (MAX_BODY - 100..MAX_BODY + 100).prop_map(Big::Padding),
    ];
    run(48, (big, any::<bool>()), |(big, as_yaml)| {
        let mut doc = good_work();
        match &big {
            Big::LongString(n) => {
                doc["spec"]["workload"]["manifests"][0]["data"]["k"] = json!("x".repeat(*n))
            }
            Big::Labels(n) => {
                doc["metadata"]["labels"] =
                    Value::Object((0..*n).map(|i| (format!("k{i}"), json!("v"))).collect());
            }
            Big::Manifests(n) => {
                doc["spec"]["workload"]["manifests"] = Value::Array(
                    (0..*n)
                        .map(|i| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm{i}")}}))
                        .collect(),
                );
            }
            Big::Padding(_) => {}
        }
        let mut body = if as_yaml { yaml(&doc) } else { doc.to_string() };
        if let Big::Padding(n) = big {
            // Trailing whitespace is valid in both: only the size changes.
            let pad = n.saturating_sub(body.len());
            body.push_str(&" ".repeat(pad));
        }
        let ct = if as_yaml {
            "application/yaml"
        } else {
            "application/json"
        };
        let a = f.put_work(W, Some(ct), body.as_bytes());
        check(&a)?;
        if body.len() > MAX_BODY {
            prop_assert_eq!(
                a.status,
                StatusCode::PAYLOAD_TOO_LARGE,
                "{} bytes",
                body.len()
            );
        } else {
            prop_assert!(
                a.status.is_success(),
                "{} bytes: {} {}",
                body.len(),
                a.status,
                a.text()
            );
        }
        Ok(())
    });
}

/// Valid works with arbitrary content where the schema leaves it open.
fn valid_work() -> impl Strategy<Value = (String, Value)> {
    let name = "[a-z]([a-z0-9-]{0,20}[a-z0-9])?(\\.[a-z0-9]{1,5}){0,2}";
    let label_key = "([a-z]{1,8}\\.[a-z]{2,3}/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,10}[A-Za-z0-9])?";
    let label_value = "([A-Za-z0-9]([A-Za-z0-9_.-]{0,10}[A-Za-z0-9])?)?";
    let manifest = (name, any_json(), any_json()).prop_map(|(n, data, extra)| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n}, "data": data, "x-extra": extra})
    });
    (
        name,
        prop::collection::btree_map(label_key, label_value, 0..5),
        prop::collection::btree_map(label_key, "\\PC{0,40}", 0..3),
        prop::collection::vec(manifest, 0..4),
        prop::option::of(any_json()),
        prop::option::of(proptest::sample::select(
            &["Foreground", "Orphan", "SelectivelyOrphan"][..],
        )),
    )
        .prop_map(|(name, labels, annotations, manifests, unknown, policy)| {
            let mut doc = json!({
                "apiVersion": "work.open-cluster-management.io/v1",
                "kind": "ManifestWork",
                "metadata": {"name": name, "labels": labels, "annotations": annotations},
                "spec": {"workload": {"manifests": manifests}},
            });
            if let Some(u) = unknown {
                // Fields we do not model are kept as they came.
                doc["spec"]["futureField"] = u;
            }
            if let Some(p) = policy {
                doc["spec"]["deleteOption"] = json!({"propagationPolicy": p});
            }
            (name, doc)
        })
}

#[test]
fn valid_works_round_trip_from_json_and_yaml() {
    let f = Fixture::new();
    run(
        128,
        (valid_work(), any::<bool>()),
        |((name, doc), as_yaml)| {
            let path = format!("/api/v1/clusters/c1/manifestworks/{name}");
            let (ct, body) = if as_yaml {
                ("application/yaml", yaml(&doc))
            } else {
                ("application/json", doc.to_string())
            };
            let a = f.put_work(&path, Some(ct), body.as_bytes());
            check(&a)?;
            prop_assert!(
                a.status.is_success(),
                "refused {}: {}\n{body}",
                a.status,
                a.text()
            );
            let got = f.call("GET", &path, None, b"").json();
            prop_assert_eq!(&got["spec"], &doc["spec"], "spec changed; sent\n{}", body);
            let meta = |v: &Value, k: &str| {
                v["metadata"][k]
                    .as_object()
                    .cloned()
                    .unwrap_or_else(Map::new)
            };
            prop_assert_eq!(meta(&got, "labels"), meta(&doc, "labels"));
            prop_assert_eq!(meta(&got, "annotations"), meta(&doc, "annotations"));
            Ok(())
        },
    );
}

/// Reads and writes whose path segments or query values get a NUL spliced in.
const NUL_TARGETS: &[(&str, &str)] = &[
    ("GET", "/api/v1/clusters/c1/manifestworks/w{}"),
    ("PUT", "/api/v1/clusters/c1/manifestworks/w{}"),
    ("DELETE", "/api/v1/clusters/c{}/manifestworks/w1"),
    ("GET", "/api/v1/clusters/c{}"),
    ("DELETE", "/api/v1/tokens/t{}"),
    ("GET", "/api/v1/registrations/r{}"),
    ("POST", "/api/v1/registrations/r{}/accept"),
    ("GET", "/api/v1/audit?target=clusters/c1{}"),
    ("GET", "/api/v1/manifestworks?labelSelector=app%3D{}"),
    ("GET", "/api/v1/manifestworks?limit=1&continue=x{}"),
    (
        "DELETE",
        "/api/v1/clusters/c1/manifestworks/w1/finalizers?name=f{}",
    ),
];

/// Postgres refuses text with a NUL in it, so each of these used to be a 503 there.
#[test]
fn nul_in_path_or_query_is_400() {
    let f = Fixture::new();
    run(
        64,
        (proptest::sample::select(NUL_TARGETS), "[a-z]{0,3}"),
        |((method, template), tail)| {
            let uri = template.replace("{}", &format!("%00{tail}"));
            let a = f.call(method, &uri, Some("application/json"), b"{}");
            check_refused(&a)?;
            prop_assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{} {}: {}",
                method,
                uri,
                a.text()
            );
            Ok(())
        },
    );
}

/// `epoch` (the database history a client's `index` belongs to, see `X-Hub-Epoch`) that
/// is not 1 to 64 lowercase hex digits: uppercase, other letters, too long, spaces,
/// unicode, a NUL, punctuation. Each is a 400 with the JSON error, on lists and single
/// reads alike, and never blocks.
#[test]
fn a_malformed_epoch_is_400() {
    let f = Fixture::new();
    let epoch = prop_oneof![
        "[A-F]{1,8}",
        "[g-z]{1,8}",
        "[0-9a-f]{65,80}",
        "[0-9a-f]{0,4}[ ,;/+~!*'()-][0-9a-f]{0,4}",
        "[0-9a-f]{0,4}[é日\u{0}][0-9a-f]{0,4}",
    ];
    let targets = proptest::sample::select(vec![
        "/api/v1/clusters/c1/manifestworks?index=5&wait=30s&epoch=",
        "/api/v1/clusters/c1/manifestworks/w1?index=5&wait=30s&epoch=",
        "/api/v1/manifestworks?index=5&epoch=",
        "/api/v1/clusters?epoch=",
    ]);
    run(64, (targets, epoch), |(target, epoch)| {
        let encoded: String = url::form_urlencoded::byte_serialize(epoch.as_bytes()).collect();
        let uri = format!("{target}{encoded}");
        let a = f.call("GET", &uri, None, b"");
        check_refused(&a)?;
        prop_assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}: {}", uri, a.text());
        // The message names what is wrong: the epoch, or the NUL the hub refuses anywhere.
        let said = a.text();
        prop_assert!(
            said.contains("epoch") || said.contains("NUL"),
            "{}: {}",
            uri,
            said
        );
        Ok(())
    });
}

/// A well-formed epoch of another history (the database was restored since the client
/// last read) answers a blocking read at once, with the full list, instead of waiting for
/// changes past an index that belongs to the other history.
#[test]
fn another_epoch_answers_a_blocking_read_at_once() {
    let f = Fixture::new();
    let a = f.call(
        "GET",
        "/api/v1/clusters?index=999999&wait=300s&epoch=0123456789abcdef",
        None,
        b"",
    );
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let body = a.json();
    let names: Vec<&str> = body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|c| c["metadata"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, vec!["c1"], "{}", a.text());
}
