//! The resource types the server knows and the discovery documents that
//! describe them (`/api`, `/api/v1`, `/apis`, `/apis/{group}[/{version}]`).

use serde_json::{Value, json};

/// One kind of resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `ConfigMap`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `configmaps`.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
}

impl ResourceType {
    /// A resource type.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }

    /// `plural` for the core group, else `plural.group` (as error messages name resources).
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    fn describe(&self) -> Value {
        let short: &[&str] = match (self.group.as_str(), self.plural.as_str()) {
            ("", "namespaces") => &["ns"],
            ("", "configmaps") => &["cm"],
            ("", "pods") => &["po"],
            ("", "services") => &["svc"],
            ("", "serviceaccounts") => &["sa"],
            ("", "events") => &["ev"],
            ("apps", "deployments") => &["deploy"],
            ("apiextensions.k8s.io", "customresourcedefinitions") => &["crd", "crds"],
            _ => &[],
        };
        json!({
            "name": self.plural,
            "singularName": self.kind.to_lowercase(),
            "namespaced": self.namespaced,
            "kind": self.kind,
            "shortNames": short,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        })
    }
}

/// The types every server starts with.
pub fn builtin() -> Vec<ResourceType> {
    vec![
        ResourceType::new("", "v1", "Namespace", "namespaces", false),
        ResourceType::new("", "v1", "ConfigMap", "configmaps", true),
        ResourceType::new("", "v1", "Secret", "secrets", true),
        ResourceType::new("", "v1", "Pod", "pods", true),
        ResourceType::new("", "v1", "Service", "services", true),
        ResourceType::new("", "v1", "Event", "events", true),
        ResourceType::new("", "v1", "ServiceAccount", "serviceaccounts", true),
        ResourceType::new("apps", "v1", "Deployment", "deployments", true),
        ResourceType::new("batch", "v1", "Job", "jobs", true),
        ResourceType::new("coordination.k8s.io", "v1", "Lease", "leases", true),
        ResourceType::new("events.k8s.io", "v1", "Event", "events", true),
        ResourceType::new("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        ResourceType::new(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        ResourceType::new(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        ResourceType::new(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        ResourceType::new(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        ),
    ]
}

/// `GET /api`.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    })
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`; None when nothing is served there.
pub fn resource_list(types: &[ResourceType], group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = types
        .iter()
        .filter(|t| t.group == group && t.version == version)
        .map(ResourceType::describe)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

fn group_doc(types: &[ResourceType], group: &str) -> Option<Value> {
    let mut versions: Vec<&str> = types
        .iter()
        .filter(|t| t.group == group)
        .map(|t| t.version.as_str())
        .collect();
    versions.dedup();
    let first = *versions.first()?;
    let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    Some(json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(first),
    }))
}

/// `GET /apis/{group}`.
pub fn group(types: &[ResourceType], group: &str) -> Option<Value> {
    group_doc(types, group)
}

/// `GET /apis`.
pub fn groups(types: &[ResourceType]) -> Value {
    let mut names: Vec<&str> = types
        .iter()
        .filter(|t| !t.group.is_empty())
        .map(|t| t.group.as_str())
        .collect();
    names.sort();
    names.dedup();
    json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": names.iter().filter_map(|g| group_doc(types, g)).collect::<Vec<_>>(),
    })
}

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": "v1.32.0-wasmtrigger-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}
