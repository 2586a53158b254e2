//! The running engine: state store, wasm runtime, loaded modules, the
//! dispatcher, one source task per trigger, the reloader, and an orderly stop.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::capabilities::secrets::SecretStore;
use crate::capabilities::{CapabilitySnapshot, HostServices};
use std::net::SocketAddr;

use crate::config::{Config, ConfigErrors, EngineOverrides, Outcome, SourceConfig, TriggerConfig};
use crate::dispatch::{Dispatcher, StatsSnapshot, Submitter};
use crate::metrics::{EngineReadings, Metrics, MetricsSink};
use crate::runs::BroadcastSink;
use crate::runs::journal::{Journal, JournalEntry};
use crate::runs::store::{RunStore, TriggerSummary};
use crate::runs::{RunRecorder, RunSink};
use crate::runtime::{
    LoadedModule, ModuleRegistry, Runtime, RuntimeError, RuntimeSettings, load_for_config,
};
use crate::server::{Server, ServerState};
use crate::sources::SourceContext;
use crate::state::{StateError, StateStore};
use crate::trigger::Trigger;

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

/// Where a reload reads the config from, the way `run` was given it.
#[derive(Clone, Debug)]
pub struct ReloadOptions {
    /// The `--config` path (file or directory).
    pub config_path: PathBuf,
    /// The `--modules` directory, if given.
    pub modules_dir: Option<PathBuf>,
    /// Flag and env overrides of engine settings.
    pub overrides: EngineOverrides,
    /// Rescan this often even without file events (events can be missed).
    pub poll_interval: Duration,
}

/// Reload counters.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Config changes applied.
    pub config_reloads: AtomicU64,
    /// Config changes rejected (the previous config kept running).
    pub config_rejections: AtomicU64,
    /// Module versions swapped in.
    pub module_reloads: AtomicU64,
    /// Module versions rejected (the previous version kept serving).
    pub module_rejections: AtomicU64,
}

/// A point-in-time copy of [`ReloadStats`] and the module cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSnapshot {
    pub config_reloads: u64,
    pub config_rejections: u64,
    pub module_reloads: u64,
    pub module_rejections: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_discarded: u64,
}

/// A trigger with its source task.
struct RunningTrigger {
    trigger: Arc<Trigger>,
    stop: CancellationToken,
    source: JoinHandle<()>,
}

/// What a config change did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConfigChange {
    /// Triggers started.
    pub added: Vec<String>,
    /// Triggers stopped.
    pub removed: Vec<String>,
    /// Triggers whose settings changed; their source kept running.
    pub updated: Vec<String>,
    /// Triggers whose source changed and was restarted.
    pub restarted: Vec<String>,
}

impl ConfigChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.updated.is_empty()
            && self.restarted.is_empty()
    }

    /// Logs the change at info level with `message`.
    pub fn log(&self, message: &str) {
        tracing::info!(
            added = ?self.added,
            removed = ?self.removed,
            updated = ?self.updated,
            restarted = ?self.restarted,
            "{message}"
        );
    }
}

/// The parts of a running engine that the reloader changes.
pub(crate) struct Shared {
    pub runtime: Arc<Runtime>,
    pub services: Arc<HostServices>,
    pub registry: Arc<ModuleRegistry>,
    pub state: Arc<StateStore>,
    pub history: Arc<RunStore>,
    pub reload: ReloadStats,
    pub(crate) sources: SourceContext,
    stop_sources: CancellationToken,
    running: Mutex<BTreeMap<String, RunningTrigger>>,
    config: std::sync::Mutex<Arc<Config>>,
    /// The triggers applied from Trigger objects; held while a config is
    /// composed and applied, so file reloads and object changes take turns.
    pub(crate) objects: Mutex<Vec<crate::config::TriggerConfig>>,
}

impl Shared {
    /// The config currently applied.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The running trigger with this name.
    pub async fn trigger(&self, name: &str) -> Option<Arc<Trigger>> {
        self.running
            .lock()
            .await
            .get(name)
            .map(|r| r.trigger.clone())
    }

    /// Hands events to the dispatcher.
    pub fn submitter(&self) -> &Submitter {
        &self.sources.submitter
    }

    /// What `wasmtrigger triggers` shows: each trigger with its history and successors.
    pub async fn trigger_views(&self) -> Result<Vec<TriggerView>, String> {
        let store = self.history.clone();
        let summaries = tokio::task::spawn_blocking(move || store.summaries())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let configs: Vec<Arc<TriggerConfig>> = self
            .running
            .lock()
            .await
            .values()
            .map(|r| r.trigger.config())
            .collect();
        let successors = |name: &str, outcome: Outcome| -> Vec<String> {
            configs
                .iter()
                .filter(|c| match &c.source {
                    SourceConfig::Chain(chain) => chain
                        .conditions
                        .iter()
                        .any(|cond| cond.of == name && cond.on.contains(&outcome)),
                    _ => false,
                })
                .map(|c| c.name.clone())
                .collect()
        };
        Ok(configs
            .iter()
            .map(|c| {
                let summary = summaries.get(&c.name).cloned().unwrap_or_default();
                TriggerView {
                    name: c.name.clone(),
                    source: c.source.type_name().to_string(),
                    state: "running".to_string(),
                    on_success: successors(&c.name, Outcome::Success),
                    on_failure: successors(&c.name, Outcome::Failure),
                    summary,
                }
            })
            .collect())
    }

    fn start_trigger(&self, trigger: Arc<Trigger>) -> RunningTrigger {
        let stop = self.stop_sources.child_token();
        let source = crate::sources::spawn(trigger.clone(), &self.sources, stop.clone());
        RunningTrigger {
            trigger,
            stop,
            source,
        }
    }

    /// Makes `config` the running config: swaps in its module versions, then
    /// starts, stops, updates or restarts triggers. A trigger whose source is
    /// unchanged keeps its source running, so its schedule keeps its phase; a
    /// restarted source is stopped completely before the new one arms, so a
    /// tick is neither fired twice nor skipped.
    pub async fn apply(&self, config: Config, modules: Vec<Arc<LoadedModule>>) -> ConfigChange {
        for module in modules {
            let current = self.registry.get(&module.name).ok();
            if current.is_none_or(|c| c.digest != module.digest) {
                self.registry.insert(module);
            }
        }
        let mut change = ConfigChange::default();
        let mut running = self.running.lock().await;
        let wanted: HashSet<&str> = config.triggers.iter().map(|t| t.name.as_str()).collect();
        let gone: Vec<String> = running
            .keys()
            .filter(|name| !wanted.contains(name.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some(old) = running.remove(&name) {
                // Only the source stops; runs already accepted finish, on the
                // module versions the trigger holds on to for them.
                old.stop.cancel();
                let _ = old.source.await;
                let config = old.trigger.config();
                let modules = config
                    .module_names()
                    .iter()
                    .filter_map(|m| self.registry.get(m).ok())
                    .collect();
                old.trigger.retain_modules(modules);
                change.removed.push(name);
            }
        }
        // Chain sources first: they subscribe to finished runs as they start,
        // and a run started by another new source must not finish unseen.
        let mut order: Vec<&TriggerConfig> = config.triggers.iter().collect();
        order.sort_by_key(|t| !matches!(t.source, SourceConfig::Chain(_)));
        for t in order {
            let Some(current) = running.get(&t.name) else {
                let trigger = Trigger::new(t.clone(), &self.state);
                running.insert(t.name.clone(), self.start_trigger(trigger));
                change.added.push(t.name.clone());
                continue;
            };
            let old = current.trigger.config();
            if same_trigger(&old, t) {
                continue;
            }
            if old.source == t.source {
                current.trigger.set_config(t.clone());
                change.updated.push(t.name.clone());
                continue;
            }
            let Some(old_run) = running.remove(&t.name) else {
                continue;
            };
            old_run.stop.cancel();
            let _ = old_run.source.await;
            old_run.trigger.set_config(t.clone());
            running.insert(t.name.clone(), self.start_trigger(old_run.trigger));
            change.restarted.push(t.name.clone());
        }
        drop(running);
        let used: HashSet<String> = config.module_names().into_iter().collect();
        for name in self.registry.names() {
            if !used.contains(&name) {
                self.registry.remove(&name);
            }
        }
        let previous = self.config();
        let restart_needed = previous.engine.restart_only_differences(&config.engine);
        if !restart_needed.is_empty() {
            tracing::warn!(
                settings = ?restart_needed,
                "engine settings changed; they take effect at the next restart"
            );
        }
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        self.evict_cache();
        change
    }

    /// Reload and module-cache counters.
    fn reload_snapshot(&self) -> ReloadSnapshot {
        let r = &self.reload;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let cache = self.runtime.cache().map(|c| &c.stats);
        ReloadSnapshot {
            config_reloads: get(&r.config_reloads),
            config_rejections: get(&r.config_rejections),
            module_reloads: get(&r.module_reloads),
            module_rejections: get(&r.module_rejections),
            cache_hits: cache.map(|c| get(&c.hits)).unwrap_or(0),
            cache_misses: cache.map(|c| get(&c.misses)).unwrap_or(0),
            cache_discarded: cache.map(|c| get(&c.discarded)).unwrap_or(0),
        }
    }

    /// Keeps the compiled-module cache within its bound.
    pub fn evict_cache(&self) {
        if let Some(cache) = self.runtime.cache() {
            let in_use: HashSet<String> = self
                .registry
                .list()
                .iter()
                .map(|m| m.digest.clone())
                .collect();
            cache.evict(&in_use);
        }
    }
}

/// One trigger as the API shows it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerView {
    /// Name.
    pub name: String,
    /// Source type.
    pub source: String,
    /// `running`.
    pub state: String,
    /// Triggers that run when this one succeeds.
    pub on_success: Vec<String>,
    /// Triggers that run when this one fails.
    pub on_failure: Vec<String>,
    /// Counts and last outcomes from the run history.
    #[serde(flatten)]
    pub summary: TriggerSummary,
}

/// Engine-wide values for `/metrics`, read at scrape time.
fn readings(shared: &std::sync::Weak<Shared>) -> EngineReadings {
    let Some(shared) = shared.upgrade() else {
        return EngineReadings::default();
    };
    let submitter = shared.submitter();
    EngineReadings {
        ready: true,
        queue_depth: submitter.queue_depth() as u64,
        queue_capacity: submitter.queue_capacity() as u64,
        modules_loaded: shared.registry.list().len() as u64,
        triggers: shared
            .running
            .try_lock()
            .map(|r| r.len() as u64)
            .unwrap_or_default(),
        reload: shared.reload_snapshot(),
        capabilities: shared.services.stats.snapshot(),
    }
}

/// Equal triggers need no action; the file they came from does not matter.
fn same_trigger(a: &TriggerConfig, b: &TriggerConfig) -> bool {
    a.source == b.source
        && a.filter == b.filter
        && a.action == b.action
        && a.description == b.description
}

/// Queues again the events a previous process accepted but did not finish
/// (waiting for queue room, so a long journal never overflows the queue).
async fn replay_journal(shared: Arc<Shared>, entries: Vec<JournalEntry>) {
    tracing::warn!(
        events = entries.len(),
        "replaying events accepted before the last stop that did not finish"
    );
    let submitter = shared.submitter().clone();
    for entry in entries {
        let trigger = shared.trigger(&entry.trigger).await;
        let event_id = entry.event.id.clone();
        match trigger {
            Some(trigger) => {
                if submitter.replay(&trigger, entry).await.is_err() {
                    return; // stopping: the rest stays journaled for the next start
                }
            }
            None => {
                tracing::error!(
                    trigger = %entry.trigger,
                    event_id,
                    "journaled event dropped: its trigger no longer exists"
                );
                submitter.forget(&event_id);
            }
        }
    }
}

/// A started engine.
pub struct Engine {
    shared: Arc<Shared>,
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
        let history = RunStore::open(state.clone(), config.engine.history)?;
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
        let shared = Arc::new(Shared {
            runtime,
            services: services.clone(),
            registry,
            state,
            history,
            reload: ReloadStats::default(),
            sources: SourceContext {
                submitter: dispatcher.submitter(),
                runs: runs_tx,
                services: services.clone(),
                kube,
                leading,
            },
            stop_sources: CancellationToken::new(),
            objects: Mutex::new(Vec::new()),
            running: Mutex::new(BTreeMap::new()),
            config: std::sync::Mutex::new(Arc::new(Config {
                triggers: Vec::new(),
                ..config.clone()
            })),
        });
        let change = shared.apply(config, modules).await;
        if !replay.is_empty() {
            tokio::spawn(replay_journal(shared.clone(), replay));
        }
        let weak = Arc::downgrade(&shared);
        metrics.set_readings(move || readings(&weak));
        if let Some((_, server_state)) = &server {
            server_state.attach(shared.clone());
            server_state.set_ready(true);
        }
        let objects = options.trigger_objects.clone().map(|scope| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(crate::kube::sync::run(shared.clone(), scope, stop.clone()));
            (stop, task)
        });
        let reloader = options.reload.map(|reload| {
            let stop = CancellationToken::new();
            let task = tokio::spawn(crate::reload::run(shared.clone(), reload, stop.clone()));
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
            shared,
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
        &self.shared.history
    }

    /// What `wasmtrigger triggers` shows.
    pub async fn trigger_views(&self) -> Result<Vec<TriggerView>, String> {
        self.shared.trigger_views().await
    }

    /// The running triggers, by name.
    pub async fn triggers(&self) -> Vec<Arc<Trigger>> {
        let running = self.shared.running.lock().await;
        running.values().map(|r| r.trigger.clone()).collect()
    }

    /// Hands events to the dispatcher directly (embedding, benchmarks).
    pub fn submitter(&self) -> &Submitter {
        self.shared.submitter()
    }

    /// The module versions serving.
    pub fn modules(&self) -> &Arc<ModuleRegistry> {
        &self.shared.registry
    }

    /// The config currently applied.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    /// Dispatch counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.dispatcher.stats().snapshot()
    }

    /// Capability call and denial counters.
    pub fn capability_stats(&self) -> CapabilitySnapshot {
        self.shared.services.stats.snapshot()
    }

    /// Reload and module-cache counters.
    pub fn reload_stats(&self) -> ReloadSnapshot {
        self.shared.reload_snapshot()
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
        self.shared.stop_sources.cancel();
        let running = std::mem::take(&mut *self.shared.running.lock().await);
        for (_, r) in running {
            let _ = r.source.await;
        }
        // Sources have stopped: now the lease may go to another replica.
        if let Some((stop, task)) = self.election {
            stop.cancel();
            let _ = task.await;
        }
        let stats = self.dispatcher.stats().clone();
        let journal = self.shared.submitter().journal().cloned();
        // The journal holds the store weakly; keep it open until the last
        // removals are written, or a finished event would replay on restart.
        let state = self.shared.state.clone();
        drop(self.shared);
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
