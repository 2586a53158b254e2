//! wasmtrigger: an event-automation engine whose filters and actions are
//! WebAssembly components.
//!
//! Events come from [`sources`], pass a filter (a wasm module or a [`cel`]
//! expression) and run an action module; [`dispatch`] bounds and retries the
//! work, [`runtime`] sandboxes each call, [`capabilities`] are what guests may
//! use, and every event ends in one record from [`runs`]. [`engine`] wires
//! them together; [`check`] and [`invoke`] serve the CLI's offline commands.

pub mod capabilities;
pub mod cel;
pub mod config;
pub mod dispatch;
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
pub mod runs;
pub mod runtime;
pub mod server;
pub mod sources;
pub mod state;
pub mod trigger;
pub mod trigger_set;
