//! Passes a Deployment event when every desired replica is ready.
//!
//! Kubernetes defaulting applies: an absent `spec.replicas` means 1 and an
//! absent `status.readyReplicas` means 0, so a Deployment scaled to zero is
//! ready and one that was just created is not. The event data may be the
//! Deployment itself or a watch event wrapping it in `object`.

use wasmtrigger_guest::{Event, Filter, debug, export_filter};

struct ReadyReplicas;

impl Filter for ReadyReplicas {
    fn filter(event: Event) -> Result<bool, String> {
        let data = event.json()?;
        let deployment = data.get("object").unwrap_or(&data);
        if let Some(kind) = deployment["kind"].as_str()
            && kind != "Deployment"
        {
            return Err(format!("expected a Deployment, got a {kind}"));
        }
        let desired = deployment["spec"]["replicas"].as_i64().unwrap_or(1);
        let ready = deployment["status"]["readyReplicas"].as_i64().unwrap_or(0);
        let name = deployment["metadata"]["name"].as_str().unwrap_or("?");
        debug!("deployment {name}: {ready}/{desired} replicas ready");
        Ok(ready == desired)
    }
}

export_filter!(ReadyReplicas);
