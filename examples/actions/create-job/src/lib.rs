//! Creates a `batch/v1` Job from a template for each event, named uniquely per
//! event (ORCA / KubeJobs style: an event becomes a unit of work in the
//! cluster).
//!
//! Params:
//! - `template` (required): the Job — at least `spec`; `metadata.labels` and
//!   `metadata.annotations` are kept. Strings may use placeholders:
//!   `{trigger}`, `{event.id}`, `{event.kind}`, `{event.time}`,
//!   `{event.hash}`, `{event.data}` (the event's data as JSON text) and, for a
//!   `kube-watch` event, `{object.name}`, `{object.namespace}`, `{object.kind}`;
//! - `namePrefix`: the Job's name is `<namePrefix>-<16 hex digits of the event
//!   id>` (default prefix: the template's `metadata.name`, else the trigger);
//! - `namespace`: default the watched object's, else `default`.
//!
//! The name depends only on the event, so a retried run finds the Job it
//! already created and succeeds instead of starting a second one. Jobs are
//! labelled `wasmtrigger.dev/trigger` and `wasmtrigger.dev/event`.
//!
//! Output: `{"job": "<namespace>/<name>", "created": true|false}`.
//! Grants needed: `kube` verbs `create` and `get` on `batch/v1` Job.

use serde::Deserialize;
use wasmtrigger_guest::serde_json::{Value, json};
use wasmtrigger_guest::template::{Vars, short_hash};
use wasmtrigger_guest::{Action, Event, HostError, export_action, info, kube, params_as};

/// Kubernetes limits label values (and so Job names, which become pod labels) to 63.
const MAX_NAME: usize = 63;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    template: Value,
    name_prefix: Option<String>,
    namespace: Option<String>,
}

struct CreateJob;

impl Action for CreateJob {
    fn run(event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        if !p.template["spec"].is_object() {
            return Err("`template.spec` is required: the Job's spec".into());
        }
        let watched = kube::watched_object(&event).ok();
        let namespace = p
            .namespace
            .clone()
            .or_else(|| {
                watched
                    .as_ref()
                    .and_then(kube::namespace_of)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "default".to_string());
        let hash = short_hash(&event.id);
        let prefix = p
            .name_prefix
            .clone()
            .or_else(|| p.template["metadata"]["name"].as_str().map(str::to_string))
            .unwrap_or_else(|| event.trigger.clone());
        let name = job_name(&prefix, &hash)?;

        let vars = Vars::for_event(&event, watched.as_ref()).with("event.data", &event.data);
        let mut job = vars.fill(&p.template);
        job["apiVersion"] = json!("batch/v1");
        job["kind"] = json!("Job");
        let metadata = &mut job["metadata"];
        if !metadata.is_object() {
            *metadata = json!({});
        }
        metadata["name"] = json!(name);
        metadata["namespace"] = json!(namespace);
        if !metadata["labels"].is_object() {
            metadata["labels"] = json!({});
        }
        metadata["labels"]["wasmtrigger.dev/trigger"] = json!(label_value(&event.trigger));
        metadata["labels"]["wasmtrigger.dev/event"] = json!(hash);

        let target = kube::target("batch/v1", "Job", Some(&namespace));
        let created = match kube::create(&target, &job.to_string()) {
            Ok(_) => true,
            // The same event again (a retry): the Job exists; make sure it is ours.
            Err(HostError::Invalid(why)) if why.starts_with("409") => {
                let existing = kube::get(&target, &name)
                    .map_err(|e| format!("Job {namespace}/{name} exists but: {}", e.describe()))?;
                if !existing.contains(&hash) {
                    return Err(format!(
                        "Job {namespace}/{name} exists and was not created for this event"
                    ));
                }
                false
            }
            Err(e) => return Err(format!("creating Job {namespace}/{name}: {}", e.describe())),
        };
        info!(
            "Job {namespace}/{name} for event {} (created: {created})",
            event.id
        );
        Ok(json!({ "job": format!("{namespace}/{name}"), "created": created }).to_string())
    }
}

/// `<prefix>-<hash>`, the prefix lower-cased, cut and trimmed to stay a valid name.
fn job_name(prefix: &str, hash: &str) -> Result<String, String> {
    let cleaned: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME - hash.len() - 1)
        .collect();
    let cleaned = cleaned.trim_matches('-');
    if cleaned.is_empty() {
        return Err(format!(
            "`namePrefix` {prefix:?} has no usable characters (a-z, 0-9, -)"
        ));
    }
    Ok(format!("{cleaned}-{hash}"))
}

/// A label value: at most 63 of `[A-Za-z0-9._-]`, starting and ending alphanumeric.
fn label_value(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(MAX_NAME)
        .collect();
    cleaned
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

export_action!(CreateJob);
