//! Every schedule mode fires, checked against deadlines; overlap policies.

use chrono::{DateTime, Utc};
use wasmtrigger::runs::{RunRecord, RunStatus};

use crate::support::{Workspace, start_engine};

fn ms(t: &str) -> DateTime<chrono::FixedOffset> {
    DateTime::parse_from_rfc3339(t).unwrap()
}

/// The event data of a run, as the log-event action returned it.
fn tick(record: &RunRecord) -> serde_json::Value {
    let output: serde_json::Value =
        serde_json::from_str(record.output.as_deref().unwrap()).unwrap();
    output["data"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_schedule_mode_fires() {
    let ws = Workspace::new();
    let started = Utc::now();
    let at = started + chrono::Duration::milliseconds(1500);
    let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let yaml = format!(
        r#"
triggers:
  - name: every
    source: {{ type: schedule, every: 100ms }}
    action: {{ module: log-event.wasm }}
  - name: immediately
    source: {{ type: schedule, every: 1h, immediately: true }}
    action: {{ module: log-event.wasm }}
  - name: cron-seconds
    source: {{ type: schedule, cron: "* * * * * *", timezone: Europe/Berlin }}
    action: {{ module: log-event.wasm }}
  - name: at
    source: {{ type: schedule, at: "{at}" }}
    action: {{ module: log-event.wasm }}
  - name: now
    source: {{ type: schedule, now: true }}
    action: {{ module: log-event.wasm }}
"#,
        at = fmt(at),
    );
    let (engine, runs) = start_engine(&ws, &yaml).await;

    let every = runs.wait_runs("every", 3).await;
    let seq: Vec<i64> = every
        .iter()
        .map(|r| tick(r)["sequence"].as_i64().unwrap())
        .collect();
    assert_eq!(&seq[..3], &[1, 2, 3]);
    let first_due = ms(tick(&every[0])["scheduledTime"].as_str().unwrap());
    assert!(
        first_due >= started + chrono::Duration::milliseconds(99),
        "first tick after one period"
    );

    let immediately = runs.wait_runs("immediately", 1).await;
    let due = ms(tick(&immediately[0])["scheduledTime"].as_str().unwrap());
    assert!(
        due < started + chrono::Duration::seconds(30),
        "fired at start, not after an hour"
    );

    let cron = runs.wait_runs("cron-seconds", 2).await;
    for r in &cron {
        let due = ms(tick(r)["scheduledTime"].as_str().unwrap());
        assert_eq!(due.timestamp_subsec_millis(), 0, "cron fires on the second");
        assert_eq!(tick(r)["schedule"]["timezone"], "Europe/Berlin");
    }

    let at_run = runs.wait_runs("at", 1).await;
    assert_eq!(tick(&at_run[0])["scheduledTime"], fmt(at));
    assert!(ms(&at_run[0].started_at) >= at);

    let now = runs.wait_runs("now", 1).await;
    assert_eq!(now[0].status, RunStatus::Succeeded);

    // The one-shot schedules fire exactly once.
    runs.wait_runs("every", 12).await;
    engine.shutdown().await;
    assert_eq!(runs.of("now").len(), 1);
    assert_eq!(runs.of("at").len(), 1);
    assert_eq!(runs.of("immediately").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_stops_the_schedule() {
    let ws = Workspace::new();
    let until = Utc::now() + chrono::Duration::seconds(2);
    let yaml = format!(
        "triggers:\n  - name: until\n    source: {{ type: schedule, every: 50ms, until: \"{}\" }}\n    action: {{ module: log-event.wasm }}\n  - name: clock\n    source: {{ type: schedule, every: 50ms }}\n    action: {{ module: log-event.wasm }}\n",
        until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let (engine, runs) = start_engine(&ws, &yaml).await;
    let running_from = Utc::now();
    // Wait until the clock trigger has ticked well past `until`.
    loop {
        let clock = runs.wait_runs("clock", runs.of("clock").len() + 1).await;
        let last = ms(tick(clock.last().unwrap())["scheduledTime"]
            .as_str()
            .unwrap());
        if last > until + chrono::Duration::milliseconds(300) {
            break;
        }
    }
    engine.shutdown().await;
    let until_runs = runs.of("until");
    for r in &until_runs {
        assert!(
            ms(tick(r)["scheduledTime"].as_str().unwrap()) <= until,
            "tick after until: {r:#?}"
        );
    }
    // Liveness only means something if the engine was up well before `until`.
    if running_from + chrono::Duration::milliseconds(500) < until {
        assert!(
            !until_runs.is_empty(),
            "the schedule fired before its `until`"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_at_fires_once_across_restarts() {
    let ws = Workspace::new();
    let at = (Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let yaml = format!(
        "triggers:\n  - name: missed\n    source: {{ type: schedule, at: \"{at}\" }}\n    action: {{ module: log-event.wasm }}\n  - name: clock\n    source: {{ type: schedule, every: 20ms }}\n    action: {{ module: log-event.wasm }}\n"
    );
    let (engine, runs) = start_engine(&ws, &yaml).await;
    let fired = runs.wait_runs("missed", 1).await;
    assert_eq!(
        tick(&fired[0])["scheduledTime"].as_str().unwrap()[..19],
        at[..19]
    );
    engine.shutdown().await;

    // Second life on the same state directory: the clock ticks, `missed` stays quiet.
    let (engine, runs) = start_engine(&ws, &yaml).await;
    runs.wait_runs("clock", 5).await;
    engine.shutdown().await;
    assert!(runs.of("missed").is_empty(), "{:#?}", runs.of("missed"));
}

fn assert_sequential(records: &[RunRecord]) {
    for pair in records.windows(2) {
        let end =
            ms(&pair[0].started_at) + chrono::Duration::milliseconds(pair[0].duration_ms as i64);
        assert!(
            ms(&pair[1].started_at) >= end - chrono::Duration::milliseconds(2),
            "runs overlapped: {pair:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_during_an_unfinished_run_are_skipped_by_default() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        r#"
engine: { workers: 4 }
triggers:
  - name: slow
    source: { type: schedule, every: 20ms }
    action: { module: hostile.wasm, params: { mode: sleep, ms: 250 } }
"#,
    )
    .await;
    let records = runs.wait_runs("slow", 3).await;
    let stats = engine.shutdown().await;
    assert_sequential(&records);
    assert!(stats.ticks_skipped >= 3, "skipped {}", stats.ticks_skipped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesce_keeps_one_tick_and_fires_it_when_the_run_ends() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        r#"
engine: { workers: 4 }
triggers:
  - name: slow
    source: { type: schedule, every: 20ms, overlap: coalesce }
    action: { module: hostile.wasm, params: { mode: sleep, ms: 250 } }
"#,
    )
    .await;
    let records = runs.wait_runs("slow", 3).await;
    let stats = engine.shutdown().await;
    assert_sequential(&records);
    // Ticks kept during a run carry the mark; the rest of them were skipped.
    let data: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::from_str(r.output.as_deref().unwrap()).unwrap())
        .collect();
    assert!(data[0].get("coalesced").is_none(), "{data:?}");
    assert!(data[1..].iter().all(|d| d["coalesced"] == true), "{data:?}");
    assert!(stats.ticks_skipped >= 3, "skipped {}", stats.ticks_skipped);
}
