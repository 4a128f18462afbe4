//! JSONPath for feedback rules: RFC 9535 (`serde_json_path`) through `api::jsonpath`, the
//! shim for the Kubernetes dialect OCM's rules are written in (as `kubectl -o jsonpath`
//! reads them): an optional leading `$`, and dotted names that may hold `-` or `/`
//! (`.metadata.labels.app-name`), which RFC 9535 writes `['app-name']`. Everything else
//! (`['a']`, `[0]`, `[-1]`, `[1:3]`, `[*]`, `.*`, `..a`, filters `[?(@.type=="Ready")]`
//! with comparisons or existence) is RFC 9535 already. Missing keys and indexes give no
//! result rather than an error.

use api::jsonpath::JsonPathError;
use serde_json::Value;

/// The values `path` selects in `root`, in document order. The translation to RFC 9535 is
/// `api::jsonpath`'s (shared with `hub get -o jsonpath`); what is added here is OCM's
/// leniency: the path may sit in `{...}` and may leave out its first dot (`status.x`).
pub fn evaluate<'a>(path: &str, root: &'a Value) -> Result<Vec<&'a Value>, JsonPathError> {
    let mut text = path.trim();
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        text = inner.trim();
    }
    let dotted;
    if text.starts_with(|c: char| c.is_alphabetic() || c == '_') {
        dotted = format!(".{text}");
        text = &dotted;
    }
    Ok(api::jsonpath::query(text)?.query(root).all())
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
