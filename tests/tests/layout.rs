//! The layout rules of docs/architecture.md, checked over the source text:
//!
//! 1. **No import cycle between sibling modules**, at any depth of `api`, `hub` and
//!    `klusterlet`: when code under `a` names `b` and code under `b` names `a` (directly or
//!    through a chain of siblings), the test fails and prints the `use` lines that close
//!    the cycle. A child naming its parent (`super::Error`) is not a sibling edge.
//! 2. **Layers only look down**: `store` names nothing above it; `service` never names
//!    `http`, `cli`, `web` or `controllers`; `http`, `cli` and `web` never name `store`;
//!    `cli` never names `service`, `controllers` or `http` (it talks to the hub over HTTP).
//! 3. **No source file over 800 lines**, not counting its `#[cfg(test)] mod tests`.
//!
//! Test code (`tests/` folders, the `testkit` crate, `mod tests`) is exempt: it may reach
//! anywhere. The check reads `crate::`, `super::` and `self::` paths (use trees included)
//! after stripping comments and string literals; it needs no build of the checked crates.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Crates whose `src/` is checked.
const CRATES: &[&str] = &["api", "hub", "klusterlet"];

/// Most lines a source file may have outside its test module.
const MAX_LINES: usize = 800;

/// `(crate, from, to)`: code under module `from` must not name module `to`.
const FORBIDDEN: &[(&str, &str, &str)] = &[
    ("hub", "store", "service"),
    ("hub", "store", "controllers"),
    ("hub", "store", "http"),
    ("hub", "store", "cli"),
    ("hub", "store", "web"),
    ("hub", "service", "http"),
    ("hub", "service", "cli"),
    ("hub", "service", "web"),
    ("hub", "service", "controllers"),
    ("hub", "http", "store"),
    ("hub", "web", "store"),
    ("hub", "cli", "store"),
    ("hub", "cli", "service"),
    ("hub", "cli", "controllers"),
    ("hub", "cli", "http"),
    ("hub", "controllers", "http"),
    ("hub", "controllers", "cli"),
];

/// A module path inside one crate, `[]` for the crate root.
type ModPath = Vec<String>;

/// One source file of a crate.
struct SourceFile {
    path: PathBuf,
    module: ModPath,
    /// The file's text before its `#[cfg(test)] mod tests`.
    code: String,
}

/// A reference from one module to another, with where it was seen.
#[derive(Clone)]
struct Edge {
    from: ModPath,
    to: ModPath,
    at: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every library module file of a crate (binaries, `main.rs` and `bin/` excluded).
fn source_files(krate: &str) -> Vec<SourceFile> {
    let src = workspace().join(krate).join("src");
    let mut files = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("readable directory entry").path();
            let rel = path.strip_prefix(&src).expect("under src").to_path_buf();
            if path.is_dir() {
                if rel != Path::new("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || rel == Path::new("main.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            files.push(SourceFile {
                module: module_of(&rel),
                code: without_test_module(&text).to_string(),
                path,
            });
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// `service/writer.rs` -> `service::writer`; `service/mod.rs` -> `service`; `lib.rs` -> root.
fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The text before the first `#[cfg(test)]` that opens a module (by convention the last
/// item of a file).
fn without_test_module(text: &str) -> &str {
    let mut offset = 0;
    let mut pending_cfg_test = false;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if pending_cfg_test && (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ")) {
            return &text[..offset_of_cfg(text, offset)];
        }
        pending_cfg_test = trimmed == "#[cfg(test)]";
        offset += line.len();
    }
    text
}

/// The start of the `#[cfg(test)]` line that precedes `mod_line_start`.
fn offset_of_cfg(text: &str, mod_line_start: usize) -> usize {
    let before = &text[..mod_line_start];
    before
        .trim_end_matches('\n')
        .rfind('\n')
        .map_or(0, |i| i + 1)
}

/// Tokens of Rust source with comments, strings and char literals removed.
#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Star,
    Other,
}

fn tokenize(code: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            _ if c.is_whitespace() => i += 1,
            '/' if next == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(chars[i] == '\n');
                        i += 1;
                    }
                }
            }
            'r' if matches!(next, Some('"' | '#')) && raw_string_end(&chars, i + 1).is_some() => {
                let end = raw_string_end(&chars, i + 1).expect("checked");
                line += chars[i..end].iter().filter(|&&c| c == '\n').count();
                i = end;
            }
            'b' if next == Some('"') => i += 1,
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    line += usize::from(chars.get(i) == Some(&'\n'));
                    i += 1;
                }
                i += 1;
            }
            '\'' => {
                // A char literal ('a', '\n', '\u{..}') or a lifetime ('a): skip the former.
                if next == Some('\\') {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if chars.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            ':' if next == Some(':') => {
                out.push((Token::PathSep, line));
                i += 2;
            }
            '{' => {
                out.push((Token::Open, line));
                i += 1;
            }
            '}' => {
                out.push((Token::Close, line));
                i += 1;
            }
            ',' => {
                out.push((Token::Comma, line));
                i += 1;
            }
            '*' => {
                out.push((Token::Star, line));
                i += 1;
            }
            _ if c.is_alphanumeric() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push((Token::Ident(chars[start..i].iter().collect()), line));
            }
            _ => {
                out.push((Token::Other, line));
                i += 1;
            }
        }
    }
    out
}

/// Where a raw string starting at `at` (just after `r`) ends, if it is one.
fn raw_string_end(chars: &[char], at: usize) -> Option<usize> {
    let hashes = chars[at..].iter().take_while(|&&c| c == '#').count();
    if chars.get(at + hashes) != Some(&'"') {
        return None;
    }
    let mut i = at + hashes + 1;
    while i < chars.len() {
        if chars[i] == '"'
            && chars[i + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(chars.len())
}

/// Every path the file names from its own crate, as absolute segments, with its line.
fn crate_paths(file: &SourceFile) -> Vec<(Vec<String>, usize)> {
    let tokens = tokenize(&file.code);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = matches!(&tokens[i].0, Token::Ident(w) if w == "crate" || w == "super" || w == "self")
            && tokens.get(i + 1).map(|t| &t.0) == Some(&Token::PathSep)
            && (i == 0 || tokens[i - 1].0 != Token::PathSep);
        if !starts_path {
            i += 1;
            continue;
        }
        let line = tokens[i].1;
        let mut base = file.module.clone();
        // Resolve the leading `crate`/`super`/`self` segments against this file's module.
        while let Some((Token::Ident(w), _)) = tokens.get(i) {
            match w.as_str() {
                "crate" => base.clear(),
                "super" => {
                    base.pop();
                }
                "self" => {}
                _ => break,
            }
            i += 1;
            if tokens.get(i).map(|t| &t.0) != Some(&Token::PathSep) {
                break;
            }
            i += 1;
        }
        i = use_tree(&tokens, i, base, line, &mut out);
    }
    out
}

/// Reads one use tree (or plain path) at `i`, pushing its leaves; returns the next index.
fn use_tree(
    tokens: &[(Token, usize)],
    mut i: usize,
    mut prefix: Vec<String>,
    line: usize,
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    loop {
        match tokens.get(i).map(|t| &t.0) {
            Some(Token::Ident(w)) => {
                if w != "self" {
                    prefix.push(w.clone());
                }
                i += 1;
                if tokens.get(i).map(|t| &t.0) == Some(&Token::PathSep) {
                    i += 1;
                    continue;
                }
                out.push((prefix, line));
                return i;
            }
            Some(Token::Open) => {
                i += 1;
                loop {
                    match tokens.get(i).map(|t| &t.0) {
                        Some(Token::Close) => return i + 1,
                        Some(Token::Comma) => i += 1,
                        None => return i,
                        _ => i = use_tree(tokens, i, prefix.clone(), line, out),
                    }
                }
            }
            _ => {
                out.push((prefix, line));
                return i + usize::from(tokens.get(i).map(|t| &t.0) == Some(&Token::Star));
            }
        }
    }
}

/// The deepest known module a path names (`service::writer::Op` -> `service::writer`).
fn module_named(path: &[String], modules: &BTreeSet<ModPath>) -> ModPath {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
        .unwrap_or_default()
}

/// Every reference between modules of one crate.
fn edges(files: &[SourceFile]) -> Vec<Edge> {
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    let root = workspace();
    let mut out = Vec::new();
    for file in files {
        for (path, line) in crate_paths(file) {
            let to = module_named(&path, &modules);
            if to != file.module {
                let shown = file.path.strip_prefix(&root).unwrap_or(&file.path);
                out.push(Edge {
                    from: file.module.clone(),
                    to,
                    at: format!("{}:{line} names {}", shown.display(), path.join("::")),
                });
            }
        }
    }
    out
}

/// Sibling edges at each parent: `(parent, child_a, child_b)` for code under `parent::a`
/// naming something under `parent::b`.
fn sibling_edges(edges: &[Edge]) -> BTreeMap<ModPath, BTreeMap<(String, String), Vec<String>>> {
    let mut levels: BTreeMap<ModPath, BTreeMap<(String, String), Vec<String>>> = BTreeMap::new();
    for e in edges {
        let common = e.from.iter().zip(&e.to).take_while(|(a, b)| a == b).count();
        if common == e.from.len() || common == e.to.len() {
            continue; // an ancestor or descendant, not a sibling
        }
        levels
            .entry(e.from[..common].to_vec())
            .or_default()
            .entry((e.from[common].clone(), e.to[common].clone()))
            .or_default()
            .push(e.at.clone());
    }
    levels
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(graph: &BTreeMap<(String, String), Vec<String>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = graph.keys().flat_map(|(a, b)| [a, b]).collect();
    let nodes: Vec<&String> = nodes.into_iter().collect();
    let index_of = |n: &String| nodes.iter().position(|m| *m == n).expect("known node");
    let mut next: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (a, b) in graph.keys() {
        next[index_of(a)].push(index_of(b));
    }
    struct Tarjan<'a> {
        next: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        found: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.next[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        next: &next,
        index: vec![None; nodes.len()],
        low: vec![0; nodes.len()],
        on_stack: vec![false; nodes.len()],
        stack: Vec::new(),
        counter: 0,
        found: Vec::new(),
    };
    for v in 0..nodes.len() {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    t.found
        .into_iter()
        .map(|c| {
            let mut names: Vec<String> = c.into_iter().map(|i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect()
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn no_import_cycle_between_sibling_modules() {
    let mut problems = Vec::new();
    for krate in CRATES {
        let files = source_files(krate);
        for (parent, graph) in sibling_edges(&edges(&files)) {
            for cycle in cycles(&graph) {
                let mut lines = vec![format!(
                    "{krate}: cycle among {} under {}:",
                    cycle.join(", "),
                    show(&parent)
                )];
                for ((a, b), seen) in &graph {
                    if cycle.contains(a) && cycle.contains(b) {
                        lines.push(format!("  {a} -> {b}: {}", seen[0]));
                    }
                }
                problems.push(lines.join("\n"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "import cycles:\n{}",
        problems.join("\n")
    );
}

#[test]
fn layers_only_look_down() {
    let mut problems = Vec::new();
    for krate in CRATES {
        let files = source_files(krate);
        for e in edges(&files) {
            for (k, from, to) in FORBIDDEN {
                if k == krate
                    && e.from.first().map(String::as_str) == Some(*from)
                    && e.to.first().map(String::as_str) == Some(*to)
                {
                    problems.push(format!("{krate}: {from} must not name {to}: {}", e.at));
                }
            }
        }
    }
    assert!(problems.is_empty(), "layering:\n{}", problems.join("\n"));
}

#[test]
fn no_source_file_over_the_limit() {
    let root = workspace();
    let mut problems = Vec::new();
    for krate in CRATES {
        for file in source_files(krate) {
            let lines = file.code.lines().count();
            if lines > MAX_LINES {
                let shown = file.path.strip_prefix(&root).unwrap_or(&file.path);
                problems.push(format!(
                    "{}: {lines} lines (tests excluded)",
                    shown.display()
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "files over {MAX_LINES} lines; split them by concern:\n{}",
        problems.join("\n")
    );
}

/// The checker itself: a known cycle, a use tree, comments and strings.
#[test]
fn the_checker_finds_what_it_should() {
    let file = |module: &str, code: &str| SourceFile {
        path: PathBuf::from(format!("x/src/{module}.rs")),
        module: module.split("::").map(String::from).collect(),
        code: code.to_string(),
    };
    let files = vec![
        file(
            "a",
            "use crate::{b::{self, Thing}, c::*};\n// crate::d::x\nconst S: &str = \"crate::d\";",
        ),
        file("b", "fn f() { super::a::g(); let _ = 'x'; }"),
        file("c", "fn h<'a>(x: &'a str) {}"),
        file("d", ""),
    ];
    let levels = sibling_edges(&edges(&files));
    let root = &levels[&Vec::new()];
    let pairs: Vec<(String, String)> = root.keys().cloned().collect();
    assert_eq!(
        pairs,
        vec![
            ("a".into(), "b".into()),
            ("a".into(), "c".into()),
            ("b".into(), "a".into())
        ]
    );
    assert_eq!(cycles(root), vec![vec!["a".to_string(), "b".to_string()]]);
    assert_eq!(
        without_test_module("fn a() {}\n#[cfg(test)]\nmod tests {\n}\n"),
        "fn a() {}\n"
    );
}
