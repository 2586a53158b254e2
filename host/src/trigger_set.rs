//! The live triggers: which run, with which config and module versions, and
//! one source task each.
//!
//! Triggers come from two inputs — the config files and Trigger objects —
//! and [`compose`] is the one place they meet: the files' triggers, then the
//! objects' whose names no file uses. An input changes the set only while it
//! holds [`TriggerSet::inputs`], so a file reload and an object change take
//! turns. [`TriggerSet::apply`] makes a composed config the running one.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{Mutex, MutexGuard};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Outcome, SourceConfig, TriggerConfig};
use crate::dispatch::Submitter;
use crate::runs::store::{RunStore, TriggerSummary};
use crate::runtime::{LoadedModule, ModuleRegistry, Runtime};
use crate::sources::SourceContext;
use crate::state::StateStore;
use crate::trigger::Trigger;

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
            target: "wasmtrigger::engine",
            added = ?self.added,
            removed = ?self.removed,
            updated = ?self.updated,
            restarted = ?self.restarted,
            "{message}"
        );
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
    /// Where its events run: `this replica`, `the leader` (a singleton
    /// source under leader election), or `every replica via STREAM`
    /// (`engine.distribute`).
    #[serde(default)]
    pub runs_on: String,
    /// Triggers that run when this one succeeds.
    pub on_success: Vec<String>,
    /// Triggers that run when this one fails.
    pub on_failure: Vec<String>,
    /// Counts and last outcomes from the run history.
    #[serde(flatten)]
    pub summary: TriggerSummary,
}

/// A trigger (or a config change) that could not be applied, and why: the
/// previous version keeps running, or, for a new trigger, nothing does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// The trigger it is about, when it names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Where it came from: `files`, or `Trigger NAMESPACE/NAME`.
    pub origin: String,
    /// What is wrong, as `check` words it.
    pub message: String,
}

/// The composed config: the files' triggers, then each object trigger whose
/// name no file trigger uses (a file wins a name).
pub fn compose(files: &Config, objects: &[TriggerConfig]) -> Config {
    let in_files: HashSet<&str> = files.triggers.iter().map(|t| t.name.as_str()).collect();
    let mut config = files.clone();
    config.triggers.extend(
        objects
            .iter()
            .filter(|t| !in_files.contains(t.name.as_str()))
            .cloned(),
    );
    config
}

/// The live triggers.
pub struct TriggerSet {
    registry: Arc<ModuleRegistry>,
    runtime: Arc<Runtime>,
    state: Arc<StateStore>,
    sources: SourceContext,
    stop_sources: CancellationToken,
    running: Mutex<BTreeMap<String, RunningTrigger>>,
    config: std::sync::Mutex<Arc<Config>>,
    /// The triggers applied from Trigger objects (the second input).
    objects: Mutex<Vec<TriggerConfig>>,
    /// What the last config change and the last object reconcile could not apply.
    problems: std::sync::Mutex<(Vec<Problem>, Vec<Problem>)>,
}

/// The inputs, held: while a driver holds them no other input changes the set.
pub struct Inputs<'a> {
    objects: MutexGuard<'a, Vec<TriggerConfig>>,
    set: &'a TriggerSet,
}

impl Inputs<'_> {
    /// The triggers applied from Trigger objects.
    pub fn objects(&self) -> &[TriggerConfig] {
        &self.objects
    }

    /// The running config without the objects' triggers: the files' part.
    pub fn files(&self) -> Config {
        let objects: HashSet<&str> = self.objects.iter().map(|t| t.name.as_str()).collect();
        let mut config = (*self.set.config()).clone();
        config
            .triggers
            .retain(|t| !objects.contains(t.name.as_str()));
        config
    }

    /// Records which object triggers are now applied.
    pub fn set_objects(&mut self, objects: Vec<TriggerConfig>) {
        *self.objects = objects;
    }
}

impl TriggerSet {
    /// An empty set running `config`'s engine settings; triggers start with [`TriggerSet::apply`].
    pub fn new(
        config: &Config,
        registry: Arc<ModuleRegistry>,
        runtime: Arc<Runtime>,
        state: Arc<StateStore>,
        sources: SourceContext,
    ) -> Arc<Self> {
        Arc::new(TriggerSet {
            registry,
            runtime,
            state,
            sources,
            stop_sources: CancellationToken::new(),
            running: Mutex::new(BTreeMap::new()),
            config: std::sync::Mutex::new(Arc::new(Config {
                triggers: Vec::new(),
                ..config.clone()
            })),
            objects: Mutex::new(Vec::new()),
            problems: std::sync::Mutex::default(),
        })
    }

    /// Notes what the config files' last change could not apply (empty: it applied).
    pub fn set_file_problems(&self, problems: Vec<Problem>) {
        self.problems.lock().unwrap_or_else(|p| p.into_inner()).0 = problems;
    }

    /// Notes which Trigger objects are invalid, and why.
    pub fn set_object_problems(&self, problems: Vec<Problem>) {
        self.problems.lock().unwrap_or_else(|p| p.into_inner()).1 = problems;
    }

    /// What could not be applied: the files' problems, then the objects'.
    pub fn problems(&self) -> Vec<Problem> {
        let problems = self.problems.lock().unwrap_or_else(|p| p.into_inner());
        problems.0.iter().chain(&problems.1).cloned().collect()
    }

    /// The config currently applied.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Holds the inputs until the guard is dropped.
    pub async fn inputs(&self) -> Inputs<'_> {
        Inputs {
            objects: self.objects.lock().await,
            set: self,
        }
    }

    /// The running trigger with this name.
    pub async fn trigger(&self, name: &str) -> Option<Arc<Trigger>> {
        self.running
            .lock()
            .await
            .get(name)
            .map(|r| r.trigger.clone())
    }

    /// Every running trigger.
    pub async fn triggers(&self) -> Vec<Arc<Trigger>> {
        let running = self.running.lock().await;
        running.values().map(|r| r.trigger.clone()).collect()
    }

    /// How many triggers run, if that can be told without waiting.
    pub fn running_now(&self) -> Option<usize> {
        self.running.try_lock().map(|r| r.len()).ok()
    }

    /// Hands events to the dispatcher.
    pub fn submitter(&self) -> &Submitter {
        &self.sources.submitter
    }

    /// What sources share: the submitter, finished runs, services, Kubernetes, leadership.
    pub fn sources(&self) -> &SourceContext {
        &self.sources
    }

    /// The module versions serving.
    pub fn registry(&self) -> &Arc<ModuleRegistry> {
        &self.registry
    }

    /// The wasm runtime the modules are compiled for.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// What `wasmtrigger triggers` shows: each trigger with its history and successors.
    pub async fn views(&self, history: &Arc<RunStore>) -> Result<Vec<TriggerView>, String> {
        let store = history.clone();
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
                    runs_on: self.runs_on(c),
                    on_success: successors(&c.name, Outcome::Success),
                    on_failure: successors(&c.name, Outcome::Failure),
                    summary,
                }
            })
            .collect())
    }

    /// Where a trigger's events run (see [`TriggerView::runs_on`]).
    fn runs_on(&self, config: &TriggerConfig) -> String {
        let sources = self.sources();
        if !crate::sources::is_singleton(&config.source) {
            return "this replica".into();
        }
        match (&sources.distributor, &sources.leading) {
            (Some(d), _) => format!("every replica via {}", d.stream_name(&config.name)),
            (None, Some(_)) => "the leader".into(),
            (None, None) => "this replica".into(),
        }
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
                target: "wasmtrigger::engine",
                settings = ?restart_needed,
                "engine settings changed; they take effect at the next restart"
            );
        }
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        self.evict_cache();
        change
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

    /// Stops every source and waits for each to end (accepted runs go on).
    pub async fn stop_sources(&self) {
        self.stop_sources.cancel();
        let running = std::mem::take(&mut *self.running.lock().await);
        for (_, r) in running {
            let _ = r.source.await;
        }
    }
}

/// Equal triggers need no action; the file they came from does not matter.
fn same_trigger(a: &TriggerConfig, b: &TriggerConfig) -> bool {
    a.source == b.source
        && a.filter == b.filter
        && a.action == b.action
        && a.ordering == b.ordering
        && a.description == b.description
        && a.dry_run == b.dry_run
        && a.shadow == b.shadow
}
