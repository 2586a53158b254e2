//! On-disk cache of compiled components, so a restart loads machine code in
//! milliseconds instead of compiling (seconds for Python or JavaScript guests).
//!
//! An entry is keyed by the wasm's SHA-256 and by a fingerprint of this
//! wasmtime build and the engine settings that shape generated code. Its file
//! holds a magic, a SHA-256 of the payload, and the payload; an entry that is
//! truncated, corrupted or rejected by wasmtime is deleted and recompiled,
//! never executed. The cache is bounded; over the bound, entries no serving
//! module uses are evicted, least recently used first.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: &[u8; 8] = b"WTCACHE1";
const HEADER: usize = MAGIC.len() + 32;
const EXTENSION: &str = "cwasm";

/// Cache counters.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Components loaded from the cache.
    pub hits: AtomicU64,
    /// Components compiled because no valid entry existed.
    pub misses: AtomicU64,
    /// Entries found invalid and deleted.
    pub discarded: AtomicU64,
    /// Entries evicted for the size bound.
    pub evicted: AtomicU64,
}

/// The compiled-component cache in one directory.
pub struct ModuleCache {
    dir: PathBuf,
    engine_key: String,
    max_bytes: u64,
    /// Counters.
    pub stats: CacheStats,
}

impl ModuleCache {
    /// Opens (creating) the cache directory for this engine.
    pub fn open(dir: &Path, engine: &Engine, max_bytes: u64) -> std::io::Result<Self> {
        crate::state::private_dir(dir)?;
        // DefaultHasher may change between Rust releases: that only costs misses.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        // Our own version changes whenever the wasmtime dependency does.
        env!("CARGO_PKG_VERSION").hash(&mut hasher);
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ModuleCache {
            dir: dir.to_path_buf(),
            engine_key: format!("{:016x}", hasher.finish()),
            max_bytes,
            stats: CacheStats::default(),
        })
    }

    fn entry(&self, digest: &str) -> PathBuf {
        self.dir
            .join(format!("{digest}-{}.{EXTENSION}", self.engine_key))
    }

    /// Loads the compiled component for `digest`, if a valid entry exists.
    pub fn load(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry(digest);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(entry = %path.display(), error = %e, "cannot read a cache entry; recompiling");
                return None;
            }
        };
        let verified = bytes.len() >= HEADER
            && &bytes[..MAGIC.len()] == MAGIC
            && Sha256::digest(&bytes[HEADER..]).as_slice() == &bytes[MAGIC.len()..HEADER];
        if !verified {
            return self.discard(&path, "checksum mismatch (truncated or corrupted)");
        }
        // SAFETY: the payload is exactly what `serialize` produced for this
        // engine configuration (checked by the SHA-256 above, and wasmtime
        // checks its own header and engine compatibility before use).
        match unsafe { Component::deserialize(engine, &bytes[HEADER..]) } {
            Ok(component) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                // Touch for least-recently-used eviction.
                if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Some(component)
            }
            Err(e) => self.discard(&path, &format!("rejected by wasmtime: {e}")),
        }
    }

    fn discard(&self, path: &Path, why: &str) -> Option<Component> {
        self.stats.discarded.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(entry = %path.display(), reason = why, "discarding invalid cache entry; recompiling");
        let _ = std::fs::remove_file(path);
        None
    }

    /// Records a compile (a miss) and stores its result.
    pub fn store(&self, digest: &str, component: &Component) {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let payload = match component.serialize() {
            Ok(payload) => payload,
            Err(e) => {
                tracing::warn!(error = %e, "cannot serialize a compiled module; not caching it");
                return;
            }
        };
        let path = self.entry(digest);
        // Unique per writer: engines in one process may store the same module at once.
        let tmp = self
            .dir
            .join(format!(".{digest}.{}.tmp", uuid::Uuid::now_v7()));
        let written = (|| {
            let mut file = crate::state::private_file(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&Sha256::digest(&payload))?;
            file.write_all(&payload)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(entry = %path.display(), error = %e, "cannot write a cache entry");
        }
    }

    /// Evicts entries not in `in_use` (digests), oldest use first, until the
    /// cache fits its bound. Entries in use are never evicted.
    pub fn evict(&self, in_use: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf, bool)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let path = e.path();
                if path.extension().and_then(|x| x.to_str()) != Some(EXTENSION) {
                    return None;
                }
                let meta = e.metadata().ok()?;
                let name = path.file_name()?.to_str()?;
                let used = name.split('-').next().is_some_and(|d| in_use.contains(d));
                Some((meta.modified().ok()?, meta.len(), path, used))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort_by_key(|f| f.0);
        for (_, size, path, used) in files {
            if total <= self.max_bytes {
                break;
            }
            if used {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= size;
                self.stats.evicted.fetch_add(1, Ordering::Relaxed);
                tracing::info!(entry = %path.display(), "evicted from the module cache");
            }
        }
    }
}
