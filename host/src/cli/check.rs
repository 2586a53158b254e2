//! `wasmtrigger check`: validate a config and compile every module it uses.

use std::path::Path;
use std::sync::Arc;

use wasmtrigger::capabilities::secrets::{SecretStore, webhook_key_problems};
use wasmtrigger::config::{
    Config, ConfigError, EngineOverrides, load_partial, warnings as config_warnings,
};
use wasmtrigger::runtime::{LoadedModule, Runtime, RuntimeError, RuntimeSettings, load_for_config};

/// Everything `check` found.
pub struct CheckReport {
    /// The valid part of the config, if the files could be read.
    pub config: Option<Config>,
    /// Modules that compiled.
    pub modules: Vec<Arc<LoadedModule>>,
    /// Every problem, located.
    pub problems: Vec<ConfigError>,
    /// Legal but almost certainly unintended: schedules that cannot fire.
    pub warnings: Vec<ConfigError>,
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
    let mut warnings = Vec::new();
    if let Some(config) = &config {
        warnings = config_warnings(&config.triggers, chrono::Utc::now());
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
        warnings,
    })
}
