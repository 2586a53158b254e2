//! Whole-engine throughput: events handed to the dispatcher, through the
//! queue, the ready-replicas Wasm filter and a no-op Wasm action, to the run
//! record, with 1 and 2 workers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtrigger::engine::{Engine, EngineOptions};
use wasmtrigger::event::Event;
use wasmtrigger::runs::{RunRecord, RunSink, RunStatus};

use super::{Mode, Table, deployment, fmt_duration, quantile, scratch};
use crate::support;

/// Events in flight at most during the saturated run.
const WINDOW: usize = 256;

/// Notes when each run record is emitted.
#[derive(Default)]
struct Finishes {
    done: Mutex<Vec<(String, Instant, RunStatus)>>,
    notify: tokio::sync::Notify,
}

impl RunSink for Finishes {
    fn record(&self, run: &RunRecord) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        done.push((run.event_id.clone(), Instant::now(), run.status));
        self.notify.notify_one();
    }
}

impl Finishes {
    fn count(&self) -> usize {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.count() < n {
            assert!(Instant::now() < deadline, "runs did not finish");
            let _ = tokio::time::timeout(Duration::from_millis(50), self.notify.notified()).await;
        }
    }
}

/// The throughput table.
pub async fn throughput(mode: Mode) -> Table {
    let mut table = Table::new(
        "Engine throughput: queue → Wasm filter (fresh instance) → no-op Wasm action → run record",
        &[
            "workers",
            "filter isolation",
            "`keepResident`",
            "events/s (saturated)",
            "p50 / p99 latency (saturated)",
            "p50 / p99 latency (one at a time)",
        ],
    );
    let events = match mode {
        Mode::Full => 20_000,
        Mode::Smoke => 20,
    };
    // The last two rows hand every page back to the kernel after each
    // instance, as the engine did before `keepResident`.
    let rows = [
        (1, "fresh", "1Mi"),
        (1, "pooled", "1Mi"),
        (2, "fresh", "1Mi"),
        (2, "pooled", "1Mi"),
        (1, "fresh", "0"),
        (2, "fresh", "0"),
    ];
    for (workers, isolation, keep) in rows {
        let (rate, saturated, single) =
            measure(workers, isolation, keep, (None, 1_000), events, true).await;
        table.row(vec![
            workers.to_string(),
            isolation.into(),
            keep.into(),
            format!("{rate:.0}"),
            format!(
                "{} / {}",
                fmt_duration(saturated.0),
                fmt_duration(saturated.1)
            ),
            format!("{} / {}", fmt_duration(single.0), fmt_duration(single.1)),
        ]);
    }
    table.notes.push(format!(
        "{events} events of {:.1} KB per row; saturated keeps ≤{WINDOW} events queued, so its latency includes queueing. \
         The no-op action is tests/guests/hostile in mode `ok` (parses its params, logs one line, returns). \
         Events are handed to the dispatcher directly with the journal off: the journal's cost is measured on webhooks below.",
        deployment().to_string().len() as f64 / 1024.0
    ));
    table
}

/// Per-key ordering's cost: the same pipeline (2 workers, fresh filter) with
/// `ordering: none`, keyed by a plain field path (read straight from the
/// JSON) and keyed by a CEL expression (evaluated on the CEL pool), interleaved.
pub async fn ordering(mode: Mode) -> Table {
    let mut table = Table::new(
        "Per-key ordering: events/s with 2 workers, fresh filter (median of interleaved rounds)",
        &[
            "ordering",
            "distinct keys",
            "events/s (saturated)",
            "vs none",
        ],
    );
    let (events, rounds) = match mode {
        Mode::Full => (20_000, 5),
        Mode::Smoke => (20, 1),
    };
    const PATH: &str = "event.data.metadata.name";
    const CEL: &str = "event.data.metadata.namespace + '/' + event.data.metadata.name";
    let rows: [(Option<&str>, usize); 4] = [
        (None, 1_000),
        (Some(PATH), 1_000),
        (Some(PATH), events),
        (Some(CEL), 1_000),
    ];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for round in 0..rounds {
        // Each round starts with another row, so no row always runs first.
        for step in 0..rows.len() {
            let i = (round + step) % rows.len();
            rates[i].push(measure(2, "fresh", "1Mi", rows[i], events, true).await.0);
        }
    }
    let median = |r: &mut Vec<f64>| {
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    let base = median(&mut rates[0].clone());
    for ((key, names), mut r) in rows.iter().zip(rates) {
        let rate = median(&mut r);
        table.row(vec![
            key.map_or("none".into(), |k| format!("key: {k}")),
            key.map_or("-".into(), |_| names.to_string()),
            format!("{rate:.0}"),
            format!("{:.2}×", rate / base),
        ]);
    }
    table.notes.push(format!(
        "{events} events per measurement, {rounds} rounds with the rows interleaved, each round starting with the next row; the events differ only in `metadata.name`. \
         A key costs its computation when the event is admitted and the per-key bookkeeping in the queue; \
         a plain path (`event.data.a.b`, `event.id`) is read from the JSON in place, any other expression is a CEL evaluation on the bounded CEL pool."
    ));
    table
}

/// Recording's cost: the same pipeline (2 workers, fresh filter) with run
/// recordings off and on (the default bounds), interleaved.
pub async fn recording(mode: Mode) -> Table {
    let mut table = Table::new(
        "Run recordings: events/s with 2 workers, fresh filter (median of interleaved rounds)",
        &[
            "recording",
            "events/s (saturated)",
            "p50 latency (one at a time)",
            "vs off",
        ],
    );
    let (events, rounds) = match mode {
        Mode::Full => (20_000, 5),
        Mode::Smoke => (20, 1),
    };
    let mut results: [Vec<(f64, Duration)>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for step in 0..2 {
            let i = (round + step) % 2;
            let (rate, _, single) = measure(2, "fresh", "1Mi", (None, 1_000), events, i == 1).await;
            results[i].push((rate, single.0));
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rate = |i: usize| median(results[i].iter().map(|r| r.0).collect());
    let p50 = |i: usize| {
        let mut v: Vec<Duration> = results[i].iter().map(|r| r.1).collect();
        v.sort();
        v[v.len() / 2]
    };
    let base = rate(0);
    for (i, name) in ["off (history.record: false)", "on (default bounds)"]
        .iter()
        .enumerate()
    {
        table.row(vec![
            (*name).into(),
            format!("{:.0}", rate(i)),
            fmt_duration(p50(i)),
            format!("{:.2}×", rate(i) / base),
        ]);
    }
    table.notes.push(format!(
        "{events} events of {:.1} KB per measurement, {rounds} rounds, rows interleaved. With recording on, each stored run \
         record also holds the event's data, the filter's verdict and the two guests' log lines (the filter's at debug level, recorded whatever the engine's log level).",
        deployment().to_string().len() as f64 / 1024.0
    ));
    table
}

type Quantiles = (Duration, Duration);

/// Runs `n` events, named over `names` names, through an engine; `key`: the
/// trigger's ordering key, if any; `keep`: `engine.keepResident`.
async fn measure(
    workers: usize,
    isolation: &str,
    keep: &str,
    (key, names): (Option<&str>, usize),
    n: usize,
    record: bool,
) -> (f64, Quantiles, Quantiles) {
    let (ws, state) = scratch("state");
    let ordering = key.map_or("none".to_string(), |k| format!("{{ key: \"{k}\" }}"));
    let config = ws.write(
        "bench.yaml",
        &format!(
            "engine: {{ workers: {workers}, queueSize: {}, keepResident: {keep}, journal: false, history: {{ record: {record} }} }}\n\
             triggers:\n\
             \x20 - name: bench\n\
             \x20   source: {{ type: schedule, every: 24h }}\n\
             \x20   ordering: {ordering}\n\
             \x20   filter: {{ module: ready-replicas.wasm, isolation: {isolation} }}\n\
             \x20   action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n",
            WINDOW * 2
        ),
    );
    let loaded = wasmtrigger::config::load(&config, Some(support::modules()), &Default::default())
        .expect("bench config");
    let options = EngineOptions {
        module_cache: Some(support::shared_cache()),
        ..EngineOptions::new(state)
    };
    let finishes = Arc::new(Finishes::default());
    let engine = Engine::start(loaded, options, vec![finishes.clone() as Arc<dyn RunSink>])
        .await
        .expect("engine starts");
    let trigger = engine.triggers().await.pop().expect("the bench trigger");
    let submitter = engine.submitter().clone();
    let mut data = deployment();
    let mut make = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| {
                data["metadata"]["name"] = format!("web-{}", i % names).into();
                Event::new("bench", "bench", "update", &data)
            })
            .collect()
    };

    // Saturated: keep the queue topped up to WINDOW.
    let batch = make(n);
    let mut sent = HashMap::with_capacity(n);
    let started = Instant::now();
    for event in batch {
        // Wait for runs to finish rather than spin: a spinning producer
        // would take a core from the workers on a 2-core machine.
        while submitter.queue_depth() >= WINDOW {
            let _ =
                tokio::time::timeout(Duration::from_millis(1), finishes.notify.notified()).await;
        }
        sent.insert(event.id.clone(), Instant::now());
        submitter
            .submit(&trigger, event)
            .await
            .expect("queue has room");
    }
    finishes.wait_for(n).await;
    let elapsed = started.elapsed();
    let saturated = latencies(&finishes, &sent);

    // One at a time: the pipeline's own latency.
    let single_n = (n / 10).max(1);
    let base = finishes.count();
    let mut sent_single = HashMap::with_capacity(single_n);
    for (i, event) in make(single_n).into_iter().enumerate() {
        sent_single.insert(event.id.clone(), Instant::now());
        submitter
            .submit(&trigger, event)
            .await
            .expect("queue has room");
        finishes.wait_for(base + i + 1).await;
    }
    let single = latencies(&finishes, &sent_single);
    engine.shutdown().await;
    (n as f64 / elapsed.as_secs_f64(), saturated, single)
}

/// p50 and p99 of submit → run record for the events in `sent`; every run must have succeeded.
fn latencies(finishes: &Finishes, sent: &HashMap<String, Instant>) -> Quantiles {
    let done = finishes.done.lock().unwrap_or_else(|p| p.into_inner());
    let mut lat: Vec<Duration> = done
        .iter()
        .filter_map(|(id, at, status)| {
            let submitted = sent.get(id)?;
            assert_eq!(
                *status,
                RunStatus::Succeeded,
                "bench run {id} did not succeed"
            );
            Some(at.duration_since(*submitted))
        })
        .collect();
    assert_eq!(lat.len(), sent.len(), "a run record per event");
    lat.sort();
    (quantile(&lat, 0.5), quantile(&lat, 0.99))
}
