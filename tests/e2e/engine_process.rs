//! The real `wasmtrigger run` process: JSON run records, kv surviving a
//! restart, and a graceful stop on SIGTERM.

use crate::support::{EngineProcess, Workspace, runs_in_log};

fn counts(runs: &[serde_json::Value]) -> Vec<i64> {
    runs.iter()
        .map(|r| r["output"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn run_records_are_json_lines_and_kv_survives_a_restart() {
    let ws = Workspace::new();
    let config = ws.write(
        "counter.yaml",
        "triggers:\n  - name: count\n    source: { type: schedule, every: 50ms, immediately: true }\n    action: { module: counter.wasm }\n",
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    let runs = engine.wait_runs("count", 3);
    for field in [
        "trigger",
        "event_id",
        "run_id",
        "status",
        "attempts",
        "duration_ms",
        "module",
        "output",
    ] {
        assert!(
            runs[0].get(field).is_some(),
            "run record lacks {field}: {}",
            runs[0]
        );
    }
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["attempts"], 1);
    assert!(
        runs[0]["module"]
            .as_str()
            .unwrap()
            .starts_with("counter.wasm@")
    );
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "SIGTERM is a clean exit");
    let first_life = counts(&runs_in_log(&log, "count"));
    assert_eq!(
        first_life,
        (1..=first_life.len() as i64).collect::<Vec<_>>()
    );

    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    let second_life = counts(&engine.wait_runs("count", 1));
    assert_eq!(engine.stop(), 0);
    assert_eq!(
        second_life[0],
        first_life.len() as i64 + 1,
        "the count carried on from the state dir"
    );
}

#[test]
fn sigterm_lets_the_run_in_flight_finish() {
    let ws = Workspace::new();
    let config = ws.write(
        "slow.yaml",
        "triggers:\n  - name: slow\n    source: { type: schedule, now: true }\n    action: { module: hostile.wasm, params: { mode: sleep, ms: 2000 } }\n",
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_for("the run to start", |lines| {
        lines
            .iter()
            .any(|l| l["message"] == "hostile mode sleep starting")
            .then_some(())
    });
    assert!(engine.runs("slow").is_empty(), "the run is still in flight");
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0);
    let finished = runs_in_log(&log, "slow");
    assert_eq!(finished.len(), 1, "{log}");
    assert_eq!(finished[0]["status"], "succeeded", "{log}");
}

#[test]
fn invalid_log_level_is_a_clear_error() {
    let (code, _, err) = crate::support::run_cli(&["--log-level", "lots[", "modules", "."], None);
    assert_eq!(code, 2);
    assert!(err.contains("invalid log level"), "{err}");
}
