//! Host capabilities lent to guests, one file per WIT import. Each checks the
//! invoking trigger's grants before doing anything and answers a denied call
//! with a typed error to the guest plus a log line.

mod kv;
mod log;

use std::sync::Arc;

use crate::runtime::HostState;
use crate::runtime::bindings::wasmtrigger::plugin::types;
use crate::state::KvNamespace;

/// What one invocation may use, and who is asking (for logs).
#[derive(Clone)]
pub struct Capabilities {
    /// The trigger the invocation runs for.
    pub trigger: Arc<str>,
    /// The module label, `name@version`.
    pub module: Arc<str>,
    /// The trigger's kv namespace.
    pub kv: Option<KvNamespace>,
}

impl types::Host for HostState {}
