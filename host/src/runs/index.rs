//! The run history's secondary indexes, so that the pages people look at
//! most never scan the history, however much of it is kept:
//!
//! - `(trigger, run id)`: a trigger's runs, newest first, and its oldest for
//!   count retention;
//! - `(trigger, status, run id)`: a trigger's failed (or succeeded, or
//!   filtered) runs;
//! - `(event id, run id)`: the runs of one event;
//! - `trigger -> count`: how many records a trigger has, so count retention
//!   removes the excess without listing the rest.
//!
//! Run ids are UUIDv7 stamped with the run's start, so key order is start
//! order in every index. Indexes are kept in the same transaction as the
//! records; a history written before an index existed gets it built once,
//! when the store opens.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::store::RunQuery;
use serde::Deserialize;

use super::{RunRecord, RunStatus};
use crate::state::StateError;

/// run id -> record (JSON).
pub(super) const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
/// (trigger, run id) -> ().
pub(super) const BY_TRIGGER: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("runs_by_trigger");
/// (trigger, status, run id) -> ().
pub(super) const BY_STATUS: TableDefinition<(&str, &str, &str), ()> =
    TableDefinition::new("runs_by_status");
/// (event id, run id) -> ().
pub(super) const BY_EVENT: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("runs_by_event");
/// trigger -> records stored.
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("runs_per_trigger");

/// The highest string key, for "to the end" ranges.
pub(super) const END: &str = "\u{10ffff}";

/// What the indexes need of a stored record.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Keys {
    /// Run id.
    #[serde(alias = "run_id")]
    pub run_id: String,
    /// Trigger.
    pub trigger: String,
    /// Status.
    pub status: RunStatus,
    /// Event id.
    #[serde(alias = "event_id")]
    pub event_id: String,
}

impl Keys {
    /// The keys of a stored record (JSON).
    pub(super) fn of_stored(json: &[u8]) -> Option<Keys> {
        serde_json::from_slice(json).ok()
    }

    fn of(record: &RunRecord) -> Keys {
        Keys {
            run_id: record.run_id.clone(),
            trigger: record.trigger.clone(),
            status: record.status,
            event_id: record.event_id.clone(),
        }
    }
}

/// `succeeded`, `failed`, `filtered`: a status as index keys hold it.
pub(super) fn status_key(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Succeeded => "succeeded",
        RunStatus::Failed => "failed",
        RunStatus::Filtered => "filtered",
    }
}

/// The indexes, open for writing in one transaction.
pub(super) struct Indexes<'tx> {
    by_trigger: redb::Table<'tx, (&'static str, &'static str), ()>,
    by_status: redb::Table<'tx, (&'static str, &'static str, &'static str), ()>,
    by_event: redb::Table<'tx, (&'static str, &'static str), ()>,
    counts: redb::Table<'tx, &'static str, u64>,
}

impl<'tx> Indexes<'tx> {
    /// Opens (creating) every index in `tx`.
    pub(super) fn open(tx: &'tx WriteTransaction) -> Result<Self, StateError> {
        Ok(Indexes {
            by_trigger: tx.open_table(BY_TRIGGER)?,
            by_status: tx.open_table(BY_STATUS)?,
            by_event: tx.open_table(BY_EVENT)?,
            counts: tx.open_table(COUNTS)?,
        })
    }

    /// Indexes a new record.
    pub(super) fn add(&mut self, record: &RunRecord) -> Result<(), StateError> {
        self.add_keys(&Keys::of(record))
    }

    fn add_keys(&mut self, k: &Keys) -> Result<(), StateError> {
        let new = self
            .by_trigger
            .insert((k.trigger.as_str(), k.run_id.as_str()), ())?
            .is_none();
        let status = status_key(k.status);
        self.by_status
            .insert((k.trigger.as_str(), status, k.run_id.as_str()), ())?;
        self.by_event
            .insert((k.event_id.as_str(), k.run_id.as_str()), ())?;
        if new {
            let n = self.count(&k.trigger)?;
            self.counts.insert(k.trigger.as_str(), n + 1)?;
        }
        Ok(())
    }

    /// Unindexes a removed record.
    pub(super) fn remove(&mut self, k: &Keys) -> Result<(), StateError> {
        let was = self
            .by_trigger
            .remove((k.trigger.as_str(), k.run_id.as_str()))?
            .is_some();
        self.by_status
            .remove((k.trigger.as_str(), status_key(k.status), k.run_id.as_str()))?;
        self.by_event
            .remove((k.event_id.as_str(), k.run_id.as_str()))?;
        if was {
            let n = self.count(&k.trigger)?.saturating_sub(1);
            self.counts.insert(k.trigger.as_str(), n)?;
        }
        Ok(())
    }

    /// How many records `trigger` has.
    pub(super) fn count(&self, trigger: &str) -> Result<u64, StateError> {
        Ok(self.counts.get(trigger)?.map(|v| v.value()).unwrap_or(0))
    }

    /// The ids of `trigger`'s `n` oldest records.
    pub(super) fn oldest(&self, trigger: &str, n: usize) -> Result<Vec<String>, StateError> {
        self.by_trigger
            .range((trigger, "")..=(trigger, END))?
            .take(n)
            .map(|e| e.map(|(k, _)| k.value().1.to_string()).map_err(Into::into))
            .collect()
    }

    /// Builds the indexes a history written before them lacks: once, when
    /// records exist but the status index is empty.
    pub(super) fn build_if_missing(
        &mut self,
        runs: &redb::Table<'tx, &'static str, &'static [u8]>,
    ) -> Result<(), StateError> {
        if runs.len()? == 0 || self.by_status.len()? > 0 {
            return Ok(());
        }
        let mut counted = std::collections::BTreeMap::<String, u64>::new();
        for entry in runs.iter()? {
            let (_, v) = entry?;
            if let Some(k) = Keys::of_stored(v.value()) {
                self.by_trigger
                    .insert((k.trigger.as_str(), k.run_id.as_str()), ())?;
                self.by_status.insert(
                    (k.trigger.as_str(), status_key(k.status), k.run_id.as_str()),
                    (),
                )?;
                self.by_event
                    .insert((k.event_id.as_str(), k.run_id.as_str()), ())?;
                *counted.entry(k.trigger).or_default() += 1;
            }
        }
        for (trigger, n) in counted {
            self.counts.insert(trigger.as_str(), n)?;
        }
        Ok(())
    }
}

/// Records matching the query, newest start first (run ids are UUIDv7
/// stamped with the start time, so key order is start order). An event
/// id, or a trigger with a status, is looked up in its index; `before`
/// and `since` bound the range, so a page costs its own records.
pub(super) fn query(
    tx: &redb::ReadTransaction,
    query: &RunQuery,
) -> Result<Vec<RunRecord>, StateError> {
    let runs = tx.open_table(RUNS)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let before = query.before.as_deref().unwrap_or(END);
    let keep = |r: &RunRecord| {
        query.status.is_none_or(|s| r.status == s)
            && query.event.as_deref().is_none_or(|e| r.event_id == e)
            && query.trigger.as_deref().is_none_or(|t| r.trigger == t)
    };
    let mut out = Vec::new();
    // false: stop (the page is full, or the rest started before `since`).
    let mut take = |id: &str| -> Result<bool, StateError> {
        let Some(v) = runs.get(id)? else {
            return Ok(true);
        };
        let Ok(r) = serde_json::from_slice::<RunRecord>(v.value()) else {
            return Ok(true);
        };
        if query
            .since
            .as_deref()
            .is_some_and(|since| r.started_at.as_str() < since)
        {
            return Ok(false);
        }
        if keep(&r) {
            out.push(r);
        }
        Ok(out.len() < limit)
    };
    match (&query.event, &query.trigger, query.status) {
        (Some(event), _, _) => {
            let index = tx.open_table(BY_EVENT)?;
            for entry in index
                .range((event.as_str(), "")..(event.as_str(), before))?
                .rev()
            {
                if !take(entry?.0.value().1)? {
                    break;
                }
            }
        }
        (None, Some(trigger), Some(status)) => {
            let index = tx.open_table(BY_STATUS)?;
            let (t, s) = (trigger.as_str(), status_key(status));
            for entry in index.range((t, s, "")..(t, s, before))?.rev() {
                if !take(entry?.0.value().2)? {
                    break;
                }
            }
        }
        (None, Some(trigger), None) => {
            let index = tx.open_table(BY_TRIGGER)?;
            let t = trigger.as_str();
            for entry in index.range((t, "")..(t, before))?.rev() {
                if !take(entry?.0.value().1)? {
                    break;
                }
            }
        }
        (None, None, _) => {
            for entry in runs.range(..before)?.rev() {
                let (key, _) = entry?;
                if !take(key.value())? {
                    break;
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::store::{Retention, RunQuery, RunStore};
    use crate::state::{KvLimits, StateStore};

    fn run(trigger: &str, status: RunStatus, event: &str) -> RunRecord {
        let id = uuid::Uuid::now_v7().to_string();
        serde_json::from_value(serde_json::json!({
            "runId": id, "eventId": event, "trigger": trigger, "source": "s", "kind": "k",
            "status": status, "attempts": [], "acceptedAt": "2026-11-22T10:00:00.000Z",
            "startedAt": "2026-11-22T10:00:00.000Z", "finishedAt": "2026-11-22T10:00:00.000Z",
            "queuedMs": 0, "durationMs": 1, "delivery": 1
        }))
        .unwrap()
    }

    fn ids(store: &RunStore, query: RunQuery) -> Vec<String> {
        store
            .list(&query)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect()
    }

    #[test]
    fn pages_statuses_and_events_come_from_their_indexes_and_retention_keeps_them_true() {
        let state = StateStore::in_memory(KvLimits::default()).unwrap();
        let retention = Retention {
            max_per_trigger: 50,
            ..Retention::default()
        };
        let store = RunStore::open(state.clone(), retention).unwrap();
        let mut written = Vec::new();
        for i in 0..60 {
            let status = if i % 10 == 0 {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            };
            let r = run("t", status, &format!("e{i}"));
            written.push(r.clone());
            store.write(&[r]).unwrap();
        }
        store
            .write(&[run("other", RunStatus::Failed, "e5")])
            .unwrap();
        // Count retention kept the newest 50 of `t`.
        let kept: Vec<String> = written[10..]
            .iter()
            .rev()
            .map(|r| r.run_id.clone())
            .collect();
        let all = ids(
            &store,
            RunQuery {
                trigger: Some("t".into()),
                limit: Some(1000),
                ..Default::default()
            },
        );
        assert_eq!(all, kept);
        // Pages: 20, then the 20 before the last one shown, then the rest.
        let first = ids(
            &store,
            RunQuery {
                trigger: Some("t".into()),
                limit: Some(20),
                ..Default::default()
            },
        );
        let second = ids(
            &store,
            RunQuery {
                trigger: Some("t".into()),
                limit: Some(20),
                before: first.last().cloned(),
                ..Default::default()
            },
        );
        assert_eq!(
            [first.clone(), second.clone()].concat(),
            kept[..40].to_vec()
        );
        // Failures of `t`: the 5 kept (runs 10, 20, …, 50), none of the removed run 0.
        let failed = ids(
            &store,
            RunQuery {
                trigger: Some("t".into()),
                status: Some(RunStatus::Failed),
                ..Default::default()
            },
        );
        let expected: Vec<String> = [50, 40, 30, 20, 10]
            .iter()
            .map(|&i| written[i].run_id.clone())
            .collect();
        assert_eq!(failed, expected);
        // An event's runs, across triggers; one that retention removed is gone.
        let e5 = store
            .list(&RunQuery {
                event: Some("e5".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            e5.len(),
            1,
            "e5 of `t` was removed by retention; `other`'s remains"
        );
        assert_eq!(e5[0].trigger, "other");
        assert_eq!(
            ids(
                &store,
                RunQuery {
                    event: Some("e15".into()),
                    ..Default::default()
                }
            ),
            vec![written[15].run_id.clone()]
        );

        // A history from before these indexes gets them built when it opens.
        let tx = state.db().begin_write().unwrap();
        tx.delete_table(BY_STATUS).unwrap();
        tx.delete_table(BY_EVENT).unwrap();
        tx.delete_table(COUNTS).unwrap();
        tx.commit().unwrap();
        let reopened = RunStore::open(state, retention).unwrap();
        let failed_again = ids(
            &reopened,
            RunQuery {
                trigger: Some("t".into()),
                status: Some(RunStatus::Failed),
                ..Default::default()
            },
        );
        assert_eq!(failed_again, expected);
        reopened
            .write(&[run("t", RunStatus::Succeeded, "new")])
            .unwrap();
        let after = ids(
            &reopened,
            RunQuery {
                trigger: Some("t".into()),
                limit: Some(1000),
                ..Default::default()
            },
        );
        assert_eq!(after.len(), 50, "the rebuilt count keeps retention exact");
    }
}
