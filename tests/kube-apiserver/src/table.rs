//! `Table` output (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`),
//! which `kubectl get` asks for and prints as columns.
//!
//! The columns are Name, then the kind's printer columns (a CRD's
//! `additionalPrinterColumns`; Age for kinds without any). A cell is the
//! value at the column's JSONPath — dotted fields, `[n]` indexes and
//! `[?(@.field=="value")]` filters — with `date` cells turned into an age
//! (`5m`, `3h`, `2d`) as the real server does. Each row carries the object's
//! metadata as a `PartialObjectMetadata`.

use serde_json::{Value, json};

use crate::discovery::{Column, ResourceType};

/// Whether an `Accept` header asks for a Table.
pub(crate) fn wanted(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let params: Vec<&str> = range.split(';').map(str::trim).collect();
        params.contains(&"as=Table") && params.contains(&"g=meta.k8s.io")
    })
}

/// The Table of a list (its items) or of one object.
pub(crate) fn of(ty: &ResourceType, value: &Value) -> Value {
    let objects: Vec<&Value> = match value["items"].as_array() {
        Some(items) => items.iter().collect(),
        None => vec![value],
    };
    let columns = columns(ty);
    let mut definitions = vec![json!({
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": "Name must be unique within a namespace.",
        "priority": 0,
    })];
    definitions.extend(columns.iter().map(|c| {
        json!({
            "name": c.name,
            "type": c.type_,
            "format": "",
            "description": c.description,
            "priority": c.priority,
        })
    }));
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            cells.extend(columns.iter().map(|c| cell(c, object)));
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object["metadata"],
                },
            })
        })
        .collect();
    let mut metadata = json!({});
    for field in ["resourceVersion", "continue", "remainingItemCount"] {
        if let Some(v) = value["metadata"]
            .get(field)
            .filter(|_| value.get("items").is_some())
        {
            metadata[field] = v.clone();
        }
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn columns(ty: &ResourceType) -> Vec<Column> {
    if !ty.columns.is_empty() {
        return ty.columns.clone();
    }
    vec![Column {
        name: "Age".into(),
        type_: "date".into(),
        json_path: ".metadata.creationTimestamp".into(),
        priority: 0,
        description: "When the object was created.".into(),
    }]
}

fn cell(column: &Column, object: &Value) -> Value {
    let Some(value) = select(object, &column.json_path) else {
        return Value::Null;
    };
    match (column.type_.as_str(), value) {
        ("date", Value::String(time)) => match chrono::DateTime::parse_from_rfc3339(time) {
            Ok(at) => age(chrono::Utc::now().signed_duration_since(at)).into(),
            Err(_) => "<invalid>".into(),
        },
        (_, value) => value.clone(),
    }
}

/// The value at a simple JSONPath.
fn select<'v>(object: &'v Value, path: &str) -> Option<&'v Value> {
    let path = path.trim().trim_start_matches('{').trim_end_matches('}');
    let mut at = object;
    let mut rest = path.trim_start_matches('$');
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            at = at.get(&after[..end])?;
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']')?;
            let inner = &after[..end];
            at = match inner.strip_prefix("?(@.").and_then(|f| f.strip_suffix(')')) {
                Some(filter) => {
                    let (field, want) = filter.split_once("==")?;
                    let want = want.trim().trim_matches(|c| c == '"' || c == '\'');
                    at.as_array()?
                        .iter()
                        .find(|item| item[field.trim()].as_str() == Some(want))?
                }
                None => at.get(inner.parse::<usize>().ok()?)?,
            };
            rest = &after[end + 1..];
        } else {
            return None;
        }
    }
    Some(at)
}

/// A duration as kubectl shows ages: `45s`, `3m20s`, `25m`, `5h10m`, `20h`, `3d4h`, `30d`, `2y`.
fn age(elapsed: chrono::TimeDelta) -> String {
    let seconds = elapsed.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    match () {
        _ if seconds < 120 => format!("{seconds}s"),
        _ if minutes < 10 && seconds % 60 != 0 => format!("{minutes}m{}s", seconds % 60),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 && minutes % 60 != 0 => format!("{hours}h{}m", minutes % 60),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 192 && hours % 24 != 0 => format!("{}d{}h", hours / 24, hours % 24),
        _ if hours < 24 * 365 * 2 => format!("{}d", hours / 24),
        _ => format!("{}y", hours / 24 / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_ages_and_accept_headers() {
        let object = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}], "n": 3}});
        assert_eq!(select(&object, ".status.n"), Some(&json!(3)));
        assert_eq!(
            select(&object, ".status.conditions[1].type"),
            Some(&json!("Ready"))
        );
        assert_eq!(
            select(&object, r#".status.conditions[?(@.type=="Ready")].status"#),
            Some(&json!("True"))
        );
        assert_eq!(select(&object, ".status.missing"), None);
        let d = chrono::TimeDelta::seconds;
        assert_eq!(age(d(45)), "45s");
        assert_eq!(age(d(200)), "3m20s");
        assert_eq!(age(d(25 * 60)), "25m");
        assert_eq!(age(d(5 * 3600 + 600)), "5h10m");
        assert_eq!(age(d(20 * 3600)), "20h");
        assert_eq!(age(d(76 * 3600)), "3d4h");
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
    }
}
