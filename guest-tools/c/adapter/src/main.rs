//! Writes the WASI preview1 reactor adapter to the path given as the only argument.

fn main() {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: wasi-adapter-out PATH");
        std::process::exit(2);
    };
    let bytes = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
    if let Err(e) = std::fs::write(&path, bytes) {
        eprintln!("cannot write {}: {e}", path.to_string_lossy());
        std::process::exit(1);
    }
}
