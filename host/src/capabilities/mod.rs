//! Host capabilities lent to guests, one file per WIT import. Each checks the
//! invoking trigger's grants before doing anything and answers a denied call
//! with a typed error to the guest, a log line and a counter.

pub mod bindings;
pub mod egress;
mod http;
mod kube;
pub mod kv;
mod log;
pub mod secrets;

/// The grant types, kept at their old path.
pub use crate::config::grants;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::config::HttpLimits;
use crate::config::grants::Grants;
use crate::state::KvNamespace;
use bindings::WitError;
use bindings::wasmtrigger::plugin::types;
use secrets::SecretStore;

/// The capabilities, for logs and counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Outbound HTTP.
    Http,
    /// Secret values.
    Secrets,
    /// Key/value state.
    Kv,
    /// The Kubernetes API.
    Kube,
}

impl Capability {
    /// Name as in config and logs.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Http => "http",
            Capability::Secrets => "secrets",
            Capability::Kv => "kv",
            Capability::Kube => "kube",
        }
    }
}

/// Calls and denials per capability.
#[derive(Debug, Default)]
pub struct CapabilityStats {
    calls: [AtomicU64; 4],
    denials: [AtomicU64; 4],
}

/// A point-in-time copy of [`CapabilityStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CapabilitySnapshot {
    pub http_calls: u64,
    pub http_denials: u64,
    pub secrets_calls: u64,
    pub secrets_denials: u64,
    pub kv_calls: u64,
    pub kv_denials: u64,
    pub kube_calls: u64,
    pub kube_denials: u64,
}

impl CapabilityStats {
    fn index(c: Capability) -> usize {
        match c {
            Capability::Http => 0,
            Capability::Secrets => 1,
            Capability::Kv => 2,
            Capability::Kube => 3,
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CapabilitySnapshot {
        let get = |a: &[AtomicU64; 4], c| a[Self::index(c)].load(Ordering::Relaxed);
        CapabilitySnapshot {
            http_calls: get(&self.calls, Capability::Http),
            http_denials: get(&self.denials, Capability::Http),
            secrets_calls: get(&self.calls, Capability::Secrets),
            secrets_denials: get(&self.denials, Capability::Secrets),
            kv_calls: get(&self.calls, Capability::Kv),
            kv_denials: get(&self.denials, Capability::Kv),
            kube_calls: get(&self.calls, Capability::Kube),
            kube_denials: get(&self.denials, Capability::Kube),
        }
    }
}

/// Engine-wide services the capabilities use.
pub struct HostServices {
    /// Shared HTTP client (connection pool) whose resolver refuses loopback and
    /// link-local answers ([`egress`]); redirects are handled by the capability.
    pub http: reqwest::Client,
    /// The same without that filter, for grants with `allowInternal: true`.
    pub http_internal: reqwest::Client,
    /// The engine's own listener, which guests reach only through a grant
    /// that opts in.
    pub own_listener: Option<std::net::SocketAddr>,
    /// Secret providers.
    pub secrets: SecretStore,
    /// Counters.
    pub stats: CapabilityStats,
    /// The Kubernetes connection, for the `kube` capability.
    pub kube: Option<Arc<crate::kube::KubeConnector>>,
}

impl HostServices {
    /// Builds the services without Kubernetes.
    pub fn new(secrets: SecretStore) -> Result<Arc<Self>, String> {
        Self::with_kube(secrets, None)
    }

    /// Builds the services.
    pub fn with_kube(
        secrets: SecretStore,
        kube: Option<Arc<crate::kube::KubeConnector>>,
    ) -> Result<Arc<Self>, String> {
        Self::for_engine(secrets, kube, None)
    }

    /// Builds the services of an engine listening at `own_listener`.
    pub fn for_engine(
        secrets: SecretStore,
        kube: Option<Arc<crate::kube::KubeConnector>>,
        own_listener: Option<std::net::SocketAddr>,
    ) -> Result<Arc<Self>, String> {
        let client = |guarded: bool| {
            let mut builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("wasmtrigger/", env!("CARGO_PKG_VERSION")));
            if guarded {
                builder = builder.dns_resolver(egress::guarded());
            }
            builder
                .build()
                .map_err(|e| format!("cannot create the HTTP client: {e}"))
        };
        Ok(Arc::new(HostServices {
            http: client(true)?,
            http_internal: client(false)?,
            own_listener,
            secrets,
            stats: CapabilityStats::default(),
            kube,
        }))
    }
}

/// What an action may use: its grants and limits.
#[derive(Clone, Debug, Default)]
pub struct ActionAccess {
    /// Granted destinations and secrets.
    pub grants: Grants,
    /// HTTP limits.
    pub http: HttpLimits,
}

/// What one invocation may use, and who is asking (for logs).
#[derive(Clone)]
pub struct Capabilities {
    /// The trigger the invocation runs for.
    pub trigger: Arc<str>,
    /// The module label, `name@version`.
    pub module: Arc<str>,
    /// The trigger's kv namespace.
    pub kv: Option<KvNamespace>,
    /// Grants and limits (None: nothing beyond log and kv, as for filters).
    pub access: Option<Arc<ActionAccess>>,
    /// Engine-wide services.
    pub services: Arc<HostServices>,
    /// HTTP requests sent so far by this invocation.
    pub http_requests: u32,
    /// Where log lines and calls are recorded, if the run is recorded.
    pub trace: Option<Arc<crate::runs::recording::Trace>>,
    /// In a replay: the recording that answers the calls.
    pub replay: Option<Arc<crate::runs::recording::ReplaySource>>,
    /// Some in a dry run, holding where kv writes go instead of the store ([`kv::Overlay`]);
    /// kube writes are server-side dry runs and HTTP other than GET and HEAD is not sent.
    pub dry_run: Option<Arc<kv::Overlay>>,
}

impl Capabilities {
    /// Records a call in the run's trace (when there is one): what was asked,
    /// how it ended and the answer the guest got (`answer` makes its JSON).
    fn note<T>(
        &self,
        (interface, function): (&str, &str),
        args: impl FnOnce() -> String,
        started: std::time::Instant,
        result: &Result<T, WitError>,
        answer: impl FnOnce(&T) -> serde_json::Value,
    ) {
        let Some(trace) = &self.trace else { return };
        let (outcome, answer) = match result {
            Ok(value) => ("ok", answer(value)),
            Err(e) => (
                e.kind_name(),
                serde_json::json!({ "error": e.kind_name(), "message": e.detail() }),
            ),
        };
        trace.call(crate::runs::recording::CallNote {
            interface,
            function,
            args: args(),
            outcome,
            answer,
            started,
        });
    }

    /// One capability call, the same way for every capability: answered from
    /// the recording in a replay (`decode` reads the recorded JSON), else made
    /// by `live`; recorded in the run's trace either way (`answer` writes the
    /// JSON kept).
    async fn traced<T>(
        &mut self,
        call: (&str, &str),
        args: String,
        decode: impl FnOnce(serde_json::Value) -> Option<T>,
        answer: impl FnOnce(&T) -> serde_json::Value,
        live: impl AsyncFnOnce(&mut Self) -> Result<T, WitError>,
    ) -> Result<T, WitError> {
        let started = std::time::Instant::now();
        let result = match self.replayed(call, &args, decode) {
            Some(recorded) => recorded,
            None => live(self).await,
        };
        self.note(call, || args, started, &result, answer);
        result
    }

    /// In a replay, the recorded answer to this call (`decode` turns its JSON
    /// into the guest's value), or a refusal when the recording has none; None
    /// when the call is to be made for real (no replay, or a live one).
    fn replayed<T>(
        &self,
        (interface, function): (&str, &str),
        args: &str,
        decode: impl FnOnce(serde_json::Value) -> Option<T>,
    ) -> Option<Result<T, WitError>> {
        use crate::runs::recording::Replayed;
        let replay = self.replay.as_ref()?;
        let refused = || {
            Some(Err(WitError::Failed(
                "replay: no recorded or canned answer for this call".into(),
            )))
        };
        match replay.answer(interface, function, args) {
            Replayed::Answer(outcome, answer) if outcome == "ok" => match decode(answer) {
                Some(value) => Some(Ok(value)),
                None => {
                    // Kept in part only (a body over the bound): not an answer.
                    replay.unanswered(
                        interface,
                        function,
                        args,
                        "its recorded answer is not whole",
                    );
                    if replay.live { None } else { refused() }
                }
            },
            Replayed::Answer(outcome, answer) => {
                let message = answer["message"].as_str().unwrap_or_default().to_string();
                Some(Err(match outcome.as_str() {
                    "denied" => WitError::Denied(message),
                    "not-found" => WitError::NotFound,
                    "invalid" => WitError::Invalid(message),
                    _ => WitError::Failed(message),
                }))
            }
            Replayed::Missing if replay.live => None,
            Replayed::Missing => refused(),
        }
    }

    fn count(&self, capability: Capability) {
        self.services.stats.calls[CapabilityStats::index(capability)]
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Logs and counts a denial and builds the guest's error. `asked` says
    /// what was asked and must never hold a secret value (it is redacted too).
    fn deny(&self, capability: Capability, asked: &str, reason: &str) -> WitError {
        self.services.stats.denials[CapabilityStats::index(capability)]
            .fetch_add(1, Ordering::Relaxed);
        let asked = crate::redact::redact_str(asked);
        tracing::warn!(
            target: "wasmtrigger::capability",
            trigger = %self.trigger,
            module = %self.module,
            capability = capability.name(),
            asked = %asked,
            reason,
            "capability denied"
        );
        WitError::Denied(format!("{}: {asked}: {reason}", capability.name()))
    }
}

impl types::Host for Capabilities {}
