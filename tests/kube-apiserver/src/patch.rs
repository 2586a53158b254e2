//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and the common part of
//! Kubernetes strategic merge patch (lists merged by their merge key).

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

/// The merge key of the lists the built-in types merge element-wise under a
/// strategic merge patch (from the Kubernetes API reference's
/// `patchMergeKey`); other lists are replaced, as in a merge patch.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets"
        | "volumeDevices"
        | "hostAliases" => Some(match field {
            "hostAliases" => "ip",
            "volumeDevices" => "devicePath",
            "volumeMounts" => "mountPath",
            _ => "name",
        }),
        "ports" => Some("containerPort"),
        "tolerations" => Some("key"),
        "conditions" => Some("type"),
        _ => None,
    }
}

/// Applies a strategic merge patch: as [`merge`], except that lists with a
/// merge key merge element by element (an element with `$patch: delete`
/// removes its match) and `$patch: replace` in an object replaces it whole.
pub fn strategic(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch_map.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(map) = target else { return };
    for (k, v) in patch_map {
        match (merge_key(k), map.get_mut(k), v) {
            (_, _, Value::Null) => {
                map.remove(k);
            }
            (Some(key), Some(Value::Array(items)), Value::Array(patches)) => {
                merge_list(items, patches, key)
            }
            _ => strategic(map.entry(k.clone()).or_insert(Value::Null), v),
        }
    }
}

fn merge_list(items: &mut Vec<Value>, patches: &[Value], key: &str) {
    for element in patches {
        let id = element.get(key);
        let found = id.and_then(|id| items.iter().position(|item| item.get(key) == Some(id)));
        let delete = element.get("$patch").and_then(Value::as_str) == Some("delete");
        match (found, delete) {
            (Some(i), true) => {
                items.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic(&mut items[i], element),
            (None, false) => items.push(element.clone()),
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

    #[test]
    fn strategic_patches_merge_keyed_lists_and_replace_others() {
        let mut pod = json!({"spec": {
            "containers": [
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "side:1"},
            ],
            "args": ["a", "b"],
        }});
        strategic(
            &mut pod,
            &json!({"spec": {
                "containers": [
                    {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
                    {"name": "sidecar", "$patch": "delete"},
                    {"name": "new", "image": "new:1"},
                ],
                "args": ["c"],
            }}),
        );
        assert_eq!(
            pod,
            json!({"spec": {
                "containers": [
                    {"name": "app", "image": "app:2",
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "new", "image": "new:1"},
                ],
                "args": ["c"],
            }})
        );
        strategic(
            &mut pod,
            &json!({"spec": {"$patch": "replace", "args": []}}),
        );
        assert_eq!(pod, json!({"spec": {"args": []}}));
    }
}
