//! The commands that need no running engine: `check`, `invoke`, `modules`,
//! `new`, `rbac` and `crd`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use super::args::{ConfigArgs, InvokeArgs, LangArg, ModulesArgs, NewArgs, RbacArgs, WorldArg};
use super::invoke::{InvokeCommandError, InvokeOutcome, InvokeRequest};
use super::scaffold::{Lang, scaffold};
use wasmtrigger::capabilities::grants::{Grants, HttpGrant, check_secret_name};
use wasmtrigger::config::{self, EngineOverrides, Limits};
use wasmtrigger::runtime::{Runtime, RuntimeSettings, World};

pub(crate) fn rbac(args: RbacArgs) -> anyhow::Result<ExitCode> {
    // With Trigger objects, the files may hold no triggers (as for `run`).
    let overrides = EngineOverrides {
        allow_no_triggers: args.trigger_objects.is_some(),
        ..Default::default()
    };
    let config = match wasmtrigger::config::load_declarations(&args.config, &overrides) {
        Ok(config) => config,
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let options = wasmtrigger::kube::rbac::RbacOptions {
        namespace: args.namespace,
        service_account: args.service_account,
        name: args.name,
        leader_lease: args.leader_election,
        trigger_objects: args.trigger_objects,
    };
    print!(
        "{}",
        wasmtrigger::kube::rbac::derive(&config, &options).to_yaml(&options)
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn check(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let report = super::check::check(
        &args.config,
        args.modules.as_deref(),
        &super::run::overrides(&args.engine),
    )
    .await
    .context("cannot start the wasm runtime")?;
    for problem in &report.problems {
        println!("error: {problem}");
    }
    for warning in &report.warnings {
        println!("warning: {warning}");
    }
    let triggers = report
        .config
        .as_ref()
        .map(|c| c.triggers.len())
        .unwrap_or(0);
    for m in &report.modules {
        let worlds: Vec<_> = m.worlds().iter().map(|w| w.name()).collect();
        println!(
            "module {} ({}, {} bytes)",
            m.label(),
            worlds.join("+"),
            m.size
        );
    }
    if report.ok() {
        println!(
            "ok: {triggers} trigger(s), {} module(s)",
            report.modules.len()
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{} problem(s) found", report.problems.len());
        Ok(ExitCode::FAILURE)
    }
}

pub(crate) async fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let mut grants = Grants::default();
    for pattern in &args.allow_http {
        grants
            .http
            .push(HttpGrant::parse(pattern).map_err(|e| anyhow::anyhow!("--allow-http: {e}"))?);
    }
    for name in &args.allow_secret {
        check_secret_name(name).map_err(|e| anyhow::anyhow!("--allow-secret: {e}"))?;
        grants.secrets.push(name.clone());
    }
    let event = args.data.read()?.unwrap_or_else(|| "{}".to_string());
    let request = InvokeRequest {
        module: args.module,
        event,
        params: args.params,
        world: args.world.map(|w| match w {
            WorldArg::Filter => World::Filter,
            WorldArg::Action => World::Action,
        }),
        limits: Limits {
            timeout: args.timeout,
            memory: args.memory,
        },
        state_dir: args.state_dir,
        grants,
        http: config::HttpLimits::default(),
        cache_dir: if args.no_cache {
            None
        } else {
            super::invoke::default_cache_dir()
        },
        secrets: config::SecretsSettings {
            dir: args.secrets.secrets_dir,
            env_prefix: args.secrets.secrets_env_prefix,
            kubernetes: None,
        },
    };
    match super::invoke::invoke(request).await {
        Ok(InvokeOutcome::Filter(pass)) => println!("{pass}"),
        Ok(InvokeOutcome::Action(output)) => println!("{output}"),
        Err(InvokeCommandError::Guest(e)) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn modules(args: ModulesArgs) -> anyhow::Result<ExitCode> {
    if args.builtin {
        return builtin_modules(&args);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&args.dir)
        .with_context(|| format!("cannot list {}", args.dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    files.sort();
    let runtime = Arc::new(Runtime::new(&RuntimeSettings::default())?);
    let mut rows = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let loaded = {
            let (runtime, name, path) = (runtime.clone(), name.clone(), path.clone());
            tokio::task::spawn_blocking(move || runtime.load_file(&name, &path)).await?
        };
        rows.push(match loaded {
            Ok(m) => serde_json::json!({
                "module": m.name,
                "version": m.version(),
                "digest": m.digest,
                "size": m.size,
                "worlds": m.worlds().iter().map(|w| w.name()).collect::<Vec<_>>(),
                "imports": m.imports,
                "exports": m.exports,
            }),
            Err(e) => serde_json::json!({"module": name, "error": e.to_string()}),
        });
    }
    super::remote::print_as(args.output, &rows, || module_table(&rows, &args.dir))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn new_project(args: NewArgs) -> anyhow::Result<ExitCode> {
    let world = match args.kind {
        WorldArg::Filter => World::Filter,
        WorldArg::Action => World::Action,
    };
    let lang = match args.lang {
        LangArg::Rust => Lang::Rust,
        LangArg::Python => Lang::Python,
        LangArg::Js => Lang::Js,
        LangArg::C => Lang::C,
        LangArg::Cpp => Lang::Cpp,
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    for file in scaffold(world, &args.name, lang, &dir)? {
        println!("wrote {}", file.display());
    }
    let name = &args.name;
    let (once, params) = match (lang, world) {
        (Lang::Rust, _) => ("rustup target add wasm32-wasip2", ""),
        (Lang::Python, _) => (
            "python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
            "",
        ),
        (Lang::Js, _) => ("npm install", ""),
        (Lang::C | Lang::Cpp, _) => (
            "install clang for wasm32-wasi, wit-bindgen and wasm-tools (build.sh and README.md say how)",
            "",
        ),
    };
    let params = if world == World::Action {
        " --params '{\"greeting\":\"hello\"}'"
    } else {
        params
    };
    println!("\nnext, in {}:", dir.display());
    println!("  {once}    # once");
    println!("  ./build.sh");
    println!("  wasmtrigger invoke {name}.wasm --file event.json{params}");
    println!("  wasmtrigger test    # runs sample.fixture.json, the module's first test");
    if world == World::Filter {
        println!(
            "  cp PATH/TO/log-event.wasm .    # the action triggers.yaml pairs the filter with"
        );
    }
    println!("  wasmtrigger run --config triggers.yaml --modules .    # leave it running");
    println!(
        "  curl -X POST --data @body.json http://127.0.0.1:7070/hooks/{name}    # from another shell"
    );
    println!("  wasmtrigger runs --trigger {name}");
    println!(
        "(the same steps, explained: {})",
        dir.join("README.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `modules --builtin`: what is embedded, its params schema and the grants it needs.
fn builtin_modules(args: &ModulesArgs) -> anyhow::Result<ExitCode> {
    let builtins = wasmtrigger::builtins::all();
    let rows: Vec<serde_json::Value> = builtins
        .iter()
        .map(|b| {
            serde_json::json!({
                "module": format!("{}{}", wasmtrigger::builtins::PREFIX, b.name),
                "version": b.version,
                "digest": b.sha256,
                "size": b.wasm.len(),
                "world": b.world,
                "about": b.about,
                "grants": b.grants,
                "params": serde_json::from_str::<serde_json::Value>(b.schema).unwrap_or_default(),
            })
        })
        .collect();
    super::remote::print_as(args.output, &rows, || {
        use std::fmt::Write;
        if rows.is_empty() {
            return format!(
                "this binary has no builtin modules ({}): rebuild it with the wasm32-wasip2 target installed\n",
                wasmtrigger::builtins::missing()
            );
        }
        let mut out = format!(
            "{:<24} {:<8} {:<13} {:<7} {:<40} GRANTS NEEDED\n",
            "MODULE", "VERSION", "DIGEST", "WORLD", "PARAMS"
        );
        for (row, b) in rows.iter().zip(builtins) {
            let schema = &row["params"];
            let required: Vec<&str> = schema["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str())
                .collect();
            let params: Vec<String> = schema["properties"]
                .as_object()
                .map(|p| {
                    p.keys()
                        .map(|k| {
                            if required.contains(&k.as_str()) {
                                format!("{k}*")
                            } else {
                                k.clone()
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let params = if params.is_empty() {
                "-".to_string()
            } else {
                params.join(" ")
            };
            let _ = writeln!(
                out,
                "{:<24} {:<8} {:<13} {:<7} {:<40} {}",
                row["module"].as_str().unwrap_or_default(),
                b.version,
                &b.sha256[..12],
                b.world,
                params,
                b.grants
            );
        }
        out.push_str(
            "(* required; `wasmtrigger modules --builtin -o json` has each params schema)\n",
        );
        out
    })?;
    Ok(ExitCode::SUCCESS)
}

fn module_table(rows: &[serde_json::Value], dir: &Path) -> String {
    use std::fmt::Write;
    if rows.is_empty() {
        return format!("no .wasm files in {}\n", dir.display());
    }
    let mut out = format!(
        "{:<28} {:<13} {:>9}  {:<14} IMPORTS\n",
        "MODULE", "VERSION", "SIZE", "WORLD"
    );
    for row in rows {
        let module = row["module"].as_str().unwrap_or_default();
        if let Some(error) = row["error"].as_str() {
            let _ = writeln!(out, "{module:<28} {error}");
            continue;
        }
        let list = |key: &str| -> Vec<String> {
            row[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let worlds = list("worlds");
        let imports = list("imports");
        // WASI imports are an implementation detail of the guest toolchain: summarise them.
        let wasi = imports.iter().filter(|i| i.starts_with("wasi:")).count();
        let mut shown: Vec<String> = imports
            .iter()
            .filter(|i| !i.starts_with("wasi:"))
            .map(|i| i.trim_start_matches("wasmtrigger:plugin/").to_string())
            .collect();
        if wasi > 0 {
            shown.push(format!("wasi ({wasi})"));
        }
        let world = if worlds.is_empty() {
            "none".to_string()
        } else {
            worlds.join("+")
        };
        let _ = writeln!(
            out,
            "{module:<28} {:<13} {:>9}  {world:<14} {}",
            row["version"].as_str().unwrap_or_default(),
            row["size"].as_u64().unwrap_or_default(),
            shown.join(", ")
        );
    }
    out
}
