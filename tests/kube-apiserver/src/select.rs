//! Label selectors (`a=b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`)
//! and field selectors (`metadata.name`, `metadata.namespace`, and any
//! other dotted path, with `=`, `==` and `!=`).

use serde_json::Value;

/// A parsed selector: every requirement must hold.
#[derive(Debug, Default)]
pub struct Selector(Vec<Requirement>);

#[derive(Debug)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

fn set(text: &str) -> Result<Vec<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| format!("expected (values) in `{text}`"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

impl Selector {
    /// Parses a selector; an empty one matches everything.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for term in terms(text) {
            let req = if let Some((k, v)) = term.split_once("!=") {
                Requirement::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once("==") {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once('=') {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = term.split_once(" notin ") {
                Requirement::NotIn(k.trim().into(), set(v)?)
            } else if let Some((k, v)) = term.split_once(" in ") {
                Requirement::In(k.trim().into(), set(v)?)
            } else if let Some(k) = term.strip_prefix('!') {
                Requirement::Absent(k.trim().into())
            } else if term
                .chars()
                .all(|c| c.is_alphanumeric() || "-_./".contains(c))
            {
                Requirement::Exists(term)
            } else {
                return Err(format!("unable to parse requirement `{term}`"));
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    /// Whether the labels of `object` match.
    pub fn matches_labels(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        self.matches(|k| labels.get(k).and_then(Value::as_str).map(str::to_string))
    }

    /// Whether the fields of `object` match (dotted paths).
    pub fn matches_fields(&self, object: &Value) -> bool {
        self.matches(|path| {
            let mut v = object;
            for part in path.split('.') {
                v = v.get(part)?;
            }
            match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            }
        })
    }

    fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k).as_deref() != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(&x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::Absent(k) => get(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_kubernetes_syntax() {
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "front"}}});
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web,tier=front", true),
            ("app!=web", false),
            ("app in (web, api)", true),
            ("tier notin (front)", false),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("missing notin (x)", true),
        ] {
            assert_eq!(
                Selector::parse(sel).unwrap().matches_labels(&obj),
                want,
                "{sel}"
            );
        }
        assert!(Selector::parse("a in x").is_err());
        let fields = Selector::parse("metadata.name=a,metadata.namespace!=b").unwrap();
        assert!(fields.matches_fields(&obj));
    }
}
