//! Builtin modules (`module: builtin:NAME`): embedded in the binary, so a
//! config runs with nothing built and no modules directory; `modules
//! --builtin` lists them with their params schema and grants; `check`
//! validates params against the schema and grants against what the params
//! make a builtin call, and warns when a file is named like a builtin;
//! kube-trigger's example configs, rewritten with builtins only, pass
//! `check`, and its quick start runs against the test API server with only
//! the RBAC `wasmtrigger rbac` prints.

use serde_json::{Value, json};

use wasmtrigger_test_apiserver::minimal_crd;

use crate::kube_watch::start_connected;
use crate::support::cluster::LeastPrivilege;
use crate::support::{self, EngineProcess, Workspace, run_cli};

fn builtins_json() -> Vec<Value> {
    let (code, out, err) = run_cli(&["modules", "--builtin", "-o", "json"], None);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn modules_builtin_lists_each_with_its_schema_and_grants() {
    let listed = builtins_json();
    let names: Vec<&str> = listed
        .iter()
        .map(|b| b["module"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "builtin:bump-revision",
            "builtin:create-job",
            "builtin:http-notify",
            "builtin:log-event",
            "builtin:patch-resource",
            "builtin:ready-replicas",
            "builtin:record-event",
        ]
    );
    for b in &listed {
        assert_eq!(b["digest"].as_str().unwrap().len(), 64, "{b}");
        assert!(b["params"]["type"] == "object", "a params schema: {b}");
        assert!(b["world"] == "action" || b["world"] == "filter");
    }
    let bump = &listed[0];
    assert_eq!(bump["params"]["required"], json!(["selector"]));
    assert!(
        bump["grants"]
            .as_str()
            .unwrap()
            .contains("`list` and `patch`"),
        "{bump}"
    );
    let (code, table, _) = run_cli(&["modules", "--builtin"], None);
    assert_eq!(code, 0);
    assert!(
        table.contains("builtin:record-event") && table.contains("reason*"),
        "{table}"
    );
}

/// `wasmtrigger run` in the workspace, as a user types it there.
const RUN_HERE: [&str; 7] = [
    "run",
    "--config",
    "triggers.yaml",
    "--state-dir",
    "state",
    "--listen",
    "127.0.0.1:0",
];

#[test]
fn a_config_of_builtins_runs_with_nothing_built() {
    // No modules directory and no .wasm file anywhere near the config.
    let ws = Workspace::new();
    ws.write(
        "triggers.yaml",
        "triggers:\n  - name: hello\n    source: { type: schedule, now: true }\n    action: { module: \"builtin:log-event\" }\n",
    );
    let engine = EngineProcess::start_in(ws.path(), &RUN_HERE);
    let runs = engine.wait_runs("hello", 1);
    assert_eq!(runs[0]["status"], "succeeded", "{}", runs[0]);
    let digest = builtins_json()
        .into_iter()
        .find(|b| b["module"] == "builtin:log-event")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        runs[0]["module"],
        format!("builtin:log-event@{}", &digest[..12]),
        "the run names the builtin's version"
    );
    assert_eq!(engine.stop(), 0);
    // Compiled once into the module cache, like a module file: a restart loads it from there.
    let again = EngineProcess::start_in(ws.path(), &RUN_HERE);
    let loaded = again.wait_for("the builtin to load", |lines| {
        lines
            .iter()
            .find(|l| {
                l["message"] == "module loaded"
                    && l["module"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("builtin:log-event@"))
            })
            .cloned()
    });
    assert_eq!(loaded["from_cache"], true, "{loaded}");
    assert_eq!(again.stop(), 0);
}

#[test]
fn check_validates_builtin_params_and_the_grants_they_need() {
    support::assert_check_errors(
        r#"
triggers:
  - name: typo
    source: { type: schedule, every: 1h }
    action: { module: builtin:record-event, params: { reason: Ready, mesage: x } }
  - name: wrong-type
    source: { type: schedule, every: 1h }
    action: { module: builtin:bump-revision, params: { selector: 3 } }
  - name: missing
    source: { type: schedule, every: 1h }
    action: { module: builtin:patch-resource, params: { patch: {} } }
  - name: both-urls
    source: { type: schedule, every: 1h }
    action: { module: builtin:http-notify, params: { url: "https://x.example", urlSecret: s } }
  - name: unknown
    source: { type: schedule, every: 1h }
    action: { module: builtin:no-such-thing }
  - name: ungranted
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: prod }
    action:
      module: builtin:bump-revision
      params: { selector: app=web, apiVersion: apps/v1, kind: StatefulSet }
      grants: { kube: [ { verbs: [list], apiVersion: apps/v1, kind: StatefulSet, namespaces: [prod] } ] }
"#,
        &[
            (
                "typo",
                &[
                    "field `action.params.mesage`",
                    "unknown field `mesage`",
                    "`message`",
                ],
            ),
            (
                "wrong-type",
                &[
                    "field `action.params.selector`",
                    "expected string, found the number 3",
                ],
            ),
            ("missing", &["field `action.params.target`", "is required"]),
            ("both-urls", &["exactly one of: `url`; `urlSecret`"]),
            (
                "unknown",
                &[
                    "field `action.module`",
                    "unknown builtin module",
                    "builtin:log-event",
                ],
            ),
            (
                "ungranted",
                &[
                    "field `action.grants.kube`",
                    "calls patch on apps/v1 StatefulSet in namespace prod",
                    "add { verbs: [patch], apiVersion: apps/v1, kind: StatefulSet, namespaces: [prod] }",
                ],
            ),
        ],
    );
}

#[test]
fn a_file_named_like_a_builtin_is_used_but_never_silently() {
    let ws = Workspace::new();
    std::fs::copy(
        support::modules().join("log-event.wasm"),
        ws.path().join("log-event.wasm"),
    )
    .unwrap();
    ws.write(
        "triggers.yaml",
        "triggers:\n  - name: t\n    source: { type: schedule, every: 1h }\n    action: { module: log-event.wasm }\n",
    );
    let config = ws.path().join("triggers.yaml").display().to_string();
    let (code, out, err) = run_cli(&["check", "--config", &config], None);
    let text = format!("{out}{err}");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("warning:")
            && text.contains("not the builtin of the same name")
            && text.contains("module: builtin:log-event"),
        "{text}"
    );
}

/// kube-trigger's documented example configs, rewritten with builtins only.
const KUBE_TRIGGER: [&str; 4] = [
    "bump-application-revision.yaml",
    "record-event.yaml",
    "cronjob.yaml",
    "image-update.yaml",
];

#[test]
fn kube_triggers_examples_rewritten_with_builtins_pass_check() {
    let readme = std::fs::read_to_string(support::repo().join("README.md")).unwrap();
    for file in KUBE_TRIGGER {
        let path = support::repo()
            .join("examples/configs/kube-trigger")
            .join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(".wasm"), "{file} uses only builtins");
        let (code, out, err) = run_cli(&["check", "--config", path.to_str().unwrap()], None);
        assert_eq!(code, 0, "{file}: {out}{err}");
        assert!(
            !format!("{out}{err}").contains("warning"),
            "{file}: {out}{err}"
        );
        assert!(
            readme.contains(&format!("examples/configs/kube-trigger/{file}")),
            "the README shows {file}"
        );
    }
}

/// kube-trigger's quick start: ConfigMap updates bump the publish version of
/// labelled KubeVela Applications; the Application kind comes from its CRD
/// and the engine holds only the RBAC `wasmtrigger rbac` prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_triggers_quick_start_runs_with_builtins_only() {
    let server = LeastPrivilege::start();
    let ws = Workspace::new();
    let admin = server.admin_kubeconfig(&ws);
    let crd = minimal_crd("core.oam.dev", "v1beta1", "Application", "applications");
    support::kubectl(
        Some(&admin),
        &["apply", "--validate=false", "-f", "-"],
        &crd,
    );
    let objects = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: this-will-trigger-update-1, namespace: default }
data: { a: "1" }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: unrelated, namespace: default }
data: { a: "1" }
---
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: { name: app-1, namespace: default, labels: { watch-this: "true" } }
spec: { components: [] }
---
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: { name: app-2, namespace: default, labels: { watch-this: "true" } }
spec: { components: [] }
---
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata: { name: not-watched, namespace: default }
spec: { components: [] }
"#;
    support::kubectl(
        Some(&admin),
        &["apply", "--validate=false", "-f", "-"],
        objects,
    );
    let config =
        support::repo().join("examples/configs/kube-trigger/bump-application-revision.yaml");
    // `wasmtrigger rbac` names the builtin's params as a reason for the rule they need.
    let (code, rbac, err) = run_cli(&["rbac", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        rbac.lines()
            .any(|l| l.contains("applications.core.oam.dev list,patch")
                && l.contains("builtin:bump-revision params")),
        "{rbac}"
    );
    let kubeconfig = server.grant(&ws, &config, &[]);
    let (engine, runs) = start_connected(&ws, &kubeconfig, &config).await;
    support::eventually("the watch to start", || {
        (server.watch_requests("configmaps") > 0).then_some(())
    })
    .await;
    let patch = ["patch", "cm", "--type=merge", "-p", r#"{"data":{"a":"2"}}"#];
    support::kubectl(
        Some(&admin),
        &[&patch[..2], &["unrelated"], &patch[2..]].concat(),
        "",
    );
    support::kubectl(
        Some(&admin),
        &[&patch[..2], &["this-will-trigger-update-1"], &patch[2..]].concat(),
        "",
    );
    let done = runs.wait_runs("bump-application-revision", 2).await;
    let statuses: Vec<_> = done.iter().map(|r| r.status).collect();
    assert!(
        statuses.contains(&wasmtrigger::runs::RunStatus::Filtered)
            && statuses.contains(&wasmtrigger::runs::RunStatus::Succeeded),
        "{done:?}"
    );
    for name in ["app-1", "app-2"] {
        let app = server
            .get("core.oam.dev", "applications", "default", name)
            .unwrap();
        assert_eq!(
            app["metadata"]["annotations"]["app.oam.dev/publishVersion"], "1",
            "{app}"
        );
        assert!(
            app["spec"].get("template").is_none(),
            "not a workload: no pod template"
        );
    }
    let other = server
        .get("core.oam.dev", "applications", "default", "not-watched")
        .unwrap();
    assert!(
        other["metadata"]["annotations"]["app.oam.dev/publishVersion"].is_null(),
        "not labelled: {other}"
    );
    engine.shutdown().await;
    server.assert_nothing_forbidden();
}
