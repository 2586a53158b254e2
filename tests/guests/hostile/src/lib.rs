//! An action that misbehaves in the way its params ask, so tests can check
//! that the host contains each kind of misbehaviour as one failed run.
//!
//! Params: `{"mode": "...", ...}` with modes
//! `ok`, `fail`, `loop`, `alloc`, `panic`, `read-file` (`path`), `env` (`name`),
//! `print` (`bytes`), `sleep` (`ms`; returns the event data), `work` (the event's
//! `body` — or a ConfigMap's `data` — asks: `ms` to sleep, `failures` of its first
//! attempts to fail; returns the event data), `flaky` (`failures`: fail until the
//! kv counter `attempts` passes it), `echo-params`, `http` (`request`, `repeat`),
//! `secret` and `leak-secret` (`name`), `kv-set` (`key`, `value`), `cas-increment` (`key`),
//! `kube` (`kube`: a call of the kube capability; returns its result),
//! `cloudevent` (`path`: the URL, `then`: `structured` or `binary`): sends the
//! event's data as a CloudEvent built with the SDK's helper, and
//! `leak-all` (`names`, `then`: `ok`, `fail` or `panic`): reads every named secret and
//! tries every way out with them — log, stdout, stderr, kv, output (raw and JSON-encoded,
//! with the params it was given), error, panic; a later run finding them in kv prints
//! and returns them without reading any secret.

use std::hint::black_box;

use serde::Deserialize;
use wasmtrigger_guest::{
    Action, Event, export_action, http, info, kv, params_as, secrets, serde_json,
};

#[derive(Deserialize)]
struct HttpCall {
    method: String,
    url: String,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body: Option<String>,
}

/// One call of the kube capability.
#[derive(Deserialize)]
struct KubeCall {
    op: String,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: Option<String>,
    object: Option<serde_json::Value>,
    patch_type: Option<String>,
    label_selector: Option<String>,
}

impl KubeCall {
    fn run(self) -> Result<String, String> {
        use wasmtrigger_guest::kube::{self, PatchType};
        let target = kube::target(&self.api_version, &self.kind, self.namespace.as_deref());
        let name = || self.name.clone().ok_or("`name` is needed");
        let body = || {
            self.object
                .as_ref()
                .map(|o| o.to_string())
                .ok_or("`object` is needed")
        };
        let result = match self.op.as_str() {
            "get" => kube::get(&target, &name()?),
            "list" => kube::list_objects(&target, self.label_selector.as_deref()),
            "create" => kube::create(&target, &body()?),
            "apply" => kube::apply(&target, &name()?, &body()?),
            "patch" => {
                let kind = match self.patch_type.as_deref() {
                    Some("json") => PatchType::Json,
                    Some("strategic") => PatchType::Strategic,
                    _ => PatchType::Merge,
                };
                kube::patch(&target, &name()?, kind, &body()?)
            }
            "delete" => kube::delete(&target, &name()?).map(|()| "deleted".to_string()),
            other => return Err(format!("unknown kube op {other}")),
        };
        result.map_err(|e| e.describe())
    }
}

#[derive(Deserialize)]
struct Params {
    mode: String,
    kube: Option<KubeCall>,
    request: Option<HttpCall>,
    repeat: Option<u32>,
    key: Option<String>,
    value: Option<String>,
    path: Option<String>,
    name: Option<String>,
    bytes: Option<usize>,
    ms: Option<u64>,
    failures: Option<i64>,
    names: Option<Vec<String>>,
    then: Option<String>,
}

struct Hostile;

impl Action for Hostile {
    fn run(event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        info!("hostile mode {} starting", p.mode);
        match p.mode.as_str() {
            "ok" => Ok(format!("ok {}", event.id)),
            "fail" => Err("failing on purpose".to_string()),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "panic" => panic!("hostile guest panics on purpose"),
            "read-file" => {
                let path = p.path.unwrap_or_else(|| "/etc/passwd".into());
                std::fs::read_to_string(&path)
                    .map(|text| format!("read {} bytes: {text}", text.len()))
                    .map_err(|e| format!("cannot read {path}: {e}"))
            }
            "env" => {
                let name = p.name.unwrap_or_else(|| "HOME".into());
                let all = std::env::vars().count();
                match std::env::var(&name) {
                    Ok(value) => Ok(format!("{name}={value} ({all} vars)")),
                    Err(_) => Err(format!("{name} is not visible ({all} vars visible)")),
                }
            }
            "print" => {
                let total = p.bytes.unwrap_or(8 << 20);
                let line = "x".repeat(1023) + "\n";
                let mut written = 0;
                while written < total {
                    print!("{line}");
                    written += line.len();
                }
                Ok(format!("printed {written} bytes"))
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(p.ms.unwrap_or(1000)));
                Ok(event.data)
            }
            "work" => {
                // What the event asks: `ms` to sleep (else the param), and
                // `failures`: how many of its first attempts fail.
                let data = event.json()?;
                let ask = if data["body"].is_object() {
                    &data["body"]
                } else {
                    &data["object"]["data"]
                };
                let number = |k: &str| {
                    ask[k]
                        .as_u64()
                        .or_else(|| ask[k].as_str().and_then(|s| s.parse().ok()))
                };
                let failures = number("failures").unwrap_or(0) as i64;
                if failures > 0 {
                    let attempt = kv::increment(&format!("attempts/{}", event.id), 1)
                        .map_err(|e| format!("kv: {e:?}"))?;
                    if attempt <= failures {
                        return Err(format!("work failure {attempt} of {failures}"));
                    }
                }
                let ms = number("ms").or(p.ms).unwrap_or(0);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(event.data)
            }
            "flaky" => {
                let attempt = kv::increment("attempts", 1).map_err(|e| format!("kv: {e:?}"))?;
                if attempt <= p.failures.unwrap_or(2) {
                    Err(format!("flaky failure on attempt {attempt}"))
                } else {
                    Ok(format!("succeeded on attempt {attempt}"))
                }
            }
            "echo-params" => Ok(params),
            "http" => {
                let call = p.request.ok_or("params need `request`")?;
                let request = http::Request {
                    method: call.method,
                    url: call.url,
                    headers: call
                        .headers
                        .iter()
                        .map(|(n, v)| http::header(n, v))
                        .collect(),
                    body: call.body.map(String::into_bytes),
                };
                let mut last = None;
                for i in 0..p.repeat.unwrap_or(1) {
                    let response = http::send(&request)
                        .map_err(|e| format!("request {i}: {}", e.describe()))?;
                    last = Some(response);
                }
                let r = last.ok_or("no request sent")?;
                let headers: serde_json::Map<String, serde_json::Value> = r
                    .headers
                    .iter()
                    .map(|h| (h.name.clone(), h.value.clone().into()))
                    .collect();
                Ok(
                    serde_json::json!({"status": r.status, "headers": headers, "body": r.text()})
                        .to_string(),
                )
            }
            "kube" => p.kube.ok_or("params need `kube`")?.run(),
            "secret" => {
                let name = p.name.ok_or("params need `name`")?;
                secrets::get(&name).map_err(|e| e.describe())
            }
            "leak-secret" => {
                let name = p.name.ok_or("params need `name`")?;
                let value = secrets::get(&name).map_err(|e| e.describe())?;
                info!("the secret is {value}");
                println!("stdout: {value}");
                eprintln!("stderr: {value}");
                Err(format!("failing while holding {value}"))
            }
            "leak-all" => {
                if let Some(stashed) = kv::get("stash").map_err(|e| e.describe())? {
                    info!("from kv: {stashed}");
                    println!("from kv: {stashed}");
                    eprintln!("from kv: {stashed}");
                    return Ok(format!("from kv: {stashed}"));
                }
                let mut values = Vec::new();
                for name in p.names.clone().unwrap_or_default() {
                    values.push(secrets::get(&name).map_err(|e| e.describe())?);
                }
                for v in &values {
                    info!("log: {v}");
                    println!("stdout: {v}");
                    eprintln!("stderr: {v}");
                    // A value split across writes, and one that straddles a long line's cut.
                    let (a, b) = v.split_at(v.len() / 2);
                    print!("split: {a}");
                    println!("{b}");
                    println!("{}{v}", "x".repeat(8 * 1024 - 5));
                }
                let joined = values.join("|");
                kv::set("stash", &joined).map_err(|e| e.describe())?;
                let output = serde_json::json!({ "values": values, "params": params }).to_string();
                match p.then.as_deref() {
                    Some("fail") => Err(format!("failing with {joined} and {output}")),
                    Some("panic") => panic!("panicking with {joined}"),
                    _ => Ok(format!("{joined} {output}")),
                }
            }
            "kv-set" => {
                let key = p.key.ok_or("params need `key`")?;
                kv::set(&key, &p.value.unwrap_or_default()).map_err(|e| e.describe())?;
                Ok("set".into())
            }
            "cas-increment" => {
                let key = p.key.unwrap_or_else(|| "cas".into());
                loop {
                    let old = kv::get(&key).map_err(|e| e.describe())?;
                    let next = old.as_deref().map_or(0, |v| v.parse::<i64>().unwrap_or(0)) + 1;
                    if kv::compare_and_swap(&key, old.as_deref(), Some(&next.to_string()))
                        .map_err(|e| e.describe())?
                    {
                        return Ok(next.to_string());
                    }
                }
            }
            "cloudevent" => {
                use wasmtrigger_guest::cloudevents::CloudEvent;
                let url = p.path.ok_or("`path`: the URL to send to")?;
                let ce = CloudEvent::new(
                    &event.id,
                    &format!("/wasmtrigger/{}", event.trigger),
                    "dev.wasmtrigger.test",
                )
                .subject("order/42 ü")
                .time(&event.time)
                .attribute("tenant", "acme")
                .data(event.json()?);
                let sent = match p.then.as_deref() {
                    Some("binary") => ce.post_binary(&url, Vec::new()),
                    _ => ce.post(&url, Vec::new()),
                };
                let response = sent.map_err(|e| e.describe())?;
                Ok(format!("sent: {}", response.status))
            }
            other => Err(format!("unknown mode {other}")),
        }
    }
}

export_action!(Hostile);
