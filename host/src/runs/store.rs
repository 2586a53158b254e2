//! Stored run history in the engine's redb state store, queried by the API.
//!
//! redb rather than SQLite: it is already the state store (one file, one
//! dependency, no C toolchain), it is crash-safe, and the few queries needed —
//! newest first, by trigger, by status, since a time — are served by a
//! time-ordered primary key (UUIDv7 run ids) and a per-trigger index.
//!
//! Records are written by a background task in batches (one commit per batch),
//! so recording never waits for a disk sync on the event path. Retention keeps
//! at most `max_per_trigger` records per trigger and none older than `max_age`.
//!
//! The same commit removes the journal entries of the events those records
//! end ([`crate::runs::journal`]): a crash leaves either the record without the
//! entry, or the entry (replayed at the next start) without the record, never
//! an event with neither.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::modules::{ModuleStore, versions_in};
use super::{RunRecord, RunSink, RunStatus};
use crate::state::{StateError, StateStore};

use super::index::{Indexes, Keys, RUNS};

/// trigger -> summary (JSON).
const SUMMARIES: TableDefinition<&str, &[u8]> = TableDefinition::new("trigger_summaries");
/// module version -> stored records that name it ([`super::modules`]).
const MODULE_REFS: TableDefinition<&str, u64> = TableDefinition::new("module_refs");

/// Most records one commit takes.
const BATCH: usize = 512;

/// How long stored records may go without an fsync of their own. Batches in
/// between are committed without one: a crash loses such a commit whole —
/// records and journal removals together, so those events are replayed — and
/// any later fsync'd commit (every journal append is one) persists it.
const DURABLE_EVERY: Duration = Duration::from_secs(1);

/// Commits nothing, durably: persists the commits made without an fsync.
async fn sync(store: &Arc<RunStore>) -> bool {
    let store = store.clone();
    let synced = tokio::task::spawn_blocking(move || -> Result<(), StateError> {
        let tx = store.state.db().begin_write()?;
        tx.commit()?;
        Ok(())
    })
    .await;
    match synced {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot sync stored run records");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot sync stored run records");
            false
        }
    }
}

pub use crate::config::Retention;

/// What the history says about one trigger (survives retention and restarts).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSummary {
    /// Runs recorded in total.
    pub runs: u64,
    /// Runs that succeeded.
    pub successes: u64,
    /// Runs that failed.
    pub failures: u64,
    /// Runs the filter dropped.
    pub filtered: u64,
    /// When the last successful run finished.
    pub last_success: Option<String>,
    /// When the last failed run finished.
    pub last_failure: Option<String>,
    /// The last failure's error.
    pub last_error: Option<String>,
}

/// A history query; every field narrows the result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunQuery {
    /// Only this trigger.
    pub trigger: Option<String>,
    /// Only this status.
    pub status: Option<RunStatus>,
    /// Only runs started at or after this RFC 3339 time.
    pub since: Option<String>,
    /// Only runs of this event.
    #[serde(default)]
    pub event: Option<String>,
    /// Only runs that started before this run (its id), for paging.
    #[serde(default)]
    pub before: Option<String>,
    /// At most this many (newest first).
    pub limit: Option<usize>,
}

/// The run history.
pub struct RunStore {
    state: Arc<StateStore>,
    retention: Retention,
    /// The recorded module versions, dropped with the last record naming them.
    modules: Option<ModuleStore>,
}

/// The versions a stored record (JSON) holds a reference to: those of a
/// recorded run (records from before recordings, or with recording off, keep
/// no module and hold none).
fn versions_of_stored(json: &[u8]) -> Vec<String> {
    #[derive(Deserialize)]
    struct Names {
        filter: Option<String>,
        module: Option<String>,
        recording: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_slice::<Names>(json)
        .ok()
        .filter(|n| n.recording.is_some())
        .map(|n| versions_in(n.filter.as_deref(), n.module.as_deref()))
        .unwrap_or_default()
}

/// Adds `delta` to each version's count; returns the versions that reached zero.
fn count_refs(
    refs: &mut redb::Table<&str, u64>,
    versions: &[String],
    delta: i64,
) -> Result<Vec<String>, StateError> {
    let mut gone = Vec::new();
    for version in versions {
        let now = refs.get(version.as_str())?.map(|v| v.value()).unwrap_or(0);
        let next = now.saturating_add_signed(delta);
        if next == 0 {
            refs.remove(version.as_str())?;
            gone.push(version.clone());
        } else {
            refs.insert(version.as_str(), next)?;
        }
    }
    Ok(gone)
}

impl RunStore {
    /// Opens the history inside the state store.
    pub fn open(state: Arc<StateStore>, retention: Retention) -> Result<Arc<Self>, StateError> {
        Self::open_with_modules(state, retention, None)
    }

    /// Opens the history, dropping recorded module versions from `modules`
    /// with the last record that names them.
    pub fn open_with_modules(
        state: Arc<StateStore>,
        retention: Retention,
        modules: Option<ModuleStore>,
    ) -> Result<Arc<Self>, StateError> {
        let tx = state.db().begin_write()?;
        {
            let runs = tx.open_table(RUNS)?;
            Indexes::open(&tx)?.build_if_missing(&runs)?;
        }
        tx.open_table(SUMMARIES)?;
        tx.open_table(MODULE_REFS)?;
        tx.commit()?;
        Ok(Arc::new(RunStore {
            state,
            retention,
            modules,
        }))
    }

    /// Starts the background writer; records sent to the sink are stored in batches.
    pub fn start_writer(self: &Arc<Self>) -> (Arc<HistorySink>, JoinHandle<()>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Ending>();
        let store = self.clone();
        let task = tokio::spawn(async move {
            let mut sweep = tokio::time::interval(Duration::from_secs(60));
            let mut settle = tokio::time::interval(DURABLE_EVERY);
            let mut last_durable = std::time::Instant::now();
            // Commits made without an fsync, and whether they removed journal entries.
            let (mut unsynced, mut removals_unsynced) = (false, false);
            loop {
                tokio::select! {
                    first = rx.recv() => {
                        let Some(first) = first else { break };
                        let mut batch = vec![first];
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                        let durable = last_durable.elapsed() >= DURABLE_EVERY;
                        let removes = batch.iter().any(|e| e.journal_key.is_some());
                        let store = store.clone();
                        let written = tokio::task::spawn_blocking(move || store.write_ending(&batch, durable)).await;
                        match written.map_err(|e| StateError::Storage(e.to_string())) {
                            Ok(Ok(())) if durable => {
                                if removes || removals_unsynced {
                                    crate::failpoint::hit("history-after-durable-commit");
                                }
                                last_durable = std::time::Instant::now();
                                (unsynced, removals_unsynced) = (false, false);
                            }
                            Ok(Ok(())) => {
                                unsynced = true;
                                removals_unsynced |= removes;
                            }
                            Ok(Err(e)) | Err(e) => tracing::error!(error = %e, "cannot store run records"),
                        }
                    }
                    _ = settle.tick(), if unsynced => {
                        if sync(&store).await {
                            if removals_unsynced {
                                crate::failpoint::hit("history-after-durable-commit");
                            }
                            last_durable = std::time::Instant::now();
                            (unsynced, removals_unsynced) = (false, false);
                        }
                    }
                    _ = sweep.tick() => {
                        let store = store.clone();
                        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.expire_old()).await {
                            tracing::error!(error = %e, "cannot apply run history retention");
                        }
                    }
                }
            }
            if unsynced {
                sync(&store).await;
            }
        });
        (Arc::new(HistorySink { tx }), task)
    }

    /// Stores records, updates summaries and applies count retention.
    pub fn write(&self, records: &[RunRecord]) -> Result<(), StateError> {
        let batch: Vec<Ending> = records
            .iter()
            .map(|r| Ending {
                record: r.clone(),
                journal_key: None,
            })
            .collect();
        self.write_ending(&batch, true)
    }

    /// Stores records and, in the same transaction, removes the journal
    /// entries of the events they end. A batch that is not `durable` is
    /// committed without an fsync (see [`DURABLE_EVERY`]).
    fn write_ending(&self, batch: &[Ending], durable: bool) -> Result<(), StateError> {
        let mut tx = self.state.db().begin_write()?;
        if !durable {
            tx.set_durability(redb::Durability::None)
                .map_err(|e| StateError::Storage(e.to_string()))?;
        }
        let keys: Vec<&str> = batch
            .iter()
            .filter_map(|e| e.journal_key.as_deref())
            .collect();
        if !keys.is_empty() {
            crate::runs::journal::remove_entries(&tx, &keys)?;
        }
        let records = batch.iter().map(|e| &e.record);
        let mut gone = Vec::new();
        {
            let mut runs = tx.open_table(RUNS)?;
            let mut indexes = Indexes::open(&tx)?;
            let mut summaries = tx.open_table(SUMMARIES)?;
            let mut refs = tx.open_table(MODULE_REFS)?;
            let mut touched: BTreeMap<&str, ()> = BTreeMap::new();
            for r in records {
                let json = serde_json::to_vec(r).map_err(|e| StateError::Storage(e.to_string()))?;
                runs.insert(r.run_id.as_str(), json.as_slice())?;
                if r.recording.is_some() {
                    let versions = versions_in(r.filter.as_deref(), r.module.as_deref());
                    count_refs(&mut refs, &versions, 1)?;
                }
                indexes.add(r)?;
                let mut summary: TriggerSummary = summaries
                    .get(r.trigger.as_str())?
                    .and_then(|v| serde_json::from_slice(v.value()).ok())
                    .unwrap_or_default();
                summary.runs += 1;
                match r.status {
                    RunStatus::Succeeded => {
                        summary.successes += 1;
                        summary.last_success = Some(r.finished_at.clone());
                    }
                    RunStatus::Failed => {
                        summary.failures += 1;
                        summary.last_failure = Some(r.finished_at.clone());
                        summary.last_error = r.error.clone();
                    }
                    RunStatus::Filtered => summary.filtered += 1,
                }
                let json =
                    serde_json::to_vec(&summary).map_err(|e| StateError::Storage(e.to_string()))?;
                summaries.insert(r.trigger.as_str(), json.as_slice())?;
                touched.insert(r.trigger.as_str(), ());
            }
            // Count retention: the oldest over the cap go, found without listing the rest.
            for trigger in touched.keys() {
                let stored = usize::try_from(indexes.count(trigger)?).unwrap_or(usize::MAX);
                let excess = stored.saturating_sub(self.retention.max_per_trigger);
                for id in indexes.oldest(trigger, excess)? {
                    let Some(removed) = runs.remove(id.as_str())? else {
                        continue;
                    };
                    if let Some(keys) = Keys::of_stored(removed.value()) {
                        indexes.remove(&keys)?;
                    }
                    let versions = versions_of_stored(removed.value());
                    drop(removed);
                    gone.extend(count_refs(&mut refs, &versions, -1)?);
                }
            }
        }
        if !keys.is_empty() {
            crate::failpoint::hit("history-before-commit");
        }
        tx.commit()?;
        if let Some(modules) = &self.modules {
            modules.forget(&gone);
        }
        Ok(())
    }

    /// Deletes records older than the retention age.
    pub fn expire_old(&self) -> Result<usize, StateError> {
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(self.retention.max_age).unwrap_or_default();
        // UUIDv7 ids start with the millisecond timestamp: every id below this one is older.
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            cutoff.timestamp().max(0) as u64,
            cutoff.timestamp_subsec_nanos(),
        );
        let cutoff_id = uuid::Uuid::new_v7(ts).to_string();
        let tx = self.state.db().begin_write()?;
        let mut gone = Vec::new();
        let removed = {
            let mut runs = tx.open_table(RUNS)?;
            let mut indexes = Indexes::open(&tx)?;
            let mut refs = tx.open_table(MODULE_REFS)?;
            let old: Vec<(String, Option<Keys>, Vec<String>)> = runs
                .range(..cutoff_id.as_str())?
                .filter_map(|e| e.ok())
                .map(|(k, v)| {
                    (
                        k.value().to_string(),
                        Keys::of_stored(v.value()),
                        versions_of_stored(v.value()),
                    )
                })
                .collect();
            for (id, keys, versions) in &old {
                runs.remove(id.as_str())?;
                if let Some(keys) = keys {
                    indexes.remove(keys)?;
                }
                gone.extend(count_refs(&mut refs, versions, -1)?);
            }
            old.len()
        };
        tx.commit()?;
        if let Some(modules) = &self.modules {
            modules.forget(&gone);
            let read = self.state.db().begin_read()?;
            let refs = read.open_table(MODULE_REFS)?;
            modules.sweep(|version| refs.get(version).ok().flatten().is_some());
        }
        Ok(removed)
    }

    /// Records matching the query, newest start first ([`super::index::query`]).
    pub fn list(&self, query: &RunQuery) -> Result<Vec<RunRecord>, StateError> {
        super::index::query(&self.state.db().begin_read()?, query)
    }

    /// One record by run id.
    pub fn get(&self, run_id: &str) -> Result<Option<RunRecord>, StateError> {
        let tx = self.state.db().begin_read()?;
        let runs = tx.open_table(RUNS)?;
        Ok(runs
            .get(run_id)?
            .and_then(|v| serde_json::from_slice(v.value()).ok()))
    }

    /// Summaries of every trigger that has run.
    pub fn summaries(&self) -> Result<HashMap<String, TriggerSummary>, StateError> {
        let tx = self.state.db().begin_read()?;
        let table = tx.open_table(SUMMARIES)?;
        let mut out = HashMap::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            if let Ok(summary) = serde_json::from_slice(v.value()) {
                out.insert(k.value().to_string(), summary);
            }
        }
        Ok(out)
    }

    /// Number of stored records.
    pub fn len(&self) -> Result<u64, StateError> {
        let tx = self.state.db().begin_read()?;
        Ok(tx.open_table(RUNS)?.len()?)
    }

    /// Whether no record is stored.
    pub fn is_empty(&self) -> Result<bool, StateError> {
        Ok(self.len()? == 0)
    }
}

/// A record on its way to the store, with the journal entry it ends.
struct Ending {
    record: RunRecord,
    journal_key: Option<String>,
}

/// The run sink that feeds the history writer.
pub struct HistorySink {
    tx: mpsc::UnboundedSender<Ending>,
}

impl RunSink for HistorySink {
    fn record(&self, run: &RunRecord) {
        let _ = self.tx.send(Ending {
            record: run.clone(),
            journal_key: None,
        });
    }

    fn record_and_complete(&self, run: &RunRecord, journal_key: &str) -> bool {
        self.tx
            .send(Ending {
                record: run.clone(),
                journal_key: Some(journal_key.to_string()),
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::KvLimits;

    fn record(trigger: &str, status: RunStatus, started: &str) -> RunRecord {
        RunRecord {
            run_id: uuid::Uuid::now_v7().to_string(),
            event_id: uuid::Uuid::now_v7().to_string(),
            trigger: trigger.into(),
            source: "schedule".into(),
            kind: "tick".into(),
            status,
            attempts: Vec::new(),
            accepted_at: started.into(),
            started_at: started.into(),
            finished_at: started.into(),
            queued_ms: 0,
            duration_ms: 1,
            filter: None,
            module: None,
            output: None,
            error: (status == RunStatus::Failed).then(|| "boom".into()),
            reason: None,
            upstream: None,
            delivery: 1,
            replayed: false,
            redrive_of: None,
            dry_run: false,
            recording: None,
        }
    }

    #[test]
    fn queries_by_trigger_status_and_time_newest_first() {
        let state = StateStore::in_memory(KvLimits::default()).unwrap();
        let store = RunStore::open(state, Retention::default()).unwrap();
        let rs = vec![
            record("a", RunStatus::Succeeded, "2026-11-22T10:00:00.000Z"),
            record("b", RunStatus::Failed, "2026-11-22T10:01:00.000Z"),
            record("a", RunStatus::Failed, "2026-11-22T10:02:00.000Z"),
            record("a", RunStatus::Succeeded, "2026-11-22T10:03:00.000Z"),
        ];
        store.write(&rs).unwrap();
        let a = store
            .list(&RunQuery {
                trigger: Some("a".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            a.iter().map(|r| r.started_at.as_str()).collect::<Vec<_>>()[0],
            "2026-11-22T10:03:00.000Z"
        );
        assert_eq!(a.len(), 3);
        let failed = store
            .list(&RunQuery {
                status: Some(RunStatus::Failed),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(failed.len(), 2);
        let recent = store
            .list(&RunQuery {
                since: Some("2026-11-22T10:01:30.000Z".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(recent.len(), 2);
        let one = store
            .list(&RunQuery {
                limit: Some(1),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(one[0].run_id, rs[3].run_id);
        let none = store
            .list(&RunQuery {
                limit: Some(0),
                ..Default::default()
            })
            .unwrap();
        assert!(none.is_empty(), "limit 0 means none");
        let by_event = store
            .list(&RunQuery {
                event: Some(rs[2].event_id.clone()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(by_event.len(), 1);
        assert_eq!(by_event[0].run_id, rs[2].run_id);
        assert_eq!(store.get(&rs[1].run_id).unwrap().unwrap().trigger, "b");
        let summaries = store.summaries().unwrap();
        assert_eq!((summaries["a"].successes, summaries["a"].failures), (2, 1));
        assert_eq!(summaries["b"].last_error.as_deref(), Some("boom"));
    }

    #[test]
    fn newest_first_means_newest_start_even_when_written_later() {
        let state = StateStore::in_memory(KvLimits::default()).unwrap();
        let store = RunStore::open(state, Retention::default()).unwrap();
        // A long run that started first ends (and is written) last.
        let mut short = record("a", RunStatus::Succeeded, "2026-11-22T10:00:05.000Z");
        let mut long = record("a", RunStatus::Succeeded, "2026-11-22T10:00:01.000Z");
        for r in [&mut short, &mut long] {
            r.run_id = crate::runs::run_id_at(&r.started_at);
        }
        store.write(std::slice::from_ref(&short)).unwrap();
        store.write(std::slice::from_ref(&long)).unwrap();
        let listed = store.list(&RunQuery::default()).unwrap();
        let order: Vec<&str> = listed.iter().map(|r| r.started_at.as_str()).collect();
        assert_eq!(
            order,
            ["2026-11-22T10:00:05.000Z", "2026-11-22T10:00:01.000Z"]
        );
    }

    #[test]
    fn retention_by_count_and_age() {
        let state = StateStore::in_memory(KvLimits::default()).unwrap();
        let store = RunStore::open(
            state,
            Retention {
                max_age: Duration::from_secs(3600),
                max_per_trigger: 3,
                ..Retention::default()
            },
        )
        .unwrap();
        for _ in 0..5 {
            store
                .write(&[record(
                    "a",
                    RunStatus::Succeeded,
                    "2026-11-22T10:00:00.000Z",
                )])
                .unwrap();
        }
        store
            .write(&[record(
                "b",
                RunStatus::Succeeded,
                "2026-11-22T10:00:00.000Z",
            )])
            .unwrap();
        assert_eq!(
            store
                .list(&RunQuery {
                    trigger: Some("a".into()),
                    ..Default::default()
                })
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            store.summaries().unwrap()["a"].runs,
            5,
            "summaries outlive retention"
        );
        // An id from two hours ago is past the one-hour age.
        let mut old = record("b", RunStatus::Failed, "2026-11-22T08:00:00.000Z");
        let ts = uuid::Timestamp::from_unix(
            uuid::NoContext,
            (chrono::Utc::now().timestamp() - 7200) as u64,
            0,
        );
        old.run_id = uuid::Uuid::new_v7(ts).to_string();
        store.write(&[old]).unwrap();
        assert_eq!(store.len().unwrap(), 5);
        assert_eq!(store.expire_old().unwrap(), 1);
        assert_eq!(store.len().unwrap(), 4);
    }
}
