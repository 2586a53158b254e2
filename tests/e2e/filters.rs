//! The ready-replicas example filter on realistic Deployment objects.

use serde_json::{Value, json};
use wasmtrigger::capabilities::HostServices;
use wasmtrigger::config::Limits;
use wasmtrigger::event::Event;
use wasmtrigger::runtime::{FailureKind, Invocation, Runtime, RuntimeSettings};
use wasmtrigger::state::StateStore;

use crate::support;

fn deployment() -> Value {
    let text =
        std::fs::read_to_string(support::repo().join("examples/events/deployment-ready.json"))
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

async fn verdict(
    runtime: &Runtime,
    data: &Value,
) -> Result<bool, wasmtrigger::runtime::InvokeError> {
    let module = runtime
        .load_file(
            "ready-replicas.wasm",
            &support::module("ready-replicas.wasm"),
        )
        .unwrap();
    let store = StateStore::in_memory(Default::default()).unwrap();
    let limits = Limits {
        timeout: std::time::Duration::from_secs(5),
        memory: 32 << 20,
    };
    let services = HostServices::new(Default::default()).unwrap();
    let inv = Invocation::new(
        "deployments",
        limits,
        Some(store.kv("deployments")),
        services,
    );
    let event = Event::new("deployments", "kube-watch", "update", data);
    runtime.call_filter(&module, &inv, &event).await
}

#[tokio::test]
async fn ready_replicas_follows_kubernetes_defaulting() {
    let runtime = Runtime::new(&RuntimeSettings::default()).unwrap();

    let ready = deployment();
    assert!(
        verdict(&runtime, &ready).await.unwrap(),
        "all 3 of 3 replicas ready"
    );

    let mut progressing = deployment();
    progressing["status"]["readyReplicas"] = json!(1);
    progressing["status"]["updatedReplicas"] = json!(1);
    assert!(
        !verdict(&runtime, &progressing).await.unwrap(),
        "1 of 3 ready is not ready"
    );

    let mut created = deployment();
    created["status"] = json!({});
    created["spec"].as_object_mut().unwrap().remove("replicas");
    assert!(
        !verdict(&runtime, &created).await.unwrap(),
        "just created: default 1 desired, 0 ready"
    );

    let mut scaled_to_zero = deployment();
    scaled_to_zero["spec"]["replicas"] = json!(0);
    scaled_to_zero["status"] = json!({"observedGeneration": 8});
    assert!(
        verdict(&runtime, &scaled_to_zero).await.unwrap(),
        "0 desired and 0 ready"
    );

    let watch_event = json!({"type": "MODIFIED", "object": deployment()});
    assert!(
        verdict(&runtime, &watch_event).await.unwrap(),
        "watch events wrap the object"
    );
}

#[tokio::test]
async fn ready_replicas_rejects_other_kinds_as_a_guest_error() {
    let runtime = Runtime::new(&RuntimeSettings::default()).unwrap();
    let error = verdict(&runtime, &json!({"kind": "ConfigMap", "data": {}}))
        .await
        .unwrap_err();
    assert_eq!(error.kind, FailureKind::GuestError);
    assert!(
        error
            .message
            .contains("expected a Deployment, got a ConfigMap"),
        "{error}"
    );
}
