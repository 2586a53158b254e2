//! `distribute`: kube-watch changes per second with 1, 2 and 3 replicas
//! under `engine.distribute` (real `wasmtrigger run` processes, leader
//! election against the test API server, a real redis-server and a real
//! nats-server, one set of rows each), against one
//! engine running the same trigger locally. All processes share this
//! machine's cores, so the table also gives the CPU each change costs
//! across the set (user + system time of every replica over the run),
//! from which scaling on more cores follows.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Mode, Table};
use crate::support::brokers::NatsServer;
use crate::support::redis_server::RedisServer;
use crate::support::{self, EngineProcess, Workspace};

/// The distribute table.
pub fn distribute(mode: Mode) -> Table {
    // Each object changes once per row: a watch that falls behind coalesces
    // an object's changes into its latest state, so repeated changes to one
    // object would not all be runs.
    let objects = match mode {
        Mode::Full => 20_000,
        Mode::Smoke => 100,
    };
    let changes = objects;
    let server = wasmtrigger_test_apiserver::ApiServer::start(&[]);
    for i in 0..objects {
        let object = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": format!("cm-{i}"), "namespace": "default" },
            "data": { "n": "0" }
        });
        server
            .create("", "configmaps", "default", object)
            .expect("create");
    }
    let redis = RedisServer::start();
    let nats = NatsServer::start();
    let mut table = Table::new(
        format!("kube-watch → log-event.wasm, {changes} ConfigMaps changed once each, by replicas"),
        &[
            "engines",
            "changes/s",
            "vs one local engine",
            "CPU per change (all processes)",
            "runs per replica",
        ],
    );
    let mut base = None;
    let (via_redis, via_nats) = (
        format!("via: redis, url: \"{}\"", redis.url()),
        format!("via: nats, url: \"{}\"", nats.url()),
    );
    let rows = [
        (1, None),
        (1, Some(("redis", &via_redis))),
        (2, Some(("redis", &via_redis))),
        (3, Some(("redis", &via_redis))),
        (1, Some(("nats", &via_nats))),
        (2, Some(("nats", &via_nats))),
        (3, Some(("nats", &via_nats))),
    ];
    for (row, (replicas, via)) in rows.into_iter().enumerate() {
        let distributed = via.is_some();
        let ws = Workspace::new();
        let kubeconfig = ws.path().join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        // A prefix per row: each starts with its own streams.
        let distribute = match via {
            Some((_, setting)) => {
                format!("distribute: {{ {setting}, prefix: \"bench{row}\" }}, ")
            }
            None => String::new(),
        };
        let config = ws.write(
            "bench.yaml",
            &format!(
                "engine: {{ {distribute}queueSize: 1000, journal: false, history: {{ maxPerTrigger: 100000 }} }}\n\
                 triggers:\n\
                 \x20 - name: cm\n\
                 \x20   source: {{ type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [update] }}\n\
                 \x20   action: {{ module: log-event.wasm }}\n"
            ),
        );
        let engines: Vec<EngineProcess> = (0..replicas)
            .map(|n| replica(&ws, &config, &kubeconfig, n, distributed))
            .collect();
        wait_watching(&engines, distributed);
        let canaries = canary(&server, &engines, "n");
        let changes_and_canaries = changes + canaries;
        let cpu_before: u64 = engines.iter().map(|e| cpu_ticks(e.pid())).sum();
        let started = Instant::now();
        for i in 0..objects {
            server
                .merge_patch(
                    "",
                    "configmaps",
                    "default",
                    &format!("cm-{i}"),
                    &json!({ "data": { "n": format!("row-{row}") } }),
                )
                .expect("patch");
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        let ran =
            |engines: &[EngineProcess]| engines.iter().map(|e| e.runs("cm").len()).sum::<usize>();
        while ran(&engines) < changes_and_canaries {
            assert!(
                Instant::now() < deadline,
                "{} of {changes} changes ran",
                ran(&engines)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let elapsed = started.elapsed();
        let cpu: u64 = engines.iter().map(|e| cpu_ticks(e.pid())).sum::<u64>() - cpu_before;
        let shares: Vec<String> = engines
            .iter()
            .map(|e| e.runs("cm").len().to_string())
            .collect();
        assert_eq!(ran(&engines), changes_and_canaries, "each change once");
        let rate = changes as f64 / elapsed.as_secs_f64();
        let base = *base.get_or_insert(rate);
        let per_change = Duration::from_secs_f64(cpu as f64 / ticks_per_second() / changes as f64);
        table.row(vec![
            match via {
                Some((name, _)) => format!("{replicas} distributed via {name}"),
                None => "1 local (no distribute)".into(),
            },
            format!("{rate:.0}"),
            format!("{:.2}×", rate / base),
            super::fmt_duration(per_change),
            shares.join(" / "),
        ]);
        for engine in engines {
            engine.stop();
        }
    }
    table.notes.push(format!(
        "Every object patched once per row, as fast as the in-process API server takes it; the clock stops when every change has a run on some replica. \
         Journal off in every row (a distributed event's durable record is the stream). Every process shares this machine's {} cores with the API server, Redis and NATS.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    table
}

fn replica(
    ws: &Workspace,
    config: &Path,
    kubeconfig: &Path,
    n: usize,
    elect: bool,
) -> EngineProcess {
    let identity = format!("replica-{n}");
    let mut args = vec!["--kubeconfig", kubeconfig.to_str().expect("path")];
    if elect {
        args.extend(["--leader-identity", &identity]);
        args.extend(support::FAST_LEADER_ELECTION);
    }
    let args: Vec<&str> = args.into_iter().collect();
    EngineProcess::start(config, &ws.path().join(format!("state-{n}")), &args)
}

/// Waits until the watch is live: the distributing leader has resumed (its
/// first list is compared and recorded), or the local watch has listed.
fn wait_watching(engines: &[EngineProcess], distributed: bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let message = if distributed {
        "distribute: the watch resumes where the last leader stood"
    } else {
        "kube-watch: watching"
    };
    while !engines
        .iter()
        .any(|e| e.lines().iter().any(|l| l["message"] == message))
    {
        assert!(Instant::now() < deadline, "no watch started");
        std::thread::sleep(Duration::from_millis(20));
    }
    if !distributed {
        // Listed only a moment after it logs: let the first list land.
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Patches `cm-0` until a change comes through as a run of trigger `cm` on
/// one of `engines`: the watch is live (its first list done) only then; a
/// change made before is part of that list, not a change. Returns how many
/// canary runs there were. The canary writes data field `field`, the one
/// the measured changes write, so the first measured change is a change.
pub(super) fn canary(
    server: &wasmtrigger_test_apiserver::ApiServer,
    engines: &[EngineProcess],
    field: &str,
) -> usize {
    let ran = || engines.iter().map(|e| e.runs("cm").len()).sum::<usize>();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0;
    while ran() == 0 {
        assert!(
            Instant::now() < deadline,
            "the watch never delivered a change"
        );
        attempt += 1;
        let change = json!({ "data": { field: format!("canary-{attempt}") } });
        server
            .merge_patch("", "configmaps", "default", "cm-0", &change)
            .expect("patch");
        let wait = Instant::now() + Duration::from_secs(1);
        while ran() == 0 && Instant::now() < wait {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Canaries still in flight land before the clock starts.
    std::thread::sleep(Duration::from_millis(300));
    ran()
}

/// User + system CPU time of a process so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    get(11) + get(12)
}

/// `/proc` reports CPU times in USER_HZ, which Linux fixes at 100 for user space.
fn ticks_per_second() -> f64 {
    100.0
}
