//! Shared test support: builds the real guest modules once per test run,
//! starts the real binary or an in-process engine, and waits on conditions
//! with deadlines instead of sleeping.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use wasmtrigger::runs::{RunRecord, RunSink};

pub mod http_server;
pub mod redis_server;

/// Generous upper bound for conditions: slow machines pass, fast ones finish early.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The directory holding the built example and test modules (built once per process).
pub fn modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo().join("target"));
        let out = target.join("test-modules");
        let mut cmd = Command::new("bash");
        cmd.arg(repo().join("scripts/build-guests")).arg(&out);
        // Build flags meant for the host must not leak into the wasm build.
        for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "RUSTC_WRAPPER"] {
            cmd.env_remove(var);
        }
        let status = cmd.status().expect("cannot run scripts/build-guests");
        assert!(
            status.success(),
            "building the guest modules failed; is the target installed? (rustup target add wasm32-wasip2)"
        );
        out
    })
}

/// The Python and JavaScript example modules (built once per process, slow:
/// seconds per component; unchanged components are not rebuilt).
pub fn language_modules() -> &'static Path {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        let dir = modules();
        for script in [
            &["scripts/setup", "--guests"][..],
            &["scripts/build-guests", "--lang", "python,js"][..],
        ] {
            let mut cmd = Command::new("bash");
            cmd.arg(repo().join(script[0])).args(&script[1..]);
            if script[0].ends_with("build-guests") {
                cmd.arg(dir);
            }
            let status = cmd.status().expect("run a guest build script");
            assert!(
                status.success(),
                "{script:?} failed: are python3, node and npm installed?"
            );
        }
    });
    modules()
}

/// A compiled-module cache shared by the tests, so most engine starts skip compiling.
pub fn shared_cache() -> PathBuf {
    modules().parent().unwrap().join("test-module-cache")
}

/// Path of one built module.
pub fn module(name: &str) -> PathBuf {
    modules().join(name)
}

/// The `wasmtrigger` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wasmtrigger")
}

/// A temporary directory with a config file written into it.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file relative to the workspace and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// Runs the binary to completion and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmtrigger");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `/usr/bin/kubectl` with `stdin`, against `kubeconfig` if given (never
/// an in-cluster config), and returns its stdout; a failure fails the test.
pub fn kubectl(kubeconfig: Option<&Path>, args: &[&str], stdin: &str) -> String {
    let mut cmd = Command::new("kubectl");
    cmd.args(args).env_remove("KUBERNETES_SERVICE_HOST");
    if let Some(path) = kubeconfig {
        cmd.env("KUBECONFIG", path);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is installed (/usr/bin/kubectl)");
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `run` flags for leader election in namespace `default` with short timings
/// (3 s lease, 2 s renew deadline, 250 ms retries), for multi-replica tests.
pub const FAST_LEADER_ELECTION: [&str; 9] = [
    "--leader-election",
    "--leader-election-namespace",
    "default",
    "--lease-duration",
    "3s",
    "--renew-deadline",
    "2s",
    "--retry-period",
    "250ms",
];

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

/// Every file below `dir`, in subdirectories too.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The documents of a multi-document YAML stream, as JSON values.
pub fn yaml_documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Lines seen so far, shared with a reader thread.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<Value>>,
    changed: Condvar,
}

/// Removes several variables from a command's environment.
trait EnvRemoveAll {
    fn env_remove_all<'a>(&mut self, names: impl Iterator<Item = &'a str>) -> &mut Self;
}

impl EnvRemoveAll for Command {
    fn env_remove_all<'a>(&mut self, names: impl Iterator<Item = &'a str>) -> &mut Self {
        for name in names {
            self.env_remove(name);
        }
        self
    }
}

/// A `wasmtrigger run` process with `--log-format json`, its log collected.
pub struct EngineProcess {
    child: Child,
    lines: Arc<Lines>,
    raw: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl EngineProcess {
    /// Starts `wasmtrigger run` with JSON logs and the given extra arguments.
    pub fn start(config: &Path, state_dir: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(config, state_dir, extra, &[])
    }

    /// Like [`EngineProcess::start`], with extra environment variables for the
    /// process; a variable given an empty value is removed instead.
    pub fn start_with_env(
        config: &Path,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_as(config, state_dir, extra, env, None)
    }

    /// Like [`EngineProcess::start`], with the soft limit on open files set
    /// to `nofile` (through `sh -c 'ulimit -n N; exec ...'`).
    pub fn start_with_nofile(config: &Path, state_dir: &Path, extra: &[&str], nofile: u32) -> Self {
        Self::start_as(config, state_dir, extra, &[], Some(nofile))
    }

    fn start_as(
        config: &Path,
        state_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u32>,
    ) -> Self {
        let mut args = vec![
            "--log-format".to_string(),
            "json".into(),
            "run".into(),
            "--config".into(),
            config.display().to_string(),
            "--modules".into(),
            modules().display().to_string(),
            "--state-dir".into(),
            state_dir.display().to_string(),
        ];
        if !extra.contains(&"--listen") {
            // Parallel engines must not share a port: let the kernel pick one.
            args.extend(["--listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut command = match nofile {
            None => Command::new(binary()),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(binary());
                sh
            }
        };
        let mut child = command
            .args(&args)
            .envs(env.iter().copied().filter(|(_, v)| !v.is_empty()))
            .env_remove_all(env.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| *k))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wasmtrigger run");
        let lines = Arc::new(Lines::default());
        let raw = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let (l, r) = (lines.clone(), raw.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                r.lock().unwrap().push_str(&line);
                r.lock().unwrap().push('\n');
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    l.lines.lock().unwrap().push(value);
                    l.changed.notify_all();
                }
            }
            l.changed.notify_all();
        });
        EngineProcess {
            child,
            lines,
            raw,
            reader: Some(reader),
        }
    }

    /// The HTTP server's base URL, once the server logged where it listens.
    pub fn base_url(&self) -> String {
        self.wait_for("the HTTP server to listen", |lines| {
            lines
                .iter()
                .find(|l| l["message"] == "HTTP server listening")
                .and_then(|l| l["addr"].as_str())
                .map(|addr| format!("http://{addr}"))
        })
    }

    /// Waits until the engine has started (modules loaded, sources running).
    pub fn wait_started(&self) {
        self.wait_for("the engine to start", |l| {
            l.iter()
                .any(|l| l["message"] == "engine started")
                .then_some(())
        });
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The JSON log lines so far.
    pub fn lines(&self) -> Vec<Value> {
        self.lines.lines.lock().unwrap().clone()
    }

    /// Everything the process wrote to stderr so far.
    pub fn raw_log(&self) -> String {
        self.raw.lock().unwrap().clone()
    }

    /// Waits until `check` returns Some over the JSON lines so far.
    pub fn wait_for<T>(&self, what: &str, check: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        let mut lines = self.lines.lines.lock().unwrap();
        loop {
            if let Some(found) = check(&lines) {
                return found;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out waiting for {what}; log so far:\n{}",
                self.raw_log()
            );
            lines = self.lines.changed.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Run-record lines (`message == "run finished"`) for one trigger.
    pub fn runs(&self, trigger: &str) -> Vec<Value> {
        run_lines(&self.lines.lines.lock().unwrap(), trigger)
    }

    /// Waits for at least `n` run records of `trigger` and returns them.
    pub fn wait_runs(&self, trigger: &str, n: usize) -> Vec<Value> {
        self.wait_for(&format!("{n} runs of {trigger}"), |lines| {
            let runs = run_lines(lines, trigger);
            (runs.len() >= n).then_some(runs)
        })
    }

    /// Kills the process with SIGKILL (a crash: no shutdown code runs) and
    /// returns everything it logged.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.raw_log()
    }

    /// Waits for the process to exit on its own (a crash, a failpoint) and
    /// returns its exit code (None when a signal ended it) and whole log.
    pub fn wait_exit(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + DEADLINE;
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            assert!(
                Instant::now() < deadline,
                "engine did not exit; log so far:\n{}",
                self.raw_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (code, self.raw_log())
    }

    /// The stored run records of `trigger` from the engine's API (newest first).
    pub fn stored_runs(&self, trigger: &str) -> Vec<Value> {
        let url = format!(
            "{}/api/v1/runs?trigger={trigger}&limit=10000",
            self.base_url()
        );
        let body = http_get(&url);
        let value: Value = serde_json::from_str(&body).expect("the API answers JSON");
        value["runs"].as_array().cloned().unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn stop(self) -> i32 {
        self.stop_and_log().0
    }

    /// Sends SIGTERM, waits for the exit, and returns the code and the whole log.
    pub fn stop_and_log(mut self) -> (i32, String) {
        signal(&self.child, "TERM");
        let deadline = Instant::now() + DEADLINE;
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "engine did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (code, self.raw_log())
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// GETs a URL and returns the body of a 200 answer; anything else fails the test.
pub fn http_get(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let response = reqwest::get(url).await.expect("GET answers");
        let status = response.status();
        let body = response.text().await.expect("body");
        assert_eq!(status, 200, "GET {url}: {body}");
        body
    })
}

/// Run-record lines of one trigger in a raw JSON-lines log.
pub fn runs_in_log(raw: &str, trigger: &str) -> Vec<Value> {
    let lines: Vec<Value> = raw
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    run_lines(&lines, trigger)
}

/// Run-record lines of one trigger among JSON log lines.
pub fn run_lines(lines: &[Value], trigger: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["message"] == "run finished" && l["trigger"] == trigger)
        .cloned()
        .collect()
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

/// Runs `check` on a config that must be rejected; returns what it printed.
pub fn check_rejects(yaml: &str) -> String {
    let ws = Workspace::new();
    let file = ws.write("bad.yaml", yaml);
    let modules = modules().display().to_string();
    let config = file.display().to_string();
    let (code, out, err) = run_cli(&["check", "--config", &config, "--modules", &modules], None);
    let text = format!("{out}{err}");
    assert_eq!(code, 1, "check should reject:\n{text}");
    text
}

/// Runs `check` on a config that must be rejected and asserts that, for each
/// `(trigger, parts)`, one error line names the trigger and contains every part.
pub fn assert_check_errors(yaml: &str, expected: &[(&str, &[&str])]) -> String {
    let text = check_rejects(yaml);
    for (trigger, parts) in expected {
        let named = format!("trigger `{trigger}`");
        assert!(
            text.lines()
                .any(|l| l.contains(&named) && parts.iter().all(|p| l.contains(p))),
            "{trigger}: expected a line with {parts:?} in:\n{text}"
        );
    }
    text
}
