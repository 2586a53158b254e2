//! Replaying a recorded run: its event goes through the recorded filter and
//! action versions again (or other versions: a fix to check), and every
//! capability call is answered from the recording, in order, so the replay is
//! deterministic and sends nothing.
//!
//! - A call the recording has no answer for (a different call, one more than
//!   recorded, or one whose answer was over the size bound) is a
//!   *divergence*: it is answered `failed` and reported — unless the replay
//!   is *live*, which makes such calls for real under the trigger's grants
//!   (listed as `madeLive`, not as divergences).
//! - `secrets.get` is answered with a stand-in (`[secret NAME]`): secret values
//!   are never recorded.
//! - kv calls made live would go to a scratch namespace thrown away after the
//!   replay; nothing else is ever reached.
//! - The report compares the verdict, the output and the error (module
//!   versions in messages are ignored) and lists the calls made against the
//!   calls recorded. It is identical when all of them agree and no call
//!   diverged.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capabilities::HostServices;
use crate::config::Limits;
use crate::event::Event;
use crate::runs::recording::{Call, Phase, ReplaySource};
use crate::runs::{RunRecord, RunStatus};
use crate::runtime::{LoadedModule, Runtime};

pub mod fixture;
pub mod rerun;

use rerun::FilterRun;

/// Bounds of a replayed call (the recording does not keep the trigger's).
pub const REPLAY_LIMITS: Limits = Limits {
    timeout: Duration::from_secs(30),
    memory: 256 << 20,
};

/// Why a run cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The record has no recording (recording was off, or an older record).
    #[error(
        "run {0} was not recorded (engine.history.record was off, or the run predates recordings)"
    )]
    NotRecorded(String),
    /// The event's data was over the size bound.
    #[error("the event of run {0} was over engine.history.maxEventSize: its data was not kept")]
    EventNotKept(String),
    /// A module the run used is not available.
    #[error("{0}")]
    Module(String),
    /// The recorded CEL expression does not compile any more.
    #[error("the recorded CEL filter does not compile: {0}")]
    Cel(String),
}

/// A recorded value next to the replayed one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compared<T> {
    /// What the run did.
    pub recorded: T,
    /// What the replay did.
    pub replayed: T,
    /// Whether they agree.
    pub same: bool,
}

impl<T: PartialEq> Compared<T> {
    /// The pair, and whether they agree.
    pub fn new(recorded: T, replayed: T) -> Self {
        let same = recorded == replayed;
        Compared {
            recorded,
            replayed,
            same,
        }
    }
}

/// What a replay found.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayReport {
    /// The run replayed.
    pub run_id: String,
    /// Whether everything agreed.
    pub identical: bool,
    /// The module versions replayed (filter, action).
    pub modules: Vec<String>,
    /// The filter's verdict (None: no filter, or it failed).
    pub verdict: Compared<Option<bool>>,
    /// The action's output.
    pub output: Compared<Option<String>>,
    /// The error, module versions ignored.
    pub error: Compared<Option<String>>,
    /// `interface.function args → outcome` of the calls, recorded and replayed.
    pub calls: Compared<Vec<String>>,
    /// Calls the recording could not answer, and recorded calls not made.
    pub divergences: Vec<String>,
    /// Calls a live replay made for real (the recording had no answer).
    #[serde(default)]
    pub made_live: Vec<String>,
}

/// Which part of a run a module file given without saying stands for: the
/// filter when the run's filter module has that file name, else the action.
pub fn is_filter_named(record: &RunRecord, file_name: &str) -> bool {
    record
        .filter
        .as_deref()
        .and_then(|l| l.rsplit_once('@'))
        .is_some_and(|(name, _)| name == file_name)
}

/// Replays `record` with these module versions (None: that part is not run);
/// `live`: the trigger's grants, under which calls the recording cannot
/// answer are made for real (None: they are refused).
pub async fn replay(
    runtime: &Runtime,
    services: Arc<HostServices>,
    record: &RunRecord,
    (filter, action): (Option<&LoadedModule>, Option<&LoadedModule>),
    live: Option<Arc<crate::capabilities::ActionAccess>>,
) -> Result<ReplayReport, ReplayError> {
    let recording = record
        .recording
        .as_deref()
        .ok_or_else(|| ReplayError::NotRecorded(record.run_id.clone()))?;
    let event = recorded_event(record)?;
    let last_attempt = record.attempts.last().map(|a| a.number).unwrap_or(1);
    let phase_calls = |phase: Phase, attempt: Option<u32>| -> Arc<ReplaySource> {
        let calls = recording
            .calls
            .iter()
            .filter(|c| c.phase == phase && attempt.is_none_or(|a| c.attempt == a))
            .cloned()
            .collect();
        Arc::new(ReplaySource::new(calls, live.is_some()))
    };
    // The filter, as recorded: CEL again, or a module.
    let filter = match &recording.verdict {
        None => FilterRun::None,
        Some(v) if v.filter == "cel" => FilterRun::Cel(v.expression.as_deref().unwrap_or_default()),
        Some(v) => FilterRun::Module(filter.ok_or_else(|| {
            ReplayError::Module(format!("the filter {} is not available", v.filter))
        })?),
    };
    // The action: its last recorded attempt, when the run had one.
    let action = match (&record.module, action) {
        (None, _) => Ok(None),
        (Some(_), Some(module)) => Ok(Some(module)),
        (Some(label), None) => Err(ReplayError::Module(format!(
            "the action {label} is not available"
        ))),
    };
    let made = rerun::rerun(
        runtime,
        services,
        rerun::Rerun {
            event,
            filter,
            action,
            params: recording.params.clone().unwrap_or_else(|| "{}".into()),
            attempt: last_attempt,
            answers: (
                phase_calls(Phase::Filter, None),
                phase_calls(Phase::Action, Some(last_attempt)),
            ),
            live,
        },
    )
    .await?;

    let recorded_calls: Vec<String> = recording
        .calls
        .iter()
        .filter(|c| c.phase == Phase::Filter || c.attempt == last_attempt)
        .map(describe_call)
        .collect();
    let made_calls: Vec<String> = made.calls.iter().map(describe_call).collect();
    let recorded_output = (record.status == RunStatus::Succeeded)
        .then(|| record.output.clone())
        .flatten();
    let verdict = Compared::new(
        recording.verdict.as_ref().and_then(|v| v.passed),
        made.verdict,
    );
    let output = Compared::new(recorded_output, made.output);
    let error = Compared::new(
        record.error.as_deref().map(without_versions),
        made.error.as_deref().map(without_versions),
    );
    let calls = Compared::new(recorded_calls, made_calls);
    let identical =
        verdict.same && output.same && error.same && calls.same && made.divergences.is_empty();
    Ok(ReplayReport {
        run_id: record.run_id.clone(),
        identical,
        modules: made.modules,
        verdict,
        output,
        error,
        calls,
        divergences: made.divergences,
        made_live: made.made_live,
    })
}

/// The event of a recorded run, as its filter and action got it.
pub fn recorded_event(record: &RunRecord) -> Result<Event, ReplayError> {
    let recorded = record
        .recording
        .as_deref()
        .and_then(|r| r.event.as_ref())
        .ok_or_else(|| ReplayError::NotRecorded(record.run_id.clone()))?;
    let data = recorded
        .data
        .clone()
        .ok_or_else(|| ReplayError::EventNotKept(record.run_id.clone()))?;
    Ok(Event {
        id: record.event_id.clone(),
        trigger: record.trigger.clone(),
        source: record.source.clone(),
        kind: record.kind.clone(),
        time: recorded.time.clone(),
        data,
        redrive_of: None,
    })
}

/// `interface.function args → outcome`: a call as reports list it.
pub fn describe_call(c: &Call) -> String {
    format!("{}.{} {} → {}", c.interface, c.function, c.args, c.outcome)
}

/// `name@0123456789ab` → `name@…`, and the engine's retry remark dropped:
/// errors compare by what went wrong, not by which version said it.
pub fn without_versions(message: &str) -> String {
    let message = message
        .strip_suffix(" (engine stopped before the next retry)")
        .unwrap_or(message);
    let bytes = message.as_bytes();
    let mut out = String::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        let rest = &bytes[i..];
        let version = rest.first() == Some(&b'@')
            && rest.len() >= 13
            && rest[1..13].iter().all(|b| b.is_ascii_hexdigit())
            && rest.get(13).is_none_or(|b| !b.is_ascii_hexdigit());
        if version {
            out.push_str("@…");
            i += 13;
        } else {
            let ch = message[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_compare_without_module_versions() {
        assert_eq!(
            without_versions("m.wasm@0123456789ab returned an error: x@y"),
            "m.wasm@… returned an error: x@y"
        );
        assert_eq!(
            without_versions("boom (engine stopped before the next retry)"),
            "boom"
        );
    }
}
