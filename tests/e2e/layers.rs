//! The library's layers, enforced: every `crate::` import under `host/src`
//! points to the same layer or a lower one, and no modules import each other
//! in a cycle. A contributor who breaks a rule finds out here, from
//! `./scripts/test`, not in review. The layers (README, "Developing"):
//!
//! - L0 vocabulary: event, cel, config, builtins, redact, failpoint;
//! - L1 records and clients: state, runs, logging, the Kubernetes client,
//!   leader election, the Trigger CRD and rbac;
//! - L2 sandbox: capabilities, runtime, metrics;
//! - L3 event flow: trigger, dispatch, sources, trigger_set;
//! - L4 drivers: server, reload, the Trigger-object sync (never each other);
//! - L5: engine, which nothing imports.
//!
//! The binary (`main.rs`, `cli/`) sits on top and is not checked here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support;

/// Each module (a top-level module, or one of `kube`'s) and its layer.
const LAYERS: &[(&str, u8)] = &[
    ("event", 0),
    ("cel", 0),
    ("config", 0),
    ("builtins", 0),
    ("redact", 0),
    ("failpoint", 0),
    ("state", 1),
    ("runs", 1),
    ("logging", 1),
    ("kube", 1),
    ("kube::client", 1),
    ("kube::leader", 1),
    ("kube::crd", 1),
    ("kube::rbac", 1),
    ("capabilities", 2),
    ("runtime", 2),
    ("metrics", 2),
    ("distribute", 2),
    ("trigger", 3),
    ("dispatch", 3),
    ("sources", 3),
    ("trigger_set", 3),
    ("replay", 3),
    ("server", 4),
    ("reload", 4),
    ("kube::sync", 4),
    ("engine", 5),
];

/// Drivers must not import each other.
const DRIVERS: &[&str] = &["server", "reload", "kube::sync"];

fn layer(node: &str) -> Option<u8> {
    LAYERS.iter().find(|(n, _)| *n == node).map(|(_, l)| *l)
}

fn source_files(dir: &Path) -> Vec<PathBuf> {
    support::walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect()
}

/// The module a file belongs to: its top-level module, or `kube::<file>`.
fn node_of_file(relative: &Path) -> String {
    let parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .filter(|p| p != "mod")
        .collect();
    match parts.as_slice() {
        [kube, sub, ..] if kube == "kube" => format!("kube::{sub}"),
        [first, ..] => first.clone(),
        [] => String::new(),
    }
}

/// The module a `crate::a::b` path points into.
fn node_of_path(path: &str) -> String {
    let mut segments = path.split("::");
    let first = segments.next().unwrap_or_default();
    match segments.next() {
        Some(second) if first == "kube" && layer(&format!("kube::{second}")).is_some() => {
            format!("kube::{second}")
        }
        _ => first.to_string(),
    }
}

/// Every `crate::` path in the file's code, test modules left out.
fn crate_paths(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]\nmod ").next().unwrap_or(text);
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let path: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        paths.push(path.trim_end_matches(':').to_string());
        rest = after;
    }
    paths
}

/// The broken rules in the tree at `src`, and how many modules import others.
fn problems_in(src: &Path) -> (Vec<String>, usize) {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for file in source_files(src) {
        let relative = file.strip_prefix(src).unwrap().to_path_buf();
        let name = relative.to_string_lossy();
        if name == "main.rs"
            || name == "lib.rs"
            || name == "proptests.rs"
            || name.starts_with("cli/")
        {
            continue;
        }
        let from = node_of_file(&relative);
        let Some(from_layer) = layer(&from) else {
            problems.push(format!(
                "{name}: module `{from}` has no layer; add it to LAYERS in tests/e2e/layers.rs"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).unwrap();
        for path in crate_paths(&text) {
            let to = node_of_path(&path);
            if to == from || to.is_empty() {
                continue;
            }
            match layer(&to) {
                None => problems.push(format!("{name}: `crate::{path}` is in `{to}`, which has no layer")),
                Some(to_layer) if to_layer > from_layer => problems.push(format!(
                    "{name}: `crate::{path}` imports upward, from `{from}` (L{from_layer}) to `{to}` (L{to_layer})"
                )),
                Some(_) if DRIVERS.contains(&from.as_str()) && DRIVERS.contains(&to.as_str()) => {
                    problems.push(format!("{name}: driver `{from}` imports driver `{to}` (`crate::{path}`)"))
                }
                Some(_) => {}
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }
    // Depth-first search for a path that comes back to where it started.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(start) = path.iter().position(|n| n == node) {
            cycles.push(format!("{} -> {node}", path[start..].join(" -> ")));
            return;
        }
        if done.contains(node) {
            return;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, path, done, cycles);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let (mut done, mut cycles) = (BTreeSet::new(), Vec::new());
    for node in edges.keys() {
        visit(node, &edges, &mut Vec::new(), &mut done, &mut cycles);
    }
    problems.extend(cycles.into_iter().map(|c| format!("import cycle: {c}")));
    (problems, edges.len())
}

#[test]
fn imports_point_down_the_layers_and_never_in_a_cycle() {
    let (problems, modules) = problems_in(&support::repo().join("host/src"));
    assert!(
        problems.is_empty(),
        "layer rules broken:\n{}",
        problems.join("\n")
    );
    assert!(modules > 15, "the scan found the modules: {modules}");
}

#[test]
fn the_binary_is_thin_and_no_source_file_grows_past_700_lines() {
    let src = support::repo().join("host/src");
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap().lines().count();
    let main = lines(&src.join("main.rs"));
    assert!(
        main <= 100,
        "main.rs has {main} lines; its work belongs in cli/"
    );
    let long: Vec<String> = source_files(&src)
        .into_iter()
        .filter(|p| lines(p) > 700)
        .map(|p| format!("{} ({} lines)", p.display(), lines(&p)))
        .collect();
    assert!(long.is_empty(), "split by concern: {long:?}");
}

#[test]
fn the_checker_sees_an_upward_import_a_cycle_and_a_module_without_a_layer() {
    let ws = support::Workspace::new();
    ws.write("src/engine.rs", "use crate::server::Server;\n");
    ws.write(
        "src/server/mod.rs",
        "use crate::engine::Engine;\nuse crate::reload::X;\n",
    );
    ws.write("src/config/mod.rs", "use crate::runs::RunRecord;\n#[cfg(test)]\nmod tests {\n    use crate::engine::Engine;\n}\n");
    ws.write("src/gadget.rs", "use crate::event::Event;\n");
    let (problems, _) = problems_in(&ws.path().join("src"));
    let text = problems.join("\n");
    for expected in [
        "server/mod.rs: `crate::engine::Engine` imports upward",
        "driver `server` imports driver `reload`",
        "config/mod.rs: `crate::runs::RunRecord` imports upward",
        "import cycle: engine -> server -> engine",
        "module `gadget` has no layer",
    ] {
        assert!(text.contains(expected), "expected {expected:?} in:\n{text}");
    }
    assert!(
        !text.contains("config/mod.rs: `crate::engine"),
        "test modules are not counted:\n{text}"
    );
}

#[test]
fn path_and_file_names_map_to_modules() {
    assert_eq!(
        crate_paths("use crate::engine::Shared;\nfn f() { crate::kube::sync::run(); }"),
        ["engine::Shared", "kube::sync::run"]
    );
    assert_eq!(node_of_path("kube::sync::run"), "kube::sync");
    assert_eq!(node_of_path("kube::KubeConnector"), "kube");
    assert_eq!(node_of_file(Path::new("kube/client.rs")), "kube::client");
    assert_eq!(node_of_file(Path::new("config/load/mod.rs")), "config");
    assert!(layer("engine") > layer("server") && layer("server") > layer("trigger_set"));
    assert!(crate_paths("#[cfg(test)]\nmod tests {\n use crate::engine::X;\n}").is_empty());
}
