//! The event record that travels from a source through a filter to an action.

use serde::{Deserialize, Serialize};

/// One event delivered to one trigger. `data` is JSON text, exactly as guests see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique, time-ordered id (UUIDv7); kept across retries of the same event.
    pub id: String,
    /// The trigger the event is delivered to.
    pub trigger: String,
    /// The source type that produced it, e.g. `schedule`.
    pub source: String,
    /// What happened, e.g. `tick`.
    pub kind: String,
    /// When it was produced, RFC 3339 in UTC.
    pub time: String,
    /// The payload as JSON text.
    pub data: String,
    /// For an event resubmitted by `redrive`: the run it repeats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redrive_of: Option<String>,
}

impl Event {
    /// Creates an event stamped with a fresh id and the current time.
    pub fn new(trigger: &str, source: &str, kind: &str, data: &serde_json::Value) -> Self {
        Event {
            id: uuid::Uuid::now_v7().to_string(),
            trigger: trigger.to_string(),
            source: source.to_string(),
            kind: kind.to_string(),
            time: now_rfc3339(),
            data: data.to_string(),
            redrive_of: None,
        }
    }

    /// Reads an event from JSON text the way `wasmtrigger invoke` accepts it.
    ///
    /// An object with a `data` field whose other keys are all event fields is a
    /// full event record (missing fields get defaults, `data` may be any JSON
    /// value); any other JSON value becomes the `data` of a synthetic event.
    pub fn from_json_input(text: &str) -> Result<Self, serde_json::Error> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        const FIELDS: [&str; 6] = ["id", "trigger", "source", "kind", "time", "data"];
        let is_record = value.as_object().is_some_and(|obj| {
            obj.contains_key("data") && obj.keys().all(|k| FIELDS.contains(&k.as_str()))
        });
        if !is_record {
            return Ok(Event::new("invoke", "invoke", "invoke", &value));
        }
        let text_field = |name: &str, default: &str| {
            value
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .to_string()
        };
        let data = match &value["data"] {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Ok(Event {
            id: value
                .get("id")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            trigger: text_field("trigger", "invoke"),
            source: text_field("source", "invoke"),
            kind: text_field("kind", "invoke"),
            time: value
                .get("time")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .unwrap_or_else(now_rfc3339),
            data,
            redrive_of: None,
        })
    }
}

/// The current time as RFC 3339 UTC with millisecond precision.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_json_becomes_data_of_a_synthetic_event() {
        let e = Event::from_json_input(r#"{"kind":"Deployment","spec":{}}"#).unwrap();
        assert_eq!(e.source, "invoke");
        let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(data["kind"], "Deployment");
    }

    #[test]
    fn full_record_keeps_its_fields_and_serialises_object_data() {
        let e = Event::from_json_input(
            r#"{"id":"e1","trigger":"t","source":"schedule","kind":"tick","data":{"n":1}}"#,
        )
        .unwrap();
        assert_eq!((e.id.as_str(), e.kind.as_str()), ("e1", "tick"));
        assert_eq!(e.data, r#"{"n":1}"#);
        assert!(chrono::DateTime::parse_from_rfc3339(&e.time).is_ok());
    }

    #[test]
    fn string_data_in_a_record_is_taken_as_json_text() {
        let e = Event::from_json_input(r#"{"data":"{\"a\":2}"}"#).unwrap();
        assert_eq!(e.data, r#"{"a":2}"#);
    }
}
