//! Running an event through a filter and an action again, offline, with
//! every capability call answered from a list (a recording's, or a
//! fixture's canned answers): the one piece under both replay and module
//! tests. It sends nothing (unless live), keeps nothing, and reports what the
//! guests decided, returned, logged and asked for.

use std::sync::Arc;

use super::{REPLAY_LIMITS, ReplayError};
use crate::capabilities::{ActionAccess, HostServices};
use crate::cel::CelFilter;
use crate::event::Event;
use crate::runs::recording::{Call, LogLine, Phase, Recording, ReplaySource, Trace};
use crate::runtime::{Invocation, LoadedModule, Runtime};

/// The filter of a re-run.
pub enum FilterRun<'a> {
    /// No filter: the action runs.
    None,
    /// A CEL expression.
    Cel(&'a str),
    /// A module.
    Module(&'a LoadedModule),
}

/// What to run again.
pub struct Rerun<'a> {
    /// The event.
    pub event: Event,
    /// The filter.
    pub filter: FilterRun<'a>,
    /// The action (None: only the filter runs; an error: it cannot, which
    /// matters only when the filter passes the event).
    pub action: Result<Option<&'a LoadedModule>, ReplayError>,
    /// The action's params, as JSON text.
    pub params: String,
    /// The action attempt its calls and logs are marked with.
    pub attempt: u32,
    /// What answers the filter's calls and the action's (may be one source).
    pub answers: (Arc<ReplaySource>, Arc<ReplaySource>),
    /// The trigger's grants, under which calls without an answer are made
    /// for real (None: they are refused).
    pub live: Option<Arc<ActionAccess>>,
}

/// What a re-run did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The module versions run (filter, action).
    pub modules: Vec<String>,
    /// The filter's verdict (None: no filter, or it failed).
    pub verdict: Option<bool>,
    /// Whether the action ran.
    pub action_ran: bool,
    /// The action's output.
    pub output: Option<String>,
    /// The first error, as the engine words it (`filter: …` for CEL).
    pub error: Option<String>,
    /// The calls made, in order.
    pub calls: Vec<Call>,
    /// The guests' log lines.
    pub logs: Vec<LogLine>,
    /// Calls the answers did not cover, and answers never asked for.
    pub divergences: Vec<String>,
    /// Calls made for real (live only).
    pub made_live: Vec<String>,
}

/// Runs `run` and reports what happened. The filter runs first; the action
/// runs when there is no filter or it passed the event.
pub async fn rerun(
    runtime: &Runtime,
    services: Arc<HostServices>,
    run: Rerun<'_>,
) -> Result<Outcome, ReplayError> {
    let Rerun {
        event,
        filter,
        action,
        params,
        attempt,
        answers: (filter_answers, action_answers),
        live,
    } = run;
    // kv calls that reach a store at all (a live re-run) find a scratch one.
    let scratch = crate::state::StateStore::in_memory(Default::default())
        .map_err(|e| ReplayError::Module(e.to_string()))?;
    let trace = Arc::new(Trace::default());
    let invocation = |answers: &Arc<ReplaySource>| Invocation {
        trace: Some(trace.clone()),
        replay: Some(answers.clone()),
        ..Invocation::new(
            &event.trigger,
            REPLAY_LIMITS,
            Some(scratch.kv(&event.trigger)),
            services.clone(),
        )
    };
    let mut outcome = Outcome::default();
    match filter {
        FilterRun::None => {}
        FilterRun::Cel(expression) => {
            let cel = CelFilter::compile(expression).map_err(ReplayError::Cel)?;
            match cel.evaluate(&event) {
                Ok(v) => outcome.verdict = Some(v),
                Err(e) => outcome.error = Some(format!("filter: {e}")),
            }
        }
        FilterRun::Module(module) => {
            outcome.modules.push(module.label());
            trace.enter(Phase::Filter, 0);
            match runtime
                .call_filter(module, &invocation(&filter_answers), &event)
                .await
            {
                Ok(v) => outcome.verdict = Some(v),
                Err(e) => outcome.error = Some(e.message),
            }
        }
    }
    let passed = match filter {
        FilterRun::None => true,
        _ => outcome.verdict == Some(true),
    };
    let action = if passed { action? } else { None };
    if let Some(module) = action {
        outcome.modules.push(module.label());
        outcome.action_ran = true;
        trace.enter(Phase::Action, attempt);
        let inv = Invocation {
            access: live,
            ..invocation(&action_answers)
        };
        match runtime.call_action(module, &inv, &event, &params).await {
            Ok(out) => {
                outcome.output = Some(crate::runs::cap_text(out, crate::runs::MAX_OUTPUT_BYTES))
            }
            Err(e) => outcome.error = Some(e.message),
        }
    }
    outcome.divergences = filter_answers.divergences();
    outcome.made_live = filter_answers.made_live();
    if !Arc::ptr_eq(&filter_answers, &action_answers) && outcome.action_ran {
        outcome.divergences.extend(action_answers.divergences());
        outcome.made_live.extend(action_answers.made_live());
    }
    let mut made = Recording::default();
    trace.take_into(&mut made);
    outcome.calls = made.calls;
    outcome.logs = made.logs;
    Ok(outcome)
}
