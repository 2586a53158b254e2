//! Per-event filter cost: the Rust Wasm filter with a fresh instance per
//! event and with a warm reused one, against the same logic as a native
//! function (the floor), as a CEL expression, and as one `jq` process per
//! event; then the wasmtime knobs, and the same filter in each guest language.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmtrigger::capabilities::HostServices;
use wasmtrigger::cel::CelFilter;
use wasmtrigger::config::Limits;
use wasmtrigger::event::Event;
use wasmtrigger::runtime::{Invocation, LoadedModule, Runtime, RuntimeSettings, Tuning, WarmPool};
use wasmtrigger::state::StateStore;

use super::{Mode, Table, deployment, fmt_duration, per_iter, ratio};
use crate::support;

/// The predicate of examples/filters/ready-replicas, in CEL.
const CEL: &str = "(has(event.data.status.readyReplicas) ? event.data.status.readyReplicas : 0) \
                   == (has(event.data.spec.replicas) ? event.data.spec.replicas : 1)";
/// The same predicate as a jq program (exit status 0 passes the event).
const JQ: &str = "(.status.readyReplicas // 0) == (.spec.replicas // 1)";

/// The filter's logic as a native function: parse the JSON text, compare.
fn ready_native(data: &str) -> Result<bool, String> {
    let data: Value = serde_json::from_str(data).map_err(|e| e.to_string())?;
    let deployment = data.get("object").unwrap_or(&data);
    if let Some(kind) = deployment["kind"].as_str()
        && kind != "Deployment"
    {
        return Err(format!("expected a Deployment, got a {kind}"));
    }
    let desired = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = deployment["status"]["readyReplicas"].as_i64().unwrap_or(0);
    let name = deployment["metadata"]["name"].as_str().unwrap_or("?");
    tracing::debug!("deployment {name}: {ready}/{desired} replicas ready");
    Ok(ready == desired)
}

/// A runtime sharing the test suite's compiled-module cache.
fn runtime(tuning: Tuning) -> Arc<Runtime> {
    let settings = RuntimeSettings {
        cache_dir: Some(support::shared_cache()),
        tuning,
        ..RuntimeSettings::default()
    };
    Arc::new(Runtime::new(&settings).expect("runtime"))
}

/// Loads a module file off the async executor.
pub(super) async fn load(runtime: &Arc<Runtime>, path: std::path::PathBuf) -> Arc<LoadedModule> {
    let runtime = runtime.clone();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    Arc::new(
        tokio::task::spawn_blocking(move || runtime.load_file(&name, &path))
            .await
            .expect("load task")
            .expect("module loads"),
    )
}

/// A filter's invocation: log and kv, generous limits (interpreted guests need room).
pub(super) fn invocation() -> Invocation {
    let store = StateStore::in_memory(Default::default()).expect("state");
    let services = HostServices::new(Default::default()).expect("services");
    let limits = Limits {
        timeout: Duration::from_secs(30),
        memory: 256 << 20,
    };
    Invocation::new("bench", limits, Some(store.kv("bench")), services)
}

/// Fresh-instance cost of one filter call on `event`.
async fn fresh(
    mode: Mode,
    rt: &Runtime,
    module: &LoadedModule,
    event: &Event,
    iters: usize,
) -> Duration {
    let inv = invocation();
    per_iter(mode, iters, async || {
        assert!(
            rt.call_filter(module, &inv, event)
                .await
                .expect("filter runs")
        );
    })
    .await
}

/// The per-event comparison and the tuning table.
pub async fn filter_cost(mode: Mode) -> Vec<Table> {
    let data = deployment();
    let event = Event::new("bench", "kube-watch", "update", &data);
    let small = Event::new(
        "bench",
        "kube-watch",
        "update",
        &json!({"kind": "Deployment", "spec": {"replicas": 1}, "status": {"readyReplicas": 1}}),
    );
    let rt = runtime(Tuning::default());
    let module = load(&rt, support::module("ready-replicas.wasm")).await;

    let native = per_iter(mode, 20_000, async || {
        assert!(ready_native(std::hint::black_box(&event.data)).expect("native"));
    })
    .await;
    let fresh_big = fresh(mode, &rt, &module, &event, 2_000).await;
    let fresh_small = fresh(mode, &rt, &module, &small, 2_000).await;
    let inv = invocation();
    let pool = WarmPool::default();
    let warm = per_iter(mode, 5_000, async || {
        let pass = rt.call_filter_pooled(&module, &inv, &event, &pool).await;
        assert!(pass.expect("warm filter runs"));
    })
    .await;
    let instantiate = per_iter(mode, 2_000, async || {
        rt.instantiate(&module, &inv).await.expect("instantiates");
    })
    .await;
    let bare = super::floor::floor(mode, &rt, &module, &event, 2_000).await;
    let cel = CelFilter::compile(CEL).expect("CEL compiles");
    let cel_cost = per_iter(mode, 5_000, async || {
        assert!(cel.evaluate(&event).expect("CEL evaluates"));
    })
    .await;
    let jq_cost = per_iter(mode, 100, async || assert!(jq(&event.data))).await;

    let mut table = Table::new(
        format!(
            "Per-event filter cost ({:.1} KB Deployment event)",
            event.data.len() as f64 / 1024.0
        ),
        &["filter", "per event", "vs native"],
    );
    for (name, cost) in [
        ("native Rust function (the floor)", native),
        ("Wasm, warm instance (`isolation: pooled`)", warm),
        ("Wasm, fresh instance per event (default)", fresh_big),
        ("  of which: instantiation alone", instantiate),
        ("wasmtime alone, same component: fresh instance", bare.fresh),
        ("  of which: instantiation alone", bare.instantiate),
        ("Wasm, fresh instance, 0.1 KB event", fresh_small),
        ("CEL expression (in the host)", cel_cost),
        ("`jq` process per event (shell-hook style)", jq_cost),
    ] {
        table.row(vec![name.into(), fmt_duration(cost), ratio(cost, native)]);
    }
    table
        .notes
        .push(format!("CEL: `{CEL}`; jq: `jq -e '{JQ}'`."));
    table.notes.push(
        "wasmtime alone: the same component in the same engine and pool, in a store \
         holding only wasmtime-wasi's default WASI context, with `log` a no-op; what \
         the rows above cost beyond it is the engine's share (capabilities, limits, \
         deadline, captured output)."
            .into(),
    );
    vec![table, tuning(mode, &event).await]
}

/// Runs `jq -e` on the data once, as a hook runner would per event.
fn jq(data: &str) -> bool {
    let mut child = Command::new("jq")
        .args(["-e", JQ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("jq is installed (scripts/setup installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data.as_bytes())
        .expect("write to jq");
    child.wait().expect("jq exits").success()
}

/// Fresh-instance cost under each wasmtime knob, each in its own engine.
async fn tuning(mode: Mode, event: &Event) -> Table {
    let base = Tuning::default();
    let variants = [
        (
            "default: pooling, copy-on-write images, 1 MiB kept resident, dirty pages found with `PAGEMAP_SCAN`",
            base,
        ),
        (
            "nothing kept resident (every page handed back with `madvise`; the default before)",
            Tuning {
                keep_resident: 0,
                ..base
            },
        ),
        (
            "keep 64 KiB resident",
            Tuning {
                keep_resident: 64 << 10,
                ..base
            },
        ),
        (
            "keep 1 MiB, without `PAGEMAP_SCAN` (reset the whole kept range)",
            Tuning {
                pagemap_scan: false,
                ..base
            },
        ),
        (
            "copy-on-write images off",
            Tuning {
                memory_init_cow: false,
                ..base
            },
        ),
        (
            "on-demand allocation (no pooling)",
            Tuning {
                pooling: false,
                ..base
            },
        ),
    ];
    let mut table = Table::new(
        "wasmtime knobs: fresh-instance filter cost per event",
        &["engine setting", "per event", "vs default"],
    );
    let mut baseline = None;
    for (name, tuning) in variants {
        let rt = runtime(tuning);
        let module = load(&rt, support::module("ready-replicas.wasm")).await;
        let cost = fresh(mode, &rt, &module, event, 2_000).await;
        let base = *baseline.get_or_insert(cost);
        table.row(vec![name.into(), fmt_duration(cost), ratio(cost, base)]);
    }
    table
}

/// The ready-replicas filter in each guest language: size, first compile,
/// cached load, and per-event cost (fresh instance and warm instance).
pub async fn languages(mode: Mode) -> Table {
    let data = deployment();
    let event = Event::new("bench", "kube-watch", "update", &data);
    let mut table = Table::new(
        "The ready-replicas filter per guest language",
        &[
            "language",
            "component",
            "first compile",
            "cached load",
            "per event, fresh",
            "fresh, wasmtime alone",
            "per event, warm",
        ],
    );
    let dir = support::language_modules();
    for (lang, file) in [
        ("Rust", "ready-replicas.wasm"),
        ("Python", "ready-replicas-py.wasm"),
        ("JavaScript", "ready-replicas-js.wasm"),
        ("C++", "ready-replicas-cpp.wasm"),
        // Not ready-replicas: C has no JSON parser to write it with. The
        // raw-bindings filter shows what C costs without one.
        ("C (skip-deletes: no JSON parsing)", "skip-deletes-c.wasm"),
    ] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).expect("language module");
        // First compile, without any cache (skipped in smoke mode for the
        // interpreters: ~10 s each, and the tests compile them already).
        let compile = if mode == Mode::Full || !matches!(lang, "Python" | "JavaScript") {
            let plain = Arc::new(Runtime::new(&RuntimeSettings::default()).expect("runtime"));
            let bytes = bytes.clone();
            let started = Instant::now();
            tokio::task::spawn_blocking(move || plain.compile(file, None, &bytes))
                .await
                .expect("compile task")
                .expect("compiles");
            fmt_duration(started.elapsed())
        } else {
            "(skipped)".into()
        };
        let rt = runtime(Tuning::default());
        load(&rt, path.clone()).await; // fills the cache
        let cached = super::median(
            super::repeat(mode.samples(), async || {
                let started = Instant::now();
                load(&rt, path.clone()).await;
                started.elapsed()
            })
            .await,
        );
        let module = load(&rt, path.clone()).await;
        // Compiled languages get the many-iteration treatment.
        let interpreted = matches!(lang, "Python" | "JavaScript");
        let iters = if interpreted { 20 } else { 2_000 };
        let per_event = fresh(mode, &rt, &module, &event, iters).await;
        let bare = super::floor::floor(mode, &rt, &module, &event, iters).await;
        let inv = invocation();
        let pool = WarmPool::default();
        let warm = per_iter(mode, if interpreted { 200 } else { 5_000 }, async || {
            let pass = rt.call_filter_pooled(&module, &inv, &event, &pool).await;
            assert!(pass.expect("warm filter runs"));
        })
        .await;
        table.row(vec![
            lang.into(),
            format!("{:.1} MB", bytes.len() as f64 / 1e6),
            compile,
            fmt_duration(cached),
            fmt_duration(per_event),
            fmt_duration(bare.fresh),
            fmt_duration(warm),
        ]);
    }
    table
}
