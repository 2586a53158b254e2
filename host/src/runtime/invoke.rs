//! One bounded call into a guest: a fresh `Store`, a deadline, a memory cap,
//! and a failure classified so that run records say *why* it failed.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{Store, Trap};

use super::bindings::WitEvent;
use super::stdio::GuestOutput;
use super::{EPOCH_TICK, HostState, LoadedModule, Runtime};
use crate::capabilities::{ActionAccess, Capabilities, HostServices};
use crate::config::Limits;
use crate::event::Event;
use crate::redact;
use crate::state::KvNamespace;

/// Grace on top of a timeout for the host-side timer, which only matters when
/// the guest is blocked in a host call (epoch interruption handles guest code).
const TIMER_SLACK: Duration = Duration::from_millis(50);

pub use crate::runs::FailureKind;

/// A failed invocation: what kind of failure and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct InvokeError {
    /// Classification.
    pub kind: FailureKind,
    /// Explanation, naming the module.
    pub message: String,
}

impl InvokeError {
    /// Builds an error.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        InvokeError {
            kind,
            message: message.into(),
        }
    }
}

/// Who is invoking, under which bounds, with which capabilities.
#[derive(Clone)]
pub struct Invocation {
    /// The trigger the call is for.
    pub trigger: Arc<str>,
    /// Time and memory bounds.
    pub limits: Limits,
    /// The trigger's kv namespace.
    pub kv: Option<KvNamespace>,
    /// Grants and HTTP limits (actions only; None gives log and kv only).
    pub access: Option<Arc<ActionAccess>>,
    /// Engine-wide capability services.
    pub services: Arc<HostServices>,
    /// Where the run's log lines and capability calls are recorded, if anywhere.
    pub trace: Option<Arc<crate::runs::recording::Trace>>,
    /// In a replay: the recording that answers capability calls.
    pub replay: Option<Arc<crate::runs::recording::ReplaySource>>,
    /// Some in a dry run: side effects suppressed, kv writes kept here.
    pub dry_run: Option<Arc<crate::capabilities::kv::Overlay>>,
}

impl Invocation {
    /// An invocation with log and kv only (what a filter gets); add `access` for an action.
    pub fn new(
        trigger: &str,
        limits: Limits,
        kv: Option<KvNamespace>,
        services: Arc<HostServices>,
    ) -> Self {
        Invocation {
            trigger: trigger.into(),
            limits,
            kv,
            access: None,
            services,
            trace: None,
            replay: None,
            dry_run: None,
        }
    }
}

/// Result of one guest call under the host timer: timer, wasmtime, guest levels.
type Guarded<T> = Result<Result<Result<T, String>, wasmtime::Error>, tokio::time::error::Elapsed>;

/// A store ready for one invocation, with the output it captures.
pub(super) struct Armed {
    pub(super) store: Store<HostState>,
    pub(super) output: Arc<GuestOutput>,
    pub(super) label: Arc<str>,
}

impl Runtime {
    /// Runs a filter module on an event in a fresh instance.
    pub async fn call_filter(
        &self,
        module: &LoadedModule,
        inv: &Invocation,
        event: &Event,
    ) -> Result<bool, InvokeError> {
        let pre = module.filter_pre().map_err(unavailable)?;
        let mut armed = self.arm(module, inv);
        let wit_event = WitEvent::from(event);
        let run = async {
            let guest = pre.instantiate_async(&mut armed.store).await?;
            guest.call_filter(&mut armed.store, &wit_event).await
        };
        let result = tokio::time::timeout(host_timer(inv), run).await;
        settle(result, &armed, inv)
    }

    /// Runs an action module on an event with the trigger's params (JSON text).
    pub async fn call_action(
        &self,
        module: &LoadedModule,
        inv: &Invocation,
        event: &Event,
        params: &str,
    ) -> Result<String, InvokeError> {
        let pre = module.action_pre().map_err(unavailable)?;
        let mut armed = self.arm(module, inv);
        let wit_event = WitEvent::from(event);
        let run = async {
            let guest = pre.instantiate_async(&mut armed.store).await?;
            guest.call_run(&mut armed.store, &wit_event, params).await
        };
        let result = tokio::time::timeout(host_timer(inv), run).await;
        settle(result, &armed, inv).map(|out| redact::redact_str(&out).into_owned())
    }

    /// Instantiates a filter or action module and drops the instance without
    /// calling it: what a fresh instance costs before the guest runs (benchmarks).
    pub async fn instantiate(
        &self,
        module: &LoadedModule,
        inv: &Invocation,
    ) -> Result<(), InvokeError> {
        let mut armed = self.arm(module, inv);
        let instantiated = match (module.filter_pre(), module.action_pre()) {
            (Ok(pre), _) => pre.instantiate_async(&mut armed.store).await.map(drop),
            (_, Ok(pre)) => pre.instantiate_async(&mut armed.store).await.map(drop),
            (Err(e), _) => return Err(unavailable(e)),
        };
        instantiated.map_err(|e| classify(&e, &armed, inv))
    }

    /// A fresh store for one invocation of `module` by `inv`, with its
    /// limits, captured stdio and deadline set.
    pub(super) fn arm(&self, module: &LoadedModule, inv: &Invocation) -> Armed {
        let label = module.shared_label();
        let output = GuestOutput::new(inv.trigger.clone(), label.clone(), self.stdio_limit);
        let caps = Capabilities {
            trigger: inv.trigger.clone(),
            module: label.clone(),
            kv: inv.kv.clone(),
            access: inv.access.clone(),
            services: inv.services.clone(),
            http_requests: 0,
            trace: inv.trace.clone(),
            replay: inv.replay.clone(),
            dry_run: inv.dry_run.clone(),
        };
        let mut store = Store::new(
            &self.engine,
            HostState::new(caps, &output, inv.limits.memory),
        );
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_trap();
        set_deadline(&mut store, inv);
        Armed {
            store,
            output,
            label,
        }
    }
}

/// Gives the store `inv`'s timeout from now, in epoch ticks.
pub(super) fn set_deadline(store: &mut Store<HostState>, inv: &Invocation) {
    let ticks = inv
        .limits
        .timeout
        .as_millis()
        .div_ceil(EPOCH_TICK.as_millis()) as u64;
    store.set_epoch_deadline(ticks.max(1));
}

/// Ends an invocation: flushes its output and turns what happened into the
/// guest's value or a classified, redacted failure.
pub(super) fn settle<T>(
    result: Guarded<T>,
    armed: &Armed,
    inv: &Invocation,
) -> Result<T, InvokeError> {
    armed.output.finish();
    let label = &armed.label;
    match result {
        Err(_) => Err(timed_out(label, inv)),
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(message))) => Err(InvokeError::new(
            FailureKind::GuestError,
            format!(
                "{label} returned an error: {}",
                redact::redact_str(&message)
            ),
        )),
        Ok(Err(error)) => Err(classify(&error, armed, inv)),
    }
}

/// Timer slack above a timeout (the epoch deadline fires first for guest code).
pub(super) fn host_timer(inv: &Invocation) -> std::time::Duration {
    inv.limits.timeout + TIMER_SLACK
}

pub(super) fn unavailable(e: super::ModuleError) -> InvokeError {
    InvokeError::new(FailureKind::ModuleUnavailable, e.to_string())
}

fn timed_out(label: &str, inv: &Invocation) -> InvokeError {
    InvokeError::new(
        FailureKind::Timeout,
        format!(
            "{label} did not finish within {}",
            humantime::format_duration(inv.limits.timeout)
        ),
    )
}

/// Turns a wasmtime error into a classified failure. Limits are checked
/// first: a guest that aborts after a refused allocation traps with
/// `unreachable`, but the cause is the memory limit.
fn classify(error: &wasmtime::Error, armed: &Armed, inv: &Invocation) -> InvokeError {
    let (store, output, label) = (&armed.store, &armed.output, &*armed.label);
    tracing::debug!(module = %label, error = ?error, "guest failure details");
    let trap = error.downcast_ref::<Trap>();
    if trap == Some(&Trap::Interrupt) {
        return timed_out(label, inv);
    }
    if store.data().limiter.denied() {
        return InvokeError::new(
            FailureKind::MemoryLimit,
            format!(
                "{label} exceeded its memory limit of {} MiB",
                store.data().limiter.limit() >> 20
            ),
        );
    }
    if output.exceeded() {
        return InvokeError::new(
            FailureKind::OutputLimit,
            format!(
                "{label} wrote more than {} bytes to stdout/stderr",
                output.limit()
            ),
        );
    }
    let cause = match trap {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    // What the author's code said comes first (a panic's place and message,
    // an exception), then the trap.
    let message = match output.failure_lead() {
        Some(lead) => format!("{label} {lead} ({cause})"),
        None => {
            let hint = output
                .stderr_tail()
                .map(|tail| format!("; guest stderr: {tail}"))
                .unwrap_or_default();
            format!("{label} failed: {cause}{hint}")
        }
    };
    InvokeError::new(FailureKind::Trap, redact::redact_str(&message).into_owned())
}
