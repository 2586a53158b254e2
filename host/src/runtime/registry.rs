//! The set of module versions currently serving, by the name triggers use.
//!
//! Lookups happen on the event path and return an `Arc`, so a run keeps the
//! version it started with even if a newer one is swapped in meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use super::{LoadedModule, ModuleError, Runtime, World};
use crate::config::{Config, ConfigError, FilterConfig};

/// What serves under a name: a version, or the reason there is none.
type Slot = Result<Arc<LoadedModule>, String>;

/// Name -> current version (or why it is unavailable).
#[derive(Default)]
pub struct ModuleRegistry {
    modules: RwLock<HashMap<String, Slot>>,
}

impl ModuleRegistry {
    /// The version serving under `name`, or a message saying why none is.
    pub fn get(&self, name: &str) -> Result<Arc<LoadedModule>, String> {
        self.read()
            .get(name)
            .cloned()
            .unwrap_or_else(|| Err(format!("module `{name}` is not loaded")))
    }

    /// Makes `module` the version serving under its name; returns the previous one.
    pub fn insert(&self, module: Arc<LoadedModule>) -> Option<Arc<LoadedModule>> {
        self.write()
            .insert(module.name.clone(), Ok(module))
            .and_then(Result::ok)
    }

    /// Stops serving `name`; runs that need it fail with `why` until a version returns.
    pub fn set_unavailable(&self, name: &str, why: String) -> Option<Arc<LoadedModule>> {
        self.write()
            .insert(name.to_string(), Err(why))
            .and_then(Result::ok)
    }

    /// Forgets `name` entirely (no trigger uses it any more).
    pub fn remove(&self, name: &str) {
        self.write().remove(name);
    }

    /// Every serving version, by name.
    pub fn list(&self) -> Vec<Arc<LoadedModule>> {
        let mut all: Vec<_> = self
            .read()
            .values()
            .filter_map(|s| s.clone().ok())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every name with an entry.
    pub fn names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Slot>> {
        self.modules.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Slot>> {
        self.modules.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// Where a trigger uses a module, and as what.
struct Use<'a> {
    trigger: &'a str,
    file: &'a std::path::Path,
    field: &'static str,
    world: World,
}

/// Compiles every module a config references (in parallel, off the async
/// executor) and checks each against the world each trigger uses it as.
/// Problems come back located like config errors.
pub async fn load_for_config(
    runtime: &Arc<Runtime>,
    config: &Config,
) -> (Vec<Arc<LoadedModule>>, Vec<ConfigError>) {
    let mut uses: BTreeMap<(String, std::path::PathBuf), Vec<Use<'_>>> = BTreeMap::new();
    for t in &config.triggers {
        if let Some(FilterConfig::Module(m)) = &t.filter {
            uses.entry((m.name.clone(), m.path.clone()))
                .or_default()
                .push(Use {
                    trigger: &t.name,
                    file: &t.file,
                    field: "filter.module",
                    world: World::Filter,
                });
        }
        for (m, field) in t
            .action_modules()
            .into_iter()
            .zip(["action.module", "shadow.module"])
        {
            uses.entry((m.name.clone(), m.path.clone()))
                .or_default()
                .push(Use {
                    trigger: &t.name,
                    file: &t.file,
                    field,
                    world: World::Action,
                });
        }
    }
    let compiles: Vec<_> = uses
        .keys()
        .map(|(name, path)| {
            let (runtime, name, path) = (runtime.clone(), name.clone(), path.clone());
            tokio::task::spawn_blocking(move || runtime.load_file(&name, &path))
        })
        .collect();
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for ((_, users), handle) in uses.iter().zip(compiles) {
        let result = handle.await.unwrap_or_else(|e| {
            Err(ModuleError::Compile {
                name: "?".into(),
                reason: format!("compiler task failed: {e}"),
            })
        });
        let located = |u: &Use, message: String| ConfigError {
            file: u.file.to_path_buf(),
            trigger: Some(u.trigger.to_string()),
            field: Some(u.field.to_string()),
            message,
        };
        match result {
            Err(e) => errors.extend(users.iter().map(|u| located(u, e.to_string()))),
            Ok(module) => {
                for u in users {
                    if let Err(e) = module.require(u.world) {
                        errors.push(located(u, e.to_string()));
                    }
                }
                loaded.push(Arc::new(module));
            }
        }
    }
    (loaded, errors)
}
