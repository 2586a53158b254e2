//! Triggers from `Trigger` objects, created with kubectl against the test API
//! server: valid ones run and get Ready status with their run counts and
//! module version; invalid ones get an Invalid condition naming the field;
//! fixing or deleting an object takes effect without a restart.

use std::path::{Path, PathBuf};

use serde_json::Value;
use wasmtrigger_test_apiserver::ApiServer;

use crate::support::cluster::LeastPrivilege;

use crate::support::{self, EngineProcess, Workspace};

fn kubectl(kubeconfig: &std::path::Path, args: &[&str], stdin: &str) -> String {
    support::kubectl(Some(kubeconfig), args, stdin)
}

fn status(server: &ApiServer, name: &str) -> Value {
    server
        .get("wasmtrigger.dev", "triggers", "default", name)
        .map(|t| t["status"].clone())
        .unwrap_or(Value::Null)
}

/// The cells of `name`'s row in `kubectl get` output, by column header
/// (columns are cut at the headers' positions, so an empty cell is "").
fn printed_row<'t>(table: &'t str, name: &str) -> std::collections::HashMap<&'t str, &'t str> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts: Vec<usize> = vec![0];
    let bytes = header.as_bytes();
    for i in 1..bytes.len() {
        // A column starts after two or more spaces.
        if bytes[i] != b' ' && i >= 2 && bytes[i - 1] == b' ' && bytes[i - 2] == b' ' {
            starts.push(i);
        }
    }
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name}: {table}"));
    let cut = |line: &'t str, i: usize| {
        let end = starts
            .get(i + 1)
            .copied()
            .unwrap_or(line.len())
            .min(line.len());
        line.get(starts[i].min(line.len())..end)
            .unwrap_or_default()
            .trim()
    };
    (0..starts.len())
        .map(|i| (cut(header, i), cut(row, i)))
        .collect()
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&Value::Null)
}

/// A least-privilege test API server serving Trigger objects (the
/// project's CRD, created as a user does), a workspace with the admin's
/// kubeconfig for set-up, and a config file with no triggers (Trigger
/// objects bring them). Engines get what `wasmtrigger rbac` grants.
fn objects_server() -> (LeastPrivilege, Workspace, PathBuf, PathBuf) {
    let server = LeastPrivilege::start();
    let crd: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(support::repo().join("deploy/crd/trigger.yaml")).unwrap(),
    )
    .unwrap();
    server
        .create("apiextensions.k8s.io", "customresourcedefinitions", "", crd)
        .expect("the Trigger CRD is accepted");
    let ws = Workspace::new();
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let config = ws.write("triggers.yaml", "triggers: []\n");
    (server, ws, config, kubeconfig)
}

/// An engine taking its triggers from Trigger objects (`--trigger-objects scope`).
fn objects_engine(
    config: &Path,
    kubeconfig: &Path,
    state: &Path,
    scope: &str,
    extra: &[&str],
) -> EngineProcess {
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--trigger-objects",
        scope,
    ];
    args.extend(extra);
    EngineProcess::start(config, state, &args)
}

/// One engine on Trigger objects in `scope`, started.
fn engine_on_objects(scope: &str) -> (LeastPrivilege, Workspace, EngineProcess) {
    let (server, ws, config, _) = objects_server();
    let kubeconfig = server.grant(&ws, &config, &["--trigger-objects", scope]);
    let engine = objects_engine(&config, &kubeconfig, &ws.state_dir(), scope, &[]);
    engine.wait_started();
    (server, ws, engine)
}

const TRIGGERS: &str = r#"
apiVersion: wasmtrigger.dev/v1alpha1
kind: Trigger
metadata: { name: heartbeat, namespace: default }
spec:
  description: ticks from a Trigger object
  source: { type: schedule, every: 200ms }
  action: { module: log-event.wasm }
---
apiVersion: wasmtrigger.dev/v1alpha1
kind: Trigger
metadata: { name: broken, namespace: default }
spec:
  source: { type: schedule, cron: "not a cron" }
  action: { module: log-event.wasm }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_objects_run_and_get_their_status_written() {
    let (server, ws, engine) = engine_on_objects("default");
    let kubeconfig = ws.path().join("kubeconfig");
    let apply = ["apply", "--server-side", "--validate=false", "-f", "-"];
    kubectl(&kubeconfig, &apply, TRIGGERS);

    let runs = engine.wait_runs("heartbeat", 2);
    assert_eq!(runs[0]["status"], "succeeded");
    let ready = support::eventually("heartbeat's status", || {
        let s = status(&server, "heartbeat");
        (s["successCount"].as_u64().unwrap_or(0) >= 2).then_some(s)
    })
    .await;
    assert_eq!(ready["state"], "Ready", "{ready}");
    assert_eq!(condition(&ready, "Ready")["status"], "True");
    assert_eq!(condition(&ready, "Invalid")["status"], "False");
    assert_eq!(ready["lastResult"], "succeeded");
    assert!(ready["lastSuccess"].is_string() && ready["lastFailure"].is_null());
    assert!(
        ready["moduleVersion"]
            .as_str()
            .unwrap()
            .starts_with("log-event.wasm@"),
        "{ready}"
    );
    assert_eq!(ready["observedGeneration"], 1);
    // What an operator sees: the CRD's printer columns with the engine's
    // values, for a trigger that succeeds and one whose action fails.
    kubectl(
        &kubeconfig,
        &apply,
        "apiVersion: wasmtrigger.dev/v1alpha1\nkind: Trigger\nmetadata: { name: failing, namespace: default }\nspec:\n  source: { type: schedule, every: 200ms }\n  action: { module: hostile.wasm, params: { mode: fail }, retry: { max: 0 } }\n",
    );
    support::eventually("failing's failures", || {
        (status(&server, "failing")["failureCount"].as_u64() >= Some(2)).then_some(())
    })
    .await;
    let table = kubectl(&kubeconfig, &["get", "triggers"], "");
    let cells = |name: &str| printed_row(&table, name);
    let heartbeat = cells("heartbeat");
    assert_eq!(heartbeat["STATE"], "Ready", "{table}");
    assert!(
        heartbeat["LAST SUCCESS"].ends_with('s'),
        "seconds ago: {table}"
    );
    assert_eq!(
        (heartbeat["LAST FAILURE"], heartbeat["FAILURES"]),
        ("", "0"),
        "{table}"
    );
    let failing = cells("failing");
    assert_eq!(failing["STATE"], "Ready", "{table}");
    assert_eq!(failing["LAST SUCCESS"], "", "{table}");
    assert!(
        failing["LAST FAILURE"].ends_with('s'),
        "seconds ago: {table}"
    );
    assert!(failing["FAILURES"].parse::<u64>().unwrap() >= 2, "{table}");
    kubectl(&kubeconfig, &["delete", "trigger", "failing"], "");

    let invalid = support::eventually("broken's status", || {
        let s = status(&server, "broken");
        (s["state"] == "Invalid").then_some(s)
    })
    .await;
    let message = condition(&invalid, "Invalid")["message"].as_str().unwrap();
    assert!(
        message.contains("Trigger default/broken") && message.contains("source.cron"),
        "names the object and the field: {message}"
    );
    assert!(engine.runs("broken").is_empty());

    // Fixing the object makes it run; deleting the other stops it.
    kubectl(
        &kubeconfig,
        &apply,
        &TRIGGERS.replace("\"not a cron\"", "\"* * * * * *\""),
    );
    support::eventually("broken to become Ready", || {
        (status(&server, "broken")["state"] == "Ready").then_some(())
    })
    .await;
    engine.wait_runs("broken", 1);
    kubectl(&kubeconfig, &["delete", "trigger", "heartbeat"], "");
    engine.wait_for("heartbeat to be removed", |lines| {
        lines
            .iter()
            .any(|l| {
                l["message"] == "Trigger objects applied"
                    && l["removed"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("heartbeat")
            })
            .then_some(())
    });
    let after = engine.runs("heartbeat").len();
    engine.wait_runs("broken", 3);
    assert!(
        engine.runs("heartbeat").len() <= after + 1,
        "heartbeat stopped (at most one run was already in flight)"
    );
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0);
    let engine_runs: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "run finished" && l["trigger"] == "broken")
        .collect();
    // The status counts every run the engine logged (one may have ended after
    // the final write at shutdown).
    let succeeded = engine_runs
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .count() as u64;
    let counted = status(&server, "broken")["successCount"].as_u64().unwrap();
    assert!(
        counted <= succeeded && counted + 1 >= succeeded,
        "status counts {counted}, the engine logged {succeeded}"
    );
    server.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_wide_trigger_objects_are_named_by_namespace() {
    let (server, ws, engine) = engine_on_objects("*");
    let kubeconfig = ws.path().join("kubeconfig");
    server
        .create(
            "",
            "namespaces",
            "",
            serde_json::json!({"metadata": {"name": "team-a"}}),
        )
        .unwrap();
    // The same object name in two namespaces: two triggers.
    let objects = ["default", "team-a"]
        .map(|ns| {
            format!(
                "apiVersion: wasmtrigger.dev/v1alpha1\nkind: Trigger\nmetadata: {{ name: tick, namespace: {ns} }}\nspec:\n  source: {{ type: schedule, every: 200ms }}\n  action: {{ module: log-event.wasm }}\n"
            )
        })
        .join("---\n");
    kubectl(
        &kubeconfig,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        &objects,
    );
    engine.wait_runs("default.tick", 1);
    engine.wait_runs("team-a.tick", 1);
    for ns in ["default", "team-a"] {
        support::eventually("the status", || {
            server
                .get("wasmtrigger.dev", "triggers", ns, "tick")
                .filter(|t| t["status"]["state"] == "Ready")
                .map(|_| ())
        })
        .await;
    }
    assert_eq!(engine.stop(), 0);
    server.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_goes_on_counting_where_the_old_one_stopped() {
    let (server, ws, config, kubeconfig) = objects_server();
    let engine_kubeconfig = server.grant(
        &ws,
        &config,
        &["--trigger-objects", "default", "--leader-election"],
    );
    let replica = |n: usize| {
        let state = ws.path().join(format!("state-{n}"));
        let lease = support::FAST_LEADER_ELECTION;
        objects_engine(&config, &engine_kubeconfig, &state, "default", &lease)
    };
    let mut replicas = [Some(replica(0)), Some(replica(1))];
    kubectl(
        &kubeconfig,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        TRIGGERS.split("---").next().unwrap(),
    );
    let count = || {
        status(&server, "heartbeat")["successCount"]
            .as_u64()
            .unwrap_or(0)
    };
    support::eventually("five counted runs", || (count() >= 5).then_some(())).await;
    let leader = support::eventually("the leader", || {
        replicas.iter().position(|r| {
            r.as_ref()
                .unwrap()
                .lines()
                .iter()
                .any(|l| l["message"] == "became the leader")
        })
    })
    .await;
    replicas[leader].take().unwrap().stop();
    let before = count();
    // The follower took the leader's status as it was written; once it leads,
    // its counts go on from there and never fall back.
    support::eventually("the new leader to count on", || {
        let now = count();
        assert!(now >= before, "the count fell from {before} to {now}");
        (now >= before + 3).then_some(())
    })
    .await;
    replicas[1 - leader].take().unwrap().stop();
    server.assert_nothing_forbidden();
}

/// Trigger objects are trusted less than files: each gets only what the
/// file config's `engine.triggerObjects` policy lists, and an object asking
/// for more is Invalid with a message naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_get_only_what_the_operator_policy_allows() {
    let (server, ws, _, kubeconfig) = objects_server();
    let config = ws.write(
        "policy.yaml",
        r#"
engine:
  secrets: { dir: secrets }
  triggerObjects:
    grants:
      secrets: [shared-token]
      kube: [ { verbs: [get], apiVersion: v1, kind: ConfigMap, namespaces: [default] } ]
triggers:
  - name: file-hook
    source: { type: webhook, auth: { hmac: { secret: file-hook-key } } }
    action: { module: log-event.wasm }
"#,
    );
    ws.write("secrets/file-hook-key", "the-file-hook-hmac-key\n");
    ws.write("secrets/shared-token", "the-shared-token-value\n");
    let secrets = ws.path().join("secrets");
    let engine_kubeconfig = server.grant(&ws, &config, &["--trigger-objects", "default"]);
    let engine = objects_engine(
        &config,
        &engine_kubeconfig,
        &ws.state_dir(),
        "default",
        &["--secrets-dir", secrets.to_str().unwrap()],
    );
    engine.wait_started();
    let object = |name: &str, spec: &str| {
        format!(
            "apiVersion: wasmtrigger.dev/v1alpha1\nkind: Trigger\nmetadata: {{ name: {name}, namespace: default }}\nspec: {spec}\n---\n"
        )
    };
    let schedule = "source: { type: schedule, every: 1h }";
    let deep_cel = format!("{}true{}", "(".repeat(1000), ")".repeat(1000));
    let cases: [(&str, String, &str); 8] = [
        ("deep-cel", format!("{{ {schedule}, filter: {{ cel: '{deep_cel}' }}, action: {{ module: log-event.wasm }} }}"), "nest more than"),
        ("wants-kube", format!("{{ {schedule}, action: {{ module: hostile.wasm, grants: {{ kube: [ {{ verbs: [get], apiVersion: v1, kind: Secret, namespaces: ['*'] }} ] }} }} }}"), "engine.triggerObjects.grants.kube"),
        ("wants-http", format!("{{ {schedule}, action: {{ module: hostile.wasm, grants: {{ http: ['http://127.0.0.1:7070'] }} }} }}"), "engine.triggerObjects.grants.http"),
        ("wants-secret", format!("{{ {schedule}, action: {{ module: hostile.wasm, grants: {{ secrets: [file-hook-key] }} }} }}"), "engine.triggerObjects.grants.secrets"),
        ("steals-hook-key", "{ source: { type: webhook, auth: { hmac: { secret: file-hook-key } } }, action: { module: log-event.wasm } }".into(), "engine.triggerObjects.grants.secrets"),
        ("wants-watch", "{ source: { type: kube-watch, apiVersion: v1, kind: Secret }, action: { module: log-event.wasm } }".into(), "engine.triggerObjects.sources"),
        ("escapes-modules", format!("{{ {schedule}, action: {{ module: ../../../../etc/passwd }} }}"), "no absolute path, no `..`"),
        ("allowed", format!("{{ {schedule}, action: {{ module: hostile.wasm, grants: {{ secrets: [shared-token], kube: [ {{ verbs: [get], apiVersion: v1, kind: ConfigMap, namespaces: [default] }} ] }} }} }}"), ""),
    ];
    let manifest: String = cases
        .iter()
        .map(|(name, spec, _)| object(name, spec))
        .collect();
    kubectl(
        &kubeconfig,
        &["apply", "--server-side", "--validate=false", "-f", "-"],
        &manifest,
    );
    for (name, _, rule) in &cases {
        let s = support::eventually(&format!("{name}'s status"), || {
            let s = status(&server, name);
            s["state"].is_string().then_some(s)
        })
        .await;
        if rule.is_empty() {
            assert_eq!(s["state"], "Ready", "{name}: {s}");
        } else {
            assert_eq!(s["state"], "Invalid", "{name}: {s}");
            let message = condition(&s, "Invalid")["message"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            assert!(
                message.contains(rule),
                "{name}: expected {rule:?} in {message}"
            );
            assert!(!message.contains("root:"), "{name}: {message}");
        }
    }
    drop(engine);
    server.assert_nothing_forbidden();
}
