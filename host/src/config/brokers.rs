//! Settings of the sources that drain a message broker: Redis streams
//! (`redis-queue`), NATS JetStream (`nats`) and MQTT (`mqtt`). Each names its
//! server as an [`Endpoint`], so a URL with credentials lives in a secret.

use std::time::Duration;

/// Where a broker is: a URL written in the config, or a secret holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A URL in the config (the loader refuses one with a password in it).
    Url(String),
    /// The name of a secret whose value is the URL (credentials included).
    Secret(String),
}

/// A Redis stream drained through a consumer group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisQueueConfig {
    /// Where Redis is.
    pub server: Endpoint,
    /// The stream key.
    pub stream: String,
    /// The consumer group every replica joins.
    pub group: String,
    /// This process's consumer name (default: host name and process id).
    pub consumer: Option<String>,
    /// Stream that failed entries are copied to.
    pub dead_letter: String,
    /// Pending entries idle this long (their consumer died) are claimed.
    pub claim_idle: Duration,
    /// Entries read per call.
    pub batch: usize,
    /// Largest entry (all fields) handed to the trigger; bigger ones are dead-lettered.
    pub max_entry_bytes: u64,
    /// Some for a distributed trigger's stream: entries carry whole events
    /// and per-key sequence numbers (see the `distribute` module), never for a
    /// `redis-queue` source, whose entries are data.
    pub distributed: Option<DistributedKeys>,
}

/// What carries a distributed trigger's events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A Redis stream per trigger, drained through a consumer group.
    Redis,
    /// A NATS JetStream stream per trigger, drained through a durable pull consumer.
    Nats,
}

/// `engine.distribute`: the leader publishes what its singleton sources
/// (schedules, kube watches) produce into a stream per trigger (Redis or
/// NATS JetStream), and every replica drains those streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributeSettings {
    /// Redis or NATS.
    pub via: Transport,
    /// Where the server is.
    pub server: Endpoint,
    /// Prefix of every key (`<prefix>:{<trigger>}:…`) or stream, subject and
    /// bucket (`<prefix>_<trigger>…`) the engine writes.
    pub prefix: String,
    /// Pending entries idle this long (their replica died) are claimed.
    pub claim_idle: Duration,
    /// Entries read per call.
    pub batch: usize,
}

/// The Redis keys of one trigger's distributed work (see the `distribute` module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedKeys {
    /// The stream of events.
    pub stream: String,
    /// Last sequence number published, per ordering key.
    pub seq: String,
    /// Last sequence number whose run ended, per ordering key.
    pub done: String,
    /// resourceVersion per object, as the leader last handled it.
    pub watch: String,
    /// Set once a leader has listed the watched objects.
    pub watching: String,
}

impl DistributedKeys {
    /// The keys for `trigger` under `prefix`.
    pub fn of(prefix: &str, trigger: &str) -> Self {
        let base = format!("{prefix}:{{{trigger}}}");
        DistributedKeys {
            stream: format!("{base}:events"),
            seq: format!("{base}:seq"),
            done: format!("{base}:done"),
            watch: format!("{base}:watch"),
            watching: format!("{base}:watching"),
        }
    }
}

/// A NATS JetStream stream drained through a durable pull consumer that every
/// replica shares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    /// Where NATS is (`nats://`, `tls://`).
    pub server: Endpoint,
    /// The JetStream stream.
    pub stream: String,
    /// Only messages on subjects matching this filter (default: all of the stream's).
    pub subject: Option<String>,
    /// The durable consumer's name.
    pub consumer: String,
    /// Subject failed messages are published to, with the error in a header.
    pub dead_letter: String,
    /// How long the server waits for an acknowledgement before redelivering;
    /// runs in progress keep their messages by telling it they are working.
    pub ack_wait: Duration,
    /// Deliveries without an outcome (the engine died each time) before a
    /// message is dead-lettered unrun.
    pub max_deliver: u32,
    /// Unacknowledged messages across all replicas (default: the dispatch queue's size).
    pub max_ack_pending: Option<usize>,
    /// Messages asked for per pull.
    pub batch: usize,
    /// Largest message (payload and headers) handed to the trigger; bigger ones are dead-lettered.
    pub max_message_bytes: u64,
    /// Some for a distributed trigger's stream: messages carry whole events
    /// and an ordered trigger's keys are subjects (see the `distribute`
    /// module), never for a `nats` source, whose messages are data.
    pub distributed: Option<DistributedSubjects>,
}

/// The NATS names of one trigger's distributed work (see the `distribute` module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedSubjects {
    /// The work-queue stream of the events.
    pub stream: String,
    /// What every subject of the trigger starts with (`<prefix>.<trigger>`).
    pub base: String,
    /// The stream that stores failed events.
    pub dead_stream: String,
}

impl DistributedSubjects {
    /// The names for `trigger` under `prefix` (a prefix of `a-z A-Z 0-9 - _`).
    /// A trigger name's `.` cannot be in a stream name or a subject token, so
    /// it is written `_d`, and `_` is written `__`: distinct names stay distinct.
    pub fn of(prefix: &str, trigger: &str) -> Self {
        let mut escaped = String::with_capacity(trigger.len());
        for c in trigger.chars() {
            match c {
                '_' => escaped.push_str("__"),
                '.' => escaped.push_str("_d"),
                c => escaped.push(c),
            }
        }
        DistributedSubjects {
            stream: format!("{prefix}_{escaped}"),
            base: format!("{prefix}.{escaped}"),
            dead_stream: format!("{prefix}_{escaped}_dead"),
        }
    }

    /// The stream of the watch's positions, one message per object.
    pub fn watch_stream(&self) -> String {
        format!("{}_watch", self.stream)
    }

    /// The subjects of the events: one per ordering key, and one for the rest.
    pub fn events(&self) -> String {
        format!("{}.events.>", self.base)
    }

    /// The subject failed events are published to.
    pub fn dead_letter(&self) -> String {
        format!("{}.dead", self.base)
    }
}

/// The MQTT protocol version spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 3.1.1.
    V311,
    /// MQTT 5.
    V5,
}

/// MQTT topics subscribed to with QoS 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttConfig {
    /// Where the broker is (`mqtt://`, `mqtts://`).
    pub server: Endpoint,
    /// Topic filters; `$share/GROUP/FILTER` splits messages among replicas.
    pub topics: Vec<String>,
    /// The client id, which names the persistent session (default: derived
    /// from the trigger and the host name).
    pub client_id: Option<String>,
    /// Start without the broker's stored session (no persistent session).
    pub clean_session: bool,
    /// 3.1.1 or 5.
    pub protocol: MqttProtocol,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// How long the broker keeps the session while this client is away (MQTT 5).
    pub session_expiry: Duration,
    /// Largest message handed to the trigger; bigger ones are refused by the client.
    pub max_message_bytes: u64,
}
