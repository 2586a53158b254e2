//! `type: kube-watch`: changes to Kubernetes objects become events.
//!
//! The watch itself is shared (see `crate::kube`); this task keeps what its
//! trigger asked for — its event types, the initial list or not, updates
//! that are only status or bookkeeping noise or not — and submits the rest.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::config::{KubeEvent, KubeWatchConfig};
use crate::dispatch::Submitter;
use crate::event::Event;
use crate::kube::{KubeConnector, ObjectChange};
use crate::trigger::Trigger;

/// Runs the source until `stop` is cancelled.
pub async fn run(
    trigger: Arc<Trigger>,
    config: KubeWatchConfig,
    submitter: Submitter,
    kube: Arc<KubeConnector>,
    stop: CancellationToken,
) {
    let (mut changes, snapshot) = loop {
        match kube.subscribe(&config).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(trigger = %trigger.name, error = %e, "kube-watch: cannot watch; retrying in 10s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    for change in snapshot {
        handle(&trigger, &config, &submitter, &change).await;
    }
    loop {
        let change = tokio::select! {
            c = changes.recv() => c,
            _ = stop.cancelled() => break,
        };
        match change {
            Ok(change) => handle(&trigger, &config, &submitter, &change).await,
            Err(RecvError::Lagged(n)) => {
                tracing::error!(trigger = %trigger.name, missed = n, "kube-watch: this trigger fell behind the watch and missed changes");
            }
            Err(RecvError::Closed) => break,
        }
    }
}

async fn handle(
    trigger: &Arc<Trigger>,
    config: &KubeWatchConfig,
    submitter: &Submitter,
    change: &ObjectChange,
) {
    if change.initial && !config.initial {
        return;
    }
    if !config.events.contains(&change.kind) {
        return;
    }
    if config.skip_noise
        && change.kind == KubeEvent::Update
        && change
            .old
            .as_ref()
            .is_some_and(|old| substance(old) == substance(&change.object))
    {
        return;
    }
    let mut data = json!({ "type": change.kind.name(), "object": change.object });
    if let Some(old) = &change.old
        && change.kind == KubeEvent::Update
    {
        data["oldObject"] = old.clone();
    }
    let event = Event::new(&trigger.name, "kube-watch", change.kind.name(), &data);
    // A refused event is counted and logged by the submitter.
    let _ = submitter.submit(trigger, event).await;
}

/// The object without what changes on every write or only reports state.
fn substance(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for noise in ["resourceVersion", "managedFields", "generation"] {
            meta.remove(noise);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_status_and_bookkeeping_metadata() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1", "managedFields": []}, "spec": {"r": 1}, "status": {"ready": 0}});
        let status_only = json!({"metadata": {"name": "x", "resourceVersion": "2", "managedFields": [{}]}, "spec": {"r": 1}, "status": {"ready": 1}});
        let spec = json!({"metadata": {"name": "x", "resourceVersion": "3"}, "spec": {"r": 2}, "status": {"ready": 1}});
        let label = json!({"metadata": {"name": "x", "resourceVersion": "4", "labels": {"a": "b"}}, "spec": {"r": 1}});
        assert_eq!(substance(&a), substance(&status_only));
        assert_ne!(substance(&a), substance(&spec));
        assert_ne!(substance(&a), substance(&label));
    }
}
