//! Hot reload: picks up changed modules and configs while the engine runs.
//!
//! File events only say *something* changed; the reloader then rescans: it
//! fingerprints the config files and every module the config uses, and acts on
//! what actually differs. A poll at a fixed interval catches anything the
//! watcher missed (a vanished and recreated directory, an overflowed event
//! queue). Bytes are read once the file is quiet and unchanged across the
//! read, and what was read is what gets compiled.
//!
//! A module or config that fails to load or validate is rejected with a log
//! line and a counter, and the previous version keeps serving.

mod watcher;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use notify::RecursiveMode;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::capabilities::secrets::SecretStore;
use crate::config::{self, Config, EngineOverrides, FilterConfig};
use crate::metrics::ReloadStats;
use crate::runtime::{World, load_for_config};
use crate::trigger_set::{Problem, TriggerSet, compose};

/// A config error as the web page and the API show it.
fn problem(error: &config::ConfigError) -> Problem {
    Problem {
        trigger: error.trigger.clone(),
        origin: "files".into(),
        message: error.to_string(),
    }
}

/// Where a reload reads the config from, the way `run` was given it.
#[derive(Clone, Debug)]
pub struct ReloadOptions {
    /// The `--config` path (file or directory).
    pub config_path: PathBuf,
    /// The `--modules` directory, if given.
    pub modules_dir: Option<PathBuf>,
    /// Flag and env overrides of engine settings.
    pub overrides: EngineOverrides,
    /// Rescan this often even without file events (events can be missed).
    pub poll_interval: Duration,
}

/// What the reloader works on.
pub struct ReloadContext {
    /// The live triggers (the files are one of their inputs).
    pub triggers: Arc<TriggerSet>,
    /// Where webhook keys come from (checked before a config is applied).
    pub secrets: SecretStore,
    /// Reload counters.
    pub stats: Arc<ReloadStats>,
}

/// Quiet time after the last file event before rescanning (bursts settle).
const DEBOUNCE: Duration = Duration::from_millis(75);
/// Longest a burst of events can delay a rescan.
const MAX_DEBOUNCE: Duration = Duration::from_millis(750);
/// A file modified more recently than this may still be being written.
const SETTLE: Duration = Duration::from_millis(50);
/// How long an empty file is taken for a write in progress. Truncation (by
/// `cp`, shell redirection) does not always update mtime or ctime right
/// away (seen on Linux 6.18/ext4), so an empty file can look settled.
const EMPTY_GRACE: Duration = Duration::from_secs(1);

/// Identity and shape of a file: changes whenever its content may have.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fingerprint {
    Missing,
    Present {
        len: u64,
        mtime_ns: i128,
        ino: u64,
        dev: u64,
    },
}

fn fingerprint(path: &Path) -> Fingerprint {
    // `metadata` follows symlinks: a Kubernetes `..data` swap changes the inode.
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Fingerprint::Present {
            len: m.len(),
            mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
            ino: m.ino(),
            dev: m.dev(),
        },
        _ => Fingerprint::Missing,
    }
}

/// Reads a file that has been quiet for [`SETTLE`] and whose fingerprint is
/// the same before and after the read, so that a write in progress (even one
/// pausing between chunks) is never taken for the new version.
fn read_stable(path: &Path) -> Option<(Fingerprint, Vec<u8>)> {
    let before = fingerprint(path);
    let Fingerprint::Present { mtime_ns, .. } = before else {
        return None;
    };
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos() as i128;
    if now_ns - mtime_ns < SETTLE.as_nanos() as i128 {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let after = fingerprint(path);
    (before == after && after_len_matches(&after, bytes.len())).then_some((after, bytes))
}

fn after_len_matches(fp: &Fingerprint, len: usize) -> bool {
    matches!(fp, Fingerprint::Present { len: l, .. } if *l == len as u64)
}

/// The reloader task: runs until `stop` is cancelled.
pub async fn run(shared: ReloadContext, options: ReloadOptions, stop: CancellationToken) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let config = shared.triggers.config();
    let mut watcher =
        watcher::DirWatcher::new(watch_targets(&options.config_path, &config.modules_dir), tx);
    let mut reloader = Reloader {
        shared,
        options,
        config_seen: None,
        modules_seen: HashMap::new(),
        recheck_soon: false,
        empty_since: HashMap::new(),
    };
    reloader.remember_current();
    let mut poll = tokio::time::interval(reloader.options.poll_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let recheck = reloader.recheck_soon;
        reloader.recheck_soon = false;
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(()) = rx.recv() => debounce(&mut rx).await,
            _ = poll.tick() => {}
            _ = tokio::time::sleep(SETTLE), if recheck => {}
        }
        watcher.ensure_armed();
        reloader.rescan().await;
    }
}

/// Waits until events stop arriving for a moment (bounded).
async fn debounce(rx: &mut mpsc::UnboundedReceiver<()>) {
    let deadline = Instant::now() + MAX_DEBOUNCE;
    while Instant::now() < deadline {
        match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
            Ok(Some(())) => continue,
            _ => break,
        }
    }
}

/// The directories to watch for a config path and a modules directory.
fn watch_targets(config_path: &Path, modules_dir: &Path) -> Vec<(PathBuf, RecursiveMode)> {
    let mut targets = Vec::new();
    if config_path.is_dir() {
        targets.push((config_path.to_path_buf(), RecursiveMode::Recursive));
    } else {
        // Watch the directory: editors and Kubernetes replace files rather than write them.
        let parent = config_path.parent().filter(|p| !p.as_os_str().is_empty());
        targets.push((
            parent.unwrap_or(Path::new(".")).to_path_buf(),
            RecursiveMode::NonRecursive,
        ));
    }
    if !targets.iter().any(|(p, _)| p == modules_dir) {
        targets.push((modules_dir.to_path_buf(), RecursiveMode::Recursive));
    }
    targets
}

struct Reloader {
    shared: ReloadContext,
    options: ReloadOptions,
    /// Hash of the config files' contents last acted on (applied or rejected).
    config_seen: Option<u64>,
    /// Fingerprint of each module file last acted on.
    modules_seen: HashMap<PathBuf, Fingerprint>,
    /// A file was still settling: rescan shortly rather than at the next poll.
    recheck_soon: bool,
    /// When each file was first seen empty.
    empty_since: HashMap<PathBuf, Instant>,
}

impl Reloader {
    /// True while `path` is an empty file that may be mid-write; asks for a
    /// prompt recheck. After [`EMPTY_GRACE`] an empty file is taken as it is.
    fn empty_and_settling(&mut self, path: &Path) -> bool {
        let empty = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == 0);
        if !empty {
            self.empty_since.remove(path);
            return false;
        }
        let since = *self
            .empty_since
            .entry(path.to_path_buf())
            .or_insert_with(Instant::now);
        let settling = since.elapsed() < EMPTY_GRACE;
        self.recheck_soon |= settling;
        settling
    }

    /// Takes what the engine started with as already seen.
    fn remember_current(&mut self) {
        // The hash of what was loaded, not of what is there now: a change made
        // between loading and this task's start must still be seen.
        self.config_seen = self
            .shared
            .triggers
            .config()
            .source_hash
            .or_else(|| config_hash(&self.options.config_path));
        let config = self.shared.triggers.config();
        for (_, path, _) in module_uses(&config) {
            self.modules_seen.insert(path.clone(), fingerprint(&path));
        }
    }

    async fn rescan(&mut self) {
        self.check_config().await;
        self.check_modules().await;
    }

    async fn check_config(&mut self) {
        let hash = config_hash(&self.options.config_path);
        if hash.is_none() || hash == self.config_seen {
            return;
        }
        if config_settling(&self.options.config_path) {
            self.recheck_soon = true;
            return;
        }
        let files = config_files(&self.options.config_path);
        if files.iter().any(|f| self.empty_and_settling(f)) {
            return;
        }
        self.config_seen = hash;
        let path = self.options.config_path.clone();
        let modules_dir = self.options.modules_dir.clone();
        let overrides = self.options.overrides.clone();
        // Fingerprint modules before loading them, so a write racing the load is seen next time.
        let loaded = tokio::task::spawn_blocking(move || {
            config::load(&path, modules_dir.as_deref(), &overrides)
        })
        .await;
        let config = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(errors)) => {
                return self.reject_config(errors.0.iter().map(problem).collect());
            }
            Err(e) => {
                return self.reject_config(vec![Problem {
                    trigger: None,
                    origin: "files".into(),
                    message: format!("config loader failed: {e}"),
                }]);
            }
        };
        // Triggers from Trigger objects stay, unless a file now defines the name.
        let inputs = self.shared.triggers.inputs().await;
        let config = compose(&config, inputs.objects());
        let fingerprints: Vec<(PathBuf, Fingerprint)> = module_uses(&config)
            .into_iter()
            .map(|(_, p, _)| {
                let f = fingerprint(&p);
                (p, f)
            })
            .collect();
        let (modules, errors) = load_for_config(self.shared.triggers.runtime(), &config).await;
        if !errors.is_empty() {
            return self.reject_config(errors.iter().map(problem).collect());
        }
        let secrets = &self.shared.secrets;
        let key_problems =
            crate::capabilities::secrets::webhook_key_problems(&config.triggers, secrets, false)
                .await;
        if !key_problems.is_empty() {
            return self.reject_config(key_problems.iter().map(problem).collect());
        }
        crate::capabilities::secrets::preload_secrets(&config.triggers, secrets).await;
        self.modules_seen.extend(fingerprints);
        let change = self.shared.triggers.apply(config, modules).await;
        self.shared.triggers.set_file_problems(Vec::new());
        drop(inputs);
        self.shared
            .stats
            .config_reloads
            .fetch_add(1, Ordering::Relaxed);
        change.log("config reloaded");
    }

    fn reject_config(&self, problems: Vec<Problem>) {
        self.shared
            .stats
            .config_rejections
            .fetch_add(1, Ordering::Relaxed);
        for problem in &problems {
            tracing::error!("{}", problem.message);
        }
        let count = problems.len();
        self.shared.triggers.set_file_problems(problems);
        tracing::error!(
            problems = count,
            "config change rejected; the previous config keeps running"
        );
    }

    async fn check_modules(&mut self) {
        let config = self.shared.triggers.config();
        for (name, path, worlds) in module_uses(&config) {
            let now = fingerprint(&path);
            if self.modules_seen.get(&path) == Some(&now) {
                continue;
            }
            if now == Fingerprint::Missing {
                let why = format!(
                    "module `{name}` was removed ({} is gone); runs that use it fail until it is back",
                    path.display()
                );
                tracing::warn!(module = %name, path = %path.display(), "module file removed");
                self.shared.triggers.registry().set_unavailable(&name, why);
                self.modules_seen.insert(path, now);
                continue;
            }
            if self.empty_and_settling(&path) {
                continue;
            }
            let max = self.shared.triggers.runtime().max_module_bytes();
            if let Fingerprint::Present { len, .. } = now
                && len > max
            {
                // Refused by its size, unread; said once per version of the file.
                self.shared
                    .stats
                    .module_rejections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(file = %path.display(), size = len, max, "module rejected: over engine.maxModuleSize; the previous version keeps serving");
                self.modules_seen.insert(path, now);
                continue;
            }
            let read = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || read_stable(&path))
                    .await
                    .ok()
                    .flatten()
            };
            // Still being written: the next event or poll will come back to it.
            let Some((fp, bytes)) = read else { continue };
            self.modules_seen.insert(path.clone(), fp);
            self.load_module(&name, &path, bytes, &worlds).await;
        }
    }

    async fn load_module(&self, name: &str, path: &Path, bytes: Vec<u8>, worlds: &[World]) {
        let digest: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let current = self.shared.triggers.registry().get(name).ok();
        if current.as_ref().is_some_and(|c| c.digest == digest) {
            return;
        }
        let compiled = {
            let (runtime, name, path) = (
                self.shared.triggers.runtime().clone(),
                name.to_string(),
                path.to_path_buf(),
            );
            tokio::task::spawn_blocking(move || runtime.compile(&name, Some(&path), &bytes)).await
        };
        let checked = match compiled {
            Err(e) => Err(format!("compiler task failed: {e}")),
            Ok(Err(e)) => Err(e.to_string()),
            Ok(Ok(module)) => worlds
                .iter()
                .try_for_each(|w| module.require(*w))
                .map(|()| module)
                .map_err(|e| e.to_string()),
        };
        match checked {
            Ok(module) => {
                let label = module.label();
                let load_ms = module.compile_time.as_millis() as u64;
                let from_cache = module.from_cache;
                self.shared.triggers.registry().insert(Arc::new(module));
                self.shared
                    .stats
                    .module_reloads
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    module = %label,
                    previous = current.map(|c| c.label()).unwrap_or_default(),
                    load_ms,
                    from_cache,
                    "module reloaded"
                );
                self.shared.triggers.evict_cache();
            }
            Err(reason) => {
                self.shared
                    .stats
                    .module_rejections
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    file = %path.display(),
                    reason = %reason,
                    serving = current.map(|c| c.label()).unwrap_or_else(|| "nothing".into()),
                    "module rejected; the previous version keeps serving"
                );
            }
        }
    }
}

/// Each module the config uses: name, path and the worlds it is used as.
fn module_uses(config: &Config) -> Vec<(String, PathBuf, Vec<World>)> {
    let mut uses: HashMap<String, (PathBuf, Vec<World>)> = HashMap::new();
    for t in &config.triggers {
        if let Some(FilterConfig::Module(m)) = &t.filter
            && !crate::builtins::is_builtin(&m.name)
        {
            let entry = uses
                .entry(m.name.clone())
                .or_insert_with(|| (m.path.clone(), Vec::new()));
            entry.1.push(World::Filter);
        }
        for m in t.action_modules() {
            // Builtins are embedded: no file to watch.
            if crate::builtins::is_builtin(&m.name) {
                continue;
            }
            let entry = uses
                .entry(m.name.clone())
                .or_insert_with(|| (m.path.clone(), Vec::new()));
            entry.1.push(World::Action);
        }
    }
    let mut list: Vec<_> = uses
        .into_iter()
        .map(|(name, (path, mut worlds))| {
            worlds.sort();
            worlds.dedup();
            (name, path, worlds)
        })
        .collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    list
}

/// Whether a config file was modified within [`SETTLE`] (a write may be under way).
fn config_settling(path: &Path) -> bool {
    let now = std::time::SystemTime::now();
    config_files(path).iter().any(|f| {
        std::fs::metadata(f)
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).unwrap_or_default() < SETTLE)
    })
}

/// Hash of the config's files and contents; None when nothing can be read.
fn config_hash(path: &Path) -> Option<u64> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in config_files(path) {
        file.hash(&mut hasher);
        std::fs::read(&file).ok()?.hash(&mut hasher);
    }
    Some(hasher.finish())
}

/// The files a config path stands for (as `config::load` reads them).
fn config_files(path: &Path) -> Vec<PathBuf> {
    if path.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                let ext = p.extension().and_then(|e| e.to_str()).unwrap_or_default();
                !name.starts_with('.') && matches!(ext, "yaml" | "yml" | "json")
            })
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    }
}
