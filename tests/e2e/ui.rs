//! The web page at `/ui`, in a real browser (headless Chromium over
//! WebDriver), against a real engine with an API token: a webhook's run
//! appears live on its trigger's page, the run page shows the event, verdict,
//! log and calls, replay says "identical", a failed run shows its error
//! first, actions without the token are refused, and the keyboard reaches
//! every button. Without a browser: the security headers and the run stream.

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::browser::{Browser, TAB};
use crate::support::{DEADLINE, EngineProcess, Workspace};

const TOKEN: &str = "ui-test-token-0123456789";

/// An engine with an API token and three triggers: `orders` (a CEL filter
/// and the counter), `shipped` (chained on `orders`) and `broken` (always fails).
fn engine(ws: &Workspace) -> EngineProcess {
    let token = ws.write("token", TOKEN);
    let config = ws.write(
        "ui.yaml",
        r#"
triggers:
  - name: orders
    source: { type: webhook, auth: none }
    filter: { cel: 'event.data.body.total > 10' }
    action: { module: counter.wasm, params: { key: orders } }
  - name: shipped
    source: { type: trigger, of: orders, on: [success] }
    action: { module: log-event.wasm }
  - name: broken
    source: { type: webhook, auth: none }
    action: { module: counter.wasm, params: { key: 42 } }
"#,
    );
    let token = token.display().to_string();
    let engine = EngineProcess::start(&config, &ws.state_dir(), &["--api-token-file", &token]);
    engine.wait_started();
    engine
}

fn post_hook(base: &str, hook: &str, body: serde_json::Value) {
    let response = reqwest::blocking::Client::new()
        .post(format!("{base}/hooks/{hook}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
}

#[test]
fn the_page_is_embedded_with_strict_security_headers() {
    let ws = Workspace::new();
    let engine = engine(&ws);
    let base = engine.base_url();
    let client = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let root = client.get(format!("{base}/")).send().unwrap();
    assert_eq!(root.status(), 302);
    assert_eq!(root.headers()["location"], "/ui/");
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = client.get(format!("{base}{path}")).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
            "{csp}"
        );
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        // (The SVG namespace is a name, not a place anything loads from.)
        let body = r.text().unwrap().replace("http://www.w3.org/2000/svg", "");
        // Nothing from elsewhere: no CDN, no fonts.
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads from elsewhere"
        );
    }
    let html = client
        .get(format!("{base}/ui/"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "no inline script or style"
    );
    // The page is public; its data is not.
    let data = client
        .get(format!("{base}/api/v1/triggers"))
        .send()
        .unwrap();
    assert_eq!(data.status(), 401);
    assert_eq!(
        client
            .get(format!("{base}/ui/nope"))
            .send()
            .unwrap()
            .status(),
        404
    );
}

/// Reads server-sent events from a raw connection until `done` says so.
fn read_events(
    reader: &mut BufReader<std::net::TcpStream>,
    mut done: impl FnMut(&str, &serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + DEADLINE;
    let (mut name, mut data) = (String::new(), String::new());
    loop {
        assert!(Instant::now() < deadline, "the stream did not deliver");
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            panic!("the stream ended");
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push_str(d);
        } else if line.is_empty() && !name.is_empty() {
            let value = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
            if done(&name, &value) {
                return;
            }
            name.clear();
            data.clear();
        }
    }
}

fn open_stream(
    base: &str,
    token: Option<&str>,
    last_id: Option<&str>,
) -> (u16, BufReader<std::net::TcpStream>) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut request = format!("GET /api/v1/runs/stream HTTP/1.1\r\nHost: {addr}\r\n");
    if let Some(t) = token {
        request.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if let Some(id) = last_id {
        request.push_str(&format!("Last-Event-ID: {id}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let code = status
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // Skip the head.
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    (code, reader)
}

#[test]
fn the_run_stream_batches_runs_and_resyncs_a_reconnect() {
    let ws = Workspace::new();
    let engine = engine(&ws);
    let base = engine.base_url();
    let (code, _) = open_stream(&base, None, None);
    assert_eq!(code, 401, "the stream is behind the token");

    let (code, mut reader) = open_stream(&base, Some(TOKEN), None);
    assert_eq!(code, 200);
    for total in [20, 30, 40] {
        post_hook(&base, "orders", json!({ "total": total }));
    }
    // 3 orders and 3 chained shipments, in batches.
    let (mut runs, mut batches, mut last) = (Vec::new(), 0, String::new());
    read_events(&mut reader, |name, data| {
        if name == "runs" {
            batches += 1;
            for r in data.as_array().unwrap() {
                assert!(r.get("recording").is_none(), "summaries only");
                runs.push(r["trigger"].as_str().unwrap().to_string());
                last = r["runId"].as_str().unwrap().to_string();
            }
        }
        runs.len() >= 6
    });
    runs.sort();
    assert_eq!(
        runs,
        [
            "orders", "orders", "orders", "shipped", "shipped", "shipped"
        ]
    );
    assert!(batches <= 6);
    // A reconnect with Last-Event-ID is told to reload what it shows.
    let (code, mut again) = open_stream(&base, Some(TOKEN), Some(&last));
    assert_eq!(code, 200);
    let mut first = None;
    read_events(&mut again, |name, _| {
        first = Some(name.to_string());
        true
    });
    assert_eq!(first.as_deref(), Some("resync"));
    // Streams are bounded: with these two open, 62 more, then 503.
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..70 {
        let (code, reader) = open_stream(&base, Some(TOKEN), None);
        match code {
            200 => held.push(reader),
            503 => refused += 1,
            other => panic!("stream answered {other}"),
        }
    }
    assert_eq!((held.len(), refused), (62, 8));
    drop(held);
    drop(reader);
    drop(again);
}

#[test]
fn in_a_real_browser_runs_arrive_live_explain_themselves_and_actions_need_the_token() {
    let ws = Workspace::new();
    let engine = engine(&ws);
    let base = engine.base_url();
    let browser = Browser::start();

    // Without the token the page says what it needs.
    browser.goto(&format!("{base}/ui/"));
    browser.wait_text("#page-error", "needs its token");
    let field = browser.wait("#token");
    browser.type_into(&field, TOKEN);
    browser.click(&browser.wait("#login-button"));
    browser.wait_text("#triggers", "orders");
    browser.wait_text("#live", "live");

    // A webhook's run appears on the trigger's page without a reload.
    browser.goto(&format!("{base}/ui/#/trigger/orders"));
    browser.wait_text("h1", "orders");
    browser.run("window.__sameDocument = true;", json!([]));
    let shown = Instant::now();
    post_hook(
        &base,
        "orders",
        json!({ "total": 99, "customer": "<img src=x onerror=\"window.__xss=1\">" }),
    );
    let row = browser.wait("#runs tr[data-status='succeeded']");
    let took = shown.elapsed();
    assert_eq!(
        browser.run("return window.__sameDocument === true;", json!([])),
        true,
        "the page was not reloaded"
    );
    println!("a webhook's run appeared on the open page {took:?} after it was sent");
    browser.screenshot(&Browser::screenshot_path("ui-trigger.png"));

    // Its page: the event, the verdict, the log and the calls. The event's
    // markup is shown as text, never run.
    browser.click(&browser.wait("#runs tr[data-status='succeeded'] a"));
    let _ = row;
    browser.wait_text("#event-data", "customer");
    browser.wait_text("#event-data", "<img src=x onerror=");
    let injected = browser.run(
        "return [document.querySelectorAll('#main img, #main script').length, typeof window.__xss];",
        json!([]),
    );
    assert_eq!(
        injected,
        json!([0, "undefined"]),
        "event data became markup"
    );
    browser.wait_text("#verdict-text", "passed");
    browser.wait_text("#verdict-text", "event.data.body.total > 10");
    browser.wait_text("#log-lines", "run number 1");
    browser.wait_text("#call-timeline", "kv.increment");
    browser.wait_text("#call-timeline", "\"orders\" by 1");
    browser.wait_text("#downstream", "shipped");
    browser.screenshot(&Browser::screenshot_path("ui-run.png"));

    // Replay asks first, then says "identical".
    browser.click(&browser.wait("#replay"));
    browser.wait_text("#confirm-text", "Replay this run?");
    browser.click(&browser.wait("#confirm-yes"));
    browser.wait_text("#action-result", "identical");
    browser.screenshot(&Browser::screenshot_path("ui-replay.png"));

    // The keyboard reaches every button.
    browser.run(
        "document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);",
        json!([]),
    );
    let mut reached = std::collections::BTreeSet::new();
    for _ in 0..80 {
        browser.press(TAB);
        let id = browser.run(
            "const e = document.activeElement; return e && e.tagName === 'BUTTON' ? e.id : '';",
            json!([]),
        );
        if let Some(id) = id.as_str().filter(|i| !i.is_empty()) {
            reached.insert(id.to_string());
        }
    }
    for button in ["login-button", "logout-button", "replay", "redrive", "fire"] {
        assert!(
            reached.contains(button),
            "Tab never reached #{button}: {reached:?}"
        );
    }

    // A failed run shows its error first, above everything else it shows.
    post_hook(&base, "broken", json!({}));
    let failed = engine.wait_runs("broken", 1).remove(0);
    let id = failed["run_id"].as_str().unwrap();
    browser.goto(&format!("{base}/ui/#/run/{id}"));
    browser.wait_text("#run-error", "params");
    let order = browser.run(
        "const top = (s) => document.querySelector(s).getBoundingClientRect().top;
         return top('#run-error') < top('#replay') && top('#run-error') < top('#verdict');",
        json!([]),
    );
    assert_eq!(order, true, "the error comes first");
    browser.screenshot(&Browser::screenshot_path("ui-failed-run.png"));

    // Without the token, actions are refused (and nothing is resubmitted).
    browser.click(&browser.wait("#logout-button"));
    browser.click(&browser.wait("#redrive"));
    browser.wait_text("#confirm-text", "Resubmit");
    browser.click(&browser.wait("#confirm-yes"));
    browser.wait_text("#action-result", "refused");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        engine.runs("broken").len(),
        1,
        "a refused redrive resubmitted nothing"
    );

    // The overview, for the README.
    let field = browser.wait("#token");
    browser.type_into(&field, TOKEN);
    browser.click(&browser.wait("#login-button"));
    browser.goto(&format!("{base}/ui/#/"));
    browser.wait_text("#triggers", "broken");
    browser.wait_text("#latest-runs", "failed");
    browser.screenshot(&Browser::screenshot_path("ui-triggers.png"));
}

#[test]
fn a_rejected_change_shows_its_invalid_trigger_and_why() {
    let ws = Workspace::new();
    let engine = engine(&ws);
    let base = engine.base_url();
    let config = ws.path().join("ui.yaml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("  - name: added\n    source: { type: webhook, auth: none }\n    action: { module: no-such-module.wasm }\n");
    std::fs::write(&config, text).unwrap();
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + DEADLINE;
    let view = loop {
        let body = client
            .get(format!("{base}/api/v1/triggers"))
            .bearer_auth(TOKEN)
            .send()
            .unwrap()
            .text()
            .unwrap();
        let view: serde_json::Value = serde_json::from_str(&body).unwrap();
        if view["problems"].as_array().is_some_and(|p| !p.is_empty()) {
            break view;
        }
        assert!(
            Instant::now() < deadline,
            "the change was not rejected: {view}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let problem = &view["problems"][0];
    assert_eq!(problem["trigger"], "added", "{view}");
    assert_eq!(problem["origin"], "files");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("no-such-module.wasm"),
        "{problem}"
    );
    let added = view["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "added")
        .unwrap_or_else(|| panic!("no entry for the invalid trigger: {view}"));
    assert_eq!(added["state"], "invalid");
    // The running ones keep running.
    let orders = view["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    assert_eq!(orders["state"], "running");
    assert_eq!(orders["perMinute"].as_array().map(Vec::len), Some(60));
}
