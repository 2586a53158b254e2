//! Hostile guests are each contained as one failed run with a clear reason,
//! while a healthy trigger next to them keeps running.

use wasmtrigger::runs::RunStatus;
use wasmtrigger::runtime::FailureKind;

use crate::support::{Workspace, start_engine};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_fail_alone() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        r#"
engine: { workers: 4, retry: { max: 0 }, stdioLimit: 64Ki }
triggers:
  - name: healthy
    source: { type: schedule, every: 30ms, immediately: true }
    action: { module: counter.wasm }
  - name: infinite-loop
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: loop }, timeout: 300ms }
  - name: memory-hog
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: alloc }, memory: 16Mi }
  - name: panics
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: panic } }
  - name: reads-host-file
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: read-file, path: /etc/hostname } }
  - name: reads-env
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: env, name: PATH } }
  - name: prints-megabytes
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: print, bytes: 8388608 } }
"#,
    )
    .await;

    let expect = [
        (
            "infinite-loop",
            FailureKind::Timeout,
            "did not finish within 300ms",
        ),
        (
            "memory-hog",
            FailureKind::MemoryLimit,
            "exceeded its memory limit of 16 MiB",
        ),
        (
            "panics",
            FailureKind::Trap,
            "hostile guest panics on purpose",
        ),
        (
            "reads-host-file",
            FailureKind::GuestError,
            "cannot read /etc/hostname",
        ),
        (
            "reads-env",
            FailureKind::GuestError,
            "PATH is not visible (0 vars visible)",
        ),
        (
            "prints-megabytes",
            FailureKind::OutputLimit,
            "wrote more than 65536 bytes",
        ),
    ];
    for (trigger, reason, text) in expect {
        let record = runs.wait_runs(trigger, 1).await.remove(0);
        assert_eq!(record.status, RunStatus::Failed, "{record:#?}");
        assert_eq!(record.reason, Some(reason), "{record:#?}");
        let error = record.error.as_deref().unwrap();
        assert!(error.contains(text), "{trigger}: {error}");
        assert!(
            error.contains("hostile.wasm@"),
            "errors name the module version: {error}"
        );
    }

    // The healthy trigger kept running through all of it, and keeps running after.
    let before = runs.of("healthy").len();
    let after = runs.wait_runs("healthy", before + 3).await;
    assert!(after.iter().all(|r| r.status == RunStatus::Succeeded));
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_blocked_in_a_host_call_still_times_out() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        r#"
triggers:
  - name: sleeper
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: sleep, ms: 60000 }, timeout: 200ms, retry: { max: 0 } }
"#,
    )
    .await;
    let record = runs.wait_runs("sleeper", 1).await.remove(0);
    assert_eq!(record.reason, Some(FailureKind::Timeout), "{record:#?}");
    assert!(record.duration_ms < 30_000);
    engine.shutdown().await;
}
