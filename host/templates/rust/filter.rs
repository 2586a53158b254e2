//! {{name}}: a wasmtrigger filter. Return Ok(true) to run the trigger's
//! action for this event, Ok(false) to drop it, Err(message) to fail the run.

use wasmtrigger_guest::{Event, Filter, export_filter, info};

struct {{type}};

impl Filter for {{type}} {
    fn filter(event: Event) -> Result<bool, String> {
        let data = event.json()?; // `data` is JSON text; parse it
        // A webhook's data is {body, headers, contentType}; a kube-watch's is the object change.
        let object = if event.source == "webhook" { &data["body"] } else { &data["object"] };
        let name = object["metadata"]["name"].as_str().unwrap_or("?");
        info!("{} event for {name}", event.kind); // goes to the host log, tagged
        // Replace with your own rule: here, pass objects that have a name.
        Ok(name != "?")
    }
}

export_filter!({{type}});
