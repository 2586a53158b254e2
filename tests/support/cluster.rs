//! A test API server that enforces RBAC, where the engine holds exactly
//! what `wasmtrigger rbac` prints for its config: least privilege is then
//! proven on every run, and a missing rule fails the test.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::Command;

use wasmtrigger_test_apiserver::{ApiServer, ServerOptions};

use super::{Workspace, binary, kubectl};

/// The engine's service account (as `wasmtrigger rbac` defaults name it, in `default`).
pub const SERVICE_ACCOUNT: (&str, &str) = ("default", "wasmtrigger");

/// An HTTPS test API server with RBAC on; set-up goes through its admin
/// token (the direct helpers, or [`LeastPrivilege::admin_kubeconfig`]).
pub struct LeastPrivilege {
    server: ApiServer,
}

impl Deref for LeastPrivilege {
    type Target = ApiServer;

    fn deref(&self) -> &ApiServer {
        &self.server
    }
}

impl LeastPrivilege {
    /// Starts the server.
    pub fn start() -> Self {
        LeastPrivilege {
            server: ApiServer::start_with(ServerOptions {
                https: true,
                token: Some("admin-token".into()),
                rbac: true,
                ..ServerOptions::default()
            }),
        }
    }

    /// A kubeconfig with the admin's token, for set-up with kubectl.
    pub fn admin_kubeconfig(&self, ws: &Workspace) -> PathBuf {
        let path = ws.path().join("admin-kubeconfig");
        self.server.write_kubeconfig(&path).unwrap();
        path
    }

    /// Applies what `wasmtrigger rbac --config CONFIG -n default EXTRA...`
    /// prints, and returns a kubeconfig holding only the engine's service
    /// account token.
    pub fn grant(&self, ws: &Workspace, config: &Path, extra: &[&str]) -> PathBuf {
        let (namespace, name) = SERVICE_ACCOUNT;
        let out = Command::new(binary())
            .args(["rbac", "--config"])
            .arg(config)
            .args(["-n", namespace, "--service-account", name])
            .args(extra)
            .output()
            .expect("run wasmtrigger rbac");
        let rbac = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "wasmtrigger rbac: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let admin = self.admin_kubeconfig(ws);
        kubectl(
            Some(&admin),
            &["apply", "--validate=false", "-f", "-"],
            &rbac,
        );
        let path = ws.path().join("engine-kubeconfig");
        let token = self.server.service_account_token(namespace, name);
        self.server.write_kubeconfig_with(&path, &token).unwrap();
        path
    }

    /// Asserts the engine was never refused: it had every rule it needed.
    pub fn assert_nothing_forbidden(&self) {
        let forbidden = self.server.forbidden();
        assert!(
            forbidden.is_empty(),
            "requests beyond what `wasmtrigger rbac` granted:\n{}",
            forbidden.join("\n")
        );
    }
}

/// A plain test API server holding Deployment `default/web` (1 replica),
/// and a kubeconfig for it written into `ws` (its path, for `KUBECONFIG`).
pub fn with_web_deployment(ws: &Workspace) -> (ApiServer, String) {
    let server = ApiServer::start(&[]);
    server
        .create(
            "apps",
            "deployments",
            "default",
            serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 1}}),
        )
        .expect("create default/web");
    let kubeconfig = ws.path().join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .expect("write the kubeconfig");
    (server, kubeconfig.display().to_string())
}

/// A trigger (YAML, under `triggers:`) that labels `default/web` with
/// `touched: "yes"` through the builtin patch-resource when fired with `{"go": true}`.
pub const LABEL_WEB_TRIGGER: &str = r#"  - name: label-web
    source: { type: schedule, every: 24h }
    filter: { cel: 'event.data.go == true' }
    action:
      module: builtin:patch-resource
      params:
        target: { apiVersion: apps/v1, kind: Deployment, namespace: default, name: web }
        patch: { metadata: { labels: { touched: "yes" } } }
      grants: { kube: [ { verbs: [patch], apiVersion: apps/v1, kind: Deployment, namespaces: [default], names: [web] } ] }
"#;
