//! Inline CEL filters: a predicate over the event, evaluated in the host.
//!
//! CEL is the expression language Kubernetes (validation rules, admission
//! policies) and Knative chose; operators who know it can filter without
//! writing a module. The expression sees one variable, `event`, whose `data`
//! field is the parsed JSON payload.

use std::collections::HashMap;
use std::sync::Arc;

/// A compiled CEL predicate.
#[derive(Clone)]
pub struct CelFilter {
    source: String,
    program: Arc<cel::Program>,
    /// Holds the built-in functions; each evaluation uses a child scope of it.
    root: Arc<cel::Context<'static>>,
}

impl std::fmt::Debug for CelFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CelFilter").field(&self.source).finish()
    }
}

impl PartialEq for CelFilter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl CelFilter {
    /// Compiles an expression; the error names the problem and where it is.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = cel::Program::compile(source).map_err(|e| {
            // The parser draws a caret diagram over several lines; keep the reason lines.
            let reason: Vec<String> = e
                .to_string()
                .lines()
                .map(|l| l.trim().trim_start_matches("ERROR: <input>:").to_string())
                .filter(|l| !l.is_empty() && !l.starts_with('|'))
                .collect();
            format!(
                "invalid CEL expression `{source}`: {}; expected a boolean expression over `event`, like event.data.spec.replicas > 0",
                reason.join(" ")
            )
        })?;
        Ok(CelFilter {
            source: source.to_string(),
            program: Arc::new(program),
            root: Arc::new(cel::Context::default()),
        })
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the predicate against an event.
    pub fn evaluate(&self, event: &crate::event::Event) -> Result<bool, String> {
        let data: serde_json::Value = serde_json::from_str(&event.data)
            .map_err(|e| format!("event data is not valid JSON: {e}"))?;
        let text = |s: &str| cel::Value::String(Arc::new(s.to_string()));
        let fields: HashMap<&str, cel::Value> = HashMap::from([
            ("id", text(&event.id)),
            ("trigger", text(&event.trigger)),
            ("source", text(&event.source)),
            ("kind", text(&event.kind)),
            ("time", text(&event.time)),
            ("data", json_to_cel(&data)),
        ]);
        let value = cel::Value::from(fields);
        let mut scope = self.root.new_inner_scope();
        scope.add_variable_from_value("event", value);
        match self.program.execute(&scope) {
            Ok(cel::Value::Bool(pass)) => Ok(pass),
            Ok(other) => Err(format!(
                "CEL expression `{}` returned {:?}, expected a bool",
                self.source,
                other.type_of()
            )),
            Err(e) => Err(format!("CEL expression `{}` failed: {e}", self.source)),
        }
    }
}

/// Converts JSON the way Kubernetes CEL does: integers become `int` (not
/// `uint`), so `event.data.spec.replicas % 2 == 0` works with int literals;
/// integers beyond i64 become `uint`, other numbers `double`.
fn json_to_cel(value: &serde_json::Value) -> cel::Value {
    use serde_json::Value as J;
    match value {
        J::Null => cel::Value::Null,
        J::Bool(b) => cel::Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => cel::Value::String(Arc::new(s.clone())),
        J::Array(items) => cel::Value::List(Arc::new(items.iter().map(json_to_cel).collect())),
        J::Object(map) => {
            let converted: HashMap<String, cel::Value> = map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_cel(v)))
                .collect();
            cel::Value::from(converted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn deployment(ready: i64, replicas: i64) -> Event {
        let data = serde_json::json!({
            "metadata": {"name": "watched-web"},
            "spec": {"replicas": replicas},
            "status": {"readyReplicas": ready}
        });
        Event::new("t", "schedule", "update", &data)
    }

    #[test]
    fn predicate_over_event_data() {
        let f = CelFilter::compile("event.data.status.readyReplicas == event.data.spec.replicas")
            .unwrap();
        assert!(f.evaluate(&deployment(3, 3)).unwrap());
        assert!(!f.evaluate(&deployment(1, 3)).unwrap());
    }

    #[test]
    fn string_functions_and_event_fields() {
        let f = CelFilter::compile(
            r#"event.data.metadata.name.startsWith("watched-") && event.kind == "update""#,
        )
        .unwrap();
        assert!(f.evaluate(&deployment(0, 1)).unwrap());
    }

    #[test]
    fn json_integers_are_cel_ints() {
        let f = CelFilter::compile(
            "event.data.spec.replicas % 2 == 1 && event.data.spec.replicas > -1",
        )
        .unwrap();
        assert!(f.evaluate(&deployment(0, 3)).unwrap());
        let e = Event::new(
            "t",
            "s",
            "k",
            &serde_json::json!({"ratio": 0.5, "list": [1, 2]}),
        );
        let f = CelFilter::compile(
            "event.data.ratio < 1.0 && size(event.data.list) == 2 && 2 in event.data.list",
        )
        .unwrap();
        assert!(f.evaluate(&e).unwrap());
    }

    #[test]
    fn non_boolean_result_is_an_error() {
        let f = CelFilter::compile("event.data.spec.replicas + 1").unwrap();
        assert!(
            f.evaluate(&deployment(0, 1))
                .unwrap_err()
                .contains("expected a bool")
        );
    }

    #[test]
    fn missing_field_is_an_error_and_has_guards_it() {
        let f = CelFilter::compile("event.data.status.conditions.size() > 0").unwrap();
        assert!(f.evaluate(&deployment(0, 1)).is_err());
        let f = CelFilter::compile("has(event.data.status.conditions)").unwrap();
        assert!(!f.evaluate(&deployment(0, 1)).unwrap());
    }

    #[test]
    fn syntax_errors_are_reported() {
        let e = CelFilter::compile("event.data.(").unwrap_err();
        assert!(e.contains("invalid CEL expression"), "{e}");
    }
}
