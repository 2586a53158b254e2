//! An action that misbehaves in the way its params ask, so tests can check
//! that the host contains each kind of misbehaviour as one failed run.
//!
//! Params: `{"mode": "...", ...}` with modes
//! `ok`, `fail`, `loop`, `alloc`, `panic`, `read-file` (`path`), `env` (`name`),
//! `print` (`bytes`), `sleep` (`ms`; returns the event data), `flaky` (`failures`: fail until the
//! kv counter `attempts` passes it), `echo-params`.

use std::hint::black_box;

use serde::Deserialize;
use wasmtrigger_guest::{Action, Event, export_action, info, kv, params_as};

#[derive(Deserialize)]
struct Params {
    mode: String,
    path: Option<String>,
    name: Option<String>,
    bytes: Option<usize>,
    ms: Option<u64>,
    failures: Option<i64>,
}

struct Hostile;

impl Action for Hostile {
    fn run(event: Event, params: String) -> Result<String, String> {
        let p: Params = params_as(&params)?;
        info!("hostile mode {} starting", p.mode);
        match p.mode.as_str() {
            "ok" => Ok(format!("ok {}", event.id)),
            "fail" => Err("failing on purpose".to_string()),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "panic" => panic!("hostile guest panics on purpose"),
            "read-file" => {
                let path = p.path.unwrap_or_else(|| "/etc/passwd".into());
                std::fs::read_to_string(&path)
                    .map(|text| format!("read {} bytes: {text}", text.len()))
                    .map_err(|e| format!("cannot read {path}: {e}"))
            }
            "env" => {
                let name = p.name.unwrap_or_else(|| "HOME".into());
                let all = std::env::vars().count();
                match std::env::var(&name) {
                    Ok(value) => Ok(format!("{name}={value} ({all} vars)")),
                    Err(_) => Err(format!("{name} is not visible ({all} vars visible)")),
                }
            }
            "print" => {
                let total = p.bytes.unwrap_or(8 << 20);
                let line = "x".repeat(1023) + "\n";
                let mut written = 0;
                while written < total {
                    print!("{line}");
                    written += line.len();
                }
                Ok(format!("printed {written} bytes"))
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(p.ms.unwrap_or(1000)));
                Ok(event.data)
            }
            "flaky" => {
                let attempt = kv::increment("attempts", 1).map_err(|e| format!("kv: {e:?}"))?;
                if attempt <= p.failures.unwrap_or(2) {
                    Err(format!("flaky failure on attempt {attempt}"))
                } else {
                    Ok(format!("succeeded on attempt {attempt}"))
                }
            }
            "echo-params" => Ok(params),
            other => Err(format!("unknown mode {other}")),
        }
    }
}

export_action!(Hostile);
