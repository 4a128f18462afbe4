//! Compiling CEL, with the one way every caller reports an expression that does not
//! compile: `line L, column C: what` for each error. The hub's placement selectors and
//! work condition rules use it to refuse bad expressions with 422, and the klusterlet to
//! explain one it cannot run.

pub mod shape;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

/// Longest CEL expression, in bytes.
pub const MAX_CEL_LENGTH: usize = 4096;
/// Most CEL expressions in one rule or selector (OCM's limit for selectors).
pub const MAX_CEL_EXPRESSIONS: usize = 64;

/// The standard environment, built once: building the standard library is not free.
static STDLIB: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// The standard CEL environment (functions and macros of the CEL spec), shared.
pub fn stdlib() -> &'static Arc<cel::Env> {
    &STDLIB
}

/// Compiles one expression in `env`. The error is a sentence for a person, naming the line
/// and column of each problem; the parser is third-party code run on user input, so a panic
/// in it is an error too, not a crash.
pub fn compile(env: &cel::Env, text: &str) -> Result<cel::Program, String> {
    if text.len() > MAX_CEL_LENGTH {
        return Err(format!(
            "{} bytes; at most {MAX_CEL_LENGTH} are allowed",
            text.len()
        ));
    }
    if text.trim().is_empty() {
        return Err("empty CEL expression".to_string());
    }
    match catch_unwind(AssertUnwindSafe(|| env.compile(text))) {
        Ok(Ok(program)) => Ok(program),
        Ok(Err(errors)) => {
            let described: Vec<String> = errors
                .errors
                .iter()
                .map(|e| format!("line {}, column {}: {}", e.pos.0, e.pos.1, e.msg))
                .collect();
            Err(format!("CEL does not compile: {}", described.join("; ")))
        }
        Err(_) => Err("CEL does not compile: the parser panicked".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_column() {
        let env = cel::Env::stdlib();
        assert!(compile(&env, "object.status.ready == true").is_ok());
        let e = compile(&env, "object.status.(").unwrap_err();
        assert!(
            e.starts_with("CEL does not compile: line 1, column "),
            "{e}"
        );
        assert_eq!(compile(&env, "  ").unwrap_err(), "empty CEL expression");
        assert!(compile(&env, &"a".repeat(MAX_CEL_LENGTH + 1)).is_err());
    }
}
