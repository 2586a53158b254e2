//! The offline CLI commands on real modules: invoke, modules, check.

use crate::support::{self, Workspace, run_cli};

fn module(name: &str) -> String {
    support::module(name).display().to_string()
}

#[test]
fn invoke_prints_a_filters_verdict() {
    let event = support::repo().join("examples/events/deployment-ready.json");
    let (code, out, err) = run_cli(
        &[
            "invoke",
            &module("ready-replicas.wasm"),
            "--file",
            &event.display().to_string(),
        ],
        None,
    );
    assert_eq!((code, out.trim()), (0, "true"), "stderr: {err}");

    let progressing = r#"{"kind":"Deployment","spec":{"replicas":2},"status":{"readyReplicas":1}}"#;
    let (code, out, _) = run_cli(
        &["invoke", &module("ready-replicas.wasm"), "--file", "-"],
        Some(progressing),
    );
    assert_eq!((code, out.trim()), (0, "false"));
}

#[test]
fn invoke_runs_an_action_with_a_full_event_record_and_params() {
    let ws = Workspace::new();
    let event = ws.write(
        "event.json",
        r#"{"id":"evt-1","trigger":"t1","source":"schedule","kind":"tick","time":"2026-11-22T10:00:00Z","data":{"n":7}}"#,
    );
    let (code, out, err) = run_cli(
        &[
            "invoke",
            &module("log-event.wasm"),
            "--file",
            &event.display().to_string(),
        ],
        None,
    );
    assert_eq!(code, 0, "stderr: {err}");
    let output: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(output["id"], "evt-1");
    assert_eq!(output["data"]["n"], 7);
    assert!(
        err.contains("event evt-1 for t1"),
        "guest log goes to stderr: {err}"
    );

    let (code, out, _) = run_cli(
        &[
            "invoke",
            &module("hostile.wasm"),
            "--file",
            "-",
            "--params",
            r#"{"mode":"echo-params","x":[1,2]}"#,
        ],
        Some("{}"),
    );
    assert_eq!(code, 0);
    assert_eq!(out.trim(), r#"{"mode":"echo-params","x":[1,2]}"#);
}

#[test]
fn invoke_exits_1_when_the_guest_fails_or_traps() {
    let (code, out, err) = run_cli(
        &[
            "invoke",
            &module("hostile.wasm"),
            "--file",
            "-",
            "--params",
            r#"{"mode":"fail"}"#,
        ],
        Some("{}"),
    );
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains("guest-error") && err.contains("failing on purpose"),
        "{err}"
    );

    let (code, _, err) = run_cli(
        &[
            "invoke",
            &module("hostile.wasm"),
            "--file",
            "-",
            "--params",
            r#"{"mode":"panic"}"#,
        ],
        Some("{}"),
    );
    assert_eq!(code, 1);
    // The author's own words lead: where it panicked and why, then the trap.
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    let panic_at = line.find("panicked at hostile/src/lib.rs:").expect(line);
    let message_at = line.find("hostile guest panics on purpose").expect(line);
    let trap_at = line.find("wasm trap").expect(line);
    assert!(panic_at < message_at && message_at < trap_at, "{line}");
    assert!(!line.contains("RUST_BACKTRACE"), "{line}");
}

#[test]
fn invoke_of_a_file_that_is_not_wasm_says_so_plainly() {
    let ws = Workspace::new();
    let path = ws.write("notes.wasm", "this is a text file, not a module\n");
    let (code, out, err) = run_cli(
        &["invoke", &path.display().to_string(), "--file", "-"],
        Some("{}"),
    );
    assert_eq!(code, 2, "bad input, not a guest failure: {err}");
    assert!(out.is_empty());
    assert!(err.contains("notes.wasm"), "names the file: {err}");
    assert!(
        err.contains("not a WebAssembly"),
        "says what is wrong: {err}"
    );
    assert!(!err.contains("[0x"), "no raw byte offsets: {err}");

    // A missing event file is bad input too, and is named.
    let (code, _, err) = run_cli(
        &[
            "invoke",
            &module("counter.wasm"),
            "--file",
            "/nonexistent/event.json",
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/event.json"), "{err}");
}

#[test]
fn invoke_keeps_kv_state_in_a_state_dir() {
    let ws = Workspace::new();
    let state = ws.state_dir().display().to_string();
    for expected in ["1", "2"] {
        let (code, out, err) = run_cli(
            &[
                "invoke",
                &module("counter.wasm"),
                "--file",
                "-",
                "--state-dir",
                &state,
            ],
            Some("{}"),
        );
        assert_eq!((code, out.trim()), (0, expected), "stderr: {err}");
    }
}

#[test]
fn modules_lists_versions_worlds_and_imports() {
    let (code, out, err) = run_cli(
        &["modules", &support::modules().display().to_string()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{out}"))
            .to_string()
    };
    assert!(line("ready-replicas.wasm").contains(" filter "), "{out}");
    assert!(
        line("counter.wasm").contains(" action ") && line("counter.wasm").contains("kv@0.1.0"),
        "{out}"
    );

    let (_, json, _) = run_cli(
        &[
            "modules",
            &support::modules().display().to_string(),
            "-o",
            "json",
        ],
        None,
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    let counter = rows.iter().find(|r| r["module"] == "counter.wasm").unwrap();
    assert_eq!(counter["version"].as_str().unwrap().len(), 12);
    assert_eq!(
        counter["digest"].as_str().unwrap()[..12],
        counter["version"].as_str().unwrap()[..]
    );
}

#[test]
fn check_accepts_every_example_config() {
    let dir = support::repo().join("examples/configs");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let (code, out, err) = support::check_config(&path);
        assert_eq!(code, 0, "{}: {out}{err}", path.display());
    }
}

#[test]
fn check_accepts_the_quickstart() {
    let config = support::repo().join("examples/configs/quickstart.yaml");
    let (code, out, err) = support::check_config(&config);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("ok: 3 trigger(s), 2 module(s)"), "{out}");
}
