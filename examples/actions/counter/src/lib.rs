//! Counts its runs in the trigger's kv state and returns the new count.
//! The count survives engine restarts. Params: `{"key": "runs"}` (optional).

use serde::Deserialize;
use wasmtrigger_guest::{Action, Event, export_action, info, kv, params_as};

#[derive(Deserialize)]
struct Params {
    #[serde(default = "default_key")]
    key: String,
}

fn default_key() -> String {
    "runs".to_string()
}

struct Counter;

impl Action for Counter {
    fn run(event: Event, params: String) -> Result<String, String> {
        let params: Params = params_as(&params)?;
        // increment is atomic in the host, so concurrent runs never lose a count.
        let count = kv::increment(&params.key, 1).map_err(|e| format!("kv: {e:?}"))?;
        info!("{} run number {count} (event {})", event.trigger, event.id);
        Ok(count.to_string())
    }
}

export_action!(Counter);
