//! Python, JavaScript, C++ and C modules, built with the pinned toolchains,
//! through the real runtime: filter verdicts on real Deployments, kv, actions
//! with HTTP, guest exceptions and errors as failed runs carrying the
//! language's message, and C++ crashes as contained traps.

use std::sync::Arc;

use serde_json::{Value, json};
use wasmtrigger::capabilities::grants::{Grants, HttpGrant};
use wasmtrigger::capabilities::{ActionAccess, HostServices};
use wasmtrigger::config::Limits;
use wasmtrigger::event::Event;
use wasmtrigger::runtime::{FailureKind, Invocation, LoadedModule, Runtime, RuntimeSettings};
use wasmtrigger::state::StateStore;

use crate::support::{self, http_server::TestServer};

fn runtime() -> Arc<Runtime> {
    let settings = RuntimeSettings {
        cache_dir: Some(support::shared_cache()),
        ..RuntimeSettings::default()
    };
    Arc::new(Runtime::new(&settings).unwrap())
}

async fn load(runtime: &Arc<Runtime>, name: &str) -> Arc<LoadedModule> {
    let path = support::language_modules().join(name);
    let (runtime, name) = (runtime.clone(), name.to_string());
    Arc::new(
        tokio::task::spawn_blocking(move || runtime.load_file(&name, &path))
            .await
            .unwrap()
            .unwrap(),
    )
}

fn deployment() -> Value {
    let text =
        std::fs::read_to_string(support::repo().join("examples/events/deployment-ready.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn limits() -> Limits {
    // Interpreters need more room and time than a Rust module.
    Limits {
        timeout: std::time::Duration::from_secs(30),
        memory: 256 << 20,
    }
}

async fn check_filter(lang: &str) {
    let runtime = runtime();
    let module = load(&runtime, &format!("ready-replicas-{lang}.wasm")).await;
    let store = StateStore::in_memory(Default::default()).unwrap();
    let services = HostServices::new(Default::default()).unwrap();
    let inv = Invocation::new(
        "deployments",
        limits(),
        Some(store.kv("deployments")),
        services,
    );
    let verdict = |data: Value| {
        let (runtime, module, inv) = (runtime.clone(), module.clone(), inv.clone());
        async move {
            let event = Event::new("deployments", "kube-watch", "update", &data);
            runtime.call_filter(&module, &inv, &event).await
        }
    };
    assert!(verdict(deployment()).await.unwrap(), "{lang}: 3 of 3 ready");
    let mut progressing = deployment();
    progressing["status"]["readyReplicas"] = json!(1);
    assert!(
        !verdict(progressing).await.unwrap(),
        "{lang}: 1 of 3 is not ready"
    );
    let mut created = deployment();
    created["status"] = json!({});
    created["spec"].as_object_mut().unwrap().remove("replicas");
    assert!(!verdict(created).await.unwrap(), "{lang}: just created");
    let mut zero = deployment();
    zero["spec"]["replicas"] = json!(0);
    zero["status"] = json!({});
    assert!(verdict(zero).await.unwrap(), "{lang}: scaled to zero");
    assert!(
        verdict(json!({"type": "MODIFIED", "object": deployment()}))
            .await
            .unwrap(),
        "{lang}: watch event"
    );
    let error = verdict(json!({"kind": "ConfigMap"})).await.unwrap_err();
    assert_eq!(error.kind, FailureKind::GuestError, "{lang}: {error}");
    assert!(
        error
            .message
            .contains("expected a Deployment, got a ConfigMap"),
        "{lang}: {error}"
    );
    // Five Deployments counted; the ConfigMap was refused before counting.
    assert_eq!(
        store.kv("deployments").get("seen").unwrap().as_deref(),
        Some("5"),
        "{lang}: kv counted"
    );
}

async fn check_action(lang: &str, exception: &str) {
    let server = TestServer::start().await;
    let runtime = runtime();
    let module = load(&runtime, &format!("kind-counter-{lang}.wasm")).await;
    let store = StateStore::in_memory(Default::default()).unwrap();
    let services = HostServices::new(Default::default()).unwrap();
    let mut inv = Invocation::new("counter", limits(), Some(store.kv("counter")), services);
    inv.access = Some(Arc::new(ActionAccess {
        grants: Grants {
            http: vec![HttpGrant::parse(&server.grant()).unwrap()],
            ..Grants::default()
        },
        http: Default::default(),
    }));
    let event = Event::new("counter", "schedule", "tick", &json!({}));
    let first = runtime
        .call_action(&module, &inv, &event, "{}")
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&first).unwrap(),
        json!({"kind": "tick", "count": 1}),
        "{lang}"
    );
    let params = json!({"url": server.url("/echo")}).to_string();
    let second: Value = serde_json::from_str(
        &runtime
            .call_action(&module, &inv, &event, &params)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (second["count"].as_i64(), second["status"].as_i64()),
        (Some(2), Some(200)),
        "{lang}: {second}"
    );
    let posted = server.seen().pop().unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&posted.body).unwrap(),
        json!({"kind": "tick", "count": 2}),
        "{lang}"
    );
    assert_eq!(
        store.kv("counter").get("kind/tick").unwrap().as_deref(),
        Some("2")
    );

    let failing = json!({"fail": format!("boom from {lang}")}).to_string();
    let error = runtime
        .call_action(&module, &inv, &event, &failing)
        .await
        .unwrap_err();
    assert!(
        error
            .message
            .contains(&format!("{exception}boom from {lang}")),
        "{lang}: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_filter_on_deployments() {
    check_filter("py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_action_with_kv_http_and_an_exception() {
    // An uncaught exception traps; the error quotes Python's last traceback line.
    check_action("py", "ValueError: ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_filter_on_deployments() {
    check_filter("js").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_action_with_kv_http_and_an_exception() {
    check_action("js", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_filter_on_deployments() {
    check_filter("cpp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_action_with_kv_http_and_an_error() {
    check_action("cpp", "").await;
}

/// `abort()` and a write past the end of linear memory trap; the error says
/// which, and the next call on the same module runs normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpp_crashes_are_contained_traps_that_say_what_happened() {
    let runtime = runtime();
    let module = load(&runtime, "kind-counter-cpp.wasm").await;
    let store = StateStore::in_memory(Default::default()).unwrap();
    let services = HostServices::new(Default::default()).unwrap();
    let inv = Invocation::new("crash", limits(), Some(store.kv("crash")), services);
    let event = Event::new("crash", "schedule", "tick", &json!({}));
    for (crash, says) in [
        ("abort", "`unreachable` instruction executed"),
        ("out-of-bounds", "out of bounds memory access"),
    ] {
        let params = json!({ "crash": crash }).to_string();
        let error = runtime
            .call_action(&module, &inv, &event, &params)
            .await
            .unwrap_err();
        assert_eq!(error.kind, FailureKind::Trap, "{crash}: {error}");
        assert!(error.message.contains(says), "{crash}: {error}");
    }
    let after = runtime
        .call_action(&module, &inv, &event, "{}")
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&after).unwrap(),
        json!({"kind": "tick", "count": 1}),
        "a crash left nothing behind"
    );
}

/// The minimal C filter on the raw bindings: deletions are dropped and
/// counted in kv, everything else passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_filter_on_the_raw_bindings() {
    let runtime = runtime();
    let module = load(&runtime, "skip-deletes-c.wasm").await;
    let store = StateStore::in_memory(Default::default()).unwrap();
    let services = HostServices::new(Default::default()).unwrap();
    let inv = Invocation::new("watch", limits(), Some(store.kv("watch")), services);
    for (kind, passes) in [
        ("create", true),
        ("update", true),
        ("delete", false),
        ("deleted", true),
        ("delete", false),
    ] {
        let event = Event::new("watch", "kube-watch", kind, &deployment());
        let verdict = runtime.call_filter(&module, &inv, &event).await.unwrap();
        assert_eq!(verdict, passes, "{kind}");
    }
    assert_eq!(
        store.kv("watch").get("dropped").unwrap().as_deref(),
        Some("2")
    );
}
