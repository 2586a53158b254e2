//! Capabilities under grants, against real HTTP servers on loopback: what is
//! granted works, what is not never leaves the host, limits hold, secrets are
//! read from env and Secret volumes and never written anywhere.

use std::sync::Arc;

use serde_json::{Value, json};
use wasmtrigger::capabilities::HostServices;
use wasmtrigger::config::Limits;
use wasmtrigger::event::Event;
use wasmtrigger::runs::RunStatus;
use wasmtrigger::runtime::{Invocation, Runtime, RuntimeSettings};
use wasmtrigger::state::StateStore;

use crate::support::http_server::TestServer;
use crate::support::{self, EngineProcess, Workspace, runs_in_log, start_engine};

/// A hostile-guest `http` call as YAML params.
fn http_params(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&str>) -> String {
    json!({
        "mode": "http",
        "request": {"method": method, "url": url, "headers": headers, "body": body},
    })
    .to_string()
}

fn output(record: &wasmtrigger::runs::RunRecord) -> Value {
    serde_json::from_str(record.output.as_deref().unwrap_or("null")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_request_arrives_intact_and_its_response_comes_back() {
    let server = TestServer::start().await;
    let params = http_params(
        "post",
        &server.url("/echo?x=1"),
        &[("x-test", "yes"), ("content-type", "text/plain")],
        Some("hello there"),
    );
    let ws = Workspace::new();
    let yaml = format!(
        "triggers:\n  - name: call\n    source: {{ type: schedule, now: true }}\n    action:\n      module: hostile.wasm\n      params: {params}\n      grants: {{ http: [\"{}\"] }}\n",
        server.grant()
    );
    let (engine, runs) = start_engine(&ws, &yaml).await;
    let record = runs.wait_runs("call", 1).await.remove(0);
    let stats = engine.capability_stats();
    engine.shutdown().await;
    assert_eq!(record.status, RunStatus::Succeeded, "{record:#?}");
    let out = output(&record);
    assert_eq!(out["status"], 200);
    assert_eq!(out["headers"]["x-served-by"], "test-server");
    let echoed: Value = serde_json::from_str(out["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "POST");
    assert_eq!(echoed["headers"]["x-test"], "yes");
    assert_eq!(echoed["headers"]["content-type"], "text/plain");
    assert_eq!(echoed["body"], "hello there");
    let seen = server.seen();
    assert_eq!(
        (seen.len(), seen[0].method.as_str(), seen[0].body.as_str()),
        (1, "POST", "hello there")
    );
    assert_eq!((stats.http_calls, stats.http_denials), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ungranted_destinations_and_redirects_never_leave_the_host() {
    let (allowed, other) = (TestServer::start().await, TestServer::start().await);
    let to_other: String =
        url::form_urlencoded::byte_serialize(other.url("/echo").as_bytes()).collect();
    let triggers = [
        (
            "denied-host",
            http_params("GET", &other.url("/echo"), &[], None),
            allowed.grant(),
        ),
        (
            "denied-redirect",
            http_params(
                "GET",
                &allowed.url(&format!("/redirect?to={to_other}")),
                &[],
                None,
            ),
            allowed.grant(),
        ),
        (
            "granted-redirect",
            http_params(
                "POST",
                &allowed.url("/redirect?code=303&to=/echo"),
                &[("authorization", "Bearer t")],
                Some("x"),
            ),
            allowed.grant(),
        ),
        (
            "outside-path",
            http_params("GET", &allowed.url("/big"), &[], None),
            format!("{}/echo", allowed.grant()),
        ),
    ];
    let mut yaml = String::from("engine: { retry: { max: 0 } }\ntriggers:\n");
    for (name, params, grant) in &triggers {
        yaml.push_str(&format!(
            "  - name: {name}\n    source: {{ type: schedule, now: true }}\n    action:\n      module: hostile.wasm\n      params: {params}\n      grants: {{ http: [\"{grant}\"] }}\n"
        ));
    }
    let ws = Workspace::new();
    let (engine, runs) = start_engine(&ws, &yaml).await;
    for name in ["denied-host", "denied-redirect", "outside-path"] {
        let r = runs.wait_runs(name, 1).await.remove(0);
        assert_eq!(r.status, RunStatus::Failed, "{r:#?}");
        let error = r.error.as_deref().unwrap();
        assert!(
            error.contains("denied: http:") && error.contains("not granted to this trigger"),
            "{name}: {error}"
        );
    }
    let redirected = runs.wait_runs("granted-redirect", 1).await.remove(0);
    let stats = engine.capability_stats();
    engine.shutdown().await;
    assert_eq!(redirected.status, RunStatus::Succeeded, "{redirected:#?}");
    let echoed: Value =
        serde_json::from_str(output(&redirected)["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "GET", "303 turns into GET");
    assert_eq!(
        echoed["headers"]["authorization"], "Bearer t",
        "same origin keeps credentials"
    );
    assert!(
        other.seen().is_empty(),
        "nothing reached the ungranted server: {:?}",
        other.seen()
    );
    assert!(
        allowed.seen().iter().all(|s| s.path != "/big"),
        "the ungranted path was not requested"
    );
    assert_eq!(stats.http_denials, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_size_time_and_request_count_are_capped() {
    let server = TestServer::start().await;
    let grant = server.grant();
    let yaml = format!(
        r#"
engine: {{ retry: {{ max: 0 }}, http: {{ maxRequests: 2 }} }}
triggers:
  - name: big
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {big}, grants: {{ http: ["{grant}"] }}, http: {{ maxResponseSize: 64Ki }} }}
  - name: slow
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {slow}, grants: {{ http: ["{grant}"] }}, http: {{ timeout: 300ms }} }}
  - name: chatty
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {chatty}, grants: {{ http: ["{grant}"] }} }}
"#,
        big = http_params("GET", &server.url("/big?bytes=200000"), &[], None),
        slow = http_params("GET", &server.url("/slow?ms=20000"), &[], None),
        chatty = json!({"mode": "http", "repeat": 3, "request": {"method": "GET", "url": server.url("/json?value=7")}}),
    );
    let ws = Workspace::new();
    let (engine, runs) = start_engine(&ws, &yaml).await;
    let expect = [
        ("big", "response body exceeds the 65536-byte limit"),
        ("slow", "request did not complete within 300ms"),
        ("chatty", "request 2: denied: http: GET http://127.0.0.1"),
    ];
    for (name, text) in expect {
        let r = runs.wait_runs(name, 1).await.remove(0);
        assert_eq!(r.status, RunStatus::Failed, "{r:#?}");
        assert!(
            r.error.as_deref().unwrap().contains(text),
            "{name}: {:?}",
            r.error
        );
    }
    engine.shutdown().await;
    let chatty_hits = server.seen().iter().filter(|s| s.path == "/json").count();
    assert_eq!(
        chatty_hits, 2,
        "the third request was refused before it was sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_caps_hold_and_compare_and_swap_never_loses_an_update() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        "engine: { retry: { max: 0 }, kv: { maxValueSize: 16, maxKeys: 2 } }\ntriggers:\n  - name: big-value\n    source: { type: schedule, now: true }\n    action: { module: hostile.wasm, params: { mode: kv-set, key: a, value: \"12345678901234567\" } }\n",
    )
    .await;
    let r = runs.wait_runs("big-value", 1).await.remove(0);
    engine.shutdown().await;
    assert!(
        r.error
            .as_deref()
            .unwrap()
            .contains("invalid: value of 17 bytes exceeds the 16-byte limit"),
        "{r:#?}"
    );

    // 24 runs of one trigger at once, each a read-modify-write through compare-and-swap.
    let runtime = Arc::new(Runtime::new(&RuntimeSettings::default()).unwrap());
    let module = Arc::new(
        runtime
            .load_file("hostile.wasm", &support::module("hostile.wasm"))
            .unwrap(),
    );
    let store = StateStore::in_memory(Default::default()).unwrap();
    let services = HostServices::new(Default::default()).unwrap();
    let limits = Limits {
        timeout: std::time::Duration::from_secs(30),
        memory: 64 << 20,
    };
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let (runtime, module) = (runtime.clone(), module.clone());
            let inv = Invocation::new(
                "counter",
                limits,
                Some(store.kv("counter")),
                services.clone(),
            );
            tokio::spawn(async move {
                let event = Event::new("counter", "test", "tick", &json!({}));
                runtime
                    .call_action(&module, &inv, &event, r#"{"mode":"cas-increment"}"#)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap().parse::<i64>().unwrap());
    }
    results.sort();
    assert_eq!(
        results,
        (1..=24).collect::<Vec<_>>(),
        "every run saw a distinct value"
    );
    assert_eq!(
        store.kv("counter").get("cas").unwrap().as_deref(),
        Some("24")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_notify_and_http_fetch_store_examples_work_against_a_server() {
    let server = TestServer::start().await;
    let ws = Workspace::new();
    let token = format!("hook-{}", uuid::Uuid::now_v7());
    ws.write("secrets/hook-token", &token);
    let yaml = format!(
        r#"
engine: {{ secrets: {{ dir: "{secrets}" }} }}
triggers:
  - name: notify
    source: {{ type: schedule, now: true }}
    action:
      module: http-notify.wasm
      params: {{ url: "{echo}", tokenSecret: hook-token, text: "{{trigger}} saw a {{kind}}" }}
      grants: {{ http: ["{grant}"], secrets: [hook-token] }}
  - name: aggregate
    source: {{ type: schedule, every: 20ms }}
    action:
      module: http-fetch-store.wasm
      params: {{ url: "{json}", pointer: /value, window: 3 }}
      grants: {{ http: ["{grant}"] }}
"#,
        secrets = ws.path().join("secrets").display(),
        echo = server.url("/echo"),
        json = server.url("/json?value=5"),
        grant = server.grant(),
    );
    let (engine, runs) = start_engine(&ws, &yaml).await;
    let notified = runs.wait_runs("notify", 1).await.remove(0);
    let aggregated = runs.wait_runs("aggregate", 4).await;
    engine.shutdown().await;
    assert_eq!(notified.status, RunStatus::Succeeded, "{notified:#?}");
    assert_eq!(output(&notified)["status"], 200);
    let post = server
        .seen()
        .into_iter()
        .find(|s| s.path == "/echo")
        .unwrap();
    assert_eq!(post.method, "POST");
    assert!(
        post.headers
            .contains(&("authorization".into(), format!("Bearer {token}")))
    );
    assert_eq!(
        serde_json::from_str::<Value>(&post.body).unwrap(),
        json!({"text": "notify saw a tick"})
    );
    let last = output(aggregated.last().unwrap());
    assert!(last["samples"].as_u64().unwrap() >= 4, "{last}");
    assert_eq!(last["window"], json!([5.0, 5.0, 5.0]));
    assert_eq!(last["mean"], 5.0);
}

#[test]
fn grants_are_validated_by_check() {
    let out = support::check_rejects(
        "triggers:\n  - name: a\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm, grants: { files: [] } }\n  - name: b\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm, grants: { http: [\"hooks.example.com\", \"*\", \"ftp://x\"], secrets: [\"../etc\"] } }\n",
    );
    for needle in [
        "trigger `a`: field `action.grants.files`: unknown field `files`, expected one of `http`, `secrets`, `kube`",
        "trigger `b`: field `action.grants.http[1]`: invalid HTTP grant `*`",
        "trigger `b`: field `action.grants.http[2]`: invalid HTTP grant `ftp://x`: scheme `ftp` is not http or https",
        "trigger `b`: field `action.grants.secrets[0]`: invalid secret name `../etc`",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

/// Builds a directory laid out like a mounted Kubernetes Secret.
fn secret_volume(dir: &std::path::Path, values: &[(&str, &str)]) {
    let data = dir.join("..2026_11_22_10_00_00.123456789");
    std::fs::create_dir_all(&data).unwrap();
    for (name, value) in values {
        std::fs::write(data.join(name), value).unwrap();
        std::os::unix::fs::symlink(std::path::Path::new("..data").join(name), dir.join(name))
            .unwrap();
    }
    std::os::unix::fs::symlink(data.file_name().unwrap(), dir.join("..data")).unwrap();
}

#[test]
fn secrets_come_from_env_and_secret_volumes_and_never_appear_in_output() {
    let ws = Workspace::new();
    let api_token = format!("tok-{}", uuid::Uuid::now_v7());
    let db_password = format!("pw-{}", uuid::Uuid::now_v7());
    let volume = ws.path().join("secret-volume");
    secret_volume(&volume, &[("db-password", &db_password)]);
    let hostile = |mode: &str, name: &str| json!({"mode": mode, "name": name}).to_string();
    let yaml = format!(
        r#"
engine: {{ retry: {{ max: 0 }}, secrets: {{ envPrefix: WT_SECRET_ }} }}
triggers:
  - name: from-env
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {env}, grants: {{ secrets: [api-token] }} }}
  - name: from-volume
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {volume}, grants: {{ secrets: [db-password] }} }}
  - name: leaky
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {leak}, grants: {{ secrets: [db-password] }} }}
  - name: not-granted
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {env}, grants: {{ secrets: [db-password] }} }}
  - name: imported
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {{ mode: echo-params }}, imports: {{ token: api-token, password: db-password }} }}
  - name: missing
    source: {{ type: schedule, now: true }}
    action: {{ module: hostile.wasm, params: {missing}, grants: {{ secrets: [nowhere] }} }}
"#,
        env = hostile("secret", "api-token"),
        volume = hostile("secret", "db-password"),
        leak = hostile("leak-secret", "db-password"),
        missing = hostile("secret", "nowhere"),
    );
    let config = ws.write("secrets.yaml", &yaml);
    let engine = EngineProcess::start_with_env(
        &config,
        &ws.state_dir(),
        &[
            "--secrets-dir",
            &volume.display().to_string(),
            "--log-level",
            "debug",
        ],
        &[("WT_SECRET_API_TOKEN", &api_token)],
    );
    for name in [
        "from-env",
        "from-volume",
        "leaky",
        "not-granted",
        "imported",
        "missing",
    ] {
        engine.wait_runs(name, 1);
    }
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0);
    let run = |name: &str| runs_in_log(&log, name).remove(0);
    assert_eq!(
        run("from-env")["output"],
        "[redacted]",
        "read from the env provider"
    );
    assert_eq!(
        run("from-volume")["output"],
        "[redacted]",
        "read from the volume provider"
    );
    let leaky = run("leaky")["error"].as_str().unwrap().to_string();
    assert!(
        leaky.ends_with("returned an error: failing while holding [redacted]"),
        "{leaky}"
    );
    assert!(
        run("not-granted")["error"]
            .as_str()
            .unwrap()
            .contains("denied: secrets: get api-token: secret not granted")
    );
    let imported: Value =
        serde_json::from_str(run("imported")["output"].as_str().unwrap()).unwrap();
    assert_eq!(
        imported,
        json!({"mode": "echo-params", "token": "[redacted]", "password": "[redacted]"})
    );
    assert!(
        run("missing")["error"]
            .as_str()
            .unwrap()
            .contains("not found")
    );
    assert!(
        log.contains("the secret is [redacted]")
            && log.contains("stdout: [redacted]")
            && log.contains("stderr: [redacted]")
    );
    let denial = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|l| l["message"] == "capability denied")
        .expect("the denial is logged");
    assert_eq!(denial["trigger"], "not-granted");
    assert_eq!(denial["capability"], "secrets");
    assert_eq!(denial["asked"], "get api-token");
    assert!(
        denial["module"]
            .as_str()
            .unwrap()
            .starts_with("hostile.wasm@")
    );

    // Scan everything the engine wrote: its log, and every file in its state directory.
    let (_, check_out, check_err) = support::check_config(&config);
    let mut written = vec![log, check_out, check_err];
    for entry in support::walk(&ws.state_dir()) {
        written.push(String::from_utf8_lossy(&std::fs::read(entry).unwrap()).into_owned());
    }
    for text in &written {
        assert!(
            !text.contains(&api_token) && !text.contains(&db_password),
            "a secret value leaked"
        );
    }
}
