//! The composition root: builds the state store, the wasm runtime, the
//! dispatcher, the live trigger set and the drivers (HTTP server, reloader,
//! Trigger-object sync, leader election), starts them in order, and stops
//! them in order. Nothing in the crate imports this module; it imports them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::capabilities::secrets::SecretStore;
use crate::capabilities::{CapabilitySnapshot, HostServices};
use std::net::SocketAddr;

use crate::config::{Config, ConfigErrors};
use crate::dispatch::queue::JobKey;
use crate::dispatch::{Dispatcher, StatsSnapshot, Submitter};
use crate::metrics::{EngineReadings, Metrics, MetricsSink, ReloadStats};
use crate::runs::BroadcastSink;
use crate::runs::journal::{Journal, JournalEntry};
use crate::runs::store::RunStore;
use crate::runs::{RunRecorder, RunSink};
use crate::runtime::{ModuleRegistry, Runtime, RuntimeError, RuntimeSettings, load_for_config};
use crate::server::{Server, ServerContext, ServerState};
use crate::sources::SourceContext;
use crate::state::{StateError, StateStore};
use crate::trigger::Trigger;
use crate::trigger_set::TriggerSet;

pub use crate::metrics::ReloadSnapshot;
pub use crate::reload::ReloadOptions;
pub use crate::trigger_set::{ConfigChange, TriggerView};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The wasm runtime could not be created.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Capability services (HTTP client, secrets) could not be set up.
    #[error("{0}")]
    Services(String),
    /// Modules failed to load or do not fit their triggers.
    #[error("{0}")]
    Modules(ConfigErrors),
    /// Leader election settings are inconsistent.
    #[error("{0}")]
    Leader(String),
    /// The config cannot run as it is (a webhook key that is missing or empty).
    #[error("{0}")]
    Config(ConfigErrors),
    /// The API token is missing, empty or unreadable.
    #[error("{0}")]
    ApiToken(String),
}

/// How the engine runs.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Directory of the state store.
    pub state_dir: PathBuf,
    /// Directory of the compiled-module cache (`<state_dir>/cache` by default); None disables it.
    pub module_cache: Option<PathBuf>,
    /// Watch the config and modules and apply changes while running.
    pub reload: Option<ReloadOptions>,
    /// Serve webhooks, metrics, health and the API here (port 0 picks one).
    pub listen: Option<SocketAddr>,
    /// Bearer token required by the `/api` endpoints.
    pub api_token: Option<crate::server::ApiToken>,
    /// How Kubernetes is reached (kube-watch, the kube capability, Secrets).
    pub kube: crate::kube::KubeConnection,
    /// Elect a leader among replicas; singleton sources run on the leader only.
    pub leader: Option<crate::kube::leader::LeaderConfig>,
    /// Also take triggers from Trigger objects.
    pub trigger_objects: Option<crate::kube::sync::TriggerObjects>,
}

impl EngineOptions {
    /// State in `state_dir`, the module cache beneath it, no reloading.
    pub fn new(state_dir: PathBuf) -> Self {
        EngineOptions {
            module_cache: Some(state_dir.join("cache")),
            state_dir,
            reload: None,
            listen: None,
            api_token: None,
            kube: Default::default(),
            leader: None,
            trigger_objects: None,
        }
    }
}

/// Engine-wide values for `/metrics`, read at scrape time.
fn readings(
    triggers: &std::sync::Weak<TriggerSet>,
    reload: &ReloadStats,
    services: &HostServices,
) -> EngineReadings {
    let Some(triggers) = triggers.upgrade() else {
        return EngineReadings::default();
    };
    let submitter = triggers.submitter();
    let ordering = submitter.ordering();
    EngineReadings {
        ready: true,
        queue_depth: submitter.queue_depth() as u64,
        queue_capacity: submitter.queue_capacity() as u64,
        ordering_held: ordering.held,
        ordering_max_held_per_key: ordering.max_held_per_key,
        ordering_keys: ordering.busy_keys,
        modules_loaded: triggers.registry().list().len() as u64,
        triggers: triggers.running_now().unwrap_or_default() as u64,
        reload: reload.snapshot(triggers.runtime().cache().map(|c| &c.stats)),
        capabilities: services.stats.snapshot(),
    }
}

/// Queues again the events a previous process accepted but did not finish
/// (waiting for queue room, so a long journal never overflows the queue).
/// `keys` are the entries' ordering keys, gated before the sources started
/// (so no new event of a key overtakes its replayed ones).
async fn replay_journal(
    shared: Arc<TriggerSet>,
    entries: Vec<JournalEntry>,
    keys: Vec<Option<JobKey>>,
) {
    tracing::warn!(
        events = entries.len(),
        "replaying events accepted before the last stop that did not finish"
    );
    let submitter = shared.submitter().clone();
    for (entry, key) in entries.into_iter().zip(keys) {
        let trigger = shared.trigger(&entry.trigger).await;
        let event_id = entry.event.id.clone();
        match trigger {
            Some(trigger) => {
                if submitter.replay(&trigger, entry, key).await.is_err() {
                    return; // stopping: the rest stays journaled for the next start
                }
            }
            None => {
                tracing::error!(
                    trigger = %entry.trigger,
                    event_id,
                    "journaled event dropped: its trigger no longer exists"
                );
                if let Some(key) = &key {
                    submitter.ungate(key);
                }
                submitter.forget(&event_id);
            }
        }
    }
}

/// A started engine.
pub struct Engine {
    triggers: Arc<TriggerSet>,
    history: Arc<RunStore>,
    state: Arc<StateStore>,
    services: Arc<HostServices>,
    reload_stats: Arc<ReloadStats>,
    dispatcher: Dispatcher,
    reloader: Option<(CancellationToken, JoinHandle<()>)>,
    election: Option<(CancellationToken, JoinHandle<()>)>,
    objects: Option<(CancellationToken, JoinHandle<()>)>,
    server: Option<(Server, Arc<ServerState>)>,
    history_writer: JoinHandle<()>,
    shutdown_grace: Duration,
}

impl Engine {
    /// Opens the state, loads every module, starts the workers, the sources
    /// and (if asked) the reloader.
    pub async fn start(
        config: Config,
        options: EngineOptions,
        sinks: Vec<Arc<dyn RunSink>>,
    ) -> Result<Engine, EngineError> {
        let metrics = Metrics::new();
        // The listener comes first, so `/healthz` answers and `/readyz` says "not yet" during start-up.
        let server = match options.listen {
            None => None,
            Some(addr) => {
                let token = options
                    .api_token
                    .clone()
                    .map(crate::server::TokenSource::new)
                    .transpose()
                    .map_err(EngineError::ApiToken)?;
                let server_state = ServerState::new(metrics.clone(), token, config.engine.server);
                let server = Server::start(addr, server_state.clone())
                    .await
                    .map_err(|e| EngineError::Listen(addr, e))?;
                Some((server, server_state))
            }
        };
        let state = StateStore::open(&options.state_dir, config.engine.kv)?;
        // Recorded runs keep the module versions they used ([`crate::runs::modules`]).
        let module_store = config
            .engine
            .history
            .record_event_bytes
            .map(|_| crate::runs::modules::ModuleStore::under(&options.state_dir));
        let history = RunStore::open_with_modules(
            state.clone(),
            config.engine.history,
            module_store.clone(),
        )?;
        let (history_sink, history_writer) = history.start_writer();
        let (journal, replay) = if config.engine.journal {
            let (journal, pending) = Journal::open(state.clone())?;
            (Some(journal), pending)
        } else {
            (None, Vec::new())
        };
        let kube = crate::kube::KubeConnector::new(options.kube.clone());
        let (leading, election) = match options.leader.clone() {
            None => (None, None),
            Some(leader) => {
                leader.validate().map_err(EngineError::Leader)?;
                let stop = CancellationToken::new();
                let (leading, task) =
                    crate::kube::leader::spawn(kube.clone(), leader, stop.clone());
                (Some(leading), Some((stop, task)))
            }
        };
        let mut secret_store = SecretStore::from_settings(&config.engine.secrets);
        if let Some((namespace, name)) = &config.engine.secrets.kubernetes {
            secret_store = secret_store.with_provider(Arc::new(
                crate::capabilities::secrets::KubeSecretProvider::new(
                    kube.clone(),
                    namespace.clone(),
                    name.clone(),
                ),
            ));
        }
        let own_listener = server.as_ref().map(|(s, _)| s.addr);
        let services = HostServices::for_engine(secret_store, Some(kube.clone()), own_listener)
            .map_err(EngineError::Services)?;
        crate::capabilities::secrets::preload_secrets(&config.triggers, &services.secrets).await;
        let key_problems = crate::capabilities::secrets::webhook_key_problems(
            &config.triggers,
            &services.secrets,
            false,
        )
        .await;
        if !key_problems.is_empty() {
            return Err(EngineError::Config(ConfigErrors(key_problems)));
        }
        let settings = RuntimeSettings {
            stdio_limit: config.engine.stdio_limit,
            pool_instances: (config.engine.workers * 4).clamp(16, 1000) as u32,
            cache_dir: options.module_cache.clone(),
            cache_max_bytes: config.engine.module_cache_size,
            max_module_bytes: config.engine.max_module_size,
            module_store,
            tuning: crate::runtime::Tuning {
                keep_resident: usize::try_from(config.engine.keep_resident).unwrap_or(usize::MAX),
                ..Default::default()
            },
            ..RuntimeSettings::default()
        };
        let runtime = Arc::new(Runtime::new(&settings)?);
        let (modules, errors) = load_for_config(&runtime, &config).await;
        if !errors.is_empty() {
            return Err(EngineError::Modules(ConfigErrors(errors)));
        }
        let registry = Arc::new(ModuleRegistry::default());
        for module in &modules {
            tracing::info!(
                module = %module.label(),
                worlds = ?module.worlds(),
                from_cache = module.from_cache,
                load_ms = module.compile_time.as_millis() as u64,
                "module loaded"
            );
        }
        // Chains hear about runs last, after the run is logged, stored and counted.
        let (runs_tx, _) = tokio::sync::broadcast::channel(4096);
        let mut sinks = sinks;
        sinks.push(history_sink);
        sinks.push(Arc::new(MetricsSink(metrics.clone())));
        sinks.push(Arc::new(BroadcastSink(runs_tx.clone())));
        let dispatcher = Dispatcher::start(
            &config.engine,
            runtime.clone(),
            services.clone(),
            registry.clone(),
            RunRecorder::new(sinks),
            metrics.clone(),
            journal,
        );
        let shutdown_grace = config.engine.shutdown_grace;
        let (workers, queue_size) = (config.engine.workers, config.engine.queue_size);
        let records_runs = config.engine.history.record_event_bytes.is_some();
        let distributor = config.engine.distribute.clone().map(|settings| {
            if options.leader.is_none() {
                tracing::warn!("engine.distribute without leader election: every replica runs the schedules and kube watches and publishes what they produce");
            }
            crate::distribute::Distributor::new(settings, services.secrets.clone())
        });
        let sources = SourceContext {
            submitter: dispatcher.submitter(),
            runs: runs_tx,
            services: services.clone(),
            kube,
            leading,
            distributor,
        };
        // Gate the replayed events' keys before any source can submit.
        let replay_keys = sources
            .submitter
            .gate_replays(&replay, &config.triggers)
            .await;
        let triggers = TriggerSet::new(&config, registry, runtime.clone(), state.clone(), sources);
        let change = triggers.apply(config, modules).await;
        if !replay.is_empty() {
            tokio::spawn(replay_journal(triggers.clone(), replay, replay_keys));
        }
        let reload_stats = Arc::new(ReloadStats::default());
        {
            let (weak, stats, services) = (
                Arc::downgrade(&triggers),
                reload_stats.clone(),
                services.clone(),
            );
            metrics.set_readings(move || readings(&weak, &stats, &services));
        }
        if let Some((_, server_state)) = &server {
            server_state.attach(ServerContext {
                triggers: triggers.clone(),
                history: history.clone(),
                secrets: services.secrets.clone(),
                shadows: dispatcher.shadows().clone(),
                runs: triggers.sources().runs.clone(),
                replay: records_runs.then(|| crate::server::replay::ReplayContext {
                    runtime: runtime.clone(),
                    services: services.clone(),
                    modules: Some(crate::runs::modules::ModuleStore::under(&options.state_dir)),
                }),
            });
            server_state.set_ready(true);
        }
        let objects = options.trigger_objects.clone().map(|scope| {
            let stop = CancellationToken::new();
            let context = crate::kube::sync::SyncContext {
                triggers: triggers.clone(),
                secrets: services.secrets.clone(),
            };
            let task = tokio::spawn(crate::kube::sync::run(context, scope, stop.clone()));
            (stop, task)
        });
        let reloader = options.reload.map(|reload| {
            let stop = CancellationToken::new();
            let context = crate::reload::ReloadContext {
                triggers: triggers.clone(),
                secrets: services.secrets.clone(),
                stats: reload_stats.clone(),
            };
            let task = tokio::spawn(crate::reload::run(context, reload, stop.clone()));
            (stop, task)
        });
        tracing::info!(
            triggers = change.added.len(),
            workers,
            queue_size,
            state_dir = %options.state_dir.display(),
            reload = reloader.is_some(),
            "engine started"
        );
        Ok(Engine {
            triggers,
            history,
            state,
            services,
            reload_stats,
            dispatcher,
            reloader,
            election,
            objects,
            server,
            history_writer,
            shutdown_grace,
        })
    }

    /// Where the HTTP server listens, if it runs.
    pub fn address(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|(s, _)| s.addr)
    }

    /// The stored run history.
    pub fn history(&self) -> &Arc<RunStore> {
        &self.history
    }

    /// What `wasmtrigger triggers` shows.
    pub async fn trigger_views(&self) -> Result<Vec<TriggerView>, String> {
        self.triggers.views(&self.history).await
    }

    /// The running triggers, by name.
    pub async fn triggers(&self) -> Vec<Arc<Trigger>> {
        self.triggers.triggers().await
    }

    /// Hands events to the dispatcher directly (embedding, benchmarks).
    pub fn submitter(&self) -> &Submitter {
        self.triggers.submitter()
    }

    /// The module versions serving.
    pub fn modules(&self) -> &Arc<ModuleRegistry> {
        self.triggers.registry()
    }

    /// The config currently applied.
    pub fn config(&self) -> Arc<Config> {
        self.triggers.config()
    }

    /// Dispatch counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.dispatcher.stats().snapshot()
    }

    /// Capability call and denial counters.
    pub fn capability_stats(&self) -> CapabilitySnapshot {
        self.services.stats.snapshot()
    }

    /// Reload and module-cache counters.
    pub fn reload_stats(&self) -> ReloadSnapshot {
        let cache = self.triggers.runtime().cache().map(|c| &c.stats);
        self.reload_stats.snapshot(cache)
    }

    /// Stops the reloader and the sources, lets queued and running events
    /// finish within the configured grace period, records whatever is left as
    /// failed, and returns the final counters.
    pub async fn shutdown(self) -> StatsSnapshot {
        tracing::info!("stopping: no new events; finishing runs in flight");
        if let Some((_, server_state)) = &self.server {
            server_state.set_ready(false);
        }
        for (stop, task) in [self.reloader, self.objects].into_iter().flatten() {
            stop.cancel();
            let _ = task.await;
        }
        self.triggers.stop_sources().await;
        // Sources have stopped: now the lease may go to another replica.
        if let Some((stop, task)) = self.election {
            stop.cancel();
            let _ = task.await;
        }
        let stats = self.dispatcher.stats().clone();
        let journal = self.triggers.submitter().journal().cloned();
        // The journal holds the store weakly; keep it open until the last
        // removals are written, or a finished event would replay on restart.
        let state = self.state;
        drop((
            self.triggers,
            self.history,
            self.services,
            self.reload_stats,
        ));
        self.dispatcher.stop(self.shutdown_grace).await;
        // Removals of the last runs' entries are committed before we return.
        if let Some(journal) = journal {
            journal.flush().await;
        }
        drop(state);
        // Every record is out; the history writer stores the last batch and ends.
        if tokio::time::timeout(Duration::from_secs(10), self.history_writer)
            .await
            .is_err()
        {
            tracing::warn!("run history writer did not finish within 10s");
        }
        if let Some((server, _)) = self.server {
            server.stop();
        }
        tracing::info!("engine stopped");
        stats.snapshot()
    }
}
