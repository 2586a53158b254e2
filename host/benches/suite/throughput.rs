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
            "events/s (saturated)",
            "p50 / p99 latency (saturated)",
            "p50 / p99 latency (one at a time)",
        ],
    );
    let events = match mode {
        Mode::Full => 20_000,
        Mode::Smoke => 20,
    };
    for workers in [1, 2] {
        for isolation in ["fresh", "pooled"] {
            let (rate, saturated, single) = measure(workers, isolation, events).await;
            table.row(vec![
                workers.to_string(),
                isolation.into(),
                format!("{rate:.0}"),
                format!(
                    "{} / {}",
                    fmt_duration(saturated.0),
                    fmt_duration(saturated.1)
                ),
                format!("{} / {}", fmt_duration(single.0), fmt_duration(single.1)),
            ]);
        }
    }
    table.notes.push(format!(
        "{events} events of {:.1} KB per row; saturated keeps ≤{WINDOW} events queued, so its latency includes queueing. \
         The no-op action is tests/guests/hostile in mode `ok` (parses its params, logs one line, returns). \
         Events are handed to the dispatcher directly with the journal off: the journal's cost is measured on webhooks below.",
        deployment().to_string().len() as f64 / 1024.0
    ));
    table
}

type Quantiles = (Duration, Duration);

async fn measure(workers: usize, isolation: &str, n: usize) -> (f64, Quantiles, Quantiles) {
    let (ws, state) = scratch("state");
    let config = ws.write(
        "bench.yaml",
        &format!(
            "engine: {{ workers: {workers}, queueSize: {}, journal: false }}\n\
             triggers:\n\
             \x20 - name: bench\n\
             \x20   source: {{ type: schedule, every: 24h }}\n\
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
    let data = deployment();
    let make = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|_| Event::new("bench", "bench", "update", &data))
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
