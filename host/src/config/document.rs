//! Reading one config document (YAML or JSON) into JSON values, bounded.
//!
//! Config files are trusted, but they are also copied from tickets, rendered
//! by templates and mounted from ConfigMaps that others can write, so reading
//! one must not be a way to stall or confuse the engine:
//! - the text is at most [`MAX_DOCUMENT_BYTES`];
//! - nesting, nodes, aliases and alias expansion are budgeted (a 15 KB
//!   "billion laughs" file is refused at once, not expanded to gigabytes);
//! - a key given twice in one mapping is an error naming both places, not a
//!   silent "last one wins" (`grants:` twice would lose the first).
//!
//! JSON is read by the same parser (JSON is YAML), so both formats get the
//! same limits and the same duplicate-key check.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_saphyr::Spanned;

/// Largest config document read.
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;
/// Deepest nesting of mappings and sequences.
pub const MAX_DEPTH: usize = 48;
/// Most nodes (scalars, mappings, sequences) in one document.
pub const MAX_NODES: usize = 200_000;
/// Most alias references (`*name`) in one document.
pub const MAX_ALIASES: usize = 1_000;
/// Most events replayed from aliases in one document.
pub const MAX_ALIAS_EVENTS: usize = 100_000;

/// Why a document could not be read, with its place when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// 1-based line and column, when the parser knows them.
    pub at: Option<(u64, u64)>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => write!(f, "line {line} column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Parses a document into JSON; an empty one is `null`.
pub fn parse(text: &str) -> Result<Value, DocumentError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DocumentError {
            at: None,
            message: format!(
                "the file is {} bytes; config files may be at most {MAX_DOCUMENT_BYTES} bytes",
                text.len()
            ),
        });
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = MAX_DEPTH;
    budget.flow_nesting_limit = MAX_DEPTH;
    budget.max_nodes = MAX_NODES;
    budget.max_aliases = MAX_ALIASES;
    budget.max_anchors = MAX_ALIASES;
    budget.max_recorded_anchor_events = MAX_ALIAS_EVENTS;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options.alias_limits.max_total_replayed_events = MAX_ALIAS_EVENTS;
    // Duplicates reach our visitor, which reports both places.
    options.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::PassThrough;
    options.with_snippet = false;
    serde_saphyr::from_str_with_options::<Node>(text, options)
        .map(|n| n.0)
        .map_err(|e| {
            let at = e
                .location()
                .map(|l| (l.line(), l.column()))
                .filter(|(l, _)| *l > 0);
            // Keep the first line, without the place the parser appends to it.
            let text = e.to_string();
            let mut message = text.lines().next().unwrap_or_default().to_string();
            if let Some(i) = message.rfind(" at line ")
                && message[i..].contains(", column ")
                && !message[i..].contains(':')
            {
                message.truncate(i);
            }
            if message.contains("recursion limit") || message.contains("depth") {
                message.push_str(&format!(
                    "; mappings and lists may nest at most {MAX_DEPTH} levels"
                ));
            } else if message.contains("alias") || message.contains("anchor") {
                message.push_str("; aliases (`*name`) are bounded in number and expansion");
            }
            // A repeated key names both of its places itself.
            let at = at.filter(|_| !message.contains("is given twice"));
            DocumentError { at, message }
        })
}

/// A JSON value read from YAML, whose mappings refuse repeated keys.
struct Node(Value);

impl<'de> serde::Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor).map(Node)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::from)
            .or_else(|_| u64::try_from(v).map(Value::from))
            .map_err(|_| E::custom(format!("the number {v} is too large")))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        u64::try_from(v)
            .map(Value::from)
            .map_err(|_| E::custom(format!("the number {v} is too large")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("expected a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Node::deserialize_inner(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Node(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        let mut places: std::collections::HashMap<String, (usize, usize)> =
            std::collections::HashMap::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let here = (
                key.referenced.line() as usize,
                key.referenced.column() as usize,
            );
            let Node(value) = map.next_value()?;
            if let Some(first) = places.get(&key.value) {
                return Err(de::Error::custom(format!(
                    "key `{}` is given twice in one mapping: at line {} column {} and again at line {} column {}; keep one",
                    key.value, first.0, first.1, here.0, here.1
                )));
            }
            places.insert(key.value.clone(), here);
            out.insert(key.value, value);
        }
        Ok(Value::Object(out))
    }
}

impl Node {
    fn deserialize_inner<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_and_json_read_alike() {
        let yaml = parse("a: 1\nb: [x, {c: true}]\nd: 1.5\ne: null\n").unwrap();
        let json = parse(r#"{"a": 1, "b": ["x", {"c": true}], "d": 1.5, "e": null}"#).unwrap();
        assert_eq!(yaml, json);
        assert_eq!(yaml["b"][1]["c"], true);
        assert_eq!(parse("  \n").unwrap(), Value::Null);
    }

    #[test]
    fn duplicate_keys_name_both_places() {
        let e = parse("grants:\n  kube: []\n  http: []\n  kube: [x]\n").unwrap_err();
        assert!(e.message.contains("`kube` is given twice"), "{e}");
        assert!(
            e.message.contains("line 2") && e.message.contains("line 4"),
            "{e}"
        );
        let e = parse(r#"{"a": 1, "a": 2}"#).unwrap_err();
        assert!(e.message.contains("`a` is given twice"), "{e}");
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused_quickly() {
        // One anchor with 3,000 items referenced 3,000 times.
        let mut bomb = String::from("a: &a [");
        bomb.push_str(&"x,".repeat(3000));
        bomb.push_str("x]\nb: [");
        bomb.push_str(&"*a,".repeat(3000));
        bomb.push_str("*a]\n");
        let started = std::time::Instant::now();
        assert!(parse(&bomb).is_err());
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(&deep).unwrap_err();
        let block = (0..200)
            .map(|i| format!("{}k{i}:\n", "  ".repeat(i)))
            .collect::<String>();
        assert!(parse(&block).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{e}");
        let big = "x".repeat(MAX_DOCUMENT_BYTES + 1);
        assert!(parse(&big).unwrap_err().message.contains("at most"));
    }
}
