//! Which parts of `event.data` an expression reads, and parsing only those.
//!
//! Turning a payload into CEL values (a map per object, a shared string per
//! string) costs far more than the expression itself when the expression
//! reads two fields of a 3 KB Deployment. So each expression is scanned once
//! when it is compiled: every `event.data.a.b…` chain of field selections
//! names a subtree it may read. When *every* use of `event` is such a chain
//! (or a top-level field like `event.id`), the payload is parsed into just
//! those subtrees; everything else is skipped unparsed (but still checked to
//! be JSON). Any other use — `event` or `event.data` on its own, an index
//! like `event.data["a"]` — needs the whole payload, which is then parsed in
//! full. A pruned payload answers the expression exactly as the full one:
//! each kept subtree is whole, and a field that is absent stays absent.

use std::collections::HashMap;

use cel::common::ast::{EntryExpr, Expr, IdedExpr};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The subtrees of `event.data` an expression reads; a leaf reads the whole
/// subtree under it.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Reads {
    /// Read whole (a leaf).
    whole: bool,
    children: HashMap<String, Reads>,
}

impl Reads {
    /// What `expr` reads of `event.data`: None when it may read all of it.
    pub(super) fn of(expr: &IdedExpr) -> Option<Reads> {
        let mut reads = Reads::default();
        // No recursion: the tree may be deep (compiling has bounded it).
        let mut stack = vec![expr];
        while let Some(node) = stack.pop() {
            match &node.expr {
                Expr::Select(select) => match chain(node) {
                    Some(fields) => match fields.split_first() {
                        Some((data, rest)) if data == "data" => {
                            if rest.is_empty() {
                                return None;
                            }
                            reads.insert(rest);
                        }
                        // `event.ce` is `data.ce` (a CloudEvent's attributes).
                        Some((ce, rest)) if ce == "ce" => {
                            let path: Vec<String> = std::iter::once(ce.clone())
                                .chain(rest.iter().cloned())
                                .collect();
                            reads.insert(&path);
                        }
                        // `event.id` and the like: not in the payload.
                        _ => {}
                    },
                    None => stack.push(&select.operand),
                },
                Expr::Ident(name) if name == "event" => return None,
                Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
                Expr::Call(call) => {
                    stack.extend(call.target.as_deref());
                    stack.extend(&call.args);
                }
                Expr::Comprehension(c) => {
                    stack.extend([&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step]);
                    stack.push(&c.result);
                }
                Expr::List(list) => stack.extend(&list.elements),
                Expr::Map(map) => {
                    for entry in &map.entries {
                        match &entry.expr {
                            EntryExpr::MapEntry(e) => stack.extend([&e.key, &e.value]),
                            // Refused when compiling; be safe anyway.
                            EntryExpr::StructField(_) => return None,
                        }
                    }
                }
                Expr::Struct(_) => return None,
            }
        }
        Some(reads)
    }

    fn insert(&mut self, path: &[String]) {
        let mut node = self;
        for field in path {
            if node.whole {
                return;
            }
            node = node.children.entry(field.clone()).or_default();
        }
        node.whole = true;
        node.children.clear();
    }

    /// Parses `json` into only the subtrees read; an error if it is not JSON.
    pub(super) fn parse(&self, json: &str) -> Result<Value, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json);
        let value = Prune(self).deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
}

/// The fields of a select chain rooted at the identifier `event`
/// (`event.data.a` → `[data, a]`); None if it is rooted elsewhere.
fn chain(node: &IdedExpr) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut at = node;
    loop {
        match &at.expr {
            Expr::Select(select) => {
                fields.push(select.field.clone());
                at = &select.operand;
            }
            Expr::Ident(name) if name == "event" => {
                fields.reverse();
                return Some(fields);
            }
            _ => return None,
        }
    }
}

/// Deserializes a JSON value keeping only the subtrees `Reads` names.
struct Prune<'r>(&'r Reads);

impl<'de> DeserializeSeed<'de> for Prune<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.whole {
            return serde::Deserialize::deserialize(d);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Prune<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut kept = Map::new();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.0.children.get(key.as_ref()) {
                Some(child) => {
                    let value = map.next_value_seed(Prune(child))?;
                    kept.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(kept))
    }

    // Anything but an object is kept whole: selecting a field of it fails
    // the same way it would on the full payload.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(source: &str) -> Option<Reads> {
        let expr = cel::parser::Parser::new().parse(source).unwrap();
        Reads::of(&expr)
    }

    #[test]
    fn chains_from_event_data_are_read_and_anything_else_reads_everything() {
        let r =
            reads("has(event.data.status.ready) && event.data.metadata.name.startsWith(event.id)")
                .unwrap();
        let json =
            r#"{"metadata":{"name":"a","labels":{"x":"y"}},"spec":{"replicas":3},"status":[1]}"#;
        assert_eq!(
            r.parse(json).unwrap(),
            serde_json::json!({"metadata":{"name":"a"},"status":[1]})
        );
        // A prefix read whole keeps its whole subtree.
        let r = reads("event.data.metadata.name == '' || event.data.metadata != null").unwrap();
        assert_eq!(
            r.parse(json).unwrap(),
            serde_json::json!({"metadata":{"name":"a","labels":{"x":"y"}}})
        );
        // Macros over a read subtree; the loop variable is not the event.
        let r = reads("event.data.items.all(i, i.ok)").unwrap();
        assert_eq!(
            r.parse(r#"{"items":[{"ok":true}],"other":1}"#).unwrap(),
            serde_json::json!({"items":[{"ok":true}]})
        );
        for whole in [
            "event.data",
            "event",
            "event.data['a']",
            "size(event.data) > 0",
        ] {
            assert_eq!(reads(whole), None, "{whole}");
        }
        assert_eq!(
            reads("event.kind == 'x'").unwrap().parse("[1]").unwrap(),
            serde_json::json!([1])
        );
        // Still JSON, all of it.
        assert!(r.parse(r#"{"items":[], "other": tru}"#).is_err());
        assert!(r.parse(r#"{"items":[]} x"#).is_err());
    }
}
