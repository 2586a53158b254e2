//! What Trigger objects may use: `engine.triggerObjects` in the file config.
//!
//! Files are written by whoever runs the engine; Trigger objects by anyone
//! who may create them in a watched namespace, which is usually a wider
//! group. So an object gets nothing the operator did not list: by default
//! it may use schedules, webhooks and chains, and no `http`, `secrets` or
//! `kube` grants, no secret references (`imports`, webhook keys, Redis URL
//! secrets) and no `kube-watch`. The policy widens that:
//!
//! ```yaml
//! engine:
//!   triggerObjects:
//!     sources: [schedule, webhook, trigger, kube-watch]
//!     grants:                      # an object's grants must fall inside these
//!       http: ["*.example.com"]
//!       secrets: [slack-token]
//!       kube:
//!         - {verbs: [get, patch], apiVersion: apps/v1, kind: Deployment, namespaces: [team-a]}
//!     watch:                       # kinds an object's kube-watch may watch
//!       - {apiVersion: v1, kind: ConfigMap, namespaces: [team-a]}
//! ```

use super::{ConfigError, KubeWatchConfig, SourceConfig, TriggerConfig};
use crate::config::grants::Grants;

/// Source types an object may use unless the policy says otherwise.
pub const DEFAULT_SOURCES: &[&str] = &["schedule", "webhook", "trigger"];

/// One kind Trigger objects may watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchAllowance {
    /// `v1`, `apps/v1`, ...
    pub api_version: String,
    /// `ConfigMap`, ...
    pub kind: String,
    /// Namespaces; `*` allows all (and cluster-scoped kinds); empty allows only cluster-scoped.
    pub namespaces: Vec<String>,
}

/// The most a Trigger object may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectPolicy {
    /// Source types allowed.
    pub sources: Vec<String>,
    /// Grants an object's grants must fall inside; secret references
    /// anywhere in the object must be among `grants.secrets`.
    pub grants: Grants,
    /// Kinds a kube-watch source may watch.
    pub watch: Vec<WatchAllowance>,
}

impl Default for ObjectPolicy {
    fn default() -> Self {
        ObjectPolicy {
            sources: DEFAULT_SOURCES.iter().map(|s| s.to_string()).collect(),
            grants: Grants::default(),
            watch: Vec::new(),
        }
    }
}

const RULE: &str = "engine.triggerObjects";

impl ObjectPolicy {
    /// Everything in `t` (a trigger from a Trigger object) the policy does not
    /// allow, each naming the rule that refuses it.
    pub fn violations(&self, t: &TriggerConfig) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        let mut refuse = |field: &str, message: String| {
            problems.push(ConfigError {
                file: t.file.clone(),
                trigger: Some(t.name.clone()),
                field: Some(field.to_string()),
                message,
            })
        };
        let source = t.source.type_name();
        if !self.sources.iter().any(|s| s == source) {
            refuse(
                "source.type",
                format!(
                    "Trigger objects may not use `{source}` sources: {RULE}.sources allows {}",
                    list(&self.sources)
                ),
            );
        }
        if let SourceConfig::KubeWatch(watch) = &t.source
            && !self.watch.iter().any(|w| watch_within(watch, w))
        {
            refuse(
                "source",
                format!(
                    "Trigger objects may not watch {} {}{}: not allowed by {RULE}.watch",
                    watch.api_version,
                    watch.kind,
                    namespaces_text(&watch.namespaces)
                ),
            );
        }
        for (i, g) in t.action.grants.http.iter().enumerate() {
            if !self.grants.http.iter().any(|p| g.within(p)) {
                refuse(
                    &format!("action.grants.http[{i}]"),
                    format!("HTTP grant `{g}` is not allowed by {RULE}.grants.http"),
                );
            }
        }
        for (i, g) in t.action.grants.kube.iter().enumerate() {
            if !self.grants.kube.iter().any(|p| g.within(p)) {
                refuse(
                    &format!("action.grants.kube[{i}]"),
                    format!(
                        "kube grant ({} on {} {}{}) is not allowed by {RULE}.grants.kube",
                        g.verbs
                            .iter()
                            .map(|v| v.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                        g.api_version,
                        g.kind,
                        namespaces_text(&g.namespaces)
                    ),
                );
            }
        }
        for (field, name) in t.secret_refs() {
            if !self.grants.secrets.iter().any(|s| s == "*" || *s == name) {
                refuse(
                    &field,
                    format!("secret `{name}` is not allowed by {RULE}.grants.secrets"),
                );
            }
        }
        problems
    }
}

fn watch_within(watch: &KubeWatchConfig, allowed: &WatchAllowance) -> bool {
    let ns_ok = if allowed.namespaces.iter().any(|n| n == "*") {
        true
    } else {
        !watch.namespaces.is_empty()
            && watch
                .namespaces
                .iter()
                .all(|n| allowed.namespaces.contains(n))
    };
    watch.api_version == allowed.api_version && watch.kind == allowed.kind && ns_ok
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

fn namespaces_text(namespaces: &[String]) -> String {
    if namespaces.is_empty() {
        String::new()
    } else {
        format!(" in {}", namespaces.join(", "))
    }
}
