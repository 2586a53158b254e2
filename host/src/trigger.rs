//! A trigger while the engine runs: its config plus the live state shared by
//! its source and the workers (unfinished runs, the kv namespace).
//!
//! The config can be swapped by a reload; work takes a snapshot when it starts,
//! so a run finishes under the config it started with.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::Notify;

use crate::config::TriggerConfig;
use crate::runtime::{LoadedModule, ModuleRegistry, WarmPool};
use crate::state::{KvNamespace, StateStore};

/// A running trigger.
pub struct Trigger {
    /// Its name (shared, cheap to clone into logs and invocations).
    pub name: Arc<str>,
    config: RwLock<Arc<TriggerConfig>>,
    /// Its kv namespace.
    pub kv: KvNamespace,
    /// The state store, for engine-side bookkeeping (one-shot schedules).
    pub state: Arc<StateStore>,
    /// Warm filter instances, used when the filter's isolation is `pooled`.
    pub warm: WarmPool,
    /// Module versions kept for runs still in flight after the trigger was removed.
    retained: std::sync::Mutex<Vec<Arc<LoadedModule>>>,
    unfinished: AtomicUsize,
    finished: Notify,
}

impl Trigger {
    /// Wraps a config for running.
    pub fn new(config: TriggerConfig, state: &Arc<StateStore>) -> Arc<Self> {
        Arc::new(Trigger {
            name: config.name.as_str().into(),
            kv: state.kv(&config.name),
            state: state.clone(),
            config: RwLock::new(Arc::new(config)),
            warm: WarmPool::default(),
            retained: std::sync::Mutex::new(Vec::new()),
            unfinished: AtomicUsize::new(0),
            finished: Notify::new(),
        })
    }

    /// The current config.
    pub fn config(&self) -> Arc<TriggerConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the config; runs already started keep their snapshot.
    pub fn set_config(&self, config: TriggerConfig) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// Keeps these module versions for the runs still in flight (the trigger was removed).
    pub(crate) fn retain_modules(&self, modules: Vec<Arc<LoadedModule>>) {
        *self.retained.lock().unwrap_or_else(|p| p.into_inner()) = modules;
    }

    /// A module by name: the serving version, or for a removed trigger the one it kept.
    pub(crate) fn module(
        &self,
        registry: &ModuleRegistry,
        name: &str,
    ) -> Result<Arc<LoadedModule>, String> {
        registry.get(name).or_else(|why| {
            let retained = self.retained.lock().unwrap_or_else(|p| p.into_inner());
            retained.iter().find(|m| m.name == name).cloned().ok_or(why)
        })
    }

    /// Events accepted for this trigger whose run record is not written yet.
    pub fn unfinished(&self) -> usize {
        self.unfinished.load(Ordering::SeqCst)
    }

    /// Waits until some run of this trigger finishes (may wake spuriously).
    pub async fn run_finished(&self) {
        self.finished.notified().await
    }

    pub(crate) fn accepted(&self) {
        self.unfinished.fetch_add(1, Ordering::SeqCst);
    }

    pub(crate) fn completed(&self) {
        self.unfinished.fetch_sub(1, Ordering::SeqCst);
        self.finished.notify_one();
    }
}
