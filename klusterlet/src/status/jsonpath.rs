//! A JSONPath evaluator for the Kubernetes dialect that feedback rules use (as `kubectl
//! -o jsonpath` and OCM read them): `.a.b`, `['a']`, `[0]`, `[-1]`, `[1:3]`, `[*]`, `.*`,
//! `..a` (recursive descent) and filters `[?(@.type=="Ready")]` with `==`, `!=`, `<`,
//! `<=`, `>`, `>=` or plain existence (`[?(@.x)]`). Optional `{...}` and a leading `$`.
//! Missing keys and indexes give no result rather than an error.

use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Child(String),
    Descendant(String),
    Wildcard,
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
struct Filter {
    path: Vec<Segment>,
    test: Option<(Op, Value)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The values `path` selects in `root`, in document order.
pub fn evaluate<'a>(path: &str, root: &'a Value) -> Result<Vec<&'a Value>, String> {
    let segments = parse(path)?;
    Ok(apply(&segments, vec![root]))
}

fn parse(path: &str) -> Result<Vec<Segment>, String> {
    let mut text = path.trim();
    if let Some(inner) = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
        text = inner.trim();
    }
    text = text.strip_prefix('$').unwrap_or(text);
    let mut parser = Parser {
        chars: text.chars().collect(),
        at: 0,
    };
    let segments = parser.segments(false)?;
    if parser.at < parser.chars.len() {
        return Err(format!(
            "unexpected {:?} at {} in {path:?}",
            parser.chars[parser.at], parser.at
        ));
    }
    Ok(segments)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn eat(&mut self, s: &str) -> bool {
        let n = s.chars().count();
        if self.chars.len() >= self.at + n
            && self.chars[self.at..self.at + n]
                .iter()
                .copied()
                .eq(s.chars())
        {
            self.at += n;
            true
        } else {
            false
        }
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// Segments until the end, or (`in_filter`) until an operator or `)`.
    fn segments(&mut self, in_filter: bool) -> Result<Vec<Segment>, String> {
        let mut segments = Vec::new();
        while let Some(c) = self.peek() {
            match c {
                '.' if self.eat("..") => {
                    let name = self.name();
                    if name.is_empty() || name == "*" {
                        return Err("`..` needs a field name".into());
                    }
                    segments.push(Segment::Descendant(name));
                }
                '.' => {
                    self.at += 1;
                    let name = self.name();
                    match name.as_str() {
                        "" if self.peek() == Some('[') || self.peek().is_none() => {}
                        "" => return Err(format!("empty field name at {}", self.at)),
                        "*" => segments.push(Segment::Wildcard),
                        _ => segments.push(Segment::Child(name)),
                    }
                }
                '[' => {
                    self.at += 1;
                    segments.push(self.bracket()?);
                }
                _ if in_filter => break,
                _ => return Err(format!("unexpected {c:?} at {}", self.at)),
            }
        }
        Ok(segments)
    }

    fn name(&mut self) -> String {
        let start = self.at;
        while let Some(c) = self.peek() {
            if c == '.' || c == '[' || c.is_whitespace() || "=!<>)".contains(c) {
                break;
            }
            self.at += 1;
        }
        self.chars[start..self.at].iter().collect()
    }

    /// After `[`, through `]`.
    fn bracket(&mut self) -> Result<Segment, String> {
        self.skip_spaces();
        let segment = match self.peek() {
            Some('\'' | '"') => Segment::Child(self.quoted()?),
            Some('*') => {
                self.at += 1;
                Segment::Wildcard
            }
            Some('?') => {
                self.at += 1;
                self.skip_spaces();
                let parenthesized = self.eat("(");
                let filter = self.filter()?;
                if parenthesized {
                    self.skip_spaces();
                    if !self.eat(")") {
                        return Err("filter without its `)`".into());
                    }
                }
                Segment::Filter(filter)
            }
            _ => {
                let start = self.at;
                while self.peek().is_some_and(|c| c != ']') {
                    self.at += 1;
                }
                let inner: String = self.chars[start..self.at].iter().collect();
                index_or_slice(inner.trim())?
            }
        };
        self.skip_spaces();
        if !self.eat("]") {
            return Err(format!("expected `]` at {}", self.at));
        }
        Ok(segment)
    }

    fn quoted(&mut self) -> Result<String, String> {
        let quote = self.peek().ok_or("expected a quote")?;
        self.at += 1;
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.at += 1;
            match c {
                '\\' => {
                    if let Some(next) = self.peek() {
                        out.push(next);
                        self.at += 1;
                    }
                }
                c if c == quote => return Ok(out),
                c => out.push(c),
            }
        }
        Err("unterminated string".into())
    }

    fn filter(&mut self) -> Result<Filter, String> {
        self.skip_spaces();
        if !self.eat("@") {
            return Err("a filter starts with `@`".into());
        }
        let path = self.segments(true)?;
        self.skip_spaces();
        let op = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("<", Op::Lt),
            (">", Op::Gt),
        ]
        .into_iter()
        .find(|(s, _)| self.eat(s))
        .map(|(_, op)| op);
        let Some(op) = op else {
            return Ok(Filter { path, test: None });
        };
        self.skip_spaces();
        let literal = match self.peek() {
            Some('\'' | '"') => Value::String(self.quoted()?),
            _ => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|c| c != ')' && c != ']' && !c.is_whitespace())
                {
                    self.at += 1;
                }
                let raw: String = self.chars[start..self.at].iter().collect();
                serde_json::from_str(&raw).map_err(|_| format!("cannot compare with {raw:?}"))?
            }
        };
        Ok(Filter {
            path,
            test: Some((op, literal)),
        })
    }
}

fn index_or_slice(inner: &str) -> Result<Segment, String> {
    let number = |s: &str| -> Result<Option<i64>, String> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else {
            s.parse().map(Some).map_err(|_| format!("bad index {s:?}"))
        }
    };
    match inner.split_once(':') {
        Some((start, end)) => {
            // A step (`[a:b:c]`) is not supported.
            if end.contains(':') {
                return Err(format!("unsupported slice {inner:?}"));
            }
            Ok(Segment::Slice(number(start)?, number(end)?))
        }
        None => number(inner)?
            .map(Segment::Index)
            .ok_or_else(|| "empty `[]`".to_string()),
    }
}

fn apply<'a>(segments: &[Segment], mut current: Vec<&'a Value>) -> Vec<&'a Value> {
    for segment in segments {
        let mut next = Vec::new();
        for value in current {
            step(segment, value, &mut next);
        }
        current = next;
    }
    current
}

fn step<'a>(segment: &Segment, value: &'a Value, out: &mut Vec<&'a Value>) {
    match segment {
        Segment::Child(name) => out.extend(value.get(name.as_str())),
        Segment::Descendant(name) => descend(name, value, out),
        Segment::Wildcard => match value {
            Value::Object(map) => out.extend(map.values()),
            Value::Array(items) => out.extend(items),
            _ => {}
        },
        Segment::Index(i) => {
            if let Value::Array(items) = value
                && let Some(at) = position(*i, items.len())
                && at < items.len()
            {
                out.push(&items[at]);
            }
        }
        Segment::Slice(start, end) => {
            if let Value::Array(items) = value {
                let len = items.len();
                let start = start.map_or(0, |s| position(s, len).unwrap_or(0)).min(len);
                let end = end.map_or(len, |e| position(e, len).unwrap_or(0)).min(len);
                if start < end {
                    out.extend(&items[start..end]);
                }
            }
        }
        Segment::Filter(filter) => {
            if let Value::Array(items) = value {
                out.extend(items.iter().filter(|item| matches(filter, item)));
            }
        }
    }
}

/// An index from the start, or (negative) from the end.
fn position(i: i64, len: usize) -> Option<usize> {
    if i >= 0 {
        usize::try_from(i).ok()
    } else {
        len.checked_sub(usize::try_from(i.unsigned_abs()).ok()?)
    }
}

fn descend<'a>(name: &str, value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            out.extend(map.get(name));
            for child in map.values() {
                descend(name, child, out);
            }
        }
        Value::Array(items) => {
            for child in items {
                descend(name, child, out);
            }
        }
        _ => {}
    }
}

fn matches(filter: &Filter, item: &Value) -> bool {
    let found = apply(&filter.path, vec![item]);
    let Some((op, literal)) = &filter.test else {
        return found.iter().any(|v| !v.is_null());
    };
    let Some(left) = found.first() else {
        return false;
    };
    let ordering = match (left, literal) {
        (Value::Number(a), Value::Number(b)) => a
            .as_f64()
            .zip(b.as_f64())
            .and_then(|(a, b)| a.partial_cmp(&b)),
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        (a, b) if a == &b => Some(std::cmp::Ordering::Equal),
        _ => None,
    };
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ordering == Some(Equal),
        Op::Ne => ordering != Some(Equal),
        Op::Lt => ordering == Some(Less),
        Op::Le => matches!(ordering, Some(Less | Equal)),
        Op::Gt => ordering == Some(Greater),
        Op::Ge => matches!(ordering, Some(Greater | Equal)),
    }
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
            ".a[1:2:3]",
        ] {
            assert!(evaluate(bad, &json!({})).is_err(), "{bad}");
        }
    }
}
