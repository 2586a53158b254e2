//! Durability costs and work-queue drain rates: webhook acceptance with the
//! event journal on and off (concurrent clients on loopback), and a Redis
//! stream and a NATS JetStream stream drained by 1, 2 and 3 real
//! `wasmtrigger run` replicas.

use std::time::{Duration, Instant};

use wasmtrigger::engine::{Engine, EngineOptions};

use super::{Mode, Table, fmt_duration, quantile, scratch};
use crate::support::brokers::NatsServer;
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

/// A broker's backlog drained by 1, 2 and 3 replicas: a Redis stream, and a
/// NATS JetStream stream.
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
            "Work queues: {entries} messages drained by `wasmtrigger run` replicas ({build} build, no-op action)"
        ),
        &["source", "replicas", "messages/s", "vs 1 replica"],
    );
    for broker in [Broker::Redis, Broker::Nats] {
        let mut baseline = None;
        for replicas in 1..=3 {
            let rate = drain_with(broker, replicas, entries);
            let base = *baseline.get_or_insert(rate);
            table.row(vec![
                broker.name().into(),
                replicas.to_string(),
                format!("{rate:.0}"),
                format!("{:.2}×", rate / base),
            ]);
        }
    }
    table.notes.push(
        "Each replica runs 2 workers; all share one consumer group (Redis) or one durable pull \
         consumer (NATS); the clock runs from the first message written until every message is \
         acknowledged. Messages are written by redis-rs and by async-nats, in batches of 1,000. \
         Replicas and the server share the 2 cores."
            .into(),
    );
    table
}

#[derive(Clone, Copy)]
enum Broker {
    Redis,
    Nats,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Redis => "redis-queue",
            Broker::Nats => "nats",
        }
    }
}

fn drain_with(broker: Broker, replicas: usize, entries: usize) -> f64 {
    let (ws, _) = scratch("unused");
    let redis = matches!(broker, Broker::Redis).then(RedisServer::start);
    let nats = matches!(broker, Broker::Nats).then(NatsServer::start);
    let source = match (&redis, &nats) {
        (Some(redis), _) => format!(
            "{{ type: redis-queue, url: \"{}\", stream: jobs, batch: 64 }}",
            redis.url()
        ),
        (_, Some(nats)) => {
            nats.stream("JOBS", &["jobs"]);
            format!(
                "{{ type: nats, url: \"{}\", stream: JOBS, consumer: work, batch: 64 }}",
                nats.url()
            )
        }
        _ => unreachable!("one broker"),
    };
    let config = ws.write(
        "queue.yaml",
        &format!(
            "engine: {{ workers: 2, queueSize: 256 }}\n\
             triggers:\n\
             \x20 - name: work\n\
             \x20   source: {source}\n\
             \x20   action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n"
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
    let within = Duration::from_secs(600);
    if let Some(redis) = &redis {
        redis.fill("jobs", entries);
        redis.wait_drained("jobs", "wasmtrigger", within);
    }
    if let Some(nats) = &nats {
        nats_fill_and_drain(&nats.url(), entries, within);
    }
    let elapsed = started.elapsed();
    drop(engines);
    entries as f64 / elapsed.as_secs_f64()
}

/// Publishes `entries` messages with async-nats (nats-py tops out near the
/// drain rate, so it would measure itself) and waits, polling every 20 ms,
/// until the consumer has delivered and heard back about all of them.
fn nats_fill_and_drain(url: &str, entries: usize, within: Duration) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let client = async_nats::connect(url).await.expect("connect to nats");
        let js = async_nats::jetstream::new(client);
        let mut acks = Vec::with_capacity(1000);
        for i in 0..entries {
            let ack = js
                .publish("jobs", format!("{{\"n\":{i}}}").into())
                .await
                .expect("publish");
            acks.push(ack);
            if acks.len() == 1000 {
                for ack in acks.drain(..) {
                    ack.await.expect("stored");
                }
            }
        }
        for ack in acks {
            ack.await.expect("stored");
        }
        let deadline = Instant::now() + within;
        let stream = js.get_stream("JOBS").await.expect("stream");
        loop {
            if let Ok(info) = stream.consumer_info("work").await
                && info.num_pending == 0
                && info.num_ack_pending == 0
            {
                return;
            }
            assert!(Instant::now() < deadline, "nats backlog not drained");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}
