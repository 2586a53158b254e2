//! Crash points for tests: named places where the process can be made to
//! die on the spot, so that tests can force a crash between two steps
//! instead of hoping a `kill -9` lands there.
//!
//! `WASMTRIGGER_FAILPOINTS=name[,name...]` (read once, at the first check)
//! makes [`hit`] abort the process at each named point. Unset, a check is one
//! load of an already initialised cell. Points:
//!
//! - `history-before-commit`: the history writer has stored a batch of run
//!   records and removed their events' journal entries, but not committed;
//! - `history-after-durable-commit`: such removals have just been made
//!   durable (fsync'd), by their own commit or a later one.

use std::sync::OnceLock;

/// Environment variable naming the active points.
pub const ENV: &str = "WASMTRIGGER_FAILPOINTS";

fn active() -> &'static [String] {
    static ACTIVE: OnceLock<Vec<String>> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        std::env::var(ENV)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Aborts the process (no destructors, no flushing: a crash) if `name` is active.
pub fn hit(name: &str) {
    if active().iter().any(|p| p == name) {
        eprintln!("failpoint {name}: aborting the process");
        std::process::abort();
    }
}
