//! `type: kube-watch` sources: a kind, where, which changes.

use std::path::Path;

use super::super::schema::{KubeEventSpec, KubeWatchSpec};
use super::super::*;
use super::{Loader, valid_api_version};

impl Loader<'_> {
    pub(super) fn kube_watch(
        &mut self,
        file: &Path,
        label: &str,
        spec: KubeWatchSpec,
    ) -> Option<KubeWatchConfig> {
        let before = self.errors.len();
        if !valid_api_version(&spec.api_version) {
            let message = format!(
                "invalid apiVersion `{}`: expected `v1` or `group/version`, like apps/v1",
                spec.api_version
            );
            self.error(file, Some(label), Some("source.apiVersion"), message);
        }
        if spec.kind.is_empty() || !spec.kind.starts_with(|c: char| c.is_ascii_uppercase()) {
            let message = format!(
                "invalid kind `{}`: expected a kind like Deployment",
                spec.kind
            );
            self.error(file, Some(label), Some("source.kind"), message);
        }
        let namespaces = match (spec.namespace, spec.namespaces) {
            (Some(_), Some(_)) => {
                let message = "give `namespace` or `namespaces`, not both".to_string();
                self.error(file, Some(label), Some("source.namespaces"), message);
                Vec::new()
            }
            (Some(ns), None) if ns == "*" => Vec::new(),
            (Some(ns), None) => vec![ns],
            (None, Some(list)) => list,
            (None, None) => Vec::new(),
        };
        for ns in &namespaces {
            if let Err(message) = crate::config::grants::check_namespace(ns) {
                self.error(file, Some(label), Some("source.namespaces"), message);
            }
        }
        if let Some(selector) = spec.label_selector.as_deref().filter(|s| !s.is_empty())
            && let Err(message) = crate::config::grants::check_label_selector(selector)
        {
            self.error(file, Some(label), Some("source.labelSelector"), message);
        }
        let events = match spec.events {
            None => vec![KubeEvent::Create, KubeEvent::Update, KubeEvent::Delete],
            Some(list) if list.is_empty() => {
                self.error(
                    file,
                    Some(label),
                    Some("source.events"),
                    "expected at least one of create, update, delete".into(),
                );
                Vec::new()
            }
            Some(list) => {
                let mut events: Vec<KubeEvent> = list
                    .into_iter()
                    .map(|e| match e {
                        KubeEventSpec::Create => KubeEvent::Create,
                        KubeEventSpec::Update => KubeEvent::Update,
                        KubeEventSpec::Delete => KubeEvent::Delete,
                    })
                    .collect();
                events.dedup();
                events
            }
        };
        if self.errors.len() > before {
            return None;
        }
        Some(KubeWatchConfig {
            api_version: spec.api_version,
            kind: spec.kind,
            namespaces,
            label_selector: spec.label_selector.filter(|s| !s.is_empty()),
            field_selector: spec.field_selector.filter(|s| !s.is_empty()),
            events,
            initial: spec.initial.unwrap_or(false),
            skip_noise: spec.skip_noise.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn kinds_namespaces_and_selectors_are_checked() {
        assert_problem(
            &with_source("{ type: kube-watch, apiVersion: apps, kind: Deployment }"),
            "source.apiVersion",
            "invalid apiVersion",
        );
        assert_problem(
            &with_source("{ type: kube-watch, apiVersion: v1, kind: pod }"),
            "source.kind",
            "invalid kind",
        );
        assert_problem(
            &with_source("{ type: kube-watch, apiVersion: v1, kind: Pod, namespace: 'a/../b' }"),
            "source.namespaces",
            "invalid namespace",
        );
        assert_problem(
            &with_source(
                "{ type: kube-watch, apiVersion: v1, kind: Pod, labelSelector: 'a in (b' }",
            ),
            "source.labelSelector",
            "invalid label selector",
        );
        assert_problem(
            &with_source("{ type: kube-watch, apiVersion: v1, kind: Pod, events: [] }"),
            "source.events",
            "at least one",
        );
        loaded(&with_source(
            "{ type: kube-watch, apiVersion: apps/v1, kind: Deployment, namespaces: [a, b], labelSelector: 'app=web,tier in (x,y)' }",
        ));
    }
}
