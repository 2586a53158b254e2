//! What a newcomer meets in the first hour, through the real binary: the
//! compiled-module cache behind `invoke`, the errors they read first, and
//! the command line's conventions.

use std::process::Command;

use serde_json::Value;

use crate::support::{self, Workspace};

/// Runs the binary with extra environment variables; (code, stdout, stderr).
fn cli_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(support::binary())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run wasmtrigger");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `invoke` keeps compiled modules in the user's cache directory: the first
/// call compiles, the next one of the same module loads it; `--no-cache`
/// compiles every time and stores nothing.
#[test]
fn invoke_reuses_compiled_modules() {
    let ws = Workspace::new();
    let cache_home = ws.path().join("xdg-cache");
    let module = support::module("ready-replicas.wasm");
    let event = support::repo().join("examples/events/deployment-ready.json");
    let loaded = |extra: &[&str]| -> bool {
        let mut args = vec![
            "--log-format",
            "json",
            "--log-level",
            "warn,wasmtrigger::runtime=debug",
            "invoke",
            module.to_str().unwrap(),
            "--file",
            event.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let (code, out, err) =
            cli_with_env(&args, &[("XDG_CACHE_HOME", cache_home.to_str().unwrap())]);
        assert_eq!((code, out.trim()), (0, "true"), "{err}");
        let line = err
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "module loaded")
            .unwrap_or_else(|| panic!("no load line in {err}"));
        line["from_cache"].as_bool().unwrap()
    };
    assert!(!loaded(&[]), "the first invoke compiles");
    assert!(loaded(&[]), "the second loads the cached compilation");
    let entries = || {
        std::fs::read_dir(cache_home.join("wasmtrigger/modules"))
            .unwrap()
            .count()
    };
    let before = entries();
    assert!(!loaded(&["--no-cache"]), "--no-cache compiles");
    assert_eq!(entries(), before, "--no-cache stores nothing");
}

/// Each command's help lists its own flags; the logging flags are described
/// once, in the top-level help, and still work anywhere.
#[test]
fn logging_flags_stay_out_of_each_command_help() {
    let commands = [
        "run", "check", "invoke", "modules", "runs", "triggers", "fire", "new", "enqueue", "rbac",
        "crd",
    ];
    for command in commands {
        let (code, out, err) = support::run_cli(&[command, "--help"], None);
        assert_eq!(code, 0, "{command}: {err}");
        assert!(
            !out.contains("--log-format") && !out.contains("--log-level"),
            "{command} --help:\n{out}"
        );
    }
    let (code, out, _) = support::run_cli(&["--help"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("--log-format") && out.contains("--log-level"),
        "{out}"
    );
    // Accepted after the command too.
    let (code, out, err) = support::run_cli(&["crd", "--log-level", "debug"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("CustomResourceDefinition"));
}

/// Every listing speaks `-o table|json|yaml`, and the three say the same.
#[test]
fn modules_list_as_table_json_and_yaml() {
    let dir = support::modules().display().to_string();
    let (code, table, err) = support::run_cli(&["modules", &dir], None);
    assert_eq!(code, 0, "{err}");
    assert!(table.starts_with("MODULE"), "{table}");
    let (_, json, _) = support::run_cli(&["modules", &dir, "-o", "json"], None);
    let (_, yaml, _) = support::run_cli(&["modules", &dir, "--output", "yaml"], None);
    let from_json: Vec<Value> = serde_json::from_str(&json).unwrap();
    let from_yaml: Vec<Value> = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(from_json, from_yaml);
    let names: Vec<&str> = from_json
        .iter()
        .filter_map(|m| m["module"].as_str())
        .collect();
    assert!(names.contains(&"counter.wasm"), "{names:?}");
    for name in names {
        assert!(table.contains(name), "{name} missing from the table");
    }
}

/// `-n` is the namespace, as in kubectl.
#[test]
fn dash_n_is_the_namespace() {
    let ws = Workspace::new();
    let config = ws.write(
        "t.yaml",
        "triggers:\n  - name: t\n    source: { type: schedule, every: 1m }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, err) = support::run_cli(
        &[
            "rbac",
            "--config",
            config.to_str().unwrap(),
            "--leader-election",
            "-n",
            "automation",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("namespace: automation"), "{out}");
}
