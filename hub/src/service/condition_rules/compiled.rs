//! Whether a CEL expression compiles, remembered by the expression's SHA-256: a work that
//! is PUT again (a new generation of a 500-manifest work, each manifest with its own rule)
//! or many works sharing a rule do not parse the same text again. CEL's (ANTLR) parser was
//! the biggest cost of validating such a work: a fifth of the hub's CPU in
//! `agentbench rules500`, tens of microseconds per expression.
//!
//! Only the verdict is kept (no program: the hub never runs rules), under the digest rather
//! than the text, so the memory is bounded by the entry count whatever the expressions'
//! length: [`MAX_ENTRIES`] entries of ~100 bytes (an error message is kept as the parser
//! gave it, a few hundred bytes at most).

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use sha2::{Digest, Sha256};

/// Verdicts kept at most; past it, those unused since the last sweep go.
pub const MAX_ENTRIES: usize = 8192;

struct Verdict {
    result: Result<(), String>,
    used: bool,
}

static VERDICTS: LazyLock<Mutex<HashMap<[u8; 32], Verdict>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Whether `text` compiles in CEL's standard environment, with [`api::cel::compile`]'s
/// error when it does not; compiled once per distinct text while it stays in the cache.
/// A text whose shape (literals aside) compiled before is not parsed at all, and not kept
/// here: 500 rules that differ only in a name cost one parse (`api::cel::shape`).
pub fn check(text: &str) -> Result<(), String> {
    if api::cel::shape::compiles_by_shape(text) {
        return Ok(());
    }
    let key: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    if let Some(v) = lock().get_mut(&key) {
        v.used = true;
        return v.result.clone();
    }
    // Compiled without the lock: two requests with the same new text may both compile it,
    // which is harmless; one slow parse does not hold every other PUT.
    let result = api::cel::compile(api::cel::stdlib(), text).map(drop);
    let mut cache = lock();
    if cache.len() >= MAX_ENTRIES {
        cache.retain(|_, v| std::mem::take(&mut v.used));
        if cache.len() >= MAX_ENTRIES {
            // Every entry was used since the last sweep: start over rather than grow.
            cache.clear();
        }
    }
    cache.insert(
        key,
        Verdict {
            result: result.clone(),
            used: true,
        },
    );
    result
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<[u8; 32], Verdict>> {
    VERDICTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a verdict on `text` is cached (for tests).
#[cfg(test)]
pub fn cached(text: &str) -> bool {
    let key: [u8; 32] = Sha256::digest(text.as_bytes()).into();
    lock().contains_key(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_the_compilers_and_are_kept() {
        // A raw literal: not compiled by its shape, so the verdict is kept here.
        let good = "object.metadata.name == r'verdicts-are-kept'";
        let bad = "object.metadata.(verdicts-are-kept";
        assert!(!cached(good) && !cached(bad));
        assert_eq!(check(good), Ok(()));
        let error = check(bad).unwrap_err();
        assert_eq!(
            Err(error.clone()),
            api::cel::compile(api::cel::stdlib(), bad).map(drop)
        );
        assert!(error.contains("line 1, column "), "{error}");
        assert!(cached(good) && cached(bad));
        // Asked again: the same verdict, from the cache.
        assert_eq!(check(good), Ok(()));
        assert_eq!(check(bad), Err(error));
        // Limits are the compiler's too: an empty or too long text is refused.
        assert!(check(" ").is_err());
        assert!(check(&"a".repeat(api::cel::MAX_CEL_LENGTH + 1)).is_err());
    }

    #[test]
    fn templated_texts_compile_by_their_shape() {
        let a = "object.metadata.name == 'shape-a' && object.kind == 'templated'";
        let b = "object.metadata.name == 'shape-b' && object.kind == 'templated'";
        assert_eq!(check(a), Ok(()));
        assert_eq!(check(b), Ok(()));
        assert!(!cached(a) && !cached(b), "the shape's verdict is api's");
        // A text of a shape that does not compile gets the compiler's own error, with the
        // text's columns, and that verdict is kept here.
        let bad = "object.metadata.name == 'a-long-name-here' && object.(";
        let error = check(bad).unwrap_err();
        assert_eq!(
            Err(error),
            api::cel::compile(api::cel::stdlib(), bad).map(drop)
        );
        assert!(cached(bad));
    }
}
