//! Kubernetes, against the loopback test API server: the Secret provider,
//! and the `kube-watch` source (real
//! protocol, unmodified kube client): Deployments through the ready-replicas
//! filter, initial lists only when asked, one shared watch serving triggers
//! with different event types, noise skipping, and a cut watch plus a
//! compaction that lose and duplicate nothing. Verified only against the
//! test server (see tests/kube-apiserver/README.md for how it differs).

use std::sync::Arc;

use serde_json::{Value, json};
use wasmtrigger::engine::{Engine, EngineOptions};
use wasmtrigger::runs::RunStatus;
use wasmtrigger_test_apiserver::{ApiError, ApiServer, ServerOptions, minimal_crd};

use crate::support::cluster::LeastPrivilege;
use crate::support::{self, Collector, EngineProcess, Workspace};

pub(crate) async fn start(
    ws: &Workspace,
    server: &ApiServer,
    yaml: &str,
) -> (Engine, Arc<Collector>) {
    let config = ws.write("triggers.yaml", yaml);
    start_config(ws, server, &config).await
}

/// Starts an engine on a config file, connected to `server`.
pub(crate) async fn start_config(
    ws: &Workspace,
    server: &ApiServer,
    config: &std::path::Path,
) -> (Engine, Arc<Collector>) {
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    start_connected(ws, &kubeconfig, config).await
}

/// Starts an engine on a config file, connected through `kubeconfig`.
pub(crate) async fn start_connected(
    ws: &Workspace,
    kubeconfig: &std::path::Path,
    config: &std::path::Path,
) -> (Engine, Arc<Collector>) {
    let kubeconfig = kubeconfig.to_path_buf();
    let options = EngineOptions {
        module_cache: Some(support::shared_cache()),
        kube: wasmtrigger::kube::KubeConnection::kubeconfig(kubeconfig),
        ..EngineOptions::new(ws.state_dir())
    };
    support::start_engine_at(config, support::modules(), options).await
}

/// The event a log-event run received (its output is the event).
pub(crate) fn event_of(record: &wasmtrigger::runs::RunRecord) -> Value {
    serde_json::from_str(record.output.as_deref().expect("output")).unwrap()
}

pub(crate) fn deployment(name: &str, replicas: i64, ready: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {}},
        "status": {"readyReplicas": ready},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_flow_through_the_ready_replicas_filter() {
    let server = ApiServer::start(&[]);
    let ws = Workspace::new();
    let (engine, runs) = start(
        &ws,
        &server,
        r#"
triggers:
  - name: rollout-done
    source: { type: kube-watch, apiVersion: apps/v1, kind: Deployment, namespace: default }
    filter: { module: ready-replicas.wasm }
    action: { module: log-event.wasm }
"#,
    )
    .await;
    // The watch starts asynchronously; objects created before it lists are
    // part of the initial list, which fires nothing without `initial: true`.
    support::eventually("the watch to start", || {
        (server.watch_requests("deployments") > 0).then_some(())
    })
    .await;
    server
        .create("apps", "deployments", "default", deployment("web", 3, 0))
        .unwrap();
    let first = runs.wait_runs("rollout-done", 1).await;
    assert_eq!(first[0].status, RunStatus::Filtered, "0 of 3 ready");
    assert_eq!(first[0].kind, "create");

    server
        .merge_patch(
            "apps",
            "deployments",
            "default",
            "web",
            &json!({"status": {"readyReplicas": 3}}),
        )
        .unwrap();
    let runs_now = runs.wait_runs("rollout-done", 2).await;
    let done = &runs_now[1];
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    let event = event_of(done);
    assert_eq!(event["source"], "kube-watch");
    assert_eq!(event["kind"], "update");
    assert_eq!(event["data"]["type"], "update");
    assert_eq!(event["data"]["object"]["status"]["readyReplicas"], 3);
    assert_eq!(
        event["data"]["oldObject"]["status"]["readyReplicas"], 0,
        "the old object comes along"
    );

    server
        .delete("apps", "deployments", "default", "web")
        .unwrap();
    let all = runs.wait_runs("rollout-done", 3).await;
    assert_eq!(all[2].kind, "delete");
    engine.shutdown().await;
}

/// kube-trigger's kpack example: act when an Image built by a third-party
/// controller becomes Ready. The kind exists only because its CRD was
/// applied with kubectl; the status arrives through the status subresource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_defined_by_an_applied_crd_drives_a_trigger() {
    let server = ApiServer::start(&[]);
    let ws = Workspace::new();
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let apply = ["apply", "--validate=false", "-f", "-"];
    support::kubectl(
        Some(&kubeconfig),
        &apply,
        &minimal_crd("kpack.io", "v1alpha2", "Image", "images"),
    );
    support::kubectl(
        Some(&kubeconfig),
        &[
            "wait",
            "--for=condition=established",
            "--timeout=20s",
            "crd/images.kpack.io",
        ],
        "",
    );
    let (engine, runs) = start(
        &ws,
        &server,
        r#"
triggers:
  - name: image-ready
    source: { type: kube-watch, apiVersion: kpack.io/v1alpha2, kind: Image, namespace: default }
    filter:
      cel: has(event.data.object.status) && event.data.object.status.conditions.exists(c, c.type == "Ready" && c.status == "True")
    action: { module: log-event.wasm }
"#,
    )
    .await;
    support::eventually("the watch to start", || {
        (server.watch_requests("images") > 0).then_some(())
    })
    .await;
    support::kubectl(
        Some(&kubeconfig),
        &apply,
        "apiVersion: kpack.io/v1alpha2\nkind: Image\nmetadata: { name: app, namespace: default }\nspec: { tag: registry.local/app }\n",
    );
    let first = runs.wait_runs("image-ready", 1).await;
    assert_eq!(first[0].status, RunStatus::Filtered, "no status yet");
    support::kubectl(
        Some(&kubeconfig),
        &[
            "patch",
            "image.kpack.io",
            "app",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"latestImage":"registry.local/app@sha256:1","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ],
        "",
    );
    let all = runs.wait_runs("image-ready", 2).await;
    assert_eq!(all[1].status, RunStatus::Succeeded, "{:?}", all[1]);
    let event = event_of(&all[1]);
    assert_eq!(event["data"]["object"]["kind"], "Image");
    assert_eq!(
        event["data"]["object"]["status"]["latestImage"],
        "registry.local/app@sha256:1"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shared_watch_serves_each_trigger_only_its_own_events() {
    let server = ApiServer::start(&[]);
    server
        .create(
            "",
            "configmaps",
            "default",
            json!({"metadata": {"name": "pre"}, "data": {"n": "0"}}),
        )
        .unwrap();
    let ws = Workspace::new();
    let (engine, runs) = start(
        &ws,
        &server,
        r#"
triggers:
  - name: on-create
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [create], initial: true }
    action: { module: log-event.wasm }
  - name: on-update
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [update] }
    action: { module: log-event.wasm }
  - name: loud
    source: { type: kube-watch, apiVersion: apps/v1, kind: Deployment, namespace: default, events: [update] }
    action: { module: log-event.wasm }
  - name: quiet
    source: { type: kube-watch, apiVersion: apps/v1, kind: Deployment, namespace: default, events: [update], skipNoise: true }
    action: { module: log-event.wasm }
"#,
    )
    .await;
    // The existing object: a create for the trigger that wants the initial list only.
    let created = runs.wait_runs("on-create", 1).await;
    assert_eq!(
        event_of(&created[0])["data"]["object"]["metadata"]["name"],
        "pre"
    );

    server
        .create(
            "",
            "configmaps",
            "default",
            json!({"metadata": {"name": "new"}}),
        )
        .unwrap();
    runs.wait_runs("on-create", 2).await;
    server
        .merge_patch(
            "",
            "configmaps",
            "default",
            "new",
            &json!({"data": {"k": "v"}}),
        )
        .unwrap();
    server
        .merge_patch(
            "",
            "configmaps",
            "default",
            "new",
            &json!({"data": {"k": "w"}}),
        )
        .unwrap();
    let updates = runs.wait_runs("on-update", 2).await;
    server.delete("", "configmaps", "default", "new").unwrap();

    // A status-only change is noise for `quiet`, a change for `loud`.
    support::eventually("the deployment watch", || {
        (server.watch_requests("deployments") > 0).then_some(())
    })
    .await;
    server
        .create("apps", "deployments", "default", deployment("api", 2, 0))
        .unwrap();
    let status = json!({"status": {"readyReplicas": 1}});
    server
        .merge_patch("apps", "deployments", "default", "api", &status)
        .unwrap();
    let spec = json!({"spec": {"replicas": 3}});
    server
        .merge_patch("apps", "deployments", "default", "api", &spec)
        .unwrap();
    runs.wait_runs("loud", 2).await;
    let quiet = runs.wait_runs("quiet", 1).await;
    assert_eq!(event_of(&quiet[0])["data"]["object"]["spec"]["replicas"], 3);
    // Give a wrongly routed delete time to show up, bounded by a later marker event.
    server
        .create(
            "",
            "configmaps",
            "default",
            json!({"metadata": {"name": "marker"}}),
        )
        .unwrap();
    runs.wait_runs("on-create", 3).await;
    engine.shutdown().await;
    assert_eq!(
        runs.of("on-create").len(),
        3,
        "creates only: pre, new, marker"
    );
    assert_eq!(runs.of("on-update").len(), updates.len());
    assert_eq!(runs.of("on-update").len(), 2, "updates only");
    assert_eq!(
        runs.of("quiet").len(),
        1,
        "the status-only update was skipped"
    );
    assert_eq!(runs.of("loud").len(), 2);
    assert_eq!(
        server.watch_requests("configmaps"),
        1,
        "two triggers, one watch"
    );
    assert_eq!(
        server.watch_requests("deployments"),
        1,
        "two triggers, one watch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_queue_and_the_watch_buffer_loses_nothing() {
    // 5,000 objects each changed once, as fast as the API server takes it,
    // into a queue of 8: the trigger waits for room (nothing refused) and,
    // falling behind the shared watch's 4,096-change buffer, resyncs.
    let server = ApiServer::start(&[]);
    let objects = 5_000;
    for i in 0..objects {
        server
            .create(
                "",
                "configmaps",
                "default",
                json!({"metadata": {"name": format!("c{i}")}, "data": {"n": "0"}}),
            )
            .unwrap();
    }
    let ws = Workspace::new();
    let (engine, runs) = start(
        &ws,
        &server,
        r#"
engine: { queueSize: 8, workers: 2 }
triggers:
  - name: burst
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [update] }
    action: { module: log-event.wasm }
"#,
    )
    .await;
    support::eventually("the watch to start", || {
        (server.watch_requests("configmaps") > 0).then_some(())
    })
    .await;
    // A first change proves the watch is live before the burst.
    server
        .merge_patch(
            "",
            "configmaps",
            "default",
            "c0",
            &json!({"data": {"n": "first"}}),
        )
        .unwrap();
    runs.wait_runs("burst", 1).await;
    for i in 0..objects {
        server
            .merge_patch(
                "",
                "configmaps",
                "default",
                &format!("c{i}"),
                &json!({"data": {"n": "burst"}}),
            )
            .unwrap();
    }
    let all = runs.wait_runs("burst", objects + 1).await;
    engine.shutdown().await;
    let mut names: Vec<String> = all
        .iter()
        .skip(1)
        .map(|r| {
            let e: Value = serde_json::from_str(
                &r.recording
                    .as_ref()
                    .unwrap()
                    .event
                    .as_ref()
                    .unwrap()
                    .data
                    .clone()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(
                e["object"]["data"]["n"], "burst",
                "each run saw the burst's version"
            );
            e["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), objects, "every changed object ran once");
    assert_eq!(all.len(), objects + 1, "and nothing twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_watch_and_a_compaction_lose_and_duplicate_nothing() {
    let server = ApiServer::start(&[]);
    server
        .create(
            "",
            "configmaps",
            "default",
            json!({"metadata": {"name": "c"}, "data": {"n": "0"}}),
        )
        .unwrap();
    let ws = Workspace::new();
    let (engine, runs) = start(
        &ws,
        &server,
        r#"
triggers:
  - name: changes
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [update, delete] }
    action: { module: log-event.wasm }
"#,
    )
    .await;
    support::eventually("the watch to start", || {
        (server.watch_requests("configmaps") > 0).then_some(())
    })
    .await;
    let set = |n: &str| {
        server
            .merge_patch("", "configmaps", "default", "c", &json!({"data": {"n": n}}))
            .unwrap();
    };
    set("1");
    runs.wait_runs("changes", 1).await;
    // Cut the watch, keep it away for a moment, change the object and compact
    // the history: the re-watch gets 410 and the watcher relists.
    server.fail_next(
        "GET",
        "watch=true",
        ApiError::new(500, "InternalError", "injected"),
    );
    server.cut_watches();
    set("2");
    server.compact();
    runs.wait_runs("changes", 2).await;
    set("3");
    server.delete("", "configmaps", "default", "c").unwrap();
    runs.wait_runs("changes", 4).await;
    engine.shutdown().await;
    let seen: Vec<(String, String)> = runs
        .of("changes")
        .iter()
        .map(|r| {
            let e = event_of(r);
            (
                e["kind"].as_str().unwrap().to_string(),
                e["data"]["object"]["data"]["n"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("update", "1"),
        ("update", "2"),
        ("update", "3"),
        ("delete", "3"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    // With the history compacted, the second change can only have come from
    // a relist (after the in-stream 410 or the failed re-watch, whichever the
    // watcher met first), diffed against what the source had seen.
    assert_eq!(seen, expected, "every change once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_come_from_a_kubernetes_secret_and_stay_redacted() {
    use base64::Engine as _;
    let server = ApiServer::start(&[]);
    let value = "s3cret-from-the-api";
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    server
        .create(
            "",
            "secrets",
            "default",
            json!({"metadata": {"name": "app-secrets"}, "data": {"token": encoded}}),
        )
        .unwrap();
    let ws = Workspace::new();
    let (engine, runs) = start(
        &ws,
        &server,
        r#"
engine:
  secrets: { kubernetes: { name: app-secrets } }
triggers:
  - name: reader
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: secret, name: token }, grants: { secrets: [token] }, retry: { max: 0 } }
  - name: absent
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: secret, name: other }, grants: { secrets: [other] }, retry: { max: 0 } }
"#,
    )
    .await;
    let read = runs.wait_runs("reader", 1).await;
    assert_eq!(read[0].status, RunStatus::Succeeded, "{:?}", read[0]);
    assert_eq!(
        read[0].output.as_deref(),
        Some("[redacted]"),
        "the value was read, and hidden"
    );
    let absent = runs.wait_runs("absent", 1).await;
    support::assert_failed_with(&absent[0], "not found");
    engine.shutdown().await;
    let everything = format!("{:?}", runs.all());
    assert!(
        !everything.contains(value),
        "the value never appears in a record"
    );
}

#[tokio::test]
async fn an_unusable_kubeconfig_is_a_clear_error() {
    let connector = wasmtrigger::kube::KubeConnector::new(
        wasmtrigger::kube::KubeConnection::kubeconfig("/nonexistent/kubeconfig".into()),
    );
    let Err(err) = connector.client().await else {
        panic!("a missing kubeconfig must not connect");
    };
    let err = err.to_string();
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
}

/// A service account directory as the kubelet mounts it.
fn service_account(ws: &Workspace, token: &str) -> std::path::PathBuf {
    let dir = ws.path().join("serviceaccount");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("token"), token).unwrap();
    std::fs::write(dir.join("ca.crt"), wasmtrigger_test_apiserver::TEST_CA_PEM).unwrap();
    std::fs::write(dir.join("namespace"), "default\n").unwrap();
    dir
}

/// `wasmtrigger run` as in a pod: no kubeconfig anywhere, the API server's
/// address in the environment, the service account mounted.
fn run_in_pod(ws: &Workspace, server: &ApiServer, sa: &std::path::Path) -> EngineProcess {
    let config = ws.write(
        "triggers.yaml",
        r#"
triggers:
  - name: in-cluster
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [create] }
    action: { module: log-event.wasm }
"#,
    );
    let home = ws.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let port = server.port().to_string();
    EngineProcess::start_with_env(
        &config,
        &ws.state_dir(),
        &["--service-account-dir", sa.to_str().unwrap()],
        &[
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", &port),
            ("HOME", home.to_str().unwrap()),
            ("KUBECONFIG", ""),
        ],
    )
}

#[tokio::test]
async fn in_a_pod_the_service_account_connects_over_https_and_kubeconfigs_outside() {
    let server = ApiServer::start_with(ServerOptions {
        https: true,
        token: Some("sa-token-1".into()),
        ..ServerOptions::default()
    });
    let ws = Workspace::new();
    let sa = service_account(&ws, "sa-token-1");
    let engine = run_in_pod(&ws, &server, &sa);
    engine.wait_started();
    support::eventually("the watch to start", || {
        (server.watch_requests("configmaps") > 0).then_some(())
    })
    .await;
    server
        .create(
            "",
            "configmaps",
            "default",
            json!({"metadata": {"name": "x"}}),
        )
        .unwrap();
    let runs = engine.wait_runs("in-cluster", 1);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(server.unauthorized(), 0, "every request carried the token");
    assert_eq!(engine.stop(), 0);

    // Outside a pod: `KUBECONFIG` (here with the CA and token inline), and
    // without it the default `~/.kube/config`.
    for (n, via_env) in [(1, true), (2, false)] {
        let ws = Workspace::new();
        let home = ws.path().join("home");
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        let kubeconfig = if via_env {
            ws.path().join("kubeconfig")
        } else {
            home.join(".kube/config")
        };
        server.write_kubeconfig(&kubeconfig).unwrap();
        let config = ws.write(
            "triggers.yaml",
            "triggers:\n  - name: from-kubeconfig\n    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, events: [update] }\n    action: { module: log-event.wasm }\n",
        );
        let kubeconfig_env = if via_env {
            kubeconfig.to_str().unwrap()
        } else {
            ""
        };
        let engine = EngineProcess::start_with_env(
            &config,
            &ws.state_dir(),
            &[],
            &[
                ("KUBERNETES_SERVICE_HOST", ""),
                ("HOME", home.to_str().unwrap()),
                ("KUBECONFIG", kubeconfig_env),
            ],
        );
        engine.wait_started();
        let before = server.watch_requests("configmaps");
        support::eventually("the watch to start", || {
            (server.watch_requests("configmaps") > before).then_some(())
        })
        .await;
        server
            .merge_patch(
                "",
                "configmaps",
                "default",
                "x",
                &json!({"data": {"a": n.to_string()}}),
            )
            .unwrap();
        let runs = engine.wait_runs("from-kubeconfig", 1);
        assert_eq!(runs[0]["status"], "succeeded", "via_env: {via_env}");
        assert_eq!(server.unauthorized(), 0);
        assert_eq!(engine.stop(), 0);
    }
}

#[test]
fn a_wrong_service_account_token_or_no_connection_is_reported() {
    let server = ApiServer::start_with(ServerOptions {
        https: true,
        token: Some("the-right-one".into()),
        ..ServerOptions::default()
    });
    let ws = Workspace::new();
    let sa = service_account(&ws, "a-stale-token");
    let engine = run_in_pod(&ws, &server, &sa);
    let line = engine.wait_for("the watch to fail", |lines| {
        lines
            .iter()
            .find(|l| l["error"] == "401 Unauthorized")
            .cloned()
    });
    assert_eq!(line["kind"], "v1 ConfigMap", "{line}");
    assert!(server.unauthorized() > 0);
    let (_, log) = engine.stop_and_log();
    assert!(
        !log.contains("a-stale-token"),
        "the token stays out of the log"
    );

    // Neither a kubeconfig nor a cluster: one clear line.
    let ws = Workspace::new();
    let config = ws.write(
        "triggers.yaml",
        "triggers:\n  - name: w\n    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap }\n    action: { module: log-event.wasm }\n",
    );
    let home = ws.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let engine = EngineProcess::start_with_env(
        &config,
        &ws.state_dir(),
        &[],
        &[
            ("KUBERNETES_SERVICE_HOST", ""),
            ("KUBERNETES_SERVICE_PORT", ""),
            ("HOME", home.to_str().unwrap()),
            ("KUBECONFIG", ""),
        ],
    );
    let line = engine.wait_for("the connection error", |lines| {
        lines
            .iter()
            .find(|l| l.to_string().contains("no Kubernetes connection"))
            .cloned()
    });
    let text = line.to_string();
    assert!(
        text.contains("KUBERNETES_SERVICE_HOST is not set"),
        "{text}"
    );
    assert!(text.contains("--kubeconfig"), "{text}");
    assert_eq!(engine.stop(), 0, "other triggers keep the engine up");
}

#[test]
fn kube_watch_configs_are_checked_field_by_field() {
    support::assert_check_errors(
        r#"
triggers:
  - name: bad-version
    source: { type: kube-watch, apiVersion: "apps/", kind: Deployment }
    action: { module: counter.wasm }
  - name: bad-kind
    source: { type: kube-watch, apiVersion: v1, kind: configmap }
    action: { module: counter.wasm }
  - name: both-scopes
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: a, namespaces: [b] }
    action: { module: counter.wasm }
  - name: no-events
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, events: [] }
    action: { module: counter.wasm }
  - name: odd-event
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, events: [modify] }
    action: { module: counter.wasm }
"#,
        &[
            (
                "bad-version",
                &["`source.apiVersion`", "expected `v1` or `group/version`"],
            ),
            (
                "bad-kind",
                &["`source.kind`", "expected a kind like Deployment"],
            ),
            ("both-scopes", &["`source.namespaces`", "not both"]),
            (
                "no-events",
                &["`source.events`", "at least one of create, update, delete"],
            ),
            ("odd-event", &["`source.events", "unknown variant `modify`"]),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_capability_does_what_grants_allow_and_nothing_else() {
    // The engine holds only what `wasmtrigger rbac` derives from the grants.
    let server = LeastPrivilege::start();
    server
        .create("apps", "deployments", "default", deployment("web", 1, 1))
        .unwrap();
    server
        .create("", "namespaces", "", json!({"metadata": {"name": "other"}}))
        .unwrap();
    server
        .create("apps", "deployments", "other", deployment("web", 1, 1))
        .unwrap();
    let ws = Workspace::new();
    let call = |name: &str, kube: Value| {
        format!(
            "  - name: {name}\n    source: {{ type: schedule, now: true }}\n    action:\n      module: hostile.wasm\n      retry: {{ max: 0 }}\n      params: {{ mode: kube, kube: {kube} }}\n      grants:\n        kube:\n          - {{ verbs: [get, list, patch], apiVersion: apps/v1, kind: Deployment, namespaces: [default] }}\n          - {{ verbs: [create, delete], apiVersion: v1, kind: ConfigMap, namespaces: [default], names: [made-by-wasm] }}\n"
        )
    };
    let mut yaml = String::from("triggers:\n");
    for (name, kube) in [
        (
            "patch-ok",
            json!({"op": "patch", "api_version": "apps/v1", "kind": "Deployment", "namespace": "default", "name": "web", "object": {"metadata": {"annotations": {"bumped": "1"}}}}),
        ),
        (
            "list-ok",
            json!({"op": "list", "api_version": "apps/v1", "kind": "Deployment", "namespace": "default", "label_selector": "app=web"}),
        ),
        (
            "create-ok",
            json!({"op": "create", "api_version": "v1", "kind": "ConfigMap", "namespace": "default", "object": {"metadata": {"name": "made-by-wasm"}, "data": {"k": "v"}}}),
        ),
        (
            "other-namespace",
            json!({"op": "patch", "api_version": "apps/v1", "kind": "Deployment", "namespace": "other", "name": "web", "object": {"metadata": {"annotations": {"bumped": "1"}}}}),
        ),
        (
            "verb-not-granted",
            json!({"op": "delete", "api_version": "apps/v1", "kind": "Deployment", "namespace": "default", "name": "web"}),
        ),
        (
            "name-not-granted",
            json!({"op": "create", "api_version": "v1", "kind": "ConfigMap", "namespace": "default", "object": {"metadata": {"name": "sneaky"}}}),
        ),
        (
            "missing",
            json!({"op": "get", "api_version": "apps/v1", "kind": "Deployment", "namespace": "default", "name": "nope"}),
        ),
    ] {
        yaml.push_str(&call(name, kube));
    }
    let config = ws.write("triggers.yaml", &yaml);
    let kubeconfig = server.grant(&ws, &config, &[]);
    let (engine, runs) = start_connected(&ws, &kubeconfig, &config).await;
    let outcome = |name: &str| {
        let runs = runs.clone();
        let name = name.to_string();
        async move {
            let r = runs.wait_runs(&name, 1).await.remove(0);
            (
                r.status,
                r.output.unwrap_or_default(),
                r.error.unwrap_or_default(),
            )
        }
    };
    let (status, _, error) = outcome("patch-ok").await;
    assert_eq!(status, RunStatus::Succeeded, "{error}");
    let web = server.get("apps", "deployments", "default", "web").unwrap();
    assert_eq!(
        web["metadata"]["annotations"]["bumped"], "1",
        "the patch reached the object"
    );
    let (status, output, _) = outcome("list-ok").await;
    assert_eq!(status, RunStatus::Succeeded);
    let listed: Value = serde_json::from_str(&output).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let (status, _, error) = outcome("create-ok").await;
    assert_eq!(status, RunStatus::Succeeded, "{error}");
    assert_eq!(
        server
            .get("", "configmaps", "default", "made-by-wasm")
            .unwrap()["data"]["k"],
        "v"
    );
    for name in ["other-namespace", "verb-not-granted", "name-not-granted"] {
        let (status, _, error) = outcome(name).await;
        assert_eq!(status, RunStatus::Failed, "{name}");
        assert!(error.contains("denied: kube:"), "{name}: {error}");
    }
    let untouched = server.get("apps", "deployments", "other", "web").unwrap();
    assert!(
        untouched["metadata"]["annotations"].is_null(),
        "the other namespace was not touched"
    );
    assert!(
        server
            .get("apps", "deployments", "default", "web")
            .is_some(),
        "not deleted"
    );
    assert!(
        server.get("", "configmaps", "default", "sneaky").is_none(),
        "not created"
    );
    let (status, _, error) = outcome("missing").await;
    assert_eq!(status, RunStatus::Failed);
    assert!(error.contains("not found"), "{error}");
    let stats = engine.capability_stats();
    assert_eq!(stats.kube_denials, 3);
    engine.shutdown().await;
    server.assert_nothing_forbidden();
}

#[test]
fn kube_grants_are_checked_field_by_field() {
    support::assert_check_errors(
        r#"
triggers:
  - name: no-verbs
    source: { type: schedule, now: true }
    action: { module: counter.wasm, grants: { kube: [{ verbs: [], apiVersion: v1, kind: ConfigMap }] } }
  - name: odd-verb
    source: { type: schedule, now: true }
    action: { module: counter.wasm, grants: { kube: [{ verbs: [escalate], apiVersion: v1, kind: ConfigMap }] } }
  - name: bad-version
    source: { type: schedule, now: true }
    action: { module: counter.wasm, grants: { kube: [{ verbs: [get], apiVersion: "/v1", kind: ConfigMap }] } }
"#,
        &[
            (
                "no-verbs",
                &["`action.grants.kube[0].verbs`", "at least one of get"],
            ),
            (
                "odd-verb",
                &["action.grants.kube", "unknown variant `escalate`"],
            ),
            (
                "bad-version",
                &["`action.grants.kube[0].apiVersion`", "invalid apiVersion"],
            ),
        ],
    );
}
