//! Durability costs and work-queue drain rates: webhook acceptance with the
//! event journal on and off (concurrent clients on loopback), and a Redis
//! stream drained by 1, 2 and 3 real `wasmtrigger run` replicas.

use std::time::{Duration, Instant};

use wasmtrigger::engine::{Engine, EngineOptions};

use super::{Mode, Table, fmt_duration, quantile, scratch};
use crate::support::redis_server::RedisServer;
use crate::support::{self, EngineProcess};

/// Concurrent webhook clients.
const CLIENTS: usize = 16;

/// Webhook acceptance with and without the journal.
pub async fn journal(mode: Mode) -> Table {
    let per_client = match mode {
        Mode::Full => 250,
        Mode::Smoke => 2,
    };
    let mut table = Table::new(
        format!(
            "Webhook acceptance, {CLIENTS} concurrent clients on loopback: the event journal's cost"
        ),
        &["journal", "accepted/s", "p50 / p99 until 202", "vs off"],
    );
    let mut baseline = None;
    for journal in [false, true] {
        let (rate, p50, p99) = webhooks(journal, per_client).await;
        let base = *baseline.get_or_insert(rate);
        table.row(vec![
            if journal { "on (default)" } else { "off" }.into(),
            format!("{rate:.0}"),
            format!("{} / {}", fmt_duration(p50), fmt_duration(p99)),
            format!("{:.2}×", rate / base),
        ]);
    }
    table.notes.push(format!(
        "{} requests per row; the action is the no-op hostile guest. With the journal on, each 202 \
         is sent after the event is committed to the state store (fsync); concurrent requests share commits.",
        CLIENTS * per_client
    ));
    table
}

async fn webhooks(journal: bool, per_client: usize) -> (f64, Duration, Duration) {
    let (ws, state) = scratch("state");
    let config = ws.write(
        "hooks.yaml",
        &format!(
            "engine: {{ workers: 2, queueSize: 4096, journal: {journal} }}\n\
             triggers:\n\
             \x20 - name: hook\n\
             \x20   source: {{ type: webhook, auth: none }}\n\
             \x20   action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n"
        ),
    );
    let loaded = wasmtrigger::config::load(&config, Some(support::modules()), &Default::default())
        .expect("bench config");
    let options = EngineOptions {
        module_cache: Some(support::shared_cache()),
        listen: Some("127.0.0.1:0".parse().expect("address")),
        ..EngineOptions::new(state)
    };
    let engine = Engine::start(loaded, options, Vec::new())
        .await
        .expect("engine starts");
    let url = format!("http://{}/hooks/hook", engine.address().expect("listening"));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let sent = Instant::now();
                    let response = http
                        .post(&url)
                        .body(format!("{{\"client\":{c},\"n\":{i}}}"))
                        .send()
                        .await
                        .expect("webhook answers");
                    assert_eq!(response.status().as_u16(), 202, "accepted");
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let elapsed = started.elapsed();
    let total = latencies.len();
    latencies.sort();
    // Let the runs finish before stopping, so both rows stop the same way.
    let deadline = Instant::now() + Duration::from_secs(300);
    while engine.stats().succeeded < total as u64 {
        assert!(Instant::now() < deadline, "runs did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.shutdown().await;
    (
        total as f64 / elapsed.as_secs_f64(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
    )
}

/// A Redis stream drained by 1, 2 and 3 replicas.
pub fn drain(mode: Mode) -> Table {
    let entries = match mode {
        Mode::Full => 20_000,
        Mode::Smoke => 20,
    };
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut table = Table::new(
        format!(
            "Redis work queue: {entries} entries drained by `wasmtrigger run` replicas ({build} build, no-op action)"
        ),
        &["replicas", "entries/s", "vs 1 replica"],
    );
    let mut baseline = None;
    for replicas in 1..=3 {
        let rate = drain_with(replicas, entries);
        let base = *baseline.get_or_insert(rate);
        table.row(vec![
            replicas.to_string(),
            format!("{rate:.0}"),
            format!("{:.2}×", rate / base),
        ]);
    }
    table.notes.push(
        "Each replica runs 2 workers; all share one consumer group; the clock runs from the first \
         entry written until every entry is acknowledged. Replicas and redis-server share the 2 cores."
            .into(),
    );
    table
}

fn drain_with(replicas: usize, entries: usize) -> f64 {
    let redis = RedisServer::start();
    let (ws, _) = scratch("unused");
    let config = ws.write(
        "queue.yaml",
        &format!(
            "engine: {{ workers: 2, queueSize: 256 }}\n\
             triggers:\n\
             \x20 - name: work\n\
             \x20   source: {{ type: redis-queue, url: \"{}\", stream: jobs, batch: 64 }}\n\
             \x20   action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n",
            redis.url()
        ),
    );
    let engines: Vec<EngineProcess> = (0..replicas)
        .map(|i| {
            let state = ws.path().join(format!("state-{i}"));
            let engine = EngineProcess::start(
                &config,
                &state,
                &["--log-level", "warn,wasmtrigger::engine=info"],
            );
            engine.wait_started();
            engine
        })
        .collect();
    let started = Instant::now();
    redis.fill("jobs", entries);
    redis.wait_drained("jobs", "wasmtrigger", Duration::from_secs(600));
    let elapsed = started.elapsed();
    drop(engines);
    entries as f64 / elapsed.as_secs_f64()
}
