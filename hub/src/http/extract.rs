//! Extractors: request bodies in JSON or YAML, query parameters, the caller's identity.

use std::fmt;

use api::selector::Selector;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::http::request::Parts;
use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::AppState;
use crate::service::{Block, DEFAULT_WAIT, Error, MAX_WAIT};

/// A request body in JSON or YAML (`application/yaml`, `application/x-yaml`, `text/yaml`;
/// without a content type the text is sniffed), decoded into `T`. Syntax errors are 400s
/// naming line and column; type errors are 422s naming the field.
pub struct Doc<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Doc<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.to_ascii_lowercase());
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::TooLarge(format!(
                    "request body is larger than the limit: {}",
                    r.body_text()
                ))
            } else {
                Error::Malformed(format!("cannot read the request body: {}", r.body_text()))
            }
        })?;
        let value = parse_body(content_type.as_deref(), &bytes)?;
        if !value.is_object() {
            return decode(value).map(Doc);
        }
        // Most bodies fit: decoded without tracking the path, which costs an allocation per
        // key. One that does not is parsed again to name the field that does not fit.
        match serde_json::from_value(value) {
            Ok(doc) => Ok(Doc(doc)),
            Err(_) => decode(parse_body(content_type.as_deref(), &bytes)?).map(Doc),
        }
    }
}

/// Parses a body as JSON or YAML into a JSON value.
pub fn parse_body(content_type: Option<&str>, bytes: &[u8]) -> Result<Value, Error> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| Error::Malformed(format!("the body is not UTF-8 text: {e}")))?;
    if text.trim().is_empty() {
        return Err(Error::Malformed("the request body is empty".into()));
    }
    let yaml = content_type.is_some_and(|ct| ct.contains("yaml"));
    let json = content_type.is_some_and(|ct| ct.contains("json"))
        || (!yaml && text.trim_start().starts_with('{'));
    if json {
        serde_json::from_str::<UniqueKeys>(text)
            .map(|UniqueKeys(v)| v)
            .map_err(|e| {
                Error::Malformed(format!(
                    "malformed JSON at line {} column {}: {e}",
                    e.line(),
                    e.column()
                ))
            })
    } else {
        if text.lines().skip(1).any(|l| l.trim_end() == "---") {
            return Err(Error::Malformed(
                "the body holds several YAML documents; send one".into(),
            ));
        }
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| Error::Malformed(format!("malformed YAML: {e}")))
    }
}

/// A JSON value in which no object repeats a key. RFC 8259 leaves the meaning of a
/// repeated key open and serde_json silently keeps the last one, while the YAML parser
/// refuses them: refusing them in JSON too means a document says the same thing whichever
/// way it is sent, and nobody's `"name"` is quietly overridden by a second one.
struct UniqueKeys(Value);

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor).map(UniqueKeys)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // serde_json's parser never yields NaN or infinity, which JSON cannot hold.
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(UniqueKeys(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let UniqueKeys(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Value::Object(object))
    }
}

/// Decodes a JSON value into `T`, naming the field that does not fit.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    if !value.is_object() {
        return Err(Error::invalid("(body)", "must be an object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        Error::invalid(
            if path == "." {
                "(body)".to_string()
            } else {
                path
            },
            e.inner().to_string(),
        )
    })
}

/// Query parameters of gets and lists.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// kubectl-style label selector.
    pub label_selector: Option<String>,
    /// Label selector on clusters.
    pub cluster_selector: Option<String>,
    /// Page size.
    pub limit: Option<String>,
    /// Continue token.
    #[serde(rename = "continue")]
    pub continue_: Option<String>,
    /// Block until something changed past this index.
    pub index: Option<String>,
    /// How long to block (`30s`, `5m`; default 60 s, at most 300 s).
    pub wait: Option<String>,
}

impl ListParams {
    /// The blocking part, if `index` was given.
    pub fn block(&self) -> Result<Option<Block>, Error> {
        // A bad `wait` is refused even without `index`, where it would not be used: quietly
        // ignoring it would hide the caller's mistake.
        let wait = match self.wait.as_deref().filter(|s| !s.is_empty()) {
            Some(w) => {
                api::parse_duration(w).map_err(|m| Error::Malformed(format!("wait: {m}")))?
            }
            None => DEFAULT_WAIT,
        };
        let Some(index) = self.index.as_deref().filter(|s| !s.is_empty()) else {
            return Ok(None);
        };
        let index = index.parse::<u64>().map_err(|_| {
            Error::Malformed(format!(
                "index must be a non-negative integer, not {index:?}"
            ))
        })?;
        Ok(Some(Block {
            index,
            wait: wait.min(MAX_WAIT),
        }))
    }

    /// The label selector (empty when absent).
    pub fn selector(&self) -> Result<Selector, Error> {
        parse_selector("labelSelector", self.label_selector.as_deref())
    }

    /// The cluster selector (empty when absent).
    pub fn cluster_selector(&self) -> Result<Selector, Error> {
        parse_selector("clusterSelector", self.cluster_selector.as_deref())
    }

    /// The page size (0: everything).
    pub fn limit(&self) -> Result<u32, Error> {
        match self.limit.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(0),
            Some(l) => l.parse().map_err(|_| {
                Error::Malformed(format!("limit must be a non-negative integer, not {l:?}"))
            }),
        }
    }
}

fn parse_selector(name: &str, text: Option<&str>) -> Result<Selector, Error> {
    Selector::parse(text.unwrap_or("")).map_err(|e| Error::Malformed(format!("{name}: {e}")))
}

pub use crate::service::authn::Principal;

impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                Error::Unauthorized(
                    "this call needs a bearer token (Authorization: Bearer ...)".into(),
                )
            })?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Error::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        state.auth.authenticate(token).await
    }
}

/// Where a request came from (the peer address), for the audit log.
pub struct Source(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let addr = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(Source(addr))
    }
}
