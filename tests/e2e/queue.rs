//! Work queues and durable acceptance with real processes: a real
//! `redis-server`, several real `wasmtrigger run` replicas sharing one
//! consumer group, SIGKILLed replicas, a restarted Redis, a dead-letter
//! stream, and webhook events accepted before a `kill -9`. Every test counts
//! what was accepted against what finished.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::support::redis_server::RedisServer;
use crate::support::{EngineProcess, Workspace, runs_in_log};

const GROUP: &str = "wasmtrigger";

fn queue_config(redis: &RedisServer, stream: &str, action: &str) -> String {
    format!(
        r#"
engine: {{ workers: 2, queueSize: 64 }}
triggers:
  - name: work
    source: {{ type: redis-queue, url: "{url}", stream: {stream}, claimIdle: 1s, batch: 32 }}
    action: {action}
"#,
        url = redis.url()
    )
}

/// Starts `n` replicas on one config, each with its own state directory.
fn replicas(ws: &Workspace, config: &str, n: usize) -> Vec<EngineProcess> {
    let path = ws.write("queue.yaml", config);
    (0..n)
        .map(|i| {
            let state = ws.path().join(format!("state-{i}"));
            let engine = EngineProcess::start(&path, &state, &[]);
            engine.wait_started();
            engine
        })
        .collect()
}

/// Redis entry ids of the runs in a log, with their status.
fn processed(log: &str) -> Vec<(String, String)> {
    runs_in_log(log, "work")
        .iter()
        .map(|r| {
            let id = r["event_id"].as_str().unwrap_or_default();
            let entry = id.rsplit(':').next().unwrap_or_default().to_string();
            (entry, r["status"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

fn stop_all(engines: Vec<EngineProcess>) -> Vec<String> {
    engines
        .into_iter()
        .map(|e| {
            let (code, log) = e.stop_and_log();
            assert_eq!(code, 0, "replica exited badly:\n{log}");
            log
        })
        .collect()
}

#[test]
fn three_replicas_drain_ten_thousand_entries_exactly_once() {
    let redis = RedisServer::start();
    let ws = Workspace::new();
    let ids = redis.fill("jobs", 10_000);
    let config = queue_config(
        &redis,
        "jobs",
        "{ module: hostile.wasm, params: { mode: ok } }",
    );
    let engines = replicas(&ws, &config, 3);
    redis.wait_drained("jobs", GROUP, Duration::from_secs(240));
    let logs = stop_all(engines);

    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, log) in logs.iter().enumerate() {
        let runs = processed(log);
        assert!(!runs.is_empty(), "replica {i} processed nothing");
        for (entry, status) in runs {
            assert_eq!(status, "succeeded", "{entry}");
            *seen.entry(entry).or_default() += 1;
        }
    }
    let expected: HashSet<&String> = ids.iter().collect();
    assert_eq!(seen.len(), 10_000, "every entry processed");
    assert!(
        seen.keys().all(|k| expected.contains(k)),
        "only real entries"
    );
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    assert_eq!(redis.group("jobs", GROUP), Some((0, 0)), "all acknowledged");
}

#[test]
fn a_killed_replicas_entries_are_reclaimed_by_the_others() {
    let redis = RedisServer::start();
    let ws = Workspace::new();
    let ids = redis.fill("slow", 600);
    let config = queue_config(
        &redis,
        "slow",
        "{ module: hostile.wasm, params: { mode: sleep, ms: 10 } }",
    );
    let mut engines = replicas(&ws, &config, 3);
    // Kill one replica while it holds delivered, unacknowledged entries.
    let victim = engines.remove(0);
    victim.wait_for("the victim to be busy", |lines| {
        (crate::support::run_lines(lines, "work").len() >= 20).then_some(())
    });
    let victim_log = victim.kill();
    redis.wait_drained("slow", GROUP, Duration::from_secs(120));
    let logs = stop_all(engines);

    let mut seen: HashSet<String> = processed(&victim_log).into_iter().map(|(e, _)| e).collect();
    let reclaimed = logs
        .iter()
        .any(|l| l.contains("claimed entries left pending by another consumer"));
    for log in &logs {
        seen.extend(processed(log).into_iter().map(|(e, _)| e));
    }
    let missing: Vec<_> = ids.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(missing.is_empty(), "lost entries: {missing:?}");
    assert!(
        reclaimed,
        "the survivors claimed the victim's pending entries"
    );
}

#[test]
fn replicas_reconnect_after_redis_restarts_and_finish() {
    let mut redis = RedisServer::start();
    let ws = Workspace::new();
    let ids = redis.fill("bounce", 1500);
    let config = queue_config(
        &redis,
        "bounce",
        "{ module: hostile.wasm, params: { mode: sleep, ms: 2 } }",
    );
    let engines = replicas(&ws, &config, 2);
    engines[0].wait_for("work to start", |lines| {
        (crate::support::run_lines(lines, "work").len() >= 50).then_some(())
    });
    redis.restart(Duration::from_millis(500));
    redis.wait_drained("bounce", GROUP, Duration::from_secs(120));
    let logs = stop_all(engines);
    let seen: HashSet<String> = logs
        .iter()
        .flat_map(|l| processed(l).into_iter().map(|(e, _)| e))
        .collect();
    let missing = ids.iter().filter(|id| !seen.contains(*id)).count();
    assert_eq!(missing, 0, "entries lost across the restart");
    assert!(
        logs.iter()
            .any(|l| l.contains("connection lost; reconnecting")),
        "the outage was noticed"
    );
}

#[test]
fn failed_entries_land_in_the_dead_letter_stream() {
    let redis = RedisServer::start();
    let ws = Workspace::new();
    let ids = redis.fill("fragile", 5);
    let config = queue_config(
        &redis,
        "fragile",
        "{ module: hostile.wasm, params: { mode: fail }, retry: { max: 1, delay: 10ms } }",
    );
    let engines = replicas(&ws, &config, 1);
    redis.wait_drained("fragile", GROUP, Duration::from_secs(60));
    let logs = stop_all(engines);
    assert_eq!(processed(&logs[0]).len(), 5);
    let dead = redis.entries("fragile:dead");
    assert_eq!(dead.len(), 5, "{dead:?}");
    let mut originals = Vec::new();
    for (_, fields) in &dead {
        let get = |k: &str| {
            fields
                .iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert!(
            get("wasmtrigger.error").contains("failing on purpose"),
            "{fields:?}"
        );
        assert_eq!(get("wasmtrigger.trigger"), "work");
        assert!(
            get("data").starts_with("{\"n\":"),
            "the original fields are kept"
        );
        originals.push(get("wasmtrigger.entry"));
    }
    originals.sort();
    assert_eq!(originals, ids);
}

#[test]
fn webhook_events_accepted_before_a_kill_run_after_restart() {
    let ws = Workspace::new();
    let config = ws.write(
        "hooks.yaml",
        r#"
engine: { workers: 1, queueSize: 100 }
triggers:
  - name: hook
    source: { type: webhook, auth: none }
    action: { module: hostile.wasm, params: { mode: sleep, ms: 200 } }
"#,
    );
    let state = ws.state_dir();
    let first = EngineProcess::start(&config, &state, &[]);
    first.wait_started();
    let url = format!("{}/hooks/hook", first.base_url());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let mut accepted = Vec::new();
    for i in 0..12 {
        let response = rt
            .block_on(http.post(&url).body(format!("{{\"n\":{i}}}")).send())
            .unwrap();
        assert_eq!(response.status(), 202);
        let body: Value = serde_json::from_str(&rt.block_on(response.text()).unwrap()).unwrap();
        accepted.push(body["eventId"].as_str().unwrap().to_string());
    }
    let first_log = first.kill();
    let finished_first: HashSet<String> = runs_in_log(&first_log, "hook")
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_string())
        .collect();
    assert!(
        finished_first.len() < accepted.len(),
        "the kill came mid-work"
    );

    let second = EngineProcess::start(&config, &state, &[]);
    let remaining = accepted.len() - finished_first.len();
    let runs = second.wait_runs("hook", remaining);
    let (code, second_log) = second.stop_and_log();
    assert_eq!(code, 0);
    assert!(second_log.contains("replaying events accepted before the last stop"));
    let mut finished: HashSet<String> = finished_first;
    for run in &runs {
        assert_eq!(run["status"], "succeeded", "{run}");
        finished.insert(run["event_id"].as_str().unwrap().to_string());
    }
    let accepted: HashSet<String> = accepted.into_iter().collect();
    assert_eq!(
        finished, accepted,
        "every accepted event ran, under its original id"
    );
}

#[test]
fn redis_queue_configs_are_checked_field_by_field() {
    let text = crate::support::assert_check_errors(
        r#"
triggers:
  - name: both
    source: { type: redis-queue, url: "redis://a", urlSecret: b, stream: s }
    action: { module: counter.wasm }
  - name: password
    source: { type: redis-queue, url: "redis://:hunter2@a:6379", stream: s }
    action: { module: counter.wasm }
  - name: hasty
    source: { type: redis-queue, url: "redis://a", stream: s, claimIdle: 10ms }
    action: { module: counter.wasm }
  - name: no-stream
    source: { type: redis-queue, url: "redis://a" }
    action: { module: counter.wasm }
"#,
        &[
            ("both", &["`source`", "exactly one of `url` or `urlSecret`"]),
            ("password", &["`source.url`", "use `urlSecret`"]),
            ("hasty", &["`source.claimIdle`", "at least 100ms"]),
            ("no-stream", &["`source", "missing field `stream`"]),
        ],
    );
    assert!(
        !text.contains("hunter2"),
        "the password is never echoed:\n{text}"
    );
}
