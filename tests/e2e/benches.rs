//! Every benchmark section once, in smoke mode, so that none can rot: each
//! runs its real code path (and its own assertions on the results) with one
//! tiny sample. No timing is asserted here; `cargo bench` measures.

#[path = "../../host/benches/suite/mod.rs"]
mod suite;

fn smoke(section: &str) {
    let tables = suite::run(suite::Mode::Smoke, &[section.to_string()]);
    assert!(!tables.is_empty(), "{section}: no table");
    for table in &tables {
        assert!(
            !table.rows.is_empty(),
            "{section}: empty table {}",
            table.title
        );
        for row in &table.rows {
            assert_eq!(
                row.len(),
                table.columns.len(),
                "{section}: ragged row {row:?}"
            );
        }
        println!("{}", table.render());
    }
}

#[test]
fn filter_cost() {
    smoke("filter");
}

#[test]
fn ordering() {
    smoke("ordering");
}

#[test]
fn languages() {
    smoke("languages");
}

#[test]
fn module_load() {
    smoke("modules");
}

#[test]
fn throughput() {
    smoke("throughput");
}

#[test]
fn journal() {
    smoke("journal");
}

#[test]
fn queue_drain() {
    smoke("queue");
}

#[test]
fn memory() {
    smoke("memory");
}

#[test]
fn web_page() {
    smoke("ui");
}

#[test]
fn kubernetes_watch() {
    smoke("kube");
}

#[test]
fn distributed_watch() {
    smoke("distribute");
}
