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

/// Every metric the shipped Grafana dashboard queries: the panel's title,
/// the name in the query, and the family an exposition must declare
/// (`# TYPE family …`).
#[allow(dead_code)]
pub fn dashboard_metrics() -> Vec<(String, String, String)> {
    let path = repo().join("deploy/monitoring/wasmtrigger-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("json");
    let mut queried = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        for target in panel["targets"].as_array().expect("targets") {
            let mut rest = target["expr"].as_str().expect("expr");
            while let Some(i) = rest.find("wasmtrigger_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name)
                    .to_string();
                queried.push((title.to_string(), name, family));
            }
        }
    }
    queried
}
