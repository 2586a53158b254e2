//! `wasmtrigger test PATH...`: finds fixture files, loads the modules they
//! name (next to the fixture, else in `--modules`, or `builtin:NAME`),
//! compiles each module once, runs every fixture
//! ([`wasmtrigger::replay::fixture`]) and prints one line per fixture, the
//! failures under it, and `N passed, M failed`. Exit 0: all passed; 1: a
//! fixture failed or could not be read; 2: no fixtures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::BadInput;
use super::args::{Format, TestArgs};
use wasmtrigger::capabilities::HostServices;
use wasmtrigger::capabilities::secrets::SecretStore;
use wasmtrigger::replay::fixture::{self, Checked, Fixture};
use wasmtrigger::runtime::{LoadedModule, Runtime, RuntimeSettings};

/// Most log lines shown under a failed fixture.
const SHOWN_LOGS: usize = 20;
/// Largest fixture file read: a config document's bound.
const MAX_FIXTURE_BYTES: u64 = wasmtrigger::config::document::MAX_DOCUMENT_BYTES as u64;

/// A fixture file's text; a larger one than [`MAX_FIXTURE_BYTES`] is refused unread.
fn read(file: &Path) -> Result<String, String> {
    let size = std::fs::metadata(file).map_err(|e| e.to_string())?.len();
    if size > MAX_FIXTURE_BYTES {
        return Err(format!(
            "{size} bytes: larger than the {} MiB a fixture may have",
            MAX_FIXTURE_BYTES >> 20
        ));
    }
    std::fs::read_to_string(file).map_err(|e| e.to_string())
}

/// Modules, compiled once per file.
struct Modules {
    runtime: Arc<Runtime>,
    dir: Option<PathBuf>,
    loaded: HashMap<PathBuf, Result<Arc<LoadedModule>, String>>,
}

impl Modules {
    /// The module `name` as a fixture in `fixture_dir` means it.
    async fn get(&mut self, fixture_dir: &Path, name: &str) -> Result<Arc<LoadedModule>, String> {
        let builtin = wasmtrigger::builtins::is_builtin(name);
        let path = if builtin {
            PathBuf::from(name)
        } else {
            let near = fixture_dir.join(name);
            match &self.dir {
                Some(dir) if !near.is_file() => dir.join(name),
                _ => near,
            }
        };
        if !builtin && !path.is_file() {
            return Err(format!(
                "module {name} is neither next to the fixture ({}){}",
                fixture_dir.display(),
                match &self.dir {
                    Some(dir) => format!(" nor in --modules {}", dir.display()),
                    None => " (give the directory that holds it with --modules DIR)".into(),
                }
            ));
        }
        if let Some(done) = self.loaded.get(&path) {
            return done.clone();
        }
        if builtin && wasmtrigger::builtins::named(name).is_none() {
            return Err(wasmtrigger::builtins::unknown(name));
        }
        let runtime = self.runtime.clone();
        let (label, file) = (name.to_string(), path.clone());
        let loaded = tokio::task::spawn_blocking(move || runtime.load_file(&label, &file))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map(Arc::new).map_err(|e| e.to_string()));
        self.loaded.insert(path, loaded.clone());
        loaded
    }
}

pub(crate) async fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for path in &args.paths {
        files.extend(fixture::discover(path).map_err(|e| BadInput(e.to_string()))?);
    }
    if files.is_empty() {
        return Err(BadInput(format!(
            "no fixture files ({}) under {}",
            fixture::ENDINGS.map(|e| format!("*{e}")).join(", "),
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let settings = RuntimeSettings {
        cache_dir: super::invoke::default_cache_dir(),
        ..RuntimeSettings::default()
    };
    let mut modules = Modules {
        runtime: Arc::new(Runtime::new(&settings)?),
        dir: args.modules.clone(),
        loaded: HashMap::new(),
    };
    let services = HostServices::new(SecretStore::default()).map_err(BadInput)?;
    let mut results = Vec::new();
    for file in &files {
        let shown = file.display().to_string();
        let fixtures = match read(file)
            .map_err(|e| format!("{shown}: {e}"))
            .and_then(|text| fixture::parse(file, &text).map_err(|e| e.to_string()))
        {
            Ok(fixtures) => fixtures,
            Err(why) => {
                let checked = Checked::broken(&shown, "(unreadable)", why);
                report(args.output, &checked);
                results.push(checked);
                continue;
            }
        };
        let dir = file.parent().unwrap_or(Path::new("."));
        let many = fixtures.len() > 1;
        for (i, fx) in fixtures.iter().enumerate() {
            let name = fx.name.clone().unwrap_or_else(|| {
                let stem = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if many { format!("{stem}[{i}]") } else { stem }
            });
            let checked = match load(&mut modules, dir, fx).await {
                Ok((filter, action)) => {
                    fixture::check(
                        &modules.runtime,
                        services.clone(),
                        (&shown, &name),
                        fx,
                        (filter.as_deref(), action.as_deref()),
                    )
                    .await
                }
                Err(why) => Checked::broken(&shown, &name, why),
            };
            report(args.output, &checked);
            results.push(checked);
        }
    }
    let failed = results.iter().filter(|r| !r.passed).count();
    let passed = results.len() - failed;
    match args.output {
        Format::Table => println!("{passed} passed, {failed} failed"),
        format => super::remote::print_as(
            format,
            &serde_json::json!({ "passed": passed, "failed": failed, "results": results }),
            String::new,
        )?,
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The fixture's filter and action modules.
async fn load(
    modules: &mut Modules,
    dir: &Path,
    fx: &Fixture,
) -> Result<(Option<Arc<LoadedModule>>, Option<Arc<LoadedModule>>), String> {
    let mut filter = None;
    if let Some(name) = fx.filter.as_ref().and_then(|f| f.module.as_deref()) {
        filter = Some(
            modules
                .get(dir, name)
                .await
                .map_err(|e| format!("filter.module: {e}"))?,
        );
    }
    let mut action = None;
    if let Some(spec) = &fx.action {
        action = Some(
            modules
                .get(dir, &spec.module)
                .await
                .map_err(|e| format!("action.module: {e}"))?,
        );
    }
    Ok((filter, action))
}

/// One fixture's line, as it finishes (tables only): failures under a
/// failed one, then its calls and log lines.
fn report(format: Format, checked: &Checked) {
    if !matches!(format, Format::Table) {
        return;
    }
    let mark = if checked.passed { "ok  " } else { "FAIL" };
    println!("{mark}  {}: {}", checked.file, checked.name);
    if checked.passed {
        return;
    }
    for failure in &checked.failures {
        for line in failure.lines() {
            println!("      {line}");
        }
    }
    if !checked.calls.is_empty() && !checked.failures.iter().any(|f| f.starts_with("calls")) {
        println!("      calls made:");
        for call in &checked.calls {
            println!("        {call}");
        }
    }
    if !checked.logs.is_empty() {
        println!("      log:");
        for line in checked.logs.iter().take(SHOWN_LOGS) {
            println!("        {line}");
        }
        if checked.logs.len() > SHOWN_LOGS {
            println!("        … {} more", checked.logs.len() - SHOWN_LOGS);
        }
    }
}
