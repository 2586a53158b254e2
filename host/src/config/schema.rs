//! The raw shape of a trigger file, as serde reads it. Every struct rejects
//! unknown fields; validation that spans fields happens in `load`.

use serde::Deserialize;

use super::values::{ByteSize, DurationValue, TimeZone, Timestamp};

/// The `engine:` section: all optional, each also a CLI flag and env var.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping of engine settings like `{ workers: 4, timeout: 10s }`"
)]
pub struct EngineSpec {
    pub workers: Option<usize>,
    pub queue_size: Option<usize>,
    pub per_worker_qps: Option<f64>,
    pub timeout: Option<DurationValue>,
    pub memory: Option<ByteSize>,
    pub retry: Option<RetrySpec>,
    pub shutdown_grace: Option<DurationValue>,
    pub stdio_limit: Option<ByteSize>,
    pub module_cache_size: Option<ByteSize>,
    pub http: Option<HttpLimitsSpec>,
    pub secrets: Option<SecretsSpec>,
    pub kv: Option<KvSpec>,
    pub history: Option<HistorySpec>,
    pub journal: Option<bool>,
    pub server: Option<ServerSpec>,
    pub trigger_objects: Option<ObjectPolicySpec>,
    pub max_module_size: Option<ByteSize>,
    pub keep_resident: Option<ByteSize>,
    pub distribute: Option<DistributeSpec>,
}

/// `engine.distribute:` where singleton sources hand their work to every replica.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ via: redis, url: redis://HOST:6379 }` or `{ via: nats, url: nats://HOST:4222 }`"
)]
pub struct DistributeSpec {
    pub via: DistributeVia,
    pub url: Option<String>,
    pub url_secret: Option<String>,
    pub prefix: Option<String>,
    pub claim_idle: Option<DurationValue>,
    pub batch: Option<usize>,
}

/// What carries distributed work: Redis streams or NATS JetStream.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistributeVia {
    Redis,
    Nats,
}

/// `engine.server:` limits of the HTTP listener.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ headerTimeout: 10s, maxConnections: 1024 }`"
)]
pub struct ServerSpec {
    pub header_timeout: Option<DurationValue>,
    pub body_timeout: Option<DurationValue>,
    pub idle_timeout: Option<DurationValue>,
    pub max_connections: Option<usize>,
    pub max_body_bytes_in_flight: Option<ByteSize>,
}

/// `http:` limits, at engine level (defaults) or per action.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ timeout: 10s, maxResponseSize: 1Mi, maxRequests: 10 }`"
)]
pub struct HttpLimitsSpec {
    pub timeout: Option<DurationValue>,
    pub max_response_size: Option<ByteSize>,
    pub max_requests: Option<u32>,
}

/// `engine.secrets:` providers.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ dir: /etc/secrets, envPrefix: WT_SECRET_ }`"
)]
pub struct SecretsSpec {
    pub dir: Option<std::path::PathBuf>,
    pub env_prefix: Option<String>,
    pub kubernetes: Option<KubeSecretSpec>,
}

/// `engine.secrets.kubernetes:` a Secret whose keys are secret names.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ name: SECRET, namespace: NAMESPACE }`"
)]
pub struct KubeSecretSpec {
    pub namespace: Option<String>,
    pub name: String,
}

/// `engine.kv:` caps per trigger.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ maxValueSize: 64Ki, maxKeys: 1000 }`"
)]
pub struct KvSpec {
    pub max_value_size: Option<ByteSize>,
    pub max_keys: Option<u64>,
}

/// `action.grants:` what the action's module may use.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with `http`, `secrets` and/or `kube` lists"
)]
pub struct GrantsSpec {
    #[serde(default)]
    pub http: Vec<HttpGrantSpec>,
    #[serde(default)]
    pub secrets: Vec<String>,
    #[serde(default)]
    pub kube: Vec<KubeGrantSpec>,
}

/// One `grants.http` entry: a pattern, or a pattern with options.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a grant pattern like https://hooks.example.com, or {url: PATTERN, allowInternal: true}"
)]
pub enum HttpGrantSpec {
    /// `[scheme://]host[:port][/path]`.
    Pattern(String),
    /// `{url: PATTERN, allowInternal: true}`: may reach loopback and
    /// link-local addresses that the host name resolves to.
    #[serde(rename_all = "camelCase")]
    Detailed {
        url: String,
        #[serde(default)]
        allow_internal: bool,
    },
}

/// `engine.triggerObjects:` the most a Trigger object may use.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with `sources`, `grants` and/or `watch`"
)]
pub struct ObjectPolicySpec {
    pub sources: Option<Vec<String>>,
    pub grants: Option<GrantsSpec>,
    #[serde(default)]
    pub watch: Vec<WatchAllowanceSpec>,
}

/// One kind Trigger objects may watch.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ apiVersion: apps/v1, kind: Deployment, namespaces: [NS] }`"
)]
pub struct WatchAllowanceSpec {
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
}

/// One `grants.kube` entry.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ verbs: [get, patch], apiVersion: apps/v1, kind: Deployment }`"
)]
pub struct KubeGrantSpec {
    pub verbs: Vec<crate::config::grants::KubeVerb>,
    pub api_version: String,
    pub kind: String,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default)]
    pub names: Vec<String>,
}

/// `retry:` at engine or action level.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ max: 3, delay: 1s, maxDelay: 1m }`"
)]
pub struct RetrySpec {
    pub max: Option<u32>,
    pub delay: Option<DurationValue>,
    pub max_delay: Option<DurationValue>,
}

/// One entry of `triggers:` without its parts: `source` (read by its `type`),
/// `filter` and `action` are taken out first and read on their own, so a
/// problem in one does not hide a problem in another.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a trigger: a mapping with `name`, `source` and `action`"
)]
pub struct TriggerSpec {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub ordering: Option<OrderingSpec>,
    pub dry_run: Option<bool>,
    pub shadow: Option<ShadowSpec>,
}

/// `shadow: {module, sample}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping like `{ module: candidate.wasm, sample: 0.1 }`"
)]
pub struct ShadowSpec {
    pub module: String,
    pub sample: Option<f64>,
}

/// `ordering:` — `none`, or `{key: CEL}`.
#[derive(Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "`none`, or a mapping like `{ key: event.data.body.orderId }`"
)]
pub enum OrderingSpec {
    Word(String),
    Key(OrderingKeySpec),
}

/// `ordering: {key: ...}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderingKeySpec {
    pub key: String,
}

/// `source: {type: schedule, ...}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a schedule like `{ type: schedule, cron: \"*/5 * * * *\" }` or `{ type: schedule, every: 30s }`"
)]
pub struct ScheduleSpec {
    pub cron: Option<String>,
    pub timezone: Option<TimeZone>,
    pub every: Option<DurationValue>,
    pub immediately: Option<bool>,
    pub at: Option<Timestamp>,
    pub now: Option<bool>,
    pub until: Option<Timestamp>,
    pub overlap: Option<OverlapSpec>,
}

/// `source: {type: trigger, ...}`: runs when other triggers' runs end.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ type: trigger, of: NAME, on: [success] }`"
)]
pub struct ChainSpec {
    pub of: Option<String>,
    pub on: Option<Vec<OutcomeSpec>>,
    pub all: Option<Vec<ConditionSpec>>,
    pub any: Option<Vec<ConditionSpec>>,
    pub window: Option<DurationValue>,
}

/// One upstream condition of `all:` / `any:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ of: NAME, on: [failure] }`"
)]
pub struct ConditionSpec {
    pub of: String,
    pub on: Option<Vec<OutcomeSpec>>,
}

/// How an upstream run ended.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeSpec {
    Success,
    Failure,
}

/// `source: {type: redis-queue, ...}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ type: redis-queue, url: redis://HOST, stream: NAME }`"
)]
pub struct RedisQueueSpec {
    pub url: Option<String>,
    pub url_secret: Option<String>,
    pub stream: String,
    pub group: Option<String>,
    pub consumer: Option<String>,
    pub dead_letter: Option<String>,
    pub claim_idle: Option<DurationValue>,
    pub batch: Option<usize>,
    pub max_entry_size: Option<ByteSize>,
}

/// `source: {type: nats, ...}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ type: nats, url: nats://HOST:4222, stream: NAME }`"
)]
pub struct NatsSpec {
    pub url: Option<String>,
    pub url_secret: Option<String>,
    pub stream: String,
    pub subject: Option<String>,
    pub consumer: Option<String>,
    pub dead_letter: Option<String>,
    pub ack_wait: Option<DurationValue>,
    pub max_deliver: Option<u32>,
    pub max_ack_pending: Option<usize>,
    pub batch: Option<usize>,
    pub max_message_size: Option<ByteSize>,
}

/// `source: {type: mqtt, ...}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ type: mqtt, url: mqtt://HOST:1883, topics: [sensors/#] }`"
)]
pub struct MqttSpec {
    pub url: Option<String>,
    pub url_secret: Option<String>,
    pub topics: Vec<String>,
    pub client_id: Option<String>,
    pub clean_session: Option<bool>,
    pub protocol: Option<MqttProtocolSpec>,
    pub keep_alive: Option<DurationValue>,
    pub session_expiry: Option<DurationValue>,
    pub max_message_size: Option<ByteSize>,
}

/// `3.1.1` or `5`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum MqttProtocolSpec {
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

/// `source: {type: kube-watch, ...}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ type: kube-watch, apiVersion: apps/v1, kind: Deployment }`"
)]
pub struct KubeWatchSpec {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub namespaces: Option<Vec<String>>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub events: Option<Vec<KubeEventSpec>>,
    pub initial: Option<bool>,
    pub skip_noise: Option<bool>,
}

/// One of `create`, `update`, `delete`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum KubeEventSpec {
    Create,
    Update,
    Delete,
}

/// `source: {type: webhook, ...}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ type: webhook, auth: none }`"
)]
pub struct WebhookSpec {
    pub auth: Option<AuthSpec>,
    pub headers: Option<Vec<String>>,
    pub max_body_size: Option<ByteSize>,
}

/// Webhook authentication: `none`, `{bearer: {secret}}` or `{hmac: {secret, header, prefix}}`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "`none`, `{ bearer: { secret: NAME } }` or `{ hmac: { secret: NAME } }`"
)]
pub enum AuthSpec {
    None,
    Bearer {
        secret: String,
    },
    Hmac {
        secret: String,
        header: Option<String>,
        prefix: Option<String>,
    },
}

/// `engine.history:` retention of stored runs.
#[derive(Debug, Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ maxAge: 7d, maxPerTrigger: 1000 }`"
)]
pub struct HistorySpec {
    pub max_age: Option<DurationValue>,
    pub max_per_trigger: Option<usize>,
    pub record: Option<bool>,
    pub max_event_size: Option<ByteSize>,
}

/// What a schedule does with a tick while its previous run is unfinished.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum OverlapSpec {
    Skip,
    Coalesce,
}

/// `filter:` — exactly one of `module` or `cel`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping with `module: NAME.wasm` or `cel: EXPRESSION`"
)]
pub struct FilterSpec {
    pub module: Option<String>,
    pub cel: Option<String>,
    pub timeout: Option<DurationValue>,
    pub memory: Option<ByteSize>,
    pub isolation: Option<IsolationSpec>,
}

/// `filter.isolation:` a fresh instance per event, or warm instances reused.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationSpec {
    Fresh,
    Pooled,
}

/// `action:`.
#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    expecting = "a mapping like `{ module: NAME.wasm, params: {...} }`"
)]
pub struct ActionSpec {
    pub module: String,
    #[serde(default)]
    pub params: Option<serde_json::Value>,
    pub timeout: Option<DurationValue>,
    pub memory: Option<ByteSize>,
    pub retry: Option<RetrySpec>,
    pub grants: Option<GrantsSpec>,
    pub http: Option<HttpLimitsSpec>,
    /// Param name -> secret name, merged into `params` at each run.
    pub imports: Option<std::collections::BTreeMap<String, String>>,
}
