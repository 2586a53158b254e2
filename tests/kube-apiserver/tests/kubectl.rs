//! Cross-checks the test API server with a client nobody here wrote:
//! kubectl (`/usr/bin/kubectl`), through a kubeconfig. Server-side apply,
//! merge and JSON patches, label selectors, paging, conflicts, watches,
//! compaction (in-stream 410), cut connections and injected errors.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wasmtrigger_test_apiserver::{ApiError, ApiServer};

struct Cluster {
    server: ApiServer,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl Cluster {
    fn start() -> Self {
        let server = ApiServer::start(&[]);
        let dir = std::env::temp_dir().join(format!("wt-apiserver-{}", uuid_like()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        server.write_kubeconfig(&kubeconfig).unwrap();
        Cluster {
            server,
            kubeconfig,
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args);
        cmd
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let out = self
            .command(args)
            .output()
            .expect("kubectl is installed (/usr/bin/kubectl)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl(args);
        assert!(ok, "kubectl {args:?} failed: {err}");
        out
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }

    fn cm(&self, name: &str) -> Option<Value> {
        self.server.get("", "configmaps", "default", name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() ^ (&Instant::now() as *const _ as u128)
    )
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels: {app: web}\ndata:\n  a: \"1\"\n";

#[test]
fn kubectl_applies_patches_selects_conflicts_and_deletes() {
    let c = Cluster::start();
    let file = c.file("cm.yaml", CM);
    // OpenAPI is not served, so kubectl's client-side schema validation is off.
    let out = c.ok(&[
        "apply",
        "--validate=false",
        "--server-side",
        "--field-manager",
        "ops",
        "-f",
        &file,
    ]);
    assert!(out.contains("serverside-applied"), "{out}");
    let cm = c.cm("settings").expect("created");
    assert_eq!(cm["data"]["a"], "1");
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "ops");
    assert!(
        cm["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    let rv1: u64 = cm["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Applying the same thing again changes nothing: same resourceVersion.
    c.ok(&[
        "apply",
        "--validate=false",
        "--server-side",
        "--field-manager",
        "ops",
        "-f",
        &file,
    ]);
    assert_eq!(
        c.cm("settings").unwrap()["metadata"]["resourceVersion"],
        rv1.to_string()
    );

    c.ok(&[
        "patch",
        "configmap",
        "settings",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"b":"2"}}"#,
    ]);
    c.ok(&[
        "patch",
        "cm",
        "settings",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/data/c","value":"3"},{"op":"remove","path":"/data/a"}]"#,
    ]);
    let cm = c.cm("settings").unwrap();
    assert_eq!(cm["data"], json!({"b": "2", "c": "3"}));
    let rv3: u64 = cm["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rv3, rv1 + 2, "one version per change");

    // A failed JSON patch test changes nothing and says why.
    let (ok, _, err) = c.kubectl(&[
        "patch",
        "cm",
        "settings",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/data/b","value":"9"}]"#,
    ]);
    assert!(
        !ok && err.contains("invalid") && err.contains("test failed"),
        "{err}"
    );

    // Label selectors.
    // (Imperative `kubectl create configmap` sends protobuf, which this server does not speak.)
    let other = c.file(
        "other.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {x: y}\n",
    );
    c.ok(&["create", "--validate=false", "-f", &other]);
    assert_eq!(
        c.ok(&["get", "cm", "-l", "app=web", "-o", "name"]).trim(),
        "configmap/settings"
    );
    assert_eq!(
        c.ok(&["get", "cm", "-l", "app!=web", "-o", "name"]).trim(),
        "configmap/other"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "--field-selector",
            "metadata.name=other",
            "-o",
            "name"
        ])
        .trim(),
        "configmap/other"
    );

    // 409 AlreadyExists and 409 Conflict on a stale resourceVersion.
    let (ok, _, err) = c.kubectl(&["create", "--validate=false", "-f", &file]);
    assert!(!ok && err.contains("AlreadyExists"), "{err}");
    let mut stale = cm.clone();
    stale["metadata"]["resourceVersion"] = rv1.to_string().into();
    stale["data"]["z"] = "stale".into();
    let stale_file = c.file("stale.json", &stale.to_string());
    let (ok, _, err) = c.kubectl(&["replace", "--validate=false", "-f", &stale_file]);
    assert!(
        !ok && err.contains("Conflict") && err.contains("has been modified"),
        "{err}"
    );

    // 422 for an invalid name; 404 after delete.
    let bad = c.file(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Not_Valid}\n",
    );
    let (ok, _, err) = c.kubectl(&["create", "--validate=false", "-f", &bad]);
    assert!(!ok && err.contains("Invalid"), "{err}");
    c.ok(&["delete", "cm", "settings"]);
    assert!(c.cm("settings").is_none());
    let (ok, _, err) = c.kubectl(&["get", "cm", "settings"]);
    assert!(!ok && err.contains("NotFound"), "{err}");
}

#[test]
fn kubectl_pages_through_long_lists() {
    let c = Cluster::start();
    for i in 0..7 {
        c.server
            .create("", "configmaps", "default", json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}}))
            .unwrap();
    }
    let out = c.ok(&["get", "cm", "--chunk-size=2", "-o", "name"]);
    let names: Vec<&str> = out.lines().collect();
    assert_eq!(names.len(), 7, "{out}");
    // A continue token from before a compaction is 410 Expired.
    let page = c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=2",
    ]);
    let token = serde_json::from_str::<Value>(&page).unwrap()["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_string();
    c.server
        .create(
            "",
            "configmaps",
            "default",
            json!({"metadata": {"name": "late"}}),
        )
        .unwrap();
    c.server.compact();
    let (ok, _, err) = c.kubectl(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}"),
    ]);
    assert!(!ok && err.contains("Expired"), "{err}");
}

/// Lines a child prints, read on a thread.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_event(rx: &mpsc::Receiver<String>) -> Value {
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a watch event");
    serde_json::from_str(&line).expect("one JSON event per line")
}

#[test]
fn kubectl_watches_changes_and_sees_cuts_and_compactions() {
    let c = Cluster::start();
    c.server
        .create(
            "",
            "configmaps",
            "default",
            json!({"metadata": {"name": "w", "labels": {"app": "web"}}, "data": {"n": "0"}}),
        )
        .unwrap();
    let rv_before = c.server.resource_version();
    let mut watch = c
        .command(&["get", "--raw", &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv_before}&allowWatchBookmarks=true")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let events = lines_of(&mut watch);
    c.ok(&[
        "patch",
        "cm",
        "w",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"n":"1"}}"#,
    ]);
    let mut seen = next_event(&events);
    while seen["type"] == "BOOKMARK" {
        seen = next_event(&events);
    }
    assert_eq!(seen["type"], "MODIFIED");
    assert_eq!(seen["object"]["data"]["n"], "1");
    // A no-op patch emits nothing; the next event is the delete.
    c.ok(&[
        "patch",
        "cm",
        "w",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"n":"1"}}"#,
    ]);
    c.ok(&["delete", "cm", "w"]);
    let mut types = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !types.contains(&"DELETED".to_string()) && Instant::now() < deadline {
        let e = next_event(&events);
        types.push(e["type"].as_str().unwrap().to_string());
    }
    assert_eq!(
        types
            .iter()
            .filter(|t| *t != "BOOKMARK")
            .collect::<Vec<_>>(),
        ["DELETED"]
    );
    // An idle watch that asked for bookmarks gets one, at the current version.
    let bookmark = next_event(&events);
    assert_eq!(bookmark["type"], "BOOKMARK");
    assert_eq!(
        bookmark["object"]["metadata"]["resourceVersion"],
        c.server.resource_version().to_string()
    );

    // Cutting connections ends the watch.
    c.server.cut_watches();
    let deadline = Instant::now() + Duration::from_secs(20);
    while watch.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the cut watch did not end");
        std::thread::sleep(Duration::from_millis(20));
    }

    // After a compaction, a watch from an old version gets an in-stream ERROR 410.
    c.server.compact();
    let out = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv_before}"),
    ]);
    let event: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}

#[test]
fn kubectl_discovers_kinds_and_gets_injected_errors() {
    let c = Cluster::start();
    let resources = c.ok(&["api-resources", "-o", "name"]);
    for kind in [
        "configmaps",
        "deployments.apps",
        "jobs.batch",
        "leases.coordination.k8s.io",
    ] {
        assert!(
            resources.lines().any(|l| l == kind),
            "{kind} in:\n{resources}"
        );
    }
    c.server.fail_next(
        "GET",
        "/configmaps",
        ApiError::new(503, "ServiceUnavailable", "injected"),
    );
    let (ok, _, err) = c.kubectl(&["get", "cm", "--request-timeout=5s"]);
    assert!(!ok && err.contains("injected"), "{err}");
    c.ok(&["get", "cm"]);
}

/// A kpack-like third-party CRD: namespaced, a status subresource, and a
/// printer column with a JSONPath filter.
pub const IMAGE_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: { name: images.kpack.io }
spec:
  group: kpack.io
  scope: Namespaced
  names: { kind: Image, plural: images, singular: image, shortNames: [img], categories: [kpack] }
  versions:
    - name: v1alpha2
      served: true
      storage: true
      subresources: { status: {} }
      schema: { openAPIV3Schema: { type: object, x-kubernetes-preserve-unknown-fields: true } }
      additionalPrinterColumns:
        - { name: LatestImage, type: string, jsonPath: .status.latestImage }
        - { name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status' }
"#;

fn trigger_crd() -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crd/trigger.yaml"),
    )
    .unwrap()
}

#[test]
fn kubectl_serves_applied_crds_with_tables_status_and_dry_runs() {
    let c = Cluster::start();
    let (ok, _, err) = c.kubectl(&["get", "triggers"]);
    assert!(!ok && err.contains("doesn't have a resource type"), "{err}");
    let crds = c.file("crds.yaml", &format!("{}\n---\n{IMAGE_CRD}", trigger_crd()));
    c.ok(&["apply", "--validate=false", "-f", &crds]);
    c.ok(&[
        "wait",
        "--for=condition=established",
        "--timeout=20s",
        "crd/triggers.wasmtrigger.dev",
        "crd/images.kpack.io",
    ]);
    // Discovery: plural, short name and category.
    let resources = c.ok(&["api-resources", "--api-group=wasmtrigger.dev", "-o", "wide"]);
    assert!(
        resources.contains("triggers") && resources.contains("wt"),
        "{resources}"
    );
    let (_, out, err) = c.kubectl(&["get", "triggers"]);
    assert!(err.contains("No resources found"), "{out}{err}");

    // A write to the object ignores status; a write to /status changes only status.
    let trigger = c.file(
        "t.yaml",
        "apiVersion: wasmtrigger.dev/v1alpha1\nkind: Trigger\nmetadata: { name: nightly }\nspec:\n  source: { type: schedule, every: 1h }\n  action: { module: log-event.wasm }\nstatus: { state: Forged }\n",
    );
    c.ok(&["apply", "--validate=false", "-f", &trigger]);
    let stored = c
        .server
        .get("wasmtrigger.dev", "triggers", "default", "nightly")
        .unwrap();
    assert!(stored.get("status").is_none(), "{stored}");
    let status = r#"{"status":{"state":"Ready","lastSuccess":"2026-01-01T00:00:00Z","lastFailure":"2026-01-01T00:00:00Z","failureCount":3},"spec":{"action":{"module":"evil.wasm"}}}"#;
    c.ok(&[
        "patch",
        "trigger",
        "nightly",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ]);
    let stored = c
        .server
        .get("wasmtrigger.dev", "triggers", "default", "nightly")
        .unwrap();
    assert_eq!(stored["status"]["state"], "Ready");
    assert_eq!(
        stored["spec"]["action"]["module"], "log-event.wasm",
        "{stored}"
    );
    c.ok(&[
        "patch",
        "wt",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"status":{"state":"Forged"},"spec":{"description":"x"}}"#,
    ]);
    let stored = c
        .server
        .get("wasmtrigger.dev", "triggers", "default", "nightly")
        .unwrap();
    assert_eq!(
        (
            stored["status"]["state"].as_str(),
            stored["spec"]["description"].as_str()
        ),
        (Some("Ready"), Some("x"))
    );

    // The Table: the CRD's printer columns, a date as an age.
    let table = c.ok(&["get", "triggers"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "STATE", "LAST", "SUCCESS", "LAST", "FAILURE", "FAILURES", "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["nightly", "Ready"], "{table}");
    assert!(
        row[2].ends_with('d') || row[2].ends_with('y'),
        "an age: {table}"
    );
    assert_eq!(row[4], "3", "{table}");

    // The third-party kind, by short name and category, with a filtered column.
    let image = c.file(
        "image.yaml",
        "apiVersion: kpack.io/v1alpha2\nkind: Image\nmetadata: { name: app }\nspec: { tag: registry.local/app }\n",
    );
    c.ok(&["apply", "--validate=false", "-f", &image]);
    c.ok(&[
        "patch", "img", "app", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"latestImage":"registry.local/app@sha256:1","conditions":[{"type":"Succeeded","status":"False"},{"type":"Ready","status":"True"}]}}"#,
    ]);
    let table = c.ok(&["get", "kpack"]);
    assert!(
        table.contains("LATESTIMAGE") && table.contains("registry.local/app@sha256:1"),
        "{table}"
    );
    let ready = table.lines().find(|l| l.contains("app")).unwrap();
    assert!(ready.split_whitespace().any(|c| c == "True"), "{table}");

    // dryRun=All: answered, nothing stored, no event.
    let rv = c.server.resource_version();
    let other = c.file(
        "other.yaml",
        &std::fs::read_to_string(c.dir.join("image.yaml"))
            .unwrap()
            .replace("name: app", "name: other"),
    );
    c.ok(&[
        "create",
        "--validate=false",
        "--dry-run=server",
        "-f",
        &other,
    ]);
    c.ok(&["delete", "img", "app", "--dry-run=server"]);
    assert!(
        c.server
            .get("kpack.io", "images", "default", "other")
            .is_none()
    );
    assert!(
        c.server
            .get("kpack.io", "images", "default", "app")
            .is_some()
    );
    assert_eq!(c.server.resource_version(), rv, "a dry run changes nothing");

    // Deleting the CRD removes the kind and its objects.
    c.ok(&["delete", "crd", "images.kpack.io"]);
    let (ok, _, err) = c.kubectl(&["get", "images.kpack.io"]);
    assert!(!ok && err.contains("doesn't have a resource type"), "{err}");
    assert!(c.server.list("kpack.io", "images", None).is_empty());
    c.ok(&["get", "triggers"]);
}

#[test]
fn rbac_allows_what_roles_grant_a_service_account_and_refuses_the_rest() {
    use wasmtrigger_test_apiserver::ServerOptions;
    let server = ApiServer::start_with(ServerOptions {
        https: true,
        token: Some("admin-token".into()),
        rbac: true,
        ..ServerOptions::default()
    });
    let dir = std::env::temp_dir().join(format!("wt-apiserver-rbac-{}", uuid_like()));
    std::fs::create_dir_all(&dir).unwrap();
    let admin = dir.join("admin");
    server.write_kubeconfig(&admin).unwrap();
    let sa = dir.join("sa");
    server
        .write_kubeconfig_with(&sa, &server.service_account_token("default", "engine"))
        .unwrap();
    let run = |kubeconfig: &PathBuf, args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let rbac = r#"
apiVersion: v1
kind: Namespace
metadata: { name: other }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: settings, namespace: default }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: secret-ish, namespace: default }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: reader, namespace: default }
rules:
  - { apiGroups: [""], resources: [configmaps], verbs: [get, list, watch] }
  - { apiGroups: [""], resources: [configmaps], verbs: [patch], resourceNames: [settings] }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: reader, namespace: default }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader }
subjects: [{ kind: ServiceAccount, name: engine, namespace: default }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: { name: namespaces }
rules: [{ apiGroups: [""], resources: [namespaces], verbs: [list] }]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: { name: namespaces }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: namespaces }
subjects: [{ kind: Group, name: "system:serviceaccounts:default" }]
"#;
    let (ok, out) = run(&admin, &["apply", "--validate=false", "-f", "-"], rbac);
    assert!(ok, "{out}");
    // Allowed: what the Role and the ClusterRole (through a group) grant.
    for args in [
        &["get", "cm", "settings"][..],
        &["get", "cm"],
        &["get", "ns"],
        &[
            "patch",
            "cm",
            "settings",
            "--type=merge",
            "-p",
            r#"{"data":{"a":"1"}}"#,
        ],
    ] {
        let (ok, out) = run(&sa, args, "");
        assert!(ok, "kubectl {args:?}: {out}");
    }
    // Refused, with the real message: another verb, another name, another
    // namespace, the cluster scope.
    for (args, message) in [
        (
            &["delete", "cm", "settings"][..],
            r#"User "system:serviceaccount:default:engine" cannot delete resource "configmaps" in API group "" in the namespace "default""#,
        ),
        (
            &["patch", "cm", "secret-ish", "--type=merge", "-p", "{}"],
            "cannot patch resource \"configmaps\"",
        ),
        (&["get", "cm", "-n", "other"], "in the namespace \"other\""),
        (
            &["get", "deploy"],
            "cannot list resource \"deployments\" in API group \"apps\"",
        ),
        (&["get", "ns", "default"], "at the cluster scope"),
    ] {
        let (ok, out) = run(&sa, args, "");
        assert!(
            !ok && (out.contains("Forbidden") || out.contains("forbidden")),
            "kubectl {args:?}: {out}"
        );
        assert!(out.contains(message), "kubectl {args:?}: {out}");
    }
    assert_eq!(server.forbidden().len(), 5, "{:?}", server.forbidden());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kubectl_get_watch_prints_table_rows_as_against_a_real_server() {
    let c = Cluster::start();
    c.ok(&[
        "apply",
        "--validate=false",
        "-f",
        &c.file(
            "a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: first }\n",
        ),
    ]);
    let mut watch = c
        .command(&["get", "cm", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut watch);
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line from kubectl get -w")
    };
    assert!(next().starts_with("NAME"), "a header first");
    assert!(next().starts_with("first "));
    c.ok(&[
        "apply",
        "--validate=false",
        "-f",
        &c.file(
            "b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: second }\n",
        ),
    ]);
    let row = next();
    assert!(
        row.starts_with("second "),
        "a row, not another header: {row}"
    );
    let _ = watch.kill();
    let _ = watch.wait();
}
