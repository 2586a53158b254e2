//! Dispatch behaviour through an in-process engine: retries with growing
//! backoff, the per-worker rate limit, a full queue, CEL filters.

use chrono::DateTime;
use wasmtrigger::runs::{RunRecord, RunStatus};
use wasmtrigger::runtime::FailureKind;

use crate::support::{Workspace, start_engine};

fn millis_between(earlier_end: (&str, u64), later_start: &str) -> i64 {
    let start = DateTime::parse_from_rfc3339(earlier_end.0).unwrap();
    let end = start + chrono::Duration::milliseconds(earlier_end.1 as i64);
    (DateTime::parse_from_rfc3339(later_start).unwrap() - end).num_milliseconds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_with_growing_backoff() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        r#"
triggers:
  - name: flaky
    source: { type: schedule, now: true }
    action:
      module: hostile.wasm
      params: { mode: flaky, failures: 3 }
      retry: { max: 4, delay: 100ms, maxDelay: 10s }
  - name: hopeless
    source: { type: schedule, now: true }
    action:
      module: hostile.wasm
      params: { mode: fail }
      retry: { max: 2, delay: 10ms }
"#,
    )
    .await;
    let flaky = runs.wait_runs("flaky", 1).await.remove(0);
    assert_eq!(flaky.status, RunStatus::Succeeded, "{flaky:#?}");
    assert_eq!(flaky.output.as_deref(), Some("succeeded on attempt 4"));
    assert_eq!(flaky.attempts.len(), 4);
    for (i, a) in flaky.attempts.iter().enumerate() {
        assert_eq!(a.number as usize, i + 1);
        assert_eq!(a.error.is_some(), i < 3);
    }
    // Retry n waits between half and all of 100ms * 2^(n-1): the lower bounds must hold.
    for (n, min_wait) in [(1usize, 50), (2, 100), (3, 200)] {
        let (prev, next) = (&flaky.attempts[n - 1], &flaky.attempts[n]);
        let waited = millis_between((&prev.started_at, prev.duration_ms), &next.started_at);
        assert!(
            waited >= min_wait - 2,
            "retry {n} waited {waited}ms, expected at least {min_wait}ms"
        );
    }

    let hopeless = runs.wait_runs("hopeless", 1).await.remove(0);
    assert_eq!(hopeless.status, RunStatus::Failed);
    assert_eq!(hopeless.attempts.len(), 3, "1 attempt + 2 retries");
    assert_eq!(hopeless.reason, Some(FailureKind::GuestError));
    assert!(
        hopeless
            .error
            .as_deref()
            .unwrap()
            .contains("failing on purpose")
    );
    assert!(engine.stats().retries >= 5);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_worker_qps_spaces_every_execution() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        r#"
engine: { workers: 1, perWorkerQps: 5 }
triggers:
  - name: fast
    source: { type: schedule, every: 10ms, immediately: true }
    action: { module: hostile.wasm, params: { mode: ok } }
"#,
    )
    .await;
    let records = runs.wait_runs("fast", 4).await;
    engine.shutdown().await;
    let starts: Vec<_> = records
        .iter()
        .map(|r| DateTime::parse_from_rfc3339(&r.started_at).unwrap())
        .collect();
    for pair in starts.windows(2) {
        let gap = (pair[1] - pair[0]).num_milliseconds();
        assert!(gap >= 195, "executions {gap}ms apart at 5 qps: {starts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_counts_and_logs_and_accepted_events_all_finish() {
    let ws = Workspace::new();
    let mut yaml = String::from("engine: { workers: 1, queueSize: 1 }\ntriggers:\n");
    for i in 0..6 {
        yaml.push_str(&format!(
            "  - name: busy-{i}\n    source: {{ type: schedule, every: 10ms }}\n    action: {{ module: hostile.wasm, params: {{ mode: sleep, ms: 100 }} }}\n"
        ));
    }
    let (engine, runs) = start_engine(&ws, &yaml).await;
    let deadline = std::time::Instant::now() + crate::support::DEADLINE;
    while engine.stats().dropped_queue_full == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "queue never overflowed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stats = engine.shutdown().await;
    assert!(stats.dropped_queue_full > 0);
    let records: Vec<RunRecord> = runs.all();
    assert!(
        records.iter().all(|r| r.status == RunStatus::Succeeded),
        "{records:#?}"
    );
    // Every accepted event ended in exactly one record; refused ones in none.
    let mut ids: Vec<_> = records.iter().map(|r| r.event_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), records.len(), "no event recorded twice");
    assert_eq!(records.len() as u64, stats.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cel_filters_drop_events_before_the_action() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        r#"
triggers:
  - name: even
    source: { type: schedule, every: 20ms, immediately: true }
    filter: { cel: 'event.data.sequence % 2 == 0 && event.source == "schedule"' }
    action: { module: counter.wasm }
"#,
    )
    .await;
    let records = runs.wait_runs("even", 6).await;
    engine.shutdown().await;
    let filtered = records
        .iter()
        .filter(|r| r.status == RunStatus::Filtered)
        .count();
    let succeeded = records
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .count();
    assert!(filtered >= 2 && succeeded >= 2, "{records:#?}");
    assert!(records.iter().all(|r| r.filter.as_deref() == Some("cel")));
    assert!(
        records
            .iter()
            .filter(|r| r.status == RunStatus::Filtered)
            .all(|r| r.module.is_none() && r.attempts.is_empty())
    );
}
