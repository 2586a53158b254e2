//! {{name}}: a wasmtrigger action. Do the work for an event and return the
//! run's output (handed to chained triggers), or Err(message) to fail the run.

wit_bindgen::generate!({ world: "action", path: "wit" });

use wasmtrigger::plugin::kv;
use wasmtrigger::plugin::log::{log, Level};

struct Component;

impl Guest for Component {
    fn run(event: Event, params: String) -> Result<String, String> {
        // `params` is the trigger's `params` as JSON text.
        let params: serde_json::Value =
            serde_json::from_str(&params).map_err(|e| format!("params are not JSON: {e}"))?;
        // Per-trigger state that survives restarts; increment is atomic.
        let runs = kv::increment("runs", 1).map_err(|e| format!("kv: {e:?}"))?;
        log(Level::Info, &format!("run {runs} for {} event {}", event.kind, event.id));
        let output = serde_json::json!({ "runs": runs, "kind": event.kind, "params": params });
        Ok(output.to_string())
    }
}

export!(Component);
