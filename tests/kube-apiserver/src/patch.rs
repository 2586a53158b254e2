//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::Value;

/// Applies a merge patch: objects merge recursively, `null` deletes, anything else replaces.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            map.remove(k);
        } else {
            merge(map.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Decodes a JSON pointer segment.
fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn split(path: &str) -> Result<(Vec<String>, String), String> {
    let parts: Vec<String> = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer `{path}`"))?
        .split('/')
        .map(unescape)
        .collect();
    let (last, parent) = parts.split_last().ok_or("empty JSON pointer")?;
    Ok((parent.to_vec(), last.clone()))
}

fn parent_mut<'a>(doc: &'a mut Value, parent: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parent {
        cur = match cur {
            Value::Object(m) => m
                .get_mut(p)
                .ok_or_else(|| format!("path segment `{p}` not found"))?,
            Value::Array(a) => {
                let i: usize = p.parse().map_err(|_| format!("bad array index `{p}`"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("index {i} out of range"))?
            }
            _ => return Err(format!("cannot descend into `{p}`")),
        };
    }
    Ok(cur)
}

fn get(doc: &Value, path: &str) -> Result<Value, String> {
    doc.pointer(path)
        .cloned()
        .ok_or_else(|| format!("path `{path}` not found"))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, last) = split(path)?;
    match parent_mut(doc, &parent)? {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("bad array index `{last}`"))?;
                if i > a.len() {
                    return Err(format!("index {i} out of range"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("cannot add at `{path}`")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split(path)?;
    match parent_mut(doc, &parent)? {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| format!("path `{path}` not found")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("bad array index `{last}`"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove `{path}`")),
    }
}

/// Applies a JSON patch; all or nothing.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    let mut work = doc.clone();
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without `path`")?;
        let value = || op.get("value").cloned().ok_or("operation without `value`");
        match op["op"].as_str() {
            Some("add") => add(&mut work, path, value()?)?,
            Some("remove") => {
                remove(&mut work, path)?;
            }
            Some("replace") => {
                remove(&mut work, path)?;
                add(&mut work, path, value()?)?;
            }
            Some("move") => {
                let from = op["from"].as_str().ok_or("move without `from`")?;
                let v = remove(&mut work, from)?;
                add(&mut work, path, v)?;
            }
            Some("copy") => {
                let from = op["from"].as_str().ok_or("copy without `from`")?;
                let v = get(&work, from)?;
                add(&mut work, path, v)?;
            }
            Some("test") => {
                if get(&work, path)? != value()? {
                    return Err(format!("test failed at `{path}`"));
                }
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_json_patches() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge(&mut doc, &json!({"a": {"b": null, "d": 3}, "l": [9]}));
        assert_eq!(doc, json!({"a": {"c": 2, "d": 3}, "l": [9]}));
        json_patch(
            &mut doc,
            &json!([
                {"op": "add", "path": "/l/-", "value": 10},
                {"op": "replace", "path": "/a/c", "value": 5},
                {"op": "move", "from": "/a/d", "path": "/e"},
                {"op": "test", "path": "/e", "value": 3},
                {"op": "add", "path": "/x~1y", "value": true},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"a": {"c": 5}, "l": [9, 10], "e": 3, "x/y": true})
        );
        let before = doc.clone();
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "remove", "path": "/e"}, {"op": "test", "path": "/a/c", "value": 0}])
            )
            .is_err()
        );
        assert_eq!(doc, before, "a failed patch changes nothing");
    }
}
