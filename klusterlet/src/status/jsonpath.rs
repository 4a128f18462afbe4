//! JSONPath for feedback rules: RFC 9535 (`serde_json_path`), behind a small shim for the
//! Kubernetes dialect OCM's rules are written in (as `kubectl -o jsonpath` reads them):
//! an optional `{...}` around the path, an optional leading `$`, and dotted names that may
//! hold `-` or `/` (`.metadata.labels.app-name`), which RFC 9535 writes `['app-name']`.
//! Everything else (`['a']`, `[0]`, `[-1]`, `[1:3]`, `[*]`, `.*`, `..a`, filters
//! `[?(@.type=="Ready")]` with comparisons or existence) is RFC 9535 already. Missing keys
//! and indexes give no result rather than an error.

use serde_json::Value;
use serde_json_path::JsonPath;

/// The values `path` selects in `root`, in document order.
pub fn evaluate<'a>(path: &str, root: &'a Value) -> Result<Vec<&'a Value>, String> {
    let rfc = to_rfc9535(path);
    let parsed = JsonPath::parse(&rfc).map_err(|e| format!("{path:?}: {e}"))?;
    Ok(parsed.query(root).all())
}

/// Rewrites a kubectl-style path as RFC 9535: drops `{...}`, starts it at `$`, and writes
/// each dotted name as `['name']`. A `.` counts as a name's only where a path goes on
/// (after `$`, `@`, a name or `]`), so the `.` of a number in a filter (`@.n > 1.5`) stays.
fn to_rfc9535(path: &str) -> String {
    let mut text = path.trim();
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        text = inner.trim();
    }
    let mut out = String::from("$");
    let rest = match text.strip_prefix('$') {
        Some(rest) => rest.to_string(),
        None if text.is_empty() || text.starts_with(['.', '[']) => text.to_string(),
        // `status.x`: a first name without its dot.
        None => format!(".{text}"),
    };
    let chars: Vec<char> = rest.chars().collect();
    let mut at = 0;
    let mut in_path = true;
    let mut quote: Option<char> = None;
    while at < chars.len() {
        let c = chars[at];
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' && at + 1 < chars.len() {
                out.push(chars[at + 1]);
                at += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
            at += 1;
            continue;
        }
        match c {
            '.' if in_path => {
                let descend = chars.get(at + 1) == Some(&'.');
                let start = at + if descend { 2 } else { 1 };
                let end = (start..chars.len())
                    .find(|&i| ends_name(chars[i]))
                    .unwrap_or(chars.len());
                let name: String = chars[start..end].iter().collect();
                if descend {
                    out.push_str("..");
                }
                match name.as_str() {
                    "" => {}
                    "*" if descend => out.push('*'),
                    "*" => out.push_str(".*"),
                    _ => {
                        out.push_str("['");
                        out.push_str(&name.replace('\\', "\\\\").replace('\'', "\\'"));
                        out.push_str("']");
                    }
                }
                at = end;
                continue;
            }
            '\'' | '"' => quote = Some(c),
            '$' | '@' | ']' => in_path = true,
            '[' | '*' => {}
            _ => in_path = false,
        }
        out.push(c);
        at += 1;
    }
    out
}

/// Whether `c` ends a dotted name.
fn ends_name(c: char) -> bool {
    c.is_whitespace() || ".[]()=!<>&|,'\"".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(path: &str, root: &Value) -> Vec<Value> {
        evaluate(path, root)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .into_iter()
            .cloned()
            .collect()
    }

    #[test]
    fn paths_select_like_kubectl() {
        let doc = json!({
            "status": {
                "replicas": 3,
                "conditions": [
                    {"type": "Available", "status": "True", "n": 1},
                    {"type": "Progressing", "status": "False", "n": 2},
                ],
                "a.b": {"c": true},
            },
            "spec": {"containers": [{"name": "x", "image": "i1"}, {"name": "y", "image": "i2"}]},
        });
        assert_eq!(eval(".status.replicas", &doc), [json!(3)]);
        assert_eq!(eval("{.status.replicas}", &doc), [json!(3)]);
        assert_eq!(eval("$.status.replicas", &doc), [json!(3)]);
        assert_eq!(eval(".status.missing", &doc), Vec::<Value>::new());
        assert_eq!(eval(".status.replicas.deeper", &doc), Vec::<Value>::new());
        assert_eq!(
            eval(r#".status.conditions[?(@.type=="Available")].status"#, &doc),
            [json!("True")]
        );
        assert_eq!(
            eval(
                ".status.conditions[?(@.type == 'Progressing')].status",
                &doc
            ),
            [json!("False")]
        );
        assert_eq!(
            eval(".status.conditions[?(@.n > 1)].type", &doc),
            [json!("Progressing")]
        );
        assert_eq!(eval(".status.conditions[?(@.n != 1)].n", &doc), [json!(2)]);
        assert_eq!(
            eval(".status.conditions[?(@.missing)].n", &doc),
            Vec::<Value>::new()
        );
        assert_eq!(
            eval(".status.conditions[?(@.n)].n", &doc),
            [json!(1), json!(2)]
        );
        assert_eq!(
            eval(".status.conditions[0].type", &doc),
            [json!("Available")]
        );
        assert_eq!(
            eval(".status.conditions[-1].type", &doc),
            [json!("Progressing")]
        );
        assert_eq!(
            eval(".status.conditions[5].type", &doc),
            Vec::<Value>::new()
        );
        assert_eq!(eval(".status.conditions[0:1].n", &doc), [json!(1)]);
        assert_eq!(
            eval(".spec.containers[*].image", &doc),
            [json!("i1"), json!("i2")]
        );
        assert_eq!(
            eval(".spec.containers.*.name", &doc),
            [json!("x"), json!("y")]
        );
        assert_eq!(eval("..image", &doc), [json!("i1"), json!("i2")]);
        assert_eq!(eval(".status['a.b'].c", &doc), [json!(true)]);
        assert_eq!(eval(r#".status["a.b"]["c"]"#, &doc), [json!(true)]);
        assert_eq!(eval("", &doc), std::slice::from_ref(&doc));
        // kubectl's (and OCM's) names may hold `-` and `/`, which RFC 9535 shorthand does not.
        let labels = json!({"metadata": {"labels": {"app-name": "web", "example.com/tier": "db"}}});
        assert_eq!(eval(".metadata.labels.app-name", &labels), [json!("web")]);
        assert_eq!(
            eval(".metadata.labels['example.com/tier']", &labels),
            [json!("db")]
        );
        // A slice with a step, as kubectl reads it (refused before serde_json_path).
        assert_eq!(eval(".spec.containers[0:2:2].name", &doc), [json!("x")]);
        // A number in a filter stays a number.
        assert_eq!(eval(".status.conditions[?(@.n > 1.5)].n", &doc), [json!(2)]);
    }

    #[test]
    fn kubectl_forms_become_rfc_9535() {
        assert_eq!(
            to_rfc9535("{.status.readyReplicas}"),
            "$['status']['readyReplicas']"
        );
        assert_eq!(to_rfc9535("status.x"), "$['status']['x']");
        assert_eq!(to_rfc9535("$.a[*].b"), "$['a'][*]['b']");
        assert_eq!(to_rfc9535("..image"), "$..['image']");
        assert_eq!(to_rfc9535(".a.*"), "$['a'].*");
        assert_eq!(
            to_rfc9535(r#".c[?(@.type=="Ready")].status"#),
            r#"$['c'][?(@['type']=="Ready")]['status']"#
        );
        assert_eq!(to_rfc9535(".a['x.y'].b"), "$['a']['x.y']['b']");
        assert_eq!(to_rfc9535(".a-b/c"), "$['a-b/c']");
    }

    #[test]
    fn malformed_paths_are_errors() {
        for bad in [
            ".a[",
            ".a[x]",
            ".a[?(@.b==)]",
            ".a[?(b==1)]",
            "a b",
            ".a..",
            ".a[?(@.b == 'x)]",
        ] {
            assert!(evaluate(bad, &json!({})).is_err(), "{bad}");
        }
    }
}
