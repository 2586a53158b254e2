//! A filter that keeps a count in a guest global: it passes an event only
//! when it has seen an earlier one in the same instance. With a fresh
//! instance per event it never passes; with `isolation: pooled` it does from
//! the second event on. Event data `{"panic": true}` makes it trap.

use std::sync::atomic::{AtomicU64, Ordering};

use wasmtrigger_guest::{Event, Filter, export_filter, info};

static SEEN: AtomicU64 = AtomicU64::new(0);

struct Sticky;

impl Filter for Sticky {
    fn filter(event: Event) -> Result<bool, String> {
        let data = event.json()?;
        if data["panic"] == true {
            panic!("sticky asked to panic");
        }
        let seen = SEEN.fetch_add(1, Ordering::Relaxed) + 1;
        info!("sticky has seen {seen} events in this instance");
        Ok(seen > 1)
    }
}

export_filter!(Sticky);
