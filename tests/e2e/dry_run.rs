//! `dryRun: true` triggers: the action runs on every event with its side
//! effects suppressed — Kubernetes writes go out as server-side dry runs and
//! change nothing, HTTP other than GET/HEAD is not sent, kv writes are thrown
//! away with the run — and every record says it was a dry run.

use serde_json::Value;

use crate::support::http_server::TestServer;
use crate::support::{self, EngineProcess, Workspace};

#[test]
fn a_dry_run_trigger_changes_nothing_and_says_so() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hooks = rt.block_on(TestServer::start());
    let ws = Workspace::new();
    let (server, kube_env) = crate::support::cluster::with_web_deployment(&ws);
    let config = ws.write(
        "staged.yaml",
        &format!(
            r#"
triggers:
  - name: stage-patch
    dryRun: true
    source: {{ type: schedule, every: 24h }}
    action:
      module: builtin:patch-resource
      params:
        target: {{ apiVersion: apps/v1, kind: Deployment, namespace: default, name: web }}
        patch: {{ metadata: {{ labels: {{ staged: "yes" }} }} }}
      grants: {{ kube: [ {{ verbs: [patch], apiVersion: apps/v1, kind: Deployment, namespaces: [default] }} ] }}
  - name: stage-post
    dryRun: true
    source: {{ type: schedule, every: 24h }}
    action:
      module: hostile.wasm
      params: {{ mode: http, request: {{ method: POST, url: "{post}", body: "hello" }} }}
      grants: {{ http: ["{grant}"] }}
  - name: stage-get
    dryRun: true
    source: {{ type: schedule, every: 24h }}
    action:
      module: hostile.wasm
      params: {{ mode: http, request: {{ method: GET, url: "{get}" }} }}
      grants: {{ http: ["{grant}"] }}
  - name: stage-count
    dryRun: true
    source: {{ type: schedule, every: 24h }}
    action: {{ module: hostile.wasm, params: {{ mode: cas-increment, key: count }} }}
"#,
            post = hooks.url("/echo"),
            get = hooks.url("/json?value=1"),
            grant = hooks.grant()
        ),
    );
    let engine = EngineProcess::start_with_env(
        &config,
        &ws.state_dir(),
        &[],
        &[("KUBECONFIG", kube_env.as_str())],
    );
    engine.wait_started();
    let version = server.resource_version();
    for trigger in [
        "stage-patch",
        "stage-post",
        "stage-get",
        "stage-count",
        "stage-count",
    ] {
        engine.fire(trigger, None);
    }
    for (trigger, n) in [
        ("stage-patch", 1),
        ("stage-post", 1),
        ("stage-get", 1),
        ("stage-count", 2),
    ] {
        let runs = engine.wait_runs(trigger, n);
        assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    }

    // Kubernetes: the patch was sent as a dry run, validated and answered; nothing changed.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.starts_with("PATCH ") && r.contains("dryRun=All")),
        "{:#?}",
        server.requests()
    );
    let web = server.get("apps", "deployments", "default", "web").unwrap();
    assert!(web["metadata"]["labels"].is_null(), "{web}");
    assert_eq!(server.resource_version(), version, "nothing stored");
    // HTTP: the POST never left, the GET did.
    let seen: Vec<String> = hooks.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(seen, vec!["/json".to_string()], "{seen:?}");
    let post = &engine.runs("stage-post")[0];
    let output: Value = serde_json::from_str(post["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["status"], 202);
    assert_eq!(output["headers"]["x-wasmtrigger-dry-run"], "true");
    // kv: each run starts from the real (empty) state again.
    let counts: Vec<String> = engine
        .runs("stage-count")
        .iter()
        .map(|r| r["output"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        counts,
        vec!["1", "1"],
        "a dry run's kv writes are thrown away"
    );
    // Every record says it was a dry run.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let stored = engine.stored_runs("stage-patch");
        if let Some(record) = stored.first() {
            assert_eq!(record["dryRun"], true, "{record}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no stored record");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn dry_run_must_be_a_boolean() {
    let ws = Workspace::new();
    let config = ws.write(
        "bad.yaml",
        "triggers:\n  - name: t\n    dryRun: maybe\n    source: { type: schedule, every: 1h }\n    action: { module: log-event.wasm }\n",
    );
    let modules = support::modules().display().to_string();
    let (code, out, err) = support::run_cli(
        &[
            "check",
            "--config",
            &config.display().to_string(),
            "--modules",
            &modules,
        ],
        None,
    );
    assert_ne!(code, 0);
    let said = out + &err;
    assert!(
        said.contains(
            "trigger `t`: field `dryRun`: invalid type: string \"maybe\", expected true or false"
        ),
        "{said}"
    );
}
