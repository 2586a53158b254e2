//! `wasmtrigger test` and `wasmtrigger runs export`: every example module's
//! fixtures pass; fixtures that should fail do, each with the reason; and a
//! real recorded run, exported, is a fixture that passes offline without
//! reaching anything the run reached.

use serde_json::Value;

use crate::support::{self, EngineProcess, Workspace, repo, run_cli};

/// `wasmtrigger test ARGS -o json`: exit code and the report.
fn test_json(args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["test"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let (code, out, err) = run_cli(&all, None);
    let report = serde_json::from_str(&out).unwrap_or(Value::Null);
    (code, report, format!("{out}{err}"))
}

/// The failures of the fixture named `name` in a report.
fn failures_of(report: &Value, name: &str) -> Vec<String> {
    let result = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no result for {name}: {report:#}"));
    result["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_example_module_has_fixtures_and_they_pass() {
    let modules = support::language_modules().display().to_string();
    let examples = repo().join("examples");
    // Each example module's folder holds fixtures.
    let mut folders = 0;
    for group in ["actions", "filters", "python", "js", "cpp", "c"] {
        for entry in std::fs::read_dir(examples.join(group)).unwrap() {
            let dir = entry.unwrap().path();
            let fixtures = std::fs::read_dir(dir.join("fixtures"))
                .map(|d| d.count())
                .unwrap_or(0);
            assert!(fixtures > 0, "{} has no fixtures/", dir.display());
            folders += 1;
        }
    }
    assert_eq!(folders, 17, "every example module was looked at");

    let examples = examples.display().to_string();
    let (code, report, all) = test_json(&[&examples, "--modules", &modules]);
    assert_eq!(code, 0, "{all}");
    assert_eq!(report["failed"], 0, "{report:#}");
    let passed = report["passed"].as_u64().unwrap();
    assert!(passed >= 3 * folders as u64 - 10, "{passed} fixtures");
    // The table says the same in its closing line.
    let (code, out, _) = run_cli(&["test", &examples, "--modules", &modules], None);
    assert_eq!(code, 0);
    assert!(
        out.ends_with(&format!("{passed} passed, 0 failed\n")),
        "{out}"
    );
}

#[test]
fn fixtures_fail_as_they_should_each_with_its_reason() {
    let ws = Workspace::new();
    let modules = support::modules().display().to_string();
    let counter = |name: &str, extra: &str| {
        format!(
            "name: {name}\naction: {{ module: counter.wasm }}\nevent: {{ kind: post, data: {{}} }}\n{extra}\n"
        )
    };
    let canned = "calls: [ { call: kv.increment, answer: 7 } ]";
    let cases = [
        ("good", counter("good", &format!("{canned}\nexpect: {{ output: \"7\" }}"))),
        (
            "cel",
            "name: cel\nfilter: { cel: \"event.kind == 'post'\" }\nevent: { kind: post, data: {} }\nexpect: { verdict: true }\n".to_string(),
        ),
        ("output", counter("output", &format!("{canned}\nexpect: {{ output: \"8\" }}"))),
        ("unanswered", counter("unanswered", "expect: { output: \"1\" }")),
        (
            "unused",
            counter(
                "unused",
                "calls: [ { call: kv.increment, answer: 7 }, { call: kv.get, answer: x } ]\nexpect: { output: \"7\" }",
            ),
        ),
        (
            "args",
            counter(
                "args",
                "calls: [ { call: kv.increment, args: '\"other\" by 1', answer: 7 } ]\nexpect: { output: \"7\" }",
            ),
        ),
        ("no-error", counter("no-error", &format!("{canned}\nexpect: {{ error: boom }}"))),
        ("calls", counter("calls", &format!("{canned}\nexpect: {{ calls: [kv.get] }}"))),
        ("logs", counter("logs", &format!("{canned}\nexpect: {{ logs: [nope] }}"))),
        (
            "verdict",
            "name: verdict\nfilter: { module: ready-replicas.wasm }\nevent: { data: { kind: Deployment, spec: { replicas: 2 } } }\nexpect: { verdict: true }\n".to_string(),
        ),
        (
            "missing",
            "name: missing\naction: { module: nope.wasm }\nevent: { data: {} }\nexpect: { output: x }\n".to_string(),
        ),
        ("invalid", "name: invalid\naction: { module: counter.wasm }\nevent: { data: {} }\nexpct: { output: x }\n".to_string()),
    ];
    for (file, text) in &cases {
        ws.write(&format!("cases/{file}.fixture.yaml"), text);
    }
    let dir = ws.path().join("cases").display().to_string();
    let (code, report, all) = test_json(&[&dir, "--modules", &modules]);
    assert_eq!(code, 1, "{all}");
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(10)),
        "{report:#}"
    );
    let has = |name: &str, part: &str| {
        let failures = failures_of(&report, name);
        assert!(
            failures.iter().any(|f| f.contains(part)),
            "{name}: no failure containing {part:?} in {failures:#?}"
        );
    };
    assert!(failures_of(&report, "good").is_empty());
    assert!(failures_of(&report, "cel").is_empty());
    has("output", "output: expected 8");
    has(
        "unanswered",
        r#"kv.increment "runs" by 1: the fixture has no more answers"#,
    );
    has("unanswered", "unexpected error");
    has(
        "unused",
        "kv.get (any arguments): answer given, never asked for",
    );
    has("args", r#"the fixture has kv.increment "other" by 1 here"#);
    has(
        "no-error",
        r#"expected one containing "boom", but the run did not fail"#,
    );
    has("calls", "calls expected:");
    has("logs", r#"no line containing "nope""#);
    has("verdict", "verdict: expected true, got false");
    has(
        "missing",
        "action.module: module nope.wasm is neither next to the fixture",
    );
    let unreadable = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["file"]
                .as_str()
                .unwrap()
                .ends_with("invalid.fixture.yaml")
        })
        .unwrap();
    let why = unreadable["failures"][0].as_str().unwrap();
    assert!(
        why.contains("invalid.fixture.yaml") && why.contains("unknown field `expct`"),
        "{why}"
    );

    // The table: a line per fixture, the reasons under failed ones, the count last.
    let (code, out, _) = run_cli(&["test", &dir, "--modules", &modules], None);
    assert_eq!(code, 1);
    assert!(out.contains("ok    ") && out.contains("FAIL  "), "{out}");
    assert!(out.ends_with("2 passed, 10 failed\n"), "{out}");

    // Nothing to run, or no such path: bad input, exit 2.
    std::fs::create_dir_all(ws.path().join("empty")).unwrap();
    let empty = ws.path().join("empty").display().to_string();
    let (code, _, err) = run_cli(&["test", &empty], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no fixture files"), "{err}");
    let (code, _, err) = run_cli(&["test", "/no/such/fixture.json"], None);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn an_exported_run_is_a_fixture_that_passes_offline_and_reaches_nothing() {
    let ws = Workspace::new();
    let (server, kube_env) = crate::support::cluster::with_web_deployment(&ws);
    let config = ws.write(
        "export.yaml",
        &format!(
            "triggers:\n{}{}",
            crate::support::cluster::LABEL_WEB_TRIGGER,
            r#"  - name: count-ready
    source: { type: schedule, every: 24h }
    filter: { module: ready-replicas.wasm }
    action: { module: counter.wasm, params: { key: ready } }
"#
        ),
    );
    let state = ws.state_dir();
    let engine =
        EngineProcess::start_with_env(&config, &state, &[], &[("KUBECONFIG", kube_env.as_str())]);
    engine.wait_started();
    let base = engine.base_url();
    let patched = engine.fire_and_record("label-web", serde_json::json!({"go": true}));
    let counted = engine.fire_and_record(
        "count-ready",
        serde_json::json!({"kind": "Deployment", "metadata": {"name": "web"}, "status": {"readyReplicas": 1}}),
    );
    assert_eq!(patched["status"], "succeeded", "{patched}");
    assert_eq!(counted["status"], "succeeded", "{counted}");

    // Exported through the API while the engine runs.
    let mut files = Vec::new();
    for run in [&patched, &counted] {
        let id = run["runId"].as_str().unwrap();
        let (code, out, err) = run_cli(&["runs", "export", id, "--server", &base], None);
        assert_eq!(code, 0, "{err}");
        let fixture: Value = serde_json::from_str(&out).unwrap();
        assert!(fixture["expect"]["calls"].is_array(), "{fixture:#}");
        files.push(ws.write(&format!("exported/{id}.fixture.json"), &out));
    }
    let patch_fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    assert_eq!(patch_fixture["action"]["module"], "builtin:patch-resource");
    assert_eq!(patch_fixture["filter"]["cel"], "event.data.go == true");
    assert_eq!(patch_fixture["calls"][0]["call"], "kube.patch");
    let count_fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(&files[1]).unwrap()).unwrap();
    assert_eq!(count_fixture["filter"]["module"], "ready-replicas.wasm");
    assert_eq!(count_fixture["expect"]["verdict"], true);
    assert_eq!(count_fixture["expect"]["output"], "1");
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");

    // From the stopped engine's state directory: the same fixture.
    let state_arg = state.display().to_string();
    let id = counted["runId"].as_str().unwrap();
    let (code, out, err) = run_cli(
        &[
            "runs",
            "export",
            id,
            "--state-dir",
            &state_arg,
            "--server",
            "http://127.0.0.1:9",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), count_fixture);

    // Offline, they pass, and nothing reaches the API server.
    let (requests, version) = (server.requests().len(), server.resource_version());
    let modules = support::modules().display().to_string();
    let dir = ws.path().join("exported").display().to_string();
    let (code, out, err) = run_cli(&["test", &dir, "--modules", &modules], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.ends_with("2 passed, 0 failed\n"), "{out}");
    assert_eq!(
        server.requests().len(),
        requests,
        "a fixture reached the API server"
    );
    assert_eq!(server.resource_version(), version);

    // A changed answer changes the output: the fixture fails and says how.
    let mut changed = patch_fixture.clone();
    changed["calls"][0]["answer"]["metadata"]["resourceVersion"] = "999999".into();
    std::fs::write(&files[0], changed.to_string()).unwrap();
    let (code, out, _) = run_cli(&["test", &dir, "--modules", &modules], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("output: expected"), "{out}");
    assert!(out.ends_with("1 passed, 1 failed\n"), "{out}");

    // A run that was never recorded cannot be exported: named, exit 2.
    let (code, _, err) = run_cli(
        &[
            "runs",
            "export",
            "no-such-run",
            "--state-dir",
            &state_arg,
            "--server",
            "http://127.0.0.1:9",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("no run no-such-run"), "{err}");
}
