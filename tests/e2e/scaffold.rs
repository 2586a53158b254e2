//! `wasmtrigger new` for every language and kind, walked as a newcomer does:
//! the project builds with its own build script (which finds the pinned
//! Python, JavaScript, C and C++ tools by itself), the module runs on its own sample
//! event, and then the engine runs the suggested `triggers.yaml` from the
//! project directory, a webhook posts the sample body, and `wasmtrigger runs`
//! shows the run.

use std::process::Command;

use crate::support::{self, Workspace, run_cli, tools};

fn scaffold_builds_and_runs(kind: &str, lang: &str) {
    if lang != "rust" {
        support::language_modules(); // installs the pinned Python, JS, C and C++ tools
    }
    let ws = Workspace::new();
    let dir = ws.path().join("project");
    // Distinct names: the Rust projects share a target directory here.
    let name = format!("my-{kind}-{lang}");
    let (code, out, err) = run_cli(
        &[
            "new",
            kind,
            &name,
            "--lang",
            lang,
            "--dir",
            &dir.display().to_string(),
        ],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("wrote") && dir.join("README.md").exists());

    // No tools on the PATH: the build script finds the pinned ones itself.
    let _ = tools();
    let target = support::modules().parent().unwrap().join("scaffold-target");
    let build = Command::new("bash")
        .arg(dir.join("build.sh"))
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{kind}/{lang} build failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );

    let module = dir.join(format!("{name}.wasm")).display().to_string();
    let event = dir.join("event.json").display().to_string();
    let mut args = vec![
        "invoke",
        module.as_str(),
        "--file",
        event.as_str(),
        "--memory",
        "256Mi",
        "--timeout",
        "30s",
    ];
    if kind == "action" {
        args.extend(["--params", r#"{"greeting":"hello"}"#]);
    }
    let (code, out, err) = run_cli(&args, None);
    assert_eq!(code, 0, "{kind}/{lang}: {err}");
    if kind == "filter" {
        assert_eq!(out.trim(), "true", "the sample Deployment has a name");
    } else {
        let output: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(output["runs"], 1, "{out}");
        assert_eq!(output["params"]["greeting"], "hello");
        assert_eq!(output["kind"], "post");
    }
    // The fixture the project ships passes, from the project directory.
    let (code, out, err) = support::run_cli_in(&dir, &["test"], None);
    assert_eq!(code, 0, "{kind}/{lang}: {out}{err}");
    assert!(out.ends_with("1 passed, 0 failed\n"), "{out}");
    run_as_suggested(&dir, &name, kind);
}

/// Runs the project's `triggers.yaml` from its directory (a bare file name,
/// as a newcomer types it), posts `body.json` to the webhook, and finds the
/// run with `wasmtrigger runs`.
fn run_as_suggested(dir: &std::path::Path, name: &str, kind: &str) {
    if kind == "filter" {
        std::fs::copy(
            support::module("log-event.wasm"),
            dir.join("log-event.wasm"),
        )
        .unwrap();
    }
    let engine = support::EngineProcess::start_in(
        dir,
        &[
            "run",
            "--config",
            "triggers.yaml",
            "--modules",
            ".",
            "--state-dir",
            "state",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    engine.wait_started();
    let base = engine.base_url();
    let body = std::fs::read_to_string(dir.join("body.json")).unwrap();
    let response = reqwest::blocking::Client::new()
        .post(format!("{base}/hooks/{name}"))
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let run = engine.wait_runs(name, 1).remove(0);
    assert_eq!(
        run["status"], "succeeded",
        "{kind}: the suggested trigger runs: {run}"
    );
    // The record is stored just after its log line: ask until it is there.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let (code, out, err) = run_cli(&["runs", "--trigger", name, "--server", &base], None);
        assert_eq!(code, 0, "{err}");
        if out.contains(name) && out.contains("succeeded") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0);
    assert!(
        !log.contains("does not exist"),
        "a bare config name watches the working directory:\n{log}"
    );
}

#[test]
fn rust_filter() {
    scaffold_builds_and_runs("filter", "rust");
}

#[test]
fn rust_action() {
    scaffold_builds_and_runs("action", "rust");
}

#[test]
fn python_filter() {
    scaffold_builds_and_runs("filter", "python");
}

#[test]
fn python_action() {
    scaffold_builds_and_runs("action", "python");
}

#[test]
fn javascript_filter() {
    scaffold_builds_and_runs("filter", "js");
}

#[test]
fn javascript_action() {
    scaffold_builds_and_runs("action", "js");
}

#[test]
fn cpp_filter() {
    scaffold_builds_and_runs("filter", "cpp");
}

#[test]
fn cpp_action() {
    scaffold_builds_and_runs("action", "cpp");
}

#[test]
fn c_filter() {
    scaffold_builds_and_runs("filter", "c");
}

#[test]
fn c_action() {
    scaffold_builds_and_runs("action", "c");
}
