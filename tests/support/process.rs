//! A `wasmtrigger run` process with JSON logs, and reading run records from
//! its log and its API.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{DEADLINE, binary, modules};

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

    /// `wasmtrigger --log-format json ARGS...` in `dir`, as a user types it
    /// there (relative paths resolve against `dir`).
    pub fn start_in(dir: &Path, args: &[&str]) -> Self {
        let mut all = vec!["--log-format", "json"];
        all.extend_from_slice(args);
        let mut command = Command::new(binary());
        command.current_dir(dir).args(&all);
        Self::spawn(command)
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
            "--state-dir".into(),
            state_dir.display().to_string(),
        ];
        // The shared test modules, unless the test brings its own directory.
        if !extra.contains(&"--modules") {
            args.extend(["--modules".to_string(), modules().display().to_string()]);
        }
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
        command
            .args(&args)
            .envs(env.iter().copied().filter(|(_, v)| !v.is_empty()))
            .env_remove_all(env.iter().filter(|(_, v)| v.is_empty()).map(|(k, _)| *k));
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Self {
        let mut child = command
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

    /// Fires `trigger` through the API (`data` as the event's data, if any);
    /// the engine must accept it (202).
    pub fn fire(&self, trigger: &str, data: Option<&Value>) {
        let mut request = reqwest::blocking::Client::new().post(format!(
            "{}/api/v1/triggers/{trigger}/fire",
            self.base_url()
        ));
        if let Some(data) = data {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::json!({ "data": data }).to_string());
        }
        let status = request.send().expect("fire").status();
        assert_eq!(status, 202, "firing {trigger}");
    }

    /// Fires `trigger` once more and returns the stored record of that run.
    pub fn fire_and_record(&self, trigger: &str, data: Value) -> Value {
        let before = self.runs(trigger).len();
        self.fire(trigger, Some(&data));
        let run = self.wait_runs(trigger, before + 1).remove(before);
        let run_id = run["run_id"].as_str().unwrap().to_string();
        let deadline = std::time::Instant::now() + crate::support::DEADLINE;
        loop {
            if let Some(r) = self
                .stored_runs(trigger)
                .into_iter()
                .find(|r| r["runId"] == run_id)
            {
                return r;
            }
            assert!(std::time::Instant::now() < deadline, "record not stored");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
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

/// Replica `n` of a leader-electing set: its own state directory under `ws`,
/// identity `replica-n`, short lease timings.
pub fn elected_replica(
    ws: &super::Workspace,
    config: &Path,
    kubeconfig: &Path,
    n: usize,
) -> EngineProcess {
    let identity = format!("replica-{n}");
    let mut args = vec![
        "--kubeconfig",
        kubeconfig.to_str().expect("a UTF-8 path"),
        "--leader-identity",
        &identity,
    ];
    args.extend(super::FAST_LEADER_ELECTION);
    EngineProcess::start(config, &ws.path().join(format!("state-{n}")), &args)
}

impl EngineProcess {
    /// Whether this replica logged that it became the leader.
    pub fn became_leader(&self) -> bool {
        self.lines()
            .iter()
            .any(|l| l["message"] == "became the leader")
    }
}

/// Starts `n` replicas of one config (written to `file` in `ws`), each with
/// its own state directory, and waits until each has started.
pub fn replicas(ws: &super::Workspace, file: &str, config: &str, n: usize) -> Vec<EngineProcess> {
    let path = ws.write(file, config);
    (0..n)
        .map(|i| {
            let state = ws.path().join(format!("state-{i}"));
            let engine = EngineProcess::start(&path, &state, &[]);
            engine.wait_started();
            engine
        })
        .collect()
}

/// Stops every replica (each must exit 0) and returns their logs.
pub fn stop_all(engines: Vec<EngineProcess>) -> Vec<String> {
    engines
        .into_iter()
        .map(|e| {
            let (code, log) = e.stop_and_log();
            assert_eq!(code, 0, "replica exited badly:\n{log}");
            log
        })
        .collect()
}

/// The runs of `trigger` in a log as (the last `:`-part of the event id —
/// a queue's entry id or sequence —, status).
pub fn processed(log: &str, trigger: &str) -> Vec<(String, String)> {
    runs_in_log(log, trigger)
        .iter()
        .map(|r| {
            let id = r["event_id"].as_str().unwrap_or_default();
            let entry = id.rsplit(':').next().unwrap_or_default().to_string();
            (entry, r["status"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

/// Resident memory of a process now and at its peak (`VmRSS`, `VmHWM`), in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
