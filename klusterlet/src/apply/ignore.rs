//! `updateStrategy.serverSideApply.ignoreFields`: fields another controller owns on the
//! managed cluster (an HPA's `spec.replicas`, an annotation a webhook sets) are left out
//! of the apply body, so the agent does not fight over them and their changes are not
//! undone as drift, while every other field of the object still is.
//!
//! Each `jsonPath` is evaluated on the apply body; at each field it selects:
//! * the object does not exist yet: the work's value is sent (set on creation, as OCM);
//! * `OnSpokePresent`: the live object has the field: the work's value is not sent;
//! * `OnSpokeChange`: the live value differs from what the agent last sent, and the
//!   work's value did not change since: not sent. A new value in the work is sent (the
//!   hub wins once again). What the agent last sent is kept as a hash per field in the
//!   object's [`LAST_SENT_ANNOTATION`], so an agent restart remembers it.
//!
//! OCM leaves such a field out of the body and skips the whole apply while a hash of the
//! work is unchanged, so on OCM a hand edit of any other field of the object is no longer
//! repaired; here only the ignored fields are spared.
//!
//! "Not sent" means removed from the body when another field manager owns the field, so
//! that manager keeps it alone. When the agent is its only owner, server-side apply would
//! delete a field the agent stops sending (an HPA-less Deployment would fall back to one
//! replica), so then the live value is sent unchanged instead.

use std::collections::BTreeMap;

use api::{IgnoreField, ON_SPOKE_CHANGE};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::error::ApplyError;

/// The annotation holding, per ignored field (its normalized path), a hash of the value
/// the agent last sent (`OnSpokeChange` only).
pub const LAST_SENT_ANNOTATION: &str = "fleethub.io/ignore-fields-last-sent";

/// What becomes of one selected field the work's value is not sent for.
#[derive(Debug, Clone, PartialEq)]
enum Fate {
    /// Removed from the body: another manager owns it.
    Drop,
    /// Sent with the live value: the agent alone owns it.
    Pin(Value),
}

/// Leaves the ignored fields out of `body` (the apply body of one manifest), given the
/// live object (`None` when it does not exist yet) and the field manager the agent
/// applies as. A path that does not parse is `Invalid` (the hub refuses such works; this
/// is for works stored before it did).
pub fn prune(
    body: &mut Value,
    live: Option<&Value>,
    rules: &[IgnoreField],
    manager: &str,
) -> Result<(), ApplyError> {
    let last_sent = live.map(last_sent).unwrap_or_default();
    let mut sent: BTreeMap<String, String> = BTreeMap::new();
    // (JSON pointer, fate), computed on the untouched body before anything changes.
    let mut fates: Vec<(String, Fate)> = Vec::new();
    for rule in rules {
        let on_change = rule.condition == ON_SPOKE_CHANGE;
        for path in &rule.json_paths {
            let query = api::jsonpath::query(path)
                .map_err(|e| ApplyError::new("Invalid", format!("ignoreFields: {e}"), false))?;
            for node in query.query_located(body).iter() {
                let location = node.location();
                let pointer = location.to_json_pointer();
                let desired = node.node();
                let Some(live) = live else {
                    if on_change {
                        sent.insert(location.to_string(), hash(desired));
                    }
                    continue;
                };
                let live_value = live.pointer(&pointer);
                let keep_live = if on_change {
                    let key = location.to_string();
                    let wanted = hash(desired);
                    let spoke_changed = match last_sent.get(&key) {
                        Some(h) if *h == wanted => live_value.map(hash).as_ref() != Some(h),
                        _ => false,
                    };
                    sent.insert(key, wanted);
                    spoke_changed
                } else {
                    live_value.is_some()
                };
                if !keep_live {
                    continue;
                }
                let fate = match live_value {
                    None => Fate::Drop,
                    Some(_) if owned_by_others(live, &pointer, manager) => Fate::Drop,
                    Some(v) => Fate::Pin(v.clone()),
                };
                fates.push((pointer, fate));
            }
        }
    }
    // Pins first, then removals from the deepest and last index on, so removing one
    // array element never shifts another that is still to be removed.
    for (pointer, fate) in &fates {
        if let (Fate::Pin(v), Some(slot)) = (fate, body.pointer_mut(pointer)) {
            *slot = v.clone();
        }
    }
    let mut drops: Vec<Vec<String>> = fates
        .iter()
        .filter(|(_, f)| *f == Fate::Drop)
        .map(|(p, _)| tokens(p))
        .collect();
    drops.sort_by(|a, b| compare_tokens(b, a));
    drops.dedup();
    for path in drops {
        remove(body, &path);
    }
    if rules.iter().any(|r| r.condition == ON_SPOKE_CHANGE) {
        set_annotation(body, &sent);
    }
    Ok(())
}

/// The hashes of [`LAST_SENT_ANNOTATION`] on the live object (none when absent or not
/// ours to read: then the work's values win once, as on a first apply).
fn last_sent(live: &Value) -> BTreeMap<String, String> {
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_SENT_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

fn set_annotation(body: &mut Value, sent: &BTreeMap<String, String>) {
    let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(annotations) = annotations.as_object_mut() {
        let text = serde_json::to_string(sent).unwrap_or_default();
        annotations.insert(LAST_SENT_ANNOTATION.into(), Value::String(text));
    }
}

/// A short hash of a value, the same whatever the order of its object keys (the
/// apiserver does not keep the manifest's order).
fn hash(value: &Value) -> String {
    let mut text = String::new();
    canonical(value, &mut text);
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The reference tokens of a JSON pointer, unescaped.
fn tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// Orders paths so that a later index in the same array sorts after an earlier one.
fn compare_tokens(a: &[String], b: &[String]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x.parse::<usize>(), y.parse::<usize>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            _ => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

fn remove(body: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = body;
    for t in parents {
        node = match node {
            Value::Object(m) => match m.get_mut(t) {
                Some(v) => v,
                None => return,
            },
            Value::Array(a) => match t.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    match node {
        Value::Object(m) => {
            m.remove(last);
        }
        Value::Array(a) => {
            if let Ok(i) = last.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

/// Whether a field manager other than `manager` owns the field at `pointer` of the live
/// object, by its `managedFields` (`fieldsV1`: `f:name` for a member; `k:{...}`, `v:...`
/// or `i:n` for a list item). A manager owning an enclosing atomic value (a leaf on the
/// way) owns the field too.
fn owned_by_others(live: &Value, pointer: &str, manager: &str) -> bool {
    let path = tokens(pointer);
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|entry| entry.get("manager").and_then(Value::as_str) != Some(manager))
        .filter_map(|entry| entry.get("fieldsV1"))
        .any(|fields| owns(fields, live, &path))
}

fn owns(fields: &Value, live: &Value, path: &[String]) -> bool {
    let mut set = fields;
    let mut object = live;
    for token in path {
        let Some(members) = set.as_object() else {
            return false;
        };
        if members.is_empty() {
            // A leaf: this manager owns the whole value the path goes into.
            return true;
        }
        let (key, next) = match object {
            Value::Array(items) => {
                let Some(item) = token.parse::<usize>().ok().and_then(|i| items.get(i)) else {
                    return false;
                };
                let key = members.keys().find(|k| item_key_matches(k, item, token));
                (key.cloned(), item)
            }
            Value::Object(m) => {
                let Some(next) = m.get(token) else {
                    return false;
                };
                let key = format!("f:{token}");
                (members.contains_key(&key).then_some(key), next)
            }
            _ => return false,
        };
        let Some(key) = key else {
            return false;
        };
        set = &members[&key];
        object = next;
    }
    true
}

/// Whether a `fieldsV1` key of a list names this item: `k:{"name":"web"}` (its keys
/// match), `v:<value>` (a set member) or `i:<index>`.
fn item_key_matches(key: &str, item: &Value, index: &str) -> bool {
    if let Some(keys) = key.strip_prefix("k:") {
        let Ok(Value::Object(keys)) = serde_json::from_str::<Value>(keys) else {
            return false;
        };
        return keys.iter().all(|(k, v)| item.get(k) == Some(v));
    }
    if let Some(value) = key.strip_prefix("v:") {
        return serde_json::from_str::<Value>(value).is_ok_and(|v| v == *item);
    }
    key.strip_prefix("i:") == Some(index)
}

#[cfg(test)]
#[path = "ignore_tests.rs"]
mod tests;
