//! Hot reload: modules and configs change under a running engine without
//! losing or duplicating events; bad versions are rejected; the compiled-module
//! cache makes restarts compile nothing and survives corrupted entries.

use std::path::Path;
use std::time::{Duration, Instant};

use wasmtrigger::engine::EngineOptions;
use wasmtrigger::runs::RunStatus;
use wasmtrigger::runtime::FailureKind;

use crate::support::{
    self, Collector, Workspace, digest, eventually, reloading, start_engine_at, write_like_cp,
    write_like_editor,
};

fn module_bytes(name: &str) -> Vec<u8> {
    std::fs::read(support::module(name)).unwrap()
}

fn label(digest: &str) -> String {
    format!("swap.wasm@{}", &digest[..12])
}

fn count_label(runs: &Collector, label: &str) -> usize {
    runs.all()
        .iter()
        .filter(|r| r.module.as_deref() == Some(label))
        .count()
}

const EVERY_10MS: &str = "engine: { workers: 2 }\ntriggers:\n  - name: swapped\n    source: { type: schedule, every: 10ms }\n    action: { module: swap.wasm }\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_replaced_50_times_under_load_loses_and_duplicates_nothing() {
    let ws = Workspace::new();
    let mods = ws.path().join("modules");
    std::fs::create_dir_all(&mods).unwrap();
    let (log_event, counter) = (module_bytes("log-event.wasm"), module_bytes("counter.wasm"));
    let (log_label, counter_label) = (label(&digest(&log_event)), label(&digest(&counter)));
    std::fs::write(mods.join("swap.wasm"), &log_event).unwrap();
    let config = ws.write("triggers.yaml", EVERY_10MS);
    let (engine, runs) = start_engine_at(&config, &mods, reloading(&ws, &config, &mods)).await;
    runs.wait_runs("swapped", 3).await;

    let mut latencies = Vec::new();
    for i in 0..50 {
        let (bytes, new_label) = if i % 2 == 0 {
            (&counter, &counter_label)
        } else {
            (&log_event, &log_label)
        };
        let before = count_label(&runs, new_label);
        let written = Instant::now();
        if i % 4 < 2 {
            write_like_editor(&mods.join("swap.wasm"), bytes);
        } else {
            write_like_cp(&mods.join("swap.wasm"), bytes);
        }
        eventually(&format!("swap {i} to serve {new_label}"), || {
            (count_label(&runs, new_label) > before).then_some(())
        })
        .await;
        latencies.push(written.elapsed());
    }
    let reload = engine.reload_stats();
    let stats = engine.shutdown().await;

    let records = runs.all();
    assert_eq!(
        records.len() as u64,
        stats.accepted,
        "every accepted event has one record"
    );
    let mut ids: Vec<&str> = records.iter().map(|r| r.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), records.len(), "no event ran twice");
    for r in &records {
        assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
        let output = r.output.as_deref().unwrap();
        // The record names the version that really ran: each one's output has its own shape.
        if r.module.as_deref() == Some(log_label.as_str()) {
            let event: serde_json::Value = serde_json::from_str(output).unwrap();
            assert_eq!(event["id"], r.event_id.as_str());
        } else {
            assert_eq!(r.module.as_deref(), Some(counter_label.as_str()));
            output
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("counter output {output:?}"));
        }
    }
    assert!(reload.module_reloads >= 50, "{reload:?}");
    assert_eq!(
        reload.module_rejections, 0,
        "no half-written file was ever loaded: {reload:?}"
    );
    latencies.sort();
    eprintln!(
        "reload latency (write -> first run on the new version), 50 swaps: median {:?}, p90 {:?}, max {:?}",
        latencies[25], latencies[45], latencies[49]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_wrong_world_modules_are_rejected_and_a_deleted_one_fails_runs_until_restored() {
    let ws = Workspace::new();
    let mods = ws.path().join("modules");
    std::fs::create_dir_all(&mods).unwrap();
    let counter = module_bytes("counter.wasm");
    let good = label(&digest(&counter));
    std::fs::write(mods.join("swap.wasm"), &counter).unwrap();
    let config = ws.write("triggers.yaml", EVERY_10MS);
    let (engine, runs) = start_engine_at(&config, &mods, reloading(&ws, &config, &mods)).await;
    runs.wait_runs("swapped", 2).await;

    write_like_editor(
        &mods.join("swap.wasm"),
        b"\0asm\x0d\0\x01\0 this is not a component",
    );
    eventually("the broken module to be rejected", || {
        (engine.reload_stats().module_rejections == 1).then_some(())
    })
    .await;
    write_like_editor(
        &mods.join("swap.wasm"),
        &module_bytes("ready-replicas.wasm"),
    );
    eventually("the filter used as an action to be rejected", || {
        (engine.reload_stats().module_rejections == 2).then_some(())
    })
    .await;
    let seen = runs.of("swapped").len();
    let after = runs.wait_runs("swapped", seen + 5).await;
    assert!(after.iter().all(|r| r.status == RunStatus::Succeeded && r.module.as_deref() == Some(good.as_str())));

    std::fs::remove_file(mods.join("swap.wasm")).unwrap();
    let failed = eventually("a run to fail for the missing module", || {
        runs.of("swapped")
            .into_iter()
            .find(|r| r.status == RunStatus::Failed)
    })
    .await;
    assert_eq!(failed.reason, Some(FailureKind::ModuleUnavailable));
    assert!(
        failed.error.as_deref().unwrap().contains(&format!(
            "module `swap.wasm` was removed ({} is gone)",
            mods.join("swap.wasm").display()
        )),
        "{failed:#?}"
    );

    write_like_cp(&mods.join("swap.wasm"), &counter);
    let failures = runs
        .of("swapped")
        .iter()
        .filter(|r| r.status == RunStatus::Failed)
        .count();
    let total = runs.of("swapped").len();
    let back = runs.wait_runs("swapped", total + 20).await;
    let last = back.last().unwrap();
    assert_eq!(
        last.status,
        RunStatus::Succeeded,
        "runs recover once the module is back"
    );
    assert!(
        back.iter()
            .filter(|r| r.status == RunStatus::Failed)
            .count()
            >= failures
    );
    engine.shutdown().await;
}

fn configmap_layout(dir: &Path, generation: u32, files: &[(&str, &[u8])]) {
    let data = dir.join(format!("..2026_11_22_{generation:02}"));
    std::fs::create_dir_all(&data).unwrap();
    for (name, bytes) in files {
        std::fs::write(data.join(name), bytes).unwrap();
    }
    // The kubelet's swap: a new ..data symlink renamed over the old one.
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link).unwrap();
        }
    }
    if generation > 1 {
        std::fs::remove_dir_all(dir.join(format!("..2026_11_22_{:02}", generation - 1))).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_style_symlink_swaps_are_picked_up() {
    let ws = Workspace::new();
    let (conf, mods) = (ws.path().join("conf"), ws.path().join("mods"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&mods).unwrap();
    let one = "triggers:\n  - name: old\n    source: { type: schedule, every: 20ms }\n    action: { module: swap.wasm }\n";
    let two = "triggers:\n  - name: new\n    source: { type: schedule, every: 20ms }\n    action: { module: swap.wasm }\n";
    let (counter, log_event) = (module_bytes("counter.wasm"), module_bytes("log-event.wasm"));
    configmap_layout(&conf, 1, &[("triggers.yaml", one.as_bytes())]);
    configmap_layout(&mods, 1, &[("swap.wasm", &counter)]);
    let (engine, runs) = start_engine_at(&conf, &mods, reloading(&ws, &conf, &mods)).await;
    runs.wait_runs("old", 2).await;

    configmap_layout(&mods, 2, &[("swap.wasm", &log_event)]);
    let new_label = label(&digest(&log_event));
    eventually("the swapped module to serve", || {
        (count_label(&runs, &new_label) > 0).then_some(())
    })
    .await;

    configmap_layout(&conf, 2, &[("triggers.yaml", two.as_bytes())]);
    runs.wait_runs("new", 2).await;
    let names: Vec<String> = engine
        .triggers()
        .await
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, vec!["new".to_string()]);
    assert_eq!(engine.reload_stats().config_reloads, 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_apply_in_full_or_not_at_all() {
    let ws = Workspace::new();
    let mods = support::modules();
    let start = "triggers:\n  - name: steady\n    source: { type: schedule, every: 20ms }\n    action: { module: hostile.wasm, params: { mode: sleep, ms: 1 } }\n  - name: leaving\n    source: { type: schedule, every: 20ms }\n    action: { module: log-event.wasm }\n";
    let config = ws.write("triggers.yaml", start);
    let (engine, runs) = start_engine_at(&config, mods, reloading(&ws, &config, mods)).await;
    runs.wait_runs("steady", 3).await;

    // Invalid: a bad cron and a missing module. Nothing of it applies.
    write_like_editor(&config, format!("{start}  - name: broken\n    source: {{ type: schedule, cron: \"99 * * * *\" }}\n    action: {{ module: nope.wasm }}\n").as_bytes());
    eventually("the bad config to be rejected", || {
        (engine.reload_stats().config_rejections == 1).then_some(())
    })
    .await;
    let seen = runs.of("steady").len();
    runs.wait_runs("steady", seen + 3).await;
    assert_eq!(engine.triggers().await.len(), 2);

    // Valid: `steady` changes only its params (updated in place, schedule keeps
    // its phase and sequence), `leaving` goes, `arriving` comes.
    let next = "triggers:\n  - name: steady\n    source: { type: schedule, every: 20ms }\n    action: { module: hostile.wasm, params: { mode: sleep, ms: 2 } }\n  - name: arriving\n    source: { type: schedule, every: 20ms }\n    action: { module: counter.wasm }\n";
    write_like_cp(&config, next.as_bytes());
    runs.wait_runs("arriving", 2).await;
    let steady_before_change = runs.of("steady").len();
    let steady = runs.wait_runs("steady", steady_before_change + 3).await;
    let sequences: Vec<i64> = steady
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r.output.as_deref().unwrap()).unwrap()["sequence"].as_i64().unwrap())
        .collect();
    assert!(
        sequences.windows(2).all(|w| w[1] > w[0]),
        "the schedule kept counting: {sequences:?}"
    );
    let leaving = runs.of("leaving").len();
    let names: Vec<String> = engine
        .triggers()
        .await
        .iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, vec!["arriving".to_string(), "steady".to_string()]);
    assert_eq!(engine.reload_stats().config_reloads, 1);

    // Changing the source restarts the schedule: the sequence starts over.
    write_like_editor(
        &config,
        next.replace(
            "every: 20ms }\n    action: { module: hostile",
            "every: 30ms }\n    action: { module: hostile",
        )
        .as_bytes(),
    );
    let restarted = eventually("the restarted schedule's first tick", || {
        runs.of("steady").into_iter().rev().find(|r| {
            let data: serde_json::Value =
                serde_json::from_str(r.output.as_deref().unwrap()).unwrap();
            data["schedule"]["every"] == "30ms"
        })
    })
    .await;
    let data: serde_json::Value =
        serde_json::from_str(restarted.output.as_deref().unwrap()).unwrap();
    assert!(data["sequence"].as_i64().unwrap() <= 2, "{data}");
    engine.shutdown().await;
    assert_eq!(
        runs.of("leaving").len(),
        leaving,
        "a removed trigger fires no more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_cache_compiles_nothing_and_bad_entries_are_recompiled() {
    let ws = Workspace::new();
    let cache = ws.path().join("cache");
    let config = ws.write(
        "triggers.yaml",
        "triggers:\n  - name: a\n    source: { type: schedule, now: true }\n    filter: { module: ready-replicas.wasm }\n    action: { module: log-event.wasm }\n  - name: b\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n",
    );
    let options = || EngineOptions {
        module_cache: Some(cache.clone()),
        ..EngineOptions::new(ws.state_dir())
    };

    let (engine, _) = start_engine_at(&config, support::modules(), options()).await;
    let cold = engine.reload_stats();
    assert!(engine.modules().list().iter().all(|m| !m.from_cache));
    engine.shutdown().await;
    assert_eq!((cold.cache_misses, cold.cache_hits), (3, 0), "{cold:?}");

    let (engine, runs) = start_engine_at(&config, support::modules(), options()).await;
    let warm = engine.reload_stats();
    assert!(engine.modules().list().iter().all(|m| m.from_cache));
    runs.wait_runs("b", 1).await;
    engine.shutdown().await;
    assert_eq!(
        (warm.cache_misses, warm.cache_hits),
        (0, 3),
        "a warm start compiles nothing: {warm:?}"
    );

    // Damage two entries: one truncated, one with a flipped byte in the code.
    let mut entries: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let truncated = std::fs::read(&entries[0]).unwrap();
    std::fs::write(&entries[0], &truncated[..truncated.len() / 2]).unwrap();
    let mut flipped = std::fs::read(&entries[1]).unwrap();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    std::fs::write(&entries[1], &flipped).unwrap();

    let (engine, runs) = start_engine_at(&config, support::modules(), options()).await;
    let repaired = engine.reload_stats();
    let b = runs.wait_runs("b", 1).await;
    let a = runs.wait_runs("a", 1).await;
    engine.shutdown().await;
    assert_eq!(
        (
            repaired.cache_discarded,
            repaired.cache_misses,
            repaired.cache_hits
        ),
        (2, 2, 1),
        "{repaired:?}"
    );
    assert_eq!(b[0].status, RunStatus::Succeeded);
    assert_ne!(a[0].status, RunStatus::Failed, "{a:#?}");
}

#[test]
fn cli_run_reloads_and_rejects_like_check() {
    let ws = Workspace::new();
    let config = ws.write(
        "t.yaml",
        "triggers:\n  - name: tick\n    source: { type: schedule, every: 50ms }\n    action: { module: counter.wasm }\n",
    );
    let engine =
        support::EngineProcess::start(&config, &ws.state_dir(), &["--poll-interval", "200ms"]);
    engine.wait_runs("tick", 2);
    write_like_editor(&config, b"triggers:\n  - name: tick\n    source: { type: schedule, every: 50ms }\n    action: { module: counter.wasm, timout: 1s }\n");
    engine.wait_for("the rejection", |lines| {
        lines
            .iter()
            .any(|l| l["message"] == "config change rejected; the previous config keeps running")
            .then_some(())
    });
    let log = engine.raw_log();
    assert!(
        log.contains("trigger `tick`: field `action.timout`: unknown field `timout`"),
        "{log}"
    );
    let seen = engine.runs("tick").len();
    engine.wait_runs("tick", seen + 2);
    assert_eq!(engine.stop(), 0);
    let _ = Duration::ZERO;
}
