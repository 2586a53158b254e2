//! CloudEvents 1.0 over HTTP, checked against the official CloudEvents
//! Python SDK (`cloudevents` from PyPI, a client nobody here wrote): it sends
//! to a webhook in the binary, structured and batch modes, and it reads what
//! the guest SDK's helper sends. Malformed CloudEvents are clear 400s.

use serde_json::{Value, json};

use crate::support::http_server::TestServer;
use crate::support::{self, EngineProcess, Workspace};

fn sdk(args: &[&str], stdin: &str) -> Value {
    let out = support::pyclient("cloudevents_client.py", args, stdin.as_bytes());
    serde_json::from_str(out.trim()).unwrap()
}

const CONFIG: &str = r#"
triggers:
  - name: orders
    source: { type: webhook, auth: none }
    filter: { cel: 'event.ce.type == "com.example.order.created" && event.ce.extensions.tenant == "acme"' }
    ordering: { key: event.ce.subject }
    action: { module: builtin:log-event }
"#;

#[test]
fn the_python_sdk_sends_in_all_three_modes() {
    let ws = Workspace::new();
    let config = ws.write("triggers.yaml", CONFIG);
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_started();
    let url = format!("{}/hooks/orders", engine.base_url());
    for (mode, accepted) in [("binary", 1), ("structured", 1), ("batch", 3)] {
        let sent = sdk(&["send", &url, mode], "");
        assert_eq!(sent["status"], 202, "{mode}: {sent}");
        let answer: Value = serde_json::from_str(sent["body"].as_str().unwrap()).unwrap();
        let ids = match accepted {
            1 => vec![answer["eventId"].clone()],
            _ => answer["eventIds"].as_array().unwrap().clone(),
        };
        assert_eq!(ids.len(), accepted, "{mode}: {answer}");
    }
    // Not the filtered-for type: filtered out by `event.ce.type`.
    let other =
        json!({"specversion": "1.0", "id": "x", "source": "/s", "type": "com.example.other"});
    let response = reqwest::blocking::Client::new()
        .post(&url)
        .header("content-type", "application/cloudevents+json")
        .body(other.to_string())
        .send()
        .unwrap();
    assert_eq!(response.status(), 202);
    let runs = engine.wait_runs("orders", 6);
    let filtered: Vec<&Value> = runs.iter().filter(|r| r["status"] == "filtered").collect();
    assert_eq!(filtered.len(), 1, "{runs:#?}");
    let mut orders: Vec<Value> = runs
        .iter()
        .filter(|r| r["status"] == "succeeded")
        .map(|r| serde_json::from_str(r["output"].as_str().unwrap()).unwrap())
        .collect();
    orders.sort_by_key(|e: &Value| e["data"]["body"]["order"].as_i64());
    assert_eq!(orders.len(), 5);
    for (n, event) in (1..=5).zip(&orders) {
        let ce = &event["data"]["ce"];
        assert_eq!(ce["id"], format!("order-{n}"), "{event}");
        assert_eq!(ce["source"], "/shop/orders");
        assert_eq!(ce["subject"], format!("order/{n}"));
        assert_eq!(
            ce["extensions"]["tenant"], "acme",
            "extensions go under ce.extensions"
        );
        assert_eq!(
            event["kind"], "com.example.order.created",
            "the kind is the type"
        );
        assert_eq!(
            event["time"], "2026-11-30T09:00:00.000Z",
            "the CloudEvent's time, in UTC"
        );
        assert_eq!(event["source"], "webhook");
        assert_eq!(event["data"]["body"], json!({"order": n, "total": 10 * n}));
    }
    assert_eq!(engine.stop(), 0);
}

#[test]
fn malformed_cloudevents_are_clear_refusals_and_no_event() {
    let ws = Workspace::new();
    let config = ws.write("triggers.yaml", CONFIG);
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    engine.wait_started();
    let url = format!("{}/hooks/orders", engine.base_url());
    let http = reqwest::blocking::Client::new();
    let post = |headers: &[(&str, &str)], body: String| {
        let mut request = http.post(&url).body(body);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    };
    let structured = [("content-type", "application/cloudevents+json")];
    let batch = [("content-type", "application/cloudevents-batch+json")];
    let good = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
    let many: Vec<Value> = (0..1001).map(|_| good.clone()).collect();
    let deep = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    for (headers, body, expected) in [
        (
            &structured[..],
            json!({"id": "1", "source": "/s", "type": "t"}).to_string(),
            "`specversion` is required",
        ),
        (
            &structured[..],
            json!({"specversion": "1.0", "source": "/s", "type": "t"}).to_string(),
            "`id` is required",
        ),
        (&structured[..], "{not json".to_string(), "not JSON"),
        (
            &structured[..],
            json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "time": "soon"})
                .to_string(),
            "RFC 3339",
        ),
        (
            &batch[..],
            json!({"not": "a list"}).to_string(),
            "JSON array",
        ),
        (
            &batch[..],
            json!([good, 3]).to_string(),
            "CloudEvent [1] of the batch: expected a JSON object",
        ),
        (&batch[..], Value::Array(many).to_string(), "at most 1000"),
        (&batch[..], deep, "not JSON"),
        (
            &[
                ("ce-specversion", "1.0"),
                ("ce-id", "%G1"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ][..],
            String::new(),
            "percent-encoding",
        ),
        (
            &[
                ("ce-specversion", "1.0"),
                ("ce-source", "/s"),
                ("ce-type", "t"),
            ][..],
            String::new(),
            "`id` is required",
        ),
    ] {
        let (status, text) = post(headers, body);
        assert_eq!(status, 400, "{expected}: {text}");
        assert!(text.contains(expected), "{expected} in {text}");
    }
    let (status, _) = post(&structured, good.to_string());
    assert_eq!(status, 202, "the engine still takes good events");
    let runs = engine.wait_runs("orders", 1);
    assert_eq!(
        runs.len(),
        1,
        "no event from a malformed request: {runs:#?}"
    );
    assert_eq!(engine.stop(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_sdk_sends_cloudevents_the_python_sdk_reads() {
    let collector = TestServer::start().await;
    let ws = Workspace::new();
    let yaml = format!(
        "triggers:\n{}",
        ["structured", "binary"]
            .iter()
            .map(|mode| format!(
                "  - name: send-{mode}\n    source: {{ type: schedule, now: true }}\n    action:\n      module: hostile.wasm\n      params: {{ mode: cloudevent, path: \"{}\", then: {mode} }}\n      grants: {{ http: [\"{}\"] }}\n",
                collector.url(&format!("/{mode}")),
                collector.grant()
            ))
            .collect::<String>()
    );
    let config = ws.write("triggers.yaml", &yaml);
    let engine = EngineProcess::start(&config, &ws.state_dir(), &[]);
    for mode in ["structured", "binary"] {
        let run = engine.wait_runs(&format!("send-{mode}"), 1).remove(0);
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    assert_eq!(engine.stop(), 0);
    for seen in collector.seen() {
        let headers: serde_json::Map<String, Value> = seen
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let read = sdk(
            &["parse"],
            &json!({"headers": headers, "body": seen.body}).to_string(),
        );
        let attributes = &read["attributes"];
        assert_eq!(
            attributes["type"], "dev.wasmtrigger.test",
            "{}: {read}",
            seen.path
        );
        assert_eq!(attributes["specversion"], "1.0");
        assert!(
            attributes["source"]
                .as_str()
                .unwrap()
                .starts_with("/wasmtrigger/send-")
        );
        assert_eq!(
            attributes["subject"], "order/42 ü",
            "non-ASCII survives {}",
            seen.path
        );
        assert_eq!(attributes["tenant"], "acme");
        assert!(
            read["data"]["scheduledTime"].is_string(),
            "the event's data: {read}"
        );
    }
    assert_eq!(collector.seen().len(), 2);
}
