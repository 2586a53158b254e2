//! Runs that explain themselves: every stored run record holds the event,
//! the filter's verdict, the guests' log lines and each capability call with
//! the answer the guest got; `runs show` prints them readably, online and
//! from the state directory; the module versions recorded runs used are kept
//! by content until retention drops their last record.

use std::time::Duration;

use serde_json::Value;

use crate::support::http_server::TestServer;
use crate::support::{self, EngineProcess, Workspace, run_cli};

/// The recorded-module files of a state directory, by name.
fn kept_modules(state: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state.join("recorded-modules"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".wasm"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn the_examples_runs_hold_their_event_verdict_logs_and_calls() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start());
    let ws = Workspace::new();
    let config = ws.write(
        "recorded.yaml",
        &format!(
            r#"
triggers:
  - name: notify
    source: {{ type: webhook, auth: none }}
    filter: {{ module: ready-replicas.wasm }}
    action:
      module: builtin:http-notify
      params: {{ url: "{url}", text: "{{kind}} {{id}}" }}
      grants: {{ http: ["{grant}"] }}
"#,
            url = server.url("/echo"),
            grant = server.grant()
        ),
    );
    let state = ws.state_dir();
    let engine = EngineProcess::start(&config, &state, &[]);
    engine.wait_started();
    let deployment =
        std::fs::read_to_string(support::repo().join("examples/events/deployment-ready.json"))
            .unwrap();
    // Fired with the Deployment as the event's data, as a kube-watch would carry it.
    let sent: Value = serde_json::from_str(&deployment).unwrap();
    engine.fire("notify", Some(&sent));
    let run = engine.wait_runs("notify", 1).remove(0);
    assert_eq!(run["status"], "succeeded", "{run}");
    let run_id = run["run_id"].as_str().unwrap().to_string();
    // The record is stored just after its log line.
    let deadline = std::time::Instant::now() + support::DEADLINE;
    let record: Value = loop {
        let stored = engine.stored_runs("notify");
        if let Some(r) = stored.into_iter().find(|r| r["runId"] == run_id) {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "record not stored");
        std::thread::sleep(Duration::from_millis(50));
    };
    let full: Value = serde_json::from_str(&support::http_get(&format!(
        "{}/api/v1/runs/{run_id}",
        engine.base_url()
    )))
    .unwrap();
    assert_eq!(full["runId"], record["runId"]);
    let recording = &full["recording"];

    // The event, as the modules saw it.
    let data: Value = serde_json::from_str(
        recording["event"]["data"]
            .as_str()
            .expect("event data kept"),
    )
    .unwrap();
    assert_eq!(data, sent, "the fired Deployment");
    assert_eq!(recording["event"]["dataBytes"], data.to_string().len());
    // The verdict.
    let verdict = &recording["verdict"];
    assert!(
        verdict["filter"]
            .as_str()
            .unwrap()
            .starts_with("ready-replicas.wasm@")
    );
    assert_eq!(verdict["passed"], true);
    // Both guests' log lines, the filter's debug line included.
    let logs = recording["logs"].as_array().unwrap();
    assert!(
        logs.iter().any(|l| l["phase"] == "filter"
            && l["level"] == "debug"
            && l["message"]
                .as_str()
                .unwrap()
                .contains("3/3 replicas ready")),
        "{logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l["phase"] == "action"
            && l["attempt"] == 1
            && l["message"]
                .as_str()
                .unwrap()
                .contains("notified about event")),
        "{logs:#?}"
    );
    // The HTTP call, with what was asked and what came back.
    let calls = recording["calls"].as_array().unwrap();
    let send = calls
        .iter()
        .find(|c| c["interface"] == "http" && c["function"] == "send")
        .unwrap_or_else(|| panic!("no http.send in {calls:#?}"));
    assert!(
        send["args"]
            .as_str()
            .unwrap()
            .starts_with(&format!("POST {}", server.url("/echo"))),
        "{send}"
    );
    assert_eq!(send["outcome"], "ok");
    assert_eq!(send["answer"]["status"], 200);
    assert_eq!(server.seen().len(), 1, "one request reached the server");

    // `runs show`, readable, from the API and then from the stopped engine's state dir.
    let (code, shown, err) = run_cli(
        &["runs", "show", &run_id, "--server", &engine.base_url()],
        None,
    );
    assert_eq!(code, 0, "{err}");
    for part in [
        "trigger notify  succeeded",
        "filter ready-replicas.wasm@",
        "passed",
        "log:",
        "notified about event",
        "calls:",
        "http.send POST",
        "event data (",
        "\"readyReplicas\": 3",
    ] {
        assert!(shown.contains(part), "`{part}` missing from:\n{shown}");
    }
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
    let state_arg = state.display().to_string();
    let (code, offline, err) = run_cli(
        &[
            "runs",
            "show",
            &run_id,
            "--state-dir",
            &state_arg,
            "--server",
            "http://127.0.0.1:9",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(offline.contains("http.send POST"), "{offline}");
    // Both module versions the run used are kept by content.
    assert_eq!(kept_modules(&state).len(), 2, "{:?}", kept_modules(&state));
}

#[test]
fn retention_drops_module_versions_no_record_names_any_more() {
    let ws = Workspace::new();
    let modules = ws.path().join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let action = modules.join("act.wasm");
    std::fs::copy(support::module("hostile.wasm"), &action).unwrap();
    let config = ws.write(
        "retained.yaml",
        "engine: { history: { maxPerTrigger: 2 } }\ntriggers:\n  - name: act\n    source: { type: webhook, auth: none }\n    action: { module: act.wasm, params: { mode: ok } }\n",
    );
    let state = ws.state_dir();
    let modules_arg = modules.display().to_string();
    let engine = EngineProcess::start_in(
        ws.path(),
        &[
            "run",
            "--config",
            &config.display().to_string(),
            "--modules",
            &modules_arg,
            "--state-dir",
            &state.display().to_string(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    engine.wait_started();
    let fire = |n: usize| {
        for _ in 0..n {
            let r = reqwest::blocking::Client::new()
                .post(format!("{}/hooks/act", engine.base_url()))
                .body("{}")
                .send()
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    };
    fire(1);
    engine.wait_runs("act", 1);
    let first = kept_modules(&state);
    assert_eq!(first.len(), 1, "{first:?}");

    // A new version of the module: hot reload picks it up.
    let tmp = modules.join(".act.wasm.tmp");
    std::fs::copy(support::module("log-event.wasm"), &tmp).unwrap();
    std::fs::rename(&tmp, &action).unwrap();
    engine.wait_for("the new version", |lines| {
        lines
            .iter()
            .any(|l| {
                l["message"] == "module reloaded"
                    && l["module"].as_str().is_some_and(|m| {
                        m.starts_with("act.wasm@") && !first[0].starts_with(&m[9..])
                    })
            })
            .then_some(())
    });
    // Two runs on the new version push the first record out (maxPerTrigger: 2).
    fire(2);
    engine.wait_runs("act", 3);
    let deadline = std::time::Instant::now() + support::DEADLINE;
    loop {
        let kept = kept_modules(&state);
        if kept.len() == 1 && kept[0] != first[0] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the old version is still kept: {kept:?} (first: {first:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
}

#[test]
fn replaying_a_kube_patching_run_sends_nothing_and_is_identical() {
    let ws = Workspace::new();
    let (server, kube_env) = crate::support::cluster::with_web_deployment(&ws);
    let config = ws.write(
        "patch.yaml",
        &format!("triggers:\n{}", crate::support::cluster::LABEL_WEB_TRIGGER),
    );
    let state = ws.state_dir();
    let engine =
        EngineProcess::start_with_env(&config, &state, &[], &[("KUBECONFIG", kube_env.as_str())]);
    engine.wait_started();
    let record = engine.fire_and_record("label-web", serde_json::json!({"go": true}));
    assert_eq!(record["status"], "succeeded", "{record}");
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
    let web = server.get("apps", "deployments", "default", "web").unwrap();
    assert_eq!(web["metadata"]["labels"]["touched"], "yes");
    let (requests, version) = (server.requests().len(), server.resource_version());

    let run_id = record["runId"].as_str().unwrap();
    let state_arg = state.display().to_string();
    let mut replay = std::process::Command::new(support::binary());
    replay
        .args(["replay", run_id, "--state-dir", &state_arg])
        .args(["--server", "http://127.0.0.1:9"])
        .env("KUBECONFIG", &kube_env);
    let out = replay.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(": identical"), "{text}");
    assert_eq!(
        server.requests().len(),
        requests,
        "the replay reached the API server"
    );
    assert_eq!(server.resource_version(), version);

    // Bad input is exit 2, named.
    let (code, _, err) = run_cli(
        &[
            "replay",
            "no-such-run",
            "--state-dir",
            &state_arg,
            "--server",
            "http://127.0.0.1:9",
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no run no-such-run"), "{err}");
}

#[test]
fn replaying_with_a_changed_module_reports_exactly_what_changed() {
    let ws = Workspace::new();
    let config = ws.write(
        "kv.yaml",
        "triggers:\n  - name: remember\n    source: { type: schedule, every: 24h }\n    action: { module: hostile.wasm, params: { mode: kv-set, key: seen, value: twice } }\n",
    );
    let state = ws.state_dir();
    let engine = EngineProcess::start(&config, &state, &[]);
    engine.wait_started();
    let record = engine.fire_and_record("remember", serde_json::json!({}));
    assert_eq!(record["status"], "succeeded", "{record}");
    let run_id = record["runId"].as_str().unwrap().to_string();
    let base = engine.base_url();
    let changed = ws.path().join("changed");
    std::fs::create_dir_all(&changed).unwrap();
    std::fs::copy(
        support::module("log-event.wasm"),
        changed.join("hostile.wasm"),
    )
    .unwrap();
    let module_arg = changed.join("hostile.wasm").display().to_string();

    // Through the running engine's API: the recorded version is identical…
    let (code, out, err) = run_cli(&["replay", &run_id, "--server", &base], None);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(": identical"), "{out}");
    // …and another module under the same file name is not.
    let (code, online, err) = run_cli(
        &[
            "replay",
            &run_id,
            "--server",
            &base,
            "--module",
            &module_arg,
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(code, 1, "{online}{err}");
    // Bad requests are refused, named.
    let post = |body: &str| {
        let r = reqwest::blocking::Client::new()
            .post(format!("{base}/api/v1/runs/{run_id}/replay"))
            .body(body.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, text) = post("not json");
    assert_eq!(status, 400, "{text}");
    let (status, text) = post(r#"{"action": {"name": "x.wasm", "wasm": "%%%"}}"#);
    assert!(
        status == 422 && text.contains("not base64"),
        "{status} {text}"
    );
    let (status, text) = post(r#"{"action": {"name": "x.wasm", "wasm": "AAAA"}}"#);
    assert!(
        status == 422 && text.contains("WebAssembly"),
        "{status} {text}"
    );
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/api/v1/runs/no-such-run/replay"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
    // The kv write was answered from the recording: the store holds only the first run's.
    assert_eq!(
        log.matches("hostile mode kv-set starting").count(),
        2,
        "run and the API replay"
    );

    // From the stopped engine's state directory: the same answers.
    let state_arg = state.display().to_string();
    let local = [
        "--state-dir",
        state_arg.as_str(),
        "--server",
        "http://127.0.0.1:9",
    ];
    let (code, out, err) = run_cli(&[&["replay", run_id.as_str()][..], &local].concat(), None);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run_cli(
        &[
            &[
                "replay",
                run_id.as_str(),
                "--module",
                &module_arg,
                "-o",
                "json",
            ][..],
            &local,
        ]
        .concat(),
        None,
    );
    assert_eq!(code, 1, "{out}{err}");
    let online: Value = serde_json::from_str(&online).unwrap();
    let report: Value = serde_json::from_str(&out).unwrap();
    for field in [
        "identical",
        "verdict",
        "output",
        "error",
        "calls",
        "divergences",
    ] {
        assert_eq!(
            online[field], report[field],
            "API and local reports differ in {field}"
        );
    }
    assert_eq!(report["identical"], false);
    assert_eq!(report["verdict"]["same"], true, "no filter either way");
    assert_eq!(report["error"]["same"], true, "neither failed");
    assert_eq!(report["output"]["same"], false);
    assert_eq!(report["output"]["recorded"], record["output"]);
    assert_eq!(
        report["calls"]["recorded"],
        serde_json::json!([r#"kv.set "seen" = "twice" → ok"#]),
        "{report:#}"
    );
    assert_eq!(report["calls"]["replayed"], serde_json::json!([]));
    assert_eq!(
        report["divergences"],
        serde_json::json!([r#"kv.set "seen" = "twice": recorded, not made"#])
    );
}

#[test]
fn a_live_replay_makes_the_calls_the_recording_cannot_answer_under_the_grants() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(TestServer::start());
    let ws = Workspace::new();
    // A 10,000-byte response: its recording keeps 4 KiB of the body, so it cannot be replayed.
    let config = ws.write(
        "big.yaml",
        &format!(
            "triggers:\n  - name: big\n    source: {{ type: schedule, every: 24h }}\n    action: {{ module: hostile.wasm, params: {{ mode: http, request: {{ method: GET, url: \"{}\" }} }}, grants: {{ http: [\"{}\"] }} }}\n",
            server.url("/big?bytes=10000"),
            server.grant()
        ),
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_started();
    let record = engine.fire_and_record("big", serde_json::json!({}));
    assert_eq!(record["status"], "succeeded", "{record}");
    let run_id = record["runId"].as_str().unwrap().to_string();
    let base = engine.base_url();
    assert_eq!(server.seen().len(), 1);

    let (code, out, err) = run_cli(&["replay", &run_id, "--server", &base, "-o", "json"], None);
    assert_eq!(code, 1, "{out}{err}");
    let refused: Value = serde_json::from_str(&out).unwrap();
    assert!(
        refused["divergences"][0]
            .as_str()
            .unwrap()
            .contains("its recorded answer is not whole"),
        "{refused:#}"
    );
    assert_eq!(server.seen().len(), 1, "a replay sends nothing");

    let (_, out, err) = run_cli(
        &["replay", &run_id, "--server", &base, "--live", "-o", "json"],
        None,
    );
    let live: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(live["divergences"], serde_json::json!([]), "{live:#}");
    assert!(
        live["madeLive"][0]
            .as_str()
            .unwrap()
            .starts_with("http.send GET"),
        "{live:#}"
    );
    assert_eq!(live["error"]["same"], true, "{live:#}");
    assert_eq!(server.seen().len(), 2, "the live call went out, once");

    // Offline, there are no grants to go live with.
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
    let state = ws.state_dir().display().to_string();
    let (code, _, err) = run_cli(
        &[
            "replay",
            &run_id,
            "--state-dir",
            &state,
            "--server",
            "http://127.0.0.1:9",
            "--live",
        ],
        None,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--live needs the running engine"), "{err}");
}

#[test]
fn redrive_resubmits_exactly_the_failed_events_of_a_window() {
    let ws = Workspace::new();
    let config = ws.write(
        "flaky.yaml",
        "triggers:\n  - name: flaky\n    source: { type: schedule, every: 24h }\n    action: { module: hostile.wasm, params: { mode: work }, retry: { max: 0 } }\n",
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_started();
    let base = engine.base_url();
    let failing = serde_json::json!({"body": {"failures": 1}});
    let fine = serde_json::json!({"body": {}});
    // Two failures before the window…
    for _ in 0..2 {
        engine.fire_and_record("flaky", failing.clone());
    }
    std::thread::sleep(Duration::from_millis(20));
    let window = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(20));
    // …and three failures and two successes in it.
    let mut in_window = Vec::new();
    for data in [&failing, &fine, &failing, &fine, &failing] {
        let record = engine.fire_and_record("flaky", data.clone());
        if record["status"] == "failed" {
            in_window.push(record["runId"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(in_window.len(), 3);
    in_window.sort();
    let ids = |v: &Value, key: &str| -> Vec<String> {
        let mut ids: Vec<String> = v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["runId"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    let redrive = |extra: &[&str]| -> Value {
        let mut args = vec![
            "redrive",
            "--trigger",
            "flaky",
            "--since",
            &window,
            "--server",
            &base,
            "-o",
            "json",
        ];
        args.extend_from_slice(extra);
        let (code, out, err) = run_cli(&args, None);
        assert_eq!(code, 0, "{out}{err}");
        serde_json::from_str(&out).unwrap()
    };

    // A dry run lists exactly them; with a module that handles them, all are kept;
    // with the module that failed, none is.
    let dry = redrive(&["--dry-run"]);
    assert_eq!(ids(&dry, "redriven"), in_window);
    let fixed_module = support::module("log-event.wasm").display().to_string();
    let checked = redrive(&["--dry-run", "--module", &fixed_module]);
    assert_eq!(ids(&checked, "redriven"), in_window, "{checked:#}");
    assert!(
        checked["replayed"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["fixed"] == true)
    );
    let same_module = support::module("hostile.wasm").display().to_string();
    let still = redrive(&["--dry-run", "--module", &same_module]);
    assert_eq!(ids(&still, "redriven"), Vec::<String>::new(), "{still:#}");
    assert_eq!(engine.runs("flaky").len(), 7, "dry runs resubmit nothing");

    // Bad requests are refused, named; an unknown trigger is 404.
    for (path, body, status, says) in [
        (
            "flaky",
            r#"{"status": "bogus"}"#,
            400,
            "expected failed, succeeded, filtered or any",
        ),
        ("flaky", "not json", 400, "body is not JSON"),
        ("flaky", r#"{"since": "yesterday-ish"}"#, 400, ""),
        ("nope", "{}", 404, "no trigger"),
    ] {
        let r = reqwest::blocking::Client::new()
            .post(format!("{base}/api/v1/triggers/{path}/redrive"))
            .body(body)
            .send()
            .unwrap();
        let code = r.status().as_u16();
        let text = r.text().unwrap();
        assert!(
            code == status && text.contains(says),
            "{body}: {code} {text}"
        );
    }
    assert_eq!(
        engine.runs("flaky").len(),
        7,
        "refused requests resubmit nothing"
    );

    // The real thing: three new events, each run naming the run it repeats.
    let done = redrive(&[]);
    assert_eq!(ids(&done, "redriven"), in_window);
    engine.wait_runs("flaky", 10);
    let deadline = std::time::Instant::now() + support::DEADLINE;
    let mut redriven_of = loop {
        let stored = engine.stored_runs("flaky");
        let of: Vec<String> = stored
            .iter()
            .filter_map(|r| r["redriveOf"].as_str().map(str::to_string))
            .collect();
        if of.len() == 3 {
            break of;
        }
        assert!(std::time::Instant::now() < deadline, "{stored:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    redriven_of.sort();
    assert_eq!(redriven_of, in_window);
    let (code, log) = engine.stop_and_log();
    assert_eq!(code, 0, "{log}");
}
