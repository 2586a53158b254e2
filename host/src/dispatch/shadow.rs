//! Shadow runs: a trigger's `shadow: {module, sample}` candidate runs after
//! the primary action on a share of the live events, with the dry-run
//! suppression (kube writes as server-side dry runs, HTTP other than GET/HEAD
//! not sent, kv writes thrown away), and is compared with the primary:
//!
//! - `error`: the candidate could not run, or trapped, timed out or ran out
//!   of memory (a returned error is an outcome like any other);
//! - `match`: same output, same error (module versions ignored) and the same
//!   calls tried (`interface.function args`, when the primary was recorded);
//! - `diff`: anything else.
//!
//! Counts go to `wasmtrigger_shadow_runs_total{trigger,outcome}`; the last
//! [`LATEST`] comparisons per trigger are kept in memory for the API and
//! `wasmtrigger shadow TRIGGER`. Shadow runs never hold up the primary's
//! record or its key; at most [`AT_ONCE`] run at a time and an event arriving
//! while they all are busy is not shadowed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::Semaphore;

use crate::capabilities::ActionAccess;
use crate::event::Event;
use crate::replay::{Compared, without_versions};
use crate::runs::recording::{Phase, Recording, Trace};
use crate::runs::{FailureKind, RunRecord, RunStatus};
use crate::runtime::Invocation;
use crate::trigger::Trigger;

/// Comparisons kept per trigger.
pub const LATEST: usize = 20;
/// Shadow runs at once, engine-wide.
pub const AT_ONCE: usize = 4;

/// One comparison.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShadowRun {
    /// The primary run.
    pub run_id: String,
    /// Its event.
    pub event_id: String,
    /// `match`, `diff` or `error`.
    pub outcome: String,
    /// The candidate's version.
    pub candidate: String,
    /// Output of the primary and of the candidate.
    pub output: Compared<Option<String>>,
    /// Errors, module versions ignored.
    pub error: Compared<Option<String>>,
    /// Calls tried.
    pub calls: Compared<Vec<String>>,
}

/// A trigger's shadow counts and latest comparisons.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerShadows {
    /// Runs that matched.
    pub matched: u64,
    /// Runs that differed.
    pub differed: u64,
    /// Runs the candidate could not complete.
    pub errors: u64,
    /// The newest comparisons, newest first.
    pub latest: VecDeque<ShadowRun>,
}

/// Every trigger's shadow results.
pub struct ShadowLog {
    by_trigger: Mutex<HashMap<String, TriggerShadows>>,
    slots: Arc<Semaphore>,
}

impl Default for ShadowLog {
    fn default() -> Self {
        ShadowLog {
            by_trigger: Mutex::default(),
            slots: Arc::new(Semaphore::new(AT_ONCE)),
        }
    }
}

impl ShadowLog {
    /// A trigger's counts and latest comparisons, if it has shadowed anything.
    pub fn view(&self, trigger: &str) -> Option<TriggerShadows> {
        self.by_trigger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(trigger)
            .cloned()
    }

    fn keep(&self, trigger: &str, run: ShadowRun) {
        let mut all = self.by_trigger.lock().unwrap_or_else(|p| p.into_inner());
        let entry = all.entry(trigger.to_string()).or_default();
        match run.outcome.as_str() {
            "match" => entry.matched += 1,
            "diff" => entry.differed += 1,
            _ => entry.errors += 1,
        }
        entry.latest.push_front(run);
        entry.latest.truncate(LATEST);
    }
}

/// Starts the candidate on `event` after the primary ended as `primary`, if
/// the sample picks it and a slot is free.
pub(super) fn maybe_start(
    ctx: &Arc<super::worker::WorkerContext>,
    trigger: &Arc<Trigger>,
    event: &Event,
    primary: &RunRecord,
) {
    let config = trigger.config();
    let Some(shadow) = &config.shadow else { return };
    if primary.status == RunStatus::Filtered || fastrand::f64() >= shadow.sample {
        return;
    }
    let Ok(slot) = ctx.shadows.slots.clone().try_acquire_owned() else {
        tracing::debug!(trigger = %trigger.name, "shadow: all slots busy; event not shadowed");
        return;
    };
    let (ctx, trigger, event) = (ctx.clone(), trigger.clone(), event.clone());
    let primary_calls = primary
        .recording
        .as_deref()
        .map(|r| last_attempt_calls(r, primary.attempts.len() as u32))
        .unwrap_or_default();
    let primary_output = (primary.status == RunStatus::Succeeded)
        .then(|| primary.output.clone())
        .flatten();
    let primary_error = primary.error.as_deref().map(without_versions);
    let (run_id, event_id) = (primary.run_id.clone(), primary.event_id.clone());
    tokio::spawn(async move {
        let _slot = slot;
        let config = trigger.config();
        let Some(shadow) = config.shadow.clone() else {
            return;
        };
        let action = &config.action;
        let trace = Arc::new(Trace::default());
        trace.enter(Phase::Action, 1);
        let outcome = async {
            let module = trigger
                .module(&ctx.registry, &shadow.module.name)
                .map_err(|why| why.to_string())?;
            let overlay =
                crate::capabilities::kv::Overlay::new(&trigger.name).map_err(|e| e.to_string())?;
            let params = crate::capabilities::secrets::merge_imports(
                &ctx.services.secrets,
                &action.params,
                &action.imports,
            )
            .await?;
            let inv = Invocation {
                access: Some(Arc::new(ActionAccess {
                    grants: action.grants.clone(),
                    http: action.http,
                })),
                trace: Some(trace.clone()),
                dry_run: Some(Arc::new(overlay)),
                ..Invocation::new(
                    &trigger.name,
                    shadow.module.limits,
                    Some(trigger.kv.clone()),
                    ctx.services.clone(),
                )
            };
            let result = ctx
                .runtime
                .call_action(&module, &inv, &event, &params)
                .await;
            Ok::<_, String>((module.label(), result))
        }
        .await;
        let mut made = Recording::default();
        trace.take_into(&mut made);
        let made_calls = last_attempt_calls(&made, 1);
        let run = match outcome {
            Err(why) => ShadowRun {
                run_id,
                event_id,
                outcome: "error".into(),
                candidate: shadow.module.name.clone(),
                output: Compared::new(primary_output, None),
                error: Compared::new(primary_error, Some(why)),
                calls: Compared::new(primary_calls, made_calls),
            },
            Ok((label, result)) => {
                let broke = matches!(
                    &result,
                    Err(e) if matches!(
                        e.kind,
                        FailureKind::Trap
                            | FailureKind::Timeout
                            | FailureKind::MemoryLimit
                            | FailureKind::OutputLimit
                            | FailureKind::ModuleUnavailable
                            | FailureKind::Host
                    )
                );
                let (output, error) = match result {
                    Ok(out) => (
                        Some(crate::runs::cap_text(out, crate::runs::MAX_OUTPUT_BYTES)),
                        None,
                    ),
                    Err(e) => (None, Some(without_versions(&e.message))),
                };
                let output = Compared::new(primary_output, output);
                let error = Compared::new(primary_error, error);
                let calls = Compared::new(primary_calls, made_calls);
                let outcome = if broke {
                    "error"
                } else if output.same && error.same && calls.same {
                    "match"
                } else {
                    "diff"
                };
                ShadowRun {
                    run_id,
                    event_id,
                    outcome: outcome.into(),
                    candidate: label,
                    output,
                    error,
                    calls,
                }
            }
        };
        ctx.metrics.shadow_run(&trigger.name, &run.outcome);
        if run.outcome != "match" {
            tracing::info!(trigger = %trigger.name, run_id = %run.run_id, outcome = %run.outcome, candidate = %run.candidate, "shadow run differs from the primary");
        }
        ctx.shadows.keep(&trigger.name, run);
    });
}

/// `interface.function args` of the action calls of one attempt.
fn last_attempt_calls(recording: &Recording, attempt: u32) -> Vec<String> {
    recording
        .calls
        .iter()
        .filter(|c| c.phase == Phase::Action && c.attempt == attempt)
        .map(|c| format!("{}.{} {}", c.interface, c.function, c.args))
        .collect()
}
