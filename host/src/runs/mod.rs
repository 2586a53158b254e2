//! Run records: every event that reaches a trigger ends in exactly one, and
//! every finished record is handed to the configured sinks (the log today;
//! stored history, metrics and chained triggers hook in the same way).

mod index;
pub mod journal;
mod log_sink;
pub mod modules;
pub mod recording;
pub mod store;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use log_sink::LogSink;

/// Why an invocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The guest ran past its wall-clock limit.
    Timeout,
    /// The guest tried to grow memory past its limit.
    MemoryLimit,
    /// The guest wrote more to stdout/stderr than allowed.
    OutputLimit,
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap,
    /// The guest returned an error value.
    GuestError,
    /// The module is missing, failed to load or does not fit the world.
    ModuleUnavailable,
    /// Something failed in the host (CEL evaluation, storage, ...).
    Host,
}

impl FailureKind {
    /// Stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::OutputLimit => "output-limit",
            FailureKind::Trap => "trap",
            FailureKind::GuestError => "guest-error",
            FailureKind::ModuleUnavailable => "module-unavailable",
            FailureKind::Host => "host",
        }
    }
}

/// Longest output kept in a record; the rest is cut with a marker.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The filter dropped the event; the action did not run.
    Filtered,
    /// The action returned output.
    Succeeded,
    /// The filter or the action failed (after any retries).
    Failed,
}

impl RunStatus {
    /// Lowercase name as in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Filtered => "filtered",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        }
    }
}

/// One attempt at running the action (or the filter, if it failed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// camelCase like the rest of the API (and Kubernetes); the snake_case
// aliases read records stored before the rename.
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1-based attempt number.
    pub number: u32,
    /// When it started, RFC 3339.
    #[serde(alias = "started_at")]
    pub started_at: String,
    /// How long it took.
    #[serde(alias = "duration_ms")]
    pub duration_ms: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Classification of the failure.
    pub reason: Option<FailureKind>,
}

/// The record of one event's trip through one trigger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// camelCase like the rest of the API (and Kubernetes); the snake_case
// aliases read records stored before the rename.
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// Unique id of this run.
    #[serde(alias = "run_id")]
    pub run_id: String,
    /// The event's id.
    #[serde(alias = "event_id")]
    pub event_id: String,
    /// The trigger.
    pub trigger: String,
    /// Source type of the event.
    pub source: String,
    /// Event kind.
    pub kind: String,
    /// Final status.
    pub status: RunStatus,
    /// Every action attempt, in order (one entry for a failed filter).
    pub attempts: Vec<Attempt>,
    /// When the event was accepted, RFC 3339.
    #[serde(alias = "accepted_at")]
    pub accepted_at: String,
    /// When processing started, RFC 3339.
    #[serde(alias = "started_at")]
    pub started_at: String,
    /// When the record was finished, RFC 3339.
    #[serde(alias = "finished_at")]
    pub finished_at: String,
    /// Time the event waited in the queue before processing.
    #[serde(alias = "queued_ms")]
    pub queued_ms: u64,
    /// Time from start of processing to the end (including retry waits).
    #[serde(alias = "duration_ms")]
    pub duration_ms: u64,
    /// The filter that ran: `name@version` or `cel`.
    pub filter: Option<String>,
    /// The action module version that ran last: `name@version`.
    pub module: Option<String>,
    /// Action output on success (size-capped).
    pub output: Option<String>,
    /// Final error on failure.
    pub error: Option<String>,
    /// Classification of the final error.
    pub reason: Option<FailureKind>,
    /// For a chained run: the run whose end started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    /// Which delivery of the event this run was: 1, or more when the event was
    /// replayed from the journal after the engine stopped before recording it.
    #[serde(default = "first_delivery", skip_serializing_if = "is_first_delivery")]
    pub delivery: u32,
    /// Whether the event was replayed from the journal (`delivery` > 1): an
    /// earlier delivery may have run, in part or whole, before a crash.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
    /// Whether the trigger was a dry run (side effects suppressed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// For a redriven event: the run whose event it repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive_of: Option<String>,
    /// The event, the verdict, guest logs and capability calls
    /// ([`recording`]), unless recording is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<Box<recording::Recording>>,
}

/// A UUIDv7 stamped with the run's start, so the history's key order (and
/// so `runs`) is start order even when a later-started run ends first.
pub fn run_id_at(started_at: &str) -> String {
    let stamp = chrono::DateTime::parse_from_rfc3339(started_at)
        .map(|t| (t.timestamp().max(0) as u64, t.timestamp_subsec_nanos()))
        .ok();
    match stamp {
        Some((secs, nanos)) => {
            uuid::Uuid::new_v7(uuid::Timestamp::from_unix(uuid::NoContext, secs, nanos))
        }
        None => uuid::Uuid::now_v7(),
    }
    .to_string()
}

fn first_delivery() -> u32 {
    1
}

fn is_first_delivery(n: &u32) -> bool {
    *n <= 1
}

/// The run that started a chained run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// camelCase like the rest of the API (and Kubernetes); the snake_case
// aliases read records stored before the rename.
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Its run id.
    #[serde(alias = "run_id")]
    pub run_id: String,
    /// Its trigger.
    pub trigger: String,
    /// Its event id.
    #[serde(alias = "event_id")]
    pub event_id: String,
    /// How it ended.
    pub status: RunStatus,
}

/// Receives every finished run record.
pub trait RunSink: Send + Sync {
    /// Called once per run, after it ended.
    fn record(&self, run: &RunRecord);

    /// Like [`RunSink::record`], and also removes the event's journal entry
    /// (keyed by `journal_key`) in the same commit that stores the record.
    /// Returns whether this sink took the removal on; only a durable store
    /// can, every other sink just records.
    fn record_and_complete(&self, run: &RunRecord, journal_key: &str) -> bool {
        let _ = journal_key;
        self.record(run);
        false
    }
}

/// Fans records out to every sink.
#[derive(Clone, Default)]
pub struct RunRecorder {
    sinks: Vec<Arc<dyn RunSink>>,
}

impl RunRecorder {
    /// A recorder with the given sinks.
    pub fn new(sinks: Vec<Arc<dyn RunSink>>) -> Self {
        RunRecorder { sinks }
    }

    /// Hands a record to every sink.
    pub fn record(&self, run: &RunRecord) {
        let run = redacted(run);
        for sink in &self.sinks {
            sink.record(&run);
        }
    }

    /// Hands a record to every sink and has the first sink that can store it
    /// durably remove the event's journal entry in the same commit, so a
    /// crash leaves either both (the record and no entry) or neither (the
    /// entry, replayed at the next start). Returns false if no sink could:
    /// the caller must remove the entry itself.
    pub fn record_completing(&self, run: &RunRecord, journal_key: &str) -> bool {
        let run = &*redacted(run);
        let mut taken = false;
        for sink in &self.sinks {
            if taken {
                sink.record(run);
            } else {
                taken = sink.record_and_complete(run, journal_key);
            }
        }
        taken
    }
}

/// The record with every registered secret value hidden in its texts: the
/// last line of defence before the log, the history, chains and the API.
fn redacted(run: &RunRecord) -> std::borrow::Cow<'_, RunRecord> {
    use crate::redact::{contains_secret, redact_str};
    let texts = run
        .output
        .iter()
        .chain(run.error.iter())
        .chain(run.attempts.iter().filter_map(|a| a.error.as_ref()));
    if !texts.into_iter().any(|t| contains_secret(t)) {
        return std::borrow::Cow::Borrowed(run);
    }
    let hide = |t: &Option<String>| t.as_deref().map(|t| redact_str(t).into_owned());
    let mut copy = run.clone();
    copy.output = hide(&run.output);
    copy.error = hide(&run.error);
    for a in &mut copy.attempts {
        a.error = hide(&a.error);
    }
    std::borrow::Cow::Owned(copy)
}

/// Passes every record on to subscribers (chain sources).
pub struct BroadcastSink(pub tokio::sync::broadcast::Sender<Arc<RunRecord>>);

impl RunSink for BroadcastSink {
    fn record(&self, run: &RunRecord) {
        // No subscribers (no chains) is fine.
        let _ = self.0.send(Arc::new(run.clone()));
    }
}

/// Cuts text to at most `max` bytes on a character boundary, marking the cut.
pub fn cap_text(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… [{} bytes cut]", &text[..cut], text.len() - cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_text_respects_char_boundaries() {
        assert_eq!(cap_text("short".into(), 10), "short");
        let capped = cap_text("ééééé".into(), 3);
        assert!(
            capped.starts_with('é') && capped.contains("bytes cut"),
            "{capped}"
        );
    }
}
