//! The WebAssembly runtime: one wasmtime `Engine` for the process (pooling
//! allocator, epoch interruption), one linker per world, compiled modules,
//! and bounded invocations in a fresh `Store` each.

mod cache;
mod host_state;
mod invoke;
mod module;
mod registry;
pub mod stdio;
mod warm;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capabilities::{Capabilities, bindings};

pub use cache::{CacheStats, ModuleCache};
pub use host_state::HostState;
pub use invoke::{FailureKind, Invocation, InvokeError};
pub use module::{LoadedModule, ModuleError, World};
pub use registry::{ModuleRegistry, load_for_config};
pub use warm::WarmPool;

/// Resolution of invocation timeouts.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Errors creating the runtime.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime rejected the engine configuration.
    #[error("cannot create the wasm engine: {0}")]
    Engine(String),
    /// The linker could not be set up.
    #[error("cannot link host capabilities: {0}")]
    Link(String),
}

/// Engine-wide runtime settings.
#[derive(Clone, Debug)]
pub struct RuntimeSettings {
    /// Largest memory any invocation may use (sizes the pooling allocator's slots).
    pub max_memory: u64,
    /// Bytes a guest may write to stdout+stderr per invocation.
    pub stdio_limit: u64,
    /// Concurrent instances the pool holds.
    pub pool_instances: u32,
    /// Where compiled modules are cached, if anywhere.
    pub cache_dir: Option<std::path::PathBuf>,
    /// Size bound of the cache in bytes.
    pub cache_max_bytes: u64,
    /// Tuning of how instances get their memory (benchmarked in docs/performance.md).
    pub tuning: Tuning,
    /// Largest module file read; a bigger one is refused by its size, unread.
    pub max_module_bytes: u64,
    /// Where every compiled module's bytes are kept for recorded runs, if anywhere.
    pub module_store: Option<crate::runs::modules::ModuleStore>,
}

/// wasmtime knobs that trade memory for per-instance speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Preallocate instance slots (pooling allocator) instead of mapping per instance.
    pub pooling: bool,
    /// Bytes of each freed linear memory (and table) kept resident and reset
    /// in place for the next instance instead of being handed back to the
    /// kernel: handing pages back (`madvise`) makes the kernel interrupt every
    /// other core to flush its TLB, which is what kept a second worker from
    /// adding throughput.
    pub keep_resident: usize,
    /// Map initial memory images copy-on-write instead of copying them in.
    pub memory_init_cow: bool,
    /// Find the pages an instance dirtied with Linux's `PAGEMAP_SCAN` and
    /// reset only those, in place, up to `keep_resident` (no effect elsewhere).
    pub pagemap_scan: bool,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            pooling: true,
            keep_resident: crate::config::DEFAULT_KEEP_RESIDENT as usize,
            memory_init_cow: true,
            pagemap_scan: true,
        }
    }
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            max_memory: crate::config::MAX_MEMORY_LIMIT,
            stdio_limit: 256 << 10,
            pool_instances: 64,
            cache_dir: None,
            cache_max_bytes: 1 << 30,
            tuning: Tuning::default(),
            max_module_bytes: crate::config::DEFAULT_MAX_MODULE_SIZE,
            module_store: None,
        }
    }
}

/// The process's wasm runtime.
pub struct Runtime {
    engine: Engine,
    filter_linker: Linker<HostState>,
    action_linker: Linker<HostState>,
    stdio_limit: u64,
    max_module_bytes: u64,
    cache: Option<ModuleCache>,
    module_store: Option<crate::runs::modules::ModuleStore>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Creates the engine, the linkers and the epoch ticker.
    pub fn new(settings: &RuntimeSettings) -> Result<Self, RuntimeError> {
        let engine = match Engine::new(&engine_config(settings, settings.tuning.pooling)) {
            Ok(engine) => engine,
            Err(e) => {
                // Pooling reserves address space up front; some sandboxes cap it.
                tracing::warn!(error = %e, "pooling allocator unavailable, falling back to on-demand allocation");
                Engine::new(&engine_config(settings, false))
                    .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?
            }
        };
        let mut filter_linker: Linker<HostState> = Linker::new(&engine);
        let mut action_linker: Linker<HostState> = Linker::new(&engine);
        let link = |e: wasmtime::Error| RuntimeError::Link(format!("{e:#}"));
        // All of WASI p2 is linked so that guests from any toolchain instantiate;
        // the WasiCtx grants nothing ambient, so calls into it find nothing to reach.
        wasmtime_wasi::p2::add_to_linker_async(&mut filter_linker).map_err(link)?;
        wasmtime_wasi::p2::add_to_linker_async(&mut action_linker).map_err(link)?;
        bindings::filter::Filter::add_to_linker::<_, HasSelf<Capabilities>>(
            &mut filter_linker,
            |s| &mut s.caps,
        )
        .map_err(link)?;
        bindings::Action::add_to_linker::<_, HasSelf<Capabilities>>(&mut action_linker, |s| {
            &mut s.caps
        })
        .map_err(link)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let (stop, weak) = (ticker_stop.clone(), engine.weak());
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;

        let cache = match &settings.cache_dir {
            None => None,
            Some(dir) => match ModuleCache::open(dir, &engine, settings.cache_max_bytes) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "compiled-module cache unavailable; compiling every module");
                    None
                }
            },
        };
        Ok(Runtime {
            engine,
            filter_linker,
            action_linker,
            stdio_limit: settings.stdio_limit,
            max_module_bytes: settings.max_module_bytes,
            cache,
            module_store: settings.module_store.clone(),
            ticker_stop,
        })
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The compiled-module cache, if one is configured.
    pub fn cache(&self) -> Option<&ModuleCache> {
        self.cache.as_ref()
    }

    /// Compiles wasm bytes into a module version, through the cache if there
    /// is one (CPU-heavy on a miss: call off the async executor).
    pub fn compile(
        &self,
        name: &str,
        path: Option<&Path>,
        bytes: &[u8],
    ) -> Result<LoadedModule, ModuleError> {
        self.check_size(name, bytes.len() as u64)?;
        // Checked here so that the compiler's message (which quotes the first
        // bytes it found) is never the one shown for a file that is not wasm.
        if !bytes.starts_with(b"\0asm") {
            return Err(ModuleError::Compile {
                name: name.to_string(),
                reason: "not a WebAssembly file (it does not begin with the `\\0asm` header)"
                    .into(),
            });
        }
        let module = LoadedModule::compile(
            &self.engine,
            (&self.filter_linker, &self.action_linker),
            self.cache.as_ref(),
            name,
            path.map(Path::to_path_buf),
            bytes,
        )?;
        if let Some(store) = &self.module_store
            && let Err(e) = store.keep(&module.digest, bytes)
        {
            // Runs still happen and are recorded; only replay of them needs the file.
            tracing::warn!(module = %module.label(), error = %e, "cannot keep the module for recorded runs");
        }
        Ok(module)
    }

    /// Reads and compiles a module file; one over the size cap is refused unread.
    pub fn load_file(&self, name: &str, path: &Path) -> Result<LoadedModule, ModuleError> {
        if let Some(builtin) = crate::builtins::named(name) {
            return self.compile(name, None, builtin.wasm);
        }
        let read_error = |e: std::io::Error| ModuleError::Read {
            name: name.to_string(),
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        self.check_size(name, size)?;
        let bytes = std::fs::read(path).map_err(read_error)?;
        self.compile(name, Some(path), &bytes)
    }

    /// Largest module accepted, in bytes.
    pub fn max_module_bytes(&self) -> u64 {
        self.max_module_bytes
    }

    fn check_size(&self, name: &str, size: u64) -> Result<(), ModuleError> {
        if size > self.max_module_bytes {
            return Err(ModuleError::TooLarge {
                name: name.to_string(),
                size,
                max: self.max_module_bytes,
            });
        }
        Ok(())
    }
}

fn engine_config(settings: &RuntimeSettings, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(settings.tuning.memory_init_cow);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        let n = settings.pool_instances;
        pool.total_component_instances(n)
            .total_core_instances(n * 16)
            .total_memories(n * 8)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_memories_per_module(1)
            .max_memory_size(usize::try_from(settings.max_memory).unwrap_or(usize::MAX))
            .linear_memory_keep_resident(settings.tuning.keep_resident)
            .table_keep_resident(settings.tuning.keep_resident)
            // Each slot that held an instance keeps up to `keep_resident`
            // resident; reusing recently used slots before cold ones bounds
            // that at (instances at once + n) slots.
            .max_unused_warm_slots(n)
            .pagemap_scan(if settings.tuning.pagemap_scan {
                Enabled::Auto
            } else {
                Enabled::No
            });
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}
