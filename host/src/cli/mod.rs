//! The binary's side of the command line: argument parsing and one handler
//! per command, over the library. Nothing here is part of the library.

pub mod args;
mod check;
mod client;
mod invoke;
pub mod module_test;
pub mod offline;
pub mod remote;
pub mod replay;
pub mod run;
mod run_view;
mod scaffold;

/// Input the user gave that cannot be used: reported like any error, but
/// with exit status 2, so scripts can tell it from a failure.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);
