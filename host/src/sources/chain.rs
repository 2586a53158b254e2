//! `type: trigger`: runs when other triggers' runs end.
//!
//! With `of:` (or `any:`) each matching upstream run fires one event; with
//! `all:` the trigger fires once every condition has been met by runs that
//! ended within `window` of each other (fan-in), then starts collecting anew.
//! The event hands the upstream run on: its trigger, run and event ids, how
//! it ended, its output (as JSON when it is JSON) and its error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::config::{ChainConfig, ChainMode, Outcome};
use crate::dispatch::Submitter;
use crate::event::Event;
use crate::runs::{RunRecord, RunStatus, Upstream};
use crate::trigger::Trigger;

/// Runs one trigger's chain source until `stop` is cancelled.
pub async fn run(
    trigger: Arc<Trigger>,
    config: ChainConfig,
    submitter: Submitter,
    mut runs: broadcast::Receiver<Arc<RunRecord>>,
    stop: CancellationToken,
) {
    // For `all`: condition index -> the latest run meeting it, and when.
    let mut met: HashMap<usize, (Instant, Arc<RunRecord>)> = HashMap::new();
    loop {
        let record = tokio::select! {
            _ = stop.cancelled() => break,
            r = runs.recv() => match r {
                Ok(record) => record,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(trigger = %trigger.name, missed, "chain source fell behind; some upstream runs were not seen");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
        };
        let outcome = match record.status {
            RunStatus::Succeeded => Outcome::Success,
            RunStatus::Failed => Outcome::Failure,
            RunStatus::Filtered => continue,
        };
        let matching: Vec<usize> = config
            .conditions
            .iter()
            .enumerate()
            .filter(|(_, c)| c.of == record.trigger && c.on.contains(&outcome))
            .map(|(i, _)| i)
            .collect();
        if matching.is_empty() {
            continue;
        }
        match config.mode {
            ChainMode::Any => fire(&trigger, &submitter, outcome.name(), &[record]).await,
            ChainMode::All => {
                let now = Instant::now();
                for i in matching {
                    met.insert(i, (now, record.clone()));
                }
                met.retain(|_, (at, _)| now.duration_since(*at) <= config.window);
                if met.len() == config.conditions.len() {
                    let mut all: Vec<(usize, Arc<RunRecord>)> =
                        met.drain().map(|(i, (_, r))| (i, r)).collect();
                    all.sort_by_key(|(i, _)| *i);
                    let records: Vec<Arc<RunRecord>> = all.into_iter().map(|(_, r)| r).collect();
                    fire(&trigger, &submitter, "all", &records).await;
                }
            }
        }
    }
    tracing::debug!(trigger = %trigger.name, "chain source stopped");
}

/// The part of an upstream run a chained event carries.
fn describe(record: &RunRecord) -> serde_json::Value {
    let output = record.output.as_deref().map(|o| {
        serde_json::from_str::<serde_json::Value>(o)
            .unwrap_or_else(|_| serde_json::Value::String(o.to_string()))
    });
    serde_json::json!({
        "trigger": record.trigger,
        "runId": record.run_id,
        "eventId": record.event_id,
        "status": record.status.as_str(),
        "output": output,
        "error": record.error,
    })
}

async fn fire(
    trigger: &Arc<Trigger>,
    submitter: &Submitter,
    kind: &str,
    records: &[Arc<RunRecord>],
) {
    let Some(last) = records.last() else { return };
    let data = if records.len() == 1 {
        serde_json::json!({ "upstream": describe(last) })
    } else {
        serde_json::json!({ "upstreams": records.iter().map(|r| describe(r)).collect::<Vec<_>>() })
    };
    let event = Event::new(&trigger.name, "trigger", kind, &data);
    let upstream = Upstream {
        run_id: last.run_id.clone(),
        trigger: last.trigger.clone(),
        event_id: last.event_id.clone(),
        status: last.status,
    };
    // A refused event is counted and logged by the submitter.
    let _ = submitter.submit_from(trigger, event, Some(upstream)).await;
}
