//! The event journal: every event the engine accepts is written to the state
//! store before its source is told "accepted", and removed once its run has
//! ended. After a crash the engine replays what is left: at-least-once, with
//! each replayed run carrying the original event id, `replayed: true` and its
//! delivery number.
//!
//! Appends are group-committed: concurrent appends share one redb transaction
//! (one fsync), and each caller waits until its entry is durable.
//!
//! An entry is removed in the same transaction that stores its run's record
//! (the history writer calls [`remove_entries`]), so "record written" and
//! "entry removed" are one commit: after any crash an event either has its
//! record or is still here to be replayed. Only when no history store takes
//! the record does [`Journal::complete`] remove the entry on its own.

use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::event::Event;
use crate::runs::Upstream;
use crate::state::{StateError, StateStore};

const JOURNAL: TableDefinition<&str, &[u8]> = TableDefinition::new("journal");

/// Most operations folded into one transaction.
const BATCH: usize = 512;

/// One accepted event whose run has not ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    /// The trigger it was accepted for.
    pub trigger: String,
    /// The event, with its original id.
    pub event: Event,
    /// The upstream run, for a chained event.
    pub upstream: Option<Upstream>,
    /// How many times the event has been handed to a worker before (0 when
    /// first accepted; each replay after a restart adds one).
    #[serde(default)]
    pub deliveries: u32,
}

enum Op {
    /// Event id, the entry as JSON, and who waits for the commit.
    Append(String, Vec<u8>, oneshot::Sender<Result<(), String>>),
    Remove(String),
    /// Commits what came before and answers.
    Flush(oneshot::Sender<Result<(), String>>),
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    ops: mpsc::UnboundedSender<Op>,
}

impl Journal {
    /// Opens the journal in the state store and starts its writer task.
    pub fn open(state: Arc<StateStore>) -> Result<(Journal, Vec<JournalEntry>), StateError> {
        let pending = {
            let tx = state.db().begin_write()?;
            tx.open_table(JOURNAL)?;
            tx.commit()?;
            read_all(&state)?
        };
        let (ops, rx) = mpsc::unbounded_channel();
        // Weak: the journal must not keep the state store open after the engine stops.
        tokio::spawn(writer(Arc::downgrade(&state), rx));
        Ok((Journal { ops }, pending))
    }

    /// Writes an entry durably; returns once it is committed.
    pub async fn append(&self, entry: JournalEntry) -> Result<(), StateError> {
        let json = serde_json::to_vec(&entry).map_err(|e| StateError::Storage(e.to_string()))?;
        let (done, wait) = oneshot::channel();
        self.ops
            .send(Op::Append(entry.event.id, json, done))
            .map_err(|_| StateError::Storage("the journal writer has stopped".into()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StateError::Storage(e)),
            Err(_) => Err(StateError::Storage("the journal writer has stopped".into())),
        }
    }

    /// Waits until every earlier operation is committed (at shutdown).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.ops.send(Op::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Removes an event's entry (its run has ended); batched, not awaited.
    pub fn complete(&self, event_id: &str) {
        let _ = self.ops.send(Op::Remove(event_id.to_string()));
    }
}

/// Removes entries inside another store's write transaction (the history
/// writer's, so that a run's record and its entry's removal commit together).
pub(crate) fn remove_entries(tx: &redb::WriteTransaction, ids: &[&str]) -> Result<(), StateError> {
    let mut table = tx.open_table(JOURNAL)?;
    for id in ids {
        table.remove(*id)?;
    }
    Ok(())
}

fn read_all(state: &StateStore) -> Result<Vec<JournalEntry>, StateError> {
    let tx = state.db().begin_read()?;
    let table = tx.open_table(JOURNAL)?;
    let mut entries = Vec::new();
    for item in table.iter()? {
        let (key, value) = item?;
        match serde_json::from_slice::<JournalEntry>(value.value()) {
            Ok(entry) => entries.push(entry),
            Err(e) => tracing::error!(
                event_id = key.value(),
                error = %e,
                "unreadable journal entry skipped"
            ),
        }
    }
    Ok(entries)
}

/// Applies operations in batches until every handle is gone.
async fn writer(state: std::sync::Weak<StateStore>, mut rx: mpsc::UnboundedReceiver<Op>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let Some(store) = state.upgrade() else {
            tracing::error!(
                lost = batch.len(),
                "journal operations after the state store closed"
            );
            continue;
        };
        let outcome = tokio::task::spawn_blocking(move || {
            let result = write(&store, &batch).map_err(|e| e.to_string());
            (batch, result)
        })
        .await;
        let Ok((batch, result)) = outcome else {
            tracing::error!("journal writer task failed");
            continue;
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "cannot write the event journal");
        }
        for op in batch {
            if let Op::Append(_, _, done) | Op::Flush(done) = op {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn write(state: &StateStore, batch: &[Op]) -> Result<(), StateError> {
    let tx = state.db().begin_write()?;
    {
        let mut table = tx.open_table(JOURNAL)?;
        for op in batch {
            match op {
                Op::Append(id, json, _) => {
                    table.insert(id.as_str(), json.as_slice())?;
                }
                Op::Remove(id) => {
                    table.remove(id.as_str())?;
                }
                Op::Flush(_) => {}
            }
        }
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(trigger: &str) -> JournalEntry {
        JournalEntry {
            trigger: trigger.into(),
            event: Event::new(trigger, "webhook", "post", &serde_json::json!({"n": 1})),
            upstream: None,
            deliveries: 0,
        }
    }

    #[tokio::test]
    async fn entries_survive_a_reopen_until_completed() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (entry("a"), entry("b"));
        {
            let state = StateStore::open(dir.path(), Default::default()).unwrap();
            let (journal, pending) = Journal::open(state.clone()).unwrap();
            assert!(pending.is_empty());
            journal.append(a.clone()).await.unwrap();
            journal.append(b.clone()).await.unwrap();
            journal.complete(&a.event.id);
            // A later append is ordered after the removal, so once it is
            // durable the removal is too.
            let c = entry("c");
            journal.append(c.clone()).await.unwrap();
            journal.complete(&c.event.id);
            journal.append(entry("d")).await.unwrap();
            journal.flush().await;
        }
        // The writer holds the store only while it writes a batch.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let state = loop {
            match StateStore::open(dir.path(), Default::default()) {
                Ok(state) => break state,
                Err(StateError::Locked(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
        let (_journal, pending) = Journal::open(state.clone()).unwrap();
        let triggers: Vec<&str> = pending.iter().map(|e| e.trigger.as_str()).collect();
        assert_eq!(
            triggers,
            ["b", "d"],
            "in acceptance order, completed ones gone"
        );
        assert_eq!(pending[0], b);
    }
}
