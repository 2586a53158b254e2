//! `type: kube-watch`: changes to Kubernetes objects become events.
//!
//! The watch itself is shared (see `crate::kube`); this task keeps what its
//! trigger asked for — its event types, the initial list or not, updates
//! that are only status or bookkeeping noise or not — and submits the rest.
//!
//! Nothing a burst of changes brings is dropped:
//! - a full dispatch queue makes this task wait (the event is journaled
//!   first), which slows it, not the watch;
//! - if it falls more than the shared watch's buffer (4,096 changes) behind,
//!   it resyncs from the watch's cache: every object whose resourceVersion
//!   differs from the last this trigger saw becomes an `update` (or a
//!   `create`), and every object gone a `delete` carrying only its
//!   identity. Changes in between are coalesced to the latest state, as a
//!   Kubernetes controller sees them after a relist. Behind during the
//!   watch's first list (no later change seen yet), an unseen object counts
//!   as part of that list, so `initial: false` still fires nothing for it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;

use crate::config::{KubeEvent, KubeWatchConfig};
use crate::dispatch::Submitter;
use crate::distribute::Position;
use crate::event::Event;
use crate::kube::{CachedObject, KubeConnector, ObjectChange};
use crate::trigger::Trigger;

/// Most changes submitted together (one journal commit).
const BATCH: usize = 256;

/// Runs the source until `stop` is cancelled.
pub async fn run(
    trigger: Arc<Trigger>,
    config: KubeWatchConfig,
    submitter: Submitter,
    kube: Arc<KubeConnector>,
    stop: CancellationToken,
) {
    let (mut changes, snapshot) = loop {
        match kube.subscribe(&config).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::error!(trigger = %trigger.name, error = %e, "kube-watch: cannot watch; retrying in 10s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let out = Out {
        trigger: &trigger,
        submitter: &submitter,
    };
    // The resourceVersion this trigger last saw of each object, and whether
    // the watch's first list is behind it (a later change has come).
    let mut seen: HashMap<(String, String), String> = HashMap::new();
    let mut listed = false;
    if submitter.distributor().is_some() {
        // A distributing leader starts where the last one stood.
        drop(snapshot);
        let Some(start) = resume(&trigger, &config, &submitter, &kube, &stop).await else {
            return;
        };
        seen = start.0;
        listed = true;
        out.hand_over_resynced(&config, start.1).await;
        // The `watching` mark, even when nothing changed.
        submitter
            .submit_watched(&trigger, Vec::new(), Vec::new())
            .await;
    } else {
        let mut handled = Vec::new();
        for change in snapshot {
            handled.push(handle(&trigger, &config, &mut seen, &change));
        }
        out.hand_over(handled).await;
    }
    loop {
        let first = tokio::select! {
            c = changes.recv() => c,
            _ = stop.cancelled() => break,
        };
        // What else has arrived goes with it: one journal commit for all.
        let mut closed = false;
        let mut received = vec![first];
        while received.len() < BATCH {
            match changes.try_recv() {
                Ok(c) => received.push(Ok(c)),
                Err(TryRecvError::Lagged(n)) => received.push(Err(RecvError::Lagged(n))),
                Err(_) => break,
            }
        }
        let mut handled = Vec::new();
        for change in received {
            match change {
                Ok(change) => {
                    // Already sent by a resync: the same version of the same object.
                    let id = identity(&change.object);
                    if change.kind != KubeEvent::Delete
                        && seen.get(&id) == Some(&version(&change.object))
                    {
                        continue;
                    }
                    listed |= !change.initial;
                    handled.push(handle(&trigger, &config, &mut seen, &change));
                }
                Err(RecvError::Lagged(n)) => {
                    // Subscribe anew first: what changes after this is heard,
                    // what changed before is in the cache read next.
                    changes = changes.resubscribe();
                    let resynced = resync(&mut seen, kube.current(&config), !listed);
                    tracing::warn!(trigger = %trigger.name, missed = n, resynced = resynced.len(), "kube-watch: this trigger fell behind the watch; resynced from the watch cache");
                    out.hand_over(std::mem::take(&mut handled)).await;
                    out.hand_over_resynced(&config, resynced).await;
                    break;
                }
                Err(RecvError::Closed) => closed = true,
            }
        }
        out.hand_over(handled).await;
        if closed {
            return;
        }
    }
}

/// A change this trigger handled: its event, if it wants one, and where the
/// watch now stands on the object (what a distributing leader records).
type Handled = (Option<Event>, Position);

/// Notes a change in `seen` and makes its event, if the trigger wants it.
fn handle(
    trigger: &Trigger,
    config: &KubeWatchConfig,
    seen: &mut HashMap<(String, String), String>,
    change: &ObjectChange,
) -> Handled {
    note(seen, change);
    let id = identity(&change.object);
    let at = (change.kind != KubeEvent::Delete).then(|| version(&change.object));
    (event_for(trigger, config, change), (id, at))
}

/// Where handled changes go: the queue, or a distributing leader's stream.
struct Out<'a> {
    trigger: &'a Arc<Trigger>,
    submitter: &'a Submitter,
}

impl Out<'_> {
    /// Submits (or publishes) handled changes `BATCH` at a time; an object's
    /// position goes in the same batch as its event, never before it.
    async fn hand_over(&self, handled: Vec<Handled>) {
        let mut handled = handled.into_iter().peekable();
        while handled.peek().is_some() {
            let (events, positions): (Vec<Option<Event>>, Vec<Position>) =
                handled.by_ref().take(BATCH).unzip();
            let events: Vec<Event> = events.into_iter().flatten().collect();
            self.submitter
                .submit_watched(self.trigger, events, positions)
                .await;
        }
    }

    /// Hands over what a resync found, parsing only what the trigger wants,
    /// a batch at a time: a resync during the first list may cover every object.
    async fn hand_over_resynced(&self, config: &KubeWatchConfig, resynced: Vec<Resynced>) {
        let mut resynced = resynced.into_iter().peekable();
        while resynced.peek().is_some() {
            let handled: Vec<Handled> = resynced
                .by_ref()
                .take(BATCH)
                .map(|r| {
                    let event = wants(config, r.kind, r.initial)
                        .then(|| event_for(self.trigger, config, &r.change()))
                        .flatten();
                    let at = r.object.as_ref().map(|o| o.version.clone());
                    (event, (r.key.clone(), at))
                })
                .collect();
            self.hand_over(handled).await;
        }
    }
}

/// A distributing leader's start: once the shared watch has listed, the
/// objects are compared with the positions the last leader recorded (none:
/// no leader has listed yet, and the list is the first list). Returns the
/// positions to go on from and what changed meanwhile; None if stopped.
async fn resume(
    trigger: &Arc<Trigger>,
    config: &KubeWatchConfig,
    submitter: &Submitter,
    kube: &KubeConnector,
    stop: &CancellationToken,
) -> Option<(HashMap<(String, String), String>, Vec<Resynced>)> {
    let distributor = submitter.distributor()?;
    tokio::select! {
        _ = kube.wait_listed(config) => {}
        _ = stop.cancelled() => return None,
    }
    let recorded = loop {
        match distributor.positions(&trigger.name).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(trigger = %trigger.name, error = %e, "distribute: cannot read where the last leader stood; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return None,
                }
            }
        }
    };
    let first_list = recorded.is_none();
    let mut seen = recorded.unwrap_or_default();
    let resynced = resync(&mut seen, kube.current(config), first_list);
    tracing::info!(trigger = %trigger.name, changed = resynced.len(), first_list, "distribute: the watch resumes where the last leader stood");
    Some((seen, resynced))
}

fn identity(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    let part = |k: &str| meta[k].as_str().unwrap_or_default().to_string();
    (part("namespace"), part("name"))
}

fn version(object: &Value) -> String {
    object["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Remembers the version of the object a change is about.
fn note(seen: &mut HashMap<(String, String), String>, change: &ObjectChange) {
    let id = identity(&change.object);
    if change.kind == KubeEvent::Delete {
        seen.remove(&id);
    } else {
        seen.insert(id, version(&change.object));
    }
}

/// A change a resync found, its object not parsed yet.
struct Resynced {
    kind: KubeEvent,
    initial: bool,
    /// The cached object; None for a delete, which carries only its identity.
    object: Option<CachedObject>,
    key: (String, String),
}

impl Resynced {
    /// The change, with its object parsed.
    fn change(&self) -> ObjectChange {
        let object = match &self.object {
            Some(o) => o.value(),
            None => {
                let (namespace, name) = &self.key;
                let mut metadata = json!({ "name": name });
                if !namespace.is_empty() {
                    metadata["namespace"] = json!(namespace);
                }
                json!({ "metadata": metadata })
            }
        };
        ObjectChange {
            kind: self.kind,
            object,
            old: None,
            initial: self.initial,
        }
    }
}

/// The changes between what a trigger last saw and the watch's objects now,
/// found by resourceVersion without parsing any object; `initial`: the
/// trigger fell behind during the watch's first list, so an object it has
/// not seen is one of that list (reported as `initial`).
fn resync(
    seen: &mut HashMap<(String, String), String>,
    current: Vec<CachedObject>,
    initial: bool,
) -> Vec<Resynced> {
    let mut changes = Vec::new();
    let mut present = std::collections::HashSet::new();
    for object in current {
        let kind = match seen.get(&object.key) {
            None => Some(KubeEvent::Create),
            Some(v) if *v != object.version => Some(KubeEvent::Update),
            Some(_) => None,
        };
        present.insert(object.key.clone());
        if let Some(kind) = kind {
            seen.insert(object.key.clone(), object.version.clone());
            changes.push(Resynced {
                kind,
                initial: initial && kind == KubeEvent::Create,
                key: object.key.clone(),
                object: Some(object),
            });
        }
    }
    let gone: Vec<(String, String)> = seen
        .keys()
        .filter(|k| !present.contains(*k))
        .cloned()
        .collect();
    for key in gone {
        seen.remove(&key);
        changes.push(Resynced {
            kind: KubeEvent::Delete,
            initial: false,
            object: None,
            key,
        });
    }
    changes
}

/// Whether this trigger wants a change of `kind` (cheap: before any parsing).
fn wants(config: &KubeWatchConfig, kind: KubeEvent, initial: bool) -> bool {
    (config.initial || !initial) && config.events.contains(&kind)
}

/// The event a change makes for this trigger, if it wants it.
fn event_for(trigger: &Trigger, config: &KubeWatchConfig, change: &ObjectChange) -> Option<Event> {
    if !wants(config, change.kind, change.initial) {
        return None;
    }
    if config.skip_noise
        && change.kind == KubeEvent::Update
        && change
            .old
            .as_ref()
            .is_some_and(|old| substance(old) == substance(&change.object))
    {
        return None;
    }
    let mut data = json!({ "type": change.kind.name(), "object": change.object });
    if let Some(old) = &change.old
        && change.kind == KubeEvent::Update
    {
        data["oldObject"] = old.clone();
    }
    Some(Event::new(
        &trigger.name,
        "kube-watch",
        change.kind.name(),
        &data,
    ))
}

/// The object without what changes on every write or only reports state.
fn substance(object: &Value) -> Value {
    let mut o = object.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for noise in ["resourceVersion", "managedFields", "generation"] {
            meta.remove(noise);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_finds_what_changed_appeared_and_went_since_last_seen() {
        let obj = |name: &str, rv: &str| json!({"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv}});
        let mut seen = HashMap::new();
        for (name, rv) in [("same", "1"), ("changed", "2"), ("gone", "3")] {
            note(
                &mut seen,
                &ObjectChange {
                    kind: KubeEvent::Update,
                    object: obj(name, rv),
                    old: None,
                    initial: false,
                },
            );
        }
        let cached = |objects: Vec<Value>| objects.iter().map(CachedObject::of_value).collect();
        let now = || {
            cached(vec![
                obj("same", "1"),
                obj("changed", "9"),
                obj("new", "10"),
            ])
        };
        let changes: Vec<ObjectChange> = resync(&mut seen, now(), false)
            .iter()
            .map(Resynced::change)
            .collect();
        let mut found: Vec<(String, String)> = changes
            .iter()
            .map(|c| (c.kind.name().to_string(), identity(&c.object).1))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("create".into(), "new".into()),
                ("delete".into(), "gone".into()),
                ("update".into(), "changed".into())
            ]
        );
        assert!(changes.iter().all(|c| !c.initial));
        assert!(resync(&mut seen, now(), false).is_empty(), "nothing twice");
        // Behind during the first list: an unseen object is one of that list.
        let during_list = resync(&mut HashMap::new(), cached(vec![obj("listed", "1")]), true);
        assert!(during_list[0].initial && during_list[0].kind == KubeEvent::Create);
    }

    #[test]
    fn noise_is_status_and_bookkeeping_metadata() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1", "managedFields": []}, "spec": {"r": 1}, "status": {"ready": 0}});
        let status_only = json!({"metadata": {"name": "x", "resourceVersion": "2", "managedFields": [{}]}, "spec": {"r": 1}, "status": {"ready": 1}});
        let spec = json!({"metadata": {"name": "x", "resourceVersion": "3"}, "spec": {"r": 2}, "status": {"ready": 1}});
        let label = json!({"metadata": {"name": "x", "resourceVersion": "4", "labels": {"a": "b"}}, "spec": {"r": 1}});
        assert_eq!(substance(&a), substance(&status_only));
        assert_ne!(substance(&a), substance(&spec));
        assert_ne!(substance(&a), substance(&label));
    }
}
