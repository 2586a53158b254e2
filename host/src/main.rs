//! The `wasmtrigger` command line: parses arguments and calls the library.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use wasmtrigger::capabilities::grants::{Grants, HttpGrant, check_secret_name};
use wasmtrigger::client::{ApiClient, runs_table, triggers_table};
use wasmtrigger::config::{self, EngineOverrides, Limits, values};
use wasmtrigger::engine::{Engine, EngineError, EngineOptions, ReloadOptions};
use wasmtrigger::invoke::{InvokeCommandError, InvokeOutcome, InvokeRequest};
use wasmtrigger::kube::leader::LeaderConfig;
use wasmtrigger::kube::sync::TriggerObjects;
use wasmtrigger::logging::{self, LogFormat};
use wasmtrigger::runs::LogSink;
use wasmtrigger::runs::RunStatus;
use wasmtrigger::runs::store::RunQuery;
use wasmtrigger::runtime::{Runtime, RuntimeSettings, World};
use wasmtrigger::scaffold::{Lang, scaffold};
use wasmtrigger::server::ApiToken;

/// Event automation with WebAssembly filters and actions.
#[derive(Parser)]
#[command(name = "wasmtrigger", version, about, long_about = None)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormatArg,
    /// Log level or tracing filter, e.g. `info` or `wasmtrigger::guest=debug,info`.
    #[arg(long, global = true, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Validate a config and compile every module it uses; exit 0 only if all is well.
    Check(ConfigArgs),
    /// Run one filter or action once, offline, and print its result.
    Invoke(InvokeArgs),
    /// List the modules in a directory with their version, world and imports.
    Modules(ModulesArgs),
    /// List stored runs of a running engine, or show one (`runs show RUN_ID`).
    Runs(RunsArgs),
    /// List the triggers of a running engine with their last outcomes and chains.
    Triggers(TriggersArgs),
    /// Run a trigger now on a running engine, with optional event data.
    Fire(FireArgs),
    /// Write a ready-to-build filter or action project (Rust, Python or JavaScript).
    New(NewArgs),
    /// Add a work item to a Redis stream drained by `type: redis-queue` triggers.
    Enqueue(EnqueueArgs),
    /// Print the least-privilege Role/ClusterRole and bindings a config needs, as YAML.
    Rbac(RbacArgs),
    /// Print the Trigger CustomResourceDefinition (as checked in at deploy/crd/trigger.yaml).
    Crd,
}

#[derive(Args)]
struct RbacArgs {
    /// Trigger config: a YAML/JSON file, or a directory of them.
    #[arg(long, env = "CONFIG")]
    config: PathBuf,
    /// Namespace of the engine's ServiceAccount (and its leader Lease).
    #[arg(long, default_value = "wasmtrigger")]
    namespace: String,
    /// The engine's ServiceAccount.
    #[arg(long, default_value = "wasmtrigger")]
    service_account: String,
    /// Name of the generated Roles, ClusterRole and bindings.
    #[arg(long, default_value = "wasmtrigger")]
    name: String,
    /// Also allow reading Trigger objects and writing their status (as `run --trigger-objects`; `*`: all namespaces).
    #[arg(long, value_name = "NAMESPACE", num_args = 0..=1, default_missing_value = "")]
    trigger_objects: Option<String>,
    /// Also allow leader election through this Lease (as `run --leader-election`).
    #[arg(long, value_name = "LEASE", num_args = 0..=1, default_missing_value = "wasmtrigger-leader")]
    leader_election: Option<String>,
}

#[derive(Args)]
struct EnqueueArgs {
    /// The stream key (the trigger's `source.stream`).
    queue: String,
    /// The item as JSON.
    #[arg(long, conflicts_with = "file", required_unless_present = "file")]
    data: Option<String>,
    /// A file holding the item as JSON (`-` reads stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Redis URL.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    redis: String,
}

#[derive(Args)]
struct NewArgs {
    /// What to write.
    #[arg(value_enum)]
    kind: WorldArg,
    /// Project name (lowercase, digits, `-`); also the module's file name.
    name: String,
    /// Language.
    #[arg(long, value_enum, default_value = "rust")]
    lang: LangArg,
    /// Directory to create (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    Rust,
    Python,
    Js,
}

/// Where the running engine's API is.
#[derive(Args)]
struct ServerArgs {
    /// Base URL of the engine's HTTP server.
    #[arg(
        long,
        env = "WASMTRIGGER_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    server: String,
    /// Bearer token for the API, if the engine requires one.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// A file holding the API token (keeps it out of `ps`).
    #[arg(long, env = "API_TOKEN_FILE", conflicts_with = "api_token")]
    api_token_file: Option<PathBuf>,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct RunsArgs {
    #[command(subcommand)]
    show: Option<RunsCommand>,
    /// Only this trigger.
    #[arg(long)]
    trigger: Option<String>,
    /// Only this status: filtered, succeeded or failed.
    #[arg(long)]
    status: Option<String>,
    /// Only runs started since this RFC 3339 time or this long ago (e.g. 15m).
    #[arg(long)]
    since: Option<String>,
    /// At most this many runs (newest first).
    #[arg(long, default_value = "50")]
    limit: usize,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// Show one run in full.
    Show {
        /// The run id.
        run_id: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "yaml")]
        output: Format,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Args)]
struct TriggersArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Format,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Args)]
struct FireArgs {
    /// The trigger to run.
    trigger: String,
    /// Event data as JSON (default `{}`).
    #[arg(long)]
    data: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Args)]
struct ConfigArgs {
    /// Trigger config: a YAML/JSON file, or a directory of them.
    #[arg(long, env = "CONFIG")]
    config: PathBuf,
    /// Directory module names are resolved in (default: the config's directory).
    #[arg(long, env = "MODULES")]
    modules: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Engine settings; each overrides the config file's `engine:` section.
#[derive(Args)]
struct EngineArgs {
    /// Worker tasks executing runs [config: engine.workers; default 4].
    #[arg(long, env = "WORKERS")]
    workers: Option<usize>,
    /// Capacity of the dispatch queue [config: engine.queueSize; default 100].
    #[arg(long, env = "QUEUE_SIZE")]
    queue_size: Option<usize>,
    /// Executions per second per worker, 0 = unlimited [config: engine.perWorkerQps; default 0].
    #[arg(long, env = "PER_WORKER_QPS")]
    per_worker_qps: Option<f64>,
    /// Default time limit per module call, e.g. 10s [config: engine.timeout; default 10s].
    #[arg(long, env = "TIMEOUT", value_parser = duration)]
    timeout: Option<Duration>,
    /// Retries after a failed action attempt [config: engine.retry.max; default 3].
    #[arg(long, env = "MAX_RETRY")]
    max_retry: Option<u32>,
    /// First retry wait, doubled each retry, e.g. 1s [config: engine.retry.delay; default 1s].
    #[arg(long, env = "RETRY_DELAY", value_parser = duration)]
    retry_delay: Option<Duration>,
    #[command(flatten)]
    secrets: SecretsArgs,
}

/// Where secret values come from.
#[derive(Args)]
struct SecretsArgs {
    /// Directory with one file per secret, e.g. a mounted Kubernetes Secret [config: engine.secrets.dir].
    #[arg(long, env = "SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// Read secret NAME from env var PREFIX + NAME upper-cased, `-`/`.` as `_` [config: engine.secrets.envPrefix].
    #[arg(long, env = "SECRETS_ENV_PREFIX")]
    secrets_env_prefix: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Directory for persistent state (kv) and the compiled-module cache.
    #[arg(long, env = "STATE_DIR", default_value = ".wasmtrigger")]
    state_dir: PathBuf,
    /// Kubeconfig to use alone (default: KUBECONFIG, then ~/.kube/config, then the pod's service account).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Also take triggers from Trigger objects in this namespace (no value: the pod's; `*`: all namespaces).
    #[arg(long, env = "TRIGGER_OBJECTS", value_name = "NAMESPACE", num_args = 0..=1, default_missing_value = "")]
    trigger_objects: Option<String>,
    /// Elect a leader among replicas through this Lease; schedules and kube watches run on the leader only.
    #[arg(long, env = "LEADER_ELECTION", value_name = "LEASE", num_args = 0..=1, default_missing_value = "wasmtrigger-leader")]
    leader_election: Option<String>,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// This replica's identity in the election (default: POD_NAME or the host name, plus a random suffix).
    #[arg(long, env = "LEADER_IDENTITY")]
    leader_identity: Option<String>,
    /// How long a lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    /// How long the leader tries to renew before it steps down (less than --lease-duration).
    #[arg(long, default_value = "10s", value_parser = duration)]
    renew_deadline: Duration,
    /// How often candidates try to acquire or renew the lease (less than --renew-deadline).
    #[arg(long, default_value = "2s", value_parser = duration)]
    retry_period: Duration,
    /// Where the pod's service account token, ca.crt and namespace are mounted.
    #[arg(long, env = "SERVICE_ACCOUNT_DIR", default_value = wasmtrigger::kube::SERVICE_ACCOUNT_DIR)]
    service_account_dir: PathBuf,
    /// Do not watch the config and modules for changes.
    #[arg(long)]
    no_reload: bool,
    /// How often to rescan the config and modules even without file events.
    #[arg(long, env = "POLL_INTERVAL", default_value = "2s", value_parser = duration)]
    poll_interval: Duration,
    /// Compile every module at start instead of using the cache under --state-dir.
    #[arg(long)]
    no_module_cache: bool,
    /// Address of the HTTP server (webhooks, /metrics, /healthz, /readyz, API); `off` disables it.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:7070")]
    listen: String,
    /// Require this bearer token on the /api endpoints (prefer --api-token-file).
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Require the bearer token in this file on the /api endpoints; re-read when it changes.
    #[arg(long, env = "API_TOKEN_FILE", conflicts_with = "api_token")]
    api_token_file: Option<PathBuf>,
    /// Serve the API without a token on a non-loopback address (anyone who can connect controls the engine).
    #[arg(long, env = "INSECURE_API")]
    insecure_api: bool,
}

#[derive(Args)]
struct InvokeArgs {
    /// The module (.wasm component) to run.
    module: PathBuf,
    /// Event file: a full event record or any JSON (used as `data`); `-` reads stdin.
    #[arg(long)]
    event: String,
    /// Params for an action, as JSON.
    #[arg(long)]
    params: Option<String>,
    /// World to use if the module implements both.
    #[arg(long, value_enum)]
    world: Option<WorldArg>,
    /// Time limit.
    #[arg(long, default_value = "10s", value_parser = duration)]
    timeout: Duration,
    /// Memory limit, e.g. 128Mi.
    #[arg(long, default_value = "128Mi", value_parser = byte_size)]
    memory: u64,
    /// Keep kv state in this directory (default: in memory for this call).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Grant an HTTP destination to an action, like `grants.http` (repeatable).
    #[arg(long = "allow-http", value_name = "PATTERN")]
    allow_http: Vec<String>,
    /// Grant a secret name to an action, like `grants.secrets` (repeatable).
    #[arg(long = "allow-secret", value_name = "NAME")]
    allow_secret: Vec<String>,
    #[command(flatten)]
    secrets: SecretsArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum WorldArg {
    Filter,
    Action,
}

#[derive(Args)]
struct ModulesArgs {
    /// Directory to scan for .wasm files.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: OutputArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputArg {
    Table,
    Json,
}

fn duration(text: &str) -> Result<Duration, String> {
    values::parse_duration(text)
}

fn byte_size(text: &str) -> Result<u64, String> {
    values::parse_byte_size(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match cli.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    if let Err(e) = logging::init(format, &cli.log_level) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(*args).await,
            Command::Check(args) => check(args).await,
            Command::Invoke(args) => invoke(args).await,
            Command::Modules(args) => modules(args).await,
            Command::Runs(args) => runs(args).await,
            Command::Triggers(args) => triggers(args).await,
            Command::Fire(args) => fire(args).await,
            Command::New(args) => new_project(args),
            Command::Enqueue(args) => enqueue(args).await,
            Command::Rbac(args) => rbac(args),
            Command::Crd => {
                print!("{}", wasmtrigger::kube::crd::crd_yaml());
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn enqueue(args: EnqueueArgs) -> anyhow::Result<ExitCode> {
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

fn overrides(args: &EngineArgs) -> EngineOverrides {
    EngineOverrides {
        workers: args.workers,
        queue_size: args.queue_size,
        per_worker_qps: args.per_worker_qps,
        timeout: args.timeout,
        max_retry: args.max_retry,
        retry_delay: args.retry_delay,
        secrets_dir: args.secrets.secrets_dir.clone(),
        secrets_env_prefix: args.secrets.secrets_env_prefix.clone(),
        allow_no_triggers: false,
    }
}

/// The namespace of the pod the engine runs in, from its service account, else `default`.
fn pod_namespace(service_account_dir: &std::path::Path) -> String {
    std::fs::read_to_string(service_account_dir.join("namespace"))
        .map(|n| n.trim().to_string())
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Listen before anything starts, so a stop signal during start-up is
    // handled (as a graceful stop) instead of killing the process.
    let stop = stop_signal()?;
    let c = &args.config;
    let mut engine_overrides = overrides(&c.engine);
    engine_overrides.allow_no_triggers = args.trigger_objects.is_some();
    let config = match config::load(&c.config, c.modules.as_deref(), &engine_overrides) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "error: the config has {} problem(s); not starting",
                errors.0.len()
            );
            return Ok(ExitCode::from(2));
        }
    };
    let listen: Option<std::net::SocketAddr> = match args.listen.as_str() {
        "off" | "none" | "" => None,
        addr => Some(addr.parse().with_context(|| {
            format!("--listen {addr}: expected HOST:PORT like 127.0.0.1:7070, or off")
        })?),
    };
    let api_token = match (&args.api_token, &args.api_token_file) {
        (Some(token), _) => Some(ApiToken::Value(token.clone())),
        (None, Some(file)) => Some(ApiToken::File(file.clone())),
        (None, None) => None,
    };
    if let Some(addr) = listen.filter(|a| !a.ip().is_loopback())
        && api_token.is_none()
    {
        if !args.insecure_api {
            eprintln!(
                "error: --listen {addr} is reachable from other hosts, and without an API token anyone who can connect could list triggers and runs and fire triggers.\n\
                 Give a token: --api-token-file FILE (or API_TOKEN_FILE; e.g. a mounted Secret), or --api-token / API_TOKEN;\n\
                 or listen on loopback only (--listen 127.0.0.1:7070); or, knowingly, pass --insecure-api."
            );
            return Ok(ExitCode::from(2));
        }
        tracing::warn!(
            listen = %addr,
            "--insecure-api: the API has no token on a non-loopback address; anyone who can connect controls this engine"
        );
    }
    let options = EngineOptions {
        listen,
        api_token,
        kube: wasmtrigger::kube::KubeConnection {
            kubeconfig: args.kubeconfig.clone(),
            service_account_dir: args.service_account_dir.clone(),
        },
        trigger_objects: args.trigger_objects.as_deref().map(|ns| match ns {
            "*" | "all" => TriggerObjects::All,
            "" => TriggerObjects::Namespace(pod_namespace(&args.service_account_dir)),
            ns => TriggerObjects::Namespace(ns.to_string()),
        }),
        leader: args.leader_election.clone().map(|lease| LeaderConfig {
            namespace: args
                .leader_election_namespace
                .clone()
                .unwrap_or_else(|| pod_namespace(&args.service_account_dir)),
            lease,
            identity: args
                .leader_identity
                .clone()
                .unwrap_or_else(LeaderConfig::default_identity),
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        }),
        state_dir: args.state_dir.clone(),
        module_cache: (!args.no_module_cache).then(|| args.state_dir.join("cache")),
        reload: (!args.no_reload).then(|| ReloadOptions {
            config_path: c.config.clone(),
            modules_dir: c.modules.clone(),
            overrides: engine_overrides.clone(),
            poll_interval: args.poll_interval,
        }),
    };
    let engine = match Engine::start(config, options, vec![Arc::new(LogSink)]).await {
        Ok(engine) => engine,
        Err(EngineError::Modules(errors)) => {
            eprintln!("{errors}");
            eprintln!("error: {} module problem(s); not starting", errors.0.len());
            return Ok(ExitCode::from(2));
        }
        Err(EngineError::Config(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "error: the config has {} problem(s); not starting",
                errors.0.len()
            );
            return Ok(ExitCode::from(2));
        }
        Err(EngineError::ApiToken(why)) => {
            eprintln!("error: {why}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e).context("cannot start the engine"),
    };
    stop.await;
    engine.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Registers SIGINT and SIGTERM handlers now; the future resolves on either.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn rbac(args: RbacArgs) -> anyhow::Result<ExitCode> {
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

async fn check(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let report = wasmtrigger::check::check(
        &args.config,
        args.modules.as_deref(),
        &overrides(&args.engine),
    )
    .await
    .context("cannot start the wasm runtime")?;
    for problem in &report.problems {
        println!("error: {problem}");
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

async fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
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
    let event = if args.event == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the event from stdin")?;
        text
    } else {
        std::fs::read_to_string(&args.event)
            .with_context(|| format!("cannot read the event file {}", args.event))?
    };
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
        secrets: config::SecretsSettings {
            dir: args.secrets.secrets_dir,
            env_prefix: args.secrets.secrets_env_prefix,
            kubernetes: None,
        },
    };
    match wasmtrigger::invoke::invoke(request).await {
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

async fn modules(args: ModulesArgs) -> anyhow::Result<ExitCode> {
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
    match args.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        OutputArg::Table => print_module_table(&rows, &args.dir),
    }
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

async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
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

async fn triggers(args: TriggersArgs) -> anyhow::Result<ExitCode> {
    let triggers = client(&args.server)?.triggers().await?;
    print_as(args.output, &triggers, || triggers_table(&triggers))?;
    Ok(ExitCode::SUCCESS)
}

async fn fire(args: FireArgs) -> anyhow::Result<ExitCode> {
    let data = match &args.data {
        None => serde_json::json!({}),
        Some(text) => serde_json::from_str(text).context("--data is not valid JSON")?,
    };
    let event_id = client(&args.server)?.fire(&args.trigger, data).await?;
    println!("{event_id}");
    Ok(ExitCode::SUCCESS)
}

fn new_project(args: NewArgs) -> anyhow::Result<ExitCode> {
    let world = match args.kind {
        WorldArg::Filter => World::Filter,
        WorldArg::Action => World::Action,
    };
    let lang = match args.lang {
        LangArg::Rust => Lang::Rust,
        LangArg::Python => Lang::Python,
        LangArg::Js => Lang::Js,
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    for file in scaffold(world, &args.name, lang, &dir)? {
        println!("wrote {}", file.display());
    }
    println!("next: see {}", dir.join("README.md").display());
    Ok(ExitCode::SUCCESS)
}

fn print_module_table(rows: &[serde_json::Value], dir: &Path) {
    if rows.is_empty() {
        println!("no .wasm files in {}", dir.display());
        return;
    }
    println!(
        "{:<28} {:<13} {:>9}  {:<14} IMPORTS",
        "MODULE", "VERSION", "SIZE", "WORLD"
    );
    for row in rows {
        let module = row["module"].as_str().unwrap_or_default();
        if let Some(error) = row["error"].as_str() {
            println!("{module:<28} {error}");
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
        println!(
            "{module:<28} {:<13} {:>9}  {world:<14} {}",
            row["version"].as_str().unwrap_or_default(),
            row["size"].as_u64().unwrap_or_default(),
            shown.join(", ")
        );
    }
}
