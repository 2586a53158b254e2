//! The connection to Kubernetes and the shared watches behind `kube-watch`
//! sources.
//!
//! The client is made on first use: from `--kubeconfig` if given, else
//! in-cluster (service account) or `KUBECONFIG` / `~/.kube/config`, as
//! kubectl does. Triggers watching the same kind with the same namespaces
//! and selectors share one watch; each turns the shared changes into its own
//! events (its own event types, its own noise filter).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::Scope;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event as WatchEvent};
use serde_json::Value;
use tokio::sync::{OnceCell, broadcast};

use crate::config::{KubeEvent, KubeWatchConfig};

/// How a Kubernetes client is found.
pub struct KubeConnector {
    connection: KubeConnection,
    client: OnceCell<kube::Client>,
    hub: Mutex<HashMap<WatchKey, broadcast::Sender<Arc<ObjectChange>>>>,
    resolved: Mutex<HashMap<(String, String), (ApiResource, bool)>>,
    caches: Mutex<HashMap<WatchKey, Arc<Mutex<Cache>>>>,
}

/// What makes two watches the same watch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct WatchKey {
    api_version: String,
    kind: String,
    namespaces: Vec<String>,
    label_selector: Option<String>,
    field_selector: Option<String>,
}

/// One change to one object, as the shared watch saw it.
#[derive(Debug)]
pub struct ObjectChange {
    /// What happened.
    pub kind: KubeEvent,
    /// The object now (as it was, for a delete).
    pub object: Value,
    /// The object before, for an update (and a delete seen on a relist).
    pub old: Option<Value>,
    /// Part of the first list: only triggers with `initial: true` want it.
    pub initial: bool,
}

/// Objects by (namespace, name), per watch.
#[derive(Default)]
struct Cache {
    objects: HashMap<ObjectKey, Stored>,
    /// Every namespace scope of the watch has been listed once.
    listed: bool,
}

/// (namespace, name); the namespace is empty for a cluster-scoped object.
type ObjectKey = (String, String);

/// An object as the cache keeps it: its JSON text, parsed again only when
/// a change needs it (a parsed tree costs many times its text, and a
/// watch may hold tens of thousands of objects), and its resourceVersion.
#[derive(Clone)]
struct Stored {
    version: String,
    text: Arc<str>,
}

impl Stored {
    fn of(object: &DynamicObject) -> Self {
        Stored {
            version: object.metadata.resource_version.clone().unwrap_or_default(),
            text: serde_json::to_string(object).unwrap_or_default().into(),
        }
    }

    fn value(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// One object of a watch's cache as it is kept: identity, resourceVersion
/// and JSON text, shared with the cache rather than copied.
#[derive(Clone, Debug)]
pub struct CachedObject {
    /// (namespace, name); the namespace is empty for a cluster-scoped object.
    pub key: (String, String),
    /// Its resourceVersion.
    pub version: String,
    text: Arc<str>,
}

impl CachedObject {
    /// The object parsed.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// An object to cache (tests build the cache's view with it).
    pub fn of_value(object: &Value) -> Self {
        let meta = &object["metadata"];
        let part = |k: &str| meta[k].as_str().unwrap_or_default().to_string();
        CachedObject {
            key: (part("namespace"), part("name")),
            version: part("resourceVersion"),
            text: object.to_string().into(),
        }
    }
}

/// A kube error without anything a response body might echo.
pub fn status_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        other => other.to_string(),
    }
}

/// Why Kubernetes cannot be reached.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KubeError(pub String);

/// Where a pod's service account credentials are mounted by default.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How to reach the API server.
#[derive(Clone, Debug)]
pub struct KubeConnection {
    /// An explicit kubeconfig (`--kubeconfig`): used alone when given.
    pub kubeconfig: Option<PathBuf>,
    /// The service account directory (`token`, `ca.crt`, `namespace`) used
    /// in a cluster when no kubeconfig is found.
    pub service_account_dir: PathBuf,
}

impl Default for KubeConnection {
    fn default() -> Self {
        KubeConnection {
            kubeconfig: None,
            service_account_dir: PathBuf::from(SERVICE_ACCOUNT_DIR),
        }
    }
}

impl KubeConnection {
    /// Only this kubeconfig.
    pub fn kubeconfig(path: PathBuf) -> Self {
        KubeConnection {
            kubeconfig: Some(path),
            ..KubeConnection::default()
        }
    }

    /// The client configuration: the explicit kubeconfig; else `KUBECONFIG`
    /// or `~/.kube/config`; else the pod's service account (as kubectl and
    /// kube-rs infer it).
    pub async fn config(&self) -> Result<kube::Config, KubeError> {
        if let Some(path) = &self.kubeconfig {
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                KubeError(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            return kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|e| KubeError(format!("kubeconfig {}: {e}", path.display())));
        }
        match kube::Config::from_kubeconfig(&Default::default()).await {
            Ok(config) => Ok(config),
            Err(kubeconfig) => in_cluster(&self.service_account_dir).map_err(|in_cluster| {
                KubeError(format!(
                    "no Kubernetes connection: no usable kubeconfig ({kubeconfig}), and not in a cluster ({in_cluster}); pass --kubeconfig or set KUBECONFIG"
                ))
            }),
        }
    }
}

/// The in-cluster configuration: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
/// trusting `ca.crt`, authenticating with `token` (re-read as it rotates),
/// defaulting to the pod's `namespace`.
fn in_cluster(dir: &Path) -> Result<kube::Config, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let host = var("KUBERNETES_SERVICE_HOST")?;
    let port: u16 = var("KUBERNETES_SERVICE_PORT")?
        .parse()
        .map_err(|_| "KUBERNETES_SERVICE_PORT is not a port".to_string())?;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{port}")
        .parse()
        .map_err(|e| format!("bad API server address {host}:{port}: {e}"))?;
    let ca_path = dir.join("ca.crt");
    let ca = std::fs::read(&ca_path).map_err(|e| format!("{}: {e}", ca_path.display()))?;
    let roots = CertificateDer::pem_slice_iter(&ca)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM certificates: {e}", ca_path.display()))?;
    if roots.is_empty() {
        return Err(format!("{}: no certificates", ca_path.display()));
    }
    let token = dir.join("token");
    std::fs::metadata(&token).map_err(|e| format!("{}: {e}", token.display()))?;
    let namespace = std::fs::read_to_string(dir.join("namespace"))
        .map(|n| n.trim().to_string())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string());
    let mut config = kube::Config::new(url);
    config.default_namespace = namespace;
    config.root_cert = Some(roots);
    config.auth_info.token_file = Some(token.display().to_string());
    Ok(config)
}

impl KubeConnector {
    /// A connector that connects on first use.
    pub fn new(connection: KubeConnection) -> Arc<Self> {
        Arc::new(KubeConnector {
            connection,
            client: OnceCell::new(),
            hub: Mutex::new(HashMap::new()),
            resolved: Mutex::new(HashMap::new()),
            caches: Mutex::new(HashMap::new()),
        })
    }

    /// The client, made on first use.
    pub async fn client(&self) -> Result<kube::Client, KubeError> {
        self.client
            .get_or_try_init(|| async {
                let config = self.connection.config().await?;
                kube::Client::try_from(config)
                    .map_err(|e| KubeError(format!("cannot create a Kubernetes client: {e}")))
            })
            .await
            .cloned()
    }

    /// The API resource of a kind and whether it is namespaced (discovery, cached).
    pub async fn resolve(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, bool), KubeError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = lock(&self.resolved).get(&key) {
            return Ok(found.clone());
        }
        let client = self.client().await?;
        let (resource, caps) = kube::discovery::pinned_kind(&client, &gvk(api_version, kind))
            .await
            .map_err(|e| {
                KubeError(format!(
                    "unknown kind {api_version} {kind}: {}",
                    status_reason(&e)
                ))
            })?;
        let found = (resource, caps.scope == Scope::Namespaced);
        lock(&self.resolved).insert(key, found.clone());
        Ok(found)
    }

    /// Subscribes to the shared watch for `config`, starting it if needed.
    /// With `initial`, the objects already known come first as initial creates.
    pub async fn subscribe(
        self: &Arc<Self>,
        config: &KubeWatchConfig,
    ) -> Result<
        (
            broadcast::Receiver<Arc<ObjectChange>>,
            Vec<Arc<ObjectChange>>,
        ),
        KubeError,
    > {
        let key = WatchKey::of(config);
        let client = self.client().await?;
        let mut hub = lock(&self.hub);
        if let Some(tx) = hub.get(&key)
            && tx.receiver_count() > 0
        {
            let cache = lock(&self.caches).get(&key).cloned().unwrap_or_default();
            // Under the cache lock: the snapshot and the subscription meet without a gap.
            let cache = lock(&cache);
            let rx = tx.subscribe();
            let snapshot = cache
                .objects
                .values()
                .map(|o| {
                    Arc::new(ObjectChange {
                        kind: KubeEvent::Create,
                        object: o.value(),
                        old: None,
                        initial: true,
                    })
                })
                .collect();
            return Ok((rx, snapshot));
        }
        let (tx, rx) = broadcast::channel(4096);
        let cache = Arc::new(Mutex::new(Cache::default()));
        hub.insert(key.clone(), tx.clone());
        lock(&self.caches).insert(key.clone(), cache.clone());
        drop(hub);
        tokio::spawn(run_watch(self.clone(), client, key, tx, cache));
        Ok((rx, Vec::new()))
    }
}

impl KubeConnector {
    /// Waits until the shared watch for `config` has listed its objects once
    /// (in every namespace it watches).
    pub async fn wait_listed(&self, config: &KubeWatchConfig) {
        loop {
            let cache = lock(&self.caches).get(&WatchKey::of(config)).cloned();
            if cache.is_some_and(|c| lock(&c).listed) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The objects the shared watch for `config` holds now (empty if none
    /// runs), unparsed: what a trigger that fell behind the watch resyncs
    /// from, parsing only the objects that changed for it.
    pub fn current(&self, config: &KubeWatchConfig) -> Vec<CachedObject> {
        let Some(cache) = lock(&self.caches).get(&WatchKey::of(config)).cloned() else {
            return Vec::new();
        };
        let cache = lock(&cache);
        cache
            .objects
            .iter()
            .map(|(key, stored)| CachedObject {
                key: key.clone(),
                version: stored.version.clone(),
                text: stored.text.clone(),
            })
            .collect()
    }
}

impl WatchKey {
    fn of(config: &KubeWatchConfig) -> Self {
        WatchKey {
            api_version: config.api_version.clone(),
            kind: config.kind.clone(),
            namespaces: config.namespaces.clone(),
            label_selector: config.label_selector.clone(),
            field_selector: config.field_selector.clone(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.split_once('/') {
        Some((group, version)) => GroupVersionKind::gvk(group, version, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

fn object_key(o: &Value) -> (String, String) {
    let meta = &o["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// One shared watch: resolves the kind, runs one watcher per namespace (or
/// one for all), turns lists and changes into creates, updates and deletes
/// against its cache, and ends when no trigger listens any more.
async fn run_watch(
    connector: Arc<KubeConnector>,
    client: kube::Client,
    key: WatchKey,
    tx: broadcast::Sender<Arc<ObjectChange>>,
    cache: Arc<Mutex<Cache>>,
) {
    let what = format!("{} {}", key.api_version, key.kind);
    let resolved = loop {
        match kube::discovery::pinned_kind(&client, &gvk(&key.api_version, &key.kind)).await {
            Ok(found) => break found,
            Err(e) => {
                tracing::error!(kind = %what, error = %status_reason(&e), "kube-watch: cannot resolve the kind; retrying in 10s");
                tokio::time::sleep(Duration::from_secs(10)).await;
                if tx.receiver_count() == 0 {
                    return;
                }
            }
        }
    };
    let (resource, caps): (ApiResource, _) = resolved;
    let namespaced = caps.scope == Scope::Namespaced;
    let mut wc = watcher::Config::default();
    if let Some(l) = &key.label_selector {
        wc = wc.labels(l);
    }
    if let Some(f) = &key.field_selector {
        wc = wc.fields(f);
    }
    let scopes: Vec<Option<String>> = if !namespaced || key.namespaces.is_empty() {
        vec![None]
    } else {
        key.namespaces.iter().cloned().map(Some).collect()
    };
    let streams = scopes.iter().map(|scope| {
        let api: Api<DynamicObject> = match scope {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let scope = scope.clone();
        watcher::watcher(api, wc.clone())
            .default_backoff()
            .map(move |e| (scope.clone(), e))
            .boxed()
    });
    let mut merged = futures::stream::select_all(streams);
    // Per namespace scope: the first list, as it arrives.
    let mut buffers: HashMap<Option<String>, Vec<(ObjectKey, Stored)>> = HashMap::new();
    let mut listed: HashMap<Option<String>, bool> = HashMap::new();
    let mut idle = tokio::time::interval(Duration::from_secs(5));
    tracing::info!(kind = %what, namespaces = ?key.namespaces, "kube-watch: watching");
    loop {
        let next = tokio::select! {
            next = merged.next() => next,
            _ = idle.tick() => {
                if tx.receiver_count() == 0 {
                    break;
                }
                continue;
            }
        };
        let Some((scope, event)) = next else { break };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(kind = %what, error = %e, "kube-watch: watch error; the watcher retries");
                continue;
            }
        };
        // Sent under the cache lock, so a subscriber's snapshot never overlaps a send.
        let send = |change: ObjectChange| {
            let _ = tx.send(Arc::new(change));
        };
        {
            let mut cache = lock(&cache);
            match event {
                WatchEvent::Init => {
                    buffers.insert(scope.clone(), Vec::new());
                }
                WatchEvent::InitApply(o) => {
                    let key = (
                        o.metadata.namespace.clone().unwrap_or_default(),
                        o.metadata.name.clone().unwrap_or_default(),
                    );
                    buffers
                        .entry(scope.clone())
                        .or_default()
                        .push((key, Stored::of(&o)));
                }
                WatchEvent::InitDone => {
                    let first = !listed.get(&scope).copied().unwrap_or(false);
                    listed.insert(scope.clone(), true);
                    cache.listed = listed.len() == scopes.len();
                    let fresh = buffers.remove(&scope).unwrap_or_default();
                    let mut seen = std::collections::HashSet::new();
                    for (k, stored) in fresh {
                        seen.insert(k.clone());
                        match cache.objects.insert(k, stored.clone()) {
                            None => send(ObjectChange {
                                kind: KubeEvent::Create,
                                object: stored.value(),
                                old: None,
                                initial: first,
                            }),
                            Some(old) if old.version != stored.version => send(ObjectChange {
                                kind: KubeEvent::Update,
                                object: stored.value(),
                                old: Some(old.value()),
                                initial: false,
                            }),
                            Some(_) => {}
                        }
                    }
                    // Gone while we were not watching.
                    let gone: Vec<(String, String)> = cache
                        .objects
                        .keys()
                        .filter(|(ns, _)| scope.as_deref().is_none_or(|s| s == ns))
                        .filter(|k| !seen.contains(*k))
                        .cloned()
                        .collect();
                    for k in gone {
                        if let Some(old) = cache.objects.remove(&k) {
                            send(ObjectChange {
                                kind: KubeEvent::Delete,
                                object: old.value(),
                                old: Some(old.value()),
                                initial: false,
                            });
                        }
                    }
                }
                WatchEvent::Apply(o) => {
                    let stored = Stored::of(&o);
                    let object = stored.value();
                    match cache.objects.insert(object_key(&object), stored.clone()) {
                        None => send(ObjectChange {
                            kind: KubeEvent::Create,
                            object,
                            old: None,
                            initial: false,
                        }),
                        Some(old) if old.version == stored.version => {}
                        Some(old) => send(ObjectChange {
                            kind: KubeEvent::Update,
                            object,
                            old: Some(old.value()),
                            initial: false,
                        }),
                    }
                }
                WatchEvent::Delete(o) => {
                    let object = serde_json::to_value(o).unwrap_or(Value::Null);
                    let old = cache.objects.remove(&object_key(&object));
                    send(ObjectChange {
                        kind: KubeEvent::Delete,
                        object,
                        old: old.map(|o| o.value()),
                        initial: false,
                    });
                }
            }
        }
        if tx.receiver_count() == 0 {
            break;
        }
    }
    lock(&connector.hub).retain(|k, t| !(k == &key && t.same_channel(&tx)));
    {
        let mut caches = lock(&connector.caches);
        if caches.get(&key).is_some_and(|c| Arc::ptr_eq(c, &cache)) {
            caches.remove(&key);
        }
    }
    tracing::info!(kind = %what, "kube-watch: stopped (no trigger listens)");
}
