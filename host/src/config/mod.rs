//! Trigger configuration: the schema operators write, and loading it from a
//! file or a directory into validated, ready-to-run settings.
//!
//! Every problem is reported with the file, the trigger and the field it
//! belongs to, and loading goes on past the first problem so that `check`
//! can list them all at once.

mod brokers;
mod chains;
pub mod cron;
pub mod document;
pub mod grants;
pub mod json_schema;
mod load;
mod ordering;
pub mod policy;
mod schema;
pub mod values;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::cel::CelFilter;
use crate::config::cron::CronSchedule;
use crate::config::grants::Grants;

pub use brokers::{
    DistributeSettings, DistributedKeys, DistributedSubjects, Endpoint, MqttConfig, MqttProtocol,
    NatsConfig, RedisQueueConfig, Transport,
};
pub use chains::{ChainCondition, ChainConfig, ChainMode, Outcome};
pub use load::{
    builtin_kube_needs, chain_errors, load, load_declarations, load_partial, load_trigger,
    schedule_warnings, warnings,
};
pub use ordering::{OrderingConfig, OrderingKey};

/// Bytes of each instance slot kept resident unless `engine.keepResident` says
/// otherwise: enough for a small guest's stack and heap (docs/performance.md).
pub const DEFAULT_KEEP_RESIDENT: u64 = 1 << 20;

/// Largest module file accepted unless `engine.maxModuleSize` says otherwise.
pub const DEFAULT_MAX_MODULE_SIZE: u64 = 64 << 20;

/// Largest per-invocation memory limit a trigger may ask for.
pub const MAX_MEMORY_LIMIT: u64 = 4 << 30;

/// A fully validated configuration, ready for the engine.
#[derive(Clone, Debug)]
pub struct Config {
    /// Engine-wide settings after flags, env vars and the file were merged.
    pub engine: EngineSettings,
    /// Triggers in file order.
    pub triggers: Vec<TriggerConfig>,
    /// Where module names are resolved.
    pub modules_dir: PathBuf,
    /// The files the config was read from.
    pub files: Vec<PathBuf>,
    /// Hash of the files' names and contents as read, for the reloader.
    pub source_hash: Option<u64>,
}

impl Config {
    /// Names of every module the triggers use, without repeats.
    pub fn module_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .triggers
            .iter()
            .flat_map(TriggerConfig::module_names)
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Engine-wide settings; each has a config field, a CLI flag and an env var.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    /// Worker tasks executing runs.
    pub workers: usize,
    /// Capacity of the dispatch queue.
    pub queue_size: usize,
    /// Executions per second per worker; 0 means unlimited.
    pub per_worker_qps: f64,
    /// Default wall-clock limit for one module invocation.
    pub timeout: Duration,
    /// Default linear-memory limit for one module invocation, in bytes.
    pub memory: u64,
    /// Default retry policy for actions.
    pub retry: RetryPolicy,
    /// How long in-flight runs may take to finish after a stop signal.
    pub shutdown_grace: Duration,
    /// Bytes a guest may write to stdout+stderr in one invocation.
    pub stdio_limit: u64,
    /// Size bound of the compiled-module cache.
    pub module_cache_size: u64,
    /// Default HTTP limits for actions.
    pub http: HttpLimits,
    /// Where secrets come from.
    pub secrets: SecretsSettings,
    /// Caps on each trigger's kv namespace.
    pub kv: KvLimits,
    /// Retention of stored runs.
    pub history: Retention,
    /// Whether accepted events are journaled (replayed after a crash).
    pub journal: bool,
    /// Limits of the HTTP listener against slow and greedy clients.
    pub server: ServerLimits,
    /// The most a Trigger object may use (`engine.triggerObjects`).
    pub trigger_objects: policy::ObjectPolicy,
    /// Largest module file accepted; bigger ones are refused by size, unread.
    pub max_module_size: u64,
    /// Bytes of each instance slot's memory kept mapped and reset in place
    /// when an instance ends, instead of being handed back to the kernel.
    pub keep_resident: u64,
    /// Where singleton sources publish their events for every replica, if anywhere.
    pub distribute: Option<DistributeSettings>,
}

/// Limits of the HTTP listener (`engine.server`) against slow and greedy clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// From the first byte of a request until its headers are complete.
    pub header_timeout: Duration,
    /// From the end of the headers until the whole body is in.
    pub body_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request (also
    /// how long a client may take to read a response).
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// Request-body bytes held in memory at once, across all requests; a body
    /// that does not fit is answered 503 before it is read.
    pub max_body_bytes_in_flight: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_body_bytes_in_flight: 32 << 20,
        }
    }
}

/// Caps on one trigger's kv namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvLimits {
    /// Longest key in bytes.
    pub max_key_bytes: usize,
    /// Longest value in bytes.
    pub max_value_bytes: usize,
    /// Most keys one trigger may hold.
    pub max_keys: u64,
}

impl Default for KvLimits {
    fn default() -> Self {
        KvLimits {
            max_key_bytes: 512,
            max_value_bytes: 64 * 1024,
            max_keys: 10_000,
        }
    }
}

/// How long runs are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Records older than this are deleted.
    pub max_age: Duration,
    /// Only the newest this many records per trigger are kept.
    pub max_per_trigger: usize,
    /// Largest event data a run's recording keeps (None: runs are not recorded).
    pub record_event_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_per_trigger: 1000,
            record_event_bytes: Some(64 * 1024),
        }
    }
}

/// Limits on an action's outbound HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time for one request, redirects and body included.
    pub timeout: Duration,
    /// Largest response body accepted.
    pub max_response_bytes: u64,
    /// Requests one run may send.
    pub max_requests: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            timeout: Duration::from_secs(10),
            max_response_bytes: 4 << 20,
            max_requests: 16,
        }
    }
}

/// Secret providers, looked up in this order: the directory, then the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SecretsSettings {
    /// A directory with one file per secret (a mounted Kubernetes Secret).
    pub dir: Option<PathBuf>,
    /// Environment variables `PREFIX` + the name upper-cased, `-` and `.` as `_`.
    pub env_prefix: Option<String>,
    /// A Kubernetes Secret read through the API: (namespace, name).
    pub kubernetes: Option<(String, String)>,
}

impl EngineSettings {
    /// Names of the settings that differ from `other` and only apply at start
    /// (timeouts, memory and retries reach triggers through their own config).
    pub fn restart_only_differences(&self, other: &EngineSettings) -> Vec<&'static str> {
        let mut differ = Vec::new();
        if self.workers != other.workers {
            differ.push("workers");
        }
        if self.queue_size != other.queue_size {
            differ.push("queueSize");
        }
        if self.per_worker_qps != other.per_worker_qps {
            differ.push("perWorkerQps");
        }
        if self.shutdown_grace != other.shutdown_grace {
            differ.push("shutdownGrace");
        }
        if self.stdio_limit != other.stdio_limit {
            differ.push("stdioLimit");
        }
        if self.module_cache_size != other.module_cache_size {
            differ.push("moduleCacheSize");
        }
        if self.secrets != other.secrets {
            differ.push("secrets");
        }
        if self.kv != other.kv {
            differ.push("kv");
        }
        if self.history != other.history {
            differ.push("history");
        }
        if self.journal != other.journal {
            differ.push("journal");
        }
        if self.server != other.server {
            differ.push("server");
        }
        if self.max_module_size != other.max_module_size {
            differ.push("maxModuleSize");
        }
        if self.keep_resident != other.keep_resident {
            differ.push("keepResident");
        }
        if self.distribute != other.distribute {
            differ.push("distribute");
        }
        differ
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            workers: 4,
            queue_size: 100,
            per_worker_qps: 0.0,
            timeout: Duration::from_secs(10),
            memory: 128 << 20,
            retry: RetryPolicy::default(),
            shutdown_grace: Duration::from_secs(30),
            stdio_limit: 256 << 10,
            module_cache_size: 1 << 30,
            http: HttpLimits::default(),
            secrets: SecretsSettings::default(),
            kv: KvLimits::default(),
            history: Default::default(),
            journal: true,
            server: ServerLimits::default(),
            trigger_objects: policy::ObjectPolicy::default(),
            max_module_size: DEFAULT_MAX_MODULE_SIZE,
            keep_resident: DEFAULT_KEEP_RESIDENT,
            distribute: None,
        }
    }
}

/// Engine settings given on the command line or in the environment; they win over the file.
#[derive(Clone, Debug, Default)]
pub struct EngineOverrides {
    pub workers: Option<usize>,
    pub queue_size: Option<usize>,
    pub per_worker_qps: Option<f64>,
    pub timeout: Option<Duration>,
    pub max_retry: Option<u32>,
    pub retry_delay: Option<Duration>,
    pub secrets_dir: Option<PathBuf>,
    pub secrets_env_prefix: Option<String>,
    /// Accept files without triggers (Trigger objects bring them).
    pub allow_no_triggers: bool,
}

/// Exponential backoff with jitter: attempt n waits `delay * 2^(n-1)`, at most `max_delay`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = no retry).
    pub max: u32,
    /// Wait before the first retry.
    pub delay: Duration,
    /// Upper bound for any single wait.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max: 3,
            delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Bounds on one module invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Linear-memory limit in bytes.
    pub memory: u64,
}

/// One trigger: where events come from, how they are filtered, what runs.
#[derive(Clone, Debug)]
pub struct TriggerConfig {
    /// Unique name; used in logs, run records, kv namespaces and URLs.
    pub name: String,
    /// Optional human description.
    pub description: Option<String>,
    /// File the trigger was defined in.
    pub file: PathBuf,
    /// Event source.
    pub source: SourceConfig,
    /// Optional filter; without one every event reaches the action.
    pub filter: Option<FilterConfig>,
    /// The action.
    pub action: ActionConfig,
    /// Which of its events must run one at a time, in order.
    pub ordering: OrderingConfig,
    /// Runs the action with its side effects suppressed (a staged automation).
    pub dry_run: bool,
    /// A candidate action run after the primary, side effects suppressed, and compared.
    pub shadow: Option<ShadowConfig>,
}

/// `shadow:` of a trigger.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowConfig {
    /// The candidate module (limits as the action's).
    pub module: ModuleUse,
    /// The share of events it runs on, 0.0 to 1.0.
    pub sample: f64,
}

impl TriggerConfig {
    /// Every secret this trigger names, with the field that names it.
    pub fn secret_refs(&self) -> Vec<(String, String)> {
        let mut refs = Vec::new();
        match &self.source {
            SourceConfig::Webhook(WebhookConfig {
                auth: WebhookAuth::Bearer { secret } | WebhookAuth::Hmac { secret, .. },
                ..
            }) => refs.push(("source.auth.secret".to_string(), secret.clone())),
            SourceConfig::RedisQueue(RedisQueueConfig {
                server: Endpoint::Secret(secret),
                ..
            })
            | SourceConfig::Nats(NatsConfig {
                server: Endpoint::Secret(secret),
                ..
            })
            | SourceConfig::Mqtt(MqttConfig {
                server: Endpoint::Secret(secret),
                ..
            }) => refs.push(("source.urlSecret".to_string(), secret.clone())),
            _ => {}
        }
        for name in &self.action.grants.secrets {
            refs.push(("action.grants.secrets".to_string(), name.clone()));
        }
        for (param, name) in &self.action.imports {
            refs.push((format!("action.imports.{param}"), name.clone()));
        }
        refs
    }

    /// The modules this trigger uses: its filter module, if any, its action and its shadow.
    pub fn module_names(&self) -> Vec<String> {
        let filter = match &self.filter {
            Some(FilterConfig::Module(m)) => Some(m.name.clone()),
            _ => None,
        };
        filter
            .into_iter()
            .chain(self.action_modules().into_iter().map(|m| m.name.clone()))
            .collect()
    }

    /// The modules run as actions: the action's, and the shadow candidate's.
    pub fn action_modules(&self) -> Vec<&ModuleUse> {
        std::iter::once(&self.action.module)
            .chain(self.shadow.as_ref().map(|s| &s.module))
            .collect()
    }
}

/// An event source of one trigger.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConfig {
    /// `type: schedule`.
    Schedule(ScheduleConfig),
    /// `type: trigger`: the end of other triggers' runs.
    Chain(ChainConfig),
    /// `type: webhook`: POSTs to `/hooks/{trigger}`.
    Webhook(WebhookConfig),
    /// `type: redis-queue`: entries of a Redis stream, through a consumer group.
    RedisQueue(RedisQueueConfig),
    /// `type: nats`: messages of a NATS JetStream stream, through a durable pull consumer.
    Nats(NatsConfig),
    /// `type: mqtt`: messages of MQTT topics, at least once (QoS 1).
    Mqtt(MqttConfig),
    /// `type: kube-watch`: changes to Kubernetes objects.
    KubeWatch(KubeWatchConfig),
}

impl SourceConfig {
    /// The source type as written in config and in events' `source` field.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::Schedule(_) => "schedule",
            SourceConfig::Chain(_) => "trigger",
            SourceConfig::Webhook(_) => "webhook",
            SourceConfig::RedisQueue(_) => "redis-queue",
            SourceConfig::Nats(_) => "nats",
            SourceConfig::Mqtt(_) => "mqtt",
            SourceConfig::KubeWatch(_) => "kube-watch",
        }
    }
}

/// Webhook authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookAuth {
    /// No credential (say so explicitly with `auth: none`).
    None,
    /// `Authorization: Bearer <secret>`.
    Bearer {
        /// Secret holding the token.
        secret: String,
    },
    /// HMAC-SHA256 of the body, hex, in a header (GitHub's `X-Hub-Signature-256` by default).
    Hmac {
        /// Secret holding the key.
        secret: String,
        /// Header carrying the signature (lowercase).
        header: String,
        /// Text before the hex digest, `sha256=` by default.
        prefix: String,
    },
}

/// A watch on one kind of Kubernetes object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeWatchConfig {
    /// `v1`, `apps/v1`, ...
    pub api_version: String,
    /// `Deployment`, ...
    pub kind: String,
    /// Namespaces to watch; empty means all (or a cluster-scoped kind).
    pub namespaces: Vec<String>,
    /// Label selector, passed to the server.
    pub label_selector: Option<String>,
    /// Field selector, passed to the server.
    pub field_selector: Option<String>,
    /// Which changes become events.
    pub events: Vec<KubeEvent>,
    /// Fire `create` for the objects that exist when the watch starts.
    pub initial: bool,
    /// Skip updates that change only `status` or bookkeeping metadata.
    pub skip_noise: bool,
}

/// A kind of object change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KubeEvent {
    /// The object appeared.
    Create,
    /// The object changed.
    Update,
    /// The object went away.
    Delete,
}

impl KubeEvent {
    /// Name as in config and in events' `kind`.
    pub fn name(self) -> &'static str {
        match self {
            KubeEvent::Create => "create",
            KubeEvent::Update => "update",
            KubeEvent::Delete => "delete",
        }
    }
}

/// A webhook source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookConfig {
    /// How callers authenticate.
    pub auth: WebhookAuth,
    /// Request headers copied into the event (lowercase names).
    pub headers: Vec<String>,
    /// Largest accepted body.
    pub max_body_bytes: u64,
}

/// A schedule source.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    /// When it fires.
    pub mode: ScheduleMode,
    /// After this instant the schedule stops.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// What to do with a tick while the previous run is unfinished.
    pub overlap: Overlap,
}

/// The firing rule of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub enum ScheduleMode {
    /// A crontab expression evaluated in a time zone.
    Cron {
        /// The parsed expression.
        schedule: CronSchedule,
        /// Zone the expression is evaluated in (UTC by default).
        timezone: chrono_tz::Tz,
    },
    /// A fixed period.
    Every {
        /// Time between ticks.
        period: Duration,
        /// Fire once at start instead of after the first period.
        immediately: bool,
    },
    /// Once at an instant.
    At(chrono::DateTime<chrono::Utc>),
    /// Once when the engine starts.
    Now,
}

/// Overlap policy of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overlap {
    /// Drop ticks that come while a run of the trigger is unfinished (counted and logged).
    Skip,
    /// Remember one such tick and fire it as soon as the unfinished run ends.
    Coalesce,
}

/// A trigger's filter.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterConfig {
    /// An inline CEL predicate.
    Cel(CelFilter),
    /// A filter module.
    Module(ModuleUse),
}

/// A module referenced by a trigger, with the limits it runs under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleUse {
    /// The name as written in the config, e.g. `counter.wasm`.
    pub name: String,
    /// Resolved file path.
    pub path: PathBuf,
    /// Limits for each invocation.
    pub limits: Limits,
    /// Whether each event gets a fresh instance (always so for actions).
    pub isolation: Isolation,
}

/// How instances of a filter module are used across events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// A fresh instance per event: nothing a guest keeps in memory survives it.
    #[default]
    Fresh,
    /// Warm instances are reused across events of one trigger (opt-in, for pure
    /// filters): saves instantiation, but guest globals persist between events.
    Pooled,
}

impl Isolation {
    /// Name as in config.
    pub fn name(self) -> &'static str {
        match self {
            Isolation::Fresh => "fresh",
            Isolation::Pooled => "pooled",
        }
    }
}

/// A trigger's action.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionConfig {
    /// The action module.
    pub module: ModuleUse,
    /// `params` as JSON text (`{}` when absent).
    pub params: String,
    /// Retry policy for failed attempts.
    pub retry: RetryPolicy,
    /// What the module may use.
    pub grants: Grants,
    /// Limits on its outbound HTTP.
    pub http: HttpLimits,
    /// Param name -> secret name, merged into params at each run.
    pub imports: Vec<(String, String)>,
}

/// One problem in a config, located as precisely as possible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// The trigger's name (or `triggers[i]` when it has none).
    pub trigger: Option<String>,
    /// Dotted path of the field, e.g. `action.timeout`.
    pub field: Option<String>,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(t) = &self.trigger {
            write!(f, ": trigger `{t}`")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found while loading a config.
#[derive(Clone, Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
