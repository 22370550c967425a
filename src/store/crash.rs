//! Crash points, for tests: with `HOARD_CRASH_AT=<step>` in its environment the
//! process kills itself (SIGKILL, exactly like `kill -9`: no destructor, no flush)
//! when a write or delete reaches `<step>`, so each crash state the write protocol
//! documents ([`super::write`], [`super::delete`]) can be produced on purpose rather
//! than by a lucky timing. The steps:
//!
//! * `write-begun` — the intent is in the index, no byte sent to a volume;
//! * `write-uploaded` — every replica holds the new files, nothing committed;
//! * `write-committed` — `Commit` applied, the retired value's files not yet deleted;
//! * `delete-begun` — the record is `deleting`, its files not yet deleted.
//!
//! Without the variable (always, outside tests) a step costs one read of a value
//! cached at the first call.

use std::sync::OnceLock;

/// The step named by `HOARD_CRASH_AT`, read once.
fn armed() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| {
        std::env::var("HOARD_CRASH_AT")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// Kills the process here if `HOARD_CRASH_AT` names `step`.
pub(crate) fn point(step: &str) {
    if armed() == Some(step) {
        tracing::error!("HOARD_CRASH_AT={step}: killing the process");
        // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
