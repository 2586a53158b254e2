//! The embedded state store under `--state-dir`: per-trigger key/value state.
//!
//! Backed by redb: a pure-Rust, crash-safe (copy-on-write B-tree, fsync on
//! commit) single-file database, so the engine needs no server and builds
//! without a C toolchain. Every kv call is one transaction, which is what makes
//! `compare-and-swap` and `increment` atomic across concurrent runs.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// (trigger, key) -> value.
const KV: TableDefinition<(&str, &str), &str> = TableDefinition::new("kv");
/// trigger -> number of keys, kept in step with `KV` for the key-count cap.
const KV_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("kv_counts");
/// (scope, key) -> when it was marked: things the engine must do only once.
const ONCE: TableDefinition<(&str, &str), &str> = TableDefinition::new("once");

/// File name of the database inside the state directory.
pub const STATE_FILE: &str = "state.redb";

pub use crate::config::KvLimits;

/// Errors from the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The arguments break a rule (size caps, non-integer for increment).
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("state store: {0}")]
    Storage(String),
    /// Another process holds the database.
    #[error("state store {0} is in use by another wasmtrigger process")]
    Locked(String),
}

impl From<redb::Error> for StateError {
    fn from(e: redb::Error) -> Self {
        StateError::Storage(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StateError {
            fn from(e: $t) -> Self {
                StateError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Creates `dir` (and its parents) and makes it readable by its owner only.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Creates `path` if missing, and makes it readable and writable by its owner only.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

/// The process's state database.
pub struct StateStore {
    db: Database,
    limits: KvLimits,
}

impl StateStore {
    /// Opens (or creates) the store in `dir`. The directory is made 0700
    /// and the database file 0600: kv values and run records are the
    /// engine's and its guests' business, not other local users'.
    pub fn open(dir: &Path, limits: KvLimits) -> Result<Arc<Self>, StateError> {
        private_dir(dir)
            .map_err(|e| StateError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let path = dir.join(STATE_FILE);
        private_file(&path)
            .map_err(|e| StateError::Storage(format!("cannot create {}: {e}", path.display())))?;
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StateError::Locked(path.display().to_string())
            }
            other => StateError::Storage(format!("{}: {other}", path.display())),
        })?;
        Self::init(db, limits)
    }

    /// A store that lives in memory only (for `invoke` without `--state-dir`, and tests).
    pub fn in_memory(limits: KvLimits) -> Result<Arc<Self>, StateError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StateError::Storage(e.to_string()))?;
        Self::init(db, limits)
    }

    fn init(db: Database, limits: KvLimits) -> Result<Arc<Self>, StateError> {
        let tx = db.begin_write()?;
        tx.open_table(KV)?;
        tx.open_table(KV_COUNTS)?;
        tx.open_table(ONCE)?;
        tx.commit()?;
        Ok(Arc::new(StateStore { db, limits }))
    }

    /// The database, for other stores that keep their tables in the same file.
    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    /// Marks `(scope, key)` as done; returns true only for the first call ever
    /// (across restarts), so a caller can do something exactly once.
    pub fn mark_once(&self, scope: &str, key: &str) -> Result<bool, StateError> {
        let tx = self.db.begin_write()?;
        let first = {
            let mut table = tx.open_table(ONCE)?;
            if table.get((scope, key))?.is_some() {
                false
            } else {
                table.insert((scope, key), crate::event::now_rfc3339().as_str())?;
                true
            }
        };
        tx.commit()?;
        Ok(first)
    }

    /// Whether `(scope, key)` was marked.
    pub fn is_marked(&self, scope: &str, key: &str) -> Result<bool, StateError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(ONCE)?.get((scope, key))?.is_some())
    }

    /// The kv namespace of one trigger.
    pub fn kv(self: &Arc<Self>, trigger: &str) -> KvNamespace {
        KvNamespace {
            store: self.clone(),
            trigger: trigger.into(),
        }
    }
}

/// One trigger's view of the kv table. Calls block: run them off the async executor.
#[derive(Clone)]
pub struct KvNamespace {
    store: Arc<StateStore>,
    trigger: Arc<str>,
}

impl KvNamespace {
    fn check_key(&self, key: &str) -> Result<(), StateError> {
        let max = self.store.limits.max_key_bytes;
        if key.is_empty() || key.len() > max {
            return Err(StateError::Invalid(format!(
                "key must be 1 to {max} bytes, got {}",
                key.len()
            )));
        }
        Ok(())
    }

    fn check_value(&self, value: &str) -> Result<(), StateError> {
        let max = self.store.limits.max_value_bytes;
        if value.len() > max {
            return Err(StateError::Invalid(format!(
                "value of {} bytes exceeds the {max}-byte limit",
                value.len()
            )));
        }
        Ok(())
    }

    /// Reads a value.
    pub fn get(&self, key: &str) -> Result<Option<String>, StateError> {
        self.check_key(key)?;
        let tx = self.store.db.begin_read()?;
        let table = tx.open_table(KV)?;
        Ok(table
            .get((&*self.trigger, key))?
            .map(|v| v.value().to_string()))
    }

    /// Writes a value.
    pub fn set(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.update(key, |_| Ok((Some(value.to_string()), ())))
    }

    /// Deletes a key; returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool, StateError> {
        self.update(key, |old| Ok((None, old.is_some())))
    }

    /// Keys starting with `prefix`, in byte order.
    pub fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StateError> {
        let tx = self.store.db.begin_read()?;
        let table = tx.open_table(KV)?;
        let mut keys = Vec::new();
        for entry in table.range((&*self.trigger, prefix)..)? {
            let (k, _) = entry?;
            let (trigger, key) = k.value();
            if trigger != &*self.trigger || !key.starts_with(prefix) {
                break;
            }
            keys.push(key.to_string());
        }
        Ok(keys)
    }

    /// Sets `key` to `new` if its value is `expected`; returns whether it did.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: Option<&str>,
    ) -> Result<bool, StateError> {
        self.update(key, |old| {
            if old.as_deref() == expected {
                Ok((new.map(str::to_string), true))
            } else {
                Ok((old, false))
            }
        })
    }

    /// Adds `delta` to an integer value (absent = 0) and returns the result.
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, StateError> {
        self.update(key, |old| {
            let current = match old.as_deref() {
                None => 0,
                Some(text) => text.trim().parse::<i64>().map_err(|_| {
                    StateError::Invalid(format!("value of `{key}` is not an integer"))
                })?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| StateError::Invalid(format!("`{key}` would overflow")))?;
            Ok((Some(next.to_string()), next))
        })
    }

    /// Runs a read-modify-write of one key in a single write transaction.
    /// `change` gets the old value and returns the new one (None = delete) and a result.
    fn update<R>(
        &self,
        key: &str,
        change: impl FnOnce(Option<String>) -> Result<(Option<String>, R), StateError>,
    ) -> Result<R, StateError> {
        self.check_key(key)?;
        let tx = self.store.db.begin_write()?;
        let result = {
            let mut table = tx.open_table(KV)?;
            let mut counts = tx.open_table(KV_COUNTS)?;
            let id = (&*self.trigger, key);
            let old = table.get(id)?.map(|v| v.value().to_string());
            let existed = old.is_some();
            let (new, result) = change(old)?;
            let count = counts.get(&*self.trigger)?.map(|v| v.value()).unwrap_or(0);
            match new {
                Some(value) => {
                    self.check_value(&value)?;
                    if !existed {
                        let max = self.store.limits.max_keys;
                        if count >= max {
                            return Err(StateError::Invalid(format!(
                                "trigger already holds the maximum of {max} keys"
                            )));
                        }
                        counts.insert(&*self.trigger, count + 1)?;
                    }
                    table.insert(id, value.as_str())?;
                }
                None if existed => {
                    table.remove(id)?;
                    counts.insert(&*self.trigger, count.saturating_sub(1))?;
                }
                None => {}
            }
            result
        };
        tx.commit()?;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Arc<StateStore> {
        StateStore::in_memory(KvLimits {
            max_key_bytes: 16,
            max_value_bytes: 8,
            max_keys: 2,
        })
        .unwrap()
    }

    #[test]
    fn namespaces_are_separate() {
        let s = store();
        s.kv("a").set("k", "1").unwrap();
        assert_eq!(s.kv("b").get("k").unwrap(), None);
        assert_eq!(s.kv("a").get("k").unwrap().as_deref(), Some("1"));
        s.kv("ab").set("k", "2").unwrap();
        assert_eq!(s.kv("a").list_keys("").unwrap(), vec!["k"]);
    }

    #[test]
    fn caps_are_enforced() {
        let s = store();
        let kv = s.kv("t");
        assert!(matches!(
            kv.set("k", "123456789"),
            Err(StateError::Invalid(_))
        ));
        kv.set("a", "1").unwrap();
        kv.set("b", "1").unwrap();
        assert!(matches!(kv.set("c", "1"), Err(StateError::Invalid(_))));
        kv.set("a", "2").unwrap(); // overwriting does not add a key
        assert!(kv.delete("a").unwrap());
        kv.set("c", "1").unwrap();
        assert!(matches!(kv.get(""), Err(StateError::Invalid(_))));
    }

    #[test]
    fn compare_and_swap_and_increment() {
        let s = store();
        let kv = s.kv("t");
        assert!(kv.compare_and_swap("k", None, Some("1")).unwrap());
        assert!(!kv.compare_and_swap("k", None, Some("2")).unwrap());
        assert!(kv.compare_and_swap("k", Some("1"), None).unwrap());
        assert_eq!(kv.get("k").unwrap(), None);
        assert_eq!(kv.increment("n", 5).unwrap(), 5);
        assert_eq!(kv.increment("n", -2).unwrap(), 3);
        kv.set("s", "x").unwrap();
        assert!(matches!(kv.increment("s", 1), Err(StateError::Invalid(_))));
    }

    #[test]
    fn mark_once_is_true_only_the_first_time() {
        let s = store();
        assert!(!s.is_marked("t", "k").unwrap());
        assert!(s.mark_once("t", "k").unwrap());
        assert!(!s.mark_once("t", "k").unwrap());
        assert!(s.is_marked("t", "k").unwrap());
        assert!(s.mark_once("u", "k").unwrap());
    }

    #[test]
    fn the_state_directory_and_its_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // An existing directory made by someone else's umask is tightened too.
        std::fs::create_dir_all(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _store = StateStore::open(&state, KvLimits::default()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(STATE_FILE)), 0o600);
    }

    #[test]
    fn values_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("wt-state-{}", uuid::Uuid::now_v7()));
        {
            let s = StateStore::open(&dir, KvLimits::default()).unwrap();
            s.kv("t").increment("runs", 1).unwrap();
            assert!(matches!(
                StateStore::open(&dir, KvLimits::default()),
                Err(StateError::Locked(_))
            ));
        }
        let s = StateStore::open(&dir, KvLimits::default()).unwrap();
        assert_eq!(s.kv("t").increment("runs", 1).unwrap(), 2);
        std::fs::remove_dir_all(&dir).ok();
    }
}
