//! Module load per example (compile, cached load, instantiation) and engine
//! start-up with twenty modules on a cold and on a warm compiled-module cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtrigger::engine::{Engine, EngineOptions};
use wasmtrigger::runtime::{Runtime, RuntimeSettings};

use super::filter_cost::invocation;
use super::{Mode, Table, fmt_duration, median, per_iter, ratio, repeat, scratch};
use crate::support;

/// Modules in the start-up measurement.
const START_MODULES: usize = 20;

/// Both module tables.
pub async fn modules(mode: Mode) -> Vec<Table> {
    vec![per_example(mode).await, startup(mode).await]
}

async fn per_example(mode: Mode) -> Table {
    let (_ws, cache) = scratch("cache");
    let mut table = Table::new(
        "Module load per example",
        &[
            "module",
            "component",
            "compile",
            "cached load",
            "instantiate",
        ],
    );
    let cached_rt = Arc::new(
        Runtime::new(&RuntimeSettings {
            cache_dir: Some(cache),
            ..RuntimeSettings::default()
        })
        .expect("runtime"),
    );
    let plain = Arc::new(Runtime::new(&RuntimeSettings::default()).expect("runtime"));
    for name in [
        "ready-replicas.wasm",
        "counter.wasm",
        "log-event.wasm",
        "http-notify.wasm",
        "http-fetch-store.wasm",
    ] {
        let bytes = Arc::new(std::fs::read(support::module(name)).expect("example module"));
        let timed = |rt: Arc<Runtime>| {
            let bytes = bytes.clone();
            async move {
                let started = Instant::now();
                let module = tokio::task::spawn_blocking(move || rt.compile(name, None, &bytes))
                    .await
                    .expect("compile task")
                    .expect("compiles");
                (started.elapsed(), module)
            }
        };
        let compile =
            median(repeat(mode.samples().min(3), async || timed(plain.clone()).await.0).await);
        timed(cached_rt.clone()).await; // fills the cache
        let loads = repeat(mode.samples(), async || timed(cached_rt.clone()).await).await;
        let cached = median(loads.iter().map(|(d, _)| *d).collect());
        let module = loads.into_iter().last().expect("a sample").1;
        let inv = invocation();
        let instantiate = per_iter(mode, 1_000, async || {
            cached_rt
                .instantiate(&module, &inv)
                .await
                .expect("instantiates");
        })
        .await;
        table.row(vec![
            name.into(),
            format!("{} KB", bytes.len() / 1024),
            fmt_duration(compile),
            fmt_duration(cached),
            fmt_duration(instantiate),
        ]);
    }
    table
}

async fn startup(mode: Mode) -> Table {
    let (ws, modules) = scratch("modules");
    let counter = std::fs::read(support::module("counter.wasm")).expect("counter example");
    let mut yaml = String::from("triggers:\n");
    for i in 0..START_MODULES {
        let name = format!("counter-{i:02}.wasm");
        let bytes = super::with_custom_section(counter.clone(), &format!("bench-{i}"));
        std::fs::write(modules.join(&name), bytes).expect("write module");
        yaml.push_str(&format!(
            "  - name: t{i:02}\n    source: {{ type: schedule, every: 1h }}\n    action: {{ module: {name} }}\n"
        ));
    }
    let config = ws.write("triggers.yaml", &yaml);
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for round in 0..mode.samples().min(5) {
        let cache = ws.path().join(format!("cache-{round}"));
        let state = ws.path().join(format!("state-{round}"));
        cold.push(start_and_stop(&config, &modules, &state, &cache).await);
        warm.push(start_and_stop(&config, &modules, &state, &cache).await);
    }
    let (cold, warm) = (median(cold), median(warm));
    let mut table = Table::new(
        format!(
            "Engine start with {START_MODULES} modules ({} KB each): load all, start all triggers",
            counter.len() / 1024
        ),
        &["compiled-module cache", "start", "vs warm"],
    );
    table.row(vec![
        "cold (compile all)".into(),
        fmt_duration(cold),
        ratio(cold, warm),
    ]);
    table.row(vec![
        "warm (load all)".into(),
        fmt_duration(warm),
        "1.0×".into(),
    ]);
    table
}

async fn start_and_stop(
    config: &std::path::Path,
    modules: &std::path::Path,
    state: &std::path::Path,
    cache: &std::path::Path,
) -> Duration {
    let loaded =
        wasmtrigger::config::load(config, Some(modules), &Default::default()).expect("config");
    let options = EngineOptions {
        module_cache: Some(cache.to_path_buf()),
        ..EngineOptions::new(state.to_path_buf())
    };
    let started = Instant::now();
    let engine = Engine::start(loaded, options, Vec::new())
        .await
        .expect("engine starts");
    let elapsed = started.elapsed();
    engine.shutdown().await;
    elapsed
}
