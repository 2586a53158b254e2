//! `engine.distribute` with three real engine processes, the test API server
//! and a real redis-server or nats-server (every case runs on both): the
//! leader watches ConfigMaps and publishes each change; every replica runs a
//! share of them. Each run POSTs its event to a
//! loopback collector, so the collector sees every change that ran, in the
//! order the runs happened across the replicas.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use wasmtrigger_test_apiserver::ApiServer;

use crate::support::brokers::NatsServer;
use crate::support::http_server::TestServer;
use crate::support::redis_server::RedisServer;
use crate::support::{self, EngineProcess, Workspace};

/// The scheduled times of the ticks whose runs POSTed, with how often each came.
fn ticks(collector: &TestServer) -> BTreeMap<String, usize> {
    let mut ticks = BTreeMap::new();
    for seen in collector.seen() {
        let body: Value = serde_json::from_str(&seen.body).unwrap_or_default();
        let data: Value =
            serde_json::from_str(body["text"].as_str().unwrap_or("")).unwrap_or_default();
        if let Some(tick) = data["scheduledTime"].as_str() {
            *ticks.entry(tick.to_string()).or_insert(0) += 1;
        }
    }
    ticks
}

/// Every ConfigMap a run POSTed, as (name, n) in the order the POSTs came.
fn observed(collector: &TestServer) -> Vec<(String, u64)> {
    collector
        .seen()
        .iter()
        .filter_map(|seen| {
            let body: Value = serde_json::from_str(&seen.body).ok()?;
            let data: Value = serde_json::from_str(body["text"].as_str()?).ok()?;
            let object = &data["object"];
            let name = object["metadata"]["name"].as_str()?.to_string();
            let n = object["data"]["n"].as_str()?.parse().ok()?;
            Some((name, n))
        })
        .collect()
}

/// Per object, the `n`s its runs saw, in the order they ran.
fn by_object(seen: &[(String, u64)]) -> BTreeMap<String, Vec<u64>> {
    let mut map: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (name, n) in seen {
        map.entry(name.clone()).or_default().push(*n);
    }
    map
}

/// The `wasmtrigger_distributed_*` lines of a metrics page (what a failed assertion shows).
fn distributed_lines(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.contains("distributed"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The body of a 200 answer to a GET.
async fn get(url: &str) -> String {
    let response = reqwest::get(url).await.expect("GET answers");
    assert_eq!(response.status(), 200, "GET {url}");
    response.text().await.expect("body")
}

fn configmap(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": format!("cm-{i}"), "namespace": "default" },
        "data": { "n": "0" }
    })
}

fn patch(server: &ApiServer, i: usize, n: u64) {
    let change = json!({ "data": { "n": n.to_string() } });
    server
        .merge_patch("", "configmaps", "default", &format!("cm-{i}"), &change)
        .expect("patch");
}

/// What carries the distributed events.
enum Broker {
    Redis(RedisServer),
    Nats(NatsServer),
}

/// Which transport a case runs on.
#[derive(Clone, Copy, Debug)]
enum Via {
    Redis,
    Nats,
}

impl Broker {
    fn start(via: Via) -> Self {
        match via {
            Via::Redis => Broker::Redis(RedisServer::start()),
            Via::Nats => Broker::Nats(NatsServer::start()),
        }
    }

    /// `via: …, url: …` of `engine.distribute`.
    fn setting(&self) -> String {
        match self {
            Broker::Redis(r) => format!("via: redis, url: \"{}\"", r.url()),
            Broker::Nats(n) => format!("via: nats, url: \"{}\"", n.url()),
        }
    }

    /// The `watch` trigger's stream as `runsOn` names it.
    fn stream(&self) -> &'static str {
        match self {
            Broker::Redis(_) => "wasmtrigger:{watch}:events",
            Broker::Nats(_) => "NATS stream wasmtrigger_watch",
        }
    }

    /// Stops the server and starts it on the same port and data.
    fn restart(&mut self, down_for: Duration) {
        match self {
            Broker::Redis(r) => r.restart(down_for),
            Broker::Nats(n) => n.restart(down_for),
        }
    }

    /// Writes entries to the `watch` trigger's stream as anyone who can
    /// reach the server could: not through the engine.
    fn forge(&self, events: &[String]) {
        match self {
            Broker::Redis(r) => {
                let mut con = r.connection().unwrap();
                for event in events {
                    let _: String = redis::cmd("XADD")
                        .arg("wasmtrigger:{watch}:events")
                        .arg("*")
                        .arg("wasmtrigger.event")
                        .arg(event)
                        .query(&mut con)
                        .unwrap();
                }
            }
            Broker::Nats(n) => {
                for event in events {
                    n.publish_raw("wasmtrigger.watch.events.all", event.as_bytes());
                }
            }
        }
    }

    /// The errors the dead-lettered entries of `watch` carry.
    fn dead_letters(&self) -> Vec<String> {
        match self {
            Broker::Redis(r) => r
                .entries("wasmtrigger:{watch}:events:dead")
                .into_iter()
                .filter_map(|(_, fields)| {
                    fields
                        .into_iter()
                        .find(|(k, _)| k == "wasmtrigger.error")
                        .map(|(_, v)| v)
                })
                .collect(),
            Broker::Nats(n) => n
                .read("wasmtrigger_watch_dead", "wasmtrigger.watch.dead")
                .iter()
                .filter_map(|m| m["headers"]["Wasmtrigger-Error"].as_str().map(String::from))
                .collect(),
        }
    }

    /// Where a stalled run stands, per key or per consumer.
    fn stall(&self) -> String {
        match self {
            Broker::Redis(r) => {
                let mut con = r.connection().unwrap();
                let seq: HashMap<String, u64> = redis::cmd("HGETALL")
                    .arg("wasmtrigger:{watch}:seq")
                    .query(&mut con)
                    .unwrap_or_default();
                let done: HashMap<String, u64> = redis::cmd("HGETALL")
                    .arg("wasmtrigger:{watch}:done")
                    .query(&mut con)
                    .unwrap_or_default();
                let behind: Vec<_> = seq
                    .iter()
                    .filter(|(k, v)| done.get(*k) != Some(v))
                    .take(5)
                    .collect();
                let pending: redis::Value = redis::cmd("XPENDING")
                    .arg("wasmtrigger:{watch}:events")
                    .arg("wasmtrigger")
                    .query(&mut con)
                    .unwrap_or(redis::Value::Nil);
                format!(
                    "keys published/done {behind:?} (of {}); pending {pending:?}",
                    seq.len()
                )
            }
            Broker::Nats(n) => format!(
                "consumer {:?}",
                n.consumer("wasmtrigger_watch", "wasmtrigger")
            ),
        }
    }
}

/// A kube-watch trigger (updates only) whose action POSTs the event to
/// `collector`; its events are distributed through `broker`.
fn config(ws: &Workspace, collector: &TestServer, broker: &Broker, claim_idle: &str) -> PathBuf {
    ws.write(
        "distribute.yaml",
        &format!(
            r#"
engine:
  workers: 2
  distribute: {{ {}, claimIdle: {claim_idle} }}
  history: {{ maxPerTrigger: 100000 }}
triggers:
  - name: watch
    source: {{ type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [update] }}
    action:
      module: http-notify.wasm
      params: {{ url: "{}", text: "{{data}}" }}
      grants: {{ http: ["{}"] }}
  - name: tick
    source: {{ type: schedule, every: 250ms }}
    action:
      module: http-notify.wasm
      params: {{ url: "{}", text: "{{data}}" }}
      grants: {{ http: ["{}"] }}
"#,
            broker.setting(),
            collector.url("/echo"),
            collector.grant(),
            collector.url("/echo"),
            collector.grant()
        ),
    )
}

/// Waits until a replica leads and its watch has recorded where it stands.
async fn leader_watching(replicas: &[Option<EngineProcess>]) -> usize {
    support::eventually("a leader whose watch has listed", || {
        replicas.iter().position(|r| {
            r.as_ref().is_some_and(|r| {
                r.became_leader()
                    && r.lines().iter().any(|l| {
                        l["message"] == "distribute: the watch resumes where the last leader stood"
                    })
            })
        })
    })
    .await
}

struct Cluster {
    server: Arc<ApiServer>,
    broker: Broker,
    collector: TestServer,
    ws: Workspace,
    replicas: Vec<Option<EngineProcess>>,
}

/// `claim_idle`: how long a replica that stops answering keeps its entries.
async fn cluster(objects: usize, claim_idle: &str, via: Via) -> Cluster {
    let server = ApiServer::start(&[]);
    for i in 0..objects {
        server
            .create("", "configmaps", "default", configmap(i))
            .expect("create");
    }
    let broker = Broker::start(via);
    let collector = TestServer::start().await;
    let ws = Workspace::new();
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let config = config(&ws, &collector, &broker, claim_idle);
    let replicas = (0..3)
        .map(|n| Some(support::elected_replica(&ws, &config, &kubeconfig, n)))
        .collect();
    Cluster {
        server: Arc::new(server),
        broker,
        collector,
        ws,
        replicas,
    }
}

/// Patches every object `rounds` times (n = 1..=rounds), object by object
/// within a round, on a thread, `pause` between rounds; `done` when finished.
fn patch_in_background(
    server: &Arc<ApiServer>,
    objects: usize,
    rounds: u64,
    pause: Duration,
) -> (std::thread::JoinHandle<()>, Arc<AtomicBool>) {
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    let server = server.clone();
    let handle = std::thread::spawn(move || {
        for n in 1..=rounds {
            for i in 0..objects {
                patch(&server, i, n);
            }
            std::thread::sleep(pause);
        }
        flag.store(true, Ordering::SeqCst);
    });
    (handle, done)
}

/// What a stalled run looks like: objects behind, and where the stream stands.
fn stall(c: &Cluster, per_object: &BTreeMap<String, Vec<u64>>) -> String {
    let lagging: Vec<_> = per_object
        .iter()
        .filter(|(_, ns)| ns.last() != Some(&16))
        .take(5)
        .collect();
    format!("objects behind {lagging:?}; {}", c.broker.stall())
}

/// Every object's runs came in the order of its changes (an ordering
/// violation is a later `n` seen before an earlier one).
fn assert_in_order(per_object: &BTreeMap<String, Vec<u64>>) {
    for (name, ns) in per_object {
        assert!(
            ns.windows(2).all(|w| w[0] <= w[1]),
            "{name}'s changes ran out of order: {ns:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_run_5000_changes_once_each_in_order_and_share_them() {
    run_5000_changes(Via::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_nats_three_replicas_run_5000_changes_once_each_in_order_and_share_them() {
    run_5000_changes(Via::Nats).await;
}

async fn run_5000_changes(via: Via) {
    const OBJECTS: usize = 1000;
    const ROUNDS: u64 = 5;
    // Nothing fails here, so nothing may be claimed from a replica, however slow.
    let mut c = cluster(OBJECTS, "60s", via).await;
    let leader = leader_watching(&c.replicas).await;
    // A round at a time: a burst past the watch's 4,096-change buffer would
    // be resynced, coalescing an object's changes into its latest state.
    for round in 1..=ROUNDS {
        for i in 0..OBJECTS {
            patch(&c.server, i, round);
        }
        let ran = OBJECTS * round as usize;
        support::eventually("the round's changes run", || {
            (observed(&c.collector).len() >= ran).then_some(())
        })
        .await;
    }
    let total = OBJECTS * ROUNDS as usize;
    // Nothing more comes: no change runs twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = observed(&c.collector);
    let mut counts: HashMap<(String, u64), usize> = HashMap::new();
    for key in &seen {
        *counts.entry(key.clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), total, "every (object, change) once");
    assert!(
        counts.values().all(|&n| n == 1),
        "changes ran twice: {:?}",
        counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .take(5)
            .collect::<Vec<_>>()
    );
    let per_object = by_object(&seen);
    assert_in_order(&per_object);
    assert!(per_object.values().all(|ns| ns == &[1, 2, 3, 4, 5]));

    // Each replica ran a share; only the leader watched.
    let shares: Vec<usize> = c
        .replicas
        .iter()
        .map(|r| r.as_ref().unwrap().runs("watch").len())
        .collect();
    eprintln!("runs per replica: {shares:?} (leader: replica-{leader})");
    assert_eq!(shares.iter().sum::<usize>(), total, "{shares:?}");
    assert!(
        shares.iter().all(|&n| n > 0),
        "a replica ran nothing: {shares:?}"
    );
    for (n, r) in c.replicas.iter().enumerate() {
        let watched = r
            .as_ref()
            .unwrap()
            .lines()
            .iter()
            .any(|l| l["message"] == "kube-watch: watching");
        assert_eq!(watched, n == leader, "replica-{n} watched: {watched}");
    }

    // A schedule published by the leader: each tick once across the set,
    // run by more than one replica.
    let ticked = ticks(&c.collector);
    assert!(ticked.len() >= 4, "{ticked:?}");
    assert!(
        ticked.values().all(|&n| n == 1),
        "ticks fired twice: {ticked:?}"
    );
    let tick_runs: Vec<usize> = c
        .replicas
        .iter()
        .map(|r| r.as_ref().unwrap().runs("tick").len())
        .collect();
    assert!(
        tick_runs.iter().filter(|&&n| n > 0).count() >= 2,
        "one replica ran every tick: {tick_runs:?}"
    );

    // The API and the CLI say where the trigger's work runs.
    let base = c.replicas[leader].as_ref().unwrap().base_url();
    let triggers = get(&format!("{base}/api/v1/triggers")).await;
    assert!(
        triggers.contains(&format!(
            r#""runsOn":"every replica via {}""#,
            c.broker.stream()
        )),
        "{triggers}"
    );
    let (code, table, err) = support::run_cli(&["triggers", "--server", &base], None);
    assert_eq!(code, 0, "{err}");
    let row = table
        .lines()
        .find(|l| l.starts_with("watch "))
        .unwrap_or_default();
    assert!(
        table.starts_with("NAME") && table.contains("RUNS ON") && row.contains("every replica"),
        "{table}"
    );
    let metrics = get(&format!("{base}/metrics")).await;
    assert!(
        metrics.contains(&format!(
            "wasmtrigger_distributed_events_total{{trigger=\"watch\",outcome=\"published\"}} {total}"
        )),
        "{}",
        distributed_lines(&metrics)
    );

    // The dashboard's "Distributed" panels query what a distributing engine exports.
    let distributed: Vec<_> = support::dashboard_metrics()
        .into_iter()
        .filter(|(panel, _, _)| panel.starts_with("Distributed"))
        .collect();
    assert!(distributed.len() >= 3, "{distributed:?}");
    for (_, name, family) in distributed {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which a distributing engine lacks"
        );
    }

    // Every replica reports what it holds for a key's turn: nothing, now.
    for r in &c.replicas {
        let base = r.as_ref().unwrap().base_url();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let metrics = get(&format!("{base}/metrics")).await;
            if metrics.contains("wasmtrigger_distributed_held_events{trigger=\"watch\"} 0") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{}",
                distributed_lines(&metrics)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Hostile: whoever can write to the stream can only add entries the
    // consumers refuse: not an event, 100,000 arrays deep, or another
    // trigger's event. All are dead-lettered with the reason, and nothing runs.
    let other = wasmtrigger::event::Event::new("other", "kube-watch", "update", &json!({}));
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    c.broker.forge(&[
        "{not json".to_string(),
        deep,
        serde_json::to_string(&other).unwrap(),
    ]);
    let errors = support::eventually("the forged entries dead-lettered", || {
        let dead = c.broker.dead_letters();
        (dead.len() == 3).then_some(dead)
    })
    .await;
    assert_eq!(
        errors.iter().filter(|e| e.contains("not an event")).count(),
        2,
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("for trigger `other`, not `watch`")),
        "{errors:?}"
    );
    assert_eq!(observed(&c.collector).len(), total, "a forged entry ran");
    for r in c.replicas.iter_mut() {
        r.take().unwrap().stop();
    }
    drop(c.broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_leader_is_resumed_from_the_stream_and_a_redis_restart_loses_nothing() {
    killed_leader_and_restarted_server(Via::Redis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_nats_a_killed_leader_is_resumed_and_a_server_restart_loses_nothing() {
    killed_leader_and_restarted_server(Via::Nats).await;
}

async fn killed_leader_and_restarted_server(via: Via) {
    const OBJECTS: usize = 200;
    const ROUNDS: u64 = 16;
    let mut c = cluster(OBJECTS, "1s", via).await;
    let first = leader_watching(&c.replicas).await;
    let (patcher, done) =
        patch_in_background(&c.server, OBJECTS, ROUNDS, Duration::from_millis(500));

    // SIGKILL the leader once some changes ran: no release, no goodbye.
    support::eventually("some changes run", || {
        (observed(&c.collector).len() >= OBJECTS).then_some(())
    })
    .await;
    c.replicas[first].take().unwrap().kill();
    let second = leader_watching(&c.replicas).await;
    assert_ne!(first, second);

    // The server goes away and comes back (Redis's append-only file and
    // JetStream's store keep the streams).
    // The new leader publishes what changes now: later rounds run.
    let newest = |c: &Cluster| observed(&c.collector).iter().map(|(_, n)| *n).max();
    let at_takeover = newest(&c).unwrap_or(0);
    support::eventually("changes after the handover", || {
        (newest(&c) >= Some(at_takeover + 2)).then_some(())
    })
    .await;
    c.broker.restart(Duration::from_millis(500));

    while !done.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    patcher.join().unwrap();
    // No change is missed: every object's last change runs. Changes made
    // while no replica led are seen as the state the new leader listed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let per_object = by_object(&observed(&c.collector));
        if per_object.len() == OBJECTS && per_object.values().all(|ns| ns.last() == Some(&ROUNDS)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every object's last change ran: {}",
            stall(&c, &per_object)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = observed(&c.collector);
    let per_object = by_object(&seen);
    assert_in_order(&per_object);
    let distinct: std::collections::HashSet<&(String, u64)> = seen.iter().collect();
    let duplicates = seen.len() - distinct.len();
    let coalesced = OBJECTS * ROUNDS as usize - distinct.len();
    eprintln!(
        "{} runs: {duplicates} duplicates (at-least-once after the kill), {coalesced} changes coalesced while no replica led",
        seen.len()
    );
    // Duplicates are counted, not hidden.
    let survivor = c.replicas[second].as_ref().unwrap();
    let metrics = get(&format!("{}/metrics", survivor.base_url())).await;
    assert!(
        metrics.contains(
            "wasmtrigger_distributed_events_total{trigger=\"watch\",outcome=\"consumed\"}"
        ),
        "{metrics}"
    );
    for r in c.replicas.iter_mut().filter_map(Option::take) {
        r.stop();
    }
    let _ = &c.ws;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_nats_a_change_larger_than_the_server_takes_runs_on_the_leader() {
    // nats-server takes at most 1 MiB per message by default; a ConfigMap
    // may hold more. Its change is not lost: the leader runs it itself.
    let mut c = cluster(2, "60s", Via::Nats).await;
    let leader = leader_watching(&c.replicas).await;
    let big = json!({ "data": { "n": "1", "pad": "x".repeat(1_200_000) } });
    c.server
        .merge_patch("", "configmaps", "default", "cm-0", &big)
        .expect("patch");
    patch(&c.server, 1, 1);
    let base = c.replicas[leader].as_ref().unwrap().base_url();
    support::eventually("both changes run", || {
        let runs: usize = c
            .replicas
            .iter()
            .map(|r| r.as_ref().unwrap().runs("watch").len())
            .sum();
        (runs >= 2).then_some(())
    })
    .await;
    let metrics = get(&format!("{base}/metrics")).await;
    let line = |outcome: &str| {
        format!("wasmtrigger_distributed_events_total{{trigger=\"watch\",outcome=\"{outcome}\"}} 1")
    };
    assert!(
        metrics.contains(&line("local")) && metrics.contains(&line("published")),
        "{}",
        distributed_lines(&metrics)
    );
    let leader_log = c.replicas[leader].as_ref().unwrap().lines();
    assert!(
        leader_log.iter().any(|l| l["message"].as_str().is_some_and(
            |m| m.starts_with("distribute: events larger than the server's largest message")
        )),
        "no warning on the leader"
    );
    for r in c.replicas.iter_mut().filter_map(Option::take) {
        r.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_change_published_again_is_stored_once_and_positions_read_back() {
    use wasmtrigger::capabilities::secrets::SecretStore;
    use wasmtrigger::config::{DistributeSettings, Endpoint, SecretsSettings, Transport};
    use wasmtrigger::distribute::{Distributor, Outgoing};
    use wasmtrigger::event::Event;

    let nats = NatsServer::start();
    let distributor = Distributor::new(
        DistributeSettings {
            via: Transport::Nats,
            server: Endpoint::Url(nats.url()),
            prefix: "t".into(),
            claim_idle: Duration::from_secs(30),
            batch: 64,
        },
        SecretStore::from_settings(&SecretsSettings::default()),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    assert_eq!(
        distributor.positions("w.x").await.unwrap(),
        None,
        "nobody listed yet"
    );
    let update = |version: &str, pad: usize| Outgoing {
        event: Event::new(
            "w.x",
            "kube-watch",
            "update",
            &json!({ "type": "update", "object": {
                "metadata": { "namespace": "default", "name": "cm-1", "resourceVersion": version },
                "data": { "pad": "x".repeat(pad) } } }),
        ),
        key: Some("uid-1".into()),
    };
    let at = |name: &str, version: Option<&str>| {
        (
            ("default".to_string(), name.to_string()),
            version.map(String::from),
        )
    };
    let too_large = distributor
        .publish(
            "w.x",
            &[update("5", 10)],
            &[at("cm-1", Some("5")), at("cm-2", Some("9"))],
            true,
            &stop,
        )
        .await;
    assert_eq!(too_large, Some(vec![]));
    // A new leader that finds the same change again (its own event id) and
    // a deleted object: the change is dropped by the stream, the position goes.
    let too_large = distributor
        .publish("w.x", &[update("5", 10)], &[at("cm-2", None)], true, &stop)
        .await;
    assert_eq!(too_large, Some(vec![]));
    assert_eq!(distributor.unfinished("w.x").await.unwrap(), 1);
    let positions = distributor.positions("w.x").await.unwrap().expect("listed");
    assert_eq!(
        positions.into_iter().collect::<Vec<_>>(),
        vec![(("default".to_string(), "cm-1".to_string()), "5".to_string())]
    );
    // Larger than the server's 1 MiB: handed back unpublished, in place.
    let too_large = distributor
        .publish(
            "w.x",
            &[update("6", 10), update("7", 1_100_000), update("8", 10)],
            &[],
            false,
            &stop,
        )
        .await;
    assert_eq!(too_large, Some(vec![1]));
    assert_eq!(distributor.unfinished("w.x").await.unwrap(), 3);
    // The trigger's `.` is escaped in the names; the key's events share one subject.
    let names = wasmtrigger::config::DistributedSubjects::of("t", "w.x");
    let subject = wasmtrigger::distribute::nats::subject(&names, Some("uid-1"));
    assert!(subject.starts_with("t.w_dx.events.k."), "{subject}");
    assert!(nats.read("t_w_dx", "t.w_dx.events.all").is_empty());
    let messages = nats.read("t_w_dx", &subject);
    let versions: Vec<String> = messages
        .iter()
        .map(|m| {
            let event: Value = serde_json::from_str(m["data"].as_str().unwrap()).unwrap();
            let data: Value = serde_json::from_str(event["data"].as_str().unwrap()).unwrap();
            data["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(versions, ["5", "6", "8"], "in order, once each");
}
