//! `wasmtrigger rbac`: least-privilege RBAC derived from what a config
//! declares — exact rules for each example config and for every kind of need,
//! and the output applied with kubectl to the test API server.

use serde_json::{Value, json};
use wasmtrigger_test_apiserver::ApiServer;

use crate::support::{self, Workspace, run_cli};

/// Runs `wasmtrigger rbac` and returns its output text and the documents in it.
fn rbac(config: &std::path::Path, extra: &[&str]) -> (String, Vec<Value>) {
    let config = config.display().to_string();
    let mut args = vec!["rbac", "--config", config.as_str()];
    args.extend(extra);
    let (code, out, err) = run_cli(&args, None);
    assert_eq!(code, 0, "stderr: {err}");
    let docs = support::yaml_documents(&out);
    (out, docs)
}

fn rule(group: &str, resource: &str, verbs: &[&str], names: &[&str]) -> Value {
    let mut rule = json!({"apiGroups": [group], "resources": [resource], "verbs": verbs});
    if !names.is_empty() {
        rule["resourceNames"] = json!(names);
    }
    rule
}

/// The rules of the Role/ClusterRole `kind` in `namespace` (None: cluster).
fn rules_of<'a>(docs: &'a [Value], kind: &str, namespace: Option<&str>) -> &'a Value {
    let role = docs
        .iter()
        .find(|d| d["kind"] == kind && d["metadata"]["namespace"].as_str() == namespace)
        .unwrap_or_else(|| panic!("no {kind} in {namespace:?}: {docs:#?}"));
    &role["rules"]
}

#[test]
fn the_example_configs_get_exactly_the_rules_they_need() {
    let examples = support::repo().join("examples/configs");
    let (_, docs) = rbac(
        &examples.join("bump-revision.yaml"),
        &["--namespace", "ops"],
    );
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["Role", "RoleBinding"],
        "one namespace, nothing cluster-wide"
    );
    assert_eq!(
        rules_of(&docs, "Role", Some("default")),
        &json!([
            rule("", "configmaps", &["list", "watch"], &[]),
            rule("", "events", &["create"], &[]),
            rule("apps", "deployments", &["list", "patch"], &[]),
        ])
    );
    let binding = &docs[1];
    assert_eq!(binding["metadata"]["namespace"], "default");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "wasmtrigger", "namespace": "ops"}])
    );
    assert_eq!(binding["roleRef"]["kind"], "Role");

    for name in ["quickstart.yaml", "notify.yaml", "aggregate.yaml"] {
        let (out, docs) = rbac(&examples.join(name), &[]);
        assert!(docs.is_empty(), "{name}: {out}");
        assert!(
            out.contains("needs no Kubernetes API access"),
            "{name}: {out}"
        );
    }
}

const EVERY_NEED: &str = r#"
engine:
  secrets: { kubernetes: { namespace: ops, name: app-secrets } }
triggers:
  - name: all-pods
    source: { type: kube-watch, apiVersion: v1, kind: Pod }
    action:
      module: log-event.wasm
      grants:
        kube:
          - { verbs: [get], apiVersion: v1, kind: Node }
          - { verbs: [apply, delete], apiVersion: example.com/v1, kind: Gateway, namespaces: ["*"] }
  - name: two-namespaces
    source: { type: kube-watch, apiVersion: apps/v1, kind: Deployment, namespaces: [a, b] }
    action:
      module: log-event.wasm
      grants:
        kube:
          - { verbs: [get, patch, create], apiVersion: v1, kind: ConfigMap, namespaces: [a], names: [settings] }
          - { verbs: [get], apiVersion: v1, kind: ConfigMap, namespaces: [a] }
"#;

#[test]
fn every_kind_of_need_becomes_the_narrowest_rule() {
    let ws = Workspace::new();
    let config = ws.write("triggers.yaml", EVERY_NEED);
    let (out, docs) = rbac(&config, &["--namespace", "wt", "--leader-election"]);
    assert_eq!(
        rules_of(&docs, "ClusterRole", None),
        &json!([
            rule("", "nodes", &["get"], &[]),
            rule("", "pods", &["list", "watch"], &[]),
            // Server-side apply is a patch that may create.
            rule(
                "example.com",
                "gateways",
                &["create", "delete", "patch"],
                &[]
            ),
        ]),
        "{out}"
    );
    assert_eq!(
        rules_of(&docs, "Role", Some("a")),
        &json!([
            // `create` cannot be limited by name, so it gets its own rule.
            rule("", "configmaps", &["create", "get"], &[]),
            rule("", "configmaps", &["get", "patch"], &["settings"]),
            rule("apps", "deployments", &["list", "watch"], &[]),
        ]),
        "{out}"
    );
    assert_eq!(
        rules_of(&docs, "Role", Some("b")),
        &json!([rule("apps", "deployments", &["list", "watch"], &[])])
    );
    assert_eq!(
        rules_of(&docs, "Role", Some("ops")),
        &json!([rule("", "secrets", &["get"], &["app-secrets"])])
    );
    assert_eq!(
        rules_of(&docs, "Role", Some("wt")),
        &json!([
            rule("coordination.k8s.io", "leases", &["create"], &[]),
            rule(
                "coordination.k8s.io",
                "leases",
                &["get", "update"],
                &["wasmtrigger-leader"]
            ),
        ])
    );
    assert!(
        out.contains("plural derived by rule") && out.contains("Gateway → gateways"),
        "a guessed plural is pointed out: {out}"
    );
    assert!(
        out.contains("trigger all-pods watches"),
        "rules say why: {out}"
    );
    let bindings = docs
        .iter()
        .filter(|d| d["kind"].as_str().unwrap().ends_with("Binding"));
    assert_eq!(bindings.count(), 5, "one binding per role");

    // The output is valid for an API server: kubectl applies it.
    let server = ApiServer::start(&[]);
    for ns in ["a", "b", "ops", "wt"] {
        server
            .create("", "namespaces", "", json!({"metadata": {"name": ns}}))
            .unwrap();
    }
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    support::kubectl(
        Some(&kubeconfig),
        &["apply", "--validate=false", "-f", "-"],
        &out,
    );
    let stored = server
        .get("rbac.authorization.k8s.io", "roles", "a", "wasmtrigger")
        .expect("the Role was created");
    assert_eq!(stored["rules"], *rules_of(&docs, "Role", Some("a")));
    assert!(
        server
            .get(
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                "",
                "wasmtrigger"
            )
            .is_some()
    );
}

#[test]
fn rbac_reports_a_bad_config_like_check() {
    let ws = Workspace::new();
    let config = ws.write(
        "triggers.yaml",
        "triggers:\n  - name: x\n    source: { type: kube-watch, apiVersion: v1, kind: configmap }\n    action: { module: log-event.wasm }\n",
    );
    let (code, out, err) = run_cli(&["rbac", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("triggers.yaml") && err.contains("source.kind"),
        "{err}"
    );
}

/// With `--trigger-objects`, the objects' rules come from the file's
/// `engine.triggerObjects` policy: its kube grants, and its watch kinds when
/// it allows kube-watch sources; nothing for a policy that allows nothing.
#[test]
fn trigger_objects_get_the_rules_their_policy_allows() {
    let ws = Workspace::new();
    let none = ws.write("none.yaml", "triggers: []\n");
    let (text, docs) = rbac(&none, &["--namespace", "ops", "--trigger-objects"]);
    assert!(
        text.contains("bounded by the config's engine.triggerObjects policy"),
        "{text}"
    );
    assert_eq!(
        rules_of(&docs, "Role", Some("ops")),
        &json!([
            rule("wasmtrigger.dev", "triggers", &["list", "watch"], &[]),
            rule("wasmtrigger.dev", "triggers/status", &["patch"], &[]),
        ]),
        "no policy, no access for objects"
    );
    let policy = ws.write(
        "policy.yaml",
        r#"
engine:
  triggerObjects:
    sources: [schedule, kube-watch]
    grants:
      kube: [ { verbs: [get, patch], apiVersion: apps/v1, kind: Deployment, namespaces: [team-a] } ]
    watch: [ { apiVersion: v1, kind: ConfigMap, namespaces: [team-a] } ]
triggers: []
"#,
    );
    let (text, docs) = rbac(&policy, &["--namespace", "ops", "--trigger-objects"]);
    assert_eq!(
        rules_of(&docs, "Role", Some("team-a")),
        &json!([
            rule("", "configmaps", &["list", "watch"], &[]),
            rule("apps", "deployments", &["get", "patch"], &[]),
        ])
    );
    assert!(
        text.contains("Trigger objects, as engine.triggerObjects allows"),
        "{text}"
    );
}

#[test]
fn broker_sources_need_no_kubernetes_rules() {
    let ws = Workspace::new();
    let action = "action: { module: builtin:patch-resource, params: { target: { apiVersion: apps/v1, kind: Deployment, namespace: ops, name: web }, patch: { metadata: { labels: { a: b } } } }, grants: { kube: [ { verbs: [patch], apiVersion: apps/v1, kind: Deployment, namespaces: [ops] } ] } }";
    let with = |source: &str| {
        format!(
            "engine: {{ secrets: {{ kubernetes: {{ namespace: ops, name: app-secrets }} }} }}\ntriggers:\n  - name: t\n    source: {source}\n    {action}\n"
        )
    };
    let baseline = ws.write("schedule.yaml", &with("{ type: schedule, every: 1h }"));
    let (_, expected) = rbac(&baseline, &["--namespace", "ops"]);
    for (name, source) in [
        ("nats", "{ type: nats, urlSecret: nats-url, stream: S }"),
        ("mqtt", "{ type: mqtt, urlSecret: mqtt-url, topics: [a] }"),
        (
            "redis",
            "{ type: redis-queue, urlSecret: redis-url, stream: s }",
        ),
    ] {
        let config = ws.write(&format!("{name}.yaml"), &with(source));
        let (text, docs) = rbac(&config, &["--namespace", "ops"]);
        assert_eq!(docs, expected, "{name} adds or removes rules:\n{text}");
    }
}
