//! `secrets`: named values from the host's providers, readable only when granted.
//!
//! Providers are tried in order: a directory with one file per secret (the
//! layout of a mounted Kubernetes Secret, `..data` symlinks included), then
//! environment variables with a prefix. A Kubernetes API provider plugs in
//! through [`SecretProvider`].

use std::path::PathBuf;
use std::sync::Arc;

use super::Capability;
use crate::config::SecretsSettings;
use crate::config::grants::check_secret_name;
use crate::redact;
use crate::runtime::HostState;
use crate::runtime::bindings::WitError;
use crate::runtime::bindings::wasmtrigger::plugin::secrets::Host;

/// A source of secret values.
#[async_trait::async_trait]
pub trait SecretProvider: Send + Sync {
    /// Short description for logs (never a value).
    fn describe(&self) -> String;
    /// The value of `name`, or None if this provider does not have it.
    async fn get(&self, name: &str) -> Result<Option<String>, String>;
}

/// One file per secret in a directory.
pub struct DirProvider {
    dir: PathBuf,
}

#[async_trait::async_trait]
impl SecretProvider for DirProvider {
    fn describe(&self) -> String {
        format!("directory {}", self.dir.display())
    }

    async fn get(&self, name: &str) -> Result<Option<String>, String> {
        // Names are checked first (no `/`, no leading `.`), so this stays inside the directory.
        let path = self.dir.join(name);
        match tokio::fs::read(&path).await {
            Ok(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
                format!(
                    "secret `{name}` in {} is not UTF-8 text",
                    self.dir.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!(
                "cannot read secret `{name}` from {}: {}",
                self.dir.display(),
                e.kind()
            )),
        }
    }
}

/// Environment variables `PREFIX` + upper-cased name, with `-` and `.` as `_`.
pub struct EnvProvider {
    prefix: String,
}

impl EnvProvider {
    fn variable(&self, name: &str) -> String {
        let key: String = name
            .chars()
            .map(|c| {
                if c == '-' || c == '.' {
                    '_'
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect();
        format!("{}{key}", self.prefix)
    }
}

#[async_trait::async_trait]
impl SecretProvider for EnvProvider {
    fn describe(&self) -> String {
        format!("environment variables {}*", self.prefix)
    }

    async fn get(&self, name: &str) -> Result<Option<String>, String> {
        Ok(std::env::var(self.variable(name)).ok())
    }
}

/// The configured providers, in lookup order.
#[derive(Clone, Default)]
pub struct SecretStore {
    providers: Vec<Arc<dyn SecretProvider>>,
}

impl SecretStore {
    /// Builds the providers from settings.
    pub fn from_settings(settings: &SecretsSettings) -> Self {
        let mut providers: Vec<Arc<dyn SecretProvider>> = Vec::new();
        if let Some(dir) = &settings.dir {
            providers.push(Arc::new(DirProvider { dir: dir.clone() }));
        }
        if let Some(prefix) = &settings.env_prefix {
            providers.push(Arc::new(EnvProvider {
                prefix: prefix.clone(),
            }));
        }
        SecretStore { providers }
    }

    /// Adds a provider after the configured ones.
    pub fn with_provider(mut self, provider: Arc<dyn SecretProvider>) -> Self {
        self.providers.push(provider);
        self
    }

    /// Looks `name` up in each provider in turn. A value found is registered
    /// for redaction everywhere from now on; one too short to hide is an error.
    pub async fn get(&self, name: &str) -> Result<Option<String>, String> {
        check_secret_name(name)?;
        for provider in &self.providers {
            if let Some(value) = provider.get(name).await? {
                redact::check_length(name, &value)?;
                redact::register(&value);
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// Reads each named secret once so that its value is redacted from the
    /// start, even in output of runs that never read it (a value stashed in
    /// kv by an earlier process). Problems are left for the real reads to report.
    pub async fn preload<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            if let Err(e) = self.get(name).await {
                tracing::debug!(secret = name, error = %e, "secret not preloaded");
            }
        }
    }
}

/// Merges a trigger's `imports:` (param name -> secret name) into its params
/// (a JSON object); each value is registered for redaction as it is read.
pub async fn merge_imports(
    store: &SecretStore,
    params: &str,
    imports: &[(String, String)],
) -> Result<String, String> {
    if imports.is_empty() {
        return Ok(params.to_string());
    }
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(params)
        .map_err(|_| "params must be a JSON object to take imports".to_string())?;
    for (param, name) in imports {
        match store.get(name).await? {
            Some(value) => {
                object.insert(param.clone(), serde_json::Value::String(value));
            }
            None => {
                return Err(format!(
                    "secret `{name}` (imports.{param}) was not found in any secret provider"
                ));
            }
        }
    }
    Ok(serde_json::Value::Object(object).to_string())
}

impl Host for HostState {
    async fn get(&mut self, name: String) -> Result<String, WitError> {
        let caps = &self.caps;
        caps.count(Capability::Secrets);
        if let Err(why) = check_secret_name(&name) {
            return Err(WitError::Invalid(why));
        }
        let granted = caps
            .access
            .as_ref()
            .is_some_and(|a| a.grants.secrets.contains(&name));
        if !granted {
            return Err(caps.deny(
                Capability::Secrets,
                &format!("get {name}"),
                "secret not granted to this trigger",
            ));
        }
        let store = caps.services.secrets.clone();
        match store.get(&name).await {
            Ok(Some(value)) => Ok(value),
            Ok(None) => Err(WitError::NotFound),
            Err(why) => Err(WitError::Failed(why)),
        }
    }
}
