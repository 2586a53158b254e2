//! What a newcomer meets in the first hour, through the real binary: the
//! compiled-module cache behind `invoke`, the errors they read first, and
//! the command line's conventions.

use std::os::unix::process::CommandExt;
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
    // A directory of its own: other tests add modules to the shared one
    // while this one lists it three times.
    let ws = Workspace::new();
    for name in ["counter.wasm", "log-event.wasm", "ready-replicas.wasm"] {
        std::fs::copy(support::module(name), ws.path().join(name)).unwrap();
    }
    let dir = ws.path().display().to_string();
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

/// The README's "Your first trigger" block, run as written by bash: only the
/// project directory and the port are this test's own, and the last
/// `wasmtrigger runs` is repeated until the run is recorded (a person types
/// it seconds later).
#[test]
fn the_readme_first_trigger_walkthrough_runs_as_written() {
    let readme = std::fs::read_to_string(support::repo().join("README.md")).unwrap();
    let section = readme
        .split_once("## Your first trigger")
        .expect("README has the section")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the section has a sh block")
        .0;
    assert!(block.lines().count() < 30, "under 30 lines");

    // CARGO_TARGET_DIR as after the quickstart: the binary in debug/, the
    // example modules in modules/; the scaffold tests' target holds the
    // project's wasm build so its dependencies are built once.
    let target = support::modules().parent().unwrap().join("scaffold-target");
    let debug = target.join("debug");
    std::fs::create_dir_all(&debug).unwrap();
    let link = debug.join("wasmtrigger");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(support::binary(), &link).unwrap();
    let modules = target.join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::copy(
        support::module("log-event.wasm"),
        modules.join("log-event.wasm"),
    )
    .unwrap();

    let ws = Workspace::new();
    let project = ws.path().join("only-named");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut script = String::from("set -euo pipefail\n");
    for line in block.lines() {
        let line = line
            .replace("/tmp/only-named", &project.display().to_string())
            .replace("7070", &port.to_string());
        if line.starts_with("wasmtrigger runs ") {
            let line = line.split(" #").next().unwrap_or_default().trim();
            script.push_str(&format!(
                "for i in $(seq 300); do out=$({line}); grep -q succeeded <<<\"$out\" && break; sleep 0.1; done; echo \"$out\"\n"
            ));
        } else {
            script.push_str(&line);
            script.push('\n');
        }
    }
    script.push_str("wait\n");
    // Its own process group, so whatever the script leaves running is
    // stopped with it even when the script fails half-way.
    let (out_path, err_path) = (ws.path().join("stdout"), ws.path().join("stderr"));
    let mut child = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(support::repo())
        .env("CARGO_TARGET_DIR", &target)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("WASMTRIGGER_SERVER", format!("http://127.0.0.1:{port}"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + support::DEADLINE * 4;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = child.wait();
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{script}\n{stdout}\n{stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines.contains(&"true"),
        "invoke passed the sample: {stdout}"
    );
    assert!(
        lines.contains(&"1 passed, 0 failed"),
        "the project's module test passed: {stdout}"
    );
    let run = lines
        .iter()
        .skip_while(|l| !l.starts_with("RUN ID"))
        .find(|l| l.contains("only-named"))
        .unwrap_or_else(|| panic!("no run listed:\n{stdout}\n{stderr}"));
    assert!(run.contains("succeeded"), "{run}");
    assert!(
        stderr.contains("received SIGTERM") || stderr.contains("stopped"),
        "kill %1 stops the engine cleanly:\n{stderr}"
    );
}

/// Every `](#anchor)` link in the README and docs/ points at a heading of
/// the same file (GitHub's anchor rule: lowercase, punctuation dropped,
/// spaces to `-`).
#[test]
fn section_links_in_the_docs_lead_somewhere() {
    let mut files = vec![support::repo().join("README.md")];
    for entry in std::fs::read_dir(support::repo().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_code = false;
        let mut anchors = std::collections::HashSet::new();
        for line in text.lines() {
            if line.starts_with("```") {
                in_code = !in_code;
            }
            if in_code || !line.starts_with('#') {
                continue;
            }
            let title = line.trim_start_matches('#').trim().to_lowercase();
            let anchor: String = title
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect();
            anchors.insert(anchor);
        }
        let broken: Vec<&str> = text
            .split("](#")
            .skip(1)
            .filter_map(|rest| rest.split(')').next())
            .filter(|anchor| !anchors.contains(*anchor))
            .collect();
        assert!(
            broken.is_empty(),
            "{}: links to missing sections: {broken:?}",
            file.display()
        );
    }
}
