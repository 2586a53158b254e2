//! Cross-checks the test API server with the official Kubernetes Python
//! client (`kubernetes` from PyPI, pinned in `python/requirements.txt`,
//! installed by `scripts/setup`): a watch with bookmarks from a list's
//! resourceVersion, and the client's Lease-based leader election with three
//! candidates (which relies on 409 Conflict for stale replaces).

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use wasmtrigger_test_apiserver::ApiServer;

fn python() -> PathBuf {
    let tools = std::env::var_os("WASMTRIGGER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
            cache.join("wasmtrigger/tools")
        });
    let python = tools.join("pyclient/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup (it installs the Kubernetes Python client)",
        python.display()
    );
    python
}

/// Runs `crosscheck.py` against a fresh server and returns what it printed.
fn crosscheck(server: &ApiServer, check: &str) -> Value {
    let dir = std::env::temp_dir().join(format!("wt-pyclient-{}-{check}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/crosscheck.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&kubeconfig)
        .arg(check)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run the Python client");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "crosscheck.py {check} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_python_client_watches_with_bookmarks() {
    let server = ApiServer::start(&[]);
    let seen = crosscheck(&server, "watch");
    let events = seen["events"].as_array().unwrap();
    let changes: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["data"]["a"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [("ADDED", "1"), ("MODIFIED", "2"), ("DELETED", "2")],
        "{seen}"
    );
    let versions: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| e["resourceVersion"].as_str().unwrap().parse().unwrap())
        .collect();
    let start: u64 = seen["start"].as_str().unwrap().parse().unwrap();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert!(versions[0] > start, "nothing from before the list");
    let bookmarks: Vec<&Value> = events.iter().filter(|e| e["type"] == "BOOKMARK").collect();
    assert!(!bookmarks.is_empty(), "asked-for bookmarks arrive: {seen}");
    let last = versions.last().unwrap().to_string();
    assert!(
        bookmarks
            .iter()
            .all(|b| b["resourceVersion"] == last.as_str()),
        "bookmarks carry the latest version: {seen}"
    );
    assert_eq!(seen["last"], last.as_str(), "the client resumes from there");
}

#[test]
fn the_python_client_elects_exactly_one_leader_and_hands_over() {
    let server = ApiServer::start(&[]);
    let seen = crosscheck(&server, "election");
    let leaders = seen["leaders"].as_array().unwrap();
    assert_eq!(leaders.len(), 2, "one leader, then one successor: {seen}");
    let (first, second) = (&leaders[0], &leaders[1]);
    assert_ne!(first["identity"], second["identity"]);
    let stopped = first["stopped"].as_f64().expect("the first leader stopped");
    assert!(
        second["started"].as_f64().unwrap() > stopped,
        "never two leaders at once: {seen}"
    );
    assert!(second["stopped"].is_null(), "the successor keeps leading");
    assert_eq!(seen["holder"], second["identity"], "the Lease names it");
    let lease = server
        .get("coordination.k8s.io", "leases", "default", "crosscheck")
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], second["identity"]);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 4);
}

#[test]
fn the_python_client_defines_a_kind_with_a_crd_and_uses_it() {
    let server = ApiServer::start(&[]);
    let seen = crosscheck(&server, "crd");
    assert_eq!(seen["established"], true, "{seen}");
    assert!(
        seen["createdStatus"].is_null(),
        "a create drops status: {seen}"
    );
    assert_eq!(
        seen["spec"]["secretName"], "web-tls",
        "a /status patch changes only status"
    );
    assert_eq!(seen["spec"]["dnsNames"][0], "web.example");
    assert_eq!(
        seen["status"]["conditions"][0]["status"], "False",
        "an object patch keeps status"
    );
    assert_eq!(seen["listed"], serde_json::json!(["web"]));
    assert_eq!(
        seen["columns"],
        serde_json::json!(["Name", "Ready", "Secret"])
    );
    assert_eq!(
        seen["rows"],
        serde_json::json!([["web", "False", "web-tls"]])
    );
    assert_eq!(
        seen["gone"], true,
        "deleting the CRD removes the kind: {seen}"
    );
}
