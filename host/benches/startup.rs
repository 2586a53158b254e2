//! Engine start-up with many modules, on a cold and on a warm compiled-module
//! cache. Run: `cargo bench -p wasmtrigger --bench startup`.
//!
//! Twenty distinct modules are made from the counter example by appending a
//! unique custom section (same code, different hash), so each is compiled
//! separately; each start loads all twenty and starts twenty triggers.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use wasmtrigger::engine::{Engine, EngineOptions};

const MODULES: usize = 20;
const ROUNDS: usize = 5;

/// Appends a custom section, which changes the bytes (and the version) but not the behaviour.
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

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
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

#[tokio::main]
async fn main() {
    let ws = support::Workspace::new();
    let modules = ws.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let counter = std::fs::read(support::module("counter.wasm")).unwrap();
    let mut yaml = String::from("triggers:\n");
    for i in 0..MODULES {
        let name = format!("counter-{i:02}.wasm");
        std::fs::write(
            modules.join(&name),
            with_custom_section(counter.clone(), &format!("bench-{i}")),
        )
        .unwrap();
        yaml.push_str(&format!(
            "  - name: t{i:02}\n    source: {{ type: schedule, every: 1h }}\n    action: {{ module: {name} }}\n"
        ));
    }
    let config = ws.write("triggers.yaml", &yaml);

    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for round in 0..ROUNDS {
        let cache = ws.path().join(format!("cache-{round}"));
        let state = ws.path().join(format!("state-{round}"));
        cold.push(start_and_stop(&config, &modules, &state, &cache).await);
        warm.push(start_and_stop(&config, &modules, &state, &cache).await);
    }
    let (cold, warm) = (median(cold), median(warm));
    println!(
        "engine start with {MODULES} modules ({} KB each), median of {ROUNDS}:",
        counter.len() / 1024
    );
    println!("  cold cache (compile all): {cold:>10.1?}");
    println!("  warm cache (load all):    {warm:>10.1?}");
    println!(
        "  ratio cold/warm:          {:>10.1}x",
        cold.as_secs_f64() / warm.as_secs_f64()
    );
}
