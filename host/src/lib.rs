//! wasmtrigger: an event-automation engine whose filters and actions are
//! WebAssembly components.
//!
//! Events come from [`sources`], pass a filter (a wasm module or a [`cel`]
//! expression) and run an action module; [`dispatch`] bounds and retries the
//! work, [`runtime`] sandboxes each call, [`capabilities`] are what guests may
//! use, and every event ends in one record from [`runs`].
//!
//! The modules are layers; each imports only from the layers below it
//! (`tests/e2e/layers.rs` enforces it):
//!
//! - **L0 vocabulary**: [`event`], [`cel`], [`config`], [`redact`], [`failpoint`];
//! - **L1 records and clients**: [`state`], [`runs`], [`logging`], and
//!   [`kube`]'s client, leader election, CRD and rbac;
//! - **L2 sandbox**: [`capabilities`], [`runtime`], [`metrics`];
//! - **L3 event flow**: [`trigger`], [`dispatch`], [`sources`], [`trigger_set`];
//! - **L4 drivers**: [`server`], [`reload`], [`kube::sync`] — none imports another;
//! - **L5**: [`engine`], the composition root, which nothing imports.

pub mod builtins;
pub mod capabilities;
pub mod cel;
pub mod config;
pub mod dispatch;
pub mod distribute;
pub mod engine;
pub mod event;
pub mod failpoint;
pub mod kube;
pub mod logging;
pub mod metrics;
#[cfg(test)]
mod proptests;
pub mod redact;
pub mod reload;
pub mod replay;
pub mod runs;
pub mod runtime;
pub mod server;
pub mod sources;
pub mod state;
pub mod trigger;
pub mod trigger_set;
