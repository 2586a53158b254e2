//! wasmtime's own floor for a component: the same component in the same
//! engine (same pool, same settings) with nothing of ours around it — a
//! store holding only a default WASI context (wasmtime-wasi's own), `log` a
//! no-op, any other import stubbed to trap. What the engine's rows cost
//! above these is the engine's share (capabilities, limiter, deadline,
//! captured output, timers).

use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtrigger::capabilities::bindings::filter::FilterPre;
use wasmtrigger::capabilities::bindings::wasmtrigger::plugin::log::Level;
use wasmtrigger::capabilities::bindings::{WitError, WitEvent};
use wasmtrigger::event::Event;
use wasmtrigger::runtime::{LoadedModule, Runtime};

use super::{Mode, per_iter};

/// Store data of the floor: WASI and nothing else.
struct Bare {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Per-call costs of the bare component.
pub struct Floor {
    /// Instantiate and drop, nothing called.
    pub instantiate: Duration,
    /// Instantiate, call the filter once, drop.
    pub fresh: Duration,
}

/// Measures `module` bare in `rt`'s engine.
pub async fn floor(
    mode: Mode,
    rt: &Runtime,
    module: &LoadedModule,
    event: &Event,
    iters: usize,
) -> Floor {
    let engine = rt.engine();
    // The compiled component from the engine's cache (the module was just
    // loaded through it), so the interpreters are not compiled again.
    let component = match rt.cache().and_then(|c| c.load(engine, &module.digest)) {
        Some(component) => component,
        None => {
            let path = module.path.as_ref().expect("a module file");
            Component::from_file(engine, path).expect("component compiles")
        }
    };
    let mut linker: Linker<Bare> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("WASI");
    linker
        .instance("wasmtrigger:plugin/log@0.1.0")
        .expect("log interface")
        .func_wrap("log", |_, (_level, _message): (Level, String)| Ok(()))
        .expect("no-op log");
    // The filter world's other interface: the Python and JavaScript
    // ready-replicas count events with `increment` (answered 1 here); the
    // rest trap.
    let mut kv = linker
        .instance("wasmtrigger:plugin/kv@0.1.0")
        .expect("kv interface");
    kv.func_wrap(
        "increment",
        |_, (_key, _delta): (String, i64)| -> wasmtime::Result<(Result<i64, WitError>,)> {
            Ok((Ok(1),))
        },
    )
    .expect("kv increment");
    for name in ["get", "set", "delete", "list-keys", "compare-and-swap"] {
        kv.func_new(name, |_, _, _, _| {
            Err(wasmtime::Error::msg("kv is not linked in the floor"))
        })
        .expect("kv stub");
    }
    let pre =
        FilterPre::new(linker.instantiate_pre(&component).expect("pre")).expect("filter world");
    let store = || {
        let bare = Bare {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(engine, bare);
        store.set_epoch_deadline(u64::MAX / 2);
        store
    };
    let instantiate = per_iter(mode, iters, async || {
        let mut store = store();
        pre.instantiate_async(&mut store)
            .await
            .expect("instantiates");
    })
    .await;
    let wit_event = WitEvent::from(event);
    let fresh = per_iter(mode, iters, async || {
        let mut store = store();
        let guest = pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiates");
        let pass = guest.call_filter(&mut store, &wit_event).await;
        assert!(pass.expect("no trap").expect("passes"));
    })
    .await;
    Floor { instantiate, fresh }
}
