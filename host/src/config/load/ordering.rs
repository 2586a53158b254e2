//! `ordering:` of a trigger: `none`, or `{ key: EXPRESSION }`.

use std::path::Path;

use super::super::schema::{OrderingKeySpec, OrderingSpec};
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
}
