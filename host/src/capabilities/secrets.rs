//! `secrets`: named values from the host's providers, readable only when granted.
//!
//! Providers are tried in order: a directory with one file per secret (the
//! layout of a mounted Kubernetes Secret, `..data` symlinks included), then
//! environment variables with a prefix, then the keys of a Kubernetes Secret
//! read through the API ([`KubeSecretProvider`]). Every value read joins the
//! process-wide redaction set; the webhook keys a config names are checked
//! here too ([`webhook_key_problems`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::Capabilities;
use super::Capability;
use super::bindings::WitError;
use super::bindings::wasmtrigger::plugin::secrets::Host;
use crate::config::grants::check_secret_name;
use crate::config::{ConfigError, SecretsSettings, SourceConfig, TriggerConfig, WebhookAuth};
use crate::redact;

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

/// Secrets from the keys of one Kubernetes Secret, read through the API and
/// kept for [`SECRET_CACHE_TTL`], so a rotated Secret is picked up within
/// seconds without a restart, while a flood of unauthenticated webhook
/// requests costs at most one API call per interval (reads are single-flight).
pub struct KubeSecretProvider {
    connector: Arc<crate::kube::KubeConnector>,
    namespace: String,
    name: String,
    /// When the Secret was last read, and what that read gave.
    cache: tokio::sync::Mutex<Option<(std::time::Instant, SecretRead)>>,
}

/// How long a read of the Secret (or its failure) is reused.
pub const SECRET_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// The data of the Secret, or why it could not be read.
type SecretRead = Result<std::collections::BTreeMap<String, k8s_openapi::ByteString>, String>;

impl KubeSecretProvider {
    /// A provider for the keys of Secret `namespace/name`.
    pub fn new(
        connector: Arc<crate::kube::KubeConnector>,
        namespace: String,
        name: String,
    ) -> Self {
        KubeSecretProvider {
            connector,
            namespace,
            name,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    async fn read(&self) -> SecretRead {
        let client = self.connector.client().await.map_err(|e| e.0)?;
        let api: kube::api::Api<k8s_openapi::api::core::v1::Secret> =
            kube::api::Api::namespaced(client, &self.namespace);
        let secret = api.get_opt(&self.name).await.map_err(|e| {
            format!(
                "cannot read {}: {}",
                self.describe_secret(),
                crate::kube::client::status_reason(&e)
            )
        })?;
        let Some(secret) = secret else {
            return Err(format!("{} does not exist", self.describe_secret()));
        };
        Ok(secret.data.unwrap_or_default())
    }

    fn describe_secret(&self) -> String {
        format!("Kubernetes Secret {}/{}", self.namespace, self.name)
    }
}

#[async_trait::async_trait]
impl SecretProvider for KubeSecretProvider {
    fn describe(&self) -> String {
        self.describe_secret()
    }

    async fn get(&self, key: &str) -> Result<Option<String>, String> {
        let data = {
            let mut cache = self.cache.lock().await;
            match cache.as_ref() {
                Some((at, read)) if at.elapsed() < SECRET_CACHE_TTL => read.clone(),
                _ => {
                    let read = self.read().await;
                    *cache = Some((std::time::Instant::now(), read.clone()));
                    read
                }
            }
        }?;
        match data.get(key) {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes.0.clone())
                .map(Some)
                .map_err(|_| format!("key `{key}` of {} is not UTF-8 text", self.describe())),
        }
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

    /// The URL of a broker: as written, or read from its secret (never
    /// logged: it may hold credentials).
    pub async fn endpoint_url(&self, endpoint: &crate::config::Endpoint) -> Result<String, String> {
        match endpoint {
            crate::config::Endpoint::Url(url) => Ok(url.clone()),
            crate::config::Endpoint::Secret(name) => match self.get(name).await {
                Ok(Some(url)) => Ok(url.trim().to_string()),
                Ok(None) => Err(format!("secret `{name}` not found")),
                Err(e) => Err(e),
            },
        }
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

/// What a recording keeps as the answer to `secrets.get`.
pub const SECRET_NOT_RECORDED: &str = "(value given; not recorded)";

impl Host for Capabilities {
    async fn get(&mut self, name: String) -> Result<String, WitError> {
        // The value is never recorded, only that it was given: a replay gets
        // a stand-in, a fixture the test value it gives.
        let stand_in = format!("[secret {name}]");
        self.traced(
            ("secrets", "get"),
            format!("{name:?}"),
            |answer| match answer {
                serde_json::Value::String(given) if given != SECRET_NOT_RECORDED => Some(given),
                _ => Some(stand_in),
            },
            |_| serde_json::json!(SECRET_NOT_RECORDED),
            async |c: &mut Self| c.secret_checked(&name).await,
        )
        .await
    }
}

impl Capabilities {
    /// `get`, every check included.
    async fn secret_checked(&self, name: &str) -> Result<String, WitError> {
        let name = name.to_string();
        let caps = self;
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

/// The user and password of a URL, percent-decoded (empty parts are None).
pub fn url_userinfo(url: &url::Url) -> (Option<String>, Option<String>) {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let user = (!url.username().is_empty()).then(|| decode(url.username()));
    (user, url.password().map(decode))
}
