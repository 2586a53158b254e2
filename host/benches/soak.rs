//! The soak run: `cargo bench -p wasmtrigger --bench soak -- [--minutes 30] [--rate 3000]`.
//!
//! A release `wasmtrigger run` with the journal on takes webhooks at a
//! steady rate (CEL filter, then the log-event example) for the
//! given time, while this program measures, minute by minute: webhooks
//! accepted (202), runs finished (from `/metrics`), the engine's resident
//! memory, and the webhook's answer latency (p50, p99, at the client).
//! At the end it stops sending, waits for the engine to finish what it
//! accepted, and prints a markdown table and the verdicts:
//! RSS growth after warm-up (minute 2 to the last), accepted == finished,
//! and p99 in the last minute against the second.

#[path = "../../tests/support/mod.rs"]
mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `wasmtrigger_runs_total` summed over statuses, and `wasmtrigger_events_accepted_total`.
fn counts(client: &reqwest::blocking::Client, base: &str) -> (u64, u64) {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .and_then(|r| r.text())
        .unwrap_or_default();
    let sum = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next())
            .filter_map(|v| v.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    (
        sum("wasmtrigger_runs_total{"),
        sum("wasmtrigger_events_accepted_total{"),
    )
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let minutes = arg("--minutes", 30);
    let rate = arg("--rate", 3000) as usize;
    let ws = support::Workspace::new();
    let modules = support::modules();
    let config = ws.write(
        "soak.yaml",
        "engine:\n  journal: true\n  queueSize: 10000\ntriggers:\n  - name: soak\n    source: { type: webhook, auth: none }\n    filter: { cel: 'event.data.body.n > 0' }\n    action: { module: log-event.wasm }\n",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let base = format!("http://127.0.0.1:{port}");
    let mut engine = Command::new(support::binary())
        .args(["--log-level", "error", "run", "--config"])
        .arg(&config)
        .arg("--modules")
        .arg(modules)
        .arg("--state-dir")
        .arg(ws.path().join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wasmtrigger");
    let client = reqwest::blocking::Client::new();
    let ready = Instant::now() + Duration::from_secs(120);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .is_ok_and(|r| r.status() == 200)
    {
        assert!(Instant::now() < ready, "the engine did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "# soak: {minutes} min at {rate} webhooks/s, journal on ({} build)\n",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );

    // Senders: each keeps its own steady schedule and notes each answer's latency.
    let senders = 24;
    let interval = Duration::from_secs_f64(senders as f64 / rate as f64);
    let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let accepted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..senders)
        .map(|_| {
            let (latencies, refused, accepted, stop) = (
                latencies.clone(),
                refused.clone(),
                accepted.clone(),
                stop.clone(),
            );
            let url = format!("{base}/hooks/soak");
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let start = Instant::now();
                let mut i: u32 = 0;
                while !stop.load(Ordering::Relaxed) {
                    let due = start + interval * i;
                    i += 1;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let sent = Instant::now();
                    let ok = client
                        .post(&url)
                        .body(r#"{"n":1}"#)
                        .send()
                        .is_ok_and(|r| r.status() == 202);
                    let took = sent.elapsed();
                    if ok {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        latencies.lock().unwrap().push(took);
                    } else {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    println!(
        "| minute | accepted (202) | refused | runs finished | RSS | answer p50 | answer p99 |"
    );
    println!("|---|---|---|---|---|---|---|");
    let started = Instant::now();
    let (mut last_runs, mut last_accepted) = (0, 0);
    let mut rows = Vec::new();
    for minute in 1..=minutes {
        let due = started + Duration::from_secs(60 * minute);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let mut batch = std::mem::take(&mut *latencies.lock().unwrap());
        batch.sort();
        let (runs, _) = counts(&client, &base);
        let now_accepted = accepted.load(Ordering::Relaxed);
        let rss = support::memory_kib(engine.id()).0;
        let (p50, p99) = (quantile(&batch, 0.5), quantile(&batch, 0.99));
        println!(
            "| {minute} | {} | {} | {} | {:.1} MiB | {:.2} ms | {:.2} ms |",
            now_accepted - last_accepted,
            refused.swap(0, Ordering::Relaxed),
            runs - last_runs,
            rss as f64 / 1024.0,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        rows.push((rss, p99));
        (last_runs, last_accepted) = (runs, now_accepted);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let total = accepted.load(Ordering::Relaxed);
    let drained = Instant::now() + Duration::from_secs(300);
    let (mut runs, mut engine_accepted) = counts(&client, &base);
    while runs < engine_accepted && Instant::now() < drained {
        std::thread::sleep(Duration::from_millis(200));
        (runs, engine_accepted) = counts(&client, &base);
    }
    let warm = rows
        .get(1)
        .or(rows.first())
        .map_or((0, Duration::ZERO), |r| *r);
    let last = rows.last().map_or((0, Duration::ZERO), |r| *r);
    let growth = (last.0 as f64 / warm.0.max(1) as f64 - 1.0) * 100.0;
    println!();
    println!(
        "- webhooks answered 202: {total}; the engine counted {engine_accepted} accepted and {runs} finished runs: {}",
        if runs == engine_accepted && engine_accepted == total {
            "accepted == finished"
        } else {
            "MISMATCH"
        }
    );
    println!(
        "- RSS after warm-up (minute 2 → {minutes}): {:.1} → {:.1} MiB, {growth:+.1} % (target < 10 %)",
        warm.0 as f64 / 1024.0,
        last.0 as f64 / 1024.0
    );
    println!(
        "- answer p99, minute 2 → {minutes}: {:.2} → {:.2} ms",
        warm.1.as_secs_f64() * 1e3,
        last.1.as_secs_f64() * 1e3
    );
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(engine.id().to_string())
        .status();
    let _ = engine.wait();
}
