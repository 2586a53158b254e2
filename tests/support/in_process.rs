//! An engine in the test process, with a collector of its run records, and
//! waiting on conditions; plus the file writes of the hot-reload tests.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use wasmtrigger::runs::{RunRecord, RunSink};

use super::{DEADLINE, Workspace, modules, shared_cache};

/// Asserts that a run failed with an error containing `text`.
pub fn assert_failed_with(record: &RunRecord, text: &str) {
    assert_eq!(
        record.status,
        wasmtrigger::runs::RunStatus::Failed,
        "{record:#?}"
    );
    let error = record.error.as_deref().unwrap_or_default();
    assert!(
        error.contains(text),
        "expected {text:?} in the error: {record:#?}"
    );
}

/// Collects run records from an in-process engine.
#[derive(Default)]
pub struct Collector {
    records: Mutex<Vec<RunRecord>>,
    changed: Condvar,
}

impl RunSink for Collector {
    fn record(&self, run: &RunRecord) {
        self.records.lock().unwrap().push(run.clone());
        self.changed.notify_all();
    }
}

impl Collector {
    pub fn new() -> Arc<Self> {
        Arc::new(Collector::default())
    }

    pub fn all(&self) -> Vec<RunRecord> {
        self.records.lock().unwrap().clone()
    }

    pub fn of(&self, trigger: &str) -> Vec<RunRecord> {
        self.all()
            .into_iter()
            .filter(|r| r.trigger == trigger)
            .collect()
    }

    /// Waits (without blocking the async runtime) until `n` records of `trigger` exist.
    pub async fn wait_runs(self: &Arc<Self>, trigger: &str, n: usize) -> Vec<RunRecord> {
        let (this, trigger) = (self.clone(), trigger.to_string());
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + DEADLINE;
            let mut records = this.records.lock().unwrap();
            loop {
                let found: Vec<RunRecord> = records
                    .iter()
                    .filter(|r| r.trigger == trigger)
                    .cloned()
                    .collect();
                if found.len() >= n {
                    return found;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "timed out waiting for {n} runs of {trigger}; have {found:#?}"
                );
                records = this.changed.wait_timeout(records, left).unwrap().0;
            }
        })
        .await
        .unwrap()
    }
}

/// Sends engine logs (info and up) to the test's captured output: shown when a test fails.
pub fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("info,wasmtrigger::guest=warn")
            .try_init();
    });
}

/// Starts an in-process engine on an existing config with explicit options.
pub async fn start_engine_at(
    config_path: &Path,
    modules_dir: &Path,
    options: wasmtrigger::engine::EngineOptions,
) -> (wasmtrigger::engine::Engine, Arc<Collector>) {
    capture_logs();
    let config = wasmtrigger::config::load(config_path, Some(modules_dir), &Default::default())
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
    let collector = Collector::new();
    let engine = wasmtrigger::engine::Engine::start(
        config,
        options,
        vec![collector.clone() as Arc<dyn RunSink>],
    )
    .await
    .unwrap_or_else(|e| panic!("engine did not start: {e}"));
    (engine, collector)
}

/// Engine options that watch `config_path` and `modules_dir` (polling quickly too).
pub fn reloading(
    ws: &Workspace,
    config_path: &Path,
    modules_dir: &Path,
) -> wasmtrigger::engine::EngineOptions {
    wasmtrigger::engine::EngineOptions {
        module_cache: Some(shared_cache()),
        reload: Some(wasmtrigger::engine::ReloadOptions {
            config_path: config_path.to_path_buf(),
            modules_dir: Some(modules_dir.to_path_buf()),
            overrides: Default::default(),
            poll_interval: Duration::from_millis(500),
        }),
        ..wasmtrigger::engine::EngineOptions::new(ws.state_dir())
    }
}

/// Polls `check` every few milliseconds until it returns Some, within the deadline.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Replaces a file the way editors do: write a temporary file, then rename it over.
pub fn write_like_editor(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Replaces a file the way `cp` does: truncate, then write in chunks.
pub fn write_like_cp(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in bytes.chunks(bytes.len() / 4 + 1) {
        file.write_all(chunk).unwrap();
        file.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Hex SHA-256 of bytes (a module's version is its first 12 digits).
pub fn digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Starts an in-process engine on a YAML config written into `ws`.
pub async fn start_engine(
    ws: &Workspace,
    yaml: &str,
) -> (wasmtrigger::engine::Engine, Arc<Collector>) {
    capture_logs();
    let config_path = ws.write("triggers.yaml", yaml);
    let config = wasmtrigger::config::load(&config_path, Some(modules()), &Default::default())
        .unwrap_or_else(|e| panic!("test config is invalid:\n{e}"));
    let collector = Collector::new();
    let engine = wasmtrigger::engine::Engine::start(
        config,
        wasmtrigger::engine::EngineOptions {
            module_cache: Some(shared_cache()),
            ..wasmtrigger::engine::EngineOptions::new(ws.state_dir())
        },
        vec![collector.clone() as Arc<dyn RunSink>],
    )
    .await
    .unwrap_or_else(|e| panic!("engine did not start: {e}"));
    (engine, collector)
}
