//! kubectl's JSONPath templates (`-o jsonpath=...`) over `serde_json_path` (RFC 9535).
//!
//! kubectl writes paths without the leading `$` (`.items[*].metadata.name`), escapes dots
//! inside keys (`.metadata.labels.app\.kubernetes\.io/name`), accepts names RFC 9535 only
//! takes in brackets (`.metadata.labels.app-name`), and wraps them in a template:
//! literal text, `{PATH}`, `{"\n"}` and `{range PATH}...{end}`. This shim turns each path
//! into RFC 9535 ([`to_rfc9535`]) and walks the template; the evaluation itself is
//! `serde_json_path`'s. OCM's status feedback paths (`.status.replicas`) are the same
//! form, so the klusterlet can use [`query`] too.

use serde_json::Value;
use serde_json_path::JsonPath;

/// Why a template or a path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JsonPathError {
    /// The template's braces, quotes or `range`/`end` do not match.
    #[error("template {template:?}: {message}")]
    Template {
        /// The template as given.
        template: String,
        /// What is wrong with it.
        message: String,
    },
    /// A path is not JSONPath.
    #[error("path {path:?}: {message}")]
    Path {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        message: String,
    },
    /// The path, turned into RFC 9535, does not parse.
    #[error("path {path:?}: {source}")]
    Parse {
        /// The path as given.
        path: String,
        /// The parser's error.
        #[source]
        source: serde_json_path::ParseError,
    },
}

/// A kubectl path (`.a.b[*]`, `$.a`, `@.a`, `..name`) in RFC 9535 form (`$.a.b[*]`).
pub fn to_rfc9535(path: &str) -> Result<String, JsonPathError> {
    let fail = |message: &str| JsonPathError::Path {
        path: path.to_string(),
        message: message.to_string(),
    };
    let chars: Vec<char> = path.trim().chars().collect();
    let mut out = String::from("$");
    let mut i = 0;
    if matches!(chars.first(), Some('$' | '@')) {
        i = 1;
    }
    while i < chars.len() {
        match chars[i] {
            '.' if chars.get(i + 1) == Some(&'.') => {
                out.push_str("..");
                i += 2;
                // `..[0]` and `..*` go on as they are; `..name` takes a name.
                if matches!(chars.get(i), Some('[' | '*')) {
                    continue;
                }
                let (name, next) = name_at(&chars, i);
                if name.is_empty() {
                    return Err(fail("a name must follow `..`"));
                }
                push_name(&mut out, &name, false);
                i = next;
            }
            '.' => {
                let (name, next) = name_at(&chars, i + 1);
                if name.is_empty() {
                    // `.` alone (or before `[`) is the current object.
                    i += 1;
                    continue;
                }
                push_name(&mut out, &name, true);
                i = next;
            }
            '[' => {
                let end = bracket_end(&chars, i).ok_or_else(|| fail("unclosed `[`"))?;
                out.extend(&chars[i..=end]);
                i = end + 1;
            }
            c => return Err(fail(&format!("unexpected {c:?}: paths start with `.`"))),
        }
    }
    Ok(out)
}

/// A name from `start` up to the next unescaped `.`, `[` or whitespace, with `\.` unescaped.
fn name_at(chars: &[char], start: usize) -> (String, usize) {
    let mut name = String::new();
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '\\' if i + 1 < chars.len() => {
                name.push(chars[i + 1]);
                i += 2;
            }
            // kubectl ends a name at whitespace too, so `.a b` is an error, not `['a b']`.
            c if c == '.' || c == '[' || c.is_whitespace() => break,
            c => {
                name.push(c);
                i += 1;
            }
        }
    }
    (name, i)
}

/// Appends a member: `.name` when RFC 9535's shorthand takes it, else `['name']`.
fn push_name(out: &mut String, name: &str, dot: bool) {
    let shorthand = name == "*"
        || (name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_alphanumeric() || c == '_'));
    if shorthand {
        if dot {
            out.push('.');
        }
        out.push_str(name);
    } else {
        let quoted = name.replace('\\', "\\\\").replace('\'', "\\'");
        out.push_str(&format!("['{quoted}']"));
    }
}

/// The index of the `]` closing the `[` at `start` (quotes and nested brackets skipped).
fn bracket_end(chars: &[char], start: usize) -> Option<usize> {
    find_outside(chars, start + 1, ']')
}

/// The index of the first `target` from `from` on that is neither quoted nor inside a
/// `[...]` opened after `from`: one scanner for paths' brackets and templates' actions.
fn find_outside(chars: &[char], from: usize, target: char) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut depth = 0;
    let mut i = from;
    while i < chars.len() {
        let c = chars[i];
        match quote {
            Some(_) if c == '\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == target && depth == 0 => return Some(i),
            None => match c {
                '\'' | '"' => quote = Some(c),
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// A kubectl or RFC 9535 path, parsed.
pub fn query(path: &str) -> Result<JsonPath, JsonPathError> {
    let rfc = to_rfc9535(path)?;
    JsonPath::parse(&rfc).map_err(|source| JsonPathError::Parse {
        path: path.to_string(),
        source,
    })
}

/// One piece of a template.
#[derive(Debug, Clone)]
enum Node {
    /// Printed as it is.
    Text(String),
    /// The values a path selects, joined by spaces.
    Path(JsonPath),
    /// The body once per value the path selects, each its current object.
    Range(JsonPath, Vec<Node>),
}

/// A parsed kubectl JSONPath template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

impl Template {
    /// Parses a template such as `{range .items[*]}{.metadata.name}{"\n"}{end}`.
    pub fn parse(template: &str) -> Result<Template, JsonPathError> {
        let fail = |message: String| JsonPathError::Template {
            template: template.to_string(),
            message,
        };
        // The open ranges: their path and the nodes collected so far; the last is the top.
        let mut stack: Vec<(Option<JsonPath>, Vec<Node>)> = vec![(None, Vec::new())];
        let chars: Vec<char> = template.chars().collect();
        let mut text = String::new();
        let mut i = 0;
        while i < chars.len() {
            if chars[i] != '{' {
                text.push(chars[i]);
                i += 1;
                continue;
            }
            let end = action_end(&chars, i).ok_or_else(|| fail("unclosed `{`".into()))?;
            let action: String = chars[i + 1..end].iter().collect::<String>();
            let action = action.trim();
            let top = &mut stack.last_mut().expect("the root is never popped").1;
            if !text.is_empty() {
                top.push(Node::Text(std::mem::take(&mut text)));
            }
            if let Some(path) = action.strip_prefix("range ") {
                stack.push((Some(query(path)?), Vec::new()));
            } else if action == "end" {
                if stack.len() == 1 {
                    return Err(fail("`{end}` without `{range ...}`".into()));
                }
                let (path, body) = stack.pop().expect("checked above");
                let path = path.expect("only the root has no path");
                let top = &mut stack.last_mut().expect("the root is never popped").1;
                top.push(Node::Range(path, body));
            } else if action.starts_with('"') || action.starts_with('\'') {
                top.push(Node::Text(unquote(action).map_err(fail)?));
            } else if action.is_empty() {
                return Err(fail("empty `{}`".into()));
            } else {
                top.push(Node::Path(query(action)?));
            }
            i = end + 1;
        }
        if stack.len() > 1 {
            return Err(fail("`{range ...}` without `{end}`".into()));
        }
        let mut nodes = stack.pop().expect("the root").1;
        if !text.is_empty() {
            nodes.push(Node::Text(text));
        }
        Ok(Template { nodes })
    }

    /// The template applied to `value`. A path that selects nothing prints nothing (as
    /// kubectl's default `--allow-missing-template-keys`).
    pub fn render(&self, value: &Value) -> String {
        let mut out = String::new();
        render(&self.nodes, value, &mut out);
        out
    }
}

fn render(nodes: &[Node], value: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Path(p) => {
                let found: Vec<String> = p.query(value).all().into_iter().map(show).collect();
                out.push_str(&found.join(" "));
            }
            Node::Range(p, body) => {
                for item in p.query(value).all() {
                    render(body, item, out);
                }
            }
        }
    }
}

/// A value as kubectl prints it: strings bare, everything else as JSON.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The index of the `}` closing the action that opens at `start`.
fn action_end(chars: &[char], start: usize) -> Option<usize> {
    find_outside(chars, start + 1, '}')
}

/// `"a\tb\n"` → the text, with `\n`, `\t`, `\r`, `\\` and the quote unescaped.
fn unquote(quoted: &str) -> Result<String, String> {
    let mut chars = quoted.chars();
    let q = chars.next().unwrap_or('"');
    let inner: String = chars.collect();
    let Some(inner) = inner.strip_suffix(q) else {
        return Err(format!("unterminated string {quoted}"));
    };
    let mut out = String::new();
    let mut it = inner.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => return Err(format!("string {quoted} ends in `\\`")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({"kind": "List", "items": [
            {"metadata": {"name": "a", "labels": {"app.kubernetes.io/name": "web", "tier-x": "1"}},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "b", "labels": {}},
             "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
        ]})
    }

    fn render(template: &str) -> String {
        Template::parse(template).unwrap().render(&list())
    }

    #[test]
    fn kubectl_paths_become_rfc_9535() {
        assert_eq!(
            to_rfc9535(".items[*].metadata.name").unwrap(),
            "$.items[*].metadata.name"
        );
        assert_eq!(to_rfc9535("$.kind").unwrap(), "$.kind");
        assert_eq!(to_rfc9535("..name").unwrap(), "$..name");
        assert_eq!(
            to_rfc9535(r".metadata.labels.app\.kubernetes\.io/name").unwrap(),
            "$.metadata.labels['app.kubernetes.io/name']"
        );
        assert_eq!(to_rfc9535(".labels.tier-x").unwrap(), "$.labels['tier-x']");
        assert_eq!(
            to_rfc9535(r#".status.conditions[?(@.type=="Ready")].status"#).unwrap(),
            r#"$.status.conditions[?(@.type=="Ready")].status"#
        );
    }

    #[test]
    fn templates_render_as_kubectl_does() {
        assert_eq!(render("{.items[*].metadata.name}"), "a b");
        assert_eq!(render("{.kind}{\"\\n\"}"), "List\n");
        assert_eq!(
            render(
                "{range .items[*]}{.metadata.name}{\"\\t\"}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"
            ),
            "a\tTrue\nb\tFalse\n"
        );
        assert_eq!(
            render(r"{.items[0].metadata.labels.app\.kubernetes\.io/name}"),
            "web"
        );
        assert_eq!(render("names: {.items[*].metadata.name}!"), "names: a b!");
        // A missing key prints nothing; objects print as JSON.
        assert_eq!(render("{.nothing}"), "");
        assert_eq!(render("{.items[1].metadata.labels}"), "{}");
    }

    #[test]
    fn malformed_templates_are_refused_with_the_reason() {
        for (bad, why) in [
            ("{.items[*]", "unclosed `{`"),
            ("{range .items[*]}{.a}", "without `{end}`"),
            ("{.a}{end}", "without `{range"),
            ("{}", "empty"),
            ("{.items[}", "unclosed"),
            ("{.items[?(@.a==)]}", "path"),
            ("{items}", "paths start with `.`"),
            ("{\"abc}", "unclosed"),
            ("{\"a\" x}", "unterminated"),
        ] {
            let err = Template::parse(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
