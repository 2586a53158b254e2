//! RBAC, enforced as kube-apiserver's RBAC authorizer does, when the server
//! is started with `rbac: true`.
//!
//! Each bearer token names an identity: the admin (the server's own token,
//! like `system:masters`: everything is allowed) or a service account
//! (`system:serviceaccount:NS:NAME`, in the groups `system:serviceaccounts`,
//! `system:serviceaccounts:NS` and `system:authenticated`). A service
//! account's request is allowed when a rule of a Role bound to it in the
//! request's namespace, or of a ClusterRole bound to it by a RoleBinding
//! there or by a ClusterRoleBinding, matches:
//!
//! - `verbs` holds the request's verb (`get`, `list`, `watch`, `create`,
//!   `update`, `patch`, `delete`, `deletecollection`) or `*`;
//! - `apiGroups` holds its group (`""` for core) or `*`;
//! - `resources` holds `*`, the resource (`deployments`), the resource and
//!   subresource (`triggers/status`), or `*/subresource`;
//! - `resourceNames`, if any, holds the object's name, so such a rule never
//!   allows `list`, `watch`, `create` or `deletecollection`.
//!
//! Discovery (`/api`, `/apis`, `/version`, ...) is open to every
//! authenticated identity, as the `system:discovery` role makes it. A denied
//! request gets the real 403 `Forbidden` Status. Not done: aggregated
//! ClusterRoles, `nonResourceURLs`, impersonation, and the `bind` /
//! `escalate` checks on writing RBAC objects.

use serde_json::Value;

use crate::store::{ApiError, Store};

/// Who a request is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Allowed everything (the server's own token, or no authentication).
    Admin,
    /// `system:serviceaccount:{namespace}:{name}`.
    ServiceAccount {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

impl Identity {
    /// The user name RBAC subjects and messages use.
    pub fn user(&self) -> String {
        match self {
            Identity::Admin => "admin".into(),
            Identity::ServiceAccount { namespace, name } => {
                format!("system:serviceaccount:{namespace}:{name}")
            }
        }
    }
}

/// What a resource request asks to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Request {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The request's attributes, or None for a non-resource path (discovery).
pub(crate) fn attributes(method: &str, path: &str, watch: bool) -> Option<Request> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _, rest @ ..] => ("", rest),
        ["apis", g, _, rest @ ..] => (*g, rest),
        _ => return None,
    };
    // `/api/v1/namespaces/NAME` is the Namespace NAME itself, not a scope.
    let (namespace, rest): (Option<&str>, &[&str]) = match rest {
        ["namespaces", _] => (None, rest),
        ["namespaces", ns, tail @ ..] => (Some(*ns), tail),
        _ => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [] => return None,
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub, ..] => (*resource, Some(*name), Some(*sub)),
    };
    let verb = match (method, name.is_some()) {
        ("GET" | "HEAD", true) => "get",
        ("GET" | "HEAD", false) if watch => "watch",
        ("GET" | "HEAD", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return None,
    };
    Some(Request {
        verb: verb.into(),
        group: group.into(),
        resource: resource.into(),
        subresource: subresource.map(String::from),
        namespace: namespace.map(String::from),
        name: name.map(String::from),
    })
}

/// Whether `who` may make `request`, by the RBAC objects in `store`.
pub(crate) fn allowed(store: &Store, who: &Identity, request: &Request) -> bool {
    let Identity::ServiceAccount { namespace, name } = who else {
        return true;
    };
    let groups = [
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
        "system:authenticated".to_string(),
    ];
    let user = who.user();
    let binds = |binding: &Value, binding_ns: &str| {
        binding["subjects"].as_array().is_some_and(|subjects| {
            subjects.iter().any(|s| match s["kind"].as_str() {
                Some("ServiceAccount") => {
                    s["name"] == name.as_str()
                        && s["namespace"].as_str().unwrap_or(binding_ns) == namespace
                }
                Some("User") => s["name"] == user.as_str(),
                Some("Group") => groups.iter().any(|g| s["name"] == g.as_str()),
                _ => false,
            })
        })
    };
    let rules_of = |role_ref: &Value, binding_ns: &str| -> Vec<Value> {
        let role_name = role_ref["name"].as_str().unwrap_or_default();
        let role = match role_ref["kind"].as_str() {
            Some("Role") => object(store, "roles", binding_ns, role_name),
            Some("ClusterRole") => object(store, "clusterroles", "", role_name),
            _ => None,
        };
        role.and_then(|r| r["rules"].as_array().cloned())
            .unwrap_or_default()
    };
    let mut rules = Vec::new();
    if let Some(ns) = &request.namespace {
        for binding in objects(store, "rolebindings", Some(ns)) {
            if binds(&binding, ns) {
                rules.extend(rules_of(&binding["roleRef"], ns));
            }
        }
    }
    for binding in objects(store, "clusterrolebindings", None) {
        if binds(&binding, "") && binding["roleRef"]["kind"] == "ClusterRole" {
            rules.extend(rules_of(&binding["roleRef"], ""));
        }
    }
    rules.iter().any(|rule| matches(rule, request))
}

fn object(store: &Store, plural: &str, ns: &str, name: &str) -> Option<Value> {
    let ty = store.type_of("rbac.authorization.k8s.io", plural)?;
    store.get(ty, ns, name).ok()
}

fn objects(store: &Store, plural: &str, ns: Option<&str>) -> Vec<Value> {
    store
        .type_of("rbac.authorization.k8s.io", plural)
        .map(|ty| store.list(ty, ns).into_iter().map(|(_, v)| v).collect())
        .unwrap_or_default()
}

/// Whether one PolicyRule allows the request.
fn matches(rule: &Value, request: &Request) -> bool {
    let holds = |field: &str, want: &str| {
        rule[field]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i == "*" || i == want))
    };
    let resource_matches = rule["resources"].as_array().is_some_and(|items| {
        items.iter().filter_map(Value::as_str).any(|r| {
            r == "*"
                || match &request.subresource {
                    None => r == request.resource,
                    Some(sub) => {
                        r == format!("{}/{sub}", request.resource) || r == format!("*/{sub}")
                    }
                }
        })
    });
    let names_match = match rule["resourceNames"].as_array().filter(|n| !n.is_empty()) {
        None => true,
        Some(names) => request
            .name
            .as_ref()
            .is_some_and(|name| names.iter().any(|n| n == name.as_str())),
    };
    holds("verbs", &request.verb)
        && holds("apiGroups", &request.group)
        && resource_matches
        && names_match
}

/// The 403 a real server sends.
pub(crate) fn forbidden(who: &Identity, request: &Request) -> ApiError {
    let what = if request.group.is_empty() {
        request.resource.clone()
    } else {
        format!("{}.{}", request.resource, request.group)
    };
    let named = request
        .name
        .as_ref()
        .map(|n| format!(" \"{n}\""))
        .unwrap_or_default();
    let resource = match &request.subresource {
        Some(sub) => format!("resource \"{}/{sub}\"", request.resource),
        None => format!("resource \"{}\"", request.resource),
    };
    let scope = match &request.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    ApiError::new(
        403,
        "Forbidden",
        format!(
            "{what}{named} is forbidden: User \"{}\" cannot {} {resource} in API group \"{}\" {scope}",
            who.user(),
            request.verb,
            request.group
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(method: &str, path: &str) -> Request {
        attributes(method, path, false).unwrap()
    }

    #[test]
    fn paths_become_verbs_resources_and_scopes() {
        let r = request(
            "PATCH",
            "/apis/wasmtrigger.dev/v1alpha1/namespaces/ops/triggers/t/status",
        );
        assert_eq!(
            (
                r.verb.as_str(),
                r.group.as_str(),
                r.resource.as_str(),
                r.subresource.as_deref(),
                r.namespace.as_deref(),
                r.name.as_deref()
            ),
            (
                "patch",
                "wasmtrigger.dev",
                "triggers",
                Some("status"),
                Some("ops"),
                Some("t")
            )
        );
        let r = attributes("GET", "/api/v1/namespaces/default/configmaps", true).unwrap();
        assert_eq!((r.verb.as_str(), r.name), ("watch", None));
        let r = request("GET", "/api/v1/namespaces/default");
        assert_eq!(
            (r.resource.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("default"), None)
        );
        assert_eq!(attributes("GET", "/apis/apps/v1", false), None);
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let rule = json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"], "resourceNames": ["web"]});
        let patch = request("PATCH", "/apis/apps/v1/namespaces/d/deployments/web");
        assert!(matches(&rule, &patch));
        assert!(!matches(
            &rule,
            &request("PATCH", "/apis/apps/v1/namespaces/d/deployments/db")
        ));
        assert!(
            !matches(
                &rule,
                &request("GET", "/apis/apps/v1/namespaces/d/deployments")
            ),
            "names never allow list"
        );
        assert!(!matches(
            &rule,
            &request("PATCH", "/apis/apps/v1/namespaces/d/deployments/web/status")
        ));
        assert!(!matches(
            &rule,
            &request("DELETE", "/apis/apps/v1/namespaces/d/deployments/web")
        ));
        let status = json!({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(matches(
            &status,
            &request("PUT", "/apis/x.io/v1/namespaces/d/things/a/status")
        ));
        assert!(!matches(
            &status,
            &request("PUT", "/apis/x.io/v1/namespaces/d/things/a")
        ));
        let core = json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]});
        assert!(matches(
            &core,
            &request("GET", "/api/v1/namespaces/d/configmaps")
        ));
        assert!(!matches(
            &core,
            &request("GET", "/apis/apps/v1/namespaces/d/configmaps")
        ));
    }
}
