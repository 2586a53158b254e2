//! `isolation: pooled`: warm filter instances reused across the events of one
//! trigger, for filters whose authors accept that guest memory persists
//! between events. An instance that trapped, timed out or hit a limit is
//! dropped, never reused; a new module version or new limits empty the pool.

use std::sync::Mutex;

use super::bindings::WitEvent;
use super::bindings::filter::Filter;
use super::invoke::{Armed, host_timer, set_deadline, settle};
use super::{Invocation, InvokeError, LoadedModule, Runtime};
use crate::config::Limits;
use crate::event::Event;

/// Idle warm instances beyond this are dropped (more than the workers that can use them).
const MAX_IDLE: usize = 16;

/// Warm instances of one trigger's filter.
#[derive(Default)]
pub struct WarmPool {
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Module version and limits the idle instances were made for.
    key: Option<(String, Limits)>,
    instances: Vec<WarmInstance>,
}

struct WarmInstance {
    armed: Armed,
    guest: Filter,
}

impl WarmPool {
    /// Idle instances right now.
    pub fn idle(&self) -> usize {
        self.lock().instances.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take(&self, key: &(String, Limits)) -> Option<WarmInstance> {
        let mut idle = self.lock();
        if idle.key.as_ref() != Some(key) {
            idle.instances.clear();
            idle.key = Some(key.clone());
        }
        idle.instances.pop()
    }

    fn put(&self, key: (String, Limits), instance: WarmInstance) {
        let mut idle = self.lock();
        if idle.key.as_ref() == Some(&key) && idle.instances.len() < MAX_IDLE {
            idle.instances.push(instance);
        }
    }
}

impl Runtime {
    /// Runs a filter module on an event in a warm instance from `pool`
    /// (instantiating one when none is idle).
    pub async fn call_filter_pooled(
        &self,
        module: &LoadedModule,
        inv: &Invocation,
        event: &Event,
        pool: &WarmPool,
    ) -> Result<bool, InvokeError> {
        let pre = module.filter_pre().map_err(super::invoke::unavailable)?;
        let key = (module.version().to_string(), inv.limits);
        let reused = pool.take(&key);
        let wit_event = WitEvent::from(event);
        let (armed, result) = match reused {
            Some(WarmInstance { mut armed, guest }) => {
                armed.output.reset();
                armed.store.data_mut().limiter.reset_denied();
                set_deadline(&mut armed.store, inv);
                let call = guest.call_filter(&mut armed.store, &wit_event);
                let result = tokio::time::timeout(host_timer(inv), call).await;
                (armed, result.map(|r| r.map(|v| (v, guest))))
            }
            None => {
                let mut armed = self.arm(module, inv);
                let run = async {
                    let guest = pre.instantiate_async(&mut armed.store).await?;
                    let verdict = guest.call_filter(&mut armed.store, &wit_event).await?;
                    Ok::<_, wasmtime::Error>((verdict, guest))
                };
                let result = tokio::time::timeout(host_timer(inv), run).await;
                (armed, result)
            }
        };
        // Split the guest handle off so that `settle` sees the usual shape.
        let mut guest = None;
        let result = result.map(|r| {
            r.map(|(verdict, g)| {
                guest = Some(g);
                verdict
            })
        });
        let verdict = settle(result, &armed, inv);
        // A guest error leaves the instance sound; anything else may not.
        let sound = verdict.is_ok()
            || verdict
                .as_ref()
                .is_err_and(|e| e.kind == super::FailureKind::GuestError);
        if let (true, Some(guest)) = (sound, guest) {
            pool.put(key, WarmInstance { armed, guest });
        }
        verdict
    }
}
