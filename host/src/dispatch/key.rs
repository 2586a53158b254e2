//! An event's ordering key, computed once when the event is admitted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::JobKey;
use crate::config::{OrderingConfig, OrderingKey};
use crate::event::Event;

/// How long a key expression may take; it runs on the admission path.
const KEY_DEADLINE: Duration = Duration::from_secs(1);

/// The key the event is ordered by under `ordering`, if any. A key that
/// cannot be computed (a field the expression needs is missing) leaves the
/// event unordered, with a warning: holding it back would stall its trigger.
pub(crate) async fn key_of(
    trigger: &Arc<str>,
    ordering: &OrderingConfig,
    event: &Event,
) -> Option<JobKey> {
    let OrderingConfig::Key(source) = ordering else {
        return None;
    };
    let key = match source {
        OrderingKey::ObjectUid => object_uid(&event.data)
            .ok_or_else(|| "the event has no data.object.metadata.uid".to_string()),
        OrderingKey::Cel(cel) => cel
            .key_until(event, Instant::now() + KEY_DEADLINE)
            .await
            .map_err(|e| e.to_string()),
        OrderingKey::Path { expression, fields } => field(event, fields).ok_or_else(|| {
            format!(
                "`{}` is missing, or not a string, integer or bool",
                expression.source()
            )
        }),
    };
    match key {
        Ok(key) => Some(Arc::new((trigger.clone(), key))),
        Err(why) => {
            tracing::warn!(
                trigger = %trigger,
                event_id = %event.id,
                reason = %why,
                "no ordering key; this event is not ordered"
            );
            None
        }
    }
}

/// The event field a plain path names: a top-level field, or a scalar in `data`.
fn field(event: &Event, fields: &[String]) -> Option<String> {
    match fields.split_first()? {
        (first, rest) if first == "data" => scalar_at(&event.data, rest),
        // `event.ce.x` is `data.ce.x` (a CloudEvent's attribute).
        (first, _) if first == "ce" => scalar_at(&event.data, fields),
        (first, []) => match first.as_str() {
            "id" => Some(event.id.clone()),
            "trigger" => Some(event.trigger.clone()),
            "source" => Some(event.source.clone()),
            "kind" => Some(event.kind.clone()),
            "time" => Some(event.time.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// `object.metadata.uid` of a kube-watch event's data.
fn object_uid(data: &str) -> Option<String> {
    scalar_at(data, &["object", "metadata", "uid"]).filter(|uid| !uid.is_empty())
}

/// The string, integer or bool at `path` in a JSON document, as text, read
/// without building the document: everything off the path is skipped.
pub(crate) fn scalar_at<S: AsRef<str>>(json: &str, path: &[S]) -> Option<String> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(json);
    Walk(path).deserialize(&mut de).ok().flatten()
}

/// Follows a path of object keys; yields the scalar at its end.
struct Walk<'p, S>(&'p [S]);

impl<'de, S: AsRef<str>> serde::de::DeserializeSeed<'de> for Walk<'_, S> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: AsRef<str>> serde::de::Visitor<'de> for Walk<'_, S> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            // A path ending at an object: not a key.
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            return Ok(None);
        };
        let mut found = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if found.is_none() && key == first.as_ref() {
                found = Some(map.next_value_seed(Walk(rest))?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found.flatten())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.0.is_empty().then(|| v.to_string()))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cel::CelFilter;

    fn event(data: serde_json::Value) -> Event {
        Event::new("t", "webhook", "post", &data)
    }

    #[tokio::test]
    async fn keys_come_from_the_uid_or_the_expression() {
        let name: Arc<str> = "t".into();
        let uid = OrderingConfig::Key(OrderingKey::ObjectUid);
        let change =
            event(serde_json::json!({"object": {"metadata": {"uid": "u-1", "name": "a"}}}));
        let key = key_of(&name, &uid, &change).await.unwrap();
        assert_eq!(key.1, "u-1");
        assert!(
            key_of(&name, &uid, &event(serde_json::json!({"x": 1})))
                .await
                .is_none()
        );

        // A plain path is read from the JSON; the interpreter gives the same keys.
        let path = OrderingKey::from_expression("event.data.body.order").unwrap();
        assert!(matches!(path, OrderingKey::Path { .. }));
        let cel = OrderingKey::Cel(CelFilter::compile_key("event.data.body.order").unwrap());
        let order = |v: serde_json::Value| {
            event(serde_json::json!({"body": {"order": v, "n": [1, {"order": 2}]}}))
        };
        for ordering in [OrderingConfig::Key(path), OrderingConfig::Key(cel)] {
            let key = async |e: Event| key_of(&name, &ordering, &e).await.map(|k| k.1.clone());
            assert_eq!(key(order("o-7".into())).await.as_deref(), Some("o-7"));
            assert_eq!(key(order(42.into())).await.as_deref(), Some("42"));
            assert_eq!(key(order(true.into())).await.as_deref(), Some("true"));
            // A list, a fraction, null or a missing field is no key: the event runs unordered.
            for bad in [serde_json::json!([1]), 1.5.into(), serde_json::Value::Null] {
                assert_eq!(key(order(bad.clone())).await, None, "{bad}");
            }
            assert_eq!(key(event(serde_json::json!({}))).await, None);
        }
        assert!(matches!(
            OrderingKey::from_expression("event.data.body.order + 'x'").unwrap(),
            OrderingKey::Cel(_)
        ));
        assert!(matches!(
            OrderingKey::from_expression("event.kind").unwrap(),
            OrderingKey::Path { .. }
        ));
        // A CloudEvent's attribute: `event.ce.subject` is `data.ce.subject`, both ways.
        let ce = event(serde_json::json!({"ce": {"subject": "order/9"}, "body": {}}));
        for expression in ["event.ce.subject", "event.ce.subject + ''"] {
            let ordering = OrderingConfig::Key(OrderingKey::from_expression(expression).unwrap());
            let key = key_of(&name, &ordering, &ce).await.map(|k| k.1.clone());
            assert_eq!(key.as_deref(), Some("order/9"), "{expression}");
        }
        assert!(
            key_of(&name, &OrderingConfig::None, &change)
                .await
                .is_none()
        );
    }
}
