//! The hub's allocator setting: memory that idle connections free goes back to the system
//! at once.
//!
//! This is the only module of the hub with `unsafe` code: one call into mimalloc, whose
//! Rust crate has no safe wrapper for its options.

/// `mi_option_purge_delay` in mimalloc.h (the same in v2 and v3), which `libmimalloc-sys`
/// does not name.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return an empty page to the operating system at once, unless
/// `MIMALLOC_PURGE_DELAY` in the environment says otherwise. Call it first thing in
/// `main`, before any other thread exists (mimalloc's option setter is not thread-safe).
///
/// By default mimalloc purges an empty page 1 s after it was freed, and every later free
/// pushes that deadline back: a hub whose 10,000 agents renew and read all the time frees
/// something every millisecond, so the deadline never came, and the pages their idle
/// connections had released (h2's buffers, vendor/README.md) stayed resident: 600–633 MiB
/// of RSS at 10,000 agents against 437–469 MiB with immediate purging (docs/benchmarks.md).
/// A periodic forced `mi_collect` from another thread did not get them back.
pub fn purge_freed_pages_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    set_purge_delay_ms(0);
}

#[allow(unsafe_code)]
fn set_purge_delay_ms(ms: i32) {
    // SAFETY: `mi_option_set` stores an integer in mimalloc's option table; it takes no
    // pointer. It is not thread-safe, which `purge_freed_pages_at_once`'s caller ensures
    // by calling it before the runtime starts any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms.into()) }
}
