//! `isolation: pooled` against the default fresh instance per event, through
//! the engine: guest memory persists only in pooled mode, and an instance
//! that trapped is discarded rather than reused.

use serde_json::json;
use wasmtrigger::event::Event;
use wasmtrigger::runs::RunStatus;

use crate::support::{self, Workspace};

const CONFIG: &str = r#"
engine: { workers: 1 }
triggers:
  - name: fresh
    source: { type: schedule, every: 24h }
    filter: { module: sticky.wasm }
    action: { module: hostile.wasm, params: { mode: ok } }
  - name: pooled
    source: { type: schedule, every: 24h }
    filter: { module: sticky.wasm, isolation: pooled }
    action: { module: hostile.wasm, params: { mode: ok } }
"#;

/// Sends the events one at a time and returns each run's status.
async fn statuses(
    engine: &wasmtrigger::engine::Engine,
    collector: &std::sync::Arc<support::Collector>,
    name: &str,
    events: &[serde_json::Value],
) -> Vec<RunStatus> {
    let trigger = engine
        .triggers()
        .await
        .into_iter()
        .find(|t| &*t.name == name)
        .expect("trigger runs");
    for (i, data) in events.iter().enumerate() {
        let event = Event::new(name, "test", "test", data);
        engine
            .submitter()
            .submit(&trigger, event)
            .await
            .expect("accepted");
        collector.wait_runs(name, i + 1).await;
    }
    collector.of(name).iter().map(|r| r.status).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_reuses_instances_and_discards_trapped_ones() {
    let ws = Workspace::new();
    let (engine, collector) = support::start_engine(&ws, CONFIG).await;
    let plain = json!({});
    use RunStatus::{Failed, Filtered, Succeeded};

    // Fresh: the count starts at zero in every instance, so nothing passes.
    let fresh = statuses(
        &engine,
        &collector,
        "fresh",
        &[plain.clone(), plain.clone(), plain.clone()],
    )
    .await;
    assert_eq!(fresh, [Filtered, Filtered, Filtered]);

    // Pooled: the second event sees the first one's count; the trap throws
    // that instance away, so the count starts over after it.
    let events = [
        plain.clone(),
        plain.clone(),
        json!({"panic": true}),
        plain.clone(),
        plain.clone(),
    ];
    let pooled = statuses(&engine, &collector, "pooled", &events).await;
    assert_eq!(pooled, [Filtered, Succeeded, Failed, Filtered, Succeeded]);
    let trapped = &collector.of("pooled")[2];
    assert!(
        trapped
            .error
            .as_deref()
            .is_some_and(|e| e.contains("sticky asked to panic")),
        "the trap quotes the panic: {trapped:?}"
    );
    engine.shutdown().await;
}

/// Memory kept resident between instances (`engine.keepResident`) is reset
/// in place rather than handed back to the kernel; whichever way a page is
/// reset, nothing of one event's instance is left for the next. 0 hands
/// every page back, 64Mi keeps everything the guest touched and resets it
/// in place, the default is in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_instance_sees_nothing_of_the_last_one_whatever_is_kept_resident() {
    for keep in ["0", "64Ki", "1Mi", "64Mi"] {
        let ws = Workspace::new();
        let config = CONFIG.replace(
            "engine: { workers: 1 }",
            &format!("engine: {{ workers: 1, keepResident: {keep} }}"),
        );
        let (engine, collector) = support::start_engine(&ws, &config).await;
        let events = vec![json!({}); 5];
        let fresh = statuses(&engine, &collector, "fresh", &events).await;
        assert_eq!(
            fresh,
            [RunStatus::Filtered; 5],
            "keepResident: {keep}: a fresh instance saw an earlier one's count"
        );
        // The same slots, used by pooled instances, do keep state: the count is real.
        let pooled = statuses(&engine, &collector, "pooled", &events[..2]).await;
        assert_eq!(pooled, [RunStatus::Filtered, RunStatus::Succeeded]);
        engine.shutdown().await;
    }
}

#[test]
fn isolation_is_checked_where_it_is_written() {
    support::assert_check_errors(
        r#"
triggers:
  - name: on-cel
    source: { type: schedule, every: 1h }
    filter: { cel: "true", isolation: pooled }
    action: { module: counter.wasm }
  - name: unknown-mode
    source: { type: schedule, every: 1h }
    filter: { module: ready-replicas.wasm, isolation: shared }
    action: { module: counter.wasm }
  - name: on-action
    source: { type: schedule, every: 1h }
    action: { module: counter.wasm, isolation: pooled }
"#,
        &[
            (
                "on-cel",
                &["`isolation` apply to filter modules, not to `cel`"],
            ),
            (
                "unknown-mode",
                &["unknown variant `shared`, expected `fresh` or `pooled`"],
            ),
            (
                "on-action",
                &["`action.isolation`", "unknown field `isolation`"],
            ),
        ],
    );
}
