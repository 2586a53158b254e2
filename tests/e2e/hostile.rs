//! The hostile-input suite: every input surface — config files, module
//! files, the HTTP listener, webhook callers, guest calls, secrets, queue
//! messages — fed what a hostile review fed it (oversized, malformed, slow,
//! deeply nested, path tricks), each case with the outcome it must have.
//! A case that fails here means a weakness came back. docs/security.md lists
//! every case with the test that holds it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{self, DEADLINE, EngineProcess, Workspace, run_cli};

/// A config case: files to write, what `check` must say, what it must never print.
struct ConfigCase {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    expect: &'static [&'static str],
    never: &'static [&'static str],
}

fn trigger_with(extra_action: &str) -> String {
    format!(
        "triggers:\n  - name: t\n    source: {{ type: schedule, every: 1h }}\n    action: {{ module: log-event.wasm{extra_action} }}\n"
    )
}

fn config_cases() -> Vec<ConfigCase> {
    let mut bomb = String::from("engine:\n  workers: 1\nanchors: &a [");
    bomb.push_str(&"lol,".repeat(3000));
    bomb.push_str("lol]\nmore: [");
    bomb.push_str(&"*a,".repeat(3000));
    bomb.push_str("*a]\n");
    let deep_yaml = (0..20_000)
        .map(|i| format!("{}k:\n", " ".repeat(i % 200 + i / 200)))
        .collect::<String>();
    let deep_flow = format!("triggers: {}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_json = format!(
        "{{\"triggers\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let cel = |depth: usize| {
        format!(
            "triggers:\n  - name: t\n    source: {{ type: schedule, every: 1h }}\n    filter: {{ cel: \"{}true{}\" }}\n    action: {{ module: log-event.wasm }}\n",
            "(".repeat(depth),
            ")".repeat(depth)
        )
    };
    vec![
        ConfigCase {
            name: "a key given twice",
            files: vec![(
                "t.yaml",
                "triggers:\n  - name: t\n    source: { type: schedule, every: 1h }\n    action:\n      module: log-event.wasm\n      grants:\n        kube: []\n        kube: [{verbs: [get], apiVersion: v1, kind: Secret, namespaces: ['*']}]\n".into(),
            )],
            expect: &["`kube` is given twice", "line 7", "line 8"],
            never: &[],
        },
        ConfigCase {
            name: "a key given twice in JSON",
            files: vec![("t.json", r#"{"triggers": [], "triggers": []}"#.into())],
            expect: &["invalid JSON", "`triggers` is given twice"],
            never: &[],
        },
        ConfigCase {
            name: "an alias bomb",
            files: vec![("t.yaml", bomb)],
            expect: &["invalid YAML", "alias"],
            never: &[],
        },
        ConfigCase {
            name: "deeply nested block YAML",
            files: vec![("t.yaml", deep_yaml)],
            expect: &["invalid YAML"],
            never: &[],
        },
        ConfigCase {
            name: "deeply nested flow YAML",
            files: vec![("t.yaml", deep_flow)],
            expect: &["invalid YAML", "nest at most"],
            never: &[],
        },
        ConfigCase {
            name: "deeply nested JSON",
            files: vec![("t.json", deep_json)],
            expect: &["invalid JSON", "nest at most"],
            never: &[],
        },
        ConfigCase {
            name: "an oversized config file",
            files: vec![("t.yaml", format!("# {}\n", "x".repeat(5 << 20)))],
            expect: &["config files may be at most"],
            never: &[],
        },
        ConfigCase {
            name: "numbers past their bounds",
            files: vec![(
                "t.yaml",
                format!(
                    "engine:\n  workers: 1000000000000\n  queueSize: 1000000000\n  timeout: 100h\n  server: {{ maxConnections: 0 }}\n{}",
                    trigger_with(", retry: { max: 100000 }, http: { maxRequests: 1000000 }")
                ),
            )],
            expect: &[
                "engine.workers",
                "engine.queueSize",
                "engine.timeout",
                "engine.server.maxConnections",
                "action.retry.max",
                "action.http.maxRequests",
            ],
            never: &[],
        },
        ConfigCase {
            name: "CEL nested 100 deep",
            files: vec![("t.yaml", cel(100))],
            expect: &["trigger `t`", "field `filter.cel`", "nest more than"],
            never: &[],
        },
        ConfigCase {
            name: "CEL nested 1000 deep",
            files: vec![("t.yaml", cel(1000))],
            expect: &["trigger `t`", "field `filter.cel`", "nest more than"],
            never: &[],
        },
        ConfigCase {
            name: "an ordering key nested 1000 deep",
            files: vec![(
                "t.yaml",
                trigger_with("").replace(
                    "    action:",
                    &format!(
                        "    ordering: {{ key: \"{}event.id{}\" }}\n    action:",
                        "(".repeat(1000),
                        ")".repeat(1000)
                    ),
                ),
            )],
            expect: &["trigger `t`", "field `ordering.key`", "nest more than"],
            never: &[],
        },
        ConfigCase {
            name: "an ordering that is neither none nor a key",
            files: vec![(
                "t.yaml",
                trigger_with("").replace(
                    "    action:",
                    "    ordering: { key: [1, 2], extra: true }\n    action:",
                ),
            )],
            expect: &["trigger `t`", "ordering"],
            never: &[],
        },
        ConfigCase {
            name: "an ordering key over 8 KiB",
            files: vec![(
                "t.yaml",
                trigger_with("").replace(
                    "    action:",
                    &format!(
                        "    ordering: {{ key: \"event.id + '{}'\" }}\n    action:",
                        "x".repeat(9000)
                    ),
                ),
            )],
            expect: &["field `ordering.key`", "at most 8192 are allowed"],
            never: &[],
        },
        ConfigCase {
            name: "a module path out of the modules directory",
            files: vec![("t.yaml", trigger_with("").replace("log-event.wasm", "../../../../etc/passwd"))],
            expect: &["field `action.module`", "no absolute path, no `..`"],
            never: &["root:"],
        },
        ConfigCase {
            name: "a builtin name with a path in it",
            files: vec![("t.yaml", trigger_with("").replace("log-event.wasm", "'builtin:../../../../etc/passwd'"))],
            expect: &["field `action.module`", "unknown builtin module", "expected one of builtin:"],
            never: &["root:"],
        },
        ConfigCase {
            name: "builtin params nested deep and large",
            files: vec![(
                "t.yaml",
                trigger_with(&format!(
                    ", params: {{ reason: Ok, message: {}x{} }}",
                    "[".repeat(40),
                    "]".repeat(40)
                ))
                .replace("log-event.wasm", "builtin:record-event"),
            )],
            expect: &["field `action.params.message`", "expected string, found a list"],
            never: &[],
        },
        ConfigCase {
            name: "an absolute module path",
            files: vec![("t.yaml", trigger_with("").replace("log-event.wasm", "/etc/passwd"))],
            expect: &["no absolute path"],
            never: &["root:"],
        },
        ConfigCase {
            name: "an HTTP grant for every host",
            files: vec![("t.yaml", trigger_with(", grants: { http: ['*'] }"))],
            expect: &["lone `*`"],
            never: &[],
        },
        ConfigCase {
            name: "a watch namespace with a path in it",
            files: vec![(
                "t.yaml",
                "triggers:\n  - name: t\n    source: { type: kube-watch, apiVersion: v1, kind: ConfigMap, namespace: 'a/../b', labelSelector: 'app in (x' }\n    action: { module: log-event.wasm }\n".into(),
            )],
            expect: &["invalid namespace", "invalid label selector"],
            never: &[],
        },
        ConfigCase {
            name: "an empty webhook key",
            files: vec![
                (
                    "t.yaml",
                    "engine: { secrets: { dir: secrets } }\ntriggers:\n  - name: hook\n    source: { type: webhook, auth: { hmac: { secret: hook-key } } }\n    action: { module: log-event.wasm }\n".into(),
                ),
                ("secrets/hook-key", "\n".into()),
            ],
            expect: &["field `source.auth.secret`", "hook-key"],
            never: &[],
        },
        ConfigCase {
            name: "a one-character webhook key",
            files: vec![
                (
                    "t.yaml",
                    "engine: { secrets: { dir: secrets } }\ntriggers:\n  - name: hook\n    source: { type: webhook, auth: { bearer: { secret: hook-key } } }\n    action: { module: log-event.wasm }\n".into(),
                ),
                ("secrets/hook-key", "e".into()),
            ],
            expect: &["shorter than 6"],
            never: &[],
        },
    ]
}

/// Every config case through the real `check`: a clear error, located, and
/// never a crash, a hang or an echo of what a file held.
#[test]
fn config_inputs_are_refused_with_located_errors() {
    for case in config_cases() {
        let ws = Workspace::new();
        let mut config = None;
        for (name, text) in &case.files {
            let path = ws.write(name, text);
            if name.starts_with("t.") {
                config = Some(path);
            }
        }
        // A secrets directory named in a config resolves against the working directory.
        let config = config.expect("a config file");
        let out = std::process::Command::new(support::binary())
            .current_dir(ws.path())
            .args(["check", "--config"])
            .arg(&config)
            .arg("--modules")
            .arg(support::modules())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{}: {text}", case.name);
        for want in case.expect {
            assert!(
                text.contains(want),
                "{}: expected {want:?} in:\n{text}",
                case.name
            );
        }
        for never in case.never {
            assert!(
                !text.contains(never),
                "{}: {never:?} leaked:\n{text}",
                case.name
            );
        }
    }
}

/// Module files: a symlink out of the modules directory, a file that is not
/// wasm (its bytes never quoted), one over the size cap (refused unread).
#[test]
fn module_files_are_checked_before_they_are_read() {
    let ws = Workspace::new();
    let modules = ws.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    std::fs::copy(
        support::module("log-event.wasm"),
        modules.join("log-event.wasm"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", modules.join("escape.wasm")).unwrap();
    std::fs::write(
        modules.join("text.wasm"),
        "TOP-SECRET-CONTENTS of a text file",
    )
    .unwrap();
    let cases: [(&str, &str, &[&str]); 3] = [
        ("escape.wasm", "", &["outside the modules directory"]),
        ("text.wasm", "", &["not a WebAssembly file"]),
        (
            "log-event.wasm",
            "engine: { maxModuleSize: 2Ki }\n",
            &["modules may be at most 2048 bytes"],
        ),
    ];
    for (module, engine, expect) in cases {
        let config = ws.write(
            "t.yaml",
            &format!(
                "{engine}triggers:\n  - name: t\n    source: {{ type: schedule, every: 1h }}\n    action: {{ module: {module} }}\n"
            ),
        );
        let (code, out, err) = run_cli(
            &[
                "check",
                "--config",
                config.to_str().unwrap(),
                "--modules",
                modules.to_str().unwrap(),
            ],
            None,
        );
        let text = format!("{out}{err}");
        assert_eq!(code, 1, "{module}: {text}");
        for want in expect {
            assert!(text.contains(want), "{module}: expected {want:?} in {text}");
        }
        for never in ["root:", "TOP-SECRET", "[0x"] {
            assert!(!text.contains(never), "{module}: {never} leaked: {text}");
        }
    }
}

/// Sends raw bytes on a new connection and reads what comes back until the
/// server closes it or `wait` passes.
fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    let _ = stream.write_all(request);
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

fn host_port(base_url: &str) -> String {
    base_url.trim_start_matches("http://").to_string()
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// CPU time a process has used (user + system), from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    match request.send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

fn post(url: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut request = client.post(url).body(body.to_string());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    match request.send() {
        Ok(r) => (r.status().as_u16(), r.text().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

const HOOKS: &str = r#"
engine:
  secrets: { dir: secrets }
  server: { headerTimeout: 1s, bodyTimeout: 1s, idleTimeout: 2s }
triggers:
  - name: open
    source: { type: webhook, auth: none }
    action: { module: hostile.wasm, params: { mode: ok } }
  - name: signed
    source: { type: webhook, auth: { hmac: { secret: hook-key } }, maxBodySize: 960Ki }
    action: { module: hostile.wasm, params: { mode: ok } }
  - name: bearer
    source: { type: webhook, auth: { bearer: { secret: hook-key } } }
    action: { module: hostile.wasm, params: { mode: ok } }
  - name: tick
    source: { type: schedule, every: 1h }
    action: { module: hostile.wasm, params: { mode: ok } }
"#;

fn hooks_workspace() -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    ws.write("secrets/hook-key", "a-long-hmac-key-for-the-hook\n");
    let config = ws.write("hooks.yaml", HOOKS);
    (ws, config)
}

fn start_in(ws: &Workspace, config: &Path, extra: &[&str]) -> EngineProcess {
    // `engine.secrets.dir` is relative: run where the workspace is.
    let secrets = ws.path().join("secrets");
    let mut args = vec!["--secrets-dir", secrets.to_str().unwrap()];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    EngineProcess::start(config, &ws.state_dir(), &args)
}

/// The control surface: no token off loopback, tokens from files, and no
/// API call that skips a webhook's own authentication.
#[test]
fn the_api_needs_a_token_off_loopback_and_fire_cannot_skip_webhook_auth() {
    let (ws, config) = hooks_workspace();
    let secrets = ws.path().join("secrets");
    let state = ws.state_dir();
    let base = [
        "run",
        "--config",
        config.to_str().unwrap(),
        "--modules",
        support::modules().to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--secrets-dir",
        secrets.to_str().unwrap(),
    ];
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let mut args = base.to_vec();
        args.extend(["--listen", listen]);
        let (code, _, err) = run_cli(&args, None);
        assert_eq!(code, 2, "{listen}: {err}");
        assert!(
            err.contains("--api-token-file") && err.contains("--insecure-api"),
            "{err}"
        );
    }

    let insecure = start_in(&ws, &config, &["--listen", "0.0.0.0:0", "--insecure-api"]);
    insecure.wait_started();
    assert!(
        insecure.raw_log().contains("--insecure-api"),
        "a warning at start"
    );
    drop(insecure);

    let token_file = ws.write("api-token", "first-api-token-value\n");
    let engine = start_in(
        &ws,
        &config,
        &["--api-token-file", token_file.to_str().unwrap()],
    );
    engine.wait_started();
    let api = format!("{}/api/v1/triggers", engine.base_url());
    let cases: Vec<(Option<&str>, u16)> = vec![
        (None, 401),
        (Some("wrong-token-value"), 401),
        (Some("first-api-token-value"), 200),
    ];
    for (token, status) in cases {
        assert_eq!(get(&api, token).0, status, "{token:?}");
    }
    std::fs::write(&token_file, "the-second-api-token").unwrap();
    assert_eq!(
        get(&api, Some("first-api-token-value")).0,
        401,
        "the old token stops working"
    );
    assert_eq!(
        get(&api, Some("the-second-api-token")).0,
        200,
        "the file is re-read"
    );

    let fire = |name: &str| {
        post(
            &format!("{}/api/v1/triggers/{name}/fire", engine.base_url()),
            Some("the-second-api-token"),
            r#"{"data": {"forged": true}}"#,
        )
    };
    let (status, body) = fire("signed");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("POST /hooks/signed"), "{body}");
    assert_eq!(fire("tick").0, 202, "a schedule may be fired");
    assert_eq!(
        fire("open").0,
        202,
        "a webhook without auth has nothing to skip"
    );
    std::fs::write(&token_file, "  \n").unwrap();
    assert_eq!(
        get(&api, Some("the-second-api-token")).0,
        503,
        "an emptied file fails closed"
    );
}

/// Slowloris: 300 connections dribbling a request head and 50 that send
/// nothing are all closed by the timeouts, while a real webhook gets its 202.
#[test]
fn slow_and_idle_clients_are_cut_off_while_real_webhooks_get_through() {
    let (ws, config) = hooks_workspace();
    let engine = start_in(&ws, &config, &[]);
    engine.wait_started();
    let addr = host_port(&engine.base_url());
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut s = TcpStream::connect(&addr).unwrap();
            let head = format!("POST /hooks/open HTTP/1.1\r\nHost: x\r\nX-Slow-{i}: ");
            s.write_all(head.as_bytes()).unwrap();
            s
        })
        .collect();
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    let (status, body) = post(&format!("{}/hooks/open", engine.base_url()), None, "{}");
    assert_eq!(status, 202, "{body}");
    // Keep dribbling: one byte per connection now and then must not keep a head alive.
    for s in slow.iter_mut() {
        let _ = s.write_all(b"a");
    }
    let mut open: Vec<TcpStream> = slow.into_iter().chain(idle).collect();
    let deadline = Instant::now() + DEADLINE;
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} connections still open",
            open.len()
        );
        open.retain(|s| {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
            let mut buf = [0u8; 512];
            match (&*s).read(&mut buf) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        });
    }
    assert_eq!(get(&format!("{}/healthz", engine.base_url()), None).0, 200);
}

/// 300 concurrent unauthenticated 960 KiB bodies to an HMAC hook: none is
/// accepted, and the engine's memory grows by at most the in-flight body
/// budget (32 MiB by default) plus buffers: 96 MiB is the stated bound.
#[test]
fn unauthenticated_large_bodies_stay_within_the_memory_budget() {
    let (ws, config) = hooks_workspace();
    let engine = start_in(&ws, &config, &[]);
    engine.wait_started();
    let url = format!("{}/hooks/signed", engine.base_url());
    assert_eq!(post(&url, None, "{}").0, 401, "warm the path once");
    let pid = engine.pid();
    let before = support::memory_kib(pid).0;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(support::memory_kib(pid).0);
                std::thread::sleep(Duration::from_millis(10));
            }
            peak
        })
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let statuses: Vec<u16> = rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let body = bytes::Bytes::from(vec![b'x'; 960 * 1024]);
        let sends: Vec<_> = (0..300)
            .map(|_| {
                let (client, url, body) = (client.clone(), url.clone(), body.clone());
                tokio::spawn(async move {
                    client
                        .post(&url)
                        .header("x-hub-signature-256", "sha256=00")
                        .body(body)
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                        .unwrap_or(0)
                })
            })
            .collect();
        let mut out = Vec::new();
        for s in sends {
            out.push(s.await.unwrap());
        }
        out
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert!(
        !statuses.contains(&202),
        "nothing unauthenticated is accepted"
    );
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 503 | 0)),
        "401 (checked) or 503 (over the budget): {statuses:?}"
    );
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!(
        "RSS {before} KiB before, {peak} KiB at peak: +{grown_mib} MiB for 300 x 960 KiB bodies"
    );
    assert!(grown_mib < 96, "memory grew by {grown_mib} MiB");
    assert_eq!(get(&format!("{}/healthz", engine.base_url()), None).0, 200);
}

/// With 128 file descriptors and 200 connections, accepting fails with
/// EMFILE: the engine backs off instead of spinning, logs a line now and
/// then instead of a flood, and serves again once descriptors are free.
#[test]
fn out_of_file_descriptors_the_engine_backs_off_and_recovers() {
    let (ws, config) = hooks_workspace();
    let secrets = ws.path().join("secrets");
    let engine = EngineProcess::start_with_nofile(
        &config,
        &ws.state_dir(),
        &["--secrets-dir", secrets.to_str().unwrap()],
        128,
    );
    engine.wait_started();
    let addr = host_port(&engine.base_url());
    let held: Vec<TcpStream> = (0..200)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    // Let the accept loop meet EMFILE, then watch it for three seconds.
    engine.wait_for("the accept error", |lines| {
        lines
            .iter()
            .any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("cannot accept"))
            })
            .then_some(())
    });
    let (cpu_before, lines_before) = (cpu_time(engine.pid()), engine.lines().len());
    std::thread::sleep(Duration::from_secs(3));
    let cpu = cpu_time(engine.pid()) - cpu_before;
    let lines = engine.lines().len() - lines_before;
    eprintln!(
        "over 3 s out of descriptors: {} ms of CPU, {lines} log lines",
        cpu.as_millis()
    );
    assert!(
        cpu < Duration::from_millis(1500),
        "the accept loop spins: {cpu:?} of CPU in 3 s"
    );
    assert!(lines < 20, "the log floods: {lines} lines in 3 s");
    drop(held);
    let health = format!("{}/healthz", engine.base_url());
    let deadline = Instant::now() + DEADLINE;
    while get(&health, None).0 != 200 {
        assert!(Instant::now() < deadline, "the engine did not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Malformed and hostile requests: each gets its refusal, and the server
/// goes on serving.
#[test]
fn malformed_requests_get_clear_refusals() {
    let (ws, config) = hooks_workspace();
    let engine = start_in(&ws, &config, &[]);
    engine.wait_started();
    let addr = host_port(&engine.base_url());
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("a 100 KiB header", huge_header.into_bytes(), &[431, 0]),
        ("a garbage request line", b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        (
            "an unknown hook with a huge declared body",
            b"POST /hooks/nope HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n".to_vec(),
            &[404],
        ),
        (
            "a declared body over the hook's cap",
            b"POST /hooks/signed HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n".to_vec(),
            &[413],
        ),
        (
            "a wrong bearer token with a body that never comes",
            b"POST /hooks/bearer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong-token\r\nContent-Length: 500000\r\n\r\n".to_vec(),
            &[401],
        ),
        (
            "a body slower than the body timeout",
            b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"partial\":".to_vec(),
            &[408],
        ),
        (
            "a path with traversal",
            b"POST /hooks/../api/v1/triggers/tick/fire HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".to_vec(),
            &[404],
        ),
    ];
    for (name, request, statuses) in cases {
        let answer = raw_exchange(&addr, &request, Duration::from_secs(10));
        let status = status_of(&answer);
        assert!(
            statuses.contains(&status),
            "{name}: got {status}: {answer:.200}"
        );
    }
    assert_eq!(get(&format!("{}/healthz", engine.base_url()), None).0, 200);
}

/// A PEM-shaped multi-line value whose every line is unique to this run.
fn pem(id: &str, tag: &str) -> String {
    let line = |n: usize| {
        format!("MII{tag}{n}{}", id.replace('-', ""))
            .chars()
            .take(64)
            .collect::<String>()
    };
    format!(
        "-----BEGIN {tag} TEST KEY {id}-----\n{}\n{}\n{}\n-----END {tag} TEST KEY {id}-----\n",
        line(1),
        line(2),
        line(3)
    )
}

/// Every form of a value that must not appear: the value, trimmed, each of
/// its lines, and their JSON encodings.
fn forms(value: &str) -> Vec<String> {
    let mut out = vec![value.to_string(), value.trim().to_string()];
    out.extend(value.lines().map(|l| l.trim().to_string()));
    let json: Vec<String> = out
        .iter()
        .map(|f| {
            serde_json::to_string(f)
                .unwrap()
                .trim_matches('"')
                .to_string()
        })
        .collect();
    out.extend(json);
    out.retain(|f| f.chars().count() >= 6);
    out.sort();
    out.dedup();
    out
}

/// Every secret shape (plain, PEM, newline-terminated, JSON-escaped) from
/// every provider (environment, directory, Kubernetes Secret), through every
/// way a guest has to leak one (log, stdout, stderr, split writes, long
/// lines, output raw and JSON-encoded, error, panic, kv read back by a later
/// run, chain data, `imports:` params): no line of any value in anything the
/// engine writes — its log, every API answer, `runs` and `triggers` in every
/// output format, `check`, and the files of its state directory.
#[test]
fn secrets_in_every_shape_from_every_provider_reach_no_output() {
    use base64::Engine as _;
    let id = uuid::Uuid::now_v7().to_string();
    let values: Vec<(&str, String)> = vec![
        ("env-plain", format!("env-plain-{id}")),
        ("env-json", format!("json\"quote\\back/{id}")),
        ("dir-pem", pem(&id, "DIR")),
        ("dir-newline", format!("dir-newline-{id}\n")),
        ("kube-plain", format!("kube-plain-{id}")),
        ("kube-pem", pem(&id, "KUBE")),
        ("kube-newline", format!("kube-newline-{id}\n")),
    ];
    let server = wasmtrigger_test_apiserver::ApiServer::start(&[]);
    let data: serde_json::Map<String, Value> = values
        .iter()
        .filter(|(n, _)| n.starts_with("kube-"))
        .map(|(n, v)| {
            (
                n.to_string(),
                base64::engine::general_purpose::STANDARD.encode(v).into(),
            )
        })
        .collect();
    server
        .create(
            "",
            "secrets",
            "default",
            json!({"metadata": {"name": "leak-secrets"}, "data": data}),
        )
        .unwrap();
    let ws = Workspace::new();
    for (name, value) in values.iter().filter(|(n, _)| n.starts_with("dir-")) {
        ws.write(&format!("secrets/{name}"), value);
    }
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let names: Vec<&str> = values.iter().map(|(n, _)| *n).collect();
    let action = |then: &str| {
        json!({
            "module": "hostile.wasm",
            "params": {"mode": "leak-all", "names": names, "then": then},
            "grants": {"secrets": names},
            "imports": {"imported-env": "env-plain", "imported-pem": "dir-pem", "imported-kube": "kube-newline"},
        })
    };
    let config = json!({
        "engine": {"retry": {"max": 0}, "secrets": {"envPrefix": "WT_LEAK_", "kubernetes": {"name": "leak-secrets"}}},
        "triggers": [
            {"name": "leak-ok", "source": {"type": "webhook", "auth": "none"}, "action": action("ok")},
            {"name": "leak-fail", "source": {"type": "webhook", "auth": "none"}, "action": action("fail")},
            {"name": "leak-panic", "source": {"type": "webhook", "auth": "none"}, "action": action("panic")},
            {"name": "downstream", "source": {"type": "trigger", "of": "leak-ok"},
             "action": {"module": "hostile.wasm", "params": {"mode": "sleep", "ms": 0}}},
        ],
    });
    let config = ws.write(
        "leaks.json",
        &serde_json::to_string_pretty(&config).unwrap(),
    );
    let secrets_dir = ws.path().join("secrets");
    let engine = EngineProcess::start_with_env(
        &config,
        &ws.state_dir(),
        &[
            "--secrets-dir",
            secrets_dir.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--log-level",
            "info,wasmtrigger=debug",
        ],
        &[
            ("WT_LEAK_ENV_PLAIN", &values[0].1),
            ("WT_LEAK_ENV_JSON", &values[1].1),
        ],
    );
    engine.wait_started();
    let base = engine.base_url();
    // The run stream is a sink too: read it while the runs happen.
    let streamed = {
        let addr = base.trim_start_matches("http://").to_string();
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream
            .write_all(
                format!("GET /api/v1/runs/stream HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
            )
            .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        std::thread::spawn(move || {
            let (mut all, mut buf, mut runs) = (Vec::new(), [0u8; 8192], 0);
            let deadline = Instant::now() + DEADLINE;
            // 6 runs in all; stop when they are all in, or at the deadline.
            while runs < 6 && Instant::now() < deadline {
                if let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    all.extend_from_slice(&buf[..n]);
                    runs = String::from_utf8_lossy(&all)
                        .matches("\"attempts\"")
                        .count();
                }
            }
            String::from_utf8_lossy(&all).into_owned()
        })
    };
    for hook in ["leak-ok", "leak-fail", "leak-panic"] {
        assert_eq!(post(&format!("{base}/hooks/{hook}"), None, "{}").0, 202);
        engine.wait_runs(hook, 1);
    }
    engine.wait_runs("downstream", 1);
    // A later run finds the values in kv (stored redacted) and prints them.
    assert_eq!(post(&format!("{base}/hooks/leak-ok"), None, "{}").0, 202);
    engine.wait_runs("leak-ok", 2);
    engine.wait_runs("downstream", 2);

    let mut written: Vec<(String, String)> = Vec::new();
    // The history writer stores records a moment after they are logged.
    let deadline = Instant::now() + DEADLINE;
    let (runs, ids) = loop {
        let runs = support::http_get(&format!("{base}/api/v1/runs?limit=1000"));
        let ids: Vec<String> = serde_json::from_str::<Value>(&runs).unwrap()["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["runId"].as_str().unwrap().to_string())
            .collect();
        if ids.len() == 6 {
            break (runs, ids);
        }
        assert!(Instant::now() < deadline, "6 stored runs: {runs}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let first_ok = engine.runs("leak-ok")[0].clone();
    assert!(
        first_ok["output"].as_str().unwrap().contains("[redacted]"),
        "the guest did try: {first_ok}"
    );
    written.push(("GET /api/v1/runs".into(), runs));
    let streamed = streamed.join().unwrap();
    assert_eq!(
        streamed.matches("\"attempts\"").count(),
        6,
        "the stream carried every run: {streamed}"
    );
    written.push(("GET /api/v1/runs/stream".into(), streamed));
    for path in ["/api/v1/triggers", "/metrics"] {
        written.push((
            format!("GET {path}"),
            support::http_get(&format!("{base}{path}")),
        ));
    }
    let server_arg = ["--server", base.as_str()];
    for format in ["table", "json", "yaml"] {
        let (_, out, err) = run_cli(&[&["runs", "-o", format][..], &server_arg].concat(), None);
        written.push((format!("runs -o {format}"), out + &err));
        let (_, out, err) = run_cli(
            &[&["triggers", "-o", format][..], &server_arg].concat(),
            None,
        );
        written.push((format!("triggers -o {format}"), out + &err));
        for id in &ids {
            let (_, out, err) = run_cli(
                &[&["runs", "show", id, "-o", format][..], &server_arg].concat(),
                None,
            );
            written.push((format!("runs show -o {format}"), out + &err));
        }
    }
    for id in &ids {
        let (_, out, err) = run_cli(&[&["runs", "export", id][..], &server_arg].concat(), None);
        written.push(("runs export".into(), out + &err));
    }
    for id in &ids {
        written.push((
            format!("GET /api/v1/runs/{id}"),
            support::http_get(&format!("{base}/api/v1/runs/{id}")),
        ));
    }
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0);
    assert!(
        log.contains("from kv: [redacted]"),
        "the kv read-back happened"
    );
    written.push(("the engine's log".into(), log));
    let (_, out, err) = run_cli(
        &[
            "check",
            "--config",
            config.to_str().unwrap(),
            "--modules",
            support::modules().to_str().unwrap(),
        ],
        None,
    );
    written.push(("check".into(), out + &err));
    for file in support::walk(&ws.state_dir()) {
        written.push((
            file.display().to_string(),
            String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned(),
        ));
    }
    for (name, value) in &values {
        for form in forms(value) {
            for (place, text) in &written {
                assert!(
                    !text.contains(&form),
                    "secret `{name}` ({form:?}) appears in {place}"
                );
            }
        }
    }
}

/// One guest call case: a trigger name, the hostile guest's params, and a
/// text its run's error (or output) must contain.
struct CallCase {
    name: &'static str,
    params: Value,
    expect: &'static str,
}

/// Runs each case as a trigger of its own (the hostile guest, with `grants`
/// and `http` limits as given) and returns each run's error or output.
async fn run_calls(
    ws: &Workspace,
    server: Option<&wasmtrigger_test_apiserver::ApiServer>,
    cases: &[CallCase],
    grants: &str,
    http: &str,
) -> std::collections::HashMap<String, String> {
    let mut yaml = String::from("engine: { retry: { max: 0 } }\ntriggers:\n");
    for case in cases {
        yaml.push_str(&format!(
            "  - name: {}\n    source: {{ type: schedule, now: true }}\n    action: {{ module: hostile.wasm, params: {}, grants: {grants}, http: {http} }}\n",
            case.name, case.params
        ));
    }
    let (engine, runs) = match server {
        Some(server) => crate::kube_watch::start(ws, server, &yaml).await,
        None => {
            let config = ws.write("calls.yaml", &yaml);
            let options = wasmtrigger::engine::EngineOptions {
                module_cache: Some(support::shared_cache()),
                ..wasmtrigger::engine::EngineOptions::new(ws.state_dir())
            };
            support::start_engine_at(&config, support::modules(), options).await
        }
    };
    let mut out = std::collections::HashMap::new();
    for case in cases {
        let record = runs.wait_runs(case.name, 1).await.remove(0);
        let text = record.error.or(record.output).unwrap_or_default();
        assert!(
            text.contains(case.expect),
            "{}: expected {:?} in {text}",
            case.name,
            case.expect
        );
        out.insert(case.name.to_string(), text);
    }
    engine.shutdown().await;
    out
}

/// Object names, namespaces, kinds and label selectors with path tricks are
/// refused as `invalid` before any request: none reaches the API server,
/// even under a grant with no `names:` list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_names_with_path_tricks_never_reach_the_api_server() {
    let server = wasmtrigger_test_apiserver::ApiServer::start(&[]);
    let ws = Workspace::new();
    let call = |op: &str, kind: &str, namespace: &str, name: &str| json!({"mode": "kube", "kube": {"op": op, "api_version": "v1", "kind": kind, "namespace": namespace, "name": name, "object": {"metadata": {"labels": {"x": "y"}}}}});
    let cases = vec![
        CallCase {
            name: "traversal",
            params: call(
                "get",
                "ConfigMap",
                "default",
                "settings/../../secrets/db-password",
            ),
            expect: "invalid: invalid object name",
        },
        CallCase {
            name: "subresource",
            params: call("patch", "Pod", "default", "web-0/ephemeralcontainers"),
            expect: "invalid: invalid object name",
        },
        CallCase {
            name: "query",
            params: call(
                "delete",
                "ConfigMap",
                "default",
                "x?dryRun=All&propagationPolicy=Orphan",
            ),
            expect: "invalid: invalid object name",
        },
        CallCase {
            name: "encoded",
            params: call("get", "ConfigMap", "default", "%2e%2e"),
            expect: "invalid: invalid object name",
        },
        CallCase {
            name: "dot-dot",
            params: call("get", "ConfigMap", "default", ".."),
            expect: "invalid: invalid object name",
        },
        CallCase {
            name: "fragment",
            params: call("get", "ConfigMap", "default", "a#b"),
            expect: "invalid: invalid object name",
        },
        CallCase {
            name: "namespace",
            params: call("get", "ConfigMap", "default/../kube-system", "x"),
            expect: "invalid: invalid namespace",
        },
        CallCase {
            name: "kind",
            params: json!({"mode": "kube", "kube": {"op": "get", "api_version": "v1", "kind": "ConfigMap/../../secrets", "namespace": "default", "name": "x"}}),
            expect: "invalid: invalid kind",
        },
        CallCase {
            name: "api-version",
            params: json!({"mode": "kube", "kube": {"op": "get", "api_version": "v1/../../apis/x", "kind": "ConfigMap", "namespace": "default", "name": "x"}}),
            expect: "invalid: invalid apiVersion",
        },
        CallCase {
            name: "selector",
            params: json!({"mode": "kube", "kube": {"op": "list", "api_version": "v1", "kind": "ConfigMap", "namespace": "default", "label_selector": "app=web&limit=1"}}),
            expect: "invalid: invalid label selector",
        },
    ];
    let grants = "{ kube: [ { verbs: [get, list, patch, delete], apiVersion: v1, kind: ConfigMap, namespaces: ['*'] }, { verbs: [patch], apiVersion: v1, kind: Pod, namespaces: ['*'] } ] }";
    run_calls(&ws, Some(&server), &cases, grants, "{}").await;
    for request in server.requests() {
        for sign in [
            "..",
            "%2e",
            "ephemeral",
            "dryRun",
            "kube-system",
            "secrets",
            "limit=1",
        ] {
            assert!(!request.contains(sign), "{request} reached the API server");
        }
    }
}

/// Outbound HTTP keeps to its grants: host names resolving to loopback need
/// `allowInternal`, cross-origin redirects carry no credentials and no body,
/// and redirects count against the request cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_keeps_to_its_grants_through_redirects_and_dns() {
    use crate::support::http_server::TestServer;
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let ws = Workspace::new();
    let request = |method: &str, url: String, body: Option<&str>| {
        json!({"mode": "http", "request": {"method": method, "url": url, "body": body, "headers": [
            ["authorization", "Bearer the-api-credential"], ["x-api-key", "the-api-key"],
            ["cookie", "session=the-cookie"], ["accept", "application/json"]]}})
    };
    let redirect = |from: &TestServer, code: u16, to: String| {
        format!(
            "{}?code={code}&to={}",
            from.url("/redirect"),
            url::form_urlencoded::byte_serialize(to.as_bytes()).collect::<String>()
        )
    };
    let localhost = |s: &TestServer| format!("http://localhost:{}/echo", s.addr.port());
    let cases = vec![
        CallCase {
            name: "name-to-loopback",
            params: request("GET", localhost(&a), None),
            expect: "allowInternal",
        },
        CallCase {
            name: "ip-literal",
            params: request("GET", a.url("/echo"), None),
            expect: "\"status\":200",
        },
        CallCase {
            name: "cross-origin-302",
            params: request("GET", redirect(&a, 302, b.url("/echo")), None),
            expect: "\"status\":200",
        },
        CallCase {
            name: "cross-origin-307",
            params: request("POST", redirect(&a, 307, b.url("/echo")), Some("the-body")),
            expect: "would re-send the request body",
        },
        CallCase {
            name: "same-origin-307",
            params: request(
                "POST",
                redirect(&a, 307, a.url("/echo")),
                Some("same-origin-body"),
            ),
            expect: "same-origin-body",
        },
        CallCase {
            name: "redirects-count",
            params: request(
                "GET",
                redirect(&a, 302, redirect(&a, 302, a.url("/echo"))),
                None,
            ),
            expect: "redirects count as requests",
        },
    ];
    let grants = format!(
        "{{ http: ['{}', '{}', 'http://localhost:{}'] }}",
        a.grant(),
        b.grant(),
        a.addr.port()
    );
    let out = run_calls(&ws, None, &cases, &grants, "{ maxRequests: 2 }").await;
    assert!(
        !a.seen().iter().any(|s| s
            .headers
            .iter()
            .any(|(n, v)| n == "host" && v.starts_with("localhost"))),
        "the loopback name was never requested"
    );
    let at_b: Vec<_> = b.seen();
    assert_eq!(
        at_b.len(),
        1,
        "only the 302 reached the other origin: {at_b:?}"
    );
    let headers: Vec<&str> = at_b[0].headers.iter().map(|(n, _)| n.as_str()).collect();
    for dropped in ["authorization", "x-api-key", "cookie"] {
        assert!(
            !headers.contains(&dropped),
            "{dropped} crossed origins: {headers:?}"
        );
    }
    assert!(
        headers.contains(&"accept"),
        "the safelist is kept: {headers:?}"
    );
    assert!(out["cross-origin-302"].contains("GET"));

    // With allowInternal, the same loopback name is reachable.
    let ws = Workspace::new();
    let cases = vec![CallCase {
        name: "opted-in",
        params: request("GET", localhost(&a), None),
        expect: "\"status\":200",
    }];
    let grants = format!(
        "{{ http: [ {{ url: 'http://localhost:{}', allowInternal: true }} ] }}",
        a.addr.port()
    );
    run_calls(&ws, None, &cases, &grants, "{}").await;
}

/// A Redis entry over the trigger's size cap is dead-lettered without its
/// payload and never becomes an event; the entries after it run.
#[test]
fn an_oversized_queue_entry_is_dead_lettered_unread() {
    let redis = crate::support::redis_server::RedisServer::start();
    let ws = Workspace::new();
    let config = ws.write(
        "queue.yaml",
        &format!(
            "triggers:\n  - name: work\n    source: {{ type: redis-queue, url: '{}', stream: jobs, maxEntrySize: 64Ki }}\n    action: {{ module: hostile.wasm, params: {{ mode: ok }} }}\n",
            redis.url()
        ),
    );
    let mut con = redis.connection().unwrap();
    let big = "y".repeat(200 * 1024);
    let _: String = redis::cmd("XADD")
        .arg("jobs")
        .arg("*")
        .arg("data")
        .arg(&big)
        .query(&mut con)
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("jobs")
        .arg("*")
        .arg("data")
        .arg("{\"n\":1}")
        .query(&mut con)
        .unwrap();
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    let runs = engine.wait_runs("work", 1);
    assert_eq!(runs[0]["status"], "succeeded");
    let deadline = Instant::now() + DEADLINE;
    let dead = loop {
        let dead = redis.entries("jobs:dead");
        if !dead.is_empty() {
            break dead;
        }
        assert!(Instant::now() < deadline, "no dead letter");
        std::thread::sleep(Duration::from_millis(50));
    };
    let fields: std::collections::HashMap<_, _> = dead[0].1.iter().cloned().collect();
    assert!(
        fields
            .get("wasmtrigger.error")
            .is_some_and(|e| e.contains("maxEntrySize")),
        "{fields:?}"
    );
    assert!(
        !fields.values().any(|v| v.contains("yyyy")),
        "the payload is not copied"
    );
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0);
    assert_eq!(
        crate::support::runs_in_log(&log, "work").len(),
        1,
        "the big entry never ran"
    );
}

/// A CEL filter nested 1000 deep arrives by hot reload: it is rejected and
/// the running config keeps serving. A quadratic filter over a 14 KB body
/// ends as a failed run with reason `timeout` within the trigger's 1 s,
/// and the engine goes on.
#[test]
fn hostile_cel_by_reload_and_over_large_bodies_never_stops_the_engine() {
    let ws = Workspace::new();
    let with_filter = |cel: &str| {
        format!(
            "triggers:\n  - name: filtered\n    source: {{ type: webhook, auth: none }}\n    filter: {{ cel: '{cel}' }}\n    action: {{ module: hostile.wasm, timeout: 1s, params: {{ mode: ok }} }}\n"
        )
    };
    let config = ws.write("cel.yaml", &with_filter("true"));
    let engine = EngineProcess::start(&config, &ws.state_dir(), &["--poll-interval", "200ms"]);
    engine.wait_started();
    let hook = format!("{}/hooks/filtered", engine.base_url());
    std::fs::write(
        &config,
        with_filter(&format!("{}true{}", "(".repeat(1000), ")".repeat(1000))),
    )
    .unwrap();
    engine.wait_for("the rejection", |lines| {
        lines
            .iter()
            .any(|l| l["message"] == "config change rejected; the previous config keeps running")
            .then_some(())
    });
    assert_eq!(post(&hook, None, "{}").0, 202, "still serving");
    assert_eq!(engine.wait_runs("filtered", 1)[0]["status"], "succeeded");

    std::fs::write(
        &config,
        with_filter("event.data.body.items.all(a, event.data.body.items.exists(b, b == a))"),
    )
    .unwrap();
    engine.wait_for("the reload", |lines| {
        lines
            .iter()
            .any(|l| l["message"] == "config reloaded")
            .then_some(())
    });
    let items: Vec<u32> = (0..3000).collect();
    let body = json!({ "items": items }).to_string();
    assert!(body.len() > 13_000, "{}", body.len());
    assert_eq!(post(&hook, None, &body).0, 202);
    let slow = engine.wait_runs("filtered", 2)[1].clone();
    assert_eq!(slow["status"], "failed", "{slow}");
    assert_eq!(slow["reason"], "timeout", "{slow}");
    assert_eq!(post(&hook, None, r#"{"items": [1, 2]}"#).0, 202);
    assert_eq!(engine.wait_runs("filtered", 3)[2]["status"], "succeeded");
    assert_eq!(engine.stop(), 0);
}

/// Random raw requests — methods, paths, headers, declared and real body
/// lengths, chunked bodies, garbage — from a seeded generator, 8 at a time:
/// none gets a 5xx other than 503 (busy), every connection ends, and the
/// server answers /healthz afterwards. `WASMTRIGGER_FUZZ_CASES` sets the
/// count (default 400), `WASMTRIGGER_FUZZ_SEED` replays a run.
#[test]
fn random_requests_never_break_the_server() {
    let cases: usize = std::env::var("WASMTRIGGER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("WASMTRIGGER_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("property requests: seed {seed}, {cases} cases");
    let (ws, config) = hooks_workspace();
    let engine = start_in(&ws, &config, &[]);
    engine.wait_started();
    let addr = host_port(&engine.base_url());
    let request = |rng: &mut fastrand::Rng| -> Vec<u8> {
        let pick =
            |rng: &mut fastrand::Rng, from: &[&str]| from[rng.usize(..from.len())].to_string();
        let method = pick(
            rng,
            &[
                "POST", "POST", "GET", "PUT", "DELETE", "OPTIONS", "P\0ST", "",
            ],
        );
        let path = pick(
            rng,
            &[
                "/hooks/open",
                "/hooks/signed",
                "/hooks/",
                "/hooks/%2e%2e",
                "/api/v1/triggers",
                "/api/v1/runs?limit=-1",
                "/api/v1/runs/../../etc",
                "/api/v1/triggers/open/fire",
                "/healthz",
                "*",
                "//",
                "/hooks/open?x=%ff",
            ],
        );
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n");
        let body: Vec<u8> = match rng.u8(..7) {
            0 => Vec::new(),
            5 => br#"{"specversion":"1.0","id":"","source":"/s","type":"t","data_base64":"%%"}"#
                .to_vec(),
            6 => format!(
                "[{}]",
                r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"},"#
                    .repeat(rng.usize(..50))
            )
            .into_bytes(),
            1 => br#"{"a": [1, 2, {"b": null}]}"#.to_vec(),
            2 => (0..rng.usize(..4096)).map(|_| rng.u8(..)).collect(),
            3 => format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            _ => b"{\"unterminated\": ".to_vec(),
        };
        match rng.u8(..6) {
            0 => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
            1 => head.push_str(&format!(
                "Content-Length: {}\r\n",
                body.len() + rng.usize(1..50)
            )),
            2 => head.push_str("Content-Length: -1\r\n"),
            3 => head.push_str("Transfer-Encoding: chunked\r\n"),
            4 => head.push_str(&format!(
                "Content-Length: {}\r\nContent-Length: 0\r\n",
                body.len()
            )),
            _ => {}
        }
        for _ in 0..rng.usize(..4) {
            let name = pick(
                rng,
                &[
                    "Authorization",
                    "X-Hub-Signature-256",
                    "Content-Type",
                    "X-\0",
                    "Expect",
                    "Connection",
                    "ce-specversion",
                    "ce-id",
                    "ce-\u{e9}",
                ],
            );
            let value = pick(
                rng,
                &[
                    "Bearer x",
                    "sha256=zz",
                    "sha256=00",
                    "application/json",
                    "100-continue",
                    "close",
                    "\u{7f}",
                    "application/cloudevents+json",
                    "application/cloudevents-batch+json",
                    "1.0",
                    "%zz",
                ],
            );
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if rng.bool() {
            bytes.extend_from_slice(&body);
        } else {
            bytes.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(b"\r\nzz\r\n");
        }
        if rng.u8(..10) == 0 {
            let cut = rng.usize(..bytes.len().max(1));
            bytes.truncate(cut);
        }
        bytes
    };
    let seen = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    std::thread::scope(|scope| {
        for worker in 0..8u64 {
            let (addr, seen) = (&addr, &seen);
            scope.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(seed ^ worker);
                for _ in (worker as usize..cases).step_by(8) {
                    let bytes = request(&mut rng);
                    let started = Instant::now();
                    let answer = raw_exchange(addr, &bytes, Duration::from_secs(10));
                    assert!(
                        started.elapsed() < Duration::from_secs(10),
                        "a connection hung: {:?}",
                        String::from_utf8_lossy(&bytes)
                    );
                    let status = status_of(&answer);
                    assert!(
                        status < 500 || status == 503,
                        "{status} for {:?}: {answer:.300}",
                        String::from_utf8_lossy(&bytes)
                    );
                    *seen.lock().unwrap().entry(status).or_default() += 1;
                }
            });
        }
    });
    eprintln!(
        "requests: statuses {:?} (0: closed without an answer), 0 server errors",
        seen.lock().unwrap()
    );
    assert_eq!(get(&format!("{}/healthz", engine.base_url()), None).0, 200);
    assert_eq!(engine.stop(), 0);
}

/// A flood of badly signed requests to a hook whose key lives in a
/// Kubernetes Secret costs at most a read of the Secret per cache interval,
/// not one API request each.
#[test]
fn unauthenticated_requests_do_not_become_api_server_calls() {
    use base64::Engine as _;
    let server = wasmtrigger_test_apiserver::ApiServer::start(&[]);
    let key =
        base64::engine::general_purpose::STANDARD.encode("the-hook-key-in-a-kubernetes-secret");
    server
        .create(
            "",
            "secrets",
            "default",
            json!({"metadata": {"name": "hook-keys"}, "data": {"hook-key": key}}),
        )
        .unwrap();
    let ws = Workspace::new();
    let kubeconfig = ws.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let config = ws.write(
        "hooks.yaml",
        "engine: { secrets: { kubernetes: { name: hook-keys } } }\ntriggers:\n  - name: signed\n    source: { type: webhook, auth: { hmac: { secret: hook-key } } }\n    action: { module: hostile.wasm, params: { mode: ok } }\n",
    );
    let engine = EngineProcess::start(
        &config,
        &ws.state_dir(),
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    engine.wait_started();
    let reads = || {
        server
            .requests()
            .iter()
            .filter(|r| r.contains("/secrets/hook-keys"))
            .count()
    };
    let before = reads();
    let url = format!("{}/hooks/signed", engine.base_url());
    let client = reqwest::blocking::Client::new();
    for _ in 0..200 {
        let status = client
            .post(&url)
            .header("x-hub-signature-256", "sha256=00")
            .body("{}")
            .send()
            .unwrap()
            .status();
        assert_eq!(status, 401);
    }
    let during = reads() - before;
    assert!(during <= 2, "{during} Secret reads for 200 requests");
}

#[test]
fn fixture_files_that_are_huge_deep_malformed_or_point_elsewhere_fail_alone() {
    let ws = Workspace::new();
    let deep_json = format!(
        "{{\"action\": {{\"module\": \"counter.wasm\"}}, \"event\": {{\"data\": {}{}}}, \"expect\": {{\"output\": \"1\"}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let deep_yaml = format!(
        "action: {{ module: counter.wasm }}\nevent: {{ data: {}{} }}\nexpect: {{ output: '1' }}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    // A billion-laughs alias bomb.
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = (b'a' + i - 1) as char;
        let name = (b'a' + i) as char;
        bomb.push_str(&format!("{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let cases: Vec<(&str, String, &str)> = vec![
        ("deep.fixture.json", deep_json, "deep.fixture.json: not valid JSON"),
        ("deep.fixture.yaml", deep_yaml, "deep.fixture.yaml: not valid YAML"),
        ("bomb.fixture.yaml", bomb, "aliases (`*name`) are bounded"),
        ("binary.fixture.json", "\u{0}\u{1}\u{2}garbage".into(), "not valid JSON"),
        (
            "elsewhere.fixture.yaml",
            "name: elsewhere\naction: { module: ../../../../../../etc/passwd }\nevent: { data: {} }\nexpect: { output: x }\n".into(),
            "not a WebAssembly file",
        ),
        (
            "kinds.fixture.yaml",
            "name: kinds\naction: { module: counter.wasm }\nevent: { data: {} }\ncalls: [ { call: fs.read, answer: x } ]\nexpect: { output: x }\n".into(),
            "expected interface.function",
        ),
    ];
    for (file, text, _) in &cases {
        ws.write(&format!("hostile/{file}"), text);
    }
    let huge = ws.path().join("hostile/huge.fixture.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    ws.write(
        "hostile/fine.fixture.yaml",
        "name: fine\naction: { module: counter.wasm }\nevent: { data: {} }\ncalls: [ { call: kv.increment, answer: 1 } ]\nexpect: { output: '1' }\n",
    );
    let dir = ws.path().join("hostile").display().to_string();
    let modules = support::modules().display().to_string();
    let (code, out, err) = run_cli(&["test", &dir, "--modules", &modules], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.ends_with("1 passed, 7 failed\n"), "{out}");
    for (_, _, says) in &cases {
        assert!(out.contains(says), "{says:?} is not in {out}");
    }
    assert!(
        out.contains("larger than the 4 MiB a fixture may have"),
        "{out}"
    );
    assert!(out.contains("ok    ") && out.contains(": fine"), "{out}");
}
