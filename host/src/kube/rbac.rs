//! Least-privilege RBAC derived from a config: the Roles, ClusterRoles and
//! bindings that exactly cover what its `kube-watch` sources, `kube` grants,
//! Kubernetes Secret provider and (optionally) leader election need — for
//! `wasmtrigger rbac`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::config::grants::KubeVerb;
use crate::config::{Config, SourceConfig};

/// Whom the rules are for and what else the engine does.
#[derive(Clone, Debug)]
pub struct RbacOptions {
    /// Namespace of the engine's ServiceAccount (and of its leader Lease).
    pub namespace: String,
    /// Name of the ServiceAccount.
    pub service_account: String,
    /// Name of the generated Roles, ClusterRole and bindings.
    pub name: String,
    /// The leader-election Lease's name, when replicas elect a leader.
    pub leader_lease: Option<String>,
    /// Where Trigger objects are read: a namespace, `*` for all, "" for `namespace`.
    pub trigger_objects: Option<String>,
}

/// Where a rule applies.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Cluster,
    Namespace(String),
}

/// What a rule covers (its verbs are collected per key).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Resource {
    group: String,
    resource: String,
    names: Vec<String>,
}

#[derive(Default)]
struct Needs {
    verbs: BTreeSet<&'static str>,
    why: BTreeSet<String>,
}

/// The derived rules.
#[derive(Default)]
pub struct Rbac {
    scopes: BTreeMap<Scope, BTreeMap<Resource, Needs>>,
    /// Kinds whose plural resource name was derived by rule, not known.
    guessed: BTreeSet<String>,
}

/// Plural resource names and scope of the kinds wasmtrigger knows; others are
/// derived with the API server's own pluralisation rule.
const KNOWN: &[(&str, &str)] = &[
    ("Endpoints", "endpoints"),
    ("Ingress", "ingresses"),
    ("IngressClass", "ingressclasses"),
    ("NetworkPolicy", "networkpolicies"),
    ("PodSecurityPolicy", "podsecuritypolicies"),
    ("StorageClass", "storageclasses"),
    ("PriorityClass", "priorityclasses"),
    ("RuntimeClass", "runtimeclasses"),
];

fn plural(kind: &str) -> (String, bool) {
    if let Some((_, plural)) = KNOWN.iter().find(|(k, _)| *k == kind) {
        return (plural.to_string(), false);
    }
    let lower = kind.to_ascii_lowercase();
    let regular = [
        "ConfigMap",
        "Secret",
        "Pod",
        "Service",
        "ServiceAccount",
        "Event",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PersistentVolumeClaim",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "Lease",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Trigger",
    ];
    let known = regular.contains(&kind);
    // The rule the API server uses for CRDs without an explicit plural.
    let plural = if lower.ends_with('s')
        || lower.ends_with("x")
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        format!("{lower}es")
    } else if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        format!("{stem}ies")
    } else {
        format!("{lower}s")
    };
    (plural, !known)
}

fn group_of(api_version: &str) -> String {
    match api_version.rsplit_once('/') {
        Some((group, _)) => group.to_string(),
        None => String::new(),
    }
}

impl Rbac {
    fn add(
        &mut self,
        scope: Scope,
        api_version: &str,
        kind: &str,
        names: &[String],
        verbs: &[&'static str],
        why: String,
    ) {
        let (resource, guessed) = plural(kind);
        if guessed {
            self.guessed
                .insert(format!("{api_version} {kind} → {resource}"));
        }
        // RBAC cannot limit `create` (and collection verbs) by name.
        let (named, unnamed): (Vec<&str>, Vec<&str>) = verbs
            .iter()
            .partition(|v| !names.is_empty() && !matches!(**v, "create" | "list" | "watch"));
        for (verbs, names) in [(named, names.to_vec()), (unnamed, Vec::new())] {
            if verbs.is_empty() {
                continue;
            }
            let key = Resource {
                group: group_of(api_version),
                resource: resource.clone(),
                names,
            };
            let needs = self
                .scopes
                .entry(scope.clone())
                .or_default()
                .entry(key)
                .or_default();
            needs.verbs.extend(verbs);
            needs.why.insert(why.clone());
        }
    }

    /// `list` and `watch` on a kind, where it is watched.
    fn add_watch(&mut self, api_version: &str, kind: &str, namespaces: &[String], why: String) {
        for scope in scopes(namespaces) {
            self.add(
                scope,
                api_version,
                kind,
                &[],
                &["list", "watch"],
                why.clone(),
            );
        }
    }

    /// The verbs of a `grants.kube` entry (`apply` is `patch` and `create`).
    fn add_grant(&mut self, grant: &crate::config::grants::KubeGrant, why: String) {
        let verbs: BTreeSet<&'static str> = grant
            .verbs
            .iter()
            .flat_map(|v| match v {
                KubeVerb::Get => &["get"][..],
                KubeVerb::List => &["list"],
                KubeVerb::Create => &["create"],
                // Server-side apply is a PATCH that may create the object.
                KubeVerb::Apply => &["patch", "create"],
                KubeVerb::Patch => &["patch"],
                KubeVerb::Delete => &["delete"],
            })
            .copied()
            .collect();
        let verbs: Vec<&'static str> = verbs.into_iter().collect();
        for scope in scopes(&grant.namespaces) {
            self.add(
                scope,
                &grant.api_version,
                &grant.kind,
                &grant.names,
                &verbs,
                why.clone(),
            );
        }
    }

    /// Whether the config needs any Kubernetes access at all.
    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    /// The rules as Kubernetes objects: ClusterRole and ClusterRoleBinding
    /// first, then a Role and RoleBinding per namespace.
    pub fn objects(&self, options: &RbacOptions) -> Vec<Value> {
        let subject = json!([{
            "kind": "ServiceAccount",
            "name": options.service_account,
            "namespace": options.namespace,
        }]);
        let labels = json!({"app.kubernetes.io/name": "wasmtrigger", "app.kubernetes.io/managed-by": "wasmtrigger-rbac"});
        let mut out = Vec::new();
        for (scope, resources) in &self.scopes {
            let rules: Vec<Value> = resources
                .iter()
                .map(|(r, needs)| {
                    let mut rule = json!({
                        "apiGroups": [r.group],
                        "resources": [r.resource],
                        "verbs": needs.verbs.iter().collect::<Vec<_>>(),
                    });
                    if !r.names.is_empty() {
                        rule["resourceNames"] = json!(r.names);
                    }
                    rule
                })
                .collect();
            let (role_kind, binding_kind, metadata) = match scope {
                Scope::Cluster => (
                    "ClusterRole",
                    "ClusterRoleBinding",
                    json!({"name": options.name, "labels": labels}),
                ),
                Scope::Namespace(ns) => (
                    "Role",
                    "RoleBinding",
                    json!({"name": options.name, "namespace": ns, "labels": labels}),
                ),
            };
            out.push(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": role_kind,
                "metadata": metadata,
                "rules": rules,
            }));
            out.push(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": binding_kind,
                "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": options.name},
                "subjects": subject,
            }));
        }
        out
    }

    /// The objects as a multi-document YAML stream, each rule's reasons in a
    /// comment above its document.
    pub fn to_yaml(&self, options: &RbacOptions) -> String {
        let mut text = String::from(
            "# Generated by `wasmtrigger rbac`: exactly what the config's kube-watch sources,\n# kube grants and engine settings need.\n",
        );
        if options.trigger_objects.is_some() {
            text.push_str(
                "# Trigger objects are bounded by the config's engine.triggerObjects policy: the rules\n# for them come from that policy (no kube grants or watches unless it lists them).\n",
            );
        }
        if self.is_empty() {
            text.push_str("# This config needs no Kubernetes API access.\n");
            return text;
        }
        for guess in &self.guessed {
            text.push_str(&format!(
                "# NOTE: plural derived by rule, check it against `kubectl api-resources`: {guess}\n"
            ));
        }
        let reasons: Vec<Vec<String>> = self
            .scopes
            .values()
            .map(|resources| {
                resources
                    .iter()
                    .map(|(r, needs)| {
                        let group = if r.group.is_empty() { "core" } else { &r.group };
                        format!(
                            "#   {}.{group} {}: {}",
                            r.resource,
                            needs.verbs.iter().copied().collect::<Vec<_>>().join(","),
                            needs.why.iter().cloned().collect::<Vec<_>>().join("; ")
                        )
                    })
                    .collect()
            })
            .collect();
        for (i, object) in self.objects(options).iter().enumerate() {
            text.push_str("---\n");
            if i % 2 == 0 {
                for line in &reasons[i / 2] {
                    text.push_str(line);
                    text.push('\n');
                }
            }
            text.push_str(&serde_yaml_ng::to_string(object).unwrap_or_default());
        }
        text
    }
}

/// Where rules for these namespaces go: a Role in each, or one ClusterRole
/// for all namespaces (none listed, or `*`) and cluster-scoped kinds.
fn scopes(namespaces: &[String]) -> Vec<Scope> {
    if namespaces.is_empty() || namespaces.iter().any(|n| n == "*") {
        return vec![Scope::Cluster];
    }
    namespaces
        .iter()
        .map(|ns| Scope::Namespace(ns.clone()))
        .collect()
}

/// Derives the rules `config` needs.
pub fn derive(config: &Config, options: &RbacOptions) -> Rbac {
    let mut rbac = Rbac::default();
    for trigger in &config.triggers {
        if let SourceConfig::KubeWatch(watch) = &trigger.source {
            let why = format!("trigger {} watches", trigger.name);
            rbac.add_watch(&watch.api_version, &watch.kind, &watch.namespaces, why);
        }
        for grant in &trigger.action.grants.kube {
            rbac.add_grant(grant, format!("trigger {} grant", trigger.name));
        }
        // What a builtin's params make it call (its grants cover it: `check` says so).
        for need in crate::config::builtin_kube_needs(trigger) {
            let why = format!(
                "trigger {} {} params",
                trigger.name, trigger.action.module.name
            );
            rbac.add_grant(&need, why);
        }
    }
    if let Some((namespace, name)) = &config.engine.secrets.kubernetes {
        rbac.add(
            Scope::Namespace(namespace.clone()),
            "v1",
            "Secret",
            std::slice::from_ref(name),
            &["get"],
            "engine.secrets.kubernetes".into(),
        );
    }
    if let Some(objects) = &options.trigger_objects {
        let scope = match objects.as_str() {
            "*" | "all" => Scope::Cluster,
            "" => Scope::Namespace(options.namespace.clone()),
            ns => Scope::Namespace(ns.to_string()),
        };
        let (api, why) = ("wasmtrigger.dev/v1alpha1", "Trigger objects".to_string());
        rbac.add(
            scope.clone(),
            api,
            "Trigger",
            &[],
            &["list", "watch"],
            why.clone(),
        );
        // The status subresource is a resource of its own to RBAC.
        let group = group_of(api);
        let needs = rbac
            .scopes
            .entry(scope)
            .or_default()
            .entry(Resource {
                group,
                resource: "triggers/status".into(),
                names: Vec::new(),
            })
            .or_default();
        needs.verbs.insert("patch");
        needs.why.insert(why);
        // Objects get no more than the file's policy allows, so the policy
        // (not the objects, which the command cannot see) sizes their rules.
        let policy = &config.engine.trigger_objects;
        let why = "Trigger objects, as engine.triggerObjects allows".to_string();
        for grant in &policy.grants.kube {
            rbac.add_grant(grant, why.clone());
        }
        if policy.sources.iter().any(|s| s == "kube-watch") {
            for w in &policy.watch {
                rbac.add_watch(&w.api_version, &w.kind, &w.namespaces, why.clone());
            }
        }
    }
    if let Some(lease) = &options.leader_lease {
        let scope = Scope::Namespace(options.namespace.clone());
        let why = "leader election".to_string();
        let names = std::slice::from_ref(lease);
        let api = "coordination.k8s.io/v1";
        rbac.add(
            scope,
            api,
            "Lease",
            names,
            &["get", "update", "create"],
            why,
        );
    }
    rbac
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn plurals_follow_the_api_servers_rule() {
        assert_eq!(plural("Deployment"), ("deployments".into(), false));
        assert_eq!(plural("NetworkPolicy"), ("networkpolicies".into(), false));
        assert_eq!(plural("Endpoints"), ("endpoints".into(), false));
        assert_eq!(plural("Ingress"), ("ingresses".into(), false));
        assert_eq!(plural("Gateway"), ("gateways".into(), true));
        assert_eq!(plural("Policy"), ("policies".into(), true));
        assert_eq!(plural("Box"), ("boxes".into(), true));
    }
}
