//! Per-key ordering through the real binary and the real runtime: events of
//! one key run one at a time in the order they were accepted while other
//! keys use every worker; a retried failure holds only its own key; a kill -9
//! and restart keep each key's order for the replayed events; kube-watch
//! events are ordered by object without configuration. Times come from the
//! stored run records.

use std::collections::HashMap;

use serde_json::{Value, json};
use wasmtrigger_test_apiserver::ApiServer;

use crate::support::{self, EngineProcess, Workspace};

/// The webhook's body a run worked on (the `work` action returns the event data).
fn body(run: &Value) -> Value {
    let data: Value = serde_json::from_str(run["output"].as_str().unwrap_or("null")).unwrap();
    data["body"].clone()
}

/// Milliseconds since the epoch of an RFC 3339 time.
fn ms(time: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Runs grouped by `field` of their body, each group in start order.
fn by_key(runs: &[Value], field: &str) -> HashMap<String, Vec<Value>> {
    let mut groups: HashMap<String, Vec<Value>> = HashMap::new();
    for run in runs {
        let key = body(run)[field].to_string();
        groups.entry(key).or_default().push(run.clone());
    }
    for runs in groups.values_mut() {
        runs.sort_by_key(|r| ms(&r["startedAt"]));
    }
    groups
}

/// Asserts each group's runs never overlap and started in `seq` order.
fn assert_one_at_a_time_in_order(groups: &HashMap<String, Vec<Value>>) {
    for (key, runs) in groups {
        for pair in runs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(
                ms(&a["finishedAt"]) <= ms(&b["startedAt"]),
                "key {key}: a run started before the previous one finished:\n{a}\n{b}"
            );
            assert!(
                body(a)["seq"].as_u64() < body(b)["seq"].as_u64(),
                "key {key}: out of accepted order:\n{a}\n{b}"
            );
        }
    }
}

/// The most runs that were running at one moment.
fn peak_concurrency(runs: &[Value]) -> usize {
    let mut edges: Vec<(i64, i32)> = Vec::new();
    for run in runs {
        edges.push((ms(&run["startedAt"]), 1));
        edges.push((ms(&run["finishedAt"]), -1));
    }
    // At the same millisecond an end comes before a start: touching is not overlapping.
    edges.sort();
    let (mut now, mut peak) = (0i32, 0i32);
    for (_, step) in edges {
        now += step;
        peak = peak.max(now);
    }
    peak as usize
}

fn post(http: &reqwest::blocking::Client, url: &str, body: &Value) {
    let response = http.post(url).body(body.to_string()).send().unwrap();
    assert_eq!(response.status(), 202, "{body}");
}

fn wait_stored(engine: &EngineProcess, trigger: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let runs = engine.stored_runs(trigger);
        if runs.len() >= n {
            return runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} stored runs of {trigger}: {} so far",
            runs.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

const ORDERED: &str = r#"
engine: { workers: 4, queueSize: 2000, retry: { max: 0 }, history: { maxPerTrigger: 100000 } }
triggers:
  - name: ordered
    source: { type: webhook, auth: none }
    ordering: { key: event.data.body.object }
    action: { module: hostile.wasm, params: { mode: work } }
"#;

#[test]
fn a_keys_runs_are_one_at_a_time_in_accepted_order_and_every_worker_is_used() {
    let ws = Workspace::new();
    let config = ws.write("ordered.yaml", ORDERED);
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_started();
    let url = format!("{}/hooks/ordered", engine.base_url());
    let http = reqwest::blocking::Client::new();
    let mut rng = fastrand::Rng::with_seed(25);
    for seq in 0..1000u64 {
        let object = format!("object-{}", rng.u32(0..50));
        post(
            &http,
            &url,
            &json!({"object": object, "seq": seq, "ms": rng.u64(1..=20)}),
        );
    }
    let runs = wait_stored(&engine, "ordered", 1000);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));
    let groups = by_key(&runs, "object");
    assert_eq!(groups.len(), 50);
    assert_one_at_a_time_in_order(&groups);
    let peak = peak_concurrency(&runs);
    assert_eq!(peak, 4, "the four workers ran different keys at once");
    engine.stop();
}

#[test]
fn a_retried_failure_holds_its_key_and_nothing_else() {
    let ws = Workspace::new();
    let config = ws.write(
        "retry.yaml",
        &ORDERED.replace(
            "retry: { max: 0 }",
            "retry: { max: 2, delay: 300ms, maxDelay: 300ms }",
        ),
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_started();
    let url = format!("{}/hooks/ordered", engine.base_url());
    let http = reqwest::blocking::Client::new();
    post(
        &http,
        &url,
        &json!({"object": "a", "seq": 1, "failures": 2}),
    );
    post(&http, &url, &json!({"object": "a", "seq": 2}));
    post(&http, &url, &json!({"object": "b", "seq": 3}));
    let runs = wait_stored(&engine, "ordered", 3);
    let find = |seq: u64| {
        runs.iter()
            .find(|r| body(r)["seq"] == seq)
            .unwrap_or_else(|| panic!("no run of {seq}: {runs:?}"))
            .clone()
    };
    let (a1, a2, b) = (find(1), find(2), find(3));
    assert_eq!(a1["status"], "succeeded");
    assert_eq!(a1["attempts"].as_array().unwrap().len(), 3, "{a1}");
    assert!(
        ms(&a2["startedAt"]) >= ms(&a1["finishedAt"]),
        "a's next event waited for the retried one:\n{a1}\n{a2}"
    );
    assert!(
        ms(&b["finishedAt"]) < ms(&a1["finishedAt"]) - 300,
        "b did not wait for a's retries:\n{a1}\n{b}"
    );
    engine.stop();
}

#[test]
fn replayed_events_keep_their_keys_order_across_a_kill() {
    let ws = Workspace::new();
    let config = ws.write("ordered.yaml", ORDERED);
    let state = ws.state_dir();
    let engine = EngineProcess::start(&config, &state, &[]);
    engine.wait_started();
    let url = format!("{}/hooks/ordered", engine.base_url());
    let http = reqwest::blocking::Client::new();
    // Two keys, 30 ms each: 60 events queue up behind them.
    for seq in 0..60u64 {
        let object = ["a", "b"][seq as usize % 2];
        post(
            &http,
            &url,
            &json!({"object": object, "seq": seq, "ms": 30}),
        );
    }
    wait_stored(&engine, "ordered", 6);
    engine.kill();

    let engine = EngineProcess::start(&config, &state, &[]);
    engine.wait_started();
    let url = format!("{}/hooks/ordered", engine.base_url());
    // New events of the same keys go after the replayed ones.
    for seq in 60..70u64 {
        let object = ["a", "b"][seq as usize % 2];
        post(&http, &url, &json!({"object": object, "seq": seq, "ms": 5}));
    }
    let runs = wait_stored(&engine, "ordered", 70);
    assert_eq!(runs.len(), 70, "one record per event");
    assert!(
        runs.iter().any(|r| r["replayed"] == true),
        "the kill left events to replay"
    );
    assert_one_at_a_time_in_order(&by_key(&runs, "object"));
    engine.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_watch_events_are_ordered_by_object_without_configuration() {
    let server = ApiServer::start(&[]);
    let ws = Workspace::new();
    let (engine, runs) = crate::kube_watch::start(
        &ws,
        &server,
        r#"
engine: { workers: 4 }
triggers:
  - name: per-object
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [update] }
    action: { module: hostile.wasm, params: { mode: work } }
"#,
    )
    .await;
    support::eventually("the watch to start", || {
        (server.watch_requests("configmaps") > 0).then_some(())
    })
    .await;
    for name in ["x", "y"] {
        server
            .create(
                "",
                "configmaps",
                "default",
                json!({"metadata": {"name": name}, "data": {"n": "0", "ms": "15"}}),
            )
            .unwrap();
    }
    // Twenty quick updates to each object; each run takes 15 ms.
    for n in 1..=20 {
        for name in ["x", "y"] {
            server
                .merge_patch(
                    "",
                    "configmaps",
                    "default",
                    name,
                    &json!({"data": {"n": n.to_string()}}),
                )
                .unwrap();
        }
    }
    let done = runs.wait_runs("per-object", 40).await;
    let mut per_object: HashMap<String, Vec<(i64, i64, u64)>> = HashMap::new();
    for run in &done {
        // The `work` action returns the event's data: the change.
        let change = crate::kube_watch::event_of(run);
        let object = &change["object"];
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()
        };
        per_object
            .entry(object["metadata"]["name"].as_str().unwrap().to_string())
            .or_default()
            .push((
                at(&run.started_at),
                at(&run.finished_at),
                object["data"]["n"].as_str().unwrap().parse().unwrap(),
            ));
    }
    for (name, mut runs) in per_object {
        runs.sort();
        for pair in runs.windows(2) {
            assert!(pair[0].1 <= pair[1].0, "{name}: overlapping runs {pair:?}");
            assert!(pair[0].2 < pair[1].2, "{name}: out of order {pair:?}");
        }
    }
    engine.shutdown().await;
}
