//! Records a `core/v1` Event about the object a `kube-watch` event is about, so
//! `kubectl describe` and `kubectl get events` show what wasmtrigger saw.
//!
//! Params:
//! - `reason` (required): a short CamelCase reason, e.g. `ConfigChanged`;
//! - `message`: template (default `{event.kind} of {object.kind}
//!   {object.namespace}/{object.name}, seen by {trigger}`); placeholders as in
//!   the patch-resource example; cut to 1 KiB like the API server would;
//! - `type`: `Normal` (default) or `Warning`.
//!
//! The Event lives in the object's namespace (`default` for cluster-scoped
//! objects, as Kubernetes does) and is named `<object>.<16 hex digits of the
//! event id>`, so a retried run does not record it twice.
//!
//! Output: `{"event": "<namespace>/<name>", "created": true|false}`.
//! Grants needed: `kube` verb `create` on `v1` Event in those namespaces.

use serde::Deserialize;
use wasmtrigger_guest::serde_json::json;
use wasmtrigger_guest::template::{Vars, short_hash};
use wasmtrigger_guest::{Action, Event, HostError, export_action, info, kube, params_as};

const DEFAULT_MESSAGE: &str =
    "{event.kind} of {object.kind} {object.namespace}/{object.name}, seen by {trigger}";
const MAX_MESSAGE: usize = 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    reason: String,
    message: Option<String>,
    #[serde(rename = "type", default)]
    event_type: EventType,
}

#[derive(Deserialize, Default, Clone, Copy, Debug)]
enum EventType {
    #[default]
    Normal,
    Warning,
}

struct RecordEvent;

impl Action for RecordEvent {
    fn run(event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        if p.reason.is_empty() || !p.reason.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!(
                "`reason` must be a CamelCase word, got {:?}",
                p.reason
            ));
        }
        let object = kube::watched_object(&event)?;
        let vars = Vars::for_event(&event, Some(&object));
        let message: String = vars
            .fill_str(p.message.as_deref().unwrap_or(DEFAULT_MESSAGE))
            .chars()
            .take(MAX_MESSAGE)
            .collect();
        let namespace = kube::namespace_of(&object).unwrap_or("default").to_string();
        let object_name = kube::name_of(&object);
        let name = format!("{object_name}.{}", short_hash(&event.id));
        let time = seconds_precision(&event.time);
        let record = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": { "name": name, "namespace": namespace },
            "involvedObject": {
                "apiVersion": object["apiVersion"],
                "kind": object["kind"],
                "name": object_name,
                "namespace": object["metadata"]["namespace"],
                "uid": object["metadata"]["uid"],
                "resourceVersion": object["metadata"]["resourceVersion"],
            },
            "reason": p.reason,
            "message": message,
            "type": format!("{:?}", p.event_type),
            "source": { "component": "wasmtrigger" },
            "reportingComponent": "wasmtrigger",
            "reportingInstance": event.trigger,
            "firstTimestamp": time,
            "lastTimestamp": time,
            "count": 1,
        });
        let target = kube::target("v1", "Event", Some(&namespace));
        let created = match kube::create(&target, &record.to_string()) {
            Ok(_) => true,
            Err(HostError::Invalid(why)) if why.starts_with("409") => false,
            Err(e) => {
                return Err(format!(
                    "recording Event {namespace}/{name}: {}",
                    e.describe()
                ));
            }
        };
        info!(
            "Event {namespace}/{name} ({}) about {object_name}",
            p.reason
        );
        Ok(json!({ "event": format!("{namespace}/{name}"), "created": created }).to_string())
    }
}

/// `metav1.Time` is RFC 3339 in whole seconds; drop any fraction.
fn seconds_precision(time: &str) -> String {
    match (time.find('.'), time.rfind(['Z', '+', '-'])) {
        (Some(dot), Some(zone)) if zone > dot => format!("{}{}", &time[..dot], &time[zone..]),
        _ => time.to_string(),
    }
}

export_action!(RecordEvent);
