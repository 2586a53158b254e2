//! Module tests: a *fixture* is a run written down — an event, the filter
//! and action to run it through, the answers their capability calls get,
//! and what should come of it. `wasmtrigger test` runs fixtures offline
//! through the real runtime ([`super::rerun`]); `wasmtrigger runs export`
//! writes one from any recorded run.
//!
//! A fixture file is JSON (`*.fixture.json`) or YAML (`*.fixture.yaml`,
//! `*.fixture.yml`) holding one fixture or a list of them:
//!
//! ```yaml
//! name: a ready Deployment passes      # default: the file's name
//! filter: { module: ready-replicas.wasm }   # or { cel: "event.kind == 'post'" }
//! action: { module: counter.wasm, params: { key: n } }
//! event:                               # what the guests get; all but data optional
//!   kind: MODIFIED                     # default fixture (id, trigger, source too)
//!   source: kube-watch
//!   time: 2026-01-01T00:00:00Z         # the default
//!   data: { object: { … } }
//! calls:                               # canned answers, taken in order
//!   - call: kv.increment               # interface.function, as in the WIT
//!     args: '"n" by 1'                 # optional: without it, any arguments
//!     answer: 42                       # what the guest gets (JSON)
//!   - call: kube.get
//!     outcome: not-found               # ok (default), denied, not-found, invalid, failed
//!     message: no such Deployment      # the error's text
//! expect:                              # at least one of these
//!   verdict: true                      # the filter's decision
//!   output: { count: 42 }              # the action's output: a string is compared
//!                                      # as text, anything else as JSON
//!   error: kv                          # the run fails, with an error containing this
//!   calls: [kv.increment '"n" by 1']   # every call, in order; an entry matches a
//!                                      # call that is it or begins with it and a
//!                                      # space or `:` (`kv.increment`: any arguments)
//!   logs: ["run 42"]                   # log lines containing these, in order
//! ```
//!
//! Rules, so a fixture means one thing:
//!
//! - a call with no canned answer fails the fixture (the guest gets a
//!   `failed` error); so does a canned answer never asked for;
//! - a run that errors fails the fixture unless `expect.error` says so;
//! - grants are not checked: a fixture tests a module's logic, the config's
//!   grants are checked by `wasmtrigger check` and at run time;
//! - an `http.send` answer is `{status, headers, body}`: `headers` an object
//!   or `[name, value]` pairs, `body` text (other JSON is sent as its text);
//! - `secrets.get` answers with the fixture's string, so tests never need a
//!   real secret (an exported fixture answers `[secret NAME]`).
//!
//! Modules are found next to the fixture file, then in the `--modules`
//! directory; `builtin:NAME` is the embedded module.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rerun::{FilterRun, Outcome, Rerun, rerun};
use super::{ReplayError, describe_call, recorded_event, without_versions};
use crate::capabilities::HostServices;
use crate::runs::recording::{Call, Phase, ReplaySource, sha256_hex};
use crate::runs::{RunRecord, RunStatus};
use crate::runtime::{LoadedModule, Runtime};

/// Default time of a fixture's event.
pub const DEFAULT_TIME: &str = "2026-01-01T00:00:00Z";

/// The file-name endings a directory is searched for.
pub const ENDINGS: [&str; 3] = [".fixture.json", ".fixture.yaml", ".fixture.yml"];

/// One module test.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fixture {
    /// What it checks (default: the file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterSpec>,
    /// The action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionSpec>,
    /// The event.
    pub event: FixtureEvent,
    /// Canned answers to capability calls, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calls: Vec<Canned>,
    /// What should come of it.
    pub expect: Expect,
}

/// A fixture's filter: a module or a CEL expression.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterSpec {
    /// Module file (or `builtin:NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// CEL expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cel: Option<String>,
}

/// A fixture's action.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActionSpec {
    /// Module file (or `builtin:NAME`).
    pub module: String,
    /// Its params.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Value>,
}

/// A fixture's event.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixtureEvent {
    /// Event id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Trigger name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// Source type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// The data.
    pub data: Value,
}

/// A canned answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canned {
    /// `interface.function`.
    pub call: String,
    /// The arguments' summary it answers (None: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// `ok` or an error kind.
    #[serde(default = "ok", skip_serializing_if = "is_ok")]
    pub outcome: String,
    /// The answer (for `ok`).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub answer: Value,
    /// The error's text (for an error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn ok() -> String {
    "ok".into()
}

fn is_ok(outcome: &str) -> bool {
    outcome == "ok"
}

/// What a fixture expects.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    /// The filter's verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<bool>,
    /// The action's output: text, or JSON compared as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Text the run's error contains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The calls, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<Vec<String>>,
    /// Texts log lines contain, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<Vec<String>>,
}

/// A fixture file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct FixtureError {
    /// The file.
    pub file: String,
    /// What is wrong, and where in it.
    pub message: String,
}

/// Fixture files under `path` (a file is taken as it is), sorted; hidden
/// directories, `target` and `node_modules` are skipped.
pub fn discover(path: &Path) -> Result<Vec<PathBuf>, FixtureError> {
    let error = |message: String| FixtureError {
        file: path.display().to_string(),
        message,
    };
    let meta = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut dirs = vec![path.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| error(e.to_string()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !(name.starts_with('.') || name == "target" || name == "node_modules") {
                    dirs.push(entry.path());
                }
            } else if ENDINGS.iter().any(|e| name.ends_with(e)) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The fixtures in a file's text: JSON, or YAML for `.yaml`/`.yml`; one
/// fixture or a list. Errors name the field.
pub fn parse(file: &Path, text: &str) -> Result<Vec<Fixture>, FixtureError> {
    let error = |message: String| FixtureError {
        file: file.display().to_string(),
        message,
    };
    let yaml = file.extension().is_some_and(|e| e == "yaml" || e == "yml");
    let value: Value = if yaml {
        serde_yaml_ng::from_str(text).map_err(|e| error(format!("not valid YAML: {e}")))?
    } else {
        serde_json::from_str(text).map_err(|e| error(format!("not valid JSON: {e}")))?
    };
    let (items, listed) = match value {
        Value::Array(items) => (items, true),
        one => (vec![one], false),
    };
    let mut fixtures = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = |field: &str| match (listed, field) {
            (true, "") => format!("[{i}]"),
            (true, f) => format!("[{i}].{f}"),
            (false, "") => "the fixture".into(),
            (false, f) => f.to_string(),
        };
        let fixture: Fixture = serde_path_to_error::deserialize(item).map_err(|e| {
            let path = e.path().to_string();
            error(format!(
                "{}: {}",
                at(if path == "." { "" } else { &path }),
                e.into_inner()
            ))
        })?;
        fixture
            .validate()
            .map_err(|(field, why)| error(format!("{}: {why}", at(field))))?;
        fixtures.push(fixture);
    }
    Ok(fixtures)
}

/// Error kinds a canned answer may have.
const OUTCOMES: [&str; 5] = ["ok", "denied", "not-found", "invalid", "failed"];
/// Interfaces a module can call.
const INTERFACES: [&str; 4] = ["kv", "http", "kube", "secrets"];

impl Fixture {
    /// Whether the parts agree; else the field and why.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(filter) = &self.filter
            && filter.module.is_some() == filter.cel.is_some()
        {
            return Err(("filter", "give either `module` or `cel`".into()));
        }
        if self.filter.is_none() && self.action.is_none() {
            return Err(("", "give a `filter`, an `action`, or both".into()));
        }
        let e = &self.expect;
        if e.verdict.is_none()
            && e.output.is_none()
            && e.error.is_none()
            && e.calls.is_none()
            && e.logs.is_none()
        {
            return Err((
                "expect",
                "expect at least one of verdict, output, error, calls, logs".into(),
            ));
        }
        if e.verdict.is_some() && self.filter.is_none() {
            return Err(("expect.verdict", "there is no filter to decide".into()));
        }
        if e.output.is_some() && self.action.is_none() {
            return Err(("expect.output", "there is no action to return it".into()));
        }
        if e.output.is_some() && e.error.is_some() {
            return Err(("expect", "a run has an output or an error, not both".into()));
        }
        for canned in &self.calls {
            let known = canned
                .call
                .split_once('.')
                .is_some_and(|(i, f)| INTERFACES.contains(&i) && !f.is_empty());
            if !known {
                return Err((
                    "calls",
                    format!(
                        "`{}`: expected interface.function with interface one of {}",
                        canned.call,
                        INTERFACES.join(", ")
                    ),
                ));
            }
            if !OUTCOMES.contains(&canned.outcome.as_str()) {
                return Err((
                    "calls",
                    format!(
                        "{}: outcome `{}`: expected one of {}",
                        canned.call,
                        canned.outcome,
                        OUTCOMES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The event the guests get.
    fn event(&self) -> crate::event::Event {
        let e = &self.event;
        let or = |v: &Option<String>| v.clone().unwrap_or_else(|| "fixture".into());
        crate::event::Event {
            id: or(&e.id),
            trigger: or(&e.trigger),
            source: or(&e.source),
            kind: or(&e.kind),
            time: e.time.clone().unwrap_or_else(|| DEFAULT_TIME.into()),
            data: e.data.to_string(),
            redrive_of: None,
        }
    }

    /// The canned answers as a replay source.
    fn answers(&self) -> Arc<ReplaySource> {
        let calls = self
            .calls
            .iter()
            .map(|c| {
                let (interface, function) = c.call.split_once('.').unwrap_or((&c.call, ""));
                let answer = if c.outcome == "ok" {
                    if interface == "http" {
                        http_answer(&c.answer)
                    } else {
                        c.answer.clone()
                    }
                } else {
                    serde_json::json!({
                        "error": c.outcome,
                        "message": c.message.clone().unwrap_or_default(),
                    })
                };
                let call = Call {
                    phase: Phase::Action,
                    attempt: 1,
                    interface: interface.into(),
                    function: function.into(),
                    args: c.args.clone().unwrap_or_default(),
                    outcome: c.outcome.clone(),
                    answer: Some(answer),
                    answer_bytes: None,
                    at_ms: 0,
                    duration_us: 0,
                };
                (call, c.args.is_some())
            })
            .collect();
        Arc::new(ReplaySource::canned(calls))
    }
}

/// A written `http.send` answer in the form a recording keeps.
fn http_answer(answer: &Value) -> Value {
    if answer.get("bodySha256").is_some() {
        return answer.clone(); // as recorded (exported): whole or not, it says
    }
    let body = match &answer["body"] {
        Value::Null => String::new(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let headers: Vec<Value> = match &answer["headers"] {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| serde_json::json!([k, v.as_str().map_or(v.to_string(), str::to_string)]))
            .collect(),
        Value::Array(pairs) => pairs.clone(),
        _ => Vec::new(),
    };
    serde_json::json!({
        "status": answer["status"].as_u64().unwrap_or(200),
        "headers": headers,
        "body": body,
        "bodyBytes": body.len(),
        "bodySha256": sha256_hex(body.as_bytes()),
    })
}

/// What one fixture did, and whether that is what it expects.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    /// The fixture file.
    pub file: String,
    /// The fixture's name.
    pub name: String,
    /// Whether everything expected happened.
    pub passed: bool,
    /// What did not, one line each.
    pub failures: Vec<String>,
    /// The filter's verdict.
    pub verdict: Option<bool>,
    /// The action's output.
    pub output: Option<String>,
    /// The run's error.
    pub error: Option<String>,
    /// The calls made (`interface.function args → outcome`).
    pub calls: Vec<String>,
    /// The guests' log lines (`level message`).
    pub logs: Vec<String>,
}

impl Checked {
    /// A fixture that could not run at all.
    pub fn broken(file: &str, name: &str, why: String) -> Self {
        Checked {
            file: file.into(),
            name: name.into(),
            passed: false,
            failures: vec![why],
            verdict: None,
            output: None,
            error: None,
            calls: Vec::new(),
            logs: Vec::new(),
        }
    }
}

/// Runs `fixture` (from `file`) with its modules, already loaded, and
/// compares what happened with what it expects.
pub async fn check(
    runtime: &Runtime,
    services: Arc<HostServices>,
    (file, name): (&str, &str),
    fixture: &Fixture,
    (filter, action): (Option<&LoadedModule>, Option<&LoadedModule>),
) -> Checked {
    let answers = fixture.answers();
    let cel = fixture.filter.as_ref().and_then(|f| f.cel.as_deref());
    let filter = match (cel, filter) {
        (Some(expression), _) => FilterRun::Cel(expression),
        (None, Some(module)) => FilterRun::Module(module),
        (None, None) => FilterRun::None,
    };
    let params = fixture
        .action
        .as_ref()
        .and_then(|a| a.params.as_ref())
        .map_or_else(|| "{}".to_string(), Value::to_string);
    let run = Rerun {
        event: fixture.event(),
        filter,
        action: Ok(action),
        params,
        attempt: 1,
        answers: (answers.clone(), answers),
        live: None,
    };
    match rerun(runtime, services, run).await {
        Ok(outcome) => compare(file, name, &fixture.expect, outcome),
        Err(e) => Checked::broken(file, name, e.to_string()),
    }
}

/// Compares what a fixture's run did with what it expects.
fn compare(file: &str, name: &str, expect: &Expect, made: Outcome) -> Checked {
    let mut failures = Vec::new();
    if let Some(verdict) = expect.verdict
        && made.verdict != Some(verdict)
    {
        failures.push(format!(
            "verdict: expected {verdict}, got {}",
            made.verdict.map_or("no verdict".into(), |v| v.to_string())
        ));
    }
    if let Some(expected) = &expect.output {
        let same = match (expected, &made.output) {
            (_, None) => false,
            (Value::String(text), Some(output)) => text == output,
            (json, Some(output)) => {
                serde_json::from_str::<Value>(output).ok().as_ref() == Some(json)
            }
        };
        if !same {
            let expected = match expected {
                Value::String(text) => text.clone(),
                json => json.to_string(),
            };
            failures.push(format!(
                "output: expected {expected}\n        got {}",
                made.output.as_deref().unwrap_or(if made.action_ran {
                    "no output"
                } else {
                    "no output: the action did not run"
                })
            ));
        }
    }
    match (&expect.error, &made.error) {
        (Some(part), Some(error)) if without_versions(error).contains(part.as_str()) => {}
        (Some(part), Some(error)) => failures.push(format!(
            "error: expected one containing {part:?}, got: {error}"
        )),
        (Some(part), None) => failures.push(format!(
            "error: expected one containing {part:?}, but the run did not fail"
        )),
        (None, Some(error)) => failures.push(format!("unexpected error: {error}")),
        (None, None) => {}
    }
    let calls: Vec<String> = made.calls.iter().map(describe_call).collect();
    if let Some(expected) = &expect.calls {
        let made_calls: Vec<String> = made
            .calls
            .iter()
            .map(|c| format!("{}.{} {}", c.interface, c.function, c.args))
            .collect();
        // Equal, or the call begins with it and goes on after a space or `:`.
        let matches = |want: &String, got: &String| {
            got.strip_prefix(want.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', ':']))
        };
        let same = expected.len() == made_calls.len()
            && expected.iter().zip(&made_calls).all(|(w, g)| matches(w, g));
        if !same {
            let list = |l: &[String]| {
                if l.is_empty() {
                    " (none)".to_string()
                } else {
                    l.iter().map(|c| format!("\n          {c}")).collect()
                }
            };
            failures.push(format!(
                "calls expected:{}\ncalls made:{}",
                list(expected),
                list(&made_calls)
            ));
        }
    }
    failures.extend(made.divergences.iter().map(|d| format!("call: {d}")));
    let logs: Vec<String> = made
        .logs
        .iter()
        .map(|l| format!("{} {}", l.level, l.message))
        .collect();
    if let Some(expected) = &expect.logs {
        let mut lines = made.logs.iter();
        for want in expected {
            if !lines.any(|l| l.message.contains(want.as_str())) {
                failures.push(format!("logs: no line containing {want:?} (in order)"));
                break;
            }
        }
    }
    Checked {
        file: file.into(),
        name: name.into(),
        passed: failures.is_empty(),
        failures,
        verdict: made.verdict,
        output: made.output,
        error: made.error,
        calls,
        logs,
    }
}

/// A module label (`name@version`, `builtin:NAME@sha256`) as a fixture names it.
fn module_name(label: &str) -> String {
    label
        .rsplit_once('@')
        .map_or(label, |(name, _)| name)
        .to_string()
}

/// Writes a recorded run down as a fixture: its event, params and every
/// call with its answer, expecting what the run did. The calls are the
/// filter's and the last action attempt's.
pub fn from_record(record: &RunRecord) -> Result<Fixture, ReplayError> {
    let recording = record
        .recording
        .as_deref()
        .ok_or_else(|| ReplayError::NotRecorded(record.run_id.clone()))?;
    let event = recorded_event(record)?;
    let filter = recording.verdict.as_ref().map(|v| FilterSpec {
        module: (v.filter != "cel").then(|| module_name(&v.filter)),
        cel: v.expression.clone(),
    });
    let action = record.module.as_deref().map(|label| ActionSpec {
        module: module_name(label),
        params: recording
            .params
            .as_deref()
            .and_then(|p| serde_json::from_str(p).ok())
            .filter(|p: &Value| p.as_object().is_none_or(|o| !o.is_empty())),
    });
    let last_attempt = record.attempts.last().map(|a| a.number).unwrap_or(1);
    let kept: Vec<&Call> = recording
        .calls
        .iter()
        .filter(|c| c.phase == Phase::Filter || c.attempt == last_attempt)
        .collect();
    let calls = kept
        .iter()
        .map(|c| {
            let error = c.outcome != "ok";
            let answer = c.answer.clone().unwrap_or(Value::Null);
            Canned {
                call: format!("{}.{}", c.interface, c.function),
                args: Some(c.args.clone()),
                outcome: c.outcome.clone(),
                message: error.then(|| answer["message"].as_str().unwrap_or("").to_string()),
                answer: if error { Value::Null } else { answer },
            }
        })
        .collect();
    let output = (record.status == RunStatus::Succeeded)
        .then(|| record.output.clone())
        .flatten()
        .map(|text| match serde_json::from_str::<Value>(&text) {
            Ok(json @ (Value::Object(_) | Value::Array(_))) => json,
            _ => Value::String(text),
        });
    let expect = Expect {
        verdict: recording.verdict.as_ref().and_then(|v| v.passed),
        output,
        error: (record.status == RunStatus::Failed)
            .then(|| record.error.as_deref().map(without_versions))
            .flatten(),
        calls: Some(
            kept.iter()
                .map(|c| format!("{}.{} {}", c.interface, c.function, c.args))
                .collect(),
        ),
        logs: None,
    };
    Ok(Fixture {
        name: Some(format!("{}: run {}", record.trigger, record.run_id)),
        filter,
        action,
        event: FixtureEvent {
            id: Some(event.id),
            trigger: Some(event.trigger),
            source: Some(event.source),
            kind: Some(event.kind),
            time: Some(event.time),
            data: serde_json::from_str(&event.data).unwrap_or(Value::String(event.data)),
        },
        calls,
        expect,
    })
}
