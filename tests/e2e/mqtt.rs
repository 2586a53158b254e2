//! `type: mqtt` against a real `mosquitto`, messages published by
//! `mosquitto_pub`: topic and payload reach filters under MQTT 3.1.1 and 5,
//! a shared subscription splits the load between replicas, the PUBACK waits
//! for the run (a SIGKILLed replica gets its unfinished messages again when
//! it comes back), a broker restart is survived, and an oversized message is
//! dropped without stopping the source.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::brokers::Mosquitto;
use crate::support::{EngineProcess, Workspace, run_lines, runs_in_log};

fn config(broker: &Mosquitto, source: &str, filter: &str, action: &str) -> String {
    format!(
        r#"
engine: {{ workers: 2, queueSize: 64 }}
triggers:
  - name: work
    source: {{ type: mqtt, url: "{url}", {source} }}
    {filter}
    action: {action}
"#,
        url = broker.url()
    )
}

fn start(ws: &Workspace, name: &str, config: &str) -> EngineProcess {
    let path = ws.write(&format!("{name}.yaml"), config);
    let engine = EngineProcess::start(&path, &ws.path().join(format!("state-{name}")), &[]);
    engine.wait_started();
    engine
}

/// Waits until the broker has confirmed the engine's subscription (a
/// message published before that is not delivered to it).
fn wait_subscribed(engine: &EngineProcess) {
    engine.wait_for("subscribed", |lines| {
        lines
            .iter()
            .any(|l| l["message"] == "mqtt subscribed")
            .then_some(())
    });
}

/// Waits until `engine`'s runs of `work` with `status` number at least `n`.
fn wait_status(engine: &EngineProcess, status: &str, n: usize) {
    engine.wait_for(&format!("{n} {status} runs"), |lines| {
        let done = run_lines(lines, "work")
            .iter()
            .filter(|r| r["status"] == status)
            .count();
        (done >= n).then_some(())
    });
}

fn counts(log: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for run in runs_in_log(log, "work") {
        *counts
            .entry(run["status"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    counts
}

#[test]
fn topic_and_payload_reach_the_filter_in_both_protocol_versions() {
    let broker = Mosquitto::start();
    let ws = Workspace::new();
    for (name, protocol, extra) in [
        ("v311", "3.1.1", vec![]),
        (
            "v5",
            "5",
            vec!["-V", "5", "-D", "publish", "user-property", "site", "north"],
        ),
    ] {
        let site = if protocol == "5" {
            " && event.data.properties.user.site == 'north'"
        } else {
            ""
        };
        let config = config(
            &broker,
            &format!("topics: ['sensors/+/{name}'], protocol: '{protocol}', clientId: it-{name}"),
            &format!(
                "filter: {{ cel: \"event.data.topic == 'sensors/a/{name}' && (event.data.body == 'not json' || event.data.body.c > 20){site}\" }}"
            ),
            "{ module: hostile.wasm, params: { mode: ok } }",
        );
        let engine = start(&ws, name, &config);
        wait_subscribed(&engine);
        let topic = format!("sensors/a/{name}");
        let other = format!("sensors/b/{name}");
        let lines: Vec<String> = vec![
            r#"{"c": 25}"#.into(),
            r#"{"c": 5}"#.into(),
            "not json".into(),
        ];
        broker.publish_lines(&topic, &lines, &extra);
        broker.publish_lines(&other, &[r#"{"c": 30}"#.to_string()], &extra);
        wait_status(&engine, "succeeded", 2);
        wait_status(&engine, "filtered", 2);
        let (code, log) = engine.stop_and_log();
        assert_eq!(code, 0, "{log}");
        let counts = counts(&log);
        // Passed: {"c": 25} and the text payload; filtered: {"c": 5} and the other topic.
        assert_eq!(counts.get("succeeded"), Some(&2), "{name}: {counts:?}");
        assert_eq!(counts.get("filtered"), Some(&2), "{name}: {counts:?}");
    }
}

#[test]
fn a_shared_subscription_splits_messages_between_replicas() {
    let broker = Mosquitto::start();
    let ws = Workspace::new();
    let engines: Vec<EngineProcess> = (0..2)
        .map(|i| {
            let config = config(
                &broker,
                &format!("topics: ['$share/workers/jobs'], clientId: worker-{i}"),
                "",
                "{ module: hostile.wasm, params: { mode: ok } }",
            );
            start(&ws, &format!("r{i}"), &config)
        })
        .collect();
    for engine in &engines {
        wait_subscribed(engine);
    }
    let lines: Vec<String> = (0..1000).map(|i| format!(r#"{{"n": {i}}}"#)).collect();
    broker.publish_lines("jobs", &lines, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let done: usize = engines.iter().map(|e| e.runs("work").len()).sum();
        if done >= 1000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {done} of 1000 ran"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = engines
        .into_iter()
        .map(|e| {
            let (code, log) = e.stop_and_log();
            assert_eq!(code, 0, "{log}");
            log
        })
        .collect();
    let per: Vec<usize> = logs.iter().map(|l| runs_in_log(l, "work").len()).collect();
    assert_eq!(
        per.iter().sum::<usize>(),
        1000,
        "each message once: {per:?}"
    );
    assert!(per.iter().all(|n| *n > 0), "both replicas worked: {per:?}");
}

#[test]
fn a_killed_replica_gets_its_unfinished_messages_again() {
    let broker = Mosquitto::start();
    let ws = Workspace::new();
    let config = config(
        &broker,
        "topics: [slow], clientId: phoenix",
        "",
        "{ module: hostile.wasm, params: { mode: sleep, ms: 300 } }",
    );
    let engine = start(&ws, "phoenix", &config);
    wait_subscribed(&engine);
    let lines: Vec<String> = (0..20).map(|i| format!(r#"{{"n": {i}}}"#)).collect();
    broker.publish_lines("slow", &lines, &[]);
    wait_status(&engine, "succeeded", 3);
    let first = runs_in_log(&engine.kill(), "work").len();
    assert!(first < 20, "killed mid-way ({first} done)");
    // Same client id, same session: the broker delivers what had no PUBACK.
    let engine = start(&ws, "phoenix", &config);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while first + engine.runs("work").len() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "after the restart only {} more ran; {first} before",
            engine.runs("work").len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_broker_restart_is_survived_and_oversized_messages_are_dropped() {
    let mut broker = Mosquitto::start();
    let ws = Workspace::new();
    let config = config(
        &broker,
        "topics: [bounce], clientId: bouncer, maxMessageSize: 1Ki",
        "",
        "{ module: hostile.wasm, params: { mode: ok } }",
    );
    let engine = start(&ws, "bouncer", &config);
    wait_subscribed(&engine);
    broker.publish_lines("bounce", &["x".repeat(2000)], &[]);
    let before: Vec<String> = (0..50).map(|i| format!(r#"{{"n": {i}}}"#)).collect();
    broker.publish_lines("bounce", &before, &[]);
    wait_status(&engine, "succeeded", 50);
    broker.restart(Duration::from_millis(500));
    engine.wait_for("reconnected", |lines| {
        (lines
            .iter()
            .filter(|l| l["message"] == "mqtt connected")
            .count()
            >= 2)
            .then_some(())
    });
    let after: Vec<String> = (50..100).map(|i| format!(r#"{{"n": {i}}}"#)).collect();
    broker.publish_lines("bounce", &after, &[]);
    wait_status(&engine, "succeeded", 100);
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("acknowledged and dropped"),
        "the oversized one is reported"
    );
    assert_eq!(counts(&log).get("succeeded"), Some(&100));
}
