//! Recipes users search for, each run from its example config unchanged
//! against real parts: Alertmanager → remediation
//! (`examples/configs/alertmanager.yaml`) and GitHub push → bump-revision
//! (`examples/configs/github-push.yaml`), against the test API server, with
//! the engine holding only the RBAC `wasmtrigger rbac` prints.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::kube_watch::deployment;
use crate::support::cluster::LeastPrivilege;
use crate::support::{self, EngineProcess, Workspace};

/// An engine on an example config, connected as the least-privilege service account.
fn engine_on(example: &str, secret: (&str, &str)) -> (LeastPrivilege, Workspace, EngineProcess) {
    let server = LeastPrivilege::start();
    let ws = Workspace::new();
    let config = support::repo().join("examples/configs").join(example);
    let kubeconfig = server.grant(&ws, &config, &[]);
    ws.write(&format!("secrets/{}", secret.0), secret.1);
    let secrets = ws.path().join("secrets");
    let engine = EngineProcess::start(
        &config,
        &ws.state_dir(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--secrets-dir",
            secrets.to_str().unwrap(),
        ],
    );
    engine.wait_started();
    (server, ws, engine)
}

fn alert(status: &str, alertname: &str, deployment: &str, fingerprint: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": alertname, "deployment": deployment, "namespace": "default", "severity": "critical"},
        "annotations": {"summary": "restart me"},
        "startsAt": "2026-11-30T08:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": fingerprint,
    })
}

/// Alertmanager's webhook payload (version 4).
fn notification(status: &str, alerts: Vec<Value>) -> String {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"PodCrashLooping\"}",
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "wasmtrigger",
        "groupLabels": {"alertname": "PodCrashLooping"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
    .to_string()
}

#[test]
fn alertmanager_alerts_restart_their_deployment_once() {
    let (server, _ws, engine) = engine_on(
        "alertmanager.yaml",
        ("alertmanager-token", "am-token-123\n"),
    );
    for name in ["web", "api"] {
        server
            .create("apps", "deployments", "default", deployment(name, 2, 2))
            .unwrap();
    }
    let url = format!("{}/hooks/alert-remediation", engine.base_url());
    let http = reqwest::blocking::Client::new();
    let post = |body: String, token: &str| {
        http.post(&url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let firing = notification(
        "firing",
        vec![
            alert("firing", "PodCrashLooping", "web", "f1"),
            alert("firing", "DiskAlmostFull", "api", "f2"),
        ],
    );
    assert_eq!(post(firing.clone(), "wrong-token"), 401);
    assert_eq!(post(firing.clone(), "am-token-123"), 202);
    // Alertmanager re-sends the same firing alert every repeat_interval.
    assert_eq!(post(firing, "am-token-123"), 202);
    assert_eq!(
        post(
            notification(
                "resolved",
                vec![alert("resolved", "PodCrashLooping", "web", "f1")]
            ),
            "am-token-123"
        ),
        202
    );
    let runs = engine.wait_runs("alert-remediation", 3);
    let outputs: Vec<Value> = runs
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| serde_json::from_str(r["output"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(outputs.len(), 2, "{runs:#?}");
    let restarted: Vec<&Value> = outputs
        .iter()
        .flat_map(|o| o["restarted"].as_array().unwrap())
        .collect();
    assert_eq!(
        restarted,
        [&json!("default/web")],
        "once, and only the listed alert: {outputs:?}"
    );
    assert!(
        outputs
            .iter()
            .any(|o| o["duplicates"] == json!(["default/web"])),
        "{outputs:?}"
    );
    assert_eq!(
        runs.iter().filter(|r| r["status"] == "filtered").count(),
        1,
        "the resolved notification is filtered out"
    );
    let web = server.get("apps", "deployments", "default", "web").unwrap();
    assert!(
        web["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"]
            .is_string(),
        "{web}"
    );
    let api = server.get("apps", "deployments", "default", "api").unwrap();
    assert!(
        api["spec"]["template"]["metadata"]["annotations"].is_null(),
        "not a listed alertname: {api}"
    );
    let events = server.list("", "events", Some("default"));
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["involvedObject"]["name"], "web");
    assert_eq!(events[0]["reason"], "AlertRemediation");
    assert!(
        events[0]["message"]
            .as_str()
            .unwrap()
            .contains("PodCrashLooping")
    );
    assert_eq!(engine.stop(), 0);
    server.assert_nothing_forbidden();
}

fn signed(key: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[test]
fn a_github_push_to_main_rolls_the_deployments() {
    let key = "github-hook-secret";
    let (server, _ws, engine) = engine_on("github-push.yaml", ("github-webhook", key));
    for name in ["web-a", "web-b", "other"] {
        let mut d = deployment(name, 1, 1);
        if name != "other" {
            d["metadata"]["labels"] = json!({"app": "web"});
        }
        server.create("apps", "deployments", "default", d).unwrap();
    }
    let url = format!("{}/hooks/deploy-on-push", engine.base_url());
    let http = reqwest::blocking::Client::new();
    let deliver = |event: &str, body: &Value, signature: Option<String>| {
        let body = body.to_string();
        let signature = signature.unwrap_or_else(|| signed(key, &body));
        http.post(&url)
            .header("X-GitHub-Event", event)
            .header("X-GitHub-Delivery", "d-1")
            .header("X-Hub-Signature-256", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    let push = |branch: &str| json!({"ref": format!("refs/heads/{branch}"), "after": "abc123", "repository": {"full_name": "acme/web"}});
    assert_eq!(
        deliver("push", &push("main"), Some("sha256=00".into())),
        401,
        "a bad signature"
    );
    assert_eq!(deliver("push", &push("feature"), None), 202);
    assert_eq!(deliver("issues", &json!({"action": "opened"}), None), 202);
    assert_eq!(deliver("push", &push("main"), None), 202);
    let runs = engine.wait_runs("deploy-on-push", 3);
    assert_eq!(
        runs.iter().filter(|r| r["status"] == "filtered").count(),
        2,
        "{runs:#?}"
    );
    let bumped: Vec<&Value> = runs.iter().filter(|r| r["status"] == "succeeded").collect();
    assert_eq!(bumped.len(), 1, "{runs:#?}");
    let output: Value = serde_json::from_str(bumped[0]["output"].as_str().unwrap()).unwrap();
    assert_eq!(output["bumped"], json!(["web-a", "web-b"]), "{output}");
    for name in ["web-a", "web-b"] {
        let d = server.get("apps", "deployments", "default", name).unwrap();
        assert_eq!(
            d["metadata"]["annotations"]["wasmtrigger.dev/revision"], "1",
            "{d}"
        );
        assert_eq!(
            d["spec"]["template"]["metadata"]["annotations"]["wasmtrigger.dev/revision"],
            "1"
        );
    }
    let other = server
        .get("apps", "deployments", "default", "other")
        .unwrap();
    assert!(other["metadata"]["annotations"].is_null(), "{other}");
    assert_eq!(engine.stop(), 0);
    server.assert_nothing_forbidden();
}
