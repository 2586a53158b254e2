//! The trigger-wide settings beside source, filter and action: `ordering:`
//! (`none`, or `{ key: EXPRESSION }`) and `shadow:` (`{ module, sample }`).

use std::path::Path;

use super::super::schema::{OrderingKeySpec, OrderingSpec, ShadowSpec};
use super::super::*;
use super::Loader;

impl Loader<'_> {
    /// `ordering:`, defaulting to the object's uid for kube-watch and to none elsewhere.
    pub(super) fn ordering(
        &mut self,
        file: &Path,
        label: &str,
        spec: Option<OrderingSpec>,
        source: &SourceConfig,
    ) -> Option<OrderingConfig> {
        match spec {
            None if matches!(source, SourceConfig::KubeWatch(_)) => {
                Some(OrderingConfig::Key(OrderingKey::ObjectUid))
            }
            None => Some(OrderingConfig::None),
            Some(OrderingSpec::Word(word)) if word == "none" => Some(OrderingConfig::None),
            Some(OrderingSpec::Word(word)) => {
                let message = format!(
                    "unknown ordering `{word}`: expected `none` or `{{ key: CEL-EXPRESSION }}`"
                );
                self.error(file, Some(label), Some("ordering"), message);
                None
            }
            Some(OrderingSpec::Key(OrderingKeySpec { key })) => {
                match OrderingKey::from_expression(&key) {
                    Ok(key) => Some(OrderingConfig::Key(key)),
                    Err(message) => {
                        self.error(file, Some(label), Some("ordering.key"), message);
                        None
                    }
                }
            }
        }
    }

    /// `shadow:`: the candidate runs with the action's limits on a share of the events.
    pub(super) fn shadow(
        &mut self,
        file: &Path,
        label: &str,
        spec: ShadowSpec,
        action: &ModuleUse,
    ) -> Option<ShadowConfig> {
        let sample = spec.sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample) {
            let message =
                format!("{sample} is out of range: expected 0.0 to 1.0 (the share of events)");
            self.error(file, Some(label), Some("shadow.sample"), message);
            return None;
        }
        let module = self.module_use(file, label, "shadow", &spec.module, None, None)?;
        Some(ShadowConfig {
            module: ModuleUse {
                limits: action.limits,
                ..module
            },
            sample,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    const TRIGGER: &str = "triggers:\n  - name: t\n    source: { type: schedule, every: 1h }\n    action: { module: a.wasm, timeout: 5s }\n";

    #[test]
    fn shadow_takes_a_module_and_a_share_of_events() {
        let config = loaded(&format!(
            "{TRIGGER}    shadow: {{ module: b.wasm, sample: 0.25 }}\n"
        ));
        let shadow = config.triggers[0].shadow.as_ref().unwrap();
        assert_eq!(
            (shadow.module.name.as_str(), shadow.sample),
            ("b.wasm", 0.25)
        );
        assert_eq!(
            shadow.module.limits.timeout.as_secs(),
            5,
            "the action's limits"
        );
        assert_eq!(
            config.triggers[0].module_names(),
            vec!["a.wasm".to_string(), "b.wasm".to_string()]
        );
        assert_problem(
            &format!("{TRIGGER}    shadow: {{ module: b.wasm, sample: 1.5 }}\n"),
            "shadow.sample",
            "expected 0.0 to 1.0",
        );
        assert_problem(
            &format!("{TRIGGER}    shadow: {{ module: '../b.wasm' }}\n"),
            "shadow.module",
            "",
        );
        assert_problem(
            &format!("{TRIGGER}    shadow: {{ module: b.wasm, every: 2 }}\n"),
            "shadow.every",
            "unknown field",
        );
    }
}
