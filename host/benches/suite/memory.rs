//! Resident memory of the real `wasmtrigger run` process: idle with 1, 20
//! and 100 distinct modules loaded (from a warm compiled-module cache), and
//! with 100 modules under load.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Mode, Table, scratch, with_custom_section};
use crate::support;

/// The memory table.
pub fn memory(mode: Mode) -> Table {
    let (counts, load_for): (&[usize], _) = match mode {
        Mode::Full => (&[1, 20, 100], Duration::from_secs(5)),
        Mode::Smoke => (&[1, 3], Duration::from_millis(300)),
    };
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut table = Table::new(
        format!("Resident memory of `wasmtrigger run` ({build} build, warm module cache)"),
        &["modules loaded", "state", "RSS", "peak RSS"],
    );
    let counter = std::fs::read(support::module("counter.wasm")).expect("counter example");
    for &n in counts {
        let (ws, modules) = scratch("modules");
        let idle = triggers(&modules, &counter, n, "every: 24h", None);
        let config = ws.write("idle.yaml", &idle);
        let state = ws.path().join("state");
        // First start fills the cache; the measured one loads from it.
        measure(&config, &modules, &state, Duration::ZERO);
        let (rss, peak) = measure(&config, &modules, &state, Duration::from_millis(500));
        table.row(vec![n.to_string(), "idle".into(), mib(rss), mib(peak)]);
        if n == *counts.last().expect("counts") {
            // The second hands every instance's pages back to the kernel:
            // what `keepResident` costs in memory.
            for keep in [None, Some("0")] {
                let busy = triggers(&modules, &counter, n, "every: 50ms", keep);
                let config = ws.write("busy.yaml", &busy);
                let (rss, peak) = measure(&config, &modules, &state, load_for);
                table.row(vec![
                    n.to_string(),
                    format!(
                        "under load for {}s{}",
                        load_for.as_secs_f64(),
                        keep.map_or(String::new(), |k| format!(", keepResident: {k}"))
                    ),
                    mib(rss),
                    mib(peak),
                ]);
            }
        }
    }
    table.notes.push(
        "Each trigger runs its own copy of the counter example (a distinct module: same code, \
         a different custom section); under load every trigger fires every 50 ms \
         (≈2,000 runs/s offered, each incrementing a persistent kv counter)."
            .into(),
    );
    table
}

fn triggers(
    modules: &Path,
    counter: &[u8],
    n: usize,
    schedule: &str,
    keep_resident: Option<&str>,
) -> String {
    let keep = keep_resident.map_or(String::new(), |k| format!(", keepResident: {k}"));
    let mut yaml = format!("engine: {{ queueSize: 1000{keep} }}\ntriggers:\n");
    for i in 0..n {
        let name = format!("counter-{i:03}.wasm");
        let path = modules.join(&name);
        if !path.exists() {
            let bytes = with_custom_section(counter.to_vec(), &format!("mem-{i}"));
            std::fs::write(&path, bytes).expect("write module");
        }
        yaml.push_str(&format!(
            "  - name: t{i:03}\n    source: {{ type: schedule, {schedule} }}\n    action: {{ module: {name} }}\n"
        ));
    }
    yaml
}

/// Starts the engine, waits until it has started, lets it run for `settle`,
/// and returns its RSS and peak RSS in KiB.
fn measure(config: &Path, modules: &Path, state: &Path, settle: Duration) -> (u64, u64) {
    let log = state.with_extension("log");
    let mut child = Command::new(support::binary())
        .args([
            "--log-level",
            "warn,wasmtrigger::engine=info",
            "--log-format",
            "json",
            "run",
        ])
        .arg("--config")
        .arg(config)
        .arg("--modules")
        .arg(modules)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn wasmtrigger run");
    let deadline = Instant::now() + Duration::from_secs(600);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("engine started")
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "engine exited with {status}: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "engine did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(settle);
    let memory = support::memory_kib(child.id());
    stop(child);
    memory
}

fn stop(mut child: Child) {
    // SIGTERM: a graceful stop, like an orchestrator's.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
}

/// KiB as MiB, one decimal.
pub(super) fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
