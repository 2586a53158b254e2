//! `kv`: the trigger's own key/value namespace in the state store.
//!
//! Secret values never reach the store: a key or value holding one is stored
//! with it redacted, so kv cannot carry a secret past the grant that gave it
//! (a later run without the grant, or a file copied off the state directory).
//!
//! In a dry run ([`Overlay`]) reads see the trigger's real values and writes
//! go to a scratch copy thrown away with the run: a key is copied into the
//! scratch namespace the first time the run touches it (a prefix, the first
//! time the run lists it), then every call works on the copy.

use std::collections::HashSet;
use std::sync::Mutex;

use super::Capabilities;
use super::bindings::WitError;
use super::bindings::wasmtrigger::plugin::kv::Host;
use crate::state::{KvNamespace, StateError};

impl Capabilities {
    /// Runs a blocking store call off the async executor. The returned future
    /// owns what it needs: `HostState` itself is not `Sync`.
    fn with_kv<T: Send + 'static>(
        &self,
        touched: Touch,
        call: impl FnOnce(&KvNamespace) -> Result<T, StateError> + Send + 'static,
    ) -> impl Future<Output = Result<T, WitError>> + Send + 'static {
        self.count(super::Capability::Kv);
        let ns = self.kv.clone();
        let overlay = self.dry_run.clone();
        let (trigger, module) = (self.trigger.clone(), self.module.clone());
        async move {
            let Some(ns) = ns else {
                return Err(WitError::Failed(
                    "kv is not available in this context".into(),
                ));
            };
            let result = tokio::task::spawn_blocking(move || match overlay {
                Some(overlay) => {
                    overlay.copy_in(&ns, &touched)?;
                    call(&overlay.scratch)
                }
                None => call(&ns),
            })
            .await
            .map_err(|e| WitError::Failed(format!("kv call did not complete: {e}")))?;
            result.map_err(|e| match e {
                StateError::Invalid(why) => WitError::Invalid(why),
                other => {
                    tracing::error!(%trigger, %module, error = %other, "kv store failure");
                    WitError::Failed(other.to_string())
                }
            })
        }
    }
}

impl Capabilities {
    /// A kv call, recorded in the run's trace with its answer.
    async fn kv_call<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
        &mut self,
        (function, touched): (&str, Touch),
        args: String,
        call: impl FnOnce(&KvNamespace) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, WitError> {
        self.traced(
            ("kv", function),
            args,
            |v| serde_json::from_value(v).ok(),
            |v| serde_json::to_value(v).unwrap_or_default(),
            async |c: &mut Self| c.with_kv(touched, call).await,
        )
        .await
    }
}

impl Host for Capabilities {
    async fn get(&mut self, key: String) -> Result<Option<String>, WitError> {
        let touched = Touch::Key(key.clone());
        self.kv_call(("get", touched), format!("{key:?}"), move |kv| kv.get(&key))
            .await
    }

    async fn set(&mut self, key: String, value: String) -> Result<(), WitError> {
        let (key, value) = (hidden(key), hidden(value));
        let args = format!("{key:?} = {value:?}");
        let touched = Touch::Key(key.clone());
        self.kv_call(("set", touched), args, move |kv| kv.set(&key, &value))
            .await
    }

    async fn delete(&mut self, key: String) -> Result<bool, WitError> {
        let touched = Touch::Key(key.clone());
        self.kv_call(("delete", touched), format!("{key:?}"), move |kv| {
            kv.delete(&key)
        })
        .await
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, WitError> {
        let args = format!("prefix {prefix:?}");
        let touched = Touch::Prefix(prefix.clone());
        self.kv_call(("list-keys", touched), args, move |kv| {
            kv.list_keys(&prefix)
        })
        .await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: Option<String>,
    ) -> Result<bool, WitError> {
        let (key, new) = (hidden(key), new.map(hidden));
        let expected = expected.map(hidden);
        let shown = |v: &Option<String>| v.as_ref().map_or("(absent)".into(), |v| format!("{v:?}"));
        let args = format!("{key:?}: {} -> {}", shown(&expected), shown(&new));
        let touched = Touch::Key(key.clone());
        self.kv_call(("compare-and-swap", touched), args, move |kv| {
            kv.compare_and_swap(&key, expected.as_deref(), new.as_deref())
        })
        .await
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, WitError> {
        let args = format!("{key:?} by {delta}");
        let touched = Touch::Key(key.clone());
        self.kv_call(("increment", touched), args, move |kv| {
            kv.increment(&key, delta)
        })
        .await
    }
}

/// What a kv call reads or writes, for the dry-run overlay.
pub enum Touch {
    /// One key.
    Key(String),
    /// Every key under a prefix.
    Prefix(String),
}

/// A dry run's kv: the real namespace read through, writes kept in scratch.
pub struct Overlay {
    scratch: KvNamespace,
    copied: Mutex<HashSet<String>>,
    listed: Mutex<HashSet<String>>,
}

impl Overlay {
    /// A fresh overlay for the trigger `trigger`.
    pub fn new(trigger: &str) -> Result<Self, StateError> {
        let store = crate::state::StateStore::in_memory(Default::default())?;
        Ok(Overlay {
            scratch: store.kv(trigger),
            copied: Mutex::default(),
            listed: Mutex::default(),
        })
    }

    /// Copies what `touched` names from `real` into scratch, once per key.
    fn copy_in(&self, real: &KvNamespace, touched: &Touch) -> Result<(), StateError> {
        let keys = match touched {
            Touch::Key(key) => vec![key.clone()],
            Touch::Prefix(prefix) => {
                if !self
                    .listed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(prefix.clone())
                {
                    return Ok(());
                }
                real.list_keys(prefix)?
            }
        };
        for key in keys {
            if !self
                .copied
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.clone())
            {
                continue;
            }
            if let Some(value) = real.get(&key)? {
                self.scratch.set(&key, &value)?;
            }
        }
        Ok(())
    }
}

/// The text with registered secret values redacted.
fn hidden(text: String) -> String {
    match crate::redact::redact_str(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(redacted) => redacted,
    }
}
