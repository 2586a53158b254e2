//! Write wasmtrigger filters and actions in Rust.
//!
//! A wasmtrigger module is a WebAssembly component built for `wasm32-wasip2`.
//! This crate holds the bindings generated from the project's WIT contract and
//! a few helpers, so a module is a type implementing [`Filter`] or [`Action`]
//! plus one export macro.
//!
//! # A filter
//!
//! ```no_run
//! use wasmtrigger_guest::{Event, Filter, export_filter, info};
//!
//! struct OnlyWatched;
//!
//! impl Filter for OnlyWatched {
//!     fn filter(event: Event) -> Result<bool, String> {
//!         let data = event.json()?;
//!         let name = data["metadata"]["name"].as_str().unwrap_or_default();
//!         info!("looking at {name}");
//!         Ok(name.starts_with("watched-"))
//!     }
//! }
//!
//! export_filter!(OnlyWatched);
//! ```
//!
//! # An action
//!
//! ```no_run
//! use wasmtrigger_guest::{Action, Event, export_action, kv};
//!
//! struct Count;
//!
//! impl Action for Count {
//!     fn run(_event: Event, _params: String) -> Result<String, String> {
//!         let runs = kv::increment("runs", 1).map_err(|e| e.to_string())?;
//!         Ok(runs.to_string())
//!     }
//! }
//!
//! export_action!(Count);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` from a crate
//! whose `[lib]` has `crate-type = ["cdylib"]`; the `.wasm` file in
//! `target/wasm32-wasip2/release/` is the module.

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated export shims mirror the canonical ABI
pub mod bindings {
    //! Generated code. The action world holds every import; the filter world
    //! reuses its types so that one `Event` type serves both.
    pub mod action {
        wit_bindgen::generate!({
            world: "action",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "__export_action",
            default_bindings_module: "::wasmtrigger_guest::bindings::action",
        });
    }
    pub mod filter {
        wit_bindgen::generate!({
            world: "filter",
            path: "wit",
            pub_export_macro: true,
            export_macro_name: "__export_filter",
            default_bindings_module: "::wasmtrigger_guest::bindings::filter",
            with: {
                "wasmtrigger:plugin/types@0.1.0": super::action::wasmtrigger::plugin::types,
                "wasmtrigger:plugin/log@0.1.0": super::action::wasmtrigger::plugin::log,
                "wasmtrigger:plugin/kv@0.1.0": super::action::wasmtrigger::plugin::kv,
            },
        });
    }
}

use bindings::action::wasmtrigger::plugin as wit;

/// Why a host capability call failed (denied, not found, invalid, failed).
pub use wit::types::Error as HostError;

impl HostError {
    /// A one-line description for error messages.
    pub fn describe(&self) -> String {
        match self {
            HostError::Denied(what) => format!("denied: {what}"),
            HostError::NotFound => "not found".to_string(),
            HostError::Invalid(why) => format!("invalid: {why}"),
            HostError::Failed(why) => format!("failed: {why}"),
        }
    }
}
/// One event delivered to a trigger; `data` is JSON text.
pub use wit::types::Event;

/// Implemented by a filter: return `Ok(true)` to pass the event to the action.
pub use bindings::filter::Guest as Filter;

/// Implemented by an action: do the work and return the run's output.
pub use bindings::action::Guest as Action;

/// Reusable parts of the JSON layer, re-exported so modules need no extra dependency.
pub use serde_json;

impl Event {
    /// Parses `data` into a JSON value; the error text names the event.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        serde_json::from_str(&self.data)
            .map_err(|e| format!("event {} has invalid JSON data: {e}", self.id))
    }

    /// Parses `data` into any deserializable type.
    pub fn data_as<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.data).map_err(|e| {
            format!(
                "event {} data does not have the expected shape: {e}",
                self.id
            )
        })
    }
}

/// Parses an action's `params` text into any deserializable type.
pub fn params_as<T: serde::de::DeserializeOwned>(params: &str) -> Result<T, String> {
    serde_json::from_str(params).map_err(|e| format!("invalid params: {e}"))
}

/// Logging into the host log; prefer the `trace!` .. `error!` macros.
pub mod log {
    pub use super::wit::log::{Level, log};
}

/// Outbound HTTP through the host, to the destinations the trigger grants
/// (`grants.http`). Helpers cover the common cases; [`http::send`] does the rest.
pub mod http {
    use super::HostError;
    pub use super::wit::http::{Header, Request, Response, send};

    impl Response {
        /// The body as UTF-8 text (lossy).
        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.body).into_owned()
        }

        /// The body parsed as JSON.
        pub fn json(&self) -> Result<serde_json::Value, String> {
            serde_json::from_slice(&self.body).map_err(|e| format!("response is not JSON: {e}"))
        }

        /// The first value of a header (names compare case-insensitively).
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str())
        }

        /// True for 2xx statuses.
        pub fn is_success(&self) -> bool {
            (200..300).contains(&self.status)
        }
    }

    /// A header.
    pub fn header(name: &str, value: &str) -> Header {
        Header {
            name: name.to_string(),
            value: value.to_string(),
        }
    }

    /// `GET url`.
    pub fn get(url: &str) -> Result<Response, HostError> {
        send(&Request {
            method: "GET".into(),
            url: url.into(),
            headers: Vec::new(),
            body: None,
        })
    }

    /// `POST url` with a JSON body and extra headers.
    pub fn post_json(
        url: &str,
        body: &serde_json::Value,
        headers: Vec<Header>,
    ) -> Result<Response, HostError> {
        let mut headers = headers;
        headers.push(header("content-type", "application/json"));
        send(&Request {
            method: "POST".into(),
            url: url.into(),
            headers,
            body: Some(body.to_string().into_bytes()),
        })
    }
}

/// CloudEvents 1.0 to send through [`http`]: build one, then POST it in the
/// structured mode (one JSON document) or the binary mode (`ce-*` headers,
/// the data as the body). The receiver may be another wasmtrigger webhook,
/// a Knative broker or an Argo Events webhook source.
pub mod cloudevents {
    use super::HostError;
    use super::http::{Header, Request, Response, header, send};
    use serde_json::{Map, Value, json};

    /// A CloudEvent (spec version 1.0) with JSON data.
    #[derive(Debug, Clone, PartialEq)]
    pub struct CloudEvent {
        attributes: Map<String, Value>,
        data: Option<Value>,
    }

    impl CloudEvent {
        /// An event with its required attributes.
        pub fn new(id: &str, source: &str, type_: &str) -> CloudEvent {
            let mut attributes = Map::new();
            attributes.insert("specversion".into(), "1.0".into());
            attributes.insert("id".into(), id.into());
            attributes.insert("source".into(), source.into());
            attributes.insert("type".into(), type_.into());
            CloudEvent {
                attributes,
                data: None,
            }
        }

        /// Sets `subject`.
        pub fn subject(self, subject: &str) -> CloudEvent {
            self.attribute("subject", subject)
        }

        /// Sets `time` (RFC 3339).
        pub fn time(self, time: &str) -> CloudEvent {
            self.attribute("time", time)
        }

        /// Sets any attribute: an extension, or `dataschema` and the like.
        /// Names are 1-20 lowercase letters and digits.
        pub fn attribute(mut self, name: &str, value: &str) -> CloudEvent {
            self.attributes.insert(name.into(), value.into());
            self
        }

        /// Sets the data, as JSON (`datacontenttype: application/json`).
        pub fn data(mut self, data: Value) -> CloudEvent {
            self.attributes
                .insert("datacontenttype".into(), "application/json".into());
            self.data = Some(data);
            self
        }

        /// The structured mode: the body (the whole event as JSON) and its content type.
        pub fn structured(&self) -> (Vec<u8>, &'static str) {
            let mut event = Value::Object(self.attributes.clone());
            if let Some(data) = &self.data {
                event["data"] = data.clone();
            }
            (
                event.to_string().into_bytes(),
                "application/cloudevents+json",
            )
        }

        /// The binary mode: `ce-*` headers (and the content type) and the body.
        pub fn binary(&self) -> (Vec<Header>, Vec<u8>) {
            let mut headers = Vec::new();
            for (name, value) in &self.attributes {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if name == "datacontenttype" {
                    headers.push(header("content-type", &text));
                } else {
                    headers.push(header(&format!("ce-{name}"), &percent_encode(&text)));
                }
            }
            let body = self
                .data
                .as_ref()
                .map(|d| d.to_string().into_bytes())
                .unwrap_or_default();
            (headers, body)
        }

        /// POSTs the event to `url` in the structured mode.
        pub fn post(&self, url: &str, headers: Vec<Header>) -> Result<Response, HostError> {
            let (body, content_type) = self.structured();
            let mut headers = headers;
            headers.push(header("content-type", content_type));
            send(&Request {
                method: "POST".into(),
                url: url.into(),
                headers,
                body: Some(body),
            })
        }

        /// POSTs the event to `url` in the binary mode.
        pub fn post_binary(&self, url: &str, headers: Vec<Header>) -> Result<Response, HostError> {
            let (ce, body) = self.binary();
            let mut headers = headers;
            headers.extend(ce);
            send(&Request {
                method: "POST".into(),
                url: url.into(),
                headers,
                body: Some(body),
            })
        }

        /// The event as JSON (structured mode), e.g. for a batch.
        pub fn to_json(&self) -> Value {
            let mut event = Value::Object(self.attributes.clone());
            if let Some(data) = &self.data {
                event["data"] = data.clone();
            }
            json!(event)
        }
    }

    /// Header values: printable ASCII as is, everything else (and `%`) percent-encoded.
    fn percent_encode(text: &str) -> String {
        let mut out = String::new();
        for byte in text.bytes() {
            if (0x20..0x7f).contains(&byte) && byte != b'%' && byte != b'"' {
                out.push(byte as char);
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    }
}

/// Secret values granted to the trigger (`grants.secrets`). The host keeps
/// them out of logs and run records, including anything this module writes.
pub mod secrets {
    pub use super::wit::secrets::get;
}

/// The Kubernetes API, within the trigger's `grants.kube`. Objects are JSON
/// text; [`kube::target`] builds the kind-and-namespace a call is about.
pub mod kube {
    pub use super::wit::kube::{
        PatchType, Target, apply, create, delete, get, list_objects, patch,
    };

    /// A target: `api_version` like `apps/v1`, `kind` like `Deployment`,
    /// and the namespace (None for cluster-scoped kinds).
    pub fn target(api_version: &str, kind: &str, namespace: Option<&str>) -> Target {
        Target {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: namespace.map(str::to_string),
        }
    }

    /// The object a `kube-watch` event is about (`data.object`).
    pub fn watched_object(event: &super::Event) -> Result<serde_json::Value, String> {
        let mut data = event.json()?;
        match data.get_mut("object").map(serde_json::Value::take) {
            Some(object) if object.is_object() => Ok(object),
            _ => Err(format!(
                "event {} from `{}` carries no Kubernetes object (`data.object`); \
                 use this action with a kube-watch source or give the target in params",
                event.id, event.source
            )),
        }
    }

    /// `metadata.name` of an object, or "".
    pub fn name_of(object: &serde_json::Value) -> &str {
        object["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `metadata.namespace` of an object, if it has one.
    pub fn namespace_of(object: &serde_json::Value) -> Option<&str> {
        object["metadata"]["namespace"].as_str()
    }
}

/// Placeholders in params: `{name}` in any string inside a JSON value.
pub mod template {
    use serde_json::Value;

    /// Names and their values; `{name}` in a template becomes the value.
    #[derive(Debug, Clone, Default)]
    pub struct Vars(Vec<(String, String)>);

    impl Vars {
        /// `{trigger}`, `{event.id}`, `{event.kind}`, `{event.source}`,
        /// `{event.time}`, `{event.hash}` (16 hex digits of the event id), and
        /// for an object `{object.name}`, `{object.namespace}`, `{object.kind}`,
        /// `{object.apiVersion}`, `{object.uid}`.
        pub fn for_event(event: &super::Event, object: Option<&Value>) -> Vars {
            let vars = Vars::default()
                .with("trigger", &event.trigger)
                .with("event.id", &event.id)
                .with("event.kind", &event.kind)
                .with("event.source", &event.source)
                .with("event.time", &event.time)
                .with("event.hash", &short_hash(&event.id));
            match object {
                None => vars,
                Some(object) => {
                    let field = |a: &str, b: &str| object[a][b].as_str().unwrap_or_default();
                    vars.with("object.name", field("metadata", "name"))
                        .with("object.namespace", field("metadata", "namespace"))
                        .with("object.uid", field("metadata", "uid"))
                        .with("object.kind", object["kind"].as_str().unwrap_or_default())
                        .with(
                            "object.apiVersion",
                            object["apiVersion"].as_str().unwrap_or_default(),
                        )
                }
            }
        }

        /// Adds (or shadows) one name.
        pub fn with(mut self, name: &str, value: &str) -> Vars {
            self.0.insert(0, (name.to_string(), value.to_string()));
            self
        }

        /// Returns `value` with every `{name}` in its strings (not its keys)
        /// replaced; unknown placeholders stay as they are.
        pub fn fill(&self, value: &Value) -> Value {
            match value {
                Value::String(text) => Value::String(self.fill_str(text)),
                Value::Array(items) => Value::Array(items.iter().map(|v| self.fill(v)).collect()),
                Value::Object(map) => {
                    Value::Object(map.iter().map(|(k, v)| (k.clone(), self.fill(v))).collect())
                }
                other => other.clone(),
            }
        }

        /// [`Vars::fill`] for one string, in one pass (values are not re-read).
        pub fn fill_str(&self, text: &str) -> String {
            let mut out = String::with_capacity(text.len());
            let mut rest = text;
            while let Some(open) = rest.find('{') {
                out.push_str(&rest[..open]);
                let after = &rest[open + 1..];
                let value = after.find('}').and_then(|close| {
                    let name = &after[..close];
                    self.0
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| (v, close))
                });
                match value {
                    Some((value, close)) => {
                        out.push_str(value);
                        rest = &after[close + 1..];
                    }
                    None => {
                        out.push('{');
                        rest = after;
                    }
                }
            }
            out.push_str(rest);
            out
        }
    }

    /// A short, stable hex digest (FNV-1a, 64 bits) of `text`: the same input
    /// gives the same name on a retry, different events give different names.
    pub fn short_hash(text: &str) -> String {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("{hash:016x}")
    }
}

/// Per-trigger key/value state that persists across runs and restarts.
///
/// Each call is atomic on its own; use [`kv::compare_and_swap`] or
/// [`kv::increment`] to update a value derived from its previous one.
pub mod kv {
    pub use super::wit::kv::{compare_and_swap, delete, get, increment, list_keys, set};
}

/// Exports a type implementing [`Filter`] as this module's filter.
#[macro_export]
macro_rules! export_filter {
    ($ty:ident) => {
        $crate::bindings::filter::__export_filter!($ty);
    };
}

/// Exports a type implementing [`Action`] as this module's action.
#[macro_export]
macro_rules! export_action {
    ($ty:ident) => {
        $crate::bindings::action::__export_action!($ty);
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

/// Logs a formatted message at trace level.
#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) }; }
/// Logs a formatted message at debug level.
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) }; }
/// Logs a formatted message at info level.
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) }; }
/// Logs a formatted message at warn level.
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) }; }
/// Logs a formatted message at error level.
#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) }; }

#[cfg(test)]
mod tests {
    use super::template::{Vars, short_hash};
    use serde_json::json;

    #[test]
    fn placeholders_fill_strings_in_one_pass() {
        let vars = Vars::default()
            .with("object.name", "web-{event.id}")
            .with("event.id", "42");
        let filled = vars.fill(&json!({
            "name": "job-{object.name}",
            "{event.id}": ["{event.id}", "{unknown}", "{", 3, "a}b{event.id}"],
        }));
        assert_eq!(
            filled,
            json!({
                "name": "job-web-{event.id}",
                "{event.id}": ["42", "{unknown}", "{", 3, "a}b42"],
            })
        );
    }

    #[test]
    fn short_hashes_are_stable_and_distinct() {
        assert_eq!(short_hash("a"), short_hash("a"));
        assert_ne!(short_hash("event-1"), short_hash("event-2"));
        assert_eq!(short_hash("").len(), 16);
    }
}
