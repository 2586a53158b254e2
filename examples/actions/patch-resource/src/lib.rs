//! Patches one Kubernetes object — kube-trigger's `patch-resource` action as a
//! module.
//!
//! Params:
//! - `target`: `{apiVersion, kind, namespace, name}`. `name` and `namespace`
//!   default to those of the object a `kube-watch` event is about; give both
//!   (or `namespace: null` for a cluster-scoped kind) to patch something else;
//! - `patchType`: `merge` (default), `json` or `strategic`;
//! - `patch`: the patch as YAML/JSON — an object for merge and strategic, a
//!   list of operations for json. Strings may use placeholders: `{trigger}`,
//!   `{event.id}`, `{event.kind}`, `{event.time}`, `{event.hash}`,
//!   `{object.name}`, `{object.namespace}`, `{object.kind}`, `{object.uid}`.
//!
//! Output: `{"patched": "<namespace>/<name>", "resourceVersion": "..."}`.
//! Grants needed: `kube` with verb `patch` on the target kind and namespace.

use serde::Deserialize;
use wasmtrigger_guest::serde_json::{Value, json};
use wasmtrigger_guest::template::Vars;
use wasmtrigger_guest::{Action, Event, export_action, info, kube, params_as};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    target: TargetParams,
    #[serde(default)]
    patch_type: PatchKind,
    patch: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TargetParams {
    api_version: String,
    kind: String,
    /// Absent: the watched object's; `null`: cluster-scoped.
    #[serde(default, deserialize_with = "present")]
    namespace: Option<Option<String>>,
    name: Option<String>,
}

/// Tells an absent field (outer None) from an explicit `null` (Some(None)).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum PatchKind {
    #[default]
    Merge,
    Json,
    Strategic,
}

struct PatchResource;

impl Action for PatchResource {
    fn run(event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        // Placeholders may name the watched object even when the target is fixed.
        let watched = match (&p.target.name, &p.target.namespace) {
            (Some(_), Some(_)) => kube::watched_object(&event).ok(),
            _ => Some(kube::watched_object(&event)?),
        };
        let name = match (&p.target.name, &watched) {
            (Some(name), _) => name.clone(),
            (None, object) => object
                .as_ref()
                .map(kube::name_of)
                .unwrap_or_default()
                .to_string(),
        };
        if name.is_empty() {
            return Err("no object name: set `target.name` in params".into());
        }
        let namespace = match &p.target.namespace {
            Some(namespace) => namespace.clone(),
            None => watched
                .as_ref()
                .and_then(kube::namespace_of)
                .map(str::to_string),
        };
        let vars = Vars::for_event(&event, watched.as_ref());
        let patch = vars.fill(&p.patch);
        let (patch_type, shape_ok) = match p.patch_type {
            PatchKind::Merge => (kube::PatchType::Merge, patch.is_object()),
            PatchKind::Strategic => (kube::PatchType::Strategic, patch.is_object()),
            PatchKind::Json => (kube::PatchType::Json, patch.is_array()),
        };
        if !shape_ok {
            return Err("`patch` must be an object for merge/strategic patches and a list of operations for json patches".into());
        }
        let target = kube::target(&p.target.api_version, &p.target.kind, namespace.as_deref());
        let patched = kube::patch(&target, &name, patch_type, &patch.to_string())
            .map_err(|e| format!("patching {} {name}: {}", p.target.kind, e.describe()))?;
        let patched: Value = wasmtrigger_guest::serde_json::from_str(&patched)
            .map_err(|e| format!("the API server's answer is not JSON: {e}"))?;
        let at = format!("{}/{name}", namespace.as_deref().unwrap_or(""));
        info!("patched {} {at}", p.target.kind);
        Ok(json!({
            "patched": at,
            "resourceVersion": patched["metadata"]["resourceVersion"],
        })
        .to_string())
    }
}

export_action!(PatchResource);
