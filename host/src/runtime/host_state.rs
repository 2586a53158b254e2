//! What a `Store` holds for one invocation: WASI with nothing ambient, the
//! resource limiter, and the capabilities granted to the invoking trigger.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::stdio::{GuestOutput, Stream};
use crate::capabilities::Capabilities;

/// Store data of one invocation.
pub struct HostState {
    /// Built on the guest's first WASI call: most filters make none, and
    /// creating a context (it seeds two random-number generators) is a
    /// measurable part of a fresh instance (docs/performance.md).
    wasi: Option<Box<WasiCtx>>,
    /// Where the WASI context, once built, sends the guest's stdout and stderr.
    output: Arc<GuestOutput>,
    table: ResourceTable,
    /// Memory accounting for the whole invocation.
    pub(crate) limiter: Limiter,
    /// What the guest may use, and who it is (for logs).
    pub(crate) caps: Capabilities,
}

impl HostState {
    /// Builds the state. WASI, when the guest first calls it, gets captured
    /// stdio and no env, args, preopened directories or network; clocks and
    /// randomness are allowed.
    pub fn new(caps: Capabilities, output: &Arc<GuestOutput>, memory_limit: u64) -> Self {
        HostState {
            wasi: None,
            output: output.clone(),
            table: ResourceTable::new(),
            limiter: Limiter::new(memory_limit),
            caps,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &self.output;
        let ctx = self.wasi.get_or_insert_with(|| {
            let ctx = WasiCtxBuilder::new()
                .stdout(output.stream(Stream::Stdout))
                .stderr(output.stream(Stream::Stderr))
                .allow_tcp(false)
                .allow_udp(false)
                .allow_ip_name_lookup(false)
                .build();
            Box::new(ctx)
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

/// What one table element is counted as against the memory limit (the host
/// keeps a pointer and its type information per element; this errs high).
pub const TABLE_ELEMENT_BYTES: u64 = 16;

/// Caps the *total* memory of an invocation — every linear memory (a
/// component may have one per core module) and every table, counted at
/// [`TABLE_ELEMENT_BYTES`] per element — and remembers that it said no, so a
/// guest that aborts on allocation failure is reported as out of memory.
pub struct Limiter {
    limit: u64,
    used: u64,
    denied: bool,
    counts: StoreLimits,
}

impl Limiter {
    fn new(limit: u64) -> Self {
        Limiter {
            limit,
            used: 0,
            denied: false,
            counts: StoreLimitsBuilder::new()
                .instances(1000)
                .tables(100)
                .memories(100)
                .table_elements(1_000_000)
                .build(),
        }
    }

    /// Whether a memory growth was refused during this invocation.
    pub fn denied(&self) -> bool {
        self.denied
    }

    /// Forgets an earlier refusal, for the next call on a reused instance
    /// (the memory it already holds stays counted).
    pub fn reset_denied(&mut self) {
        self.denied = false;
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current) as u64;
        let over_max = maximum.is_some_and(|m| desired > m);
        if over_max || self.used.saturating_add(growth) > self.limit {
            self.denied = true;
            return Ok(false);
        }
        self.used += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if !self.counts.table_growing(current, desired, maximum)? {
            self.denied = true;
            return Ok(false);
        }
        let growth = (desired.saturating_sub(current) as u64).saturating_mul(TABLE_ELEMENT_BYTES);
        if self.used.saturating_add(growth) > self.limit {
            self.denied = true;
            return Ok(false);
        }
        self.used += growth;
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }

    fn tables(&self) -> usize {
        self.counts.tables()
    }

    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wasi_context_is_built_on_first_use_and_kept_for_the_store() {
        let services = crate::capabilities::HostServices::new(Default::default()).unwrap();
        let (trigger, module): (Arc<str>, Arc<str>) = ("t".into(), "m@0".into());
        let caps = Capabilities {
            trigger: trigger.clone(),
            module: module.clone(),
            kv: None,
            access: None,
            services,
            http_requests: 0,
            trace: None,
            replay: None,
            dry_run: None,
        };
        let output = GuestOutput::new(trigger, module, 1024);
        let mut state = HostState::new(caps, &output, 1 << 20);
        assert!(state.wasi.is_none(), "no context before the guest asks");
        let first: *const WasiCtx = state.ctx().ctx;
        assert!(state.wasi.is_some());
        let second: *const WasiCtx = state.ctx().ctx;
        // The guest's WASI resources (streams, pollables) live in this one
        // context for the whole invocation.
        assert_eq!(first, second, "one context per store");
    }

    #[test]
    fn tables_count_toward_the_memory_limit() {
        let mut limiter = Limiter::new(1 << 20);
        assert!(
            limiter.table_growing(0, 1000, None).unwrap(),
            "16 KB of table fits"
        );
        assert!(
            !limiter.table_growing(1000, 100_000, None).unwrap(),
            "1.6 MB of table does not fit 1 MiB"
        );
        assert!(limiter.denied());
        // What the table holds is counted against linear memory too.
        assert!(!limiter.memory_growing(0, 1 << 20, None).unwrap());
        assert!(limiter.memory_growing(0, (1 << 20) - 16_000, None).unwrap());
    }
}
