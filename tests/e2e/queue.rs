//! Work queues and durable acceptance with real processes: a real
//! `redis-server`, several real `wasmtrigger run` replicas sharing one
//! consumer group, SIGKILLed replicas, a restarted Redis, a dead-letter
//! stream, and webhook events accepted before a `kill -9`. Every test counts
//! what was accepted against what finished.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::Value;

use crate::support::redis_server::RedisServer;
use crate::support::{self, EngineProcess, Workspace, runs_in_log, stop_all};

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

fn replicas(ws: &Workspace, config: &str, n: usize) -> Vec<EngineProcess> {
    support::replicas(ws, "queue.yaml", config, n)
}

/// Redis entry ids of the runs in a log, with their status.
fn processed(log: &str) -> Vec<(String, String)> {
    support::processed(log, "work")
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

const HOOK_CONFIG: &str = r#"
engine: { workers: 2, queueSize: 1000, history: { maxPerTrigger: 100000 } }
triggers:
  - name: hook
    source: { type: webhook, auth: none }
    action: { module: hostile.wasm, params: { mode: sleep, ms: 20 } }
"#;

/// POSTs one event and returns its id if it was accepted (202).
fn post_event(http: &reqwest::blocking::Client, url: &str, n: usize) -> Option<String> {
    let response = http.post(url).body(format!("{{\"n\":{n}}}")).send().ok()?;
    if response.status() != 202 {
        return None;
    }
    let body: Value = serde_json::from_str(&response.text().ok()?).ok()?;
    body["eventId"].as_str().map(str::to_string)
}

/// Waits until the engine's stored history holds a record for every id, and
/// returns the records by event id.
fn wait_history(engine: &EngineProcess, ids: &HashSet<String>) -> HashMap<String, Vec<Value>> {
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    loop {
        let mut by_id: HashMap<String, Vec<Value>> = HashMap::new();
        for run in engine.stored_runs("hook") {
            let id = run["eventId"].as_str().unwrap_or_default().to_string();
            by_id.entry(id).or_default().push(run);
        }
        if ids.iter().all(|id| by_id.contains_key(id)) {
            return by_id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {} accepted events have no record",
            ids.iter().filter(|id| !by_id.contains_key(*id)).count(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The chaos run of the durability promise: 8 concurrent clients post while
/// the engine is SIGKILLed three times at random moments and restarted on the
/// same state directory. Every event that got a 202 ends with exactly one
/// stored run record, and a record says `replayed` exactly when its event was
/// delivered again after a crash.
#[test]
fn every_accepted_event_has_one_record_across_kills() {
    let ws = Workspace::new();
    let config = ws.write("hooks.yaml", HOOK_CONFIG);
    let state = ws.state_dir();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut accepted: HashSet<String> = HashSet::new();
    let mut replayed_seen = 0;
    for round in 0..3 {
        let engine = EngineProcess::start(&config, &state, &[]);
        engine.wait_started();
        let url = format!("{}/hooks/hook", engine.base_url());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    let mut n = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        if let Some(id) = post_event(&http, &url, round * 100_000 + c * 10_000 + n)
                        {
                            ids.push(id);
                        }
                    }
                    ids
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300 + fastrand::u64(0..700)));
        let log = engine.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for client in clients {
            accepted.extend(client.join().unwrap());
        }
        replayed_seen += runs_in_log(&log, "hook")
            .iter()
            .filter(|r| r["delivery"].as_u64().is_some_and(|d| d > 1))
            .count();
    }
    assert!(
        accepted.len() > 20,
        "the clients got events in: {}",
        accepted.len()
    );
    let engine = EngineProcess::start(&config, &state, &[]);
    engine.wait_started();
    let by_id = wait_history(&engine, &accepted);
    // An event journaled just before a kill may have lost its 202 on the way:
    // the engine ran it, the client saw an error (and would retry).
    let unanswered = by_id.keys().filter(|id| !accepted.contains(*id)).count();
    assert!(
        unanswered <= 3 * 8,
        "at most one unanswered event per client per kill: {unanswered}"
    );
    for records in by_id.values() {
        assert_eq!(records.len(), 1, "one record per event: {records:#?}");
        let record = &records[0];
        assert_eq!(record["status"], "succeeded", "{record}");
        let delivery = record["delivery"].as_u64().unwrap_or(1);
        assert_eq!(
            record["replayed"].as_bool().unwrap_or(false),
            delivery > 1,
            "{record}"
        );
    }
    let (code, _) = engine.stop_and_log();
    assert_eq!(code, 0);
    eprintln!(
        "{} events accepted across 3 kills; {} replayed deliveries seen in the logs",
        accepted.len(),
        replayed_seen
    );
}

/// A crash between storing a finished run's record and committing it: the
/// event is still journaled, runs again after the restart, and ends with one
/// record that says it was replayed. A crash just after that commit became
/// durable leaves the record and nothing to replay.
#[test]
fn a_crash_around_the_history_commit_loses_neither_record_nor_event() {
    for (failpoint, replays) in [
        ("history-before-commit", true),
        ("history-after-durable-commit", false),
    ] {
        let ws = Workspace::new();
        let config = ws.write("hooks.yaml", HOOK_CONFIG);
        let state = ws.state_dir();
        let first = EngineProcess::start_with_env(
            &config,
            &state,
            &[],
            &[("WASMTRIGGER_FAILPOINTS", failpoint)],
        );
        first.wait_started();
        let http = reqwest::blocking::Client::new();
        let id = post_event(&http, &format!("{}/hooks/hook", first.base_url()), 1)
            .expect("the event is accepted");
        let (code, log) = first.wait_exit();
        assert_eq!(code, None, "{failpoint}: the process was aborted:\n{log}");
        assert!(log.contains(&format!("failpoint {failpoint}")), "{log}");
        let ran: Vec<Value> = runs_in_log(&log, "hook");
        assert_eq!(
            ran.len(),
            1,
            "{failpoint}: the run finished before the crash:\n{log}"
        );
        assert_eq!(ran[0]["event_id"], id.as_str());

        let second = EngineProcess::start(&config, &state, &[]);
        second.wait_started();
        let by_id = wait_history(&second, &HashSet::from([id.clone()]));
        let records = &by_id[&id];
        assert_eq!(records.len(), 1, "{failpoint}: {records:#?}");
        assert_eq!(
            records[0]["replayed"].as_bool().unwrap_or(false),
            replays,
            "{failpoint}: {}",
            records[0]
        );
        if replays {
            assert_eq!(records[0]["delivery"], 2, "{}", records[0]);
        }
        let (code, log) = second.stop_and_log();
        assert_eq!(code, 0);
        assert_eq!(
            log.contains("replaying events accepted before the last stop"),
            replays,
            "{failpoint}:\n{log}"
        );
    }
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

/// `enqueue` takes the item as every command takes data: --data, --file, or
/// --file - for stdin; without one it says how to give it.
#[test]
fn enqueue_takes_data_the_same_way_as_fire_and_invoke() {
    let redis = RedisServer::start();
    let ws = Workspace::new();
    let url = redis.url();
    let file = ws.write("item.json", r#"{"from":"file"}"#);
    let enqueue = |extra: &[&str], stdin: Option<&str>| {
        let mut args = vec!["enqueue", "jobs", "--redis", url.as_str()];
        args.extend_from_slice(extra);
        crate::support::run_cli(&args, stdin)
    };
    for (extra, stdin) in [
        (vec!["--data", r#"{"from":"flag"}"#], None),
        (vec!["--file", file.to_str().unwrap()], None),
        (vec!["--file", "-"], Some(r#"{"from":"stdin"}"#)),
    ] {
        let (code, out, err) = enqueue(&extra, stdin);
        assert_eq!(code, 0, "{extra:?}: {err}");
        assert!(out.trim().contains('-'), "prints the entry id: {out}");
    }
    let stored: Vec<String> = redis
        .entries("jobs")
        .into_iter()
        .flat_map(|(_, fields)| fields.into_iter().map(|(_, v)| v))
        .collect();
    for from in ["flag", "file", "stdin"] {
        assert!(
            stored.iter().any(|v| v.contains(from)),
            "{from} missing from {stored:?}"
        );
    }
    let (code, _, err) = enqueue(&[], None);
    assert_eq!(code, 2);
    assert!(err.contains("--data") && err.contains("--file"), "{err}");
    let (code, _, err) = enqueue(&["--file", "/nonexistent/item.json"], None);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/item.json"), "{err}");
}
