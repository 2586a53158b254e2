//! CloudEvents 1.0 over HTTP, as a webhook receives them: the binary
//! content mode (attributes in `ce-*` headers, the body is the data), the
//! structured mode (`application/cloudevents+json`: the whole event as JSON)
//! and the batch mode (`application/cloudevents-batch+json`: a JSON array of
//! structured events, each becoming its own event).
//!
//! A request is a CloudEvent when its content type names one of the JSON
//! event formats, or when it carries `ce-specversion`. The required
//! attributes (`specversion` 1.0, `id`, `source`, `type`) must be there and
//! non-empty, `time` must be RFC 3339, attribute names must be lowercase
//! letters and digits (at most 20): anything else is a 400 naming the
//! problem, and no event. Mapping to the engine's event:
//!
//! - `kind` is the CloudEvent's `type`, and `time` its `time` (in UTC; the
//!   receipt time when it has none); the event keeps its own `id` (the
//!   engine's, unique across sources) and `source` (`webhook`);
//! - `data.ce` holds the attributes: `specversion`, `id`, `source`, `type`
//!   and, when present, `subject`, `time`, `datacontenttype`, `dataschema`;
//!   every other attribute is an extension, under `data.ce.extensions`;
//! - `data.body` is the data as JSON (`data.bodyBase64` for binary data),
//!   next to the webhook's usual `headers` and `contentType`.
//!
//! Filters see `event.ce` (CEL `event.ce.type == "..."`).

use base64::Engine as _;
use serde_json::{Map, Value};

/// The structured-mode media type.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The batch-mode media type.
pub const BATCH: &str = "application/cloudevents-batch+json";
/// The most events one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// Attributes the spec defines (everything else is an extension).
const CONTEXT: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
];

/// One CloudEvent, read.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    /// The context attributes, as `data.ce` shows them.
    pub ce: Value,
    /// The data: JSON, or bytes for binary data.
    pub data: Data,
}

/// A CloudEvent's data.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// No data.
    None,
    /// JSON (or text, as a JSON string).
    Json(Value),
    /// Bytes that are not JSON.
    Binary(Vec<u8>),
}

impl CloudEvent {
    /// The event kind: the CloudEvent's `type`.
    pub fn kind(&self) -> &str {
        self.ce["type"].as_str().unwrap_or_default()
    }

    /// The CloudEvent's `time` in UTC RFC 3339, if it has one.
    pub fn time(&self) -> Option<String> {
        let time = self.ce["time"].as_str()?;
        let parsed = chrono::DateTime::parse_from_rfc3339(time).ok()?;
        Some(
            parsed
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    }

    /// Puts `ce` and the data into a webhook event's data.
    pub fn into_event_data(self, mut data: Value) -> Value {
        data["ce"] = self.ce;
        match self.data {
            Data::None => data["body"] = Value::Null,
            Data::Json(value) => data["body"] = value,
            Data::Binary(bytes) => {
                data["bodyBase64"] = base64::engine::general_purpose::STANDARD
                    .encode(bytes)
                    .into()
            }
        }
        data
    }
}

/// Whether the request is a CloudEvent (any mode).
pub fn is_cloudevent(headers: &hyper::HeaderMap) -> bool {
    let media = media_type(headers);
    media == STRUCTURED || media == BATCH || headers.contains_key("ce-specversion")
}

fn media_type(headers: &hyper::HeaderMap) -> String {
    headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Reads the CloudEvents of a request; Err says what is wrong with it.
pub fn read(headers: &hyper::HeaderMap, body: &[u8]) -> Result<Vec<CloudEvent>, String> {
    match media_type(headers).as_str() {
        STRUCTURED => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| format!("the structured CloudEvent is not JSON: {e}"))?;
            Ok(vec![
                structured(value).map_err(|e| format!("CloudEvent: {e}"))?,
            ])
        }
        BATCH => {
            let value: Value = serde_json::from_slice(body)
                .map_err(|e| format!("the CloudEvents batch is not JSON: {e}"))?;
            let Value::Array(items) = value else {
                return Err("a CloudEvents batch must be a JSON array of events".into());
            };
            if items.len() > MAX_BATCH {
                return Err(format!(
                    "the batch has {} events; at most {MAX_BATCH} are accepted per request",
                    items.len()
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    structured(item).map_err(|e| format!("CloudEvent [{i}] of the batch: {e}"))
                })
                .collect()
        }
        _ => Ok(vec![
            binary(headers, body).map_err(|e| format!("CloudEvent: {e}"))?,
        ]),
    }
}

/// A structured-mode event (one JSON object).
fn structured(value: Value) -> Result<CloudEvent, String> {
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object".into());
    };
    let data = match (object.remove("data"), object.remove("data_base64")) {
        (Some(_), Some(_)) => return Err("both `data` and `data_base64` are set".into()),
        (Some(value), None) => Data::Json(value),
        (None, Some(Value::String(text))) => Data::Binary(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| format!("`data_base64` is not base64: {e}"))?,
        ),
        (None, Some(_)) => return Err("`data_base64` must be a string".into()),
        (None, None) => Data::None,
    };
    Ok(CloudEvent {
        ce: context(object)?,
        data,
    })
}

/// A binary-mode event: `ce-*` headers and the body.
fn binary(headers: &hyper::HeaderMap, body: &[u8]) -> Result<CloudEvent, String> {
    let mut attributes = Map::new();
    for (name, value) in headers {
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let text = value
            .to_str()
            .map_err(|_| format!("header `{name}` is not text"))?;
        attributes.insert(attribute.to_string(), Value::String(percent_decode(text)?));
    }
    if let Some(content_type) = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        attributes.insert("datacontenttype".into(), content_type.into());
    }
    let data = if body.is_empty() {
        Data::None
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => Data::Json(value),
            Err(_) => Data::Binary(body.to_vec()),
        }
    };
    Ok(CloudEvent {
        ce: context(attributes)?,
        data,
    })
}

/// Checks the attributes; the spec's go to the top, the rest under `extensions`.
fn context(attributes: Map<String, Value>) -> Result<Value, String> {
    let mut ce = Map::new();
    let mut extensions = Map::new();
    for (name, value) in attributes {
        if name.is_empty()
            || name.len() > 20
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            let shown: String = name.chars().take(40).collect();
            return Err(format!(
                "attribute name `{shown}` is not 1-20 lowercase letters and digits"
            ));
        }
        if matches!(value, Value::Object(_) | Value::Array(_)) {
            return Err(format!(
                "attribute `{name}` must be a string, number or bool"
            ));
        }
        if CONTEXT.contains(&name.as_str()) {
            ce.insert(name, value);
        } else {
            extensions.insert(name, value);
        }
    }
    match ce.get("specversion").and_then(Value::as_str) {
        Some("1.0") => {}
        Some(other) => {
            return Err(format!(
                "specversion {} is not supported; expected \"1.0\"",
                shown(&Value::String(other.to_string()))
            ));
        }
        None => return Err("`specversion` is required".into()),
    }
    for required in ["id", "source", "type"] {
        match ce.get(required) {
            Some(Value::String(s)) if !s.is_empty() => {}
            Some(_) => return Err(format!("`{required}` must be a non-empty string")),
            None => return Err(format!("`{required}` is required")),
        }
    }
    if let Some(time) = ce.get("time") {
        let ok = time
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
        if !ok {
            return Err(format!(
                "`time` must be an RFC 3339 timestamp, found {}",
                shown(time)
            ));
        }
    }
    if !extensions.is_empty() {
        ce.insert("extensions".into(), Value::Object(extensions));
    }
    Ok(Value::Object(ce))
}

/// Header values are percent-encoded where they are not printable ASCII.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent-encoding in {}", shown(&text.into())))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{} does not decode to UTF-8", shown(&text.into())))
}

/// A caller's value as error text: JSON, cut to 60 characters (errors are
/// answered and logged, and a caller must not fill the log).
fn shown(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> hyper::HeaderMap {
        let mut map = hyper::HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn the_three_modes_read_to_the_same_context() {
        let binary = read(
            &headers(&[
                ("ce-specversion", "1.0"),
                ("ce-id", "a1"),
                ("ce-source", "/orders"),
                ("ce-type", "order.created"),
                ("ce-subject", "order%2F42"),
                ("ce-tenant", "acme"),
                ("content-type", "application/json"),
            ]),
            br#"{"total": 3}"#,
        )
        .unwrap();
        assert_eq!(binary[0].ce["subject"], "order/42");
        assert_eq!(binary[0].ce["extensions"]["tenant"], "acme");
        assert_eq!(binary[0].data, Data::Json(json!({"total": 3})));
        assert_eq!(binary[0].kind(), "order.created");
        let event = json!({"specversion": "1.0", "id": "a1", "source": "/orders", "type": "order.created",
            "time": "2026-01-01T10:00:00+02:00", "data": {"total": 3}});
        let structured = read(
            &headers(&[("content-type", STRUCTURED)]),
            event.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(structured[0].time().unwrap(), "2026-01-01T08:00:00.000Z");
        let batch = json!([event, {"specversion": "1.0", "id": "a2", "source": "/o", "type": "t", "data_base64": "AAE="}]);
        let batch = read(
            &headers(&[("content-type", BATCH)]),
            batch.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].data, Data::Binary(vec![0, 1]));
    }

    #[test]
    fn malformed_events_say_what_is_wrong() {
        let structured = |v: Value| {
            read(
                &headers(&[("content-type", STRUCTURED)]),
                v.to_string().as_bytes(),
            )
            .unwrap_err()
        };
        assert!(
            structured(json!({"id": "1", "source": "s", "type": "t"}))
                .contains("`specversion` is required")
        );
        assert!(
            structured(json!({"specversion": "0.3", "id": "1", "source": "s", "type": "t"}))
                .contains("expected \"1.0\"")
        );
        assert!(
            structured(json!({"specversion": "1.0", "source": "s", "type": "t"}))
                .contains("`id` is required")
        );
        assert!(structured(json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "yesterday"})).contains("RFC 3339"));
        assert!(
            structured(
                json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "Bad-Name": 1})
            )
            .contains("lowercase")
        );
        assert!(structured(json!(["not", "an", "object"])).contains("expected a JSON object"));
        let batch = read(&headers(&[("content-type", BATCH)]), b"{}").unwrap_err();
        assert!(batch.contains("JSON array"), "{batch}");
        let bad = read(
            &headers(&[("ce-specversion", "1.0"), ("ce-id", "%zz")]),
            b"",
        )
        .unwrap_err();
        assert!(bad.contains("percent-encoding"), "{bad}");
        // What a caller sent is echoed only in part.
        let long = json!({"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "x".repeat(10_000)});
        let bad = structured(long);
        assert!(bad.len() < 200 && bad.ends_with('…'), "{bad}");
    }
}
