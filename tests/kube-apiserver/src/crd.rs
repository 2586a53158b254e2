//! CustomResourceDefinitions define served kinds, as on a real server.
//!
//! Each served version of a stored CRD is a resource type: its group,
//! version, kind, plural, singular, short names, categories and scope come
//! from the CRD's `spec`, `subresources.status` makes `status` a
//! subresource, and `additionalPrinterColumns` are the columns of its
//! `Table` output. Creating the CRD serves the kind; deleting it stops
//! serving the kind and deletes its objects. The CRD's `status` gets the
//! accepted names and `NamesAccepted` / `Established` conditions, which
//! `kubectl wait --for condition=established` waits on.
//!
//! Differences from a real server: each version is stored apart (no
//! conversion between versions: an object created as v1alpha1 is not seen
//! as v1), and the schema is not checked (no pruning, no validation).

use serde_json::{Value, json};

use crate::discovery::{Column, ResourceType};

/// The kinds a CRD object defines: one per served version.
pub(crate) fn kinds_of(crd: &Value) -> Vec<ResourceType> {
    let spec = &crd["spec"];
    let names = &spec["names"];
    let (Some(group), Some(kind), Some(plural)) = (
        spec["group"].as_str(),
        names["kind"].as_str(),
        names["plural"].as_str(),
    ) else {
        return Vec::new();
    };
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            let version = v["name"].as_str()?;
            let mut ty = ResourceType::new(group, version, kind, plural, namespaced);
            ty.singular = names["singular"]
                .as_str()
                .map_or_else(|| kind.to_lowercase(), String::from);
            ty.short_names = strings(&names["shortNames"]);
            ty.categories = strings(&names["categories"]);
            ty.status = v["subresources"]["status"].is_object();
            ty.columns = columns(&v["additionalPrinterColumns"]);
            ty.crd = crd["metadata"]["name"].as_str().map(String::from);
            Some(ty)
        })
        .collect()
}

/// `additionalPrinterColumns`; without any, a CRD's table shows Age, as on a real server.
fn columns(declared: &Value) -> Vec<Column> {
    let Some(declared) = declared.as_array() else {
        return vec![Column {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            priority: 0,
            description: String::new(),
        }];
    };
    declared
        .iter()
        .filter_map(|c| {
            Some(Column {
                name: c["name"].as_str()?.into(),
                type_: c["type"].as_str().unwrap_or("string").into(),
                json_path: c["jsonPath"].as_str()?.into(),
                priority: c["priority"].as_i64().unwrap_or(0),
                description: c["description"].as_str().unwrap_or_default().into(),
            })
        })
        .collect()
}

/// The status a real server's CRD controller writes once the names are accepted.
pub(crate) fn accepted_status(crd: &Value, now: &str) -> Value {
    let condition = |kind: &str, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": "True",
            "lastTransitionTime": now,
            "reason": reason,
            "message": message,
        })
    };
    let stored: Vec<Value> = crd["spec"]["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["storage"].as_bool() == Some(true))
        .map(|v| v["name"].clone())
        .collect();
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": stored,
    })
}

/// Whether the CRD's status already says its names are accepted.
pub(crate) fn is_established(crd: &Value) -> bool {
    crd["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crd_defines_a_kind_per_served_version() {
        let crd = json!({
            "metadata": {"name": "images.kpack.io"},
            "spec": {
                "group": "kpack.io",
                "scope": "Namespaced",
                "names": {"kind": "Image", "plural": "images", "singular": "image", "shortNames": ["img"], "categories": ["kpack"]},
                "versions": [
                    {"name": "v1alpha2", "served": true, "storage": true, "subresources": {"status": {}},
                     "additionalPrinterColumns": [{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[0].status"}]},
                    {"name": "v1alpha1", "served": false, "storage": false},
                ],
            },
        });
        let kinds = kinds_of(&crd);
        assert_eq!(kinds.len(), 1);
        let image = &kinds[0];
        assert_eq!(
            (
                image.api_version().as_str(),
                image.kind.as_str(),
                image.plural.as_str()
            ),
            ("kpack.io/v1alpha2", "Image", "images")
        );
        assert!(image.namespaced && image.status);
        assert_eq!(image.short_names, ["img"]);
        assert_eq!(image.columns[0].json_path, ".status.conditions[0].status");
        assert!(!is_established(&crd));
        let status = accepted_status(&crd, "2026-01-01T00:00:00Z");
        assert_eq!(status["storedVersions"], json!(["v1alpha2"]));
        assert!(is_established(&json!({ "status": status })));
    }
}
