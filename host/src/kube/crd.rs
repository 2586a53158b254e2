//! The `Trigger` custom resource (`wasmtrigger.dev/v1alpha1`): one trigger as
//! in the config file, as a Kubernetes object, with the engine's view of it
//! written back to `status`. The CRD manifest is generated from these types
//! (`wasmtrigger crd`) and checked in at `deploy/crd/`.

use kube::CustomResource;
use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One trigger, exactly as an entry of the config file's `triggers:` (the name
/// is the object's name).
// Several printer columns share a column type, which clippy takes for repeats.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "wasmtrigger.dev",
    version = "v1alpha1",
    kind = "Trigger",
    namespaced,
    status = "TriggerStatus",
    shortname = "wt",
    category = "wasmtrigger",
    doc = "A wasmtrigger trigger: an event source, an optional filter and an action (a WebAssembly module).",
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Last Success",
        type_ = "date",
        json_path = ".status.lastSuccess"
    ),
    printcolumn(
        name = "Last Failure",
        type_ = "date",
        json_path = ".status.lastFailure"
    ),
    printcolumn(
        name = "Failures",
        type_ = "integer",
        json_path = ".status.failureCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TriggerSpec {
    /// Free text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The event source, as `source:` in the config file (validated by the engine).
    #[schemars(schema_with = "any_object")]
    pub source: Value,
    /// The optional filter, as `filter:` in the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub filter: Option<Value>,
    /// The action, as `action:` in the config file.
    #[schemars(schema_with = "any_object")]
    pub action: Value,
    /// Per-key ordering, as `ordering:` in the config file: `none` or `{key: EXPR}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "string_or_object")]
    pub ordering: Option<Value>,
    /// Run the action with its side effects suppressed, as `dryRun:` in the config file.
    #[serde(default, rename = "dryRun", skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// A candidate action shadowing the action, as `shadow:` in the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub shadow: Option<Value>,
}

/// What the engine reports about a Trigger.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerStatus {
    /// `Ready` (running), `Invalid` (rejected; see the Invalid condition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `Ready` and `Invalid` conditions.
    #[serde(default)]
    pub conditions: Vec<TriggerCondition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last run finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_time: Option<String>,
    /// `succeeded`, `failed` or `filtered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<String>,
    /// When a run last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// When a run last failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Runs that succeeded since this engine started reporting.
    #[serde(default)]
    pub success_count: u64,
    /// Runs that failed since this engine started reporting.
    #[serde(default)]
    pub failure_count: u64,
    /// `module@version` of the action the last run used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module_version: Option<String>,
}

/// A status condition in the usual Kubernetes shape.
#[derive(Deserialize, Serialize, Clone, Debug, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TriggerCondition {
    /// `Ready` or `Invalid`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// For people: for Invalid, the validation errors.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: String,
}

fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// `none`, or an object: the engine validates which.
fn string_or_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Per-key ordering, as `ordering:` in the config file: `none` or `{key: EXPR}`.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The CRD manifest as YAML, as checked in at `deploy/crd/trigger.yaml`.
pub fn crd_yaml() -> String {
    let crd = Trigger::crd();
    format!(
        "# Generated by `wasmtrigger crd` from host/src/crd.rs; do not edit.\n{}",
        serde_yaml_ng::to_string(&crd).unwrap_or_default()
    )
}

/// The trigger entry (as in a config file) a Trigger object stands for.
pub fn as_config_entry(name: &str, spec: &TriggerSpec) -> Value {
    let mut entry = serde_json::json!({
        "name": name,
        "source": spec.source,
        "action": spec.action,
    });
    if let Some(description) = &spec.description {
        entry["description"] = description.clone().into();
    }
    if let Some(filter) = &spec.filter {
        entry["filter"] = filter.clone();
    }
    if let Some(ordering) = &spec.ordering {
        entry["ordering"] = ordering.clone();
    }
    if let Some(dry_run) = spec.dry_run {
        entry["dryRun"] = dry_run.into();
    }
    if let Some(shadow) = &spec.shadow {
        entry["shadow"] = shadow.clone();
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spec_field_reaches_the_config_entry() {
        let spec: TriggerSpec = serde_json::from_value(serde_json::json!({
            "description": "d",
            "source": {"type": "webhook"},
            "filter": {"cel": "true"},
            "action": {"module": "m.wasm"},
            "ordering": {"key": "event.data.body.id"},
        }))
        .unwrap();
        let entry = as_config_entry("t", &spec);
        assert_eq!(entry["ordering"]["key"], "event.data.body.id");
        assert_eq!(entry["filter"]["cel"], "true");
        assert_eq!(entry["description"], "d");
        let none: TriggerSpec = serde_json::from_value(serde_json::json!({
            "source": {}, "action": {}, "ordering": "none",
        }))
        .unwrap();
        assert_eq!(as_config_entry("t", &none)["ordering"], "none");
    }
}
