//! What a run record keeps so that a run explains itself: the event, the
//! filter's verdict, the guest's log lines and every capability call, in
//! order. The capabilities and the log import write into a [`Trace`] shared
//! with the worker for the length of one run; the worker moves it into the
//! record when the run ends.
//!
//! Bounds (so a chatty or hostile module cannot grow the history):
//!
//! - the event's data is kept up to `engine.history.maxEventSize` (64 KiB by
//!   default); a larger one keeps only its size and SHA-256;
//! - at most [`MAX_LOG_LINES`] log lines of at most [`MAX_LOG_LINE`] bytes;
//! - at most [`MAX_CALLS`] calls; each call's arguments are summarised in at
//!   most [`MAX_SUMMARY`] bytes and the answer the guest got is kept, as JSON,
//!   up to [`MAX_ANSWER`] bytes (bodies are hashed whole, then cut);
//! - what is dropped is counted (`droppedLogLines`, `droppedCalls`).
//!
//! Everything passes through the secret redactor before it is kept, and a
//! secret's value is never kept at all: `secrets.get` records the name and
//! whether it was granted.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most log lines a run keeps.
pub const MAX_LOG_LINES: usize = 100;
/// Longest log line kept, in bytes.
pub const MAX_LOG_LINE: usize = 1024;
/// Most capability calls a run keeps.
pub const MAX_CALLS: usize = 200;
/// Longest argument summary, in bytes.
pub const MAX_SUMMARY: usize = 512;
/// Largest answer kept per call (its JSON), in bytes.
pub const MAX_ANSWER: usize = 16 * 1024;

/// A run's recording.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recording {
    /// The event as the filter and action saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<RecordedEvent>,
    /// How the filter decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The action's params as it got them (JSON text, redacted; up to [`MAX_ANSWER`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// The guests' log lines, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    /// Capability calls, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<Call>,
    /// Log lines past [`MAX_LOG_LINES`], not kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_log_lines: u32,
    /// Calls past [`MAX_CALLS`], not kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub dropped_calls: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The event of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedEvent {
    /// When it was produced.
    pub time: String,
    /// The data (JSON text, redacted), unless it was over the size bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Size of the data in bytes.
    pub data_bytes: u64,
    /// SHA-256 of the data, hex.
    pub data_sha256: String,
}

impl RecordedEvent {
    /// Keeps `event`'s data when it is at most `max_bytes` long.
    pub fn of(event: &crate::event::Event, max_bytes: u64) -> Self {
        let data = &event.data;
        RecordedEvent {
            time: event.time.clone(),
            data: (data.len() as u64 <= max_bytes)
                .then(|| crate::redact::redact_str(data).into_owned()),
            data_bytes: data.len() as u64,
            data_sha256: sha256_hex(data.as_bytes()),
        }
    }
}

/// The filter's decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `cel` or the module version.
    pub filter: String,
    /// The CEL expression, for a CEL filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// Whether the event passed (None: the filter failed).
    pub passed: Option<bool>,
}

/// Where in the run something happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// In the filter.
    Filter,
    /// In the action (see `attempt`).
    Action,
}

/// One guest log line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// Filter or action.
    pub phase: Phase,
    /// Action attempt (1-based; 0 for the filter).
    pub attempt: u32,
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// `trace` … `error`.
    pub level: String,
    /// The message (redacted, bounded).
    pub message: String,
}

/// One capability call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// Filter or action.
    pub phase: Phase,
    /// Action attempt (0 for the filter).
    pub attempt: u32,
    /// `kv`, `http`, `secrets`, `kube`.
    pub interface: String,
    /// The function, as in WIT (`increment`, `send`, `patch`, …).
    pub function: String,
    /// What was asked, summarised (redacted, bounded).
    pub args: String,
    /// Whether the call succeeded (`ok`) and, if not, the error's kind.
    pub outcome: String,
    /// The answer the guest got, as JSON, up to [`MAX_ANSWER`] bytes (a
    /// `null` answer is an answer: kv `get` of a missing key, or `set`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub answer: Option<serde_json::Value>,
    /// The answer's size when it was over the bound and not kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_bytes: Option<u64>,
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// How long the call took, in microseconds.
    pub duration_us: u64,
}

/// A field that is there is `Some`, even when it is `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Collects one run's log lines and calls while its guests run.
#[derive(Debug)]
pub struct Trace {
    started: Instant,
    inner: Mutex<TraceInner>,
}

#[derive(Debug, Default)]
struct TraceInner {
    phase: Option<(Phase, u32)>,
    logs: Vec<LogLine>,
    calls: Vec<Call>,
    dropped_logs: u32,
    dropped_calls: u32,
}

impl Default for Trace {
    fn default() -> Self {
        Trace {
            started: Instant::now(),
            inner: Mutex::default(),
        }
    }
}

/// A call as a capability describes it, before it is bounded and stamped.
pub struct CallNote<'a> {
    /// WIT interface.
    pub interface: &'a str,
    /// WIT function.
    pub function: &'a str,
    /// What was asked.
    pub args: String,
    /// `ok` or the error kind.
    pub outcome: &'a str,
    /// The answer the guest got.
    pub answer: serde_json::Value,
    /// When the call started.
    pub started: Instant,
}

impl Trace {
    fn lock(&self) -> std::sync::MutexGuard<'_, TraceInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks what runs next: the filter, or action attempt `attempt`.
    pub fn enter(&self, phase: Phase, attempt: u32) {
        self.lock().phase = Some((phase, attempt));
    }

    fn at_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Keeps a log line (already redacted by the log import).
    pub fn log(&self, level: &str, message: &str) {
        let at_ms = self.at_ms();
        let mut inner = self.lock();
        if inner.logs.len() >= MAX_LOG_LINES {
            inner.dropped_logs += 1;
            return;
        }
        let (phase, attempt) = inner.phase.unwrap_or((Phase::Action, 0));
        inner.logs.push(LogLine {
            phase,
            attempt,
            at_ms,
            level: level.to_string(),
            message: cut(message, MAX_LOG_LINE),
        });
    }

    /// Keeps a capability call.
    pub fn call(&self, note: CallNote<'_>) {
        let duration_us = note.started.elapsed().as_micros() as u64;
        let at_ms = note
            .started
            .saturating_duration_since(self.started)
            .as_millis() as u64;
        let answer_text = crate::redact::redact_str(&note.answer.to_string()).into_owned();
        let (answer, answer_bytes) = if answer_text.len() <= MAX_ANSWER {
            (serde_json::from_str(&answer_text).ok(), None)
        } else {
            (None, Some(answer_text.len() as u64))
        };
        let args = cut(&crate::redact::redact_str(&note.args), MAX_SUMMARY);
        let mut inner = self.lock();
        if inner.calls.len() >= MAX_CALLS {
            inner.dropped_calls += 1;
            return;
        }
        let (phase, attempt) = inner.phase.unwrap_or((Phase::Action, 0));
        inner.calls.push(Call {
            phase,
            attempt,
            interface: note.interface.to_string(),
            function: note.function.to_string(),
            args,
            outcome: note.outcome.to_string(),
            answer,
            answer_bytes,
            at_ms,
            duration_us,
        });
    }

    /// The logs and calls so far, into a recording.
    pub fn take_into(&self, recording: &mut Recording) {
        let mut inner = self.lock();
        recording.logs = std::mem::take(&mut inner.logs);
        recording.calls = std::mem::take(&mut inner.calls);
        recording.dropped_log_lines = inner.dropped_logs;
        recording.dropped_calls = inner.dropped_calls;
    }
}

/// Answers a replayed run's capability calls from a recording, in order,
/// and notes the calls made that the recording could not answer.
#[derive(Debug)]
pub struct ReplaySource {
    /// The answers, each with whether its arguments must match.
    calls: Mutex<std::collections::VecDeque<(Call, bool)>>,
    /// Let calls the recording has no answer for through (under the trigger's grants).
    pub live: bool,
    /// A fixture's canned answers, not a recording (for the wording).
    canned: bool,
    divergences: Mutex<Vec<String>>,
    made_live: Mutex<Vec<String>>,
}

/// What the recording says to a call.
pub enum Replayed {
    /// The recorded outcome (`ok` or an error kind) and answer (JSON, as recorded).
    Answer(String, serde_json::Value),
    /// The recording has none: the call is refused, or made live.
    Missing,
}

impl ReplaySource {
    /// Answers from `calls` (one phase's calls, in order).
    pub fn new(calls: Vec<Call>, live: bool) -> Self {
        ReplaySource {
            calls: Mutex::new(calls.into_iter().map(|c| (c, true)).collect()),
            live,
            canned: false,
            divergences: Mutex::default(),
            made_live: Mutex::default(),
        }
    }

    /// Answers from a fixture's canned answers, in order; `false` next to
    /// one: it answers its call whatever the arguments.
    pub fn canned(calls: Vec<(Call, bool)>) -> Self {
        ReplaySource {
            canned: true,
            calls: Mutex::new(calls.into()),
            ..ReplaySource::new(Vec::new(), false)
        }
    }

    fn holder(&self) -> &'static str {
        if self.canned {
            "the fixture"
        } else {
            "the recording"
        }
    }

    /// The answer to the next call, when it is the same call as recorded
    /// (interface, function and arguments) and its answer was kept.
    pub fn answer(&self, interface: &str, function: &str, args: &str) -> Replayed {
        let args = cut(&crate::redact::redact_str(args), MAX_SUMMARY);
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        let why = match calls.front() {
            Some((c, exact))
                if c.interface == interface
                    && c.function == function
                    && (!exact || c.args == args) =>
            {
                match calls.pop_front() {
                    Some((
                        Call {
                            outcome,
                            answer: Some(answer),
                            ..
                        },
                        _,
                    )) => return Replayed::Answer(outcome, answer),
                    _ => "its recorded answer was over the size bound".to_string(),
                }
            }
            Some((c, exact)) => format!(
                "{} has {}.{}{} here",
                self.holder(),
                c.interface,
                c.function,
                if *exact {
                    format!(" {}", c.args)
                } else {
                    String::new()
                }
            ),
            None => format!("{} has no more answers", self.holder()),
        };
        drop(calls);
        self.unanswered(interface, function, &args, &why);
        Replayed::Missing
    }

    /// Notes a call the recording cannot answer: a divergence, or (live) a call made for real.
    pub fn unanswered(&self, interface: &str, function: &str, args: &str, why: &str) {
        let list = if self.live {
            &self.made_live
        } else {
            &self.divergences
        };
        list.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{interface}.{function} {args}: {why}"));
    }

    /// Calls a live replay made for real, with why the recording could not answer them.
    pub fn made_live(&self) -> Vec<String> {
        self.made_live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls the recording could not answer, and recorded calls never made.
    pub fn divergences(&self) -> Vec<String> {
        let mut all = self
            .divergences
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (c, exact) in self.calls.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            all.push(if self.canned {
                let args = if *exact {
                    c.args.as_str()
                } else {
                    "(any arguments)"
                };
                format!(
                    "{}.{} {args}: answer given, never asked for",
                    c.interface, c.function
                )
            } else {
                format!(
                    "{}.{} {}: recorded, not made",
                    c.interface, c.function, c.args
                )
            });
        }
        all
    }
}

/// `text` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} bytes]", &text[..end], text.len())
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_hold_and_drops_are_counted() {
        let trace = Trace::default();
        trace.enter(Phase::Action, 1);
        for i in 0..MAX_LOG_LINES + 5 {
            trace.log("info", &format!("line {i} {}", "x".repeat(2000)));
        }
        for _ in 0..MAX_CALLS + 3 {
            trace.call(CallNote {
                interface: "kv",
                function: "get",
                args: "k".repeat(5000),
                outcome: "ok",
                answer: serde_json::Value::String("v".repeat(MAX_ANSWER + 1)),
                started: Instant::now(),
            });
        }
        let mut recording = Recording::default();
        trace.take_into(&mut recording);
        assert_eq!(recording.logs.len(), MAX_LOG_LINES);
        assert_eq!(recording.dropped_log_lines, 5);
        assert!(recording.logs[0].message.len() < MAX_LOG_LINE + 32);
        assert_eq!(recording.calls.len(), MAX_CALLS);
        assert_eq!(recording.dropped_calls, 3);
        let call = &recording.calls[0];
        assert!(call.args.len() < MAX_SUMMARY + 32);
        assert_eq!(call.answer, None, "over the bound: size only");
        assert!(call.answer_bytes.unwrap() > MAX_ANSWER as u64);
        assert_eq!((call.phase, call.attempt), (Phase::Action, 1));
    }

    #[test]
    fn a_null_answer_survives_storage() {
        let call = Call {
            phase: Phase::Action,
            attempt: 1,
            interface: "kv".into(),
            function: "get".into(),
            args: "\"k\"".into(),
            outcome: "ok".into(),
            answer: Some(serde_json::Value::Null),
            answer_bytes: None,
            at_ms: 0,
            duration_us: 1,
        };
        let back: Call = serde_json::from_str(&serde_json::to_string(&call).unwrap()).unwrap();
        assert_eq!(back.answer, Some(serde_json::Value::Null));
    }

    #[test]
    fn a_big_event_keeps_its_size_and_hash_only() {
        let event = crate::event::Event::new("t", "s", "k", &serde_json::json!({"a": "b"}));
        let kept = RecordedEvent::of(&event, 1024);
        assert_eq!(kept.data.as_deref(), Some(r#"{"a":"b"}"#));
        let dropped = RecordedEvent::of(&event, 4);
        assert_eq!(dropped.data, None);
        assert_eq!(dropped.data_bytes, 9);
        assert_eq!(dropped.data_sha256, kept.data_sha256);
    }
}
