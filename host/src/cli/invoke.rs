//! `wasmtrigger invoke`: run one filter or action once, offline, exactly as
//! the engine would (same sandbox, limits and capabilities).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtrigger::capabilities::secrets::SecretStore;
use wasmtrigger::capabilities::{ActionAccess, HostServices};
use wasmtrigger::config::grants::Grants;
use wasmtrigger::config::{HttpLimits, Limits, SecretsSettings};
use wasmtrigger::event::Event;
use wasmtrigger::runtime::{
    Invocation, InvokeError, ModuleError, Runtime, RuntimeError, RuntimeSettings, World,
};
use wasmtrigger::state::{KvLimits, StateError, StateStore};

/// What to run.
pub struct InvokeRequest {
    /// The module file.
    pub module: PathBuf,
    /// The event as JSON text: a full event record or any JSON (then it is `data`).
    pub event: String,
    /// Params for an action, JSON text.
    pub params: Option<String>,
    /// The world to use when the module implements both.
    pub world: Option<World>,
    /// Time and memory bounds.
    pub limits: Limits,
    /// Keep kv state here; without it kv lives in memory for this call only.
    pub state_dir: Option<PathBuf>,
    /// What an action may use (ignored for filters).
    pub grants: Grants,
    /// HTTP limits for an action.
    pub http: HttpLimits,
    /// Where secrets come from.
    pub secrets: SecretsSettings,
    /// The compiled-module cache to use, if any.
    pub cache_dir: Option<PathBuf>,
}

/// Where `invoke` keeps compiled modules unless told otherwise:
/// `$XDG_CACHE_HOME/wasmtrigger/modules`, else `~/.cache/wasmtrigger/modules`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("wasmtrigger").join("modules"))
}

/// What the guest returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvokeOutcome {
    /// A filter's verdict.
    Filter(bool),
    /// An action's output.
    Action(String),
}

/// Why `invoke` could not produce an outcome.
#[derive(Debug, thiserror::Error)]
pub enum InvokeCommandError {
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The module could not be loaded or does not fit.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// The event or params are not usable.
    #[error("{0}")]
    Input(String),
    /// The state store could not be opened.
    #[error(transparent)]
    State(#[from] StateError),
    /// The guest failed.
    #[error(transparent)]
    Guest(#[from] InvokeError),
}

/// Loads the module, picks its world, and runs it once on the event.
pub async fn invoke(request: InvokeRequest) -> Result<InvokeOutcome, InvokeCommandError> {
    // The cache makes a second invoke of an unchanged module skip compiling
    // (Python and JavaScript components take seconds).
    let settings = RuntimeSettings {
        cache_dir: request.cache_dir.clone(),
        ..RuntimeSettings::default()
    };
    let runtime = Arc::new(Runtime::new(&settings)?);
    let name = file_name(&request.module);
    let module = {
        let (runtime, path, name) = (runtime.clone(), request.module.clone(), name.clone());
        tokio::task::spawn_blocking(move || runtime.load_file(&name, &path))
            .await
            .map_err(|e| InvokeCommandError::Input(format!("compiler task failed: {e}")))??
    };
    tracing::debug!(
        target: "wasmtrigger::runtime",
        module = %module.label(),
        from_cache = module.from_cache,
        load_ms = module.compile_time.as_millis() as u64,
        "module loaded"
    );
    let world = match (request.world, module.worlds().as_slice()) {
        (Some(world), _) => {
            module.require(world)?;
            world
        }
        (None, [only]) => *only,
        (None, []) => {
            // Report why it fits neither world.
            module.require(World::Action)?;
            World::Action
        }
        (None, _) => {
            return Err(InvokeCommandError::Input(format!(
                "module `{name}` implements both worlds; choose one with --world filter|action"
            )));
        }
    };
    let event = Event::from_json_input(&request.event)
        .map_err(|e| InvokeCommandError::Input(format!("the event is not valid JSON: {e}")))?;
    let params = request.params.unwrap_or_else(|| "{}".to_string());
    serde_json::from_str::<serde_json::Value>(&params)
        .map_err(|e| InvokeCommandError::Input(format!("--params is not valid JSON: {e}")))?;
    let store = match &request.state_dir {
        Some(dir) => StateStore::open(dir, KvLimits::default())?,
        None => StateStore::in_memory(KvLimits::default())?,
    };
    let services = HostServices::new(SecretStore::from_settings(&request.secrets))
        .map_err(InvokeCommandError::Input)?;
    let mut invocation = Invocation::new(
        &event.trigger,
        request.limits,
        Some(store.kv(&event.trigger)),
        services,
    );
    if world == World::Action {
        invocation.access = Some(Arc::new(ActionAccess {
            grants: request.grants,
            http: request.http,
        }));
    }
    Ok(match world {
        World::Filter => {
            InvokeOutcome::Filter(runtime.call_filter(&module, &invocation, &event).await?)
        }
        World::Action => InvokeOutcome::Action(
            runtime
                .call_action(&module, &invocation, &event, &params)
                .await?,
        ),
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}
