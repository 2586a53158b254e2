//! Host-side bindings generated from `wit/`. The action world holds every
//! import; the filter world reuses its interfaces, so both worlds share one
//! set of host implementations and types.

wasmtime::component::bindgen!({
    world: "action",
    path: "../wit",
    imports: { default: async },
    exports: { default: async },
});

/// Bindings of the filter world.
pub mod filter {
    wasmtime::component::bindgen!({
        world: "filter",
        path: "../wit",
        imports: { default: async },
        exports: { default: async },
        with: {
            "wasmtrigger:plugin/types": super::wasmtrigger::plugin::types,
            "wasmtrigger:plugin/log": super::wasmtrigger::plugin::log,
            "wasmtrigger:plugin/kv": super::wasmtrigger::plugin::kv,
        },
    });
}

pub use self::wasmtrigger::plugin::types::{Error as WitError, Event as WitEvent};

impl From<&crate::event::Event> for WitEvent {
    fn from(e: &crate::event::Event) -> Self {
        WitEvent {
            id: e.id.clone(),
            trigger: e.trigger.clone(),
            source: e.source.clone(),
            kind: e.kind.clone(),
            time: e.time.clone(),
            data: e.data.clone(),
        }
    }
}

impl WitError {
    /// The variant's WIT name.
    pub fn kind_name(&self) -> &'static str {
        match self {
            WitError::Denied(_) => "denied",
            WitError::NotFound => "not-found",
            WitError::Invalid(_) => "invalid",
            WitError::Failed(_) => "failed",
        }
    }

    /// The text the variant carries (empty for `not-found`).
    pub fn detail(&self) -> &str {
        match self {
            WitError::Denied(s) | WitError::Invalid(s) | WitError::Failed(s) => s,
            WitError::NotFound => "",
        }
    }
}
