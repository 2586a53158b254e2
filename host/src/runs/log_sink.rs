//! Writes each finished run as one log event (one JSON line with `--log-format json`).

use super::{RunRecord, RunSink, RunStatus};

/// The run sink that writes to the log, target `wasmtrigger::run`.
pub struct LogSink;

impl RunSink for LogSink {
    fn record(&self, run: &RunRecord) {
        let module = run.module.as_deref().unwrap_or("");
        let filter = run.filter.as_deref().unwrap_or("");
        let attempts = run.attempts.len() as u64;
        // Only replays say which delivery they were; first deliveries stay as they were.
        let delivery = run.replayed.then_some(run.delivery);
        match run.status {
            RunStatus::Failed => tracing::warn!(
                target: "wasmtrigger::run",
                run_id = %run.run_id,
                trigger = %run.trigger,
                event_id = %run.event_id,
                source = %run.source,
                status = run.status.as_str(),
                attempts,
                duration_ms = run.duration_ms,
                queued_ms = run.queued_ms,
                delivery,
                filter,
                module,
                reason = run.reason.map(|r| r.as_str()).unwrap_or(""),
                error = run.error.as_deref().unwrap_or(""),
                "run finished"
            ),
            RunStatus::Succeeded => tracing::info!(
                target: "wasmtrigger::run",
                run_id = %run.run_id,
                trigger = %run.trigger,
                event_id = %run.event_id,
                source = %run.source,
                status = run.status.as_str(),
                attempts,
                duration_ms = run.duration_ms,
                queued_ms = run.queued_ms,
                delivery,
                filter,
                module,
                output = run.output.as_deref().unwrap_or(""),
                "run finished"
            ),
            RunStatus::Filtered => tracing::info!(
                target: "wasmtrigger::run",
                run_id = %run.run_id,
                trigger = %run.trigger,
                event_id = %run.event_id,
                source = %run.source,
                status = run.status.as_str(),
                attempts,
                duration_ms = run.duration_ms,
                queued_ms = run.queued_ms,
                delivery,
                filter,
                module,
                "run finished"
            ),
        }
    }
}
