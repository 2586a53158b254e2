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
    /// Singular name, e.g. `configmap`.
    pub singular: String,
    /// Short names kubectl accepts, e.g. `cm`.
    pub short_names: Vec<String>,
    /// Categories (`kubectl get all` and the like).
    pub categories: Vec<String>,
    /// Whether `status` is a subresource: kept apart from writes to the object.
    pub status: bool,
    /// Printer columns for `Table` output (a CRD's `additionalPrinterColumns`).
    pub columns: Vec<Column>,
    /// Served now; a deleted CRD's kinds stay known but unserved.
    pub served: bool,
    /// Defined by a CustomResourceDefinition (its name), not built in or passed in code.
    pub crd: Option<String>,
}

/// One printer column: a name, a type and where its value is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Header, e.g. `Last Success`.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// A simple JSONPath, e.g. `.status.state`.
    pub json_path: String,
    /// 0: shown by default; more: only with `-o wide`.
    pub priority: i64,
    /// Text for people.
    pub description: String,
}

impl ResourceType {
    /// A resource type.
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let short: &[&str] = match (group, plural) {
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
        // The built-in kinds whose status is a subresource on a real server.
        let status = matches!(
            (group, plural),
            ("", "namespaces" | "pods" | "services")
                | ("apps", "deployments")
                | ("batch", "jobs")
                | ("apiextensions.k8s.io", "customresourcedefinitions")
        );
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
            singular: kind.to_lowercase(),
            short_names: short.iter().map(|s| s.to_string()).collect(),
            categories: Vec::new(),
            status,
            columns: Vec::new(),
            served: true,
            crd: None,
        }
    }

    /// The same kind with `status` as a subresource (for kinds passed in code).
    pub fn with_status(mut self) -> Self {
        self.status = true;
        self
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

    fn describe(&self) -> Vec<Value> {
        let mut resource = json!({
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "shortNames": self.short_names,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        });
        if !self.categories.is_empty() {
            resource["categories"] = json!(self.categories);
        }
        let mut described = vec![resource];
        if self.status {
            described.push(json!({
                "name": format!("{}/status", self.plural),
                "singularName": "",
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        described
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
        .filter(|t| t.served && t.group == group && t.version == version)
        .flat_map(ResourceType::describe)
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
        .filter(|t| t.served && t.group == group)
        .map(|t| t.version.as_str())
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
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

/// How Kubernetes ranks versions for the preferred one: GA over beta over
/// alpha, then the higher number (`v1` > `v1beta2` > `v1beta1` > `v1alpha1`).
fn version_priority(version: &str) -> (u8, u32, u32) {
    let Some(rest) = version.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let major = digits.parse().unwrap_or(0);
    let tail = &rest[digits.len()..];
    let number = |s: &str| s.parse().unwrap_or(0);
    match tail {
        "" => (3, major, 0),
        t if t.starts_with("beta") => (2, major, number(&t[4..])),
        t if t.starts_with("alpha") => (1, major, number(&t[5..])),
        _ => (0, major, 0),
    }
}

/// `GET /apis/{group}`.
pub fn group(types: &[ResourceType], group: &str) -> Option<Value> {
    group_doc(types, group)
}

/// `GET /apis`.
pub fn groups(types: &[ResourceType]) -> Value {
    let mut names: Vec<&str> = types
        .iter()
        .filter(|t| t.served && !t.group.is_empty())
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
