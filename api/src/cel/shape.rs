//! Compiling templated CEL once per *shape*: the text with each simple string literal
//! replaced by a positional placeholder. Real works are generated from templates: a
//! 500-manifest work has 500 rules that differ only in a name (`object.metadata.name ==
//! 'cm-0042'`), and CEL's (ANTLR) parser takes tens of microseconds per text. Their shape
//! (`object.metadata.name == '0'`) is compiled once; each text then gets the shape's
//! expression with its own literals put back, in a few microseconds.
//!
//! Why a text compiles exactly when its shape does, to the same expression but for the
//! literals (the argument the hub's verdicts and the agent's programs rest on):
//!
//! * A *simple* literal is `'…'` or `"…"` holding no backslash, no quote of its own kind
//!   and no line break, not preceded by a letter, digit or `_` (so not raw `r'…'`, bytes
//!   `b'…'` or any prefixed form) and not the start of a triple-quoted `'''…'''`. The
//!   grammar's `STRING` rule matches it as one token ending at its closing quote, whatever
//!   it holds; the placeholder (`'0'`, `'1'`, … in order) is one such token too.
//! * Outside literals the shape is the text, byte for byte; the split gives up (returns
//!   `None`) on anything that could hide a quote from this scan: a `//` comment, a
//!   backquoted identifier, or a literal that is not simple.
//! * So the lexer gives both the same token kinds in the same order, and the parser, which
//!   decides by token kinds, builds the same tree, assigns the same ids and expands the
//!   same macros. The one use of a string token's text is unescaping it, which returns a
//!   simple literal's content as it is and cannot fail. No standard macro looks at a
//!   literal's value.
//! * Only source positions differ (placeholders have other lengths), and those are only
//!   read to place errors: a shape that does not compile is never used, the text itself is
//!   compiled by [`super::compile`], so an error names the text's line and column.
//!
//! A compiled shape is used only if every placeholder is found exactly once among its
//! string literals (the only other string literals a parse makes come from `a.?field`,
//! which is never all digits); otherwise the text is compiled by itself.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock, Mutex};

use cel::common::ast::{EntryExpr, Expr, LiteralValue};
use cel::parser::Expression;

use super::{MAX_CEL_LENGTH, stdlib};

/// Compiled shapes kept at most; past it, those unused since the last sweep go.
pub const MAX_SHAPES: usize = 1024;
/// Bytes kept at most: each shape's text, and an estimate of its compiled tree's
/// ([`Template::bytes`]).
pub const MAX_SHAPE_BYTES: usize = 4 << 20;

/// A text split into its shape and its simple string literals, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<'a> {
    /// The text with its `i`-th simple literal replaced by `'i'`.
    pub shape: String,
    /// The literals' contents (between the quotes), the `i`-th for placeholder `i`.
    pub literals: Vec<&'a str>,
}

/// Splits `text` into shape and literals; `None` when any literal is not simple, or the
/// text has a comment or backquoted identifier (the module's comment says why).
pub fn split(text: &str) -> Option<Split<'_>> {
    let bytes = text.as_bytes();
    let mut shape = String::with_capacity(text.len() + 8);
    let mut literals = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'`' => return None,
            b'/' if bytes.get(i + 1) == Some(&b'/') => return None,
            quote @ (b'\'' | b'"') => {
                let prefixed =
                    i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
                let triple = bytes.get(i + 1) == Some(&quote) && bytes.get(i + 2) == Some(&quote);
                if prefixed || triple {
                    return None;
                }
                let start = i + 1;
                let len = bytes[start..].iter().position(|&b| b == quote)?;
                let content = &text[start..start + len];
                if content.contains(['\\', '\n', '\r']) {
                    return None;
                }
                shape.push_str(&text[copied..i]);
                shape.push('\'');
                shape.push_str(&literals.len().to_string());
                shape.push('\'');
                literals.push(content);
                i = start + len + 1;
                copied = i;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    shape.push_str(&text[copied..]);
    Some(Split { shape, literals })
}

/// A shape compiled in the standard environment: its expression, with placeholders.
#[derive(Debug)]
pub struct Template {
    expression: Expression,
    slots: usize,
    nodes: usize,
}

impl Template {
    /// Compiles a shape of [`split`]; `None` when it does not compile (or the parser
    /// panics), or when its placeholders are not each found once.
    pub fn compile(env: &cel::Env, shape: &str, slots: usize) -> Option<Template> {
        let program = catch_unwind(AssertUnwindSafe(|| env.compile(shape)))
            .ok()?
            .ok()?;
        let mut expression = program.expression().clone();
        let mut seen = vec![false; slots];
        let mut ok = true;
        let nodes = visit_strings(&mut expression, &mut |s| {
            if let Some(slot) = placeholder(s) {
                match seen.get_mut(slot) {
                    Some(seen) if !*seen => *seen = true,
                    _ => ok = false,
                }
            }
            None
        });
        (ok && seen.iter().all(|s| *s)).then_some(Template {
            expression,
            slots,
            nodes,
        })
    }

    /// About how many bytes the compiled tree takes: its nodes, each with a name or a
    /// value of a few bytes.
    pub fn bytes(&self) -> usize {
        self.nodes * (std::mem::size_of::<Expression>() + 32)
    }

    /// The shape's expression with `literals` in place of its placeholders: the expression
    /// the text they were split from compiles to. `None` if `literals` is not as many as
    /// the shape has placeholders.
    pub fn fill(&self, literals: &[&str]) -> Option<Expression> {
        if literals.len() != self.slots {
            return None;
        }
        let mut expression = self.expression.clone();
        visit_strings(&mut expression, &mut |s| {
            placeholder(s).map(|slot| literals[slot].to_string())
        });
        Some(expression)
    }
}

/// The slot a placeholder literal stands for (an all-digit string).
fn placeholder(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Calls `f` on the value of every string literal of `e`, replacing it with what `f`
/// returns, if anything; returns how many nodes `e` has.
fn visit_strings(e: &mut Expression, f: &mut dyn FnMut(&str) -> Option<String>) -> usize {
    1 + match &mut e.expr {
        Expr::Literal(LiteralValue::String(s)) => {
            if let Some(value) = f(s.inner()) {
                *s = value.into();
            }
            0
        }
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => 0,
        Expr::Call(call) => {
            let target = call
                .target
                .as_deref_mut()
                .map_or(0, |t| visit_strings(t, f));
            target
                + call
                    .args
                    .iter_mut()
                    .map(|a| visit_strings(a, f))
                    .sum::<usize>()
        }
        Expr::Comprehension(c) => [
            &mut c.iter_range,
            &mut c.accu_init,
            &mut c.loop_cond,
            &mut c.loop_step,
            &mut c.result,
        ]
        .into_iter()
        .map(|e| visit_strings(e, f))
        .sum(),
        Expr::List(list) => list.elements.iter_mut().map(|e| visit_strings(e, f)).sum(),
        Expr::Map(map) => visit_entries(&mut map.entries, f),
        Expr::Struct(s) => visit_entries(&mut s.entries, f),
        Expr::Select(select) => visit_strings(&mut select.operand, f),
    }
}

fn visit_entries(
    entries: &mut [cel::common::ast::IdedEntryExpr],
    f: &mut dyn FnMut(&str) -> Option<String>,
) -> usize {
    let mut nodes = 0;
    for entry in entries {
        nodes += 1 + match &mut entry.expr {
            EntryExpr::StructField(field) => visit_strings(&mut field.value, f),
            EntryExpr::MapEntry(m) => visit_strings(&mut m.key, f) + visit_strings(&mut m.value, f),
        };
    }
    nodes
}

/// What a text compiled to in the standard environment: a program compiled from the text
/// itself, or its shape's expression filled with its literals. Both run alike.
#[derive(Debug)]
pub enum Runnable {
    /// Compiled from the text.
    Program(cel::Program),
    /// The shape's expression with the text's literals.
    Filled(Expression),
}

impl Runnable {
    /// Runs it in `context`.
    pub fn execute(&self, context: &cel::Context) -> cel::ResolveResult {
        match self {
            Runnable::Program(p) => p.execute(context),
            Runnable::Filled(e) => cel::Value::resolve(e, context),
        }
    }
}

/// Compiles `text` in the standard environment through its shape when it has one that
/// compiles, else by itself with [`super::compile`] (and its errors).
pub fn compile(text: &str) -> Result<Runnable, String> {
    if let Some((split, template)) = shaped(text)
        && let Some(expression) = template.fill(&split.literals)
    {
        return Ok(Runnable::Filled(expression));
    }
    super::compile(stdlib(), text).map(Runnable::Program)
}

/// Whether `text` compiles in the standard environment, with [`super::compile`]'s error
/// when it does not; a text whose shape compiled before is not parsed.
pub fn check(text: &str) -> Result<(), String> {
    if compiles_by_shape(text) {
        return Ok(());
    }
    super::compile(stdlib(), text).map(drop)
}

/// Whether `text` is known to compile from its shape (compiling the shape the first time);
/// `false` says nothing: the text must be compiled by itself.
pub fn compiles_by_shape(text: &str) -> bool {
    shaped(text).is_some()
}

/// The text's split and its shape's template, when both exist (within the limits
/// [`super::compile`] applies to the text).
fn shaped(text: &str) -> Option<(Split<'_>, Arc<Template>)> {
    if text.len() > MAX_CEL_LENGTH || text.trim().is_empty() {
        return None;
    }
    let split = split(text)?;
    let template = template(&split)?;
    Some((split, template))
}

struct Cached {
    template: Option<Arc<Template>>,
    /// The shape's text and tree, in bytes (what the entry counts against the bound).
    bytes: usize,
    used: bool,
}

#[derive(Default)]
struct Cache {
    by_shape: HashMap<String, Cached>,
    bytes: usize,
}

static SHAPES: LazyLock<Mutex<Cache>> = LazyLock::new(Mutex::default);

fn lock() -> std::sync::MutexGuard<'static, Cache> {
    SHAPES.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    /// The cached template of `shape`: `None` if not cached, `Some(None)` if the shape
    /// does not compile.
    fn get(&mut self, shape: &str) -> Option<Option<Arc<Template>>> {
        let cached = self.by_shape.get_mut(shape)?;
        cached.used = true;
        Some(cached.template.clone())
    }

    /// Keeps `template` for `shape`, within [`MAX_SHAPES`] and [`MAX_SHAPE_BYTES`]: past
    /// them, the shapes unused since the last sweep go (all of them if that is not enough).
    fn insert(&mut self, shape: &str, template: Option<Arc<Template>>) {
        let bytes = shape.len() + template.as_ref().map_or(0, |t| t.bytes());
        if self.by_shape.contains_key(shape) || bytes > MAX_SHAPE_BYTES {
            return;
        }
        if self.by_shape.len() >= MAX_SHAPES || self.bytes + bytes > MAX_SHAPE_BYTES {
            self.by_shape.retain(|_, c| std::mem::take(&mut c.used));
            self.bytes = self.by_shape.values().map(|c| c.bytes).sum();
            if self.by_shape.len() >= MAX_SHAPES || self.bytes + bytes > MAX_SHAPE_BYTES {
                self.by_shape.clear();
                self.bytes = 0;
            }
        }
        self.bytes += bytes;
        self.by_shape.insert(
            shape.to_string(),
            Cached {
                template,
                bytes,
                used: true,
            },
        );
    }
}

/// The compiled shape of `split`, compiling it the first time; a shape that does not
/// compile is remembered too, so its texts go straight to the normal path.
fn template(split: &Split) -> Option<Arc<Template>> {
    if let Some(template) = lock().get(&split.shape) {
        return template;
    }
    // Compiled without the lock: one slow parse does not hold every other caller (two
    // callers may both compile a new shape, which is harmless).
    let template = Template::compile(stdlib(), &split.shape, split.literals.len()).map(Arc::new);
    lock().insert(&split.shape, template.clone());
    template
}

#[cfg(test)]
mod tests;
