//! Logs a one-line summary of each event and returns the event as JSON, so
//! that a chained trigger receives it whole.

use wasmtrigger_guest::serde_json::json;
use wasmtrigger_guest::{Action, Event, export_action, info};

struct LogEvent;

impl Action for LogEvent {
    fn run(event: Event, _params: String) -> Result<String, String> {
        let data = event.json()?;
        info!(
            "event {} for {}: {} {} at {} ({} bytes of data)",
            event.id,
            event.trigger,
            event.source,
            event.kind,
            event.time,
            event.data.len()
        );
        let output = json!({
            "id": event.id,
            "trigger": event.trigger,
            "source": event.source,
            "kind": event.kind,
            "time": event.time,
            "data": data,
        });
        Ok(output.to_string())
    }
}

export_action!(LogEvent);
