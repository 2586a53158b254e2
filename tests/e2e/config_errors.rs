//! Bad configs: every problem is reported with file, trigger and field, by
//! `check` and by `run`, which refuses to start.

use crate::support::{self, Workspace, run_cli};

const BROKEN: &str = r#"
triggers:
  - name: typo
    source: { type: schedule, every: 1s }
    action: { module: counter.wasm, timout: 5s }
  - name: dup
    source: { type: schedule, every: 1s }
    action: { module: counter.wasm }
  - name: dup
    source: { type: schedule, every: 1s }
    action: { module: counter.wasm }
  - name: missing
    source: { type: schedule, every: 1s }
    action: { module: nope.wasm }
  - name: slow
    source: { type: schedule, every: 10 parsecs }
    action: { module: counter.wasm }
  - name: bad-cron
    source: { type: schedule, cron: "61 * * * *" }
    action: { module: counter.wasm }
  - name: bad-cel
    source: { type: schedule, now: true }
    filter: { cel: "event.data.(" }
    action: { module: counter.wasm }
  - name: wrong-world
    source: { type: schedule, now: true }
    action: { module: ready-replicas.wasm }
  - name: no-kind
    source: { type: webhok }
    action: { module: counter.wasm }
  - name: bare-module
    source: { type: schedule, every: 1s }
    action: log-event.wasm
  - name: orphan
    source: { type: trigger, of: ghost }
    action: { module: gone.wasm }
  - name: three-wrongs
    source: { type: schedule, every: often }
    filter: [1, 2]
    action: { module: counter.wasm, retry: { max: many } }
"#;

fn problem_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("error: ")).collect()
}

#[test]
fn check_lists_every_problem_with_file_trigger_and_field() {
    let ws = Workspace::new();
    let file = ws.write("broken.yaml", BROKEN);
    let file_text = file.display().to_string();
    let (code, out, err) = run_cli(
        &[
            "check",
            "--config",
            &file_text,
            "--modules",
            &support::modules().display().to_string(),
        ],
        None,
    );
    assert_eq!(code, 1, "stderr: {err}");
    let lines = problem_lines(&out);
    let find = |trigger: &str, field: &str, needle: &str| {
        let hit = lines.iter().find(|l| {
            l.contains(&file_text)
                && l.contains(&format!("trigger `{trigger}`"))
                && l.contains(&format!("field `{field}`"))
                && l.contains(needle)
        });
        assert!(
            hit.is_some(),
            "no problem for {trigger}/{field} mentioning {needle:?} in:\n{out}"
        );
    };
    find(
        "typo",
        "action.timout",
        "unknown field `timout`, expected one of",
    );
    find("dup", "name", "duplicate trigger name");
    find("missing", "action.module", "module `nope.wasm` not found");
    find("slow", "source.every", "expected a number with a unit");
    find(
        "bad-cron",
        "source.cron",
        "invalid cron expression `61 * * * *`",
    );
    find("bad-cel", "filter.cel", "invalid CEL expression");
    find(
        "wrong-world",
        "action.module",
        "cannot be used as an action: it does not export `run",
    );
    find(
        "no-kind",
        "source.type",
        "unknown source type `webhok`, expected one of: schedule",
    );
    // A string where a mapping goes says what to write, without Rust type names.
    find(
        "bare-module",
        "action",
        "expected a mapping, found the string \"log-event.wasm\"; write `action: { module: log-event.wasm }`",
    );
    // A missing module does not hide an unknown upstream.
    find("orphan", "action.module", "module `gone.wasm` not found");
    find(
        "orphan",
        "source.of",
        "no trigger named `ghost` to chain on",
    );
    // A problem in one part of a trigger does not hide the others.
    find("three-wrongs", "source.every", "invalid duration `often`");
    find("three-wrongs", "filter", "expected a mapping like");
    find(
        "three-wrongs",
        "action.retry.max",
        "expected a whole number (0 or more)",
    );
    for line in &lines {
        for rust in ["struct ", "u32", "usize", "ActionSpec", "Spec`"] {
            assert!(!line.contains(rust), "Rust type name in: {line}");
        }
    }
    assert_eq!(lines.len(), 14, "exactly one line per problem:\n{out}");
    assert!(out.contains("14 problem(s) found"));
}

#[test]
fn engine_settings_errors_name_the_engine_field() {
    let ws = Workspace::new();
    let file = ws.write(
        "engine.yaml",
        "engine: { workers: 0, timeout: soon, memory: 12 parsecs }\ntriggers:\n  - name: ok\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, _) = support::check_config(&file);
    assert_eq!(code, 1);
    // Every bad field of the section is reported, not only the first.
    assert!(
        out.contains("field `engine.timeout`: invalid duration `soon`"),
        "{out}"
    );
    assert!(
        out.contains("field `engine.memory`: invalid size `12 parsecs`"),
        "{out}"
    );

    let file = ws.write(
        "workers.yaml",
        "engine: { workers: 0 }\ntriggers:\n  - name: ok\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, _) = support::check_config(&file);
    assert_eq!(code, 1);
    assert!(
        out.contains("field `engine.workers`: 0 workers: expected 1 to 1024"),
        "{out}"
    );

    let file = ws.write(
        "resident.yaml",
        "engine: { keepResident: 1Gi }\ntriggers:\n  - name: ok\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, _) = support::check_config(&file);
    assert_eq!(code, 1);
    assert!(out.contains("field `engine.keepResident`"), "{out}");

    let file = ws.write(
        "distribute.yaml",
        "engine: { distribute: { via: redis, url: \"redis://u:hunter22@redis:6379\", prefix: \"a b\", claimIdle: 10ms } }\ntriggers:\n  - name: ok\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, _) = support::check_config(&file);
    assert_eq!(code, 1);
    for expected in [
        "field `engine.distribute.url`: the URL holds credentials: put the whole URL in a secret and use `urlSecret`",
        "field `engine.distribute.prefix`: `a b` is not a prefix for `via: redis`: expected 1-64 of a-z A-Z 0-9 - _ . :",
        "field `engine.distribute.claimIdle`: expected at least 100ms",
    ] {
        assert!(out.contains(expected), "{expected}\n{out}");
    }
    assert!(!out.contains("hunter22"), "the password is echoed: {out}");
    // NATS names take no `.` or `:`, a token is a credential too, and a run
    // renews its message every third of the ack wait.
    let file = ws.write(
        "distribute-nats.yaml",
        "engine: { distribute: { via: nats, url: \"nats://s3cr3t-token@nats:4222\", prefix: \"wt.prod\", claimIdle: 500ms } }\ntriggers:\n  - name: ok\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, _) = support::check_config(&file);
    assert_eq!(code, 1);
    for expected in [
        "field `engine.distribute.url`: the URL holds credentials",
        "field `engine.distribute.prefix`: `wt.prod` is not a prefix for `via: nats`: expected 1-64 of a-z A-Z 0-9 - _",
        "field `engine.distribute.claimIdle`: expected at least 1s",
    ] {
        assert!(out.contains(expected), "{expected}\n{out}");
    }
    assert!(!out.contains("s3cr3t"), "the token is echoed: {out}");
    let file = ws.write(
        "distribute-scheme.yaml",
        "engine: { distribute: { via: nats, url: \"redis://redis:6379\" } }\ntriggers:\n  - name: ok\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, _) = support::check_config(&file);
    assert_eq!(code, 1);
    assert!(
        out.contains("field `engine.distribute.url`: invalid URL for `via: nats`: expected nats://host[:port] or tls://…"),
        "{out}"
    );
    let file = ws.write(
        "distribute-via.yaml",
        "engine: { distribute: { via: kafka, url: \"redis://redis:6379\" } }\ntriggers:\n  - name: ok\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, _) = support::check_config(&file);
    assert_eq!(code, 1);
    assert!(
        out.contains("engine.distribute.via") && out.contains("redis") && out.contains("nats"),
        "{out}"
    );
}

#[test]
fn run_refuses_to_start_on_a_bad_config_and_says_why() {
    let ws = Workspace::new();
    let file = ws.write("broken.yaml", BROKEN);
    let (code, _, err) = run_cli(
        &[
            "run",
            "--config",
            &file.display().to_string(),
            "--modules",
            &support::modules().display().to_string(),
            "--state-dir",
            &ws.state_dir().display().to_string(),
        ],
        None,
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("trigger `bad-cron`: field `source.cron`"),
        "{err}"
    );
    assert!(err.contains("not starting"), "{err}");
}

#[test]
fn a_directory_of_configs_is_merged_and_hidden_entries_are_ignored() {
    let ws = Workspace::new();
    ws.write("conf/a.yaml", "triggers:\n  - name: a\n    source: { type: schedule, now: true }\n    action: { module: counter.wasm }\n");
    ws.write("conf/b.json", r#"{"triggers":[{"name":"b","source":{"type":"schedule","every":"1m"},"action":{"module":"log-event.wasm"}}]}"#);
    ws.write("conf/..data/stale.yaml", "triggers: [garbage");
    ws.write("conf/.hidden.yaml", "triggers: [garbage");
    let (code, out, err) = support::check_config(&ws.path().join("conf"));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 2 trigger(s), 2 module(s)"), "{out}");
}

#[test]
fn check_warns_about_schedules_that_cannot_fire() {
    let ws = Workspace::new();
    let file = ws.write(
        "silent.yaml",
        "triggers:\n  - name: feb-31\n    source: { type: schedule, cron: \"0 0 31 2 *\" }\n    action: { module: counter.wasm }\n  - name: leap-day\n    source: { type: schedule, cron: \"0 0 29 2 *\" }\n    action: { module: counter.wasm }\n",
    );
    let (code, out, err) = support::check_config(&file);
    // Legal, so not a failure; but said, with the place.
    assert_eq!(code, 0, "{out}{err}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains("trigger `feb-31`: field `source.cron`")
            && warnings[0].contains("never fire"),
        "{out}"
    );
    assert!(out.contains("ok: 2 trigger(s)"), "{out}");
}
