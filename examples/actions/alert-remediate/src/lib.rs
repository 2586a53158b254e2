//! Alertmanager → remediation: for each firing alert in an Alertmanager
//! webhook, restarts the Deployment the alert names (as `kubectl rollout
//! restart` does: an annotation on the pod template) and records a
//! Kubernetes Event on it saying which alert did it.
//!
//! Params (all optional):
//! - `deploymentLabel`: the alert label naming the Deployment (default `deployment`);
//! - `namespaceLabel`: the alert label naming its namespace (default `namespace`);
//! - `alertnames`: only alerts with one of these `alertname` labels (default: all).
//!
//! Alertmanager re-sends a firing alert every `repeat_interval`; the same
//! occurrence (its `fingerprint` and `startsAt`) restarts the Deployment
//! once: it is claimed in kv before the restart, and the claim is dropped if
//! the restart fails, so a retry tries again. Resolved alerts and alerts
//! without the labels are skipped.
//!
//! Output: `{"restarted": [ns/name], "duplicates": [...], "skipped": [...]}`.
//! Grants needed: `kube` verb `patch` on `apps/v1` Deployment and `create`
//! on `v1` Event in the alerts' namespaces.

use serde::Deserialize;
use wasmtrigger_guest::serde_json::{Value, json};
use wasmtrigger_guest::{Action, Event, HostError, export_action, info, kube, kv, params_as};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Params {
    #[serde(default = "deployment_label")]
    deployment_label: String,
    #[serde(default = "namespace_label")]
    namespace_label: String,
    #[serde(default)]
    alertnames: Vec<String>,
}

fn deployment_label() -> String {
    "deployment".into()
}

fn namespace_label() -> String {
    "namespace".into()
}

/// The annotation `kubectl rollout restart` sets.
const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

struct AlertRemediate;

impl Action for AlertRemediate {
    fn run(event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        let data = event.json()?;
        let alerts = data["body"]["alerts"]
            .as_array()
            .ok_or("expected an Alertmanager webhook: `alerts` is missing")?;
        let (mut restarted, mut duplicates, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        for alert in alerts {
            let labels = &alert["labels"];
            let alertname = labels["alertname"].as_str().unwrap_or("?");
            let (Some(name), Some(namespace)) = (
                labels[p.deployment_label.as_str()].as_str(),
                labels[p.namespace_label.as_str()].as_str(),
            ) else {
                skipped.push(format!("{alertname}: no deployment/namespace labels"));
                continue;
            };
            if alert["status"] != "firing"
                || (!p.alertnames.is_empty() && !p.alertnames.iter().any(|a| a == alertname))
            {
                skipped.push(format!("{alertname} on {namespace}/{name}"));
                continue;
            }
            let occurrence = format!(
                "alert/{}@{}",
                alert["fingerprint"].as_str().unwrap_or(alertname),
                alert["startsAt"].as_str().unwrap_or_default()
            );
            let claimed = kv::compare_and_swap(&occurrence, None, Some("restarting"))
                .map_err(|e| format!("kv: {}", e.describe()))?;
            if !claimed {
                duplicates.push(format!("{namespace}/{name}"));
                continue;
            }
            match restart(&event, namespace, name, alertname) {
                Ok(()) => {
                    kv::set(&occurrence, "restarted")
                        .map_err(|e| format!("kv: {}", e.describe()))?;
                    restarted.push(format!("{namespace}/{name}"));
                }
                Err(why) => {
                    // Give the occurrence up so that the retry restarts it.
                    let _ = kv::delete(&occurrence);
                    return Err(why);
                }
            }
        }
        Ok(
            json!({ "restarted": restarted, "duplicates": duplicates, "skipped": skipped })
                .to_string(),
        )
    }
}

/// Restarts one Deployment and records an Event on it.
fn restart(event: &Event, namespace: &str, name: &str, alertname: &str) -> Result<(), String> {
    let deployments = kube::target("apps/v1", "Deployment", Some(namespace));
    let patch =
        json!({"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: event.time}}}}});
    let patched = kube::patch(
        &deployments,
        name,
        kube::PatchType::Merge,
        &patch.to_string(),
    )
    .map_err(|e| format!("restarting Deployment {namespace}/{name}: {}", e.describe()))?;
    let deployment: Value = wasmtrigger_guest::serde_json::from_str(&patched).unwrap_or_default();
    info!("restarted Deployment {namespace}/{name} for alert {alertname}");
    let time = event
        .time
        .split('.')
        .next()
        .unwrap_or_default()
        .trim_end_matches('Z')
        .to_string()
        + "Z";
    let record = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": { "name": format!("{name}.{}", &event.id.replace('-', "")[..16]), "namespace": namespace },
        "involvedObject": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": name,
            "namespace": namespace,
            "uid": deployment["metadata"]["uid"],
        },
        "reason": "AlertRemediation",
        "message": format!("restarted for firing alert {alertname} (trigger {})", event.trigger),
        "type": "Warning",
        "source": { "component": "wasmtrigger" },
        "firstTimestamp": time,
        "lastTimestamp": time,
        "count": 1,
    });
    match kube::create(
        &kube::target("v1", "Event", Some(namespace)),
        &record.to_string(),
    ) {
        // 409: this event already recorded it (a retried run).
        Ok(_) => Ok(()),
        Err(HostError::Invalid(why)) if why.starts_with("409") => Ok(()),
        Err(e) => Err(format!(
            "recording the Event on {namespace}/{name}: {}",
            e.describe()
        )),
    }
}

export_action!(AlertRemediate);
