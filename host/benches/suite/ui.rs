//! `ui`: what the web page costs, measured against a real engine process.
//!
//! - **First view with a deep history.** 100,000 stored runs of one trigger
//!   (1 % failed) plus another trigger's: the two API calls the trigger page
//!   makes first (`/api/v1/triggers`, then its newest 50 runs), the failed
//!   runs filter, and a page deep in the history, against the baseline of
//!   reading every run of the trigger (what a status filter without an index
//!   costs).
//! - **The live stream at 1,000 runs/s.** Webhooks posted at a steady 1,000
//!   a second for a few seconds while the trigger's page is open in headless
//!   Chromium: the runs the page received, the time it took to catch up after
//!   the last one was sent, and the stream's messages per second.

use std::time::{Duration, Instant};

use serde_json::json;

use super::{Mode, Table, fmt_duration, median};
use crate::support::browser::Browser;
use crate::support::{EngineProcess, Workspace};

/// One stored run of `trigger`, with a recording like a webhook run's.
fn record(trigger: &str, failed: bool) -> wasmtrigger::runs::RunRecord {
    let id = uuid::Uuid::now_v7().to_string();
    let data = json!({ "body": { "order": id, "lines": [1, 2, 3], "note": "x".repeat(600) }, "headers": {}, "contentType": "application/json" }).to_string();
    serde_json::from_value(json!({
        "runId": id, "eventId": uuid::Uuid::now_v7().to_string(), "trigger": trigger,
        "source": "webhook", "kind": "post", "status": if failed { "failed" } else { "succeeded" },
        "attempts": [{ "number": 1, "startedAt": "2026-11-30T08:00:00.000Z", "durationMs": 2,
                       "error": if failed { Some("boom") } else { None } }],
        "acceptedAt": "2026-11-30T08:00:00.000Z", "startedAt": "2026-11-30T08:00:00.000Z",
        "finishedAt": "2026-11-30T08:00:00.002Z", "queuedMs": 0, "durationMs": 2,
        "module": "counter.wasm@0123456789ab", "output": "1", "error": if failed { Some("boom") } else { None },
        "delivery": 1,
        "recording": {
            "event": { "time": "2026-11-30T08:00:00.000Z", "data": data, "dataBytes": data.len(), "dataSha256": "0" },
            "logs": [{ "phase": "action", "attempt": 1, "atMs": 1, "level": "info", "message": "run number 1" }],
            "calls": [{ "phase": "action", "attempt": 1, "interface": "kv", "function": "increment",
                        "args": "\"n\" by 1", "outcome": "ok", "answer": 1, "atMs": 1, "durationUs": 40 }]
        }
    }))
    .expect("a run record")
}

/// Seeds `dir` with `n` runs of `busy` (every 100th failed) and 1,000 of `quiet`.
fn seed(dir: &std::path::Path, n: usize) {
    use wasmtrigger::runs::store::{Retention, RunStore};
    let state = wasmtrigger::state::StateStore::open(dir, Default::default()).expect("state");
    let retention = Retention {
        max_per_trigger: 1_000_000,
        ..Retention::default()
    };
    let store = RunStore::open(state, retention).expect("history");
    let mut batch = Vec::new();
    for i in 0..n {
        batch.push(record("busy", i % 100 == 0));
        if batch.len() == 2_000 {
            store.write(&batch).expect("write");
            batch.clear();
        }
    }
    for _ in 0..1_000 {
        batch.push(record("quiet", false));
    }
    store.write(&batch).expect("write");
}

fn get(client: &reqwest::blocking::Client, url: &str) -> serde_json::Value {
    let text = client.get(url).send().and_then(|r| r.text()).expect("GET");
    serde_json::from_str(&text).expect("JSON")
}

/// Median time of `op` over `samples` runs.
fn timed(samples: usize, mut op: impl FnMut()) -> Duration {
    op(); // warm: the first read maps the file
    median(
        (0..samples)
            .map(|_| {
                let t = Instant::now();
                op();
                t.elapsed()
            })
            .collect(),
    )
}

/// The section.
pub fn ui(mode: Mode) -> Vec<Table> {
    let stored = if mode == Mode::Full { 100_000 } else { 2_000 };
    let ws = Workspace::new();
    let seeded = Instant::now();
    seed(&ws.state_dir(), stored);
    let seed_time = seeded.elapsed();
    let config = ws.write(
        "ui.yaml",
        "engine:\n  history: { maxPerTrigger: 1000000 }\ntriggers:\n  - name: busy\n    source: { type: webhook, auth: none }\n    action: { module: counter.wasm }\n  - name: quiet\n    source: { type: webhook, auth: none }\n    action: { module: counter.wasm }\n",
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_started();
    let base = engine.base_url();
    let client = reqwest::blocking::Client::new();
    let samples = if mode == Mode::Full { 15 } else { 1 };
    let first_view = timed(samples, || {
        let triggers = get(&client, &format!("{base}/api/v1/triggers"));
        assert_eq!(triggers["triggers"].as_array().map(Vec::len), Some(2));
        let page = get(
            &client,
            &format!("{base}/api/v1/runs?trigger=busy&limit=50"),
        );
        assert_eq!(page["runs"].as_array().map(Vec::len), Some(50));
    });
    let failed = timed(samples, || {
        let page = get(
            &client,
            &format!("{base}/api/v1/runs?trigger=busy&status=failed&limit=50"),
        );
        assert_eq!(
            page["runs"].as_array().map(Vec::len),
            Some(50.min(stored / 100))
        );
    });
    // A page deep in the history: before the run in the middle.
    let middle = {
        let all = get(
            &client,
            &format!("{base}/api/v1/runs?trigger=busy&limit=10000"),
        );
        all["runs"][all["runs"].as_array().map_or(0, |a| a.len() / 2)]["runId"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let deep = timed(samples, || {
        let page = get(
            &client,
            &format!("{base}/api/v1/runs?trigger=busy&before={middle}&limit=50"),
        );
        assert_eq!(page["runs"].as_array().map(Vec::len), Some(50));
    });
    // The baseline: every run of the trigger read (up to the API's cap of 10,000 per call).
    let scan = timed(samples.min(5), || {
        let page = get(
            &client,
            &format!("{base}/api/v1/runs?trigger=busy&limit=10000"),
        );
        assert_eq!(
            page["runs"].as_array().map(Vec::len),
            Some(stored.min(10_000))
        );
    });
    let scan_all = scan * (stored as u32).div_ceil(10_000).max(1);
    let mut history = Table::new(
        format!(
            "Web page: first view with {stored} stored runs of one trigger (engine process, HTTP)"
        ),
        &["what the page asks", "median", "vs reading every run"],
    );
    let ratio = |d: Duration| format!("{:.4}×", d.as_secs_f64() / scan_all.as_secs_f64());
    history.row(vec![
        "trigger page, first view: /api/v1/triggers + newest 50 runs".into(),
        fmt_duration(first_view),
        ratio(first_view),
    ]);
    history.row(vec![
        "failed runs filter (1 % of the runs): 50".into(),
        fmt_duration(failed),
        ratio(failed),
    ]);
    history.row(vec![
        "a page of 50 from the middle of the history (`before`)".into(),
        fmt_duration(deep),
        ratio(deep),
    ]);
    history.row(vec![
        format!("baseline: every run of the trigger ({stored}), in pages of 10,000"),
        fmt_duration(scan_all),
        "1×".into(),
    ]);
    history.notes.push(format!(
        "Seeding {stored} records took {}.",
        fmt_duration(seed_time)
    ));

    // The stream, into a real browser.
    let (rate, seconds) = if mode == Mode::Full {
        (1_000, 5)
    } else {
        (50, 1)
    };
    let browser = Browser::start();
    browser.goto(&format!("{base}/ui/#/trigger/busy"));
    browser.wait_text("#live", "live");
    browser.wait("#runs tr");
    let seen = || {
        browser
            .run("return window.wasmtriggerRunsSeen || 0;", json!([]))
            .as_u64()
            .unwrap_or(0)
    };
    let before = seen();
    let total = rate * seconds;
    let sending = Instant::now();
    let sent = post_steadily(&base, "busy", rate, total);
    let send_time = sending.elapsed();
    let finished_sending = Instant::now();
    let deadline = finished_sending + Duration::from_secs(60);
    while seen() < before + sent as u64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let caught_up = finished_sending.elapsed();
    let received = seen() - before;
    let messages = browser
        .run("return window.wasmtriggerStreamMessages || 0;", json!([]))
        .as_u64()
        .unwrap_or(0);
    let mut live = Table::new(
        format!(
            "Web page: the run stream at {rate} runs/s for {seconds} s, into headless Chromium"
        ),
        &["measure", "value"],
    );
    live.row(vec![
        "webhooks accepted (sent at the rate)".into(),
        format!("{sent} of {total} in {:.2} s", send_time.as_secs_f64()),
    ]);
    live.row(vec![
        "runs the open page received".into(),
        format!("{received} of {sent}"),
    ]);
    live.row(vec![
        "page caught up after the last webhook".into(),
        fmt_duration(caught_up),
    ]);
    live.row(vec![
        "stream messages (batches) the page got".into(),
        messages.to_string(),
    ]);
    live.notes.push("The stream batches runs every 100 ms; the page applies what arrived at most every 200 ms, so its work grows with time, not with the run rate.".into());
    drop(browser);
    let (code, _) = engine.stop_and_log();
    assert_eq!(code, 0);
    vec![history, live]
}

/// Posts `total` webhooks to `hook` at `rate` a second from 4 connections; returns how many got 202.
fn post_steadily(base: &str, hook: &str, rate: usize, total: usize) -> usize {
    let senders = 4;
    let per_sender = total.div_ceil(senders);
    let interval = Duration::from_secs_f64(senders as f64 / rate as f64);
    let url = format!("{base}/hooks/{hook}");
    let handles: Vec<_> = (0..senders)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let start = Instant::now();
                let mut ok = 0;
                for i in 0..per_sender {
                    let due = start + interval * i as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if client
                        .post(&url)
                        .body(r#"{"n":1}"#)
                        .send()
                        .is_ok_and(|r| r.status() == 202)
                    {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}
