use super::*;
use serde_json::{Value as Json, json};

fn shape_of(text: &str) -> Option<(String, Vec<&str>)> {
    split(text).map(|s| (s.shape, s.literals))
}

#[test]
fn simple_literals_are_split_out_in_order() {
    assert_eq!(
        shape_of("object.metadata.name == 'cm-1' && object.kind == \"ConfigMap\""),
        Some((
            "object.metadata.name == '0' && object.kind == '1'".to_string(),
            vec!["cm-1", "ConfigMap"]
        ))
    );
    // A quote of the other kind, `//` and non-ASCII text inside a literal are its content.
    assert_eq!(
        shape_of(r#"a == "it's" || b == 'say "hi"' || c == 'http://x/é' || d == ''"#),
        Some((
            "a == '0' || b == '1' || c == '2' || d == '3'".to_string(),
            vec!["it's", "say \"hi\"", "http://x/é", ""]
        ))
    );
    assert_eq!(
        shape_of("size(object.data) > 0"),
        Some(("size(object.data) > 0".to_string(), vec![]))
    );
}

#[test]
fn literals_that_are_not_simple_take_the_normal_path() {
    for text in [
        r"a == 'it\'s'",           // an escape
        r#"a == "\u00e9""#,        // a unicode escape
        r"a == r'raw\d'",          // raw
        r"a == R'raw'",            // raw, upper case
        r"a == b'bytes'",          // bytes
        r"a == rb'raw bytes'",     // raw bytes
        r"a == br'raw bytes'",     // raw bytes, other order
        "a == '''triple'''",       // triple quotes
        r#"a == """triple""""#,    // triple double quotes
        "a == 'unterminated",      // no closing quote
        "a == 'two\nlines'",       // a line break inside
        "a == 'x' // it's a note", // a comment
        "a.`b-c` == 'x'",          // a backquoted identifier
        "a == x'y'",               // glued to an identifier
    ] {
        assert_eq!(split(text), None, "{text}");
    }
}

/// Compiled through its shape, and directly: the same expression (ids included), or the
/// same error.
fn assert_same_compile(text: &str) {
    let direct = super::super::compile(stdlib(), text);
    let shaped = compile(text);
    match (&direct, &shaped) {
        (Ok(program), Ok(Runnable::Filled(expression))) => {
            assert_eq!(expression, program.expression(), "{text}")
        }
        (Ok(program), Ok(Runnable::Program(p))) => {
            assert_eq!(p.expression(), program.expression(), "{text}")
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "{text}"),
        _ => panic!("{text}: direct {direct:?}, by shape {shaped:?}"),
    }
    assert_eq!(
        check(text),
        direct.as_ref().map(drop).map_err(Clone::clone),
        "{text}"
    );
}

/// Expressions with `$` where a literal goes, covering macros, `has()`, map literals with
/// string keys, `in`, string functions, and texts that do not compile.
const TEMPLATES: &[&str] = &[
    "object.metadata.name == $",
    "has(object.data) && size(object.data) > 0 && object.metadata.name == $ && object.metadata.namespace == $",
    "object.status.conditions.exists(c, c.type == $ && c.status == $)",
    "object.status.conditions.all(c, c.type != $)",
    "object.status.conditions.filter(c, c.type == $).map(c, c.status + $)",
    "object.status.conditions.exists_one(c, c.reason.startsWith($))",
    "{$: 1, $: object.metadata.name}[$] == 1",
    "{$: $}[object.metadata.name] == $",
    "object.metadata.name in [$, $, $]",
    "$ in object.metadata.labels",
    "object.metadata.labels[$] == $",
    "object.metadata.name.startsWith($) || object.metadata.name.endsWith($) || object.metadata.name.contains($)",
    "object.metadata.name.matches($)",
    "size($) + size(object.metadata.name) > 3",
    "$ + object.metadata.name == $ + $",
    "object.metadata.?name.orValue($) == $",
    "result ? 'data of ' + object.metadata.name : $",
    "[$, $].map(x, x + $).exists(y, y == $)",
    "object.metadata.name == $ &&",
    "object.metadata.(name == $",
    "$ $",
    "object.metadata.name == $\n  && object.kind == $",
];

/// Literal contents, the awkward ones included: placeholder-like digits, quotes of the
/// other kind, `//`, regex syntax, non-ASCII, empty.
const LITERALS: &[&str] = &[
    "cm-0001",
    "0",
    "12",
    "",
    "it's",
    "say \"hi\"",
    "//",
    "a b",
    "é✓",
    "^cm-[0-9]+$",
    "[",
    "Complete",
    "True",
    "name",
    "ConfigMap",
    "w-1",
];

/// A small deterministic generator (no dependency for one test).
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// A literal as the text writes it: single quotes unless it holds one.
fn quoted(content: &str, double: bool) -> String {
    if double || content.contains('\'') {
        format!("\"{content}\"")
    } else {
        format!("'{content}'")
    }
}

fn instantiate(template: &str, rng: &mut Xorshift) -> String {
    let mut out = String::new();
    for (i, part) in template.split('$').enumerate() {
        if i > 0 {
            out += &quoted(LITERALS[rng.next(LITERALS.len())], rng.next(2) == 0);
        }
        out += part;
    }
    out
}

fn objects() -> Vec<Json> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "cm-0001", "namespace": "w-1", "labels": {"name": "cm-0001", "0": "12"}},
               "data": {"a": "b"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "it's"}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "Complete", "labels": {}},
               "status": {"conditions": [{"type": "Complete", "status": "True", "reason": "é✓"},
                                         {"type": "Failed", "status": "False", "reason": "//"}]}}),
    ]
}

fn run(object: &Json, execute: impl Fn(&cel::Context) -> cel::ResolveResult) -> cel::ResolveResult {
    let mut context = cel::Context::with_env(stdlib().clone());
    context.add_variable_from_value("object", cel::to_value(object).unwrap());
    context.add_variable_from_value("result", true);
    execute(&context)
}

#[test]
fn a_shape_compiled_expression_is_the_directly_compiled_one_and_runs_alike() {
    let mut rng = Xorshift(0x9e37_79b9_7f4a_7c15);
    let objects = objects();
    let mut filled = 0;
    for template in TEMPLATES {
        for _ in 0..12 {
            let text = instantiate(template, &mut rng);
            assert_same_compile(&text);
            let Ok(direct) = super::super::compile(stdlib(), &text) else {
                continue;
            };
            let shaped = compile(&text).unwrap();
            filled += matches!(shaped, Runnable::Filled(_)) as usize;
            for object in &objects {
                assert_eq!(
                    run(object, |c| shaped.execute(c)),
                    run(object, |c| direct.execute(c)),
                    "{text} over {object}"
                );
            }
        }
    }
    assert!(
        filled > 100,
        "only {filled} texts were compiled by their shape"
    );
}

#[test]
fn texts_that_take_the_normal_path_compile_as_before() {
    for text in [
        r"object.metadata.name == 'it\'s'",
        r"object.metadata.name == r'raw\d'",
        "object.metadata.name == '''triple'''",
        "string(b'bytes') == 'bytes'",
        "object.metadata.name == 'x' // a comment with it's quote",
        "object.metadata.name == 'unterminated",
        "object.metadata.name == 'two\nlines'",
        "object.metadata.name == 'x' && ",
        " ",
        "",
    ] {
        assert_same_compile(text);
        assert!(!compiles_by_shape(text), "{text}");
    }
    // Too long: refused as by the compiler, even though its shape is short.
    let long = format!("object.metadata.name == '{}'", "a".repeat(MAX_CEL_LENGTH));
    assert!(!compiles_by_shape(&long));
    assert_same_compile(&long);
}

#[test]
fn errors_keep_the_texts_line_and_column() {
    // The shape's own columns differ ('0' is shorter than 'a-long-name'); the error is
    // the text's.
    let text = "object.metadata.name == 'a-long-name' && object.(";
    let error = check(text).unwrap_err();
    assert_eq!(
        Err(error.clone()),
        super::super::compile(stdlib(), text).map(drop)
    );
    let shape = split(text).unwrap().shape;
    let shapes_error = super::super::compile(stdlib(), &shape)
        .map(drop)
        .unwrap_err();
    assert_ne!(error, shapes_error, "the shape's error has other columns");
}

#[test]
fn texts_of_one_shape_compile_it_once() {
    let a = "object.metadata.name == 'once-a' && object.kind == 'compile-once-shape'";
    let b = "object.metadata.name == 'once-b' && object.kind == 'compile-once-shape-2'";
    let (sa, sb) = (split(a).unwrap(), split(b).unwrap());
    assert_eq!(sa.shape, sb.shape);
    let first = template(&sa).unwrap();
    let second = template(&sb).unwrap();
    assert!(Arc::ptr_eq(&first, &second));
}

#[test]
fn the_cache_stays_within_its_bounds() {
    let mut cache = Cache::default();
    let long = "x".repeat(MAX_SHAPE_BYTES / 4);
    // A tree is counted too: a compiled shape weighs more than its text.
    let tree = Template::compile(stdlib(), "a.all(x, x > '0')", 1).map(Arc::new);
    assert!(tree.as_ref().unwrap().bytes() > 10 * std::mem::size_of::<Expression>());
    cache.insert("a.all(x, x > '0')", tree);
    assert!(cache.bytes > 10 * std::mem::size_of::<Expression>());
    for i in 0..MAX_SHAPES * 2 {
        let shape = if i % 100 == 99 {
            format!("{long}{i}")
        } else {
            format!("a > {i}")
        };
        cache.insert(&shape, None);
        assert!(matches!(cache.get(&shape), Some(None)));
        assert!(cache.by_shape.len() <= MAX_SHAPES);
        assert!(cache.bytes <= MAX_SHAPE_BYTES);
        assert_eq!(
            cache.bytes,
            cache.by_shape.values().map(|c| c.bytes).sum::<usize>()
        );
    }
}
