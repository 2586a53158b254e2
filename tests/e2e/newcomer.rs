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
            "--event",
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
