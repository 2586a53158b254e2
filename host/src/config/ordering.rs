//! A trigger's ordering: which of its events must run one at a time, in
//! order (see the dispatch queue), and where their key comes from.

use crate::cel::CelFilter;

/// How a trigger's events are ordered among themselves.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderingConfig {
    /// Any order, as many at once as there are workers.
    None,
    /// Events with the same key run one at a time, in the order they were
    /// accepted; events with different keys run side by side.
    Key(OrderingKey),
}

/// Where an event's ordering key comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum OrderingKey {
    /// The changed object's `metadata.uid` (the kube-watch default).
    ObjectUid,
    /// A CEL expression over the event giving a string or number.
    Cel(CelFilter),
    /// A CEL expression that is a plain field path (`event.data.body.orderId`),
    /// read straight from the event's JSON: the same key, without the interpreter.
    Path {
        /// The expression as compiled (for equality and display).
        expression: CelFilter,
        /// The fields after `event.`, e.g. `["data", "body", "orderId"]`.
        fields: Vec<String>,
    },
}

impl OrderingKey {
    /// The key for `source`: a plain path when it is one, else the CEL expression.
    pub fn from_expression(source: &str) -> Result<Self, String> {
        let expression = CelFilter::compile_key(source)?;
        let mut parts = source.trim().split('.');
        let is_name = |p: &str| {
            p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        let fields: Vec<String> = parts.by_ref().skip(1).map(str::to_string).collect();
        let plain = source.trim().starts_with("event.")
            && !fields.is_empty()
            && fields.iter().all(|f| is_name(f))
            && (fields[0] == "data"
                || (fields[0] == "ce" && fields.len() > 1)
                || (fields.len() == 1
                    && ["id", "trigger", "source", "kind", "time"].contains(&fields[0].as_str())));
        Ok(if plain {
            OrderingKey::Path { expression, fields }
        } else {
            OrderingKey::Cel(expression)
        })
    }
}
