//! `runs show RUN_ID` as text for people: the outcome first (the error of a
//! failed run leads), then the event, the verdict, the attempts, the guest's
//! log and the timeline of capability calls, and last the event's data.

use std::fmt::Write as _;

use wasmtrigger::runs::recording::{Call, LogLine, Phase};
use wasmtrigger::runs::{RunRecord, RunStatus};

/// The run, readable.
pub(crate) fn run_text(run: &RunRecord) -> String {
    let mut out = String::new();
    let reason = run
        .reason
        .map(|r| format!(" ({})", r.as_str()))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "run {}  trigger {}  {}{reason}",
        run.run_id,
        run.trigger,
        run.status.as_str()
    );
    if let Some(error) = &run.error {
        let _ = writeln!(out, "error: {error}");
    }
    let recording = run.recording.as_deref();
    let time = recording
        .and_then(|r| r.event.as_ref())
        .map(|e| format!("  time {}", e.time))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "event {}  source {}  kind {}{time}",
        run.event_id, run.source, run.kind
    );
    let _ = writeln!(
        out,
        "accepted {}  started {}  finished {}  (queued {} ms, took {} ms)",
        run.accepted_at, run.started_at, run.finished_at, run.queued_ms, run.duration_ms
    );
    if run.replayed {
        let _ = writeln!(out, "delivery {} (replayed after a restart)", run.delivery);
    }
    if run.dry_run {
        let _ = writeln!(
            out,
            "dry run: kube writes were server-side dry runs, HTTP other than GET/HEAD was not sent, kv writes were thrown away"
        );
    }
    if let Some(original) = &run.redrive_of {
        let _ = writeln!(out, "redrive of run {original}");
    }
    if let Some(upstream) = &run.upstream {
        let _ = writeln!(
            out,
            "started by run {} of trigger {} ({})",
            upstream.run_id,
            upstream.trigger,
            upstream.status.as_str()
        );
    }
    match recording.and_then(|r| r.verdict.as_ref()) {
        Some(verdict) => {
            let decided = match verdict.passed {
                Some(true) => "passed",
                Some(false) => "filtered out",
                None => "failed",
            };
            let expression = verdict
                .expression
                .as_ref()
                .map(|e| format!(" `{e}`"))
                .unwrap_or_default();
            let _ = writeln!(out, "filter {}{expression}: {decided}", verdict.filter);
        }
        None => {
            if let Some(filter) = &run.filter {
                let _ = writeln!(out, "filter {filter}");
            }
        }
    }
    if let Some(module) = &run.module {
        let _ = writeln!(out, "action {module}");
    }
    if !run.attempts.is_empty() {
        let _ = writeln!(out, "\nattempts:");
        for a in &run.attempts {
            let ended = match (&a.error, a.reason) {
                (Some(e), Some(r)) => format!("failed ({}): {e}", r.as_str()),
                (Some(e), None) => format!("failed: {e}"),
                _ => "ok".to_string(),
            };
            let _ = writeln!(
                out,
                "  #{}  {}  {} ms  {ended}",
                a.number, a.started_at, a.duration_ms
            );
        }
    }
    if let Some(recording) = recording {
        if !recording.logs.is_empty() {
            let _ = writeln!(out, "\nlog:");
            for line in &recording.logs {
                let _ = writeln!(out, "  {}", log_line(line));
            }
            if recording.dropped_log_lines > 0 {
                let _ = writeln!(
                    out,
                    "  … {} more line(s) not kept",
                    recording.dropped_log_lines
                );
            }
        }
        if !recording.calls.is_empty() {
            let _ = writeln!(out, "\ncalls:");
            for call in &recording.calls {
                let _ = writeln!(out, "  {}", call_line(call));
            }
            if recording.dropped_calls > 0 {
                let _ = writeln!(out, "  … {} more call(s) not kept", recording.dropped_calls);
            }
        }
    }
    if run.status == RunStatus::Succeeded
        && let Some(output) = &run.output
    {
        let _ = writeln!(out, "\noutput:\n  {output}");
    }
    if let Some(event) = recording.and_then(|r| r.event.as_ref()) {
        let _ = writeln!(
            out,
            "\nevent data ({} bytes, sha256 {}):",
            event.data_bytes,
            &event.data_sha256[..16.min(event.data_sha256.len())]
        );
        match &event.data {
            Some(data) => {
                let pretty = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
                    .unwrap_or_else(|| data.clone());
                for line in pretty.lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            None => {
                let _ = writeln!(out, "  (over engine.history.maxEventSize: not kept)");
            }
        }
    }
    if recording.is_none() {
        let _ = writeln!(
            out,
            "\n(no recording: engine.history.record was off for this run)"
        );
    }
    out
}

fn phase(phase: Phase, attempt: u32) -> String {
    match phase {
        Phase::Filter => "filter".into(),
        Phase::Action => format!("action#{attempt}"),
    }
}

fn log_line(line: &LogLine) -> String {
    format!(
        "+{} ms  {:<9} {:<5} {}",
        line.at_ms,
        phase(line.phase, line.attempt),
        line.level,
        line.message
    )
}

fn call_line(call: &Call) -> String {
    let answer = match (&call.answer, call.answer_bytes) {
        (Some(answer), _) => {
            let text = answer.to_string();
            if text.len() > 160 {
                let mut end = 160;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                format!("{}…", &text[..end])
            } else {
                text
            }
        }
        (None, Some(bytes)) => format!("({bytes} bytes, not kept)"),
        (None, None) => String::new(),
    };
    format!(
        "+{} ms  {:<9} {}.{} {} → {} {answer}  ({} µs)",
        call.at_ms,
        phase(call.phase, call.attempt),
        call.interface,
        call.function,
        call.args,
        call.outcome,
        call.duration_us
    )
}
