//! File-system watching with `notify`, made robust: events are only a hint
//! that something changed (the reloader rescans), a watch that errors or whose
//! directory was replaced is re-armed, and a missing directory is retried.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Watches a set of directories and sends `()` whenever something in them changes.
pub struct DirWatcher {
    targets: Vec<(PathBuf, RecursiveMode)>,
    watcher: Option<RecommendedWatcher>,
    /// (device, inode) of each target when armed; a replaced directory differs.
    armed_as: Vec<Option<(u64, u64)>>,
    broken: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<()>,
    /// Missing directories already reported (once each, until they appear).
    reported_missing: std::collections::HashSet<PathBuf>,
}

impl DirWatcher {
    /// Creates the watcher and arms it as far as the directories exist.
    pub fn new(targets: Vec<(PathBuf, RecursiveMode)>, tx: mpsc::UnboundedSender<()>) -> Self {
        let mut watcher = DirWatcher {
            targets,
            watcher: None,
            armed_as: Vec::new(),
            broken: Arc::new(AtomicBool::new(false)),
            tx,
            reported_missing: Default::default(),
        };
        watcher.ensure_armed();
        watcher
    }

    /// Re-arms the watch if it failed, or if a watched directory vanished or was replaced.
    pub fn ensure_armed(&mut self) {
        let identities: Vec<Option<(u64, u64)>> = self
            .targets
            .iter()
            .map(|(path, _)| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino())))
            .collect();
        let healthy = self.watcher.is_some()
            && !self.broken.load(Ordering::Relaxed)
            && identities == self.armed_as;
        if healthy {
            return;
        }
        self.watcher = None;
        self.broken.store(false, Ordering::Relaxed);
        let (tx, broken) = (self.tx.clone(), self.broken.clone());
        let handler = move |event: notify::Result<notify::Event>| match event {
            // Reads (including the reloader's own) are not changes.
            Ok(event) if matches!(event.kind, EventKind::Access(_)) => {}
            Ok(_) => {
                let _ = tx.send(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watch error; re-arming at the next rescan");
                broken.store(true, Ordering::Relaxed);
                let _ = tx.send(());
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a file watcher; relying on periodic rescans");
                self.broken.store(true, Ordering::Relaxed);
                return;
            }
        };
        for ((path, mode), identity) in self.targets.iter().zip(&identities) {
            if identity.is_none() {
                // Said once; the periodic rescan notices when it appears, and
                // its new identity re-arms the watch.
                if self.reported_missing.insert(path.clone()) {
                    tracing::warn!(path = %path.display(), "watched directory does not exist; rescanning until it does");
                }
                continue;
            }
            self.reported_missing.remove(path);
            if let Err(e) = watcher.watch(path, *mode) {
                tracing::warn!(path = %path.display(), error = %e, "cannot watch; will retry");
                self.broken.store(true, Ordering::Relaxed);
            }
        }
        self.armed_as = identities;
        self.watcher = Some(watcher);
    }
}
