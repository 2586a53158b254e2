//! kube-trigger's actions as Wasm modules, end to end against the loopback
//! test API server: watch → action → object changed, read back from the
//! server. `bump-revision` runs from its example config unchanged.

use serde_json::{Value, json};
use wasmtrigger::runs::RunStatus;
use wasmtrigger_test_apiserver::{ApiError, ApiServer};

use crate::kube_watch::{deployment, start, start_connected};
use crate::support::cluster::LeastPrivilege;
use crate::support::{self, Workspace};

fn configmap(name: &str, labels: Value, data: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}, "data": data})
}

fn output_of(record: &wasmtrigger::runs::RunRecord) -> Value {
    serde_json::from_str(record.output.as_deref().expect("output")).unwrap()
}

async fn watch_started(server: &ApiServer, plural: &str) {
    support::eventually("the watch to start", || {
        (server.watch_requests(plural) > 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bump_revision_quick_start_rolls_only_labelled_deployments() {
    // The engine holds only what `wasmtrigger rbac` prints for the example.
    let server = LeastPrivilege::start();
    server
        .create("", "namespaces", "", json!({"metadata": {"name": "other"}}))
        .unwrap();
    let watched = json!({"wasmtrigger.dev/restart-on-change": "web"});
    server
        .create(
            "",
            "configmaps",
            "default",
            configmap("web-config", watched, json!({"level": "info"})),
        )
        .unwrap();
    server
        .create(
            "",
            "configmaps",
            "default",
            configmap("unrelated", json!({}), json!({"x": "1"})),
        )
        .unwrap();
    for name in ["web-a", "web-b"] {
        let mut d = deployment(name, 2, 2);
        d["metadata"]["labels"] = json!({"app": "web"});
        server.create("apps", "deployments", "default", d).unwrap();
    }
    server
        .create("apps", "deployments", "default", deployment("api", 1, 1))
        .unwrap();
    let mut elsewhere = deployment("web-a", 1, 1);
    elsewhere["metadata"]["labels"] = json!({"app": "web"});
    server
        .create("apps", "deployments", "other", elsewhere)
        .unwrap();

    let ws = Workspace::new();
    let config = support::repo().join("examples/configs/bump-revision.yaml");
    let kubeconfig = server.grant(&ws, &config, &[]);
    let (engine, runs) = start_connected(&ws, &kubeconfig, &config).await;
    watch_started(&server, "configmaps").await;

    // Not labelled for restarts: outside the watch's selector.
    server
        .merge_patch(
            "",
            "configmaps",
            "default",
            "unrelated",
            &json!({"data": {"x": "2"}}),
        )
        .unwrap();
    let changed = server
        .merge_patch(
            "",
            "configmaps",
            "default",
            "web-config",
            &json!({"data": {"level": "debug"}}),
        )
        .unwrap();
    let change = format!(
        "ConfigMap/web-config@{}",
        changed["metadata"]["resourceVersion"].as_str().unwrap()
    );
    let bump = runs.wait_runs("restart-web-on-config-change", 1).await;
    assert_eq!(bump[0].status, RunStatus::Succeeded, "{:?}", bump[0]);
    assert_eq!(
        output_of(&bump[0]),
        json!({"bumped": ["web-a", "web-b"], "skipped": [], "from": change})
    );
    for name in ["web-a", "web-b"] {
        let d = server.get("apps", "deployments", "default", name).unwrap();
        assert_eq!(
            d["metadata"]["annotations"]["wasmtrigger.dev/revision"], "1",
            "{d}"
        );
        assert_eq!(
            d["metadata"]["annotations"]["wasmtrigger.dev/revision-from"],
            change
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["wasmtrigger.dev/revision"], "1",
            "the pod template changes, so the Deployment rolls"
        );
    }
    let api = server.get("apps", "deployments", "default", "api").unwrap();
    assert!(
        api["metadata"]["annotations"].is_null(),
        "not labelled app=web: {api}"
    );
    let other = server.get("apps", "deployments", "other", "web-a").unwrap();
    assert!(
        other["metadata"]["annotations"].is_null(),
        "another namespace: {other}"
    );

    // The second trigger shares the watch and records an Event on the ConfigMap.
    let noted = runs.wait_runs("note-config-change", 1).await;
    assert_eq!(noted[0].status, RunStatus::Succeeded, "{:?}", noted[0]);
    let events = server.list("", "events", Some("default"));
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event["involvedObject"]["kind"], "ConfigMap");
    assert_eq!(event["involvedObject"]["name"], "web-config");
    assert_eq!(event["involvedObject"]["uid"], changed["metadata"]["uid"]);
    assert_eq!(event["reason"], "ConfigChanged");
    assert_eq!(event["type"], "Normal");
    assert!(
        event["message"]
            .as_str()
            .unwrap()
            .starts_with("web-config changed;"),
        "{event}"
    );

    // The next change bumps the counter again.
    server
        .merge_patch(
            "",
            "configmaps",
            "default",
            "web-config",
            &json!({"data": {"level": "warn"}}),
        )
        .unwrap();
    let bump = runs.wait_runs("restart-web-on-config-change", 2).await;
    assert_eq!(bump[1].status, RunStatus::Succeeded, "{:?}", bump[1]);
    let d = server
        .get("apps", "deployments", "default", "web-b")
        .unwrap();
    assert_eq!(
        d["metadata"]["annotations"]["wasmtrigger.dev/revision"],
        "2"
    );
    assert_eq!(
        runs.of("restart-web-on-config-change").len(),
        2,
        "the unlabelled ConfigMap started nothing"
    );
    engine.shutdown().await;
    server.assert_nothing_forbidden();
}

/// The other side of least privilege: a rule taken out of what `wasmtrigger
/// rbac` printed is a real 403 the run reports, and nothing is changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_missing_from_the_engines_rbac_is_a_forbidden_run() {
    let server = LeastPrivilege::start();
    let watched = json!({"wasmtrigger.dev/restart-on-change": "web"});
    server
        .create(
            "",
            "configmaps",
            "default",
            configmap("web-config", watched, json!({})),
        )
        .unwrap();
    let mut web = deployment("web-a", 1, 1);
    web["metadata"]["labels"] = json!({"app": "web"});
    server
        .create("apps", "deployments", "default", web)
        .unwrap();
    let ws = Workspace::new();
    let config = support::repo().join("examples/configs/bump-revision.yaml");
    let kubeconfig = server.grant(&ws, &config, &[]);
    let role = server
        .get(
            "rbac.authorization.k8s.io",
            "roles",
            "default",
            "wasmtrigger",
        )
        .unwrap();
    let rules: Vec<Value> = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resources"] != json!(["deployments"]))
        .cloned()
        .collect();
    assert!(
        rules.len() < role["rules"].as_array().unwrap().len(),
        "{role}"
    );
    server
        .merge_patch(
            "rbac.authorization.k8s.io",
            "roles",
            "default",
            "wasmtrigger",
            &json!({ "rules": rules }),
        )
        .unwrap();
    let (engine, runs) = start_connected(&ws, &kubeconfig, &config).await;
    watch_started(&server, "configmaps").await;
    server
        .merge_patch(
            "",
            "configmaps",
            "default",
            "web-config",
            &json!({"data": {"a": "1"}}),
        )
        .unwrap();
    let bump = runs.wait_runs("restart-web-on-config-change", 1).await;
    assert_eq!(bump[0].status, RunStatus::Failed, "{:?}", bump[0]);
    let error = bump[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("forbidden") || error.contains("Forbidden"),
        "{error}"
    );
    let forbidden = server.forbidden();
    assert!(
        forbidden
            .iter()
            .any(|f| f.contains("cannot list resource \"deployments\"")),
        "{forbidden:?}"
    );
    let web = server
        .get("apps", "deployments", "default", "web-a")
        .unwrap();
    assert!(web["metadata"]["annotations"].is_null(), "{web}");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_resource_patches_with_each_patch_type_and_only_within_grants() {
    let server = ApiServer::start(&[]);
    for ns in ["default", "kube-system"] {
        let mut d = deployment("web", 3, 3);
        d["spec"]["template"] = json!({"spec": {"containers": [
            {"name": "app", "image": "app:1"},
            {"name": "proxy", "image": "proxy:1"},
        ]}});
        server.create("apps", "deployments", ns, d).unwrap();
    }
    let ws = Workspace::new();
    let on_create = "{ type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, events: [create] }";
    let (engine, runs) = start(
        &ws,
        &server,
        &format!(
            r#"
triggers:
  - name: mark-new-configmaps
    source: {on_create}
    action:
      module: patch-resource.wasm
      params:
        target: {{ apiVersion: v1, kind: ConfigMap }}
        patch: {{ metadata: {{ labels: {{ seen-by: "{{trigger}}" }}, annotations: {{ seen-event: "{{event.id}}" }} }} }}
      grants: {{ kube: [ {{ verbs: [patch], apiVersion: v1, kind: ConfigMap, namespaces: [default] }} ] }}
  - name: scale-web
    source: {on_create}
    action:
      module: patch-resource.wasm
      params:
        target: {{ apiVersion: apps/v1, kind: Deployment, namespace: default, name: web }}
        patchType: json
        patch: [ {{ op: replace, path: /spec/replicas, value: 5 }} ]
      grants: {{ kube: [ {{ verbs: [patch], apiVersion: apps/v1, kind: Deployment, namespaces: [default], names: [web] }} ] }}
  - name: new-image
    source: {on_create}
    action:
      module: patch-resource.wasm
      params:
        target: {{ apiVersion: apps/v1, kind: Deployment, namespace: default, name: web }}
        patchType: strategic
        patch: {{ spec: {{ template: {{ spec: {{ containers: [ {{ name: app, image: "app:{{object.name}}" }} ] }} }} }} }}
      grants: {{ kube: [ {{ verbs: [patch], apiVersion: apps/v1, kind: Deployment, namespaces: [default] }} ] }}
  - name: outside-grants
    source: {on_create}
    action:
      module: patch-resource.wasm
      params:
        target: {{ apiVersion: apps/v1, kind: Deployment, namespace: kube-system, name: web }}
        patch: {{ spec: {{ replicas: 0 }} }}
      retry: {{ max: 0 }}
      grants: {{ kube: [ {{ verbs: [patch], apiVersion: apps/v1, kind: Deployment, namespaces: [default] }} ] }}
"#
        ),
    )
    .await;
    watch_started(&server, "configmaps").await;
    server
        .create(
            "",
            "configmaps",
            "default",
            configmap("v2", json!({}), json!({})),
        )
        .unwrap();

    let marked = runs.wait_runs("mark-new-configmaps", 1).await;
    assert_eq!(marked[0].status, RunStatus::Succeeded, "{:?}", marked[0]);
    assert_eq!(output_of(&marked[0])["patched"], "default/v2");
    let cm = server.get("", "configmaps", "default", "v2").unwrap();
    assert_eq!(cm["metadata"]["labels"]["seen-by"], "mark-new-configmaps");
    assert_eq!(
        cm["metadata"]["annotations"]["seen-event"],
        marked[0].event_id.as_str()
    );

    let scaled = runs.wait_runs("scale-web", 1).await;
    assert_eq!(scaled[0].status, RunStatus::Succeeded, "{:?}", scaled[0]);
    let imaged = runs.wait_runs("new-image", 1).await;
    assert_eq!(imaged[0].status, RunStatus::Succeeded, "{:?}", imaged[0]);
    let web = server.get("apps", "deployments", "default", "web").unwrap();
    assert_eq!(web["spec"]["replicas"], 5, "json patch");
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"],
        json!([{"name": "app", "image": "app:v2"}, {"name": "proxy", "image": "proxy:1"}]),
        "a strategic patch merges containers by name"
    );

    let denied = runs.wait_runs("outside-grants", 1).await;
    support::assert_failed_with(&denied[0], "denied");
    let untouched = server
        .get("apps", "deployments", "kube-system", "web")
        .unwrap();
    assert_eq!(
        untouched["spec"]["replicas"], 3,
        "the denied patch never reached the server"
    );
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_job_makes_one_job_per_event_even_when_a_retry_repeats_it() {
    let server = ApiServer::start(&[]);
    let ws = Workspace::new();
    let (engine, runs) = start(
        &ws,
        &server,
        r#"
triggers:
  - name: process-upload
    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: default, labelSelector: kind=upload, events: [create] }
    action:
      module: create-job.wasm
      retry: { max: 2, delay: 50ms }
      params:
        namePrefix: process
        template:
          metadata: { labels: { team: data } }
          spec:
            backoffLimit: 1
            template:
              spec:
                restartPolicy: Never
                containers:
                  - name: work
                    image: busybox
                    args: [process, "{object.namespace}/{object.name}", "{event.id}"]
      grants:
        kube: [ { verbs: [create, get], apiVersion: batch/v1, kind: Job, namespaces: [default] } ]
"#,
    )
    .await;
    watch_started(&server, "configmaps").await;
    // The first create goes through but its answer is lost: the engine's retry
    // must find that Job rather than fail or create a second one. (A 500:
    // the kube client itself retries 429, 503 and 504 within one attempt.)
    server.fail_after_next(
        "POST",
        "/jobs",
        ApiError::new(500, "InternalError", "etcd answered too late"),
    );
    let labels = json!({"kind": "upload"});
    server
        .create(
            "",
            "configmaps",
            "default",
            configmap("upload-1", labels.clone(), json!({})),
        )
        .unwrap();
    let first = runs.wait_runs("process-upload", 1).await;
    assert_eq!(first[0].status, RunStatus::Succeeded, "{:?}", first[0]);
    assert_eq!(
        first[0].attempts.len(),
        2,
        "one lost answer, one retry: {:#?}",
        first[0]
    );
    assert_eq!(
        output_of(&first[0])["created"],
        false,
        "the retry found the Job"
    );

    server
        .create(
            "",
            "configmaps",
            "default",
            configmap("upload-2", labels, json!({})),
        )
        .unwrap();
    let both = runs.wait_runs("process-upload", 2).await;
    assert_eq!(both[1].status, RunStatus::Succeeded, "{:?}", both[1]);
    assert_eq!(output_of(&both[1])["created"], true);

    let jobs = server.list("batch", "jobs", Some("default"));
    assert_eq!(jobs.len(), 2, "one Job per event: {jobs:?}");
    for job in &jobs {
        let name = job["metadata"]["name"].as_str().unwrap();
        let hash = name.strip_prefix("process-").expect("the prefix");
        assert_eq!(hash.len(), 16, "{name}");
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()), "{name}");
        assert_eq!(job["metadata"]["labels"]["wasmtrigger.dev/event"], hash);
        assert_eq!(
            job["metadata"]["labels"]["wasmtrigger.dev/trigger"],
            "process-upload"
        );
        assert_eq!(
            job["metadata"]["labels"]["team"], "data",
            "template labels are kept"
        );
        let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
        let upload = args[1].as_str().unwrap();
        assert!(
            upload == "default/upload-1" || upload == "default/upload-2",
            "{args}"
        );
        let event_id = args[2].as_str().unwrap();
        assert!(
            both.iter().any(|r| r.event_id == event_id),
            "placeholders filled from the event: {args}"
        );
    }
    let names: std::collections::BTreeSet<_> = jobs
        .iter()
        .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "distinct names per event");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_event_describes_the_watched_object() {
    let server = ApiServer::start(&[]);
    let ws = Workspace::new();
    let (engine, runs) = start(
        &ws,
        &server,
        r#"
triggers:
  - name: deployment-gone
    source: { type: kube-watch, apiVersion: apps/v1, kind: Deployment, namespace: default, events: [delete] }
    action:
      module: record-event.wasm
      params: { reason: DeploymentDeleted, type: Warning }
      grants:
        kube: [ { verbs: [create], apiVersion: v1, kind: Event, namespaces: [default] } ]
  - name: bad-params
    source: { type: kube-watch, apiVersion: apps/v1, kind: Deployment, namespace: default, events: [delete] }
    action:
      module: record-event.wasm
      params: { reason: "not a reason", type: Warning }
      retry: { max: 0 }
      grants:
        kube: [ { verbs: [create], apiVersion: v1, kind: Event, namespaces: [default] } ]
"#,
    )
    .await;
    server
        .create("apps", "deployments", "default", deployment("web", 1, 1))
        .unwrap();
    watch_started(&server, "deployments").await;
    let gone = server
        .delete("apps", "deployments", "default", "web")
        .unwrap();
    let recorded = runs.wait_runs("deployment-gone", 1).await;
    assert_eq!(
        recorded[0].status,
        RunStatus::Succeeded,
        "{:?}",
        recorded[0]
    );
    let events = server.list("", "events", Some("default"));
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(
        output_of(&recorded[0])["event"],
        format!("default/{}", event["metadata"]["name"].as_str().unwrap())
    );
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "DeploymentDeleted");
    assert_eq!(event["involvedObject"]["apiVersion"], "apps/v1");
    assert_eq!(event["involvedObject"]["kind"], "Deployment");
    assert_eq!(event["involvedObject"]["uid"], gone["metadata"]["uid"]);
    assert_eq!(event["source"]["component"], "wasmtrigger");
    assert_eq!(
        event["message"],
        "delete of Deployment default/web, seen by deployment-gone"
    );
    let stamp = event["firstTimestamp"].as_str().unwrap();
    assert!(
        !stamp.contains('.') && stamp.ends_with('Z'),
        "whole seconds: {stamp}"
    );

    let bad = runs.wait_runs("bad-params", 1).await;
    support::assert_failed_with(&bad[0], "`reason` must be a CamelCase word");
    engine.shutdown().await;
}
