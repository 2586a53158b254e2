//! Fetches a URL returning JSON, takes the number at a JSON pointer, and keeps
//! a rolling aggregate of the last `window` samples in kv (a periodic
//! aggregation loop; run it on a schedule such as `every: 10s`).
//!
//! Params: `url`, `pointer` (e.g. `/price`, default `/value`), `window`
//! (default 10), `key` (kv key, default `aggregate`). The output and the kv
//! value are `{"samples": n, "window": [...], "min", "max", "mean", "last"}`.
//! The update uses compare-and-swap, so concurrent runs never lose a sample.

use serde::{Deserialize, Serialize};
use wasmtrigger_guest::{Action, Event, export_action, http, kv, params_as};

#[derive(Deserialize)]
struct Params {
    url: String,
    #[serde(default = "default_pointer")]
    pointer: String,
    #[serde(default = "default_window")]
    window: usize,
    #[serde(default = "default_key")]
    key: String,
}

fn default_pointer() -> String {
    "/value".into()
}
fn default_window() -> usize {
    10
}
fn default_key() -> String {
    "aggregate".into()
}

#[derive(Default, Serialize, Deserialize)]
struct Aggregate {
    samples: u64,
    window: Vec<f64>,
    min: f64,
    max: f64,
    mean: f64,
    last: f64,
}

impl Aggregate {
    fn add(&mut self, value: f64, size: usize) {
        self.samples += 1;
        self.last = value;
        self.window.push(value);
        let excess = self.window.len().saturating_sub(size.max(1));
        self.window.drain(..excess);
        self.min = self.window.iter().copied().fold(f64::INFINITY, f64::min);
        self.max = self
            .window
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        self.mean = self.window.iter().sum::<f64>() / self.window.len() as f64;
    }
}

struct FetchStore;

impl Action for FetchStore {
    fn run(_event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        let response = http::get(&p.url).map_err(|e| format!("fetch: {}", e.describe()))?;
        if !response.is_success() {
            return Err(format!("{} answered {}", p.url, response.status));
        }
        let body = response.json()?;
        let value = body
            .pointer(&p.pointer)
            .and_then(|v| v.as_f64())
            .ok_or_else(|| format!("no number at {} in the response", p.pointer))?;
        // Read, update, and swap only if nobody changed it meanwhile; else retry.
        for _ in 0..32 {
            let old = kv::get(&p.key).map_err(|e| e.describe())?;
            let mut aggregate: Aggregate = match &old {
                Some(text) => wasmtrigger_guest::serde_json::from_str(text).unwrap_or_default(),
                None => Aggregate::default(),
            };
            aggregate.add(value, p.window);
            let new =
                wasmtrigger_guest::serde_json::to_string(&aggregate).map_err(|e| e.to_string())?;
            if kv::compare_and_swap(&p.key, old.as_deref(), Some(&new)).map_err(|e| e.describe())? {
                return Ok(new);
            }
        }
        Err("the aggregate kept changing under concurrent runs; giving up".into())
    }
}

export_action!(FetchStore);
