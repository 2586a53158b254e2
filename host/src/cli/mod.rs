//! The binary's side of the command line: argument parsing and one handler
//! per command, over the library. Nothing here is part of the library.

pub mod args;
mod check;
mod client;
mod invoke;
pub mod offline;
pub mod remote;
pub mod run;
mod scaffold;
