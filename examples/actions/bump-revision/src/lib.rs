//! When a ConfigMap (or any watched object) changes, bumps a revision
//! annotation on every object of a kind (Deployments by default) carrying a
//! label, so they roll out with the new configuration — kube-trigger's quick
//! start as a module.
//!
//! Params:
//! - `selector` (required): label selector of the objects, e.g. `app=web`;
//! - `apiVersion`, `kind`: what to bump (default `apps/v1` `Deployment`; e.g.
//!   `core.oam.dev/v1beta1` `Application` as kube-trigger's
//!   bump-application-revision does);
//! - `namespace`: where the objects are (default: the watched object's);
//! - `annotation`: default `wasmtrigger.dev/revision`; its value is a counter;
//! - `podTemplate`: also write the annotation into `spec.template`, which makes
//!   a workload roll its pods (default true for Deployment, StatefulSet,
//!   DaemonSet and ReplicaSet, false for other kinds).
//!
//! Events of other sources work too (a webhook: a GitHub push, say), with
//! `namespace` set; the change is then named `<source>/<event id>`.
//!
//! Each object also gets `wasmtrigger.dev/revision-from:
//! <kind>/<name>@<resourceVersion>` naming the change it was bumped for; a
//! Deployment already marked with this change is skipped, so a retried run
//! never bumps twice.
//!
//! Output: `{"bumped": [names], "skipped": [names], "from": "<change>"}`.
//! Grants needed: `kube` verbs `list` and `patch` on that kind (`apps/v1`
//! Deployment by default) in that namespace.

use serde::Deserialize;
use wasmtrigger_guest::serde_json::{self, Map, Value, json};
use wasmtrigger_guest::{Action, Event, export_action, info, kube, params_as};

const FROM: &str = "wasmtrigger.dev/revision-from";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    selector: String,
    #[serde(default = "default_api_version")]
    api_version: String,
    #[serde(default = "default_kind")]
    kind: String,
    namespace: Option<String>,
    #[serde(default = "default_annotation")]
    annotation: String,
    pod_template: Option<bool>,
}

fn default_api_version() -> String {
    "apps/v1".to_string()
}

fn default_kind() -> String {
    "Deployment".to_string()
}

fn default_annotation() -> String {
    "wasmtrigger.dev/revision".to_string()
}

struct BumpRevision;

impl Action for BumpRevision {
    fn run(event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        if p.selector.trim().is_empty() {
            return Err(format!(
                "`selector` must not be empty: it would bump every {}",
                p.kind
            ));
        }
        // A kube-watch change names itself; any other event (a webhook, say)
        // is named by its id, which a retry keeps.
        let changed = kube::watched_object(&event).ok();
        let namespace = p
            .namespace
            .clone()
            .or_else(|| {
                changed
                    .as_ref()
                    .and_then(|c| kube::namespace_of(c).map(str::to_string))
            })
            .ok_or("no namespace: set `namespace` in params")?;
        let change = match &changed {
            Some(changed) => format!(
                "{}/{}@{}",
                changed["kind"].as_str().unwrap_or("object"),
                kube::name_of(changed),
                changed["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            ),
            None => format!("{}/{}", event.source, event.id),
        };
        let kind = p.kind.as_str();
        let target = kube::target(&p.api_version, kind, Some(&namespace));
        let listed = kube::list_objects(&target, Some(&p.selector))
            .map_err(|e| format!("listing {kind} objects in {namespace}: {}", e.describe()))?;
        let deployments: Vec<Value> = serde_json::from_str(&listed)
            .map_err(|e| format!("the API server's list is not JSON: {e}"))?;

        let (mut bumped, mut skipped) = (Vec::new(), Vec::new());
        for deployment in &deployments {
            let name = kube::name_of(deployment);
            let annotations = &deployment["metadata"]["annotations"];
            if annotations[FROM].as_str() == Some(change.as_str()) {
                skipped.push(name.to_string());
                continue;
            }
            let revision = annotations[p.annotation.as_str()]
                .as_str()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            let patch = bump_patch(&p, revision, &change);
            kube::patch(&target, name, kube::PatchType::Merge, &patch.to_string())
                .map_err(|e| format!("patching {kind} {namespace}/{name}: {}", e.describe()))?;
            info!("bumped {kind} {namespace}/{name} to revision {revision} for {change}");
            bumped.push(name.to_string());
        }
        Ok(json!({ "bumped": bumped, "skipped": skipped, "from": change }).to_string())
    }
}

/// The merge patch that sets the counter (and the change marker) on one object.
fn bump_patch(p: &Params, revision: u64, change: &str) -> Value {
    let mut annotations = Map::new();
    annotations.insert(p.annotation.clone(), json!(revision.to_string()));
    let mut patch = json!({ "metadata": { "annotations": annotations.clone() } });
    let workload = matches!(
        p.kind.as_str(),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet"
    );
    if p.pod_template.unwrap_or(workload) {
        patch["spec"] = json!({ "template": { "metadata": { "annotations": annotations } } });
    }
    patch["metadata"]["annotations"][FROM] = json!(change);
    patch
}

export_action!(BumpRevision);
