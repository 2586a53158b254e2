//! The benchmark suite: `cargo bench -p wasmtrigger --bench perf [-- SECTION...]`
//! prints markdown tables (see docs/performance.md). `--smoke` runs each
//! measurement once, as the tests do. Sections: filter, languages, modules,
//! throughput, ordering, recording, journal, queue, memory, ui, kube, distribute.

#[path = "suite/mod.rs"]
mod suite;
#[path = "../../tests/support/mod.rs"]
mod support;

fn main() {
    let mut mode = suite::Mode::Full;
    let mut only = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--smoke" => mode = suite::Mode::Smoke,
            // cargo passes --bench to harness=false targets.
            "--bench" => {}
            section if suite::SECTIONS.contains(&section) => only.push(arg.clone()),
            other => {
                eprintln!(
                    "unknown argument `{other}`; expected --smoke or sections among {:?}",
                    suite::SECTIONS
                );
                std::process::exit(2);
            }
        }
    }
    println!(
        "# wasmtrigger benchmarks ({} mode)\n\nmachine: {} CPUs, {}\n",
        if mode == suite::Mode::Full {
            "full"
        } else {
            "smoke"
        },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::env::consts::ARCH
    );
    for table in suite::run(mode, &only) {
        println!("{}", table.render());
    }
}
