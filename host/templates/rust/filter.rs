//! {{name}}: a wasmtrigger filter. Return Ok(true) to run the trigger's
//! action for this event, Ok(false) to drop it, Err(message) to fail the run.

wit_bindgen::generate!({ world: "filter", path: "wit" });

use wasmtrigger::plugin::log::{log, Level};

struct Component;

impl Guest for Component {
    fn filter(event: Event) -> Result<bool, String> {
        // `data` is JSON text: parse it with any JSON library.
        let data: serde_json::Value =
            serde_json::from_str(&event.data).map_err(|e| format!("event data is not JSON: {e}"))?;
        // A webhook's data is {body, headers, contentType}; a kube-watch's is the object change.
        let object = if event.source == "webhook" { &data["body"] } else { &data["object"] };
        let name = object["metadata"]["name"].as_str().unwrap_or("?");
        log(Level::Info, &format!("{} event for {name}", event.kind));
        // Replace with your own rule: here, pass objects that have a name.
        Ok(name != "?")
    }
}

export!(Component);
