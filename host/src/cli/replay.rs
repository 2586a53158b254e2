//! `wasmtrigger replay RUN_ID`: asks the running engine to replay a recorded
//! run, or loads it from a stopped engine's state directory, finds its module
//! versions (kept by content under `recorded-modules/`) or takes other ones,
//! replays it ([`wasmtrigger::replay`]) and prints what differs. Exit 0:
//! identical; 1: different; 2: bad input.
//!
//! `wasmtrigger shadow TRIGGER`: the shadow candidate's counts and latest
//! differences, from the running engine.
//!
//! `wasmtrigger redrive --trigger T`: resubmits recorded events through the
//! running engine; with `--module FILE`, only those whose replay against
//! FILE ends without an error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use super::BadInput;
use super::args::{RedriveArgs, ReplayArgs, ShadowArgs};
use super::remote::print_as;
use wasmtrigger::capabilities::HostServices;
use wasmtrigger::capabilities::secrets::SecretStore;
use wasmtrigger::replay::{Compared, ReplayReport};
use wasmtrigger::runs::modules::ModuleStore;
use wasmtrigger::runs::store::{Retention, RunStore};
use wasmtrigger::runtime::{LoadedModule, Runtime, RuntimeSettings};
use wasmtrigger::state::{KvLimits, STATE_FILE, StateError, StateStore};

pub(crate) async fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let bad = |m: String| anyhow::Error::new(BadInput(m));
    // A running engine replays itself (it holds the state directory).
    let api = super::remote::client(&args.server)?;
    if api.answers().await {
        let mut body = serde_json::Map::new();
        for (part, file) in [
            ("module", &args.module),
            ("filter", &args.filter),
            ("action", &args.action),
        ] {
            if let Some(file) = file {
                use base64::Engine as _;
                let wasm =
                    std::fs::read(file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
                body.insert(
                    part.into(),
                    serde_json::json!({
                        "name": file_name(file),
                        "wasm": base64::engine::general_purpose::STANDARD.encode(wasm),
                    }),
                );
            }
        }
        if args.live {
            body.insert("live".into(), serde_json::Value::Bool(true));
        }
        let value = api
            .replay(&args.run_id, serde_json::Value::Object(body))
            .await
            .map_err(|e| match e {
                super::client::ClientError::Status(400..=499, _) => bad(e.to_string()),
                other => other.into(),
            })?;
        let report: ReplayReport = serde_json::from_value(value)?;
        return finish(args.output, &report);
    }
    if args.live {
        return Err(bad(
            "--live needs the running engine (it holds the trigger's grants); start it or drop --live".into(),
        ));
    }
    if args.server.server.is_some() && args.state_dir.is_none() {
        return Err(bad(format!(
            "no engine answers at {}; to replay from a stopped engine's history, give its --state-dir",
            args.server.server.as_deref().unwrap_or_default()
        )));
    }
    let dir = args
        .state_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(".wasmtrigger"));
    if !dir.join(STATE_FILE).is_file() {
        return Err(bad(format!(
            "there is no history at {}: give the engine's --state-dir",
            dir.join(STATE_FILE).display()
        )));
    }
    let state = StateStore::open(&dir, KvLimits::default()).map_err(|e| match e {
        StateError::Locked(_) => bad(format!(
            "an engine is using {}: stop it to replay from its state directory",
            dir.display()
        )),
        other => bad(format!("cannot read the history: {other}")),
    })?;
    let store = RunStore::open(state, Retention::default())
        .map_err(|e| bad(format!("cannot read the history: {e}")))?;
    let record = store.get(&args.run_id)?.ok_or_else(|| {
        bad(format!(
            "no run {} in the history at {}",
            args.run_id,
            dir.display()
        ))
    })?;

    let settings = RuntimeSettings {
        cache_dir: super::invoke::default_cache_dir(),
        ..RuntimeSettings::default()
    };
    let runtime = Arc::new(Runtime::new(&settings)?);
    let kept = ModuleStore::under(&dir);
    let filter_label = record.filter.clone().filter(|f| f != "cel");
    let action_label = record.module.clone();
    // `--module FILE` stands for the part whose module has its file name.
    let (mut filter_file, mut action_file) = (args.filter.clone(), args.action.clone());
    if let Some(file) = &args.module {
        if wasmtrigger::replay::is_filter_named(&record, &file_name(file)) {
            filter_file = Some(file.clone());
        } else {
            action_file = Some(file.clone());
        }
    }
    let load = |label: Option<String>, file: Option<PathBuf>| {
        let runtime = runtime.clone();
        let kept = kept.clone();
        async move {
            let (name, path) = match (file, label) {
                (Some(file), _) => (file_name(&file), file),
                (None, Some(label)) => {
                    let path = kept.find(&label).ok_or_else(|| {
                        format!(
                            "module {label} is not kept under {}: replay it with --module FILE",
                            "recorded-modules/"
                        )
                    })?;
                    (
                        label
                            .rsplit_once('@')
                            .map_or(label.clone(), |(n, _)| n.to_string()),
                        path,
                    )
                }
                (None, None) => return Ok(None),
            };
            // Compiled from the file even for a builtin's name: the version
            // kept is the one that ran, whatever this binary embeds.
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            tokio::task::spawn_blocking(move || runtime.compile(&name, Some(&path), &bytes))
                .await
                .map_err(|e| e.to_string())?
                .map(Some)
                .map_err(|e| e.to_string())
        }
    };
    let filter: Option<LoadedModule> = load(filter_label, filter_file).await.map_err(bad)?;
    let action: Option<LoadedModule> = load(action_label, action_file).await.map_err(bad)?;
    let services = HostServices::new(SecretStore::default()).map_err(bad)?;
    let report = wasmtrigger::replay::replay(
        &runtime,
        services,
        &record,
        (filter.as_ref(), action.as_ref()),
        None,
    )
    .await
    .map_err(|e| bad(e.to_string()))?;
    finish(args.output, &report)
}

/// Prints the report; exit 0 when identical, 1 when not.
fn finish(output: super::args::Format, report: &ReplayReport) -> anyhow::Result<ExitCode> {
    print_as(output, report, || report_text(report))?;
    Ok(if report.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The report for people: a verdict line, then each part that differs.
fn report_text(report: &ReplayReport) -> String {
    let mut out = format!(
        "replay of run {} with {}: {}\n",
        report.run_id,
        if report.modules.is_empty() {
            "no module".to_string()
        } else {
            report.modules.join(", ")
        },
        if report.identical {
            "identical"
        } else {
            "different"
        }
    );
    fn part<T: std::fmt::Debug>(out: &mut String, name: &str, c: &Compared<T>) {
        if !c.same {
            out.push_str(&format!(
                "{name}:\n  recorded: {:?}\n  replayed: {:?}\n",
                c.recorded, c.replayed
            ));
        }
    }
    part(&mut out, "verdict", &report.verdict);
    part(&mut out, "output", &report.output);
    part(&mut out, "error", &report.error);
    if !report.calls.same {
        out.push_str("calls:\n");
        let (rec, rep) = (&report.calls.recorded, &report.calls.replayed);
        for i in 0..rec.len().max(rep.len()) {
            match (rec.get(i), rep.get(i)) {
                (Some(a), Some(b)) if a == b => out.push_str(&format!("    {a}\n")),
                (a, b) => {
                    if let Some(a) = a {
                        out.push_str(&format!("  - {a}\n"));
                    }
                    if let Some(b) = b {
                        out.push_str(&format!("  + {b}\n"));
                    }
                }
            }
        }
    }
    for d in &report.divergences {
        out.push_str(&format!("divergence: {d}\n"));
    }
    for call in &report.made_live {
        out.push_str(&format!("made live: {call}\n"));
    }
    out
}

pub(crate) async fn redrive(args: RedriveArgs) -> anyhow::Result<ExitCode> {
    let bad = |m: String| anyhow::Error::new(BadInput(m));
    let api = super::remote::client(&args.server)?;
    if !api.answers().await {
        return Err(bad(
            "redrive needs the running engine: the events go through its dispatcher and journal"
                .into(),
        ));
    }
    let mut selection = serde_json::json!({
        "status": args.status,
        "limit": args.limit,
        "dryRun": true,
    });
    if let Some(since) = &args.since {
        selection["since"] = since.clone().into();
    }
    let to_status = |e: super::client::ClientError| match e {
        super::client::ClientError::Status(400..=499, _) => bad(e.to_string()),
        other => other.into(),
    };
    let mut checked = Vec::new();
    if let Some(file) = &args.module {
        // Replay every candidate against the module; keep the ones it handles.
        use base64::Engine as _;
        let wasm = std::fs::read(file).map_err(|e| bad(format!("{}: {e}", file.display())))?;
        let module = serde_json::json!({
            "name": file_name(file),
            "wasm": base64::engine::general_purpose::STANDARD.encode(wasm),
        });
        let candidates = api
            .redrive(&args.trigger, selection.clone())
            .await
            .map_err(to_status)?;
        let mut keep = Vec::new();
        for run in candidates["redriven"].as_array().into_iter().flatten() {
            let id = run["runId"].as_str().unwrap_or_default().to_string();
            let report = api
                .replay(&id, serde_json::json!({ "module": module }))
                .await
                .map_err(to_status)?;
            let fixed = report["error"]["replayed"].is_null();
            checked.push(serde_json::json!({ "runId": id, "fixed": fixed, "error": report["error"]["replayed"] }));
            if fixed {
                keep.push(id);
            }
        }
        selection["runIds"] = keep.into();
    }
    selection["dryRun"] = args.dry_run.into();
    let mut result = if args.module.is_some()
        && selection["runIds"]
            .as_array()
            .is_some_and(|ids| ids.is_empty())
    {
        serde_json::json!({ "dryRun": args.dry_run, "redriven": [], "skipped": [] })
    } else {
        api.redrive(&args.trigger, selection)
            .await
            .map_err(to_status)?
    };
    if args.module.is_some() {
        result["replayed"] = checked.into();
    }
    print_as(args.output, &result, || redrive_text(&result))?;
    Ok(ExitCode::SUCCESS)
}

/// The redrive for people: one line per run.
fn redrive_text(result: &serde_json::Value) -> String {
    let mut out = String::new();
    for run in result["replayed"].as_array().into_iter().flatten() {
        let verdict = if run["fixed"] == true {
            "the module handles it".to_string()
        } else {
            format!("still fails: {}", run["error"].as_str().unwrap_or(""))
        };
        out.push_str(&format!(
            "replayed {}: {verdict}\n",
            run["runId"].as_str().unwrap_or("")
        ));
    }
    let dry = result["dryRun"] == true;
    for run in result["redriven"].as_array().into_iter().flatten() {
        let id = run["runId"].as_str().unwrap_or("");
        if dry {
            out.push_str(&format!("would resubmit the event of run {id}\n"));
        } else {
            out.push_str(&format!(
                "resubmitted the event of run {id} as event {}\n",
                run["eventId"].as_str().unwrap_or("")
            ));
        }
    }
    for run in result["skipped"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "skipped run {}: {}\n",
            run["runId"].as_str().unwrap_or(""),
            run["reason"].as_str().unwrap_or("")
        ));
    }
    if out.is_empty() {
        out.push_str("no runs matched\n");
    }
    out
}

pub(crate) async fn shadow(args: ShadowArgs) -> anyhow::Result<ExitCode> {
    let api = super::remote::client(&args.server)?;
    let view = api.shadow(&args.trigger).await.map_err(|e| match e {
        super::client::ClientError::Status(404, _) => anyhow::Error::new(BadInput(e.to_string())),
        other => other.into(),
    })?;
    print_as(args.output, &view, || shadow_text(&view))?;
    Ok(ExitCode::SUCCESS)
}

/// Counts, then each latest comparison that did not match.
fn shadow_text(view: &serde_json::Value) -> String {
    let mut out = format!(
        "trigger {}: candidate {} on {}% of events\nmatch {}  diff {}  error {}\n",
        view["trigger"].as_str().unwrap_or(""),
        view["candidate"].as_str().unwrap_or(""),
        (view["sample"].as_f64().unwrap_or(0.0) * 100.0).round(),
        view["matched"],
        view["differed"],
        view["errors"]
    );
    for run in view["latest"].as_array().into_iter().flatten() {
        if run["outcome"] == "match" {
            continue;
        }
        out.push_str(&format!(
            "\n{} run {} ({}):\n",
            run["outcome"].as_str().unwrap_or(""),
            run["runId"].as_str().unwrap_or(""),
            run["candidate"].as_str().unwrap_or("")
        ));
        for part in ["output", "error", "calls"] {
            if run[part]["same"] == false {
                out.push_str(&format!(
                    "  {part}:\n    primary:   {}\n    candidate: {}\n",
                    run[part]["recorded"], run[part]["replayed"]
                ));
            }
        }
    }
    out
}
