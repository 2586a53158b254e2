//! Leader election with three real engine processes against the test API
//! server: exactly one leads and runs the schedule; killing it hands the
//! lease over; a graceful stop releases it; across the whole set each
//! schedule tick has its effect (an HTTP POST to a loopback server) once.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use wasmtrigger_test_apiserver::ApiServer;

use crate::support::cluster::LeastPrivilege;
use crate::support::http_server::TestServer;
use crate::support::{self, EngineProcess, Workspace};

/// Ticks (scheduledTime) the collector received, with how often each came.
fn ticks(collector: &TestServer) -> BTreeMap<String, usize> {
    let mut ticks = BTreeMap::new();
    for seen in collector.seen() {
        let body: Value = serde_json::from_str(&seen.body).unwrap();
        let data: Value = serde_json::from_str(body["text"].as_str().unwrap()).unwrap();
        let tick = data["scheduledTime"].as_str().unwrap().to_string();
        *ticks.entry(tick).or_insert(0) += 1;
    }
    ticks
}

fn lease_holder(server: &ApiServer) -> Option<String> {
    server
        .get(
            "coordination.k8s.io",
            "leases",
            "default",
            "wasmtrigger-leader",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

/// A per-second schedule whose every tick POSTs its data to `collector`, and
/// a webhook (which every replica serves).
fn tick_config(ws: &Workspace, collector: &TestServer) -> PathBuf {
    ws.write(
        "triggers.yaml",
        &format!(
            r#"
triggers:
  - name: tick
    source: {{ type: schedule, cron: "* * * * * *" }}
    action:
      module: http-notify.wasm
      params: {{ url: "{}", text: "{{data}}" }}
      grants: {{ http: ["{}"] }}
  - name: hook
    source: {{ type: webhook, auth: none }}
    action: {{ module: log-event.wasm }}
"#,
            collector.url("/echo"),
            collector.grant()
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_elect_one_leader_hand_over_and_fire_each_tick_once() {
    // Every replica holds only what `wasmtrigger rbac --leader-election` prints.
    let server = LeastPrivilege::start();
    let collector = TestServer::start().await;
    let ws = Workspace::new();
    let config = tick_config(&ws, &collector);
    let kubeconfig = server.grant(&ws, &config, &["--leader-election"]);
    let start = |n: usize| support::elected_replica(&ws, &config, &kubeconfig, n);
    let mut replicas: Vec<Option<EngineProcess>> = (0..3).map(|n| Some(start(n))).collect();
    let leader_of = |replicas: &[Option<EngineProcess>]| -> Vec<usize> {
        (0..replicas.len())
            .filter(|&n| {
                replicas[n]
                    .as_ref()
                    .is_some_and(EngineProcess::became_leader)
            })
            .collect()
    };

    // One leader, and only it runs the schedule.
    let first = support::eventually("a leader", || {
        let leaders = leader_of(&replicas);
        (!leaders.is_empty()).then_some(leaders)
    })
    .await;
    assert_eq!(first.len(), 1, "exactly one leader: {first:?}");
    let first = first[0];
    assert_eq!(
        lease_holder(&server).as_deref(),
        Some(format!("replica-{first}").as_str())
    );
    replicas[first].as_ref().unwrap().wait_runs("tick", 3);
    for (n, replica) in replicas.iter().enumerate() {
        if n != first {
            let replica = replica.as_ref().unwrap();
            assert!(
                replica.runs("tick").is_empty(),
                "replica {n} ran the schedule"
            );
            assert!(!replica.became_leader(), "replica {n} also leads");
            // Webhooks are not singletons: a follower takes them.
            let response = reqwest::Client::new()
                .post(format!("{}/hooks/hook", replica.base_url()))
                .body("{}")
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202, "replica {n}");
            replica.wait_runs("hook", 1);
        }
    }

    // A crash: no release, the others wait out the lease and one takes over.
    let killed = std::time::Instant::now();
    replicas[first].take().unwrap().kill();
    let second = support::eventually("a new leader", || {
        let leaders = leader_of(&replicas);
        (!leaders.is_empty()).then_some(leaders)
    })
    .await;
    // Reported, not asserted (timing depends on the machine): about the lease duration.
    eprintln!("handover after a crash: {:?}", killed.elapsed());
    assert_eq!(second.len(), 1, "{second:?}");
    let second = second[0];
    replicas[second].as_ref().unwrap().wait_runs("tick", 3);
    let third = (0..3).find(|&n| n != first && n != second).unwrap();
    assert!(!replicas[third].as_ref().unwrap().became_leader());

    // A graceful stop releases the lease: the last replica takes over.
    let stopping = std::time::Instant::now();
    let (code, log) = replicas[second].take().unwrap().stop_and_log();
    assert_eq!(code, 0);
    assert!(log.contains("released the lease"), "{log}");
    support::eventually("the last replica to lead", || {
        replicas[third]
            .as_ref()
            .is_some_and(EngineProcess::became_leader)
            .then_some(())
    })
    .await;
    eprintln!("handover after a graceful stop: {:?}", stopping.elapsed());
    replicas[third].as_ref().unwrap().wait_runs("tick", 2);
    assert_eq!(
        lease_holder(&server).as_deref(),
        Some(format!("replica-{third}").as_str())
    );

    let (code, _) = replicas[third].take().unwrap().stop_and_log();
    assert_eq!(code, 0);
    let ticks = ticks(&collector);
    assert!(ticks.len() >= 8, "{ticks:?}");
    let doubled: Vec<_> = ticks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        doubled.is_empty(),
        "ticks fired twice across replicas: {doubled:?}"
    );
    server.assert_nothing_forbidden();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_that_cannot_renew_stops_its_schedules_before_stepping_down() {
    let server = ApiServer::start(&[]);
    let collector = TestServer::start().await;
    let ws = Workspace::new();
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let config = tick_config(&ws, &collector);
    let start = |n: usize| support::elected_replica(&ws, &config, &kubeconfig, n);
    let replicas = [start(0), start(1)];
    let leader = support::eventually("a leader", || {
        replicas.iter().position(EngineProcess::became_leader)
    })
    .await;
    replicas[leader].wait_runs("tick", 2);

    // The API server refuses every Lease write for a while (a 500: the kube
    // client itself retries 429, 503 and 504).
    for _ in 0..40 {
        server.fail_next(
            "PUT",
            "/leases/wasmtrigger-leader",
            wasmtrigger_test_apiserver::ApiError::new(500, "InternalError", "etcd is unavailable"),
        );
    }
    let lines = replicas[leader].wait_for("the leader to step down", |lines| {
        lines
            .iter()
            .any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("could not renew the lease"))
            })
            .then(|| lines.to_vec())
    });
    // The schedule stopped with the step-down: no tick ran after it on this
    // replica until it led again (one run may have been in flight).
    let down = lines
        .iter()
        .position(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("could not renew the lease"))
        })
        .unwrap();
    let other = 1 - leader;
    support::eventually("a leader after the outage", || {
        let led_again = replicas[leader].lines()[down..]
            .iter()
            .any(|l| l["message"] == "became the leader");
        (led_again || replicas[other].became_leader()).then_some(())
    })
    .await;
    let after = replicas[leader].lines();
    let again = after[down..]
        .iter()
        .position(|l| l["message"] == "became the leader")
        .map(|i| down + i)
        .unwrap_or(after.len());
    let late_runs = after[down..again]
        .iter()
        .filter(|l| l["message"] == "run finished" && l["trigger"] == "tick")
        .count();
    assert!(late_runs <= 1, "{late_runs} ticks ran after stepping down");
    for replica in replicas {
        assert_eq!(replica.stop(), 0);
    }
    let doubled: Vec<_> = ticks(&collector)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(doubled.is_empty(), "ticks fired twice: {doubled:?}");
}
