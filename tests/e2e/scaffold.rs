//! `wasmtrigger new` for every language and kind: the project builds with its
//! own build script and the module runs on its own sample event.

use std::path::PathBuf;
use std::process::Command;

use crate::support::{self, Workspace, run_cli};

fn tools() -> PathBuf {
    std::env::var_os("WASMTRIGGER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
            cache.join("wasmtrigger/tools")
        })
}

fn scaffold_builds_and_runs(kind: &str, lang: &str) {
    if lang != "rust" {
        support::language_modules(); // installs the pinned Python/JS tools
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

    let path = format!(
        "{}:{}:{}",
        tools().join("python/bin").display(),
        tools().join("js/node_modules/.bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target = support::modules().parent().unwrap().join("scaffold-target");
    let build = Command::new("bash")
        .arg(dir.join("build.sh"))
        .env("PATH", path)
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
        "--event",
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
        assert_eq!(output["kind"], "tick");
    }
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
