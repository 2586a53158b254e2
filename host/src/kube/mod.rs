//! Everything Kubernetes, by layer:
//!
//! - [`client`]: the connection (kubeconfig, in-cluster service account),
//!   discovery, and the shared watches behind `kube-watch` sources;
//! - [`leader`]: Lease leader election;
//! - [`crd`]: the `Trigger` custom resource's types and CRD;
//! - [`rbac`]: least-privilege RBAC derived from a config (`wasmtrigger rbac`);
//! - [`sync`]: triggers from Trigger objects, with their status (a driver,
//!   like the server and the reloader: it sits above the event flow).

pub mod client;
pub mod crd;
pub mod leader;
pub mod rbac;
pub mod sync;

pub use client::{
    CachedObject, KubeConnection, KubeConnector, KubeError, ObjectChange, SERVICE_ACCOUNT_DIR,
};
