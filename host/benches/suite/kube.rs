//! `kube`: Kubernetes watch scale, against the project's test API server
//! (the real wire protocol, spoken by the unmodified `kube` client).
//!
//! - **Changes per second** through `kube-watch` → CEL filter → Wasm action:
//!   ConfigMaps are patched in the API server as fast as it takes them, and
//!   the clock stops when the engine has recorded a run for every change.
//! - **Resident memory while watching** 50,000 objects (the engine's watch
//!   cache holds each one), against the same engine watching none.

use std::time::{Duration, Instant};

use serde_json::json;

use super::memory::mib;
use super::{Mode, Table};
use crate::support::{EngineProcess, Workspace};

fn configmap(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": format!("cm-{i}"), "namespace": "default", "labels": { "app": "bench", "shard": (i % 16).to_string() } },
        "data": { "value": "0", "note": "a ConfigMap of ordinary size for a benchmark; about 400 bytes in all" }
    })
}

fn engine(ws: &Workspace, kubeconfig: &str, watching: bool) -> EngineProcess {
    let trigger = if watching {
        "  - name: cm\n    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [update] }\n    filter: { cel: \"event.data.object.metadata.labels.app == 'bench'\" }\n    action: { module: log-event.wasm }\n"
    } else {
        "  - name: idle\n    source: { type: schedule, every: 24h }\n    action: { module: log-event.wasm }\n"
    };
    let config = ws.write(
        if watching { "watch.yaml" } else { "idle.yaml" },
        &format!("engine: {{ queueSize: 10000, history: {{ maxPerTrigger: 100000 }} }}\ntriggers:\n{trigger}"),
    );
    let state = ws.path().join(if watching {
        "state-watch"
    } else {
        "state-idle"
    });
    let engine = EngineProcess::start_with_env(
        &config,
        &state,
        &["--listen", "off"],
        &[("KUBECONFIG", kubeconfig)],
    );
    engine.wait_started();
    engine
}

/// The section's tables.
pub fn kube(mode: Mode) -> Vec<Table> {
    let (objects, changes) = match mode {
        Mode::Full => (50_000, 20_000),
        Mode::Smoke => (200, 100),
    };
    let ws = Workspace::new();
    let server = wasmtrigger_test_apiserver::ApiServer::start(&[]);
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let kubeconfig = kubeconfig.display().to_string();
    for i in 0..objects {
        server
            .create("", "configmaps", "default", configmap(i))
            .expect("create");
    }

    // Memory: the same engine idle, then watching every object.
    let idle = engine(&ws, &kubeconfig, false);
    std::thread::sleep(Duration::from_millis(500));
    let (idle_rss, _) = crate::support::memory_kib(idle.pid());
    drop(idle);
    let watcher = engine(&ws, &kubeconfig, true);
    let canaries = super::distribute::canary(&server, std::slice::from_ref(&watcher), "value");
    let (watch_rss, watch_peak) = crate::support::memory_kib(watcher.pid());
    let mut memory = Table::new(
        format!("Resident memory of `wasmtrigger run` watching {objects} ConfigMaps (~400 B each)"),
        &["engine", "RSS", "peak RSS"],
    );
    memory.row(vec![
        "idle, no watch (baseline)".into(),
        mib(idle_rss),
        "—".into(),
    ]);
    memory.row(vec![
        format!("watching {objects} objects"),
        mib(watch_rss),
        mib(watch_peak),
    ]);
    memory.notes.push(format!(
        "{:.2} KiB of resident memory per watched object over the idle engine.",
        (watch_rss.saturating_sub(idle_rss)) as f64 / objects as f64
    ));

    // Throughput: patch objects round-robin, as fast as the API server takes them.
    let started = Instant::now();
    for n in 0..changes {
        let name = format!("cm-{}", n % objects);
        server
            .merge_patch(
                "",
                "configmaps",
                "default",
                &name,
                &json!({ "data": { "value": n.to_string() } }),
            )
            .expect("patch");
    }
    let written = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(if mode == Mode::Full { 300 } else { 20 });
    while watcher.runs("cm").len() < changes + canaries && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let done = started.elapsed();
    let ran = watcher.runs("cm").len() - canaries;
    if ran != changes {
        let (_, log) = watcher.stop_and_log();
        panic!(
            "{ran} runs for {changes} changes; the engine's log:\n{}",
            log.lines().rev().take(5).collect::<Vec<_>>().join("\n")
        );
    }
    let mut rate = Table::new(
        format!(
            "Kubernetes changes through kube-watch → CEL filter → log-event.wasm ({changes} changes to {objects} watched ConfigMaps)"
        ),
        &["measure", "value"],
    );
    rate.row(vec![
        "changes written to the API server".into(),
        format!(
            "{changes} in {:.2} s ({:.0}/s)",
            written.as_secs_f64(),
            changes as f64 / written.as_secs_f64()
        ),
    ]);
    rate.row(vec![
        "changes processed (a stored run each)".into(),
        format!("{ran} in {:.2} s", done.as_secs_f64()),
    ]);
    rate.row(vec![
        "engine throughput".into(),
        format!("{:.0} changes/s", changes as f64 / done.as_secs_f64()),
    ]);
    rate.notes.push("The API server runs in the benchmark process and applies each patch as one request-free store write; the engine watches over HTTP with the kube client.".into());
    let (code, _) = watcher.stop_and_log();
    assert_eq!(code, 0);
    vec![rate, memory]
}
