//! Builtin modules: the examples of general use (kube-trigger's actions, a
//! Slack-style notifier, the event logger, the ready-replicas filter), built
//! for wasm32-wasip2 in release when the binary is built and embedded in it,
//! pinned by SHA-256 (see `host/build.rs`).
//!
//! A config names one as `module: builtin:NAME`. The prefix keeps the two
//! namespaces apart: `builtin:NAME` is always the embedded module, and a
//! file such as `NAME.wasm` is always a file, so neither can stand in for
//! the other; `check` warns when a config uses a file whose name is also a
//! builtin's. Each builtin ships a JSON Schema of its params, which the
//! config loader validates a trigger's `params` against. A builtin is
//! compiled once into the module cache like any module; upgrading the
//! binary upgrades it, and run records name it as `builtin:NAME@sha256`.

/// An embedded module.
#[derive(Debug)]
pub struct Builtin {
    /// Its name, as after `builtin:`.
    pub name: &'static str,
    /// `filter` or `action`.
    pub world: &'static str,
    /// The crate's version.
    pub version: &'static str,
    /// SHA-256 of the wasm bytes, hex.
    pub sha256: &'static str,
    /// The component.
    pub wasm: &'static [u8],
    /// JSON Schema of its params.
    pub schema: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// The grants it needs, as its documentation says.
    pub grants: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// How a config names a builtin.
pub const PREFIX: &str = "builtin:";

/// Every builtin, by name.
pub fn all() -> &'static [Builtin] {
    BUILTINS
}

/// The builtin a module name (`builtin:NAME`) stands for, if it names one.
pub fn named(module: &str) -> Option<&'static Builtin> {
    let name = module.strip_prefix(PREFIX)?;
    BUILTINS.iter().find(|b| b.name == name)
}

/// Whether a module name is in the builtin namespace (`builtin:...`).
pub fn is_builtin(module: &str) -> bool {
    module.starts_with(PREFIX)
}

/// Why `module` (in the builtin namespace) cannot be used: unknown, or this
/// binary was built without builtins.
pub fn unknown(module: &str) -> String {
    if BUILTINS.is_empty() {
        return format!(
            "module `{module}`: this binary was built without builtin modules ({MISSING}); rebuild it with the wasm32-wasip2 target installed (`rustup target add wasm32-wasip2`), or use module files"
        );
    }
    let names: Vec<String> = BUILTINS
        .iter()
        .map(|b| format!("{PREFIX}{}", b.name))
        .collect();
    format!(
        "unknown builtin module `{module}`: expected one of {}",
        names.join(", ")
    )
}

/// Why this binary has no builtins (empty when it has them).
pub fn missing() -> &'static str {
    MISSING
}

/// The builtin whose name a module file's name (`NAME.wasm`) repeats.
pub fn shadowed_by_file(module: &str) -> Option<&'static Builtin> {
    let stem = module.strip_suffix(".wasm")?;
    BUILTINS.iter().find(|b| b.name == stem)
}
