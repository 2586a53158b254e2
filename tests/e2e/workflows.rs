//! Workflows and observability: chains with data handed on, fan-in, webhooks
//! with authentication and back-pressure, stored history through the CLI,
//! manual firing, /metrics matching what happened, /readyz during start-up.

use std::collections::HashMap;

use hmac::Mac;
use serde_json::{Value, json};
use wasmtrigger::engine::EngineOptions;
use wasmtrigger::runs::RunRecord;

use crate::support::{self, EngineProcess, Workspace, run_cli, start_engine, start_engine_at};

fn output(record: &RunRecord) -> Value {
    serde_json::from_str(record.output.as_deref().unwrap_or("null")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_step_chain_hands_data_on_and_takes_the_failure_branch() {
    let ws = Workspace::new();
    let (engine, runs) = start_engine(
        &ws,
        r#"
engine: { retry: { max: 0 } }
triggers:
  - name: build
    source: { type: schedule, now: true }
    action: { module: log-event.wasm }
  - name: test
    source: { type: trigger, of: build }
    action: { module: log-event.wasm }
  - name: deploy
    source: { type: trigger, of: test, on: [success] }
    action: { module: log-event.wasm }
  - name: flaky
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: fail } }
  - name: page-someone
    source: { type: trigger, of: flaky, on: [failure] }
    action: { module: log-event.wasm }
  - name: celebrate
    source: { type: trigger, of: flaky, on: [success] }
    action: { module: log-event.wasm }
"#,
    )
    .await;
    let build = runs.wait_runs("build", 1).await.remove(0);
    let test = runs.wait_runs("test", 1).await.remove(0);
    let deploy = runs.wait_runs("deploy", 1).await.remove(0);
    let paged = runs.wait_runs("page-someone", 1).await.remove(0);
    let flaky = runs.wait_runs("flaky", 1).await.remove(0);
    engine.shutdown().await;

    // Each step's event names the step before it and carries its output.
    let test_event = output(&test);
    assert_eq!(test_event["source"], "trigger");
    assert_eq!(test_event["kind"], "success");
    assert_eq!(test_event["data"]["upstream"]["trigger"], "build");
    assert_eq!(
        test_event["data"]["upstream"]["runId"],
        build.run_id.as_str()
    );
    assert_eq!(
        test_event["data"]["upstream"]["output"],
        output(&build),
        "build's output handed on as JSON"
    );
    let deploy_event = output(&deploy);
    assert_eq!(deploy_event["data"]["upstream"]["trigger"], "test");
    assert_eq!(
        deploy_event["data"]["upstream"]["output"]["data"]["upstream"]["trigger"],
        "build"
    );
    assert_eq!(deploy.upstream.as_ref().unwrap().run_id, test.run_id);
    assert_eq!(test.upstream.as_ref().unwrap().event_id, build.event_id);

    // The failure branch ran, with the error; the success branch did not.
    let paged_event = output(&paged);
    assert_eq!(paged_event["kind"], "failure");
    assert_eq!(paged_event["data"]["upstream"]["status"], "failed");
    assert_eq!(
        paged_event["data"]["upstream"]["error"],
        flaky.error.clone().unwrap().as_str()
    );
    assert!(
        flaky
            .error
            .as_deref()
            .unwrap()
            .contains("failing on purpose")
    );
    assert!(runs.of("celebrate").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_with_all_fires_once_when_every_upstream_ended_within_the_window() {
    let ws = Workspace::new();
    let late = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let yaml = format!(
        r#"
triggers:
  - name: a
    source: {{ type: schedule, now: true }}
    action: {{ module: log-event.wasm }}
  - name: b
    source: {{ type: schedule, now: true }}
    action: {{ module: counter.wasm }}
  - name: joined
    source: {{ type: trigger, all: [{{ of: a }}, {{ of: b }}], window: 1m }}
    action: {{ module: log-event.wasm }}
  - name: late
    source: {{ type: schedule, at: "{late}" }}
    action: {{ module: log-event.wasm }}
  - name: too-far-apart
    source: {{ type: trigger, all: [{{ of: a }}, {{ of: late }}], window: 200ms }}
    action: {{ module: log-event.wasm }}
  - name: saw-late
    source: {{ type: trigger, of: late }}
    action: {{ module: log-event.wasm }}
"#
    );
    let (engine, runs) = start_engine(&ws, &yaml).await;
    let joined = runs.wait_runs("joined", 1).await.remove(0);
    // `late` ends at least 2 s after `a`; once a chain on it has run, every chain has seen it.
    runs.wait_runs("saw-late", 1).await;
    engine.shutdown().await;
    let event = output(&joined);
    assert_eq!(event["kind"], "all");
    let upstreams: Vec<&str> = event["data"]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(upstreams, vec!["a", "b"], "in condition order");
    assert_eq!(
        event["data"]["upstreams"][1]["output"], 1,
        "b's output (a count) handed on"
    );
    assert_eq!(runs.of("joined").len(), 1);
    assert!(
        runs.of("too-far-apart").is_empty(),
        "upstreams 2 s apart do not meet a 200 ms window"
    );
}

#[test]
fn check_rejects_unknown_upstreams_and_cycles() {
    let out = support::check_rejects(
        r#"
triggers:
  - name: orphan
    source: { type: trigger, of: nobody }
    action: { module: counter.wasm }
  - name: retry-myself
    source: { type: trigger, of: retry-myself, on: [failure] }
    action: { module: counter.wasm }
  - name: ping
    source: { type: trigger, of: pong }
    action: { module: counter.wasm }
  - name: pong
    source: { type: trigger, any: [{ of: ping }, { of: orphan }] }
    action: { module: counter.wasm }
  - name: fan
    source: { type: trigger, all: [{ of: orphan }, { of: missing }] }
    action: { module: counter.wasm }
"#,
    );
    for needle in [
        "trigger `orphan`: field `source.of`: no trigger named `nobody` to chain on",
        "trigger `retry-myself`: field `source`: `retry-myself` chains on itself, so it could run forever; to retry failed runs use `action.retry`",
        "chain cycle ",
        "trigger `fan`: field `source.all[1].of`: no trigger named `missing` to chain on",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert_eq!(
        out.matches("chain cycle").count(),
        1,
        "a cycle is reported once:\n{out}"
    );
}

fn sign(key: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body);
    let digest: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={digest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_authenticate_cap_bodies_and_push_back_when_full() {
    let ws = Workspace::new();
    ws.write("secrets/hook-token", "t0ken-long-enough");
    ws.write("secrets/gh-secret", "k3y-long-enough");
    let yaml = format!(
        r#"
engine: {{ workers: 1, queueSize: 1, secrets: {{ dir: "{}" }} }}
triggers:
  - name: bearer
    source: {{ type: webhook, auth: {{ bearer: {{ secret: hook-token }} }}, headers: [X-Request-Id], maxBodySize: 1Ki }}
    action: {{ module: log-event.wasm }}
  - name: github
    source: {{ type: webhook, auth: {{ hmac: {{ secret: gh-secret }} }} }}
    action: {{ module: log-event.wasm }}
  - name: busy
    source: {{ type: webhook, auth: none }}
    action: {{ module: hostile.wasm, params: {{ mode: sleep, ms: 300 }} }}
"#,
        ws.path().join("secrets").display()
    );
    let config = ws.write("hooks.yaml", &yaml);
    let options = EngineOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        module_cache: Some(support::shared_cache()),
        ..EngineOptions::new(ws.state_dir())
    };
    let (engine, runs) = start_engine_at(&config, support::modules(), options).await;
    let base = format!("http://{}", engine.address().unwrap());
    let http = reqwest::Client::new();
    let post = |path: &str| http.post(format!("{base}{path}"));

    let ok = post("/hooks/bearer")
        .bearer_auth("t0ken-long-enough")
        .header("x-request-id", "req-1")
        .header("content-type", "application/json")
        .body(r#"{"ref":"main"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    let accepted: Value = serde_json::from_slice(&ok.bytes().await.unwrap()).unwrap();
    for (request, expected) in [
        (post("/hooks/bearer").body("{}"), 401),
        (post("/hooks/bearer").bearer_auth("wrong").body("{}"), 401),
        (
            post("/hooks/bearer")
                .bearer_auth("t0ken-long-enough")
                .body(vec![b'x'; 2048]),
            413,
        ),
        (
            post("/hooks/github")
                .header("x-hub-signature-256", sign("wrong", b"{}"))
                .body("{}"),
            401,
        ),
        (post("/hooks/nobody").body("{}"), 404),
        (
            http.get(format!("{base}/hooks/bearer"))
                .bearer_auth("t0ken-long-enough"),
            405,
        ),
    ] {
        assert_eq!(request.send().await.unwrap().status(), expected);
    }
    let signed = post("/hooks/github")
        .header(
            "x-hub-signature-256",
            sign("k3y-long-enough", b"\x00binary\xff"),
        )
        .header("content-type", "application/octet-stream")
        .body(&b"\x00binary\xff"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), 202);

    // Flood the slow trigger: the one-slot queue pushes back, nothing is lost silently.
    let mut codes: HashMap<u16, usize> = HashMap::new();
    for _ in 0..12 {
        let r = post("/hooks/busy").body("{}").send().await.unwrap();
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
        }
        *codes.entry(r.status().as_u16()).or_default() += 1;
    }
    assert!(codes.get(&429).copied().unwrap_or(0) > 0, "{codes:?}");
    let accepted_busy = codes.get(&202).copied().unwrap_or(0);
    let bearer = runs.wait_runs("bearer", 1).await.remove(0);
    let github = runs.wait_runs("github", 1).await.remove(0);
    runs.wait_runs("busy", accepted_busy).await;
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    engine.shutdown().await;

    assert_eq!(
        runs.of("bearer").len(),
        1,
        "refused requests made no events"
    );
    assert_eq!(
        runs.of("busy").len(),
        accepted_busy,
        "every 202 became exactly one run"
    );
    assert_eq!(bearer.event_id, accepted["eventId"].as_str().unwrap());
    let event = output(&bearer);
    assert_eq!(event["source"], "webhook");
    assert_eq!(event["data"]["body"], json!({"ref": "main"}));
    assert_eq!(event["data"]["headers"], json!({"X-Request-Id": "req-1"}));
    let github_event = output(&github);
    assert_eq!(github_event["data"]["bodyBase64"], "AGJpbmFyef8=");
    assert_eq!(
        github_event["data"]["contentType"],
        "application/octet-stream"
    );
    let samples = parse_metrics(&metrics);
    assert_eq!(
        samples[r#"wasmtrigger_webhook_responses_total{trigger="bearer",code="401"}"#],
        2.0
    );
    assert_eq!(
        samples[r#"wasmtrigger_webhook_responses_total{trigger="bearer",code="413"}"#],
        1.0
    );
    assert_eq!(
        samples[r#"wasmtrigger_webhook_responses_total{trigger="busy",code="429"}"#],
        codes[&429] as f64
    );
    assert!(
        !metrics.contains(r#"trigger="nobody""#),
        "unknown names make no series"
    );
}

/// `name{labels} value` lines of an OpenMetrics exposition.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened() {
    let ws = Workspace::new();
    let options = EngineOptions {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        module_cache: Some(support::shared_cache()),
        ..EngineOptions::new(ws.state_dir())
    };
    let config = ws.write(
        "m.yaml",
        r#"
engine: { retry: { max: 1, delay: 10ms }, queueSize: 8, workers: 2 }
triggers:
  - name: slow
    source: { type: schedule, every: 20ms }
    action: { module: hostile.wasm, params: { mode: sleep, ms: 150 } }
  - name: hook
    source: { type: webhook, auth: none }
    action: { module: hostile.wasm, params: { mode: sleep, ms: 300 } }
  - name: good
    source: { type: schedule, now: true }
    action: { module: counter.wasm }
  - name: bad
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: fail } }
  - name: dropped
    source: { type: schedule, now: true }
    filter: { cel: "false" }
    action: { module: counter.wasm }
  - name: denied
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: secret, name: nope } }
"#,
    );
    let (engine, runs) = start_engine_at(&config, support::modules(), options).await;
    for name in ["good", "bad", "dropped", "denied"] {
        runs.wait_runs(name, 1).await;
    }
    let base = format!("http://{}", engine.address().unwrap());
    // Flood the webhook (300 ms runs, two workers) until the queue pushes back.
    let http = reqwest::Client::new();
    let mut refused = 0;
    while refused == 0 {
        let status = http
            .post(format!("{base}/hooks/hook"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status();
        refused += (status == 429) as usize;
    }
    let deadline = std::time::Instant::now() + support::DEADLINE;
    let text = loop {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("wasmtrigger_schedule_ticks_skipped_total{") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no skipped tick was counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    engine.shutdown().await;
    let m = parse_metrics(&text);
    assert_eq!(
        m[r#"wasmtrigger_runs_total{trigger="good",status="succeeded"}"#],
        1.0
    );
    assert_eq!(
        m[r#"wasmtrigger_runs_total{trigger="bad",status="failed"}"#],
        1.0
    );
    assert_eq!(
        m[r#"wasmtrigger_runs_total{trigger="dropped",status="filtered"}"#],
        1.0
    );
    assert_eq!(m[r#"wasmtrigger_retries_total{trigger="bad"}"#], 1.0);
    assert_eq!(
        m[r#"wasmtrigger_run_errors_total{trigger="bad",reason="guest-error"}"#],
        1.0
    );
    assert_eq!(
        m[r#"wasmtrigger_run_duration_seconds_count{trigger="good"}"#],
        1.0
    );
    assert_eq!(
        m[r#"wasmtrigger_events_accepted_total{trigger="good",source="schedule"}"#],
        1.0
    );
    assert_eq!(
        m[r#"wasmtrigger_capability_denials_total{capability="secrets"}"#], 2.0,
        "two attempts denied"
    );
    assert_eq!(m["wasmtrigger_queue_capacity"], 8.0);
    assert!(m[r#"wasmtrigger_events_dropped_total{trigger="hook",reason="queue-full"}"#] >= 1.0);
    assert!(m[r#"wasmtrigger_webhook_responses_total{trigger="hook",code="429"}"#] >= 1.0);
    assert_eq!(m["wasmtrigger_ready"], 1.0);
    assert!(
        m["wasmtrigger_module_cache_hits_total"] + m["wasmtrigger_module_cache_misses_total"]
            >= 2.0
    );
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics exposition");

    // Every metric the shipped Grafana dashboard queries is one the engine
    // exposes. The "Distributed" panels' appear only on a distributing engine:
    // `distribute::three_replicas_run_5000_changes_once_each_in_order_and_share_them`
    // checks them there.
    let queried = support::dashboard_metrics();
    assert!(queried.len() > 20);
    for (_, name, family) in queried
        .into_iter()
        .filter(|(panel, _, _)| !panel.starts_with("Distributed"))
    {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which /metrics lacks"
        );
    }
}

#[test]
fn history_fire_and_triggers_through_the_cli_survive_a_restart() {
    let ws = Workspace::new();
    let config = ws.write(
        "h.yaml",
        r#"
engine: { retry: { max: 0 }, history: { maxPerTrigger: 3 } }
triggers:
  - name: ticker
    source: { type: schedule, every: 30ms }
    action: { module: counter.wasm }
  - name: broken
    source: { type: schedule, now: true }
    action: { module: hostile.wasm, params: { mode: fail } }
  - name: after-broken
    source: { type: trigger, of: broken, on: [failure] }
    action: { module: log-event.wasm }
  - name: manual
    source: { type: webhook, auth: none }
    action: { module: log-event.wasm }
  - name: manual-broken
    source: { type: webhook, auth: none }
    action: { module: hostile.wasm, params: { mode: fail } }
  - name: manual-panic
    source: { type: webhook, auth: none }
    action: { module: hostile.wasm, params: { mode: panic } }
"#,
    );
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    let base = engine.base_url();
    engine.wait_runs("ticker", 6);
    engine.wait_runs("after-broken", 1);
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", base.as_str()]);
        let (code, out, err) = run_cli(&all, None);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    let event_id = cli(&["fire", "manual", "--data", r#"{"why":"testing"}"#])
        .trim()
        .to_string();
    engine.wait_runs("manual", 1);

    // Retention keeps the newest 3 runs of the ticker; queries filter by trigger, status and time.
    let ticker: Vec<RunRecord> =
        serde_json::from_str(&cli(&["runs", "--trigger", "ticker", "-o", "json"])).unwrap();
    assert!(ticker.len() <= 3 && !ticker.is_empty(), "{}", ticker.len());
    assert!(
        ticker
            .windows(2)
            .all(|w| w[0].started_at >= w[1].started_at),
        "newest first"
    );
    let failed: Vec<RunRecord> =
        serde_json::from_str(&cli(&["runs", "--status", "failed", "-o", "json"])).unwrap();
    assert_eq!(
        failed
            .iter()
            .map(|r| r.trigger.as_str())
            .collect::<Vec<_>>(),
        vec!["broken"]
    );
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let none: Vec<RunRecord> =
        serde_json::from_str(&cli(&["runs", "--since", &future, "-o", "json"])).unwrap();
    assert!(none.is_empty());
    let manual: Vec<RunRecord> =
        serde_json::from_str(&cli(&["runs", "--trigger", "manual", "-o", "json"])).unwrap();
    assert_eq!(manual[0].event_id, event_id);
    assert_eq!(manual[0].source, "manual");
    let shown = cli(&["runs", "show", &failed[0].run_id]);
    assert!(
        shown.contains("trigger broken  failed (guest-error)")
            && shown.contains("error: ")
            && shown.contains("failing on purpose"),
        "{shown}"
    );
    let table = cli(&["runs", "--limit", "5"]);
    assert!(
        table.starts_with("RUN ID") && table.lines().count() == 6,
        "{table}"
    );

    let triggers = cli(&["triggers", "-o", "json"]);
    let views: Vec<Value> = serde_json::from_str(&triggers).unwrap();
    let broken = views.iter().find(|v| v["name"] == "broken").unwrap();
    assert_eq!(broken["failures"], 1);
    assert!(broken["lastFailure"].is_string());
    assert_eq!(broken["onFailure"], json!(["after-broken"]));
    let ticker_view = views.iter().find(|v| v["name"] == "ticker").unwrap();
    assert!(
        ticker_view["runs"].as_u64().unwrap() >= 6,
        "counts outlive retention: {ticker_view}"
    );
    assert!(cli(&["triggers"]).contains("ON FAILURE"));

    // The API speaks camelCase everywhere, as Kubernetes does.
    let raw: Value =
        serde_json::from_str(&support::http_get(&format!("{base}/api/v1/runs?limit=100"))).unwrap();
    assert_camel_case(&raw, "runs");
    let raw: Value =
        serde_json::from_str(&support::http_get(&format!("{base}/api/v1/triggers"))).unwrap();
    assert_camel_case(&raw, "triggers");

    // `fire --wait` prints the run and says by its exit status how it went.
    let (code, out, err) = run_cli(
        &[
            "fire", "manual", "--wait", "--data", "{}", "--server", &base,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("RUN ID") && out.contains("succeeded"),
        "{out}"
    );
    let (code, out, err) = run_cli(
        &[
            "fire",
            "manual-broken",
            "--wait",
            "-o",
            "json",
            "--server",
            &base,
        ],
        None,
    );
    assert_eq!(code, 1, "a failed run fails the command: {out}{err}");
    let run: RunRecord = serde_json::from_str(&out).unwrap();
    assert_eq!(run.status, wasmtrigger::runs::RunStatus::Failed);
    // The table's error column starts with what the author wrote: the panic.
    let (code, out, _) = run_cli(&["fire", "manual-panic", "--wait", "--server", &base], None);
    assert_eq!(code, 1);
    let row = out.lines().nth(1).unwrap_or_default();
    assert!(
        row.contains("panicked at hostile/src/lib.rs:") && row.contains("hostile guest"),
        "{out}"
    );
    // Data comes the same way to every command: --data, --file, or --file - (stdin).
    let data = ws.write("data.json", r#"{"from":"a file"}"#);
    let (code, out, err) = run_cli(
        &[
            "fire",
            "manual",
            "--wait",
            "-o",
            "json",
            "--file",
            data.to_str().unwrap(),
            "--server",
            &base,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("a file"),
        "the file's data reached the action: {out}"
    );
    let (code, out, err) = run_cli(
        &[
            "fire", "manual", "--wait", "-o", "json", "--file", "-", "--server", &base,
        ],
        Some(r#"{"from":"stdin"}"#),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stdin"), "{out}");
    let (code, _, err) = run_cli(
        &["fire", "manual", "--data", "{oops", "--server", &base],
        None,
    );
    assert_eq!(code, 2, "bad data is bad input: {err}");

    // A typo is an error, not an empty list; a limit of 0 is refused.
    let (code, _, err) = run_cli(&["runs", "--trigger", "tickr", "--server", &base], None);
    assert_eq!(code, 1);
    assert!(err.contains("no trigger named `tickr`"), "{err}");
    let (code, _, err) = run_cli(&["runs", "--limit", "0", "--server", &base], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--limit"), "{err}");

    // While it runs, the state directory is the engine's: pointed at it with
    // a wrong address, the CLI says so instead of waiting for the lock.
    let closed = closed_port();
    let state_dir = ws.state_dir().display().to_string();
    let (code, _, err) = run_cli(
        &["runs", "--server", &closed, "--state-dir", &state_dir],
        None,
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("does not answer") && err.contains("--server"),
        "{err}"
    );
    assert_eq!(engine.stop(), 0);

    // Stopped, `runs`, `runs show` and `triggers` read the state directory.
    let offline = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend([
            "--server",
            closed.as_str(),
            "--state-dir",
            state_dir.as_str(),
        ]);
        let (code, out, err) = run_cli(&all, None);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(err.contains("reading the history in"), "{err}");
        out
    };
    let stored: Vec<RunRecord> =
        serde_json::from_str(&offline(&["runs", "--trigger", "broken", "-o", "json"])).unwrap();
    assert_eq!(stored[0].run_id, failed[0].run_id);
    let shown: Value =
        serde_json::from_str(&offline(&["runs", "show", &failed[0].run_id, "-o", "json"])).unwrap();
    assert_eq!(shown["status"], "failed");
    let views: Vec<Value> = serde_json::from_str(&offline(&["triggers", "-o", "json"])).unwrap();
    let broken = views.iter().find(|v| v["name"] == "broken").unwrap();
    assert_eq!(
        (broken["failures"].as_u64(), broken["state"].as_str()),
        (Some(1), Some("stopped"))
    );
    let (code, _, err) = run_cli(&["runs", "--server", &closed], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("no engine answers") && err.contains("--state-dir"),
        "{err}"
    );

    // A second life on the same state directory still has the history.
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    let base = engine.base_url();
    engine.wait_started();
    let (code, out, err) = run_cli(
        &[
            "runs",
            "--trigger",
            "broken",
            "-o",
            "json",
            "--server",
            &base,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let after_restart: Vec<RunRecord> = serde_json::from_str(&out).unwrap();
    assert!(
        after_restart.iter().any(|r| r.run_id == failed[0].run_id),
        "the run from the first life is still there"
    );
    engine.stop();
}

/// Every key in `value`, at any depth, is camelCase (event data is the
/// sender's and not looked into).
fn assert_camel_case(value: &Value, at: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                assert!(
                    !key.contains('_') && !key.contains('-'),
                    "{at}.{key} is not camelCase"
                );
                if key != "data" {
                    assert_camel_case(v, &format!("{at}.{key}"));
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| assert_camel_case(v, at)),
        _ => {}
    }
}

/// An address where nothing listens.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_no_until_modules_are_compiled() {
    let ws = Workspace::new();
    let config = ws.write(
        "r.yaml",
        "triggers:\n  - name: a\n    source: { type: schedule, every: 1h }\n    action: { module: hostile.wasm }\n  - name: b\n    source: { type: schedule, every: 1h }\n    action: { module: log-event.wasm }\n  - name: c\n    source: { type: schedule, every: 1h }\n    action: { module: http-fetch-store.wasm }\n",
    );
    // No cache: every module is compiled while the listener is already up.
    let engine = EngineProcess::start(&config, &ws.state_dir(), &["--no-module-cache"]);
    let base = engine.base_url();
    // Compiling three modules takes seconds in this profile; asking takes milliseconds.
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status(),
        503,
        "not ready while modules compile"
    );
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200,
        "alive all along"
    );
    engine.wait_started();
    assert_eq!(
        reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(engine.stop(), 0);
}
