//! The commands that talk to something running: `runs`, `triggers` and
//! `fire` (the engine's API; `runs` and `triggers` read the state directory
//! when no engine answers), and `enqueue` (Redis).

use std::process::ExitCode;

use anyhow::Context;

use std::path::PathBuf;
use std::sync::Arc;

use super::BadInput;
use super::args::{
    DEFAULT_SERVER, EnqueueArgs, FireArgs, Format, HistoryArgs, RunsArgs, RunsCommand, ServerArgs,
    TriggersArgs,
};
use super::client::{ApiClient, runs_table, triggers_table};
use wasmtrigger::engine::TriggerView;
use wasmtrigger::runs::store::{Retention, RunQuery, RunStore};
use wasmtrigger::runs::{RunRecord, RunStatus};
use wasmtrigger::state::{KvLimits, STATE_FILE, StateError, StateStore};

pub(crate) async fn enqueue(args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let text = args.data.read()?.ok_or_else(|| {
        BadInput("give the item with --data JSON or --file FILE (`-` for stdin)".into())
    })?;
    let id = wasmtrigger::sources::redis_queue::enqueue(&args.redis, &args.queue, &text).await?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn client(server: &ServerArgs) -> anyhow::Result<ApiClient> {
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
    let base = server.server.as_deref().unwrap_or(DEFAULT_SERVER);
    Ok(ApiClient::new(base, token)?)
}

/// Prints `value` as a table, JSON or YAML.
pub(crate) fn print_as<T: serde::Serialize>(
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

/// Where `runs` and `triggers` read: the engine's API while one answers,
/// else the history in its state directory.
enum History {
    Api(ApiClient),
    Local { store: Arc<RunStore>, dir: PathBuf },
}

impl History {
    async fn open(args: &HistoryArgs) -> anyhow::Result<History> {
        let api = client(&args.server)?;
        if api.answers().await {
            return Ok(History::Api(api));
        }
        let address = args.server.server.as_deref().unwrap_or(DEFAULT_SERVER);
        // An address given alone is the engine meant: its absence is the answer.
        if args.server.server.is_some() && args.state_dir.is_none() {
            anyhow::bail!(
                "no engine answers at {address}; to read a stopped engine's history, give its --state-dir"
            );
        }
        let dir = args
            .state_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".wasmtrigger"));
        let file = dir.join(STATE_FILE);
        if !file.is_file() {
            anyhow::bail!(
                "no engine answers at {address} and there is no history at {}: start one with `wasmtrigger run`, or give --server URL or --state-dir DIR",
                file.display()
            );
        }
        let state = StateStore::open(&dir, KvLimits::default()).map_err(|e| match e {
            StateError::Locked(_) => anyhow::anyhow!(
                "an engine is using {} but does not answer at {address}; give its address with --server",
                dir.display()
            ),
            other => anyhow::anyhow!("cannot read the history: {other}"),
        })?;
        eprintln!(
            "no engine answers at {address}; reading the history in {}",
            dir.display()
        );
        let store = RunStore::open(state, Retention::default())
            .map_err(|e| anyhow::anyhow!("cannot read the history: {e}"))?;
        Ok(History::Local { store, dir })
    }

    async fn runs(&self, query: &RunQuery) -> anyhow::Result<Vec<RunRecord>> {
        match self {
            History::Api(api) => Ok(api.runs(query).await?),
            History::Local { store, dir } => {
                if let Some(name) = &query.trigger
                    && !store.summaries()?.contains_key(name)
                {
                    anyhow::bail!(
                        "no trigger named `{name}` in the history at {}",
                        dir.display()
                    );
                }
                Ok(store.list(query)?)
            }
        }
    }

    async fn run(&self, id: &str) -> anyhow::Result<RunRecord> {
        match self {
            History::Api(api) => Ok(api.run(id).await?),
            History::Local { store, dir } => store
                .get(id)?
                .ok_or_else(|| anyhow::anyhow!("no run {id} in the history at {}", dir.display())),
        }
    }

    /// Triggers with their history; from the files, only those that have run.
    async fn triggers(&self) -> anyhow::Result<Vec<TriggerView>> {
        match self {
            History::Api(api) => Ok(api.triggers().await?),
            History::Local { store, .. } => {
                let mut views: Vec<TriggerView> = store
                    .summaries()?
                    .into_iter()
                    .map(|(name, summary)| TriggerView {
                        name,
                        source: "-".into(),
                        state: "stopped".into(),
                        runs_on: "-".into(),
                        on_success: Vec::new(),
                        on_failure: Vec::new(),
                        summary,
                    })
                    .collect();
                views.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(views)
            }
        }
    }
}

pub(crate) async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    if let Some(RunsCommand::Show {
        run_id,
        output,
        history,
    }) = args.show
    {
        let run = History::open(&history).await?.run(&run_id).await?;
        print_as(output, &run, || super::run_view::run_text(&run))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(RunsCommand::Export { run_id, history }) = args.show {
        let run = History::open(&history).await?.run(&run_id).await?;
        let fixture =
            wasmtrigger::replay::fixture::from_record(&run).map_err(|e| BadInput(e.to_string()))?;
        println!("{}", serde_json::to_string_pretty(&fixture)?);
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
        event: None,
        before: None,
        limit: Some(usize::from(args.limit)),
    };
    let runs = History::open(&args.history).await?.runs(&query).await?;
    print_as(args.output, &runs, || runs_table(&runs))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn triggers(args: TriggersArgs) -> anyhow::Result<ExitCode> {
    let triggers = History::open(&args.history).await?.triggers().await?;
    print_as(args.output, &triggers, || triggers_table(&triggers))?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn fire(args: FireArgs) -> anyhow::Result<ExitCode> {
    let data = match args.data.read()? {
        None => serde_json::json!({}),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| BadInput(format!("the event data is not valid JSON: {e}")))?,
    };
    let api = client(&args.server)?;
    let event_id = api.fire(&args.trigger, data).await?;
    if !args.wait {
        println!("{event_id}");
        return Ok(ExitCode::SUCCESS);
    }
    let query = RunQuery {
        trigger: Some(args.trigger.clone()),
        event: Some(event_id.clone()),
        limit: Some(1),
        ..RunQuery::default()
    };
    let deadline = tokio::time::Instant::now() + args.timeout;
    let run = loop {
        if let Some(run) = api.runs(&query).await?.into_iter().next() {
            break run;
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "error: event {event_id} has no recorded run after {:?}; see `wasmtrigger runs --trigger {}`",
                args.timeout, args.trigger
            );
            return Ok(ExitCode::FAILURE);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    print_as(args.output, &run, || runs_table(std::slice::from_ref(&run)))?;
    Ok(if run.status == RunStatus::Failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
