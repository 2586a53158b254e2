//! A compiled module version: its component, content hash, what it imports
//! and exports, and one pre-linked instance template per world it implements.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker};

use super::HostState;
use super::bindings::ActionPre;
use super::bindings::filter::FilterPre;

/// The two guest roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum World {
    /// Exports `filter(event) -> result<bool, string>`.
    Filter,
    /// Exports `run(event, params) -> result<string, string>`.
    Action,
}

impl World {
    /// The world name as in `wit/`.
    pub fn name(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Action => "action",
        }
    }

    /// "a filter" / "an action", for messages.
    pub fn with_article(self) -> &'static str {
        match self {
            World::Filter => "a filter",
            World::Action => "an action",
        }
    }

    /// The export that marks the world, with its signature, for messages.
    fn export_signature(self) -> &'static str {
        match self {
            World::Filter => "filter: func(event) -> result<bool, string>",
            World::Action => "run: func(event, params: string) -> result<string, string>",
        }
    }

    fn export_name(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Action => "run",
        }
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a module could not be loaded or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// The file could not be read.
    #[error("module `{name}`: cannot read {path}: {reason}")]
    Read {
        /// Module name.
        name: String,
        /// File path.
        path: String,
        /// OS error.
        reason: String,
    },
    /// The file is over the size cap (`engine.maxModuleSize`); it was not read.
    #[error(
        "module `{name}` is {size} bytes; modules may be at most {max} bytes (engine.maxModuleSize)"
    )]
    TooLarge {
        /// Module name.
        name: String,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The bytes are not a valid component for this engine.
    #[error("module `{name}` does not compile: {reason}")]
    Compile {
        /// Module name.
        name: String,
        /// Compiler message.
        reason: String,
    },
    /// The module does not implement the world it is used as.
    #[error("module `{module}` cannot be used as {}: {reason}", world.with_article())]
    WrongWorld {
        /// Module label.
        module: String,
        /// Required world.
        world: World,
        /// What is missing or mismatched.
        reason: String,
    },
}

/// One compiled version of a module.
pub struct LoadedModule {
    /// Name as referenced in config (the file name).
    pub name: String,
    /// Where it was read from, if from a file.
    pub path: Option<PathBuf>,
    /// SHA-256 of the wasm bytes, hex.
    pub digest: String,
    /// Size of the wasm bytes.
    pub size: usize,
    /// Time spent compiling, or loading from the cache.
    pub compile_time: Duration,
    /// Whether the machine code came from the compiled-module cache.
    pub from_cache: bool,
    /// Import names of the component.
    pub imports: Vec<String>,
    /// Export names of the component.
    pub exports: Vec<String>,
    filter: Result<FilterPre<HostState>, String>,
    action: Result<ActionPre<HostState>, String>,
    /// `name@version`, formatted once: every invocation tags its output with it.
    label: Arc<str>,
}

impl fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModule")
            .field("name", &self.name)
            .field("version", &self.version())
            .finish_non_exhaustive()
    }
}

impl LoadedModule {
    /// Compiles wasm bytes (or takes them from `cache`) and prepares them for
    /// the worlds they implement.
    pub(crate) fn compile(
        engine: &Engine,
        linkers: (&Linker<HostState>, &Linker<HostState>),
        cache: Option<&super::ModuleCache>,
        name: &str,
        path: Option<PathBuf>,
        bytes: &[u8],
    ) -> Result<Self, ModuleError> {
        let (filter_linker, action_linker) = linkers;
        let digest = hex(&Sha256::digest(bytes));
        let started = std::time::Instant::now();
        let cached = cache.and_then(|c| c.load(engine, &digest));
        let from_cache = cached.is_some();
        let component = match cached {
            Some(component) => component,
            None => {
                let component =
                    Component::new(engine, bytes).map_err(|e| ModuleError::Compile {
                        name: name.to_string(),
                        reason: format!("{e:#}"),
                    })?;
                if let Some(cache) = cache {
                    cache.store(&digest, &component);
                }
                component
            }
        };
        let compile_time = started.elapsed();
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(n, _)| n.to_string()).collect();
        let exports: Vec<(String, bool)> = ty
            .exports(engine)
            .map(|(n, item)| {
                (
                    n.to_string(),
                    matches!(item.ty, ComponentItem::ComponentFunc(_)),
                )
            })
            .collect();
        let label = format!("{name}@{}", &digest[..12]);
        let export_names: Vec<String> = exports.iter().map(|(n, _)| n.clone()).collect();
        let prepare = |world: World, linker: &Linker<HostState>| -> Result<_, String> {
            if !exports
                .iter()
                .any(|(n, is_func)| n == world.export_name() && *is_func)
            {
                let found = if export_names.is_empty() {
                    "nothing".to_string()
                } else {
                    export_names.join(", ")
                };
                return Err(format!(
                    "it does not export `{}` (it exports: {found})",
                    world.export_signature()
                ));
            }
            linker.instantiate_pre(&component).map_err(|e| {
                format!("it imports something the {world} world does not provide: {e:#}")
            })
        };
        let filter = prepare(World::Filter, filter_linker).and_then(|pre| {
            FilterPre::new(pre)
                .map_err(|e| format!("its `filter` export has the wrong type: {e:#}"))
        });
        let action = prepare(World::Action, action_linker).and_then(|pre| {
            ActionPre::new(pre).map_err(|e| format!("its `run` export has the wrong type: {e:#}"))
        });
        let ms = compile_time.as_millis() as u64;
        if from_cache {
            tracing::debug!(module = %label, load_ms = ms, "module loaded from the cache");
        } else {
            tracing::debug!(module = %label, compile_ms = ms, cached = cache.is_some(), "compiled module");
        }
        Ok(LoadedModule {
            name: name.to_string(),
            path,
            digest,
            size: bytes.len(),
            compile_time,
            from_cache,
            imports,
            exports: export_names,
            filter,
            action,
            label: label.into(),
        })
    }

    /// The version id shown to users: the first 12 hex digits of the hash.
    pub fn version(&self) -> &str {
        &self.digest[..12]
    }

    /// `name@version`, as in logs and run records.
    pub fn label(&self) -> String {
        self.label.to_string()
    }

    /// [`Self::label`] shared rather than copied (one per invocation).
    pub(crate) fn shared_label(&self) -> Arc<str> {
        self.label.clone()
    }

    /// The worlds this module implements.
    pub fn worlds(&self) -> Vec<World> {
        let mut worlds = Vec::new();
        if self.filter.is_ok() {
            worlds.push(World::Filter);
        }
        if self.action.is_ok() {
            worlds.push(World::Action);
        }
        worlds
    }

    /// Checks that the module can be used as `world`.
    pub fn require(&self, world: World) -> Result<(), ModuleError> {
        let outcome = match world {
            World::Filter => self.filter.as_ref().map(|_| ()),
            World::Action => self.action.as_ref().map(|_| ()),
        };
        outcome.map_err(|reason| ModuleError::WrongWorld {
            module: self.label(),
            world,
            reason: reason.clone(),
        })
    }

    pub(crate) fn filter_pre(&self) -> Result<&FilterPre<HostState>, ModuleError> {
        self.require(World::Filter)?;
        self.filter
            .as_ref()
            .map_err(|_| unreachable_world(self, World::Filter))
    }

    pub(crate) fn action_pre(&self) -> Result<&ActionPre<HostState>, ModuleError> {
        self.require(World::Action)?;
        self.action
            .as_ref()
            .map_err(|_| unreachable_world(self, World::Action))
    }
}

fn unreachable_world(module: &LoadedModule, world: World) -> ModuleError {
    ModuleError::WrongWorld {
        module: module.label(),
        world,
        reason: "not prepared".into(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
