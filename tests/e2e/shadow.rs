//! `shadow: {module, sample}`: a candidate action runs after the primary on
//! live events with side effects suppressed and is compared with it — a
//! shadowed Kubernetes patch changes nothing while the primary patches, a
//! candidate's POST never leaves, and the match/diff counts are exact in the
//! API, the metrics and `wasmtrigger shadow`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::http_server::TestServer;
use crate::support::{self, EngineProcess, Workspace, run_cli};

fn fire(engine: &EngineProcess, trigger: &str, times: usize) {
    for _ in 0..times {
        engine.fire(trigger, None);
    }
}

/// Waits until `trigger` has `n` shadow comparisons and returns its view.
fn shadowed(engine: &EngineProcess, trigger: &str, n: u64) -> Value {
    let deadline = Instant::now() + support::DEADLINE;
    loop {
        let view: Value = serde_json::from_str(&support::http_get(&format!(
            "{}/api/v1/triggers/{trigger}/shadow",
            engine.base_url()
        )))
        .unwrap();
        let total = ["matched", "differed", "errors"]
            .iter()
            .map(|k| view[k].as_u64().unwrap())
            .sum::<u64>();
        if total >= n {
            return view;
        }
        assert!(Instant::now() < deadline, "{view:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `[matched, differed, errors]` of a shadow view.
fn counts(view: &Value) -> [u64; 3] {
    ["matched", "differed", "errors"].map(|k| view[k].as_u64().unwrap_or(u64::MAX))
}

/// A modules directory with the test modules and a copy of `hostile.wasm` as `candidate.wasm`.
fn modules(ws: &Workspace, candidate: &str) -> String {
    let dir = ws.path().join("modules");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["hostile.wasm", "log-event.wasm"] {
        std::fs::copy(support::module(name), dir.join(name)).unwrap();
    }
    std::fs::copy(support::module(candidate), dir.join("candidate.wasm")).unwrap();
    dir.display().to_string()
}

#[test]
fn match_and_diff_counts_are_exact_and_a_candidates_post_never_leaves() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hooks = rt.block_on(TestServer::start());
    let ws = Workspace::new();
    let modules = modules(&ws, "hostile.wasm");
    let config = ws.write(
        "shadow.yaml",
        &format!(
            r#"
triggers:
  - name: same
    source: {{ type: schedule, every: 24h }}
    action: {{ module: hostile.wasm, params: {{ mode: echo-params }} }}
    shadow: {{ module: candidate.wasm }}
  - name: post
    source: {{ type: schedule, every: 24h }}
    action:
      module: hostile.wasm
      params: {{ mode: http, request: {{ method: POST, url: "{url}", body: "hi" }} }}
      grants: {{ http: ["{grant}"] }}
    shadow: {{ module: candidate.wasm, sample: 1.0 }}
  - name: never
    source: {{ type: schedule, every: 24h }}
    action: {{ module: hostile.wasm, params: {{ mode: ok }} }}
    shadow: {{ module: log-event.wasm, sample: 0.0 }}
"#,
            url = hooks.url("/echo"),
            grant = hooks.grant()
        ),
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &["--modules", &modules]);
    engine.wait_started();
    fire(&engine, "same", 4);
    fire(&engine, "post", 3);
    fire(&engine, "never", 2);
    let same = shadowed(&engine, "same", 4);
    assert_eq!(counts(&same), [4, 0, 0], "{same:#}");
    let post = shadowed(&engine, "post", 3);
    assert_eq!(counts(&post), [0, 3, 0], "{post:#}");
    let diff = &post["latest"][0];
    assert_eq!(
        diff["calls"]["same"], true,
        "the candidate tried the same POST: {diff:#}"
    );
    assert_eq!(
        diff["output"]["same"], false,
        "it got the dry-run answer: {diff:#}"
    );
    assert!(
        diff["output"]["replayed"].as_str().unwrap().contains("202"),
        "{diff:#}"
    );
    engine.wait_runs("never", 2);
    let never = shadowed(&engine, "never", 0);
    assert_eq!(counts(&never), [0, 0, 0]);
    // Only the primaries' POSTs reached the server.
    assert_eq!(hooks.seen().len(), 3);

    let metrics = support::http_get(&format!("{}/metrics", engine.base_url()));
    for line in [
        r#"wasmtrigger_shadow_runs_total{trigger="same",outcome="match"} 4"#,
        r#"wasmtrigger_shadow_runs_total{trigger="post",outcome="diff"} 3"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
    let (code, out, err) = run_cli(&["shadow", "post", "--server", &engine.base_url()], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("match 0  diff 3  error 0") && out.contains("diff run"),
        "{out}"
    );
    let (code, _, err) = run_cli(&["shadow", "nope", "--server", &engine.base_url()], None);
    assert_eq!(code, 2, "{err}");
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn a_shadowed_patch_candidate_leaves_objects_untouched_while_the_primary_patches() {
    let ws = Workspace::new();
    let modules = modules(&ws, "patch-resource.wasm");
    let (server, kube_env) = crate::support::cluster::with_web_deployment(&ws);
    let config = ws.write(
        "patch.yaml",
        r#"
triggers:
  - name: label-web
    source: { type: schedule, every: 24h }
    action:
      module: builtin:patch-resource
      params:
        target: { apiVersion: apps/v1, kind: Deployment, namespace: default, name: web }
        patch: { metadata: { labels: { by: "{event.id}" } } }
      grants: { kube: [ { verbs: [patch], apiVersion: apps/v1, kind: Deployment, namespaces: [default] } ] }
    shadow: { module: candidate.wasm }
"#,
    );
    let engine = EngineProcess::start_with_env(
        &config,
        &ws.state_dir(),
        &["--modules", &modules],
        &[("KUBECONFIG", kube_env.as_str())],
    );
    engine.wait_started();
    let before = server.resource_version();
    fire(&engine, "label-web", 3);
    let runs = engine.wait_runs("label-web", 3);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"), "{runs:#?}");
    let view = shadowed(&engine, "label-web", 3);
    assert_eq!(view["errors"], 0, "{view:#}");
    // Three real patches, three dry-run ones that changed nothing.
    assert_eq!(
        server.resource_version(),
        before + 3,
        "only the primaries stored anything"
    );
    let patches: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH "))
        .collect();
    assert_eq!(patches.len(), 6, "{patches:#?}");
    assert_eq!(
        patches.iter().filter(|r| r.contains("dryRun=All")).count(),
        3
    );
    let web = server.get("apps", "deployments", "default", "web").unwrap();
    let last = runs.last().unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_string();
    let labelled = web["metadata"]["labels"]["by"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        runs.iter().any(|r| r["event_id"] == labelled.as_str()),
        "the label is a primary's event id: {labelled} (last {last})"
    );
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
}
