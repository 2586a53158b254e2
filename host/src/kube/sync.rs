//! Triggers from `Trigger` objects: watches them (in one namespace or all),
//! validates each exactly as a trigger in a file, runs the valid ones next to
//! the files' triggers, and writes each object's `status` — Ready or Invalid
//! with the validation message, last run and result, counts, module version.
//! Every replica runs the triggers (their schedules and watches still run on
//! the leader only); the leader writes the status.
//!
//! Objects are trusted less than files: each must stay inside the file
//! config's `engine.triggerObjects` policy ([`crate::config::policy`]), and
//! one that does not is refused with an `Invalid` status naming the rule.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher::{self, Event as WatchEvent};
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::capabilities::secrets::SecretStore;
use crate::config::{self, Config, TriggerConfig};
use crate::kube::crd::{Trigger, TriggerCondition, TriggerStatus};
use crate::runs::{RunRecord, RunStatus};
use crate::trigger_set::{TriggerSet, compose};

/// Which Trigger objects the engine takes triggers from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TriggerObjects {
    /// Those in one namespace; trigger names are the objects' names.
    Namespace(String),
    /// Those in every namespace; trigger names are `<namespace>.<name>`.
    All,
}

/// How often everything is re-validated even without changes (a file trigger
/// may have taken an object's name, or a module may have appeared).
const RESYNC: Duration = Duration::from_secs(15);
/// How often run results are written to status, at most.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// One Trigger object as last seen.
#[derive(Clone)]
struct Object {
    namespace: String,
    name: String,
    generation: Option<i64>,
    spec: crate::kube::crd::TriggerSpec,
    status: TriggerStatus,
}

impl Object {
    fn trigger_name(&self, scope: &TriggerObjects) -> String {
        match scope {
            TriggerObjects::Namespace(_) => self.name.clone(),
            TriggerObjects::All => format!("{}.{}", self.namespace, self.name),
        }
    }

    fn origin(&self) -> PathBuf {
        PathBuf::from(format!("Trigger {}/{}", self.namespace, self.name))
    }
}

/// What the sync works on.
pub struct SyncContext {
    /// The live triggers (Trigger objects are one of their inputs).
    pub triggers: Arc<TriggerSet>,
    /// Where secrets come from (an object's webhook key is checked, its secrets preloaded).
    pub secrets: SecretStore,
}

/// Runs until `stop`: the watch, the reconciling and the status writer.
pub async fn run(shared: SyncContext, scope: TriggerObjects, stop: CancellationToken) {
    let client = match shared.triggers.sources().kube.client().await {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "Trigger objects: no Kubernetes connection");
            return;
        }
    };
    let api: Api<Trigger> = match &scope {
        TriggerObjects::Namespace(ns) => Api::namespaced(client.clone(), ns),
        TriggerObjects::All => Api::all(client.clone()),
    };
    let mut runs = shared.triggers.sources().runs.subscribe();
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    let mut objects: BTreeMap<(String, String), Object> = BTreeMap::new();
    let mut initial: Option<BTreeMap<(String, String), Object>> = None;
    let mut dirty_status: HashSet<(String, String)> = HashSet::new();
    let mut resync = tokio::time::interval(RESYNC);
    let mut flush = tokio::time::interval(STATUS_EVERY);
    let mut pending = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                // The counts made since the last write are not lost on a stop.
                let writing = writer(&shared);
                for key in dirty_status.drain().filter(|_| writing) {
                    if let Some(o) = objects.get(&key) {
                        write_status(&client, o).await;
                    }
                }
                break;
            }
            event = events.next() => match event {
                None => break,
                Some(Err(e)) => tracing::warn!(error = %e, "Trigger objects: watch error; retrying"),
                Some(Ok(event)) => {
                    match event {
                        WatchEvent::Init => initial = Some(BTreeMap::new()),
                        WatchEvent::InitApply(t) => {
                            if let (Some(list), Some(o)) = (initial.as_mut(), object(t)) {
                                list.insert((o.namespace.clone(), o.name.clone()), o);
                            }
                        }
                        WatchEvent::InitDone => {
                            let mut fresh = initial.take().unwrap_or_default();
                            if writer(&shared) {
                                keep_own_status(&objects, &mut fresh);
                            }
                            objects = fresh;
                            pending = true;
                        }
                        WatchEvent::Apply(t) => {
                            if let Some(mut o) = object(t) {
                                let key = (o.namespace.clone(), o.name.clone());
                                let changed = match objects.get(&key) {
                                    Some(old) => {
                                        // The writer keeps its own status: the echo of an
                                        // older write must not undo counts made since. A
                                        // follower takes the leader's, so that it goes on
                                        // from there if it leads one day.
                                        if writer(&shared) {
                                            o.status = old.status.clone();
                                        }
                                        old.generation != o.generation || old.generation.is_none()
                                    }
                                    None => true,
                                };
                                objects.insert(key, o);
                                pending |= changed;
                            }
                        }
                        WatchEvent::Delete(t) => {
                            if let Some(o) = object(t) {
                                objects.remove(&(o.namespace, o.name));
                                pending = true;
                            }
                        }
                    }
                }
            },
            run = runs.recv() => match run {
                Ok(record) => {
                    if let Some(key) = count_run(&mut objects, &scope, &record) {
                        dirty_status.insert(key);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "Trigger objects: status missed some runs");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = resync.tick() => pending = true,
            _ = flush.tick() => {
                // Every replica runs the objects' triggers; only the leader
                // (or the only replica) writes their status.
                if !writer(&shared) {
                    dirty_status.clear();
                }
                if pending {
                    pending = false;
                    let verdicts = reconcile(&shared, &scope, &objects).await;
                    shared.triggers.set_object_problems(
                        verdicts
                            .iter()
                            .filter_map(|((namespace, name), verdict)| {
                                let message = verdict.as_ref().err()?;
                                Some(crate::trigger_set::Problem {
                                    trigger: Some(name.clone()),
                                    origin: format!("Trigger {namespace}/{name}"),
                                    message: message.clone(),
                                })
                            })
                            .collect(),
                    );
                    for (key, verdict) in verdicts {
                        if let Some(o) = objects.get_mut(&key)
                            && set_condition(&mut o.status, o.generation, verdict)
                        {
                            dirty_status.insert(key);
                        }
                    }
                }
                for key in dirty_status.drain() {
                    if let Some(o) = objects.get(&key) {
                        write_status(&client, o).await;
                    }
                }
            }
        }
    }
}

/// Whether this replica writes status: the leader, or the only replica.
fn writer(shared: &SyncContext) -> bool {
    shared
        .triggers
        .sources()
        .leading
        .as_ref()
        .is_none_or(|l| *l.borrow())
}

/// After a relist, objects already known keep the status this engine keeps.
fn keep_own_status(
    known: &BTreeMap<(String, String), Object>,
    fresh: &mut BTreeMap<(String, String), Object>,
) {
    for (key, o) in fresh.iter_mut() {
        if let Some(old) = known.get(key) {
            o.status = old.status.clone();
        }
    }
}

fn object(t: Trigger) -> Option<Object> {
    Some(Object {
        namespace: t.metadata.namespace.clone()?,
        name: t.metadata.name.clone()?,
        generation: t.metadata.generation,
        spec: t.spec,
        status: t.status.unwrap_or_default(),
    })
}

/// Adds a finished run to its object's status; the object's key if it was one.
fn count_run(
    objects: &mut BTreeMap<(String, String), Object>,
    scope: &TriggerObjects,
    run: &RunRecord,
) -> Option<(String, String)> {
    let (key, o) = objects
        .iter_mut()
        .find(|(_, o)| o.trigger_name(scope) == run.trigger)?;
    let s = &mut o.status;
    s.last_run_time = Some(run.finished_at.clone());
    s.last_result = Some(run.status.as_str().to_string());
    match run.status {
        RunStatus::Succeeded => {
            s.success_count += 1;
            s.last_success = Some(run.finished_at.clone());
        }
        RunStatus::Failed => {
            s.failure_count += 1;
            s.last_failure = Some(run.finished_at.clone());
        }
        RunStatus::Filtered => {}
    }
    if run.module.is_some() {
        s.module_version = run.module.clone();
    }
    Some(key.clone())
}

/// Validates every object against the current files' triggers, applies the
/// valid ones, and returns each object's verdict (Ok, or the problems).
async fn reconcile(
    shared: &SyncContext,
    scope: &TriggerObjects,
    objects: &BTreeMap<(String, String), Object>,
) -> Vec<((String, String), Result<(), String>)> {
    let mut inputs = shared.triggers.inputs().await;
    let current = shared.triggers.config();
    let files_config = inputs.files();
    let files = &files_config.triggers;
    let file_names: HashMap<&str, &PathBuf> =
        files.iter().map(|t| (t.name.as_str(), &t.file)).collect();

    let mut verdicts: BTreeMap<(String, String), Result<(), String>> = BTreeMap::new();
    let mut candidates: Vec<((String, String), TriggerConfig)> = Vec::new();
    for (key, o) in objects {
        let name = o.trigger_name(scope);
        if let Some(file) = file_names.get(name.as_str()) {
            let why = format!(
                "a trigger named `{name}` is already defined in {}",
                file.display()
            );
            verdicts.insert(key.clone(), Err(why));
            continue;
        }
        let entry = crate::kube::crd::as_config_entry(&name, &o.spec);
        match config::load_trigger(&entry, &o.origin(), &current) {
            Ok(trigger) => {
                // An object gets only what the operator's policy allows.
                let mut problems = current.engine.trigger_objects.violations(&trigger);
                if problems.is_empty() {
                    let one = std::slice::from_ref(&trigger);
                    problems = crate::capabilities::secrets::webhook_key_problems(
                        one,
                        &shared.secrets,
                        false,
                    )
                    .await;
                    crate::capabilities::secrets::preload_secrets(one, &shared.secrets).await;
                }
                if problems.is_empty() {
                    candidates.push((key.clone(), trigger));
                } else {
                    verdicts.insert(key.clone(), Err(messages(&problems)));
                }
            }
            Err(errors) => {
                verdicts.insert(key.clone(), Err(messages(&errors)));
            }
        }
    }
    // Chains and modules are checked on the whole set; a problem that belongs
    // to an object takes that object out, and the rest is checked again.
    let (config, modules) = loop {
        let objects: Vec<TriggerConfig> = candidates.iter().map(|(_, t)| t.clone()).collect();
        let config = compose(&files_config, &objects);
        let mut problems = config::chain_errors(&config.triggers);
        let (modules, load_errors) = if problems.is_empty() {
            // The files' modules are loaded already (and reloaded by the
            // reloader); only the objects' need loading here.
            let objects_only = Config {
                triggers: candidates.iter().map(|(_, t)| t.clone()).collect(),
                ..(*current).clone()
            };
            crate::runtime::load_for_config(shared.triggers.runtime(), &objects_only).await
        } else {
            (Vec::new(), Vec::new())
        };
        problems.extend(load_errors);
        if problems.is_empty() {
            break (config, modules);
        }
        let before = candidates.len();
        candidates.retain(|(key, t)| {
            let mine: Vec<_> = problems
                .iter()
                .filter(|p| p.trigger.as_deref() == Some(t.name.as_str()))
                .cloned()
                .collect();
            if mine.is_empty() {
                return true;
            }
            verdicts.insert(key.clone(), Err(messages(&mine)));
            false
        });
        if candidates.len() == before {
            // The files' own triggers have the problem: leave everything as it is.
            tracing::error!(problems = %messages(&problems), "Trigger objects: cannot apply; the previous triggers keep running");
            return verdicts.into_iter().collect();
        }
    };
    for (key, _) in &candidates {
        verdicts.insert(key.clone(), Ok(()));
    }
    let change = shared.triggers.apply(config, modules).await;
    if !change.is_empty() {
        change.log("Trigger objects applied");
    }
    inputs.set_objects(candidates.into_iter().map(|(_, t)| t).collect());
    verdicts.into_iter().collect()
}

fn messages(errors: &[crate::config::ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Sets Ready/Invalid for a verdict; true if anything changed.
fn set_condition(
    status: &mut TriggerStatus,
    generation: Option<i64>,
    verdict: Result<(), String>,
) -> bool {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (state, ready, invalid) = match &verdict {
        Ok(()) => (
            "Ready",
            ("True", "Running", "the trigger runs".to_string()),
            ("False", "Valid", String::new()),
        ),
        Err(why) => (
            "Invalid",
            ("False", "Invalid", "the trigger was rejected".to_string()),
            ("True", "ValidationFailed", why.clone()),
        ),
    };
    let mut changed =
        status.state.as_deref() != Some(state) || status.observed_generation != generation;
    status.state = Some(state.to_string());
    status.observed_generation = generation;
    for (type_, (value, reason, message)) in [("Ready", ready), ("Invalid", invalid)] {
        let existing = status.conditions.iter_mut().find(|c| c.type_ == type_);
        match existing {
            Some(c) if c.status == value && c.reason == reason && c.message == message => {}
            Some(c) => {
                if c.status != value {
                    c.last_transition_time = now.clone();
                }
                c.status = value.to_string();
                c.reason = reason.to_string();
                c.message = message;
                changed = true;
            }
            None => {
                status.conditions.push(TriggerCondition {
                    type_: type_.to_string(),
                    status: value.to_string(),
                    reason: reason.to_string(),
                    message,
                    last_transition_time: now.clone(),
                });
                changed = true;
            }
        }
    }
    changed
}

async fn write_status(client: &kube::Client, o: &Object) {
    let api: Api<Trigger> = Api::namespaced(client.clone(), &o.namespace);
    let patch = json!({"status": o.status});
    if let Err(e) = api
        .patch_status(&o.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(trigger = %o.name, namespace = %o.namespace, error = %e, "Trigger objects: cannot write status");
    }
}
