//! One bounded call into a guest: a fresh `Store`, a deadline, a memory cap,
//! and a failure classified so that run records say *why* it failed.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use wasmtime::{Store, Trap};

use super::bindings::filter::FilterPre;
use super::bindings::{ActionPre, WitEvent};
use super::stdio::GuestOutput;
use super::{EPOCH_TICK, HostState, LoadedModule, Runtime};
use crate::capabilities::redact::Redactor;
use crate::capabilities::{ActionAccess, Capabilities, HostServices};
use crate::config::Limits;
use crate::event::Event;
use crate::state::KvNamespace;

/// Grace on top of a timeout for the host-side timer, which only matters when
/// the guest is blocked in a host call (epoch interruption handles guest code).
const TIMER_SLACK: Duration = Duration::from_millis(50);

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
    /// Secret values of this run, kept out of everything written.
    pub redactor: Redactor,
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
            redactor: Redactor::default(),
        }
    }
}

enum Call<'a> {
    Filter(&'a FilterPre<HostState>),
    Action(&'a ActionPre<HostState>, &'a str),
}

enum Outcome {
    Filter(bool),
    Action(String),
}

impl Runtime {
    /// Runs a filter module on an event.
    pub async fn call_filter(
        &self,
        module: &LoadedModule,
        inv: &Invocation,
        event: &Event,
    ) -> Result<bool, InvokeError> {
        let pre = module.filter_pre().map_err(unavailable)?;
        match self.execute(module, inv, event, Call::Filter(pre)).await? {
            Outcome::Filter(pass) => Ok(pass),
            Outcome::Action(_) => Err(InvokeError::new(FailureKind::Host, "mismatched call")),
        }
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
        match self
            .execute(module, inv, event, Call::Action(pre, params))
            .await?
        {
            Outcome::Action(output) => Ok(output),
            Outcome::Filter(_) => Err(InvokeError::new(FailureKind::Host, "mismatched call")),
        }
    }

    async fn execute(
        &self,
        module: &LoadedModule,
        inv: &Invocation,
        event: &Event,
        call: Call<'_>,
    ) -> Result<Outcome, InvokeError> {
        let label: Arc<str> = module.label().into();
        let output = GuestOutput::new(
            inv.trigger.clone(),
            label.clone(),
            self.stdio_limit,
            inv.redactor.clone(),
        );
        let caps = Capabilities {
            trigger: inv.trigger.clone(),
            module: label.clone(),
            kv: inv.kv.clone(),
            access: inv.access.clone(),
            services: inv.services.clone(),
            redactor: inv.redactor.clone(),
            http_requests: 0,
        };
        let mut store = Store::new(
            &self.engine,
            HostState::new(caps, &output, inv.limits.memory),
        );
        store.limiter(|state| &mut state.limiter);
        let ticks = inv
            .limits
            .timeout
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis()) as u64;
        store.set_epoch_deadline(ticks.max(1));
        store.epoch_deadline_trap();
        let wit_event = WitEvent::from(event);
        let run = async {
            match call {
                Call::Filter(pre) => {
                    let guest = pre.instantiate_async(&mut store).await?;
                    let result = guest.call_filter(&mut store, &wit_event).await?;
                    Ok::<_, wasmtime::Error>(result.map(Outcome::Filter))
                }
                Call::Action(pre, params) => {
                    let guest = pre.instantiate_async(&mut store).await?;
                    let result = guest.call_run(&mut store, &wit_event, params).await?;
                    Ok(result.map(Outcome::Action))
                }
            }
        };
        let result = tokio::time::timeout(inv.limits.timeout + TIMER_SLACK, run).await;
        output.finish();
        let redact = |text: String| inv.redactor.redact(&text).into_owned();
        match result {
            Err(_) => Err(timed_out(&label, inv)),
            Ok(Ok(Ok(Outcome::Action(out)))) => Ok(Outcome::Action(redact(out))),
            Ok(Ok(Ok(outcome))) => Ok(outcome),
            Ok(Ok(Err(message))) => Err(InvokeError::new(
                FailureKind::GuestError,
                format!("{label} returned an error: {}", redact(message)),
            )),
            Ok(Err(error)) => {
                let mut e = classify(&error, &store, &output, &label, inv);
                e.message = redact(e.message);
                Err(e)
            }
        }
    }
}

fn unavailable(e: super::ModuleError) -> InvokeError {
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
fn classify(
    error: &wasmtime::Error,
    store: &Store<HostState>,
    output: &GuestOutput,
    label: &str,
    inv: &Invocation,
) -> InvokeError {
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
    let hint = output
        .stderr_tail()
        .map(|tail| format!("; guest stderr: {tail}"))
        .unwrap_or_default();
    InvokeError::new(FailureKind::Trap, format!("{label} failed: {cause}{hint}"))
}
