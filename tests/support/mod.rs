//! Shared test support, one concern per file: the guest modules under test
//! ([`guests`]), the real binary and tools ([`cli`]), a `wasmtrigger run`
//! process ([`process`]), an engine in the test process ([`in_process`]),
//! and real servers on loopback ([`http_server`], [`redis_server`], [`brokers`]). Tests
//! wait on conditions with deadlines instead of sleeping.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod brokers;
pub mod browser;
pub mod cli;
pub mod cluster;
pub mod guests;
pub mod http_server;
pub mod in_process;
pub mod process;
pub mod redis_server;

// Each user takes what it needs (the benchmarks use less than the tests).
#[allow(unused_imports)]
pub use cli::*;
#[allow(unused_imports)]
pub use guests::*;
#[allow(unused_imports)]
pub use in_process::*;
#[allow(unused_imports)]
pub use process::*;

/// Generous upper bound for conditions: slow machines pass, fast ones finish early.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}
