//! {{name}}: a wasmtrigger action. Do the work for an event and return the
//! run's output (handed to chained triggers), or Err(message) to fail the run.

use wasmtrigger_guest::serde_json::{self, Value};
use wasmtrigger_guest::{Action, Event, export_action, info, kv, params_as};

struct {{type}};

impl Action for {{type}} {
    fn run(event: Event, params: String) -> Result<String, String> {
        // `params` is the trigger's `params` as JSON text.
        let params: Value = params_as(&params)?;
        // Per-trigger state that survives restarts; increment is atomic.
        let runs = kv::increment("runs", 1).map_err(|e| format!("kv: {}", e.describe()))?;
        info!("run {runs} for {} event {}", event.kind, event.id);
        let output = serde_json::json!({ "runs": runs, "kind": event.kind, "params": params });
        Ok(output.to_string())
    }
}

export_action!({{type}});
