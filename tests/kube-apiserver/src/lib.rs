//! A Kubernetes API server for wasmtrigger's tests, on 127.0.0.1, speaking
//! the real REST protocol closely enough that the unmodified `kube` client
//! and `kubectl` work against it: discovery, get, list with label and field
//! selectors and paging, create, update, delete, merge / JSON / strategic
//! (as merge) patches, server-side apply, `Status` errors (404, 409
//! AlreadyExists and Conflict, 410 Expired, 422 Invalid), one increasing
//! resourceVersion, and watches with ADDED / MODIFIED / DELETED / BOOKMARK
//! and an in-stream ERROR 410 for compacted versions. CustomResourceDefinitions
//! define served kinds (`crd.rs`), `status` subresources are kept apart,
//! `Table` output follows printer columns (`table.rs`), `dryRun=All` stores
//! nothing, and RBAC is enforced on service accounts when asked (`authz.rs`).
//!
//! Plain HTTP by default; [`ApiServer::start_with`] serves HTTPS with a test
//! CA and requires a bearer token, as a pod's service account sees it.
//!
//! Test controls: [`ApiServer::compact`], [`ApiServer::cut_watches`],
//! [`ApiServer::fail_next`] and [`ApiServer::fail_after_next`]. What it does
//! not do: admission, defaulting, schema validation, conversion between
//! versions, strategic-merge directives beyond `$patch`, field-ownership
//! conflicts in server-side apply, finalizers and garbage collection (see
//! the README's "Not done").

mod authz;
mod crd;
mod discovery;
mod http;
mod patch;
mod select;
mod store;
mod table;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};

pub use authz::Identity;
pub use discovery::{Column, ResourceType};
pub use store::{ApiError, Change, Part};

/// A failure to inject: the next request matching `method` and containing
/// `path` in its path and query gets this error instead of being served.
#[derive(Clone, Debug)]
pub struct Fault {
    /// HTTP method, e.g. `GET`.
    pub method: String,
    /// A substring of the request path.
    pub path: String,
    /// The error returned.
    pub error: ApiError,
    /// Carry the request out first, then answer with the error.
    pub after: bool,
}

pub(crate) struct Shared {
    pub store: Mutex<store::Store>,
    /// Bumped to end every open watch.
    pub cut: watch::Sender<u64>,
    pub faults: Mutex<Vec<Fault>>,
    /// Watches answered with an in-stream 410 Expired.
    pub expired: std::sync::atomic::AtomicU64,
    /// Watch requests by plural resource name.
    pub watches: Mutex<std::collections::HashMap<String, u64>>,
    /// The bearer token every request must carry, if any.
    pub token: Option<String>,
    /// Every request's method and URI (path and query), in arrival order.
    pub requests: Mutex<Vec<String>>,
    /// Requests refused with 401.
    pub unauthorized: std::sync::atomic::AtomicU64,
    /// Service account tokens, and who they are.
    pub service_accounts: Mutex<std::collections::HashMap<String, Identity>>,
    /// Enforce RBAC on service accounts.
    pub rbac: bool,
    /// Requests refused with 403, as `METHOD URI: message`.
    pub forbidden: Mutex<Vec<String>>,
}

/// How a server is started.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// Custom kinds to serve besides the built-in ones.
    pub extra: Vec<ResourceType>,
    /// Serve HTTPS with the test certificate (see [`TEST_CA_PEM`]).
    pub https: bool,
    /// Require `Authorization: Bearer <token>` on every request; this
    /// token is the admin's (allowed everything).
    pub token: Option<String>,
    /// Enforce RBAC on service-account tokens (see
    /// [`ApiServer::service_account_token`]) with the Roles, ClusterRoles
    /// and bindings stored in the server.
    pub rbac: bool,
}

/// A minimal CustomResourceDefinition (YAML) for a namespaced kind with an
/// open schema and a status subresource: how a test makes a third-party kind
/// (kpack's Image, KubeVela's Application, ...) exist, as installing its
/// operator would on a cluster.
pub fn minimal_crd(group: &str, version: &str, kind: &str, plural: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{ name: {plural}.{group} }}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{ kind: {kind}, plural: {plural}, singular: {singular} }}\n  versions:\n    - name: {version}\n      served: true\n      storage: true\n      subresources: {{ status: {{}} }}\n      schema: {{ openAPIV3Schema: {{ type: object, x-kubernetes-preserve-unknown-fields: true }} }}\n",
        singular = kind.to_lowercase()
    )
}

/// The CA that signed the HTTPS server's certificate (for 127.0.0.1, ::1,
/// localhost and kubernetes.default.svc). Test-only material.
pub const TEST_CA_PEM: &str = include_str!("../certs/ca.crt");

impl Shared {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running server; it stops when dropped.
pub struct ApiServer {
    addr: SocketAddr,
    https: bool,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    /// Starts a plain-HTTP server with the built-in types plus `extra` (custom kinds).
    pub fn start(extra: &[ResourceType]) -> ApiServer {
        ApiServer::start_with(ServerOptions {
            extra: extra.to_vec(),
            ..ServerOptions::default()
        })
    }

    /// Starts a server as `options` say.
    pub fn start_with(options: ServerOptions) -> ApiServer {
        let mut types = discovery::builtin();
        types.extend(options.extra.iter().cloned());
        let (changes, _) = broadcast::channel(65_536);
        let shared = Arc::new(Shared {
            store: Mutex::new(store::Store::new(types, changes)),
            cut: watch::channel(0).0,
            faults: Mutex::new(Vec::new()),
            expired: std::sync::atomic::AtomicU64::new(0),
            watches: Mutex::new(Default::default()),
            token: options.token.clone(),
            unauthorized: std::sync::atomic::AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            service_accounts: Mutex::new(Default::default()),
            rbac: options.rbac,
            forbidden: Mutex::new(Vec::new()),
        });
        let tls = options.https.then(http::test_tls);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = shared.clone();
        // Its own runtime, so synchronous tests (kubectl) can use it too.
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(http::serve(listener, serving, tls, stopped));
        });
        ApiServer {
            addr,
            https: options.https,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (or `https://`).
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The port the server listens on (at 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every request received so far, as `METHOD /path?query`, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests refused for a missing or wrong bearer token.
    pub fn unauthorized(&self) -> u64 {
        self.shared
            .unauthorized
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A bearer token for the service account `namespace/name`: requests
    /// with it are that account's, authorized by RBAC when `rbac` is on.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = format!("sa.{namespace}.{name}.{}", uuid::Uuid::new_v4().simple());
        self.shared
            .service_accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                token.clone(),
                Identity::ServiceAccount {
                    namespace: namespace.into(),
                    name: name.into(),
                },
            );
        token
    }

    /// Requests refused with 403 so far, as `METHOD URI: message`.
    pub fn forbidden(&self) -> Vec<String> {
        self.shared
            .forbidden
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Writes a kubeconfig for this server (context `test`, namespace
    /// `default`), with the CA and the token it requires.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        let token = self
            .shared
            .token
            .as_deref()
            .unwrap_or("test-token")
            .to_string();
        self.write_kubeconfig_with(path, &token)
    }

    /// Writes a kubeconfig for this server that sends `token` (e.g. a
    /// service account's, from [`ApiServer::service_account_token`]).
    pub fn write_kubeconfig_with(&self, path: &Path, token: &str) -> std::io::Result<()> {
        use base64::Engine as _;
        let ca = if self.https {
            let data = base64::engine::general_purpose::STANDARD.encode(TEST_CA_PEM);
            format!("    certificate-authority-data: {data}\n")
        } else {
            String::new()
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n{ca}users:\n- name: test\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: default\ncurrent-context: test\n",
            self.url()
        );
        std::fs::write(path, text)
    }

    /// Forgets the change history: watches from any earlier version get 410 Expired.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// Ends every open watch connection (as a load balancer or apiserver restart would).
    pub fn cut_watches(&self) {
        self.shared.cut.send_modify(|n| *n += 1);
    }

    /// Makes the next matching request fail with `error`.
    pub fn fail_next(&self, method: &str, path: &str, error: ApiError) {
        self.add_fault(method, path, error, false);
    }

    /// Carries the next matching request out but answers it with `error`, as
    /// when a response is lost after the write was committed.
    pub fn fail_after_next(&self, method: &str, path: &str, error: ApiError) {
        self.add_fault(method, path, error, true);
    }

    fn add_fault(&self, method: &str, path: &str, error: ApiError, after: bool) {
        self.shared
            .faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Fault {
                method: method.to_string(),
                path: path.to_string(),
                error,
                after,
            });
    }

    /// How many watches were answered with an in-stream 410 Expired.
    pub fn expired_watches(&self) -> u64 {
        self.shared
            .expired
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many watch requests were made on a resource (by plural), so far.
    pub fn watch_requests(&self, plural: &str) -> u64 {
        let watches = self
            .shared
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        watches.get(plural).copied().unwrap_or(0)
    }

    /// Applies a merge patch directly (test set-up).
    pub fn merge_patch(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let mut store = self.shared.lock();
        let ty = store
            .type_of(group, plural)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("no type {plural}.{group}")))?;
        store.patch_as(
            ty,
            namespace,
            name,
            "application/merge-patch+json",
            patch.to_string().as_bytes(),
            None,
            Part::Whole,
        )
    }

    /// Deletes an object directly (test set-up).
    pub fn delete(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<serde_json::Value, ApiError> {
        let mut store = self.shared.lock();
        let ty = store
            .type_of(group, plural)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("no type {plural}.{group}")))?;
        store.delete(ty, namespace, name)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv()
    }

    /// An object, for assertions (`group` "" for the core group).
    pub fn get(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        let store = self.shared.lock();
        let ty = store.type_of(group, plural)?;
        store.get(ty, namespace, name).ok()
    }

    /// The objects of a type in `namespace` (None: all), for assertions.
    pub fn list(
        &self,
        group: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Vec<serde_json::Value> {
        let store = self.shared.lock();
        match store.type_of(group, plural) {
            Some(ty) => store
                .list(ty, namespace)
                .into_iter()
                .map(|(_, v)| v)
                .collect(),
            None => Vec::new(),
        }
    }

    /// Creates an object directly (test set-up).
    pub fn create(
        &self,
        group: &str,
        plural: &str,
        namespace: &str,
        object: serde_json::Value,
    ) -> Result<serde_json::Value, ApiError> {
        let mut store = self.shared.lock();
        let ty = store
            .type_of(group, plural)
            .ok_or_else(|| ApiError::new(404, "NotFound", format!("no type {plural}.{group}")))?;
        store.create(ty, namespace, object)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
