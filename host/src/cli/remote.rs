//! The commands that talk to something running: `runs`, `triggers` and
//! `fire` (the engine's API), and `enqueue` (Redis).

use std::process::ExitCode;

use anyhow::Context;

use super::args::{EnqueueArgs, FireArgs, Format, RunsArgs, RunsCommand, ServerArgs, TriggersArgs};
use super::client::{ApiClient, runs_table, triggers_table};
use wasmtrigger::runs::RunStatus;
use wasmtrigger::runs::store::RunQuery;

pub(crate) async fn enqueue(args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let text = match (&args.data, &args.file) {
        (Some(data), _) => data.clone(),
        (None, Some(path)) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?,
        (None, None) => anyhow::bail!("give the item with --data or --file"),
    };
    let id = wasmtrigger::sources::redis_queue::enqueue(&args.redis, &args.queue, &text).await?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

fn client(server: &ServerArgs) -> anyhow::Result<ApiClient> {
    let token = match (&server.api_token, &server.api_token_file) {
        (Some(token), _) => Some(token.trim().to_string()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the API token file {}", file.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    Ok(ApiClient::new(&server.server, token)?)
}

fn print_as<T: serde::Serialize>(
    format: Format,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Table => print!("{}", table()),
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
    }
    Ok(())
}

pub(crate) async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    if let Some(RunsCommand::Show {
        run_id,
        output,
        server,
    }) = args.show
    {
        let run = client(&server)?.run(&run_id).await?;
        print_as(output, &run, || {
            serde_yaml_ng::to_string(&run).unwrap_or_default()
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = match args.status.as_deref() {
        None => None,
        Some("filtered") => Some(RunStatus::Filtered),
        Some("succeeded") => Some(RunStatus::Succeeded),
        Some("failed") => Some(RunStatus::Failed),
        Some(other) => anyhow::bail!("--status {other}: expected filtered, succeeded or failed"),
    };
    let since = args
        .since
        .as_deref()
        .map(wasmtrigger::server::since)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let query = RunQuery {
        trigger: args.trigger,
        status,
        since,
        limit: Some(args.limit),
    };
    let runs = client(&args.server)?.runs(&query).await?;
    print_as(args.output, &runs, || runs_table(&runs))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn triggers(args: TriggersArgs) -> anyhow::Result<ExitCode> {
    let triggers = client(&args.server)?.triggers().await?;
    print_as(args.output, &triggers, || triggers_table(&triggers))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn fire(args: FireArgs) -> anyhow::Result<ExitCode> {
    let data = match &args.data {
        None => serde_json::json!({}),
        Some(text) => serde_json::from_str(text).context("--data is not valid JSON")?,
    };
    let event_id = client(&args.server)?.fire(&args.trigger, data).await?;
    println!("{event_id}");
    Ok(ExitCode::SUCCESS)
}
