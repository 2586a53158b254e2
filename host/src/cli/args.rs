//! The command line's shape: every command, flag and environment variable
//! (clap). The handlers live in [`super::run`], [`super::offline`] and
//! [`super::remote`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::BadInput;
use wasmtrigger::config::values;

/// Event automation with WebAssembly filters and actions.
#[derive(Parser)]
#[command(
    name = "wasmtrigger",
    version,
    about,
    long_about = None,
    after_help = LOGGING_HELP
)]
pub(crate) struct Cli {
    // Accepted before or after any subcommand, but described once, here, so
    // each subcommand's help shows only its own flags.
    /// Log format.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub(crate) log_format: LogFormatArg,
    /// Log level or tracing filter, e.g. `info` or `wasmtrigger::guest=debug,info`
    /// [default: info; error for `test`, which shows a failed fixture's guest log itself].
    #[arg(long, global = true, hide = true, env = "LOG_LEVEL")]
    pub(crate) log_level: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

const LOGGING_HELP: &str = "\
Logging (before or after any command; logs go to stderr):
      --log-format <text|json>  Log format [env: LOG_FORMAT] [default: text]
      --log-level <FILTER>      Level or tracing filter, e.g. `debug` or
                                `wasmtrigger::guest=debug,info` [env: LOG_LEVEL] [default: info]";

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LogFormatArg {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the engine until SIGINT or SIGTERM.
    Run(Box<RunArgs>),
    /// Validate a config and compile every module it uses; exit 0 only if all is well.
    Check(ConfigArgs),
    /// Run one filter or action once, offline, and print its result.
    Invoke(InvokeArgs),
    /// List the modules in a directory (or the builtins) with their version, world and imports.
    Modules(ModulesArgs),
    /// List stored runs of a running engine, or show one (`runs show RUN_ID`).
    Runs(RunsArgs),
    /// List the triggers of a running engine with their last outcomes and chains.
    Triggers(TriggersArgs),
    /// Run a trigger now on a running engine, with optional event data.
    Fire(FireArgs),
    /// Re-run a recorded run with every capability call answered from its recording; print the differences.
    Replay(ReplayArgs),
    /// Run module tests: fixture files (an event, canned capability answers, what should come of it), offline.
    Test(TestArgs),
    /// Resubmit a trigger's recorded events (failed ones by default) to a running engine, as new events.
    Redrive(RedriveArgs),
    /// Show how a trigger's shadow candidate compares with its action: counts and the latest differences.
    Shadow(ShadowArgs),
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
pub(crate) struct ShadowArgs {
    /// The trigger.
    pub(crate) trigger: String,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct RedriveArgs {
    /// The trigger whose runs' events are resubmitted.
    #[arg(long)]
    pub(crate) trigger: String,
    /// Runs with this status: failed, succeeded, filtered or any.
    #[arg(long, default_value = "failed")]
    pub(crate) status: String,
    /// Only runs started since this RFC 3339 time or this long ago (e.g. 1h).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// At most this many runs (1 to 10000).
    #[arg(long, default_value = "1000", value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub(crate) limit: u16,
    /// Replay each run against this module first and resubmit only those it handles without an error.
    #[arg(long)]
    pub(crate) module: Option<PathBuf>,
    /// List what would be resubmitted; resubmit nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct ReplayArgs {
    /// The run id.
    pub(crate) run_id: String,
    /// Another version of one of the run's modules (the filter or the action whose file name it has; else the action).
    #[arg(long, conflicts_with_all = ["filter", "action"])]
    pub(crate) module: Option<PathBuf>,
    /// Another version of the run's filter module.
    #[arg(long)]
    pub(crate) filter: Option<PathBuf>,
    /// Another version of the run's action module.
    #[arg(long)]
    pub(crate) action: Option<PathBuf>,
    /// Make the calls the recording has no answer for, for real, under the trigger's grants (needs the running engine).
    #[arg(long)]
    pub(crate) live: bool,
    /// The state directory read when no engine answers [default: .wasmtrigger, as `run`].
    #[arg(long, env = "STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Args)]
pub(crate) struct RbacArgs {
    /// Trigger config: a YAML/JSON file, or a directory of them.
    #[arg(long, env = "CONFIG")]
    pub(crate) config: PathBuf,
    /// Namespace of the engine's ServiceAccount (and its leader Lease).
    #[arg(short, long, default_value = "wasmtrigger")]
    pub(crate) namespace: String,
    /// The engine's ServiceAccount.
    #[arg(long, default_value = "wasmtrigger")]
    pub(crate) service_account: String,
    /// Name of the generated Roles, ClusterRole and bindings.
    #[arg(long, default_value = "wasmtrigger")]
    pub(crate) name: String,
    /// Also allow reading Trigger objects and writing their status (as `run --trigger-objects`; `*`: all namespaces).
    #[arg(long, value_name = "NAMESPACE", num_args = 0..=1, default_missing_value = "")]
    pub(crate) trigger_objects: Option<String>,
    /// Also allow leader election through this Lease (as `run --leader-election`).
    #[arg(long, value_name = "LEASE", num_args = 0..=1, default_missing_value = "wasmtrigger-leader")]
    pub(crate) leader_election: Option<String>,
}

#[derive(Args)]
pub(crate) struct EnqueueArgs {
    /// The stream key (the trigger's `source.stream`).
    pub(crate) queue: String,
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Redis URL.
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub(crate) redis: String,
}

#[derive(Args)]
pub(crate) struct NewArgs {
    /// What to write.
    #[arg(value_enum)]
    pub(crate) kind: WorldArg,
    /// Project name (lowercase, digits, `-`); also the module's file name.
    pub(crate) name: String,
    /// Language.
    #[arg(long, value_enum, default_value = "rust")]
    pub(crate) lang: LangArg,
    /// Directory to create (default: ./NAME).
    #[arg(long)]
    pub(crate) dir: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum LangArg {
    Rust,
    Python,
    Js,
    C,
    Cpp,
}

/// Event data, passed the same way to `invoke`, `fire` and `enqueue`.
#[derive(Args)]
pub(crate) struct DataArgs {
    /// The data as JSON.
    #[arg(long, conflicts_with = "file")]
    pub(crate) data: Option<String>,
    /// A file holding the data as JSON; `-` reads stdin.
    #[arg(long, alias = "event", value_name = "FILE")]
    pub(crate) file: Option<String>,
}

impl DataArgs {
    /// The data's text, if given; a file that cannot be read is named.
    pub(crate) fn read(&self) -> Result<Option<String>, BadInput> {
        use std::io::Read;
        match (&self.data, self.file.as_deref()) {
            (Some(data), _) => Ok(Some(data.clone())),
            (None, Some("-")) => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .map_err(|e| BadInput(format!("cannot read the data from stdin: {e}")))?;
                Ok(Some(text))
            }
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(Some)
                .map_err(|e| BadInput(format!("cannot read {path}: {e}"))),
            (None, None) => Ok(None),
        }
    }
}

/// The engine's default API address (`run --listen`'s default).
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// Where the running engine's API is.
#[derive(Args)]
pub(crate) struct ServerArgs {
    /// Base URL of the engine's HTTP server [default: http://127.0.0.1:7070].
    #[arg(long, env = "WASMTRIGGER_SERVER")]
    pub(crate) server: Option<String>,
    /// Bearer token for the API, if the engine requires one.
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub(crate) api_token: Option<String>,
    /// A file holding the API token (keeps it out of `ps`).
    #[arg(long, env = "API_TOKEN_FILE", conflicts_with = "api_token")]
    pub(crate) api_token_file: Option<PathBuf>,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct RunsArgs {
    #[command(subcommand)]
    pub(crate) show: Option<RunsCommand>,
    /// Only this trigger.
    #[arg(long)]
    pub(crate) trigger: Option<String>,
    /// Only this status: filtered, succeeded or failed.
    #[arg(long)]
    pub(crate) status: Option<String>,
    /// Only runs started since this RFC 3339 time or this long ago (e.g. 15m).
    #[arg(long)]
    pub(crate) since: Option<String>,
    /// At most this many runs, newest start first (1 to 10000).
    #[arg(long, default_value = "50", value_parser = clap::value_parser!(u16).range(1..=10_000))]
    pub(crate) limit: u16,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) history: HistoryArgs,
}

/// Where the history is: a running engine's API, else its state directory.
#[derive(Args)]
pub(crate) struct HistoryArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// State directory whose history is read when no engine answers
    /// [default: .wasmtrigger, as `run`].
    #[arg(long, env = "STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct TestArgs {
    /// Fixture files, or directories searched for *.fixture.json, *.fixture.yaml and *.fixture.yml.
    #[arg(default_value = ".")]
    pub(crate) paths: Vec<PathBuf>,
    /// Directory holding the modules fixtures name, when they are not next to the fixture.
    #[arg(long, value_name = "DIR")]
    pub(crate) modules: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: Format,
}

#[derive(Subcommand)]
pub(crate) enum RunsCommand {
    /// Show one run in full.
    Show {
        /// The run id.
        run_id: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Format,
        #[command(flatten)]
        history: HistoryArgs,
    },
    /// Write a recorded run as a module-test fixture (JSON), for `wasmtrigger test`.
    Export {
        /// The run id.
        run_id: String,
        #[command(flatten)]
        history: HistoryArgs,
    },
}

#[derive(Args)]
pub(crate) struct TriggersArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) history: HistoryArgs,
}

#[derive(Args)]
pub(crate) struct FireArgs {
    /// The trigger to run.
    pub(crate) trigger: String,
    /// Event data (default `{}`).
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Wait for the run, print it, and exit 1 if it failed.
    #[arg(long)]
    pub(crate) wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub(crate) timeout: Duration,
    /// Output format of the run --wait prints.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: Format,
    #[command(flatten)]
    pub(crate) server: ServerArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(Args)]
pub(crate) struct ConfigArgs {
    /// Trigger config: a YAML/JSON file, or a directory of them.
    #[arg(long, env = "CONFIG")]
    pub(crate) config: PathBuf,
    /// Directory module names are resolved in (default: the config's directory).
    #[arg(long, env = "MODULES")]
    pub(crate) modules: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) engine: EngineArgs,
}

/// Engine settings; each overrides the config file's `engine:` section.
#[derive(Args)]
pub(crate) struct EngineArgs {
    /// Worker tasks executing runs [config: engine.workers; default 4].
    #[arg(long, env = "WORKERS")]
    pub(crate) workers: Option<usize>,
    /// Capacity of the dispatch queue [config: engine.queueSize; default 100].
    #[arg(long, env = "QUEUE_SIZE")]
    pub(crate) queue_size: Option<usize>,
    /// Executions per second per worker, 0 = unlimited [config: engine.perWorkerQps; default 0].
    #[arg(long, env = "PER_WORKER_QPS")]
    pub(crate) per_worker_qps: Option<f64>,
    /// Default time limit per module call, e.g. 10s [config: engine.timeout; default 10s].
    #[arg(long, env = "TIMEOUT", value_parser = duration)]
    pub(crate) timeout: Option<Duration>,
    /// Retries after a failed action attempt [config: engine.retry.max; default 3].
    #[arg(long, env = "MAX_RETRY")]
    pub(crate) max_retry: Option<u32>,
    /// First retry wait, doubled each retry, e.g. 1s [config: engine.retry.delay; default 1s].
    #[arg(long, env = "RETRY_DELAY", value_parser = duration)]
    pub(crate) retry_delay: Option<Duration>,
    #[command(flatten)]
    pub(crate) secrets: SecretsArgs,
}

/// Where secret values come from.
#[derive(Args)]
pub(crate) struct SecretsArgs {
    /// Directory with one file per secret, e.g. a mounted Kubernetes Secret [config: engine.secrets.dir].
    #[arg(long, env = "SECRETS_DIR")]
    pub(crate) secrets_dir: Option<PathBuf>,
    /// Read secret NAME from env var PREFIX + NAME upper-cased, `-`/`.` as `_` [config: engine.secrets.envPrefix].
    #[arg(long, env = "SECRETS_ENV_PREFIX")]
    pub(crate) secrets_env_prefix: Option<String>,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) config: ConfigArgs,
    /// Directory for persistent state (kv) and the compiled-module cache.
    #[arg(long, env = "STATE_DIR", default_value = ".wasmtrigger")]
    pub(crate) state_dir: PathBuf,
    /// Kubeconfig to use alone (default: KUBECONFIG, then ~/.kube/config, then the pod's service account).
    #[arg(long)]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Also take triggers from Trigger objects in this namespace (no value: the pod's; `*`: all namespaces).
    #[arg(long, env = "TRIGGER_OBJECTS", value_name = "NAMESPACE", num_args = 0..=1, default_missing_value = "")]
    pub(crate) trigger_objects: Option<String>,
    /// Elect a leader among replicas through this Lease; schedules and kube watches run on the leader only.
    #[arg(long, env = "LEADER_ELECTION", value_name = "LEASE", num_args = 0..=1, default_missing_value = "wasmtrigger-leader")]
    pub(crate) leader_election: Option<String>,
    /// Namespace of the leader Lease (default: the pod's namespace, else `default`).
    #[arg(long, env = "LEADER_ELECTION_NAMESPACE")]
    pub(crate) leader_election_namespace: Option<String>,
    /// This replica's identity in the election (default: POD_NAME or the host name, plus a random suffix).
    #[arg(long, env = "LEADER_IDENTITY")]
    pub(crate) leader_identity: Option<String>,
    /// How long a lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub(crate) lease_duration: Duration,
    /// How long the leader tries to renew before it steps down (less than --lease-duration).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub(crate) renew_deadline: Duration,
    /// How often candidates try to acquire or renew the lease (less than --renew-deadline).
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub(crate) retry_period: Duration,
    /// Where the pod's service account token, ca.crt and namespace are mounted.
    #[arg(long, env = "SERVICE_ACCOUNT_DIR", default_value = wasmtrigger::kube::SERVICE_ACCOUNT_DIR)]
    pub(crate) service_account_dir: PathBuf,
    /// Do not watch the config and modules for changes.
    #[arg(long)]
    pub(crate) no_reload: bool,
    /// How often to rescan the config and modules even without file events.
    #[arg(long, env = "POLL_INTERVAL", default_value = "2s", value_parser = duration)]
    pub(crate) poll_interval: Duration,
    /// Compile every module at start instead of using the cache under --state-dir.
    #[arg(long)]
    pub(crate) no_module_cache: bool,
    /// Address of the HTTP server (webhooks, /metrics, /healthz, /readyz, API); `off` disables it.
    #[arg(long, env = "LISTEN", default_value = "127.0.0.1:7070")]
    pub(crate) listen: String,
    /// Require this bearer token on the /api endpoints (prefer --api-token-file).
    #[arg(long, env = "API_TOKEN", hide_env_values = true)]
    pub(crate) api_token: Option<String>,
    /// Require the bearer token in this file on the /api endpoints; re-read when it changes.
    #[arg(long, env = "API_TOKEN_FILE", conflicts_with = "api_token")]
    pub(crate) api_token_file: Option<PathBuf>,
    /// Serve the API without a token on a non-loopback address (anyone who can connect controls the engine).
    #[arg(long, env = "INSECURE_API")]
    pub(crate) insecure_api: bool,
}

#[derive(Args)]
pub(crate) struct InvokeArgs {
    /// The module (.wasm component) to run.
    pub(crate) module: PathBuf,
    /// Compile the module afresh instead of using the compiled-module cache
    /// (~/.cache/wasmtrigger/modules, or under $XDG_CACHE_HOME).
    #[arg(long)]
    pub(crate) no_cache: bool,
    /// The event: a full event record or any JSON (used as `data`); default `{}`.
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Params for an action, as JSON.
    #[arg(long)]
    pub(crate) params: Option<String>,
    /// World to use if the module implements both.
    #[arg(long, value_enum)]
    pub(crate) world: Option<WorldArg>,
    /// Time limit.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub(crate) timeout: Duration,
    /// Memory limit, e.g. 128Mi.
    #[arg(long, default_value = "128Mi", value_parser = byte_size)]
    pub(crate) memory: u64,
    /// Keep kv state in this directory (default: in memory for this call).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Grant an HTTP destination to an action, like `grants.http` (repeatable).
    #[arg(long = "allow-http", value_name = "PATTERN")]
    pub(crate) allow_http: Vec<String>,
    /// Grant a secret name to an action, like `grants.secrets` (repeatable).
    #[arg(long = "allow-secret", value_name = "NAME")]
    pub(crate) allow_secret: Vec<String>,
    #[command(flatten)]
    pub(crate) secrets: SecretsArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum WorldArg {
    Filter,
    Action,
}

#[derive(Args)]
pub(crate) struct ModulesArgs {
    /// Directory to scan for .wasm files.
    #[arg(default_value = ".")]
    pub(crate) dir: PathBuf,
    /// List the builtin modules embedded in this binary instead (`module: builtin:NAME`).
    #[arg(long)]
    pub(crate) builtin: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    pub(crate) output: Format,
}

pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    values::parse_duration(text)
}

pub(crate) fn byte_size(text: &str) -> Result<u64, String> {
    values::parse_byte_size(text)
}
