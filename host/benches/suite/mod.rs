//! The benchmark suite behind `cargo bench -p wasmtrigger --bench perf`: each
//! section measures wasmtrigger side by side with its baseline in the same
//! run and prints a markdown table. The e2e tests run every section once in
//! smoke mode (one tiny sample each) so that none can rot.

#[path = "distribute.rs"]
mod distribute;
#[path = "filter_cost.rs"]
mod filter_cost;
#[path = "floor.rs"]
mod floor;
#[path = "kube.rs"]
mod kube;
#[path = "memory.rs"]
mod memory;
#[path = "modules.rs"]
mod modules;
#[path = "queue.rs"]
mod queue;
#[path = "throughput.rs"]
mod throughput;
#[path = "ui.rs"]
mod ui;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How hard to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real measurement: warm-up, many iterations, several samples.
    Full,
    /// One tiny pass through every code path (tests).
    Smoke,
}

impl Mode {
    /// Iterations per sample, scaled from the full count.
    fn iters(self, full: usize) -> usize {
        match self {
            Mode::Full => full,
            Mode::Smoke => 1,
        }
    }

    /// Samples whose median is reported.
    fn samples(self) -> usize {
        match self {
            Mode::Full => 7,
            Mode::Smoke => 1,
        }
    }
}

/// One printed table.
pub struct Table {
    /// Heading above the table.
    pub title: String,
    /// Column names.
    pub columns: Vec<&'static str>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
    /// Lines printed under the table.
    pub notes: Vec<String>,
}

impl Table {
    fn new(title: impl Into<String>, columns: &[&'static str]) -> Self {
        Table {
            title: title.into(),
            columns: columns.to_vec(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Markdown rendering.
    pub fn render(&self) -> String {
        let mut out = format!("### {}\n\n| {} |\n|", self.title, self.columns.join(" | "));
        out.push_str(&"---|".repeat(self.columns.len()));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        for note in &self.notes {
            out.push_str(&format!("\n{note}\n"));
        }
        out
    }
}

/// Sections by name, in the order they run.
pub const SECTIONS: [&str; 12] = [
    "filter",
    "languages",
    "modules",
    "throughput",
    "ordering",
    "recording",
    "journal",
    "queue",
    "memory",
    "ui",
    "kube",
    "distribute",
];

/// Runs the named sections (all when empty) and returns their tables.
pub fn run(mode: Mode, only: &[String]) -> Vec<Table> {
    for name in only {
        assert!(SECTIONS.contains(&name.as_str()), "unknown section {name}");
    }
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut tables = Vec::new();
    if wanted("filter") {
        tables.extend(rt.block_on(filter_cost::filter_cost(mode)));
    }
    if wanted("languages") {
        tables.push(rt.block_on(filter_cost::languages(mode)));
    }
    if wanted("modules") {
        tables.extend(rt.block_on(modules::modules(mode)));
    }
    if wanted("throughput") {
        tables.push(rt.block_on(throughput::throughput(mode)));
    }
    if wanted("ordering") {
        tables.push(rt.block_on(throughput::ordering(mode)));
    }
    if wanted("recording") {
        tables.push(rt.block_on(throughput::recording(mode)));
    }
    if wanted("journal") {
        tables.push(rt.block_on(queue::journal(mode)));
    }
    if wanted("queue") {
        tables.push(queue::drain(mode));
    }
    if wanted("memory") {
        tables.push(memory::memory(mode));
    }
    if wanted("ui") {
        tables.extend(ui::ui(mode));
    }
    if wanted("kube") {
        tables.extend(kube::kube(mode));
    }
    if wanted("distribute") {
        tables.push(distribute::distribute(mode));
    }
    tables
}

/// The ~3.6 KB Deployment every per-event measurement uses.
fn deployment() -> Value {
    let path = crate::support::repo().join("examples/events/deployment-ready.json");
    let text = std::fs::read_to_string(&path).expect("sample Deployment");
    serde_json::from_str(&text).expect("sample Deployment is JSON")
}

/// Median of per-iteration times over `mode.samples()` samples of `iters` iterations each.
async fn per_iter<F: AsyncFnMut()>(mode: Mode, iters: usize, mut op: F) -> Duration {
    let iters = mode.iters(iters);
    // Warm-up: caches, lazy initialisation, the first instance slot.
    for _ in 0..iters.min(50) {
        op().await;
    }
    let mut samples = Vec::new();
    for _ in 0..mode.samples() {
        let started = Instant::now();
        for _ in 0..iters {
            op().await;
        }
        samples.push(started.elapsed() / iters as u32);
    }
    median(samples)
}

/// Runs `op` `n` times in sequence and collects what it returns.
async fn repeat<T, F: AsyncFnMut() -> T>(n: usize, mut op: F) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(op().await);
    }
    out
}

/// Median of durations.
fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Quantile `q` (0..=1) of sorted durations.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

/// A duration as a human figure (ns, µs or ms).
fn fmt_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else if ns < 10_000_000 {
        format!("{:.2} ms", ns as f64 / 1e6)
    } else {
        format!("{:.1} ms", ns as f64 / 1e6)
    }
}

/// `a / b` as "12.3×".
fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.1}×", a.as_secs_f64() / b.as_secs_f64().max(1e-12))
}

/// A scratch directory for one section.
fn scratch(name: &str) -> (crate::support::Workspace, PathBuf) {
    let ws = crate::support::Workspace::new();
    let dir = ws.path().join(name);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    (ws, dir)
}

/// Appends a custom section: different bytes (so a separate compile and
/// cache entry), same behaviour. Used to make many distinct modules.
fn with_custom_section(mut component: Vec<u8>, name: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
    }
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name.as_bytes());
    component.push(0);
    leb(body.len(), &mut component);
    component.extend_from_slice(&body);
    component
}
