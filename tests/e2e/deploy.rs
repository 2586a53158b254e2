//! The manifests in `deploy/`: every kustomization renders with
//! `kubectl kustomize`, the workloads are locked down and probed, the rendered
//! ConfigMaps hold a config and modules that `check` accepts, the output
//! applies (server-side, idempotently) to the test API server, and the
//! checked-in RBAC is exactly what `wasmtrigger rbac` derives.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};
use wasmtrigger_test_apiserver::{ApiServer, minimal_crd};

use crate::support::{self, Workspace, run_cli};

const OVERLAYS: [&str; 3] = ["base", "sidecar", "monitoring"];

/// A copy of `deploy/` with the modules each kustomization lists built into
/// its `modules/` directory, as the README's build step leaves it.
fn deploy_copy(ws: &Workspace) -> PathBuf {
    let root = ws.path().join("deploy");
    let status = Command::new("cp")
        .arg("-r")
        .arg(support::repo().join("deploy"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    for overlay in ["base", "sidecar"] {
        let modules = root.join(overlay).join("modules");
        std::fs::create_dir_all(&modules).unwrap();
        for entry in std::fs::read_dir(support::modules()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "wasm") {
                std::fs::copy(&path, modules.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    root
}

fn render(root: &Path, overlay: &str) -> String {
    support::kubectl(
        None,
        &["kustomize", root.join(overlay).to_str().unwrap()],
        "",
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| &e["value"])
        .unwrap_or(&Value::Null)
}

/// The engine container of a workload is locked down, probed and bounded.
fn assert_hardened(deployment: &Value, engine: &Value) {
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &engine["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(engine["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(engine["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(engine["resources"]["requests"]["memory"].is_string());
    assert!(engine["resources"]["limits"]["memory"].is_string());
    assert_eq!(
        env(engine, "LISTEN"),
        "0.0.0.0:7070",
        "probes reach it from outside the pod"
    );
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
}

#[test]
fn every_kustomization_renders_locked_down_and_probed() {
    let ws = Workspace::new();
    let root = deploy_copy(&ws);
    let base = support::yaml_documents(&render(&root, "base"));
    let deployment = find(&base, "Deployment", "wasmtrigger");
    let engine = container(deployment, "wasmtrigger");
    assert_hardened(deployment, engine);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        engine["args"],
        json!(["run", "--leader-election", "--trigger-objects"])
    );
    let crd = find(
        &base,
        "CustomResourceDefinition",
        "triggers.wasmtrigger.dev",
    );
    assert_eq!(crd["spec"]["group"], "wasmtrigger.dev");
    assert!(
        engine["image"]
            .as_str()
            .unwrap()
            .starts_with("ghcr.io/wasmtrigger/wasmtrigger:"),
        "the images transformer applied"
    );
    let service = find(&base, "Service", "wasmtrigger");
    assert_eq!(service["spec"]["ports"][0]["name"], "http");
    let modules = find(&base, "ConfigMap", "wasmtrigger-modules");
    let keys: Vec<&String> = modules["binaryData"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["bump-revision.wasm", "log-event.wasm", "record-event.wasm"]
    );

    let sidecar = support::yaml_documents(&render(&root, "sidecar"));
    let web = find(&sidecar, "Deployment", "web");
    let containers: Vec<&str> = web["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(containers, ["web", "wasmtrigger"]);
    assert_hardened(web, container(web, "wasmtrigger"));
    assert_eq!(web["spec"]["template"]["spec"]["serviceAccountName"], "web");

    let monitoring = support::yaml_documents(&render(&root, "monitoring"));
    let monitor = find(&monitoring, "ServiceMonitor", "wasmtrigger");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"], "http",
        "the Service's port name"
    );
    for (label, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][label], value,
            "selects the Service"
        );
    }
    let dashboard = find(&monitoring, "ConfigMap", "wasmtrigger-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value = serde_json::from_str(
        dashboard["data"]["wasmtrigger-dashboard.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert!(json["panels"].is_array());
}

#[test]
fn the_rendered_config_maps_hold_a_config_and_modules_that_check() {
    let ws = Workspace::new();
    let root = deploy_copy(&ws);
    for (overlay, config_map, modules_map) in [
        ("base", "wasmtrigger-config", "wasmtrigger-modules"),
        ("sidecar", "web-triggers", "web-modules"),
    ] {
        let docs = support::yaml_documents(&render(&root, overlay));
        // As the kubelet mounts them: one file per key.
        let config_dir = ws.path().join(format!("{overlay}-config"));
        let modules_dir = ws.path().join(format!("{overlay}-modules"));
        std::fs::create_dir_all(&config_dir).unwrap();
        std::fs::create_dir_all(&modules_dir).unwrap();
        for (key, text) in find(&docs, "ConfigMap", config_map)["data"]
            .as_object()
            .unwrap()
        {
            std::fs::write(config_dir.join(key), text.as_str().unwrap()).unwrap();
        }
        for (key, data) in find(&docs, "ConfigMap", modules_map)["binaryData"]
            .as_object()
            .unwrap()
        {
            // kustomize folds long base64 lines.
            let data: String = data.as_str().unwrap().split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap();
            std::fs::write(modules_dir.join(key), bytes).unwrap();
        }
        let (code, out, err) = run_cli(
            &[
                "check",
                "--config",
                config_dir.to_str().unwrap(),
                "--modules",
                modules_dir.to_str().unwrap(),
            ],
            None,
        );
        assert_eq!(code, 0, "{overlay}: {out}{err}");
    }
}

#[test]
fn the_rendered_manifests_apply_to_the_test_api_server_idempotently() {
    let ws = Workspace::new();
    let root = deploy_copy(&ws);
    let server = ApiServer::start(&[]);
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let apply = ["apply", "--server-side", "--validate=false", "-f", "-"];
    // The ServiceMonitor kind comes from the Prometheus operator's CRD on a
    // real cluster; here from a CRD of the same shape, applied the same way.
    support::kubectl(
        Some(&kubeconfig),
        &apply,
        &minimal_crd(
            "monitoring.coreos.com",
            "v1",
            "ServiceMonitor",
            "servicemonitors",
        ),
    );
    let mut rendered = Vec::new();
    for overlay in OVERLAYS {
        let yaml = render(&root, overlay);
        support::kubectl(Some(&kubeconfig), &apply, &yaml);
        rendered.push(yaml);
    }
    let deployment = server
        .get("apps", "deployments", "wasmtrigger", "wasmtrigger")
        .expect("the Deployment exists");
    assert!(
        server
            .get(
                "monitoring.coreos.com",
                "servicemonitors",
                "wasmtrigger",
                "wasmtrigger"
            )
            .is_some()
    );
    assert!(
        server
            .get("", "configmaps", "demo", "web-modules")
            .is_some()
    );
    let version = server.resource_version();
    for yaml in &rendered {
        support::kubectl(Some(&kubeconfig), &apply, yaml);
    }
    assert_eq!(
        server.resource_version(),
        version,
        "re-applying changes nothing"
    );
    assert_eq!(
        server
            .get("apps", "deployments", "wasmtrigger", "wasmtrigger")
            .unwrap()["metadata"]["resourceVersion"],
        deployment["metadata"]["resourceVersion"]
    );
}

#[test]
fn the_checked_in_crd_is_what_the_rust_types_generate() {
    let (code, out, err) = run_cli(&["crd"], None);
    assert_eq!(code, 0, "{err}");
    let checked_in =
        std::fs::read_to_string(support::repo().join("deploy/crd/trigger.yaml")).unwrap();
    assert!(
        out == checked_in,
        "deploy/crd/trigger.yaml drifted from host/src/crd.rs; regenerate it with `wasmtrigger crd > deploy/crd/trigger.yaml`"
    );
    let crd = &support::yaml_documents(&out)[0];
    let version = &crd["spec"]["versions"][0];
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["State", "Last Success", "Last Failure", "Failures", "Age"]
    );
    assert!(
        version["subresources"]["status"].is_object(),
        "status is a subresource"
    );
}

#[test]
fn the_checked_in_rbac_is_what_the_rbac_command_derives() {
    for (overlay, args) in [
        (
            "base",
            &[
                "--namespace",
                "wasmtrigger",
                "--leader-election",
                "--trigger-objects",
            ][..],
        ),
        (
            "sidecar",
            &[
                "--namespace",
                "demo",
                "--service-account",
                "web",
                "--name",
                "web-wasmtrigger",
            ][..],
        ),
    ] {
        let dir = support::repo().join("deploy").join(overlay);
        let config = dir.join("triggers.yaml");
        let mut cli = vec!["rbac", "--config", config.to_str().unwrap()];
        cli.extend(args);
        let (code, out, err) = run_cli(&cli, None);
        assert_eq!(code, 0, "{err}");
        let checked_in = std::fs::read_to_string(dir.join("rbac.yaml")).unwrap();
        assert!(
            out == checked_in,
            "deploy/{overlay}/rbac.yaml is stale; regenerate it with `wasmtrigger {}`",
            cli.join(" ")
        );
    }
}
