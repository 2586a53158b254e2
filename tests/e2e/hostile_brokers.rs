//! The hostile-input suite, broker messages (part of `hostile`; listed in
//! docs/security.md): NATS and MQTT messages that are binary, nested far
//! past the JSON parser's depth limit, carry path tricks in their subject or
//! topic, or come from a server that accepts connections and never speaks.
//! Each becomes a plain event or a clear warning; nothing stops the engine.

use std::net::TcpListener;

use crate::support::brokers::{Mosquitto, NatsServer};
use crate::support::{EngineProcess, Workspace, runs_in_log};

/// 100,000 nested arrays: far past serde_json's depth limit of 128.
fn deep() -> String {
    "[".repeat(100_000)
}

/// A filter passing the binary message (not UTF-8: `bodyBase64`), the one
/// too deep to parse (text: `body`) and the ordinary one, told apart by
/// `field` (the subject or topic) with levels split by `sep`.
fn check(field: &str, sep: char) -> String {
    format!(
        "({field}.startsWith('in{sep}bin') && has(event.data.bodyBase64)) || ({field}.startsWith('in{sep}deep') && event.data.body.startsWith('[[[[')) || {field}.startsWith('in{sep}ok')"
    )
}

#[test]
fn binary_deep_and_path_trick_nats_messages_become_plain_events() {
    let nats = NatsServer::start();
    nats.stream("IN", &["in.>"]);
    let ws = Workspace::new();
    let config = ws.write(
        "nats.yaml",
        &format!(
            "triggers:\n  - name: work\n    source: {{ type: nats, url: '{}', stream: IN }}\n    filter: {{ cel: \"{}\" }}\n    action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n",
            nats.url(),
            check("event.data.subject", '.')
        ),
    );
    nats.publish_raw("in.bin", &[0xff, 0xfe, 0x00, 0x80]);
    nats.publish_raw("in.deep", deep().as_bytes());
    nats.publish_raw("in.ok.$x.%2e%2e.%2fetc%2fpasswd.\u{202e}", b"{\"ok\":true}");
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    let runs = engine.wait_runs("work", 3);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
    assert_eq!(runs_in_log(&log, "work").len(), 3);
}

#[test]
fn binary_deep_and_path_trick_mqtt_messages_become_plain_events() {
    let broker = Mosquitto::start();
    let ws = Workspace::new();
    let config = ws.write(
        "mqtt.yaml",
        &format!(
            "triggers:\n  - name: work\n    source: {{ type: mqtt, url: '{}', topics: ['in/#'], clientId: hostile }}\n    filter: {{ cel: \"{}\" }}\n    action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n",
            broker.url(),
            check("event.data.topic", '/')
        ),
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_for("subscribed", |lines| {
        lines
            .iter()
            .any(|l| l["message"] == "mqtt subscribed")
            .then_some(())
    });
    broker.publish_file("in/bin", &[0xff, 0xfe, 0x00, 0x80]);
    broker.publish_file("in/deep", deep().as_bytes());
    broker.publish_file("in/ok/../../etc/passwd/\u{202e}", b"{\"ok\":true}");
    let runs = engine.wait_runs("work", 3);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
}

/// A "broker" that accepts connections and never answers holds up neither
/// the other triggers nor a clean shutdown.
#[test]
fn silent_brokers_hold_up_nothing_else() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let ws = Workspace::new();
    let config = ws.write(
        "silent.yaml",
        &format!(
            "triggers:\n  - name: nats-silent\n    source: {{ type: nats, url: 'nats://127.0.0.1:{port}', stream: S }}\n    action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n  - name: mqtt-silent\n    source: {{ type: mqtt, url: 'mqtt://127.0.0.1:{port}', topics: [t] }}\n    action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n  - name: tick\n    source: {{ type: schedule, every: 1s }}\n    action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n"
        ),
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    let runs = engine.wait_runs("tick", 2);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "stops cleanly:\n{log}");
    drop(silent);
}
