//! The module versions that recorded runs used, kept by content so that a
//! run can be looked at (and replayed) after its module file changed.
//!
//! - Every module the engine compiles while runs are recorded is written once
//!   to `<state-dir>/recorded-modules/<sha256>.wasm` (written to a temporary
//!   name and renamed, so a reader never sees half a file).
//! - The run history counts, per module version (the 12 hex digits of
//!   `name@version`), the stored records that name it, in the same commits
//!   that store and drop records ([`crate::runs::store`]).
//! - When retention drops the last record of a version, its file goes. A
//!   file no record names (a module loaded and never run) goes once it is
//!   older than [`UNUSED_GRACE`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long a kept module no record names stays (its first run may be on its way).
pub const UNUSED_GRACE: Duration = Duration::from_secs(3600);

/// Where recorded module versions live.
#[derive(Clone, Debug)]
pub struct ModuleStore {
    dir: PathBuf,
}

impl ModuleStore {
    /// The store under `state_dir`.
    pub fn under(state_dir: &Path) -> Self {
        ModuleStore {
            dir: state_dir.join("recorded-modules"),
        }
    }

    /// Keeps `bytes` under their SHA-256 (`digest`, lowercase hex) unless kept already.
    pub fn keep(&self, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.dir.join(format!("{digest}.wasm"));
        if path.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self
            .dir
            .join(format!(".{digest}.{}.tmp", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &path)
    }

    /// The file of a module version (`name@version` or the bare version), if kept.
    pub fn find(&self, label: &str) -> Option<PathBuf> {
        let version = version_of(label)?;
        self.files()
            .into_iter()
            .find(|(name, _)| name.starts_with(version))
            .map(|(_, path)| path)
    }

    /// Deletes the files of these versions.
    pub fn forget(&self, versions: &[String]) {
        if versions.is_empty() {
            return;
        }
        for (name, path) in self.files() {
            if versions.iter().any(|v| name.starts_with(v.as_str())) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// Deletes files whose version `named` says no record names, once older than [`UNUSED_GRACE`].
    pub fn sweep(&self, named: impl Fn(&str) -> bool) {
        let now = SystemTime::now();
        for (name, path) in self.files() {
            let old = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > UNUSED_GRACE);
            if old && name.len() >= 12 && !named(&name[..12]) {
                let _ = std::fs::remove_file(path);
            }
        }
    }

    /// `(file name, path)` of every kept module.
    fn files(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (name.ends_with(".wasm") && !name.starts_with('.')).then(|| (name, e.path()))
            })
            .collect()
    }
}

/// The version (12 lowercase hex digits) of `name@version`, or of a bare version.
pub fn version_of(label: &str) -> Option<&str> {
    let version = label.rsplit_once('@').map_or(label, |(_, v)| v);
    (version.len() == 12 && version.bytes().all(|b| b.is_ascii_hexdigit())).then_some(version)
}

/// The module versions a run record names (its filter and its action).
pub fn versions_in(filter: Option<&str>, module: Option<&str>) -> Vec<String> {
    let mut versions: Vec<String> = [filter, module]
        .into_iter()
        .flatten()
        .filter_map(version_of)
        .map(str::to_string)
        .collect();
    versions.dedup();
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_finds_and_forgets_by_version() {
        let dir = tempfile::tempdir().unwrap();
        let store = ModuleStore::under(dir.path());
        let digest = "0123456789abcdef".repeat(4);
        store.keep(&digest, b"\0asm").unwrap();
        store.keep(&digest, b"\0asm").unwrap();
        let found = store.find("m.wasm@0123456789ab").unwrap();
        assert_eq!(std::fs::read(&found).unwrap(), b"\0asm");
        assert_eq!(store.find("cel"), None);
        assert_eq!(
            versions_in(Some("cel"), Some("a@0123456789ab")),
            vec!["0123456789ab"]
        );
        store.sweep(|_| false);
        assert!(store.find("0123456789ab").is_some(), "young files stay");
        store.forget(&["0123456789ab".to_string()]);
        assert_eq!(store.find("0123456789ab"), None);
    }
}
