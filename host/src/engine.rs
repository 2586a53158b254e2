//! The running engine: state store, wasm runtime, loaded modules, the
//! dispatcher and one source task per trigger, and an orderly stop.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigErrors};
use crate::dispatch::{Dispatcher, StatsSnapshot};
use crate::runs::{RunRecorder, RunSink};
use crate::runtime::{ModuleRegistry, Runtime, RuntimeError, RuntimeSettings, load_for_config};
use crate::state::{KvLimits, StateError, StateStore};
use crate::trigger::Trigger;

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// The wasm runtime could not be created.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Modules failed to load or do not fit their triggers.
    #[error("{0}")]
    Modules(ConfigErrors),
}

/// Where the engine keeps its state.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Directory of the state store.
    pub state_dir: PathBuf,
}

/// A started engine.
pub struct Engine {
    config: Config,
    registry: Arc<ModuleRegistry>,
    dispatcher: Dispatcher,
    triggers: Vec<Arc<Trigger>>,
    sources: Vec<JoinHandle<()>>,
    stop_sources: CancellationToken,
}

impl Engine {
    /// Opens the state, compiles every module, starts the workers and the sources.
    pub async fn start(
        config: Config,
        options: EngineOptions,
        sinks: Vec<Arc<dyn RunSink>>,
    ) -> Result<Engine, EngineError> {
        let state = StateStore::open(&options.state_dir, KvLimits::default())?;
        let settings = RuntimeSettings {
            stdio_limit: config.engine.stdio_limit,
            pool_instances: (config.engine.workers * 4).clamp(16, 1000) as u32,
            ..RuntimeSettings::default()
        };
        let runtime = Arc::new(Runtime::new(&settings)?);
        let (modules, errors) = load_for_config(&runtime, &config).await;
        if !errors.is_empty() {
            return Err(EngineError::Modules(ConfigErrors(errors)));
        }
        let registry = Arc::new(ModuleRegistry::default());
        for module in modules {
            tracing::info!(
                module = %module.label(),
                worlds = ?module.worlds(),
                compile_ms = module.compile_time.as_millis() as u64,
                "module loaded"
            );
            registry.insert(module);
        }
        let dispatcher = Dispatcher::start(
            &config.engine,
            runtime.clone(),
            registry.clone(),
            RunRecorder::new(sinks),
        );
        let stop_sources = CancellationToken::new();
        let triggers: Vec<Arc<Trigger>> = config
            .triggers
            .iter()
            .map(|t| Trigger::new(t.clone(), &state))
            .collect();
        let sources = triggers
            .iter()
            .map(|t| crate::sources::spawn(t.clone(), dispatcher.submitter(), stop_sources.clone()))
            .collect();
        tracing::info!(
            triggers = triggers.len(),
            workers = config.engine.workers,
            queue_size = config.engine.queue_size,
            state_dir = %options.state_dir.display(),
            "engine started"
        );
        Ok(Engine {
            config,
            registry,
            dispatcher,
            triggers,
            sources,
            stop_sources,
        })
    }

    /// The running triggers.
    pub fn triggers(&self) -> &[Arc<Trigger>] {
        &self.triggers
    }

    /// The module versions serving.
    pub fn modules(&self) -> &Arc<ModuleRegistry> {
        &self.registry
    }

    /// Dispatch counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.dispatcher.stats().snapshot()
    }

    /// Stops the sources, lets queued and running events finish within the
    /// configured grace period, records whatever is left as failed, and
    /// returns the final counters.
    pub async fn shutdown(self) -> StatsSnapshot {
        tracing::info!("stopping: no new events; finishing runs in flight");
        self.stop_sources.cancel();
        for source in self.sources {
            let _ = source.await;
        }
        let stats = self.dispatcher.stats().clone();
        self.dispatcher
            .stop(self.config.engine.shutdown_grace)
            .await;
        tracing::info!("engine stopped");
        stats.snapshot()
    }
}
