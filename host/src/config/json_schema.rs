//! The JSON Schema subset builtin modules describe their params with, and
//! its validation: every problem with its path under `params`, saying what
//! was expected.
//!
//! Keywords: `type` (one or a list of `object`, `array`, `string`,
//! `integer`, `number`, `boolean`, `null`), `properties`, `required`,
//! `additionalProperties` (a bool), `items`, `enum`, `minLength`, `pattern`,
//! `minimum`, `maximum` and `oneOf` (exactly one subschema matches, as for
//! "one of `url` or `urlSecret`"). Annotations (`title`, `description`,
//! `$schema`) are ignored; any other keyword is ignored too, so schemas stay
//! valid JSON Schema for other tools.

use serde_json::Value;

/// The problems of `value` against `schema`, each as (path, message); the
/// path starts with `at` (e.g. `action.params`).
pub fn validate(schema: &Value, value: &Value, at: &str) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    check(schema, value, at, &mut problems);
    problems
}

fn check(schema: &Value, value: &Value, at: &str, problems: &mut Vec<(String, String)>) {
    let before = problems.len();
    if let Some(types) = types(schema)
        && !types.iter().any(|t| is(value, t))
    {
        problems.push((
            at.to_string(),
            format!("expected {}, found {}", types.join(" or "), describe(value)),
        ));
        return;
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        let shown: Vec<String> = options.iter().map(Value::to_string).collect();
        problems.push((
            at.to_string(),
            format!("expected one of {}, found {value}", shown.join(", ")),
        ));
    }
    if let Some(text) = value.as_str() {
        if let Some(min) = schema["minLength"].as_u64()
            && (text.chars().count() as u64) < min
        {
            problems.push((
                at.to_string(),
                format!("expected at least {min} character(s)"),
            ));
        }
        if let Some(pattern) = schema["pattern"].as_str()
            && let Ok(re) = regex::Regex::new(pattern)
            && !re.is_match(text)
        {
            problems.push((
                at.to_string(),
                format!("expected text matching `{pattern}`, found {value}"),
            ));
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema["minimum"].as_f64()
            && n < min
        {
            problems.push((
                at.to_string(),
                format!("expected at least {min}, found {n}"),
            ));
        }
        if let Some(max) = schema["maximum"].as_f64()
            && n > max
        {
            problems.push((at.to_string(), format!("expected at most {max}, found {n}")));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for name in schema["required"].as_array().into_iter().flatten() {
            if let Some(name) = name.as_str()
                && !object.contains_key(name)
            {
                problems.push((format!("{at}.{name}"), "is required".to_string()));
            }
        }
        for (name, item) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => check(sub, item, &format!("{at}.{name}"), problems),
                None if schema["additionalProperties"] == Value::Bool(false) => {
                    let known: Vec<&String> =
                        properties.map(|p| p.keys().collect()).unwrap_or_default();
                    let expected = if known.is_empty() {
                        "no fields here".to_string()
                    } else {
                        format!(
                            "one of {}",
                            known
                                .iter()
                                .map(|k| format!("`{k}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    problems.push((
                        format!("{at}.{name}"),
                        format!("unknown field `{name}`: expected {expected}"),
                    ));
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(list)) = (schema.get("items"), value.as_array()) {
        for (i, item) in list.iter().enumerate() {
            check(items, item, &format!("{at}[{i}]"), problems);
        }
    }
    if let Some(options) = schema["oneOf"].as_array()
        && problems.len() == before
    {
        let matching = options
            .iter()
            .filter(|o| validate(o, value, at).is_empty())
            .count();
        if matching != 1 {
            let alternatives: Vec<String> = options.iter().map(summary).collect();
            problems.push((
                at.to_string(),
                format!(
                    "expected exactly one of: {} ({matching} match)",
                    alternatives.join("; ")
                ),
            ));
        }
    }
}

fn types(schema: &Value) -> Option<Vec<&str>> {
    match &schema["type"] {
        Value::String(t) => Some(vec![t.as_str()]),
        Value::Array(list) => Some(list.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

fn is(value: &Value, kind: &str) -> bool {
    match kind {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.as_i64().is_some() || value.as_u64().is_some(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => true,
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// A short text for a `oneOf` alternative: its required fields.
fn summary(schema: &Value) -> String {
    match schema["required"].as_array() {
        Some(fields) => fields
            .iter()
            .filter_map(Value::as_str)
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(" and "),
        None => schema.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_are_located_and_say_what_was_expected() {
        let schema = json!({
            "type": "object", "required": ["selector"], "additionalProperties": false,
            "oneOf": [{"required": ["url"]}, {"required": ["urlSecret"]}],
            "properties": {
                "selector": {"type": "string", "minLength": 1},
                "url": {"type": "string", "pattern": "^https?://"},
                "urlSecret": {"type": "string"},
                "kind": {"enum": ["merge", "json"]},
                "n": {"type": "integer", "minimum": 1},
                "list": {"type": "array", "items": {"type": "string"}},
            }
        });
        let ok = json!({"selector": "app=web", "url": "https://x", "kind": "json", "n": 2, "list": ["a"]});
        assert!(validate(&schema, &ok, "action.params").is_empty());
        let bad = json!({"url": "ftp://x", "urlSecret": "s", "kind": "xml", "n": 0, "list": [1], "extra": true});
        let problems: Vec<String> = validate(&schema, &bad, "action.params")
            .into_iter()
            .map(|(at, m)| format!("{at}: {m}"))
            .collect();
        for expected in [
            "action.params.selector: is required",
            "action.params.url: expected text matching `^https?://`",
            "action.params.kind: expected one of \"merge\", \"json\", found \"xml\"",
            "action.params.n: expected at least 1",
            "action.params.list[0]: expected string, found the number 1",
            "action.params.extra: unknown field `extra`: expected one of",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "{expected} in {problems:#?}"
            );
        }
        let both = json!({"selector": "a", "url": "https://x", "urlSecret": "s"});
        let problems = validate(&schema, &both, "p");
        assert!(
            problems[0]
                .1
                .contains("exactly one of: `url`; `urlSecret` (2 match)"),
            "{problems:?}"
        );
        assert_eq!(
            validate(&json!({"type": "object"}), &json!("x"), "p"),
            [(
                "p".to_string(),
                "expected object, found the string \"x\"".to_string()
            )]
        );
    }
}
