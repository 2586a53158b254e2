//! `type: nats` against a real `nats-server` with JetStream, messages
//! published by nats-py (the official Python client): replicas sharing one
//! durable consumer drain it exactly once, a SIGKILLed replica loses
//! nothing, failures and oversized messages end in the dead-letter subject,
//! and a server restart is survived. Every test counts what was published
//! against what ran.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::support::brokers::NatsServer;
use crate::support::{self, EngineProcess, Workspace, stop_all};

const CONSUMER: &str = "wasmtrigger-work";

/// A config for trigger `work` on stream `stream`; `server` is the source's
/// `url:` or `urlSecret:` line.
fn config(server: &str, stream: &str, extra: &str, action: &str) -> String {
    format!(
        r#"
engine: {{ workers: 2, queueSize: 64 }}
triggers:
  - name: work
    source: {{ type: nats, {server}, stream: {stream}, ackWait: 2s, batch: 32 {extra} }}
    action: {action}
"#
    )
}

fn replicas(ws: &Workspace, config: &str, n: usize) -> Vec<EngineProcess> {
    support::replicas(ws, "nats.yaml", config, n)
}

/// The stream sequence of each run, with its status, from a log.
fn processed(log: &str) -> Vec<(u64, String)> {
    support::processed(log, "work")
        .into_iter()
        .map(|(seq, status)| (seq.parse().unwrap_or(0), status))
        .collect()
}

#[test]
fn two_replicas_drain_ten_thousand_messages_exactly_once_with_credentials_from_a_secret() {
    let nats = NatsServer::start_with_user(Some(("engine", "s3cret-pw")));
    nats.stream("JOBS", &["jobs.>"]);
    nats.publish("jobs.created", 0, 10_000);
    let ws = Workspace::new();
    ws.write("secrets/nats-url", &nats.url());
    let config = format!(
        r#"
engine: {{ workers: 2, queueSize: 64, secrets: {{ dir: "{secrets}" }} }}
triggers:
  - name: work
    source: {{ type: nats, urlSecret: nats-url, stream: JOBS, subject: "jobs.>", ackWait: 2s, batch: 32 }}
    action: {{ module: hostile.wasm, params: {{ mode: ok }} }}
"#,
        secrets = ws.path().join("secrets").display()
    );
    let engines = replicas(&ws, &config, 2);
    nats.wait_drained("JOBS", CONSUMER, Duration::from_secs(240));
    let info = nats.consumer("JOBS", CONSUMER).expect("consumer");
    assert_eq!(
        info["max_ack_pending"], 64,
        "maxAckPending follows queueSize"
    );
    let logs = stop_all(engines);

    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (i, log) in logs.iter().enumerate() {
        let runs = processed(log);
        assert!(!runs.is_empty(), "replica {i} processed nothing");
        for (seq, status) in runs {
            assert_eq!(status, "succeeded", "message {seq}");
            *seen.entry(seq).or_default() += 1;
        }
        assert!(!log.contains("s3cret-pw"), "the password never shows");
    }
    assert_eq!(seen.len(), 10_000, "every message processed");
    assert!(seen.keys().all(|s| (1..=10_000).contains(s)));
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
}

#[test]
fn a_killed_replica_loses_nothing() {
    let nats = NatsServer::start();
    nats.stream("SLOW", &["slow"]);
    nats.publish("slow", 0, 600);
    let ws = Workspace::new();
    let config = config(
        &format!("url: \"{}\"", nats.url()),
        "SLOW",
        "",
        "{ module: hostile.wasm, params: { mode: sleep, ms: 10 } }",
    );
    let mut engines = replicas(&ws, &config, 3);
    let victim = engines.remove(0);
    victim.wait_for("the victim to be busy", |lines| {
        (crate::support::run_lines(lines, "work").len() >= 20).then_some(())
    });
    let victim_log = victim.kill();
    nats.wait_drained("SLOW", CONSUMER, Duration::from_secs(120));
    let logs = stop_all(engines);

    let mut seen: HashSet<u64> = processed(&victim_log).into_iter().map(|(s, _)| s).collect();
    for log in &logs {
        seen.extend(processed(log).into_iter().map(|(s, _)| s));
    }
    let missing: Vec<u64> = (1..=600).filter(|s| !seen.contains(s)).collect();
    assert!(missing.is_empty(), "lost messages: {missing:?}");
}

#[test]
fn failures_and_oversized_messages_end_in_the_dead_letter_subject() {
    let nats = NatsServer::start();
    nats.stream("FRAGILE", &["fragile"]);
    nats.stream("DEAD", &["dead.>"]);
    nats.publish("fragile", 0, 5);
    nats.publish_raw("fragile", &vec![b'x'; 5000]);
    let ws = Workspace::new();
    let config = config(
        &format!("url: \"{}\"", nats.url()),
        "FRAGILE",
        ", deadLetter: dead.work, maxMessageSize: 4Ki",
        "{ module: hostile.wasm, params: { mode: fail }, retry: { max: 1, delay: 10ms } }",
    );
    let engines = replicas(&ws, &config, 1);
    nats.wait_drained("FRAGILE", CONSUMER, Duration::from_secs(60));
    let logs = stop_all(engines);
    assert_eq!(processed(&logs[0]).len(), 5, "the oversized one never ran");

    let dead = nats.read("DEAD", "dead.work");
    assert_eq!(dead.len(), 6, "{dead:#?}");
    let header =
        |m: &serde_json::Value, k: &str| m["headers"][k].as_str().unwrap_or("").to_string();
    let failed: Vec<_> = dead
        .iter()
        .filter(|m| header(m, "Wasmtrigger-Error").contains("failing on purpose"))
        .collect();
    assert_eq!(failed.len(), 5, "{dead:#?}");
    for m in &failed {
        assert_eq!(header(m, "Wasmtrigger-Trigger"), "work");
        assert_eq!(header(m, "Wasmtrigger-Stream"), "FRAGILE");
        assert!(
            m["data"].as_str().unwrap().starts_with("{\"n\": "),
            "payload kept: {m}"
        );
    }
    let big = dead
        .iter()
        .find(|m| header(m, "Wasmtrigger-Error").contains("source.maxMessageSize"))
        .expect("the oversized message is dead-lettered");
    assert_eq!(big["data"], "", "without its payload");
}

#[test]
fn a_server_restart_is_survived() {
    let mut nats = NatsServer::start();
    nats.stream("BOUNCE", &["bounce"]);
    nats.publish("bounce", 0, 1500);
    let ws = Workspace::new();
    let config = config(
        &format!("url: \"{}\"", nats.url()),
        "BOUNCE",
        "",
        "{ module: hostile.wasm, params: { mode: sleep, ms: 2 } }",
    );
    let engines = replicas(&ws, &config, 2);
    engines[0].wait_for("work to start", |lines| {
        (crate::support::run_lines(lines, "work").len() >= 50).then_some(())
    });
    nats.restart(Duration::from_millis(500));
    nats.publish("bounce", 1500, 100);
    nats.wait_drained("BOUNCE", CONSUMER, Duration::from_secs(120));
    let logs = stop_all(engines);
    let seen: HashSet<u64> = logs
        .iter()
        .flat_map(|l| processed(l).into_iter().map(|(s, _)| s))
        .collect();
    let missing: Vec<u64> = (1..=1600).filter(|s| !seen.contains(s)).collect();
    assert!(missing.is_empty(), "lost across the restart: {missing:?}");
}
