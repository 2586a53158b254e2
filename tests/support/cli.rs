//! The real binary and the other real tools tests drive: workspaces with
//! config files, `wasmtrigger` commands run to completion, kubectl.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use super::modules;

/// Where `scripts/setup` installs the pinned tools (guest toolchains, the
/// Python clients): `$WASMTRIGGER_TOOLS`, else the cache directory.
pub fn tools() -> PathBuf {
    std::env::var_os("WASMTRIGGER_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"));
            cache.join("wasmtrigger/tools")
        })
}

/// The Python of the pinned client libraries (`pyclient`, installed by
/// `scripts/setup`) running `tests/python/SCRIPT` with `args`; its stdout, or
/// a panic with its stderr when it fails.
pub fn pyclient(script: &str, args: &[&str], stdin: &[u8]) -> String {
    use std::io::Write;
    let python = tools().join("pyclient/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup",
        python.display()
    );
    let mut child = Command::new(python)
        .arg(super::repo().join("tests/python").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    let _ = child.stdin.take().map(|mut i| i.write_all(stdin));
    let out = child.wait_with_output().expect("python ran");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
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

/// `wasmtrigger check` of `config` with the test modules: (exit code, stdout, stderr).
pub fn check_config(config: &Path) -> (i32, String, String) {
    run_cli(
        &[
            "check",
            "--config",
            &config.display().to_string(),
            "--modules",
            &modules().display().to_string(),
        ],
        None,
    )
}

/// Runs the binary to completion and returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    run_cli_in(Path::new("."), args, stdin)
}

/// [`run_cli`] from the directory `dir`.
pub fn run_cli_in(dir: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(binary())
        .current_dir(dir)
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
