//! What a builtin action calls in Kubernetes, read from its params, and
//! the check that the trigger's grants allow it: a trigger using
//! `builtin:bump-revision` with `kind: Application` is told at `check` time
//! which `grants.kube` line it lacks, instead of failing at its first run.
//! (`wasmtrigger rbac` derives its rules from the grants, so it then covers
//! what the params need.)

use serde_json::Value;

use crate::config::grants::{KubeGrant, KubeVerb};
use crate::config::{SourceConfig, TriggerConfig};

/// One kind of call: verbs on a kind, in a namespace (None: cluster-scoped),
/// on an object name if the params fix one.
struct Need {
    verbs: Vec<KubeVerb>,
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: Option<String>,
}

/// The calls `builtin` makes with `params` for events of `source`.
fn needs(builtin: &str, params: &Value, source: &SourceConfig) -> Vec<Need> {
    // The namespaces events come from: a kube-watch's (`*` for all), else unknown.
    let watched: Vec<String> = match source {
        SourceConfig::KubeWatch(w) if w.namespaces.is_empty() => vec!["*".into()],
        SourceConfig::KubeWatch(w) => w.namespaces.clone(),
        _ => Vec::new(),
    };
    let text = |v: &Value, default: &str| v.as_str().unwrap_or(default).to_string();
    let in_namespaces = |fixed: &Value, fallback: Vec<String>| -> Vec<Option<String>> {
        match fixed.as_str() {
            Some(ns) => vec![Some(ns.to_string())],
            None => fallback.into_iter().map(Some).collect(),
        }
    };
    let need = |verbs: &[KubeVerb], api: String, kind: String, ns: Option<String>, name| Need {
        verbs: verbs.to_vec(),
        api_version: api,
        kind,
        namespace: ns,
        name,
    };
    match builtin {
        "bump-revision" => in_namespaces(&params["namespace"], watched)
            .into_iter()
            .map(|ns| {
                need(
                    &[KubeVerb::List, KubeVerb::Patch],
                    text(&params["apiVersion"], "apps/v1"),
                    text(&params["kind"], "Deployment"),
                    ns,
                    None,
                )
            })
            .collect(),
        "record-event" => watched
            .into_iter()
            .map(|ns| {
                need(
                    &[KubeVerb::Create],
                    "v1".into(),
                    "Event".into(),
                    Some(ns),
                    None,
                )
            })
            .collect(),
        "create-job" => {
            let fallback = if watched.is_empty() {
                vec!["default".into()]
            } else {
                watched
            };
            in_namespaces(&params["namespace"], fallback)
                .into_iter()
                .map(|ns| {
                    need(
                        &[KubeVerb::Create, KubeVerb::Get],
                        "batch/v1".into(),
                        "Job".into(),
                        ns,
                        None,
                    )
                })
                .collect()
        }
        "patch-resource" => {
            let target = &params["target"];
            let (Some(api), Some(kind)) = (target["apiVersion"].as_str(), target["kind"].as_str())
            else {
                return Vec::new();
            };
            let namespaces = match target.get("namespace") {
                Some(Value::Null) => vec![None],
                Some(ns) => in_namespaces(ns, Vec::new()),
                None => in_namespaces(&Value::Null, watched),
            };
            let name = target["name"].as_str().map(String::from);
            namespaces
                .into_iter()
                .map(|ns| {
                    need(
                        &[KubeVerb::Patch],
                        api.into(),
                        kind.into(),
                        ns,
                        name.clone(),
                    )
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

/// The Kubernetes calls a builtin action's params make, as grants (so
/// `wasmtrigger rbac` can say which rules a builtin's params need).
pub fn builtin_kube_needs(trigger: &TriggerConfig) -> Vec<KubeGrant> {
    let Some(builtin) = crate::builtins::named(&trigger.action.module.name) else {
        return Vec::new();
    };
    let params: Value = serde_json::from_str(&trigger.action.params).unwrap_or(Value::Null);
    needs(builtin.name, &params, &trigger.source)
        .into_iter()
        .map(|need| KubeGrant {
            verbs: need.verbs,
            api_version: need.api_version,
            kind: need.kind,
            namespaces: need.namespace.into_iter().collect(),
            names: need.name.into_iter().collect(),
        })
        .collect()
}

/// The grants a builtin action's params need and the trigger lacks, as
/// (field, message) naming the line to add.
pub(super) fn missing_grants(trigger: &TriggerConfig) -> Vec<(String, String)> {
    let Some(builtin) = crate::builtins::named(&trigger.action.module.name) else {
        return Vec::new();
    };
    let params: Value = serde_json::from_str(&trigger.action.params).unwrap_or(Value::Null);
    let granted: &[KubeGrant] = &trigger.action.grants.kube;
    let mut problems = Vec::new();
    for need in needs(builtin.name, &params, &trigger.source) {
        let namespace = need.namespace.as_deref();
        let lacking: Vec<&str> = need
            .verbs
            .iter()
            .filter(|verb| {
                // `*` (every namespace) is allowed only by a grant for `*`.
                !granted.iter().any(|g| {
                    g.allows(
                        **verb,
                        &need.api_version,
                        &need.kind,
                        namespace,
                        need.name.as_deref(),
                    )
                })
            })
            .map(|v| v.name())
            .collect();
        if lacking.is_empty() {
            continue;
        }
        let scope = match namespace {
            Some(ns) => format!("namespaces: [{}]", if ns == "*" { "'*'" } else { ns }),
            None => "namespaces: []".into(),
        };
        let names = need
            .name
            .as_ref()
            .map(|n| format!(", names: [{n}]"))
            .unwrap_or_default();
        problems.push((
            "action.grants.kube".to_string(),
            format!(
                "builtin:{} with these params calls {} on {} {} {}, which the grants do not allow; add {{ verbs: [{}], apiVersion: {}, kind: {}, {scope}{names} }}",
                builtin.name,
                lacking.join(", "),
                need.api_version,
                need.kind,
                match namespace {
                    Some("*") => "in every namespace".to_string(),
                    Some(ns) => format!("in namespace {ns}"),
                    None => "(cluster-scoped)".to_string(),
                },
                lacking.join(", "),
                need.api_version,
                need.kind,
            ),
        ));
    }
    problems
}
