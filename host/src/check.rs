//! `wasmtrigger check`: validate a config and compile every module it uses.

use std::path::Path;
use std::sync::Arc;

use crate::capabilities::secrets::SecretStore;
use crate::config::{
    Config, ConfigError, EngineOverrides, SourceConfig, TriggerConfig, WebhookAuth, load_partial,
};
use crate::runtime::{LoadedModule, Runtime, RuntimeError, RuntimeSettings, load_for_config};

/// Everything `check` found.
pub struct CheckReport {
    /// The valid part of the config, if the files could be read.
    pub config: Option<Config>,
    /// Modules that compiled.
    pub modules: Vec<Arc<LoadedModule>>,
    /// Every problem, located.
    pub problems: Vec<ConfigError>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Validates the config and compiles the modules of its valid triggers.
pub async fn check(
    path: &Path,
    modules_dir: Option<&Path>,
    overrides: &EngineOverrides,
) -> Result<CheckReport, RuntimeError> {
    let (config, mut problems) = load_partial(path, modules_dir, overrides);
    let mut modules = Vec::new();
    if let Some(config) = &config {
        let runtime = Arc::new(Runtime::new(&RuntimeSettings::default())?);
        let (loaded, module_problems) = load_for_config(&runtime, config).await;
        modules = loaded;
        problems.extend(module_problems);
        // Offline, only the directory and environment providers can answer,
        // and a mounted Secret is often not mounted where `check` runs: a key
        // found is checked here, a missing one when the engine starts.
        let store = SecretStore::from_settings(&config.engine.secrets);
        problems.extend(webhook_key_problems(&config.triggers, &store, true).await);
    }
    Ok(CheckReport {
        config,
        modules,
        problems,
    })
}

/// Problems with the keys webhook triggers authenticate callers with: a key
/// that no provider has, or one that is empty or too short, would leave the
/// hook refusing everyone (or, for an empty HMAC key, accepting forgeries).
/// With `missing_ok`, a key no provider has is not a problem (a provider that
/// cannot be asked here may have it).
pub async fn webhook_key_problems(
    triggers: &[TriggerConfig],
    store: &SecretStore,
    missing_ok: bool,
) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    for t in triggers {
        let SourceConfig::Webhook(hook) = &t.source else {
            continue;
        };
        let (WebhookAuth::Bearer { secret } | WebhookAuth::Hmac { secret, .. }) = &hook.auth else {
            continue;
        };
        let message = match store.get(secret).await {
            Ok(Some(value)) if value.trim().is_empty() => Some(format!(
                "secret `{secret}` is empty or only whitespace; a webhook key must be a long random value"
            )),
            Ok(Some(_)) => None,
            Ok(None) if missing_ok => None,
            Ok(None) => Some(format!(
                "secret `{secret}` was not found in any secret provider (engine.secrets)"
            )),
            Err(e) => Some(e),
        };
        if let Some(message) = message {
            problems.push(ConfigError {
                file: t.file.clone(),
                trigger: Some(t.name.clone()),
                field: Some("source.auth.secret".into()),
                message,
            });
        }
    }
    problems
}

/// Reads every secret the triggers name, so that their values are redacted
/// from the first line the engine writes (see [`crate::redact`]).
pub async fn preload_secrets(triggers: &[TriggerConfig], store: &SecretStore) {
    let names: std::collections::BTreeSet<String> = triggers
        .iter()
        .flat_map(|t| t.secret_refs().into_iter().map(|(_, name)| name))
        .collect();
    store.preload(names.iter().map(String::as_str)).await;
}
