//! Sources that drain a message broker: `redis-queue` (a stream through a
//! consumer group), `nats` (a JetStream durable pull consumer) and `mqtt`
//! (QoS 1 subscriptions). They share how the server is named: `url` in the
//! config, without a password, or `urlSecret` naming a secret that holds it.

use std::path::Path;
use std::time::Duration;

use super::super::MqttProtocol;
use super::super::schema::{MqttProtocolSpec, MqttSpec, NatsSpec, RedisQueueSpec};
use super::super::*;
use super::Loader;
use super::engine::out_of_bounds;
use crate::config::grants::check_secret_name;

/// The largest message a broker source may be told to accept.
const MAX_MESSAGE: u64 = 64 << 20;

impl Loader<'_> {
    /// Reads `url` / `urlSecret`: exactly one, a URL of one of `schemes` and
    /// without a password (it would sit in the config and in its errors).
    fn endpoint(
        &mut self,
        (file, label): (&Path, &str),
        url: Option<String>,
        url_secret: Option<String>,
        kind: &str,
        schemes: &[&str],
        example: &str,
    ) -> Option<Endpoint> {
        match (url, url_secret) {
            (Some(url), None) => {
                match url::Url::parse(&url) {
                    Ok(u) if schemes.contains(&u.scheme()) => {
                        if u.password().is_some() {
                            let message = "the URL holds a password: put the whole URL in a secret and use `urlSecret`".to_string();
                            self.error(file, Some(label), Some("source.url"), message);
                        }
                    }
                    // Not echoed: a malformed URL may still hold a password.
                    _ => {
                        let message = format!("invalid {kind} URL: expected {example}");
                        self.error(file, Some(label), Some("source.url"), message);
                    }
                }
                Some(Endpoint::Url(url))
            }
            (None, Some(secret)) => {
                if let Err(message) = check_secret_name(&secret) {
                    self.error(file, Some(label), Some("source.urlSecret"), message);
                }
                Some(Endpoint::Secret(secret))
            }
            _ => {
                let message = format!("a {kind} source takes exactly one of `url` or `urlSecret`");
                self.error(file, Some(label), Some("source"), message);
                None
            }
        }
    }

    /// Checks `value` against `1..=max` and records an error at `field` otherwise.
    fn bounded(
        &mut self,
        at: (&Path, &str),
        field: &str,
        value: u64,
        max: u64,
        unit: &'static str,
    ) {
        for (field, message) in out_of_bounds(&[(field.to_string(), value, 1, max, unit)]) {
            self.error(at.0, Some(at.1), Some(&field), message);
        }
    }

    /// The largest message a broker source takes: `given` (default 1 MiB), checked.
    fn message_size(&mut self, at: (&Path, &str), field: &str, given: Option<u64>) -> u64 {
        let bytes = given.unwrap_or(1 << 20);
        self.bounded(at, field, bytes, MAX_MESSAGE, " bytes");
        bytes
    }

    pub(super) fn redis_queue(
        &mut self,
        file: &Path,
        label: &str,
        spec: RedisQueueSpec,
    ) -> Option<RedisQueueConfig> {
        let at = (file, label);
        let before = self.errors.len();
        let server = self.endpoint(
            at,
            spec.url,
            spec.url_secret,
            "redis-queue",
            &["redis", "rediss"],
            "redis://host[:port][/db] or rediss://…",
        )?;
        if spec.stream.trim().is_empty() {
            let message = "expected a stream key".to_string();
            self.error(file, Some(label), Some("source.stream"), message);
        }
        let claim_idle = spec
            .claim_idle
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(60));
        if claim_idle < Duration::from_millis(100) {
            let message =
                "expected at least 100ms: a shorter idle time steals entries from live consumers"
                    .to_string();
            self.error(file, Some(label), Some("source.claimIdle"), message);
        }
        let batch = spec.batch.unwrap_or(16);
        self.bounded(at, "source.batch", batch as u64, 1000, "");
        let max_entry_bytes =
            self.message_size(at, "source.maxEntrySize", spec.max_entry_size.map(|b| b.0));
        if self.errors.len() > before {
            return None;
        }
        Some(RedisQueueConfig {
            max_entry_bytes,
            dead_letter: spec
                .dead_letter
                .unwrap_or_else(|| format!("{}:dead", spec.stream)),
            stream: spec.stream,
            group: spec.group.unwrap_or_else(|| "wasmtrigger".into()),
            consumer: spec.consumer,
            server,
            claim_idle,
            batch,
            distributed: None,
        })
    }

    pub(super) fn nats(&mut self, file: &Path, label: &str, spec: NatsSpec) -> Option<NatsConfig> {
        let at = (file, label);
        let before = self.errors.len();
        let server = self.endpoint(
            at,
            spec.url,
            spec.url_secret,
            "nats",
            &["nats", "tls"],
            "nats://host[:port] or tls://host[:port]",
        )?;
        if let Err(message) = nats_name(&spec.stream) {
            self.error(file, Some(label), Some("source.stream"), message);
        }
        let consumer = spec
            .consumer
            .unwrap_or_else(|| format!("wasmtrigger-{}", label.replace('.', "_")));
        if let Err(message) = nats_name(&consumer) {
            self.error(file, Some(label), Some("source.consumer"), message);
        }
        if let Some(subject) = &spec.subject
            && let Err(message) = nats_subject(subject, true)
        {
            self.error(file, Some(label), Some("source.subject"), message);
        }
        let dead_letter = spec
            .dead_letter
            .unwrap_or_else(|| format!("wasmtrigger.dead.{label}"));
        if let Err(message) = nats_subject(&dead_letter, false) {
            self.error(file, Some(label), Some("source.deadLetter"), message);
        }
        let ack_wait = spec
            .ack_wait
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        if !(Duration::from_secs(1)..=Duration::from_secs(12 * 3600)).contains(&ack_wait) {
            let message = "expected 1s to 12h: runs in progress renew it every third of it, so a shorter one risks redelivering live messages".to_string();
            self.error(file, Some(label), Some("source.ackWait"), message);
        }
        let max_deliver = spec.max_deliver.unwrap_or(5);
        self.bounded(at, "source.maxDeliver", max_deliver.into(), 1000, "");
        if let Some(pending) = spec.max_ack_pending {
            self.bounded(at, "source.maxAckPending", pending as u64, 1_000_000, "");
        }
        let batch = spec.batch.unwrap_or(64);
        self.bounded(at, "source.batch", batch as u64, 1000, "");
        let max_message_bytes = self.message_size(
            at,
            "source.maxMessageSize",
            spec.max_message_size.map(|b| b.0),
        );
        if self.errors.len() > before {
            return None;
        }
        Some(NatsConfig {
            server,
            stream: spec.stream,
            subject: spec.subject,
            consumer,
            dead_letter,
            ack_wait,
            max_deliver,
            max_ack_pending: spec.max_ack_pending,
            batch,
            max_message_bytes,
            distributed: None,
        })
    }

    pub(super) fn mqtt(&mut self, file: &Path, label: &str, spec: MqttSpec) -> Option<MqttConfig> {
        let at = (file, label);
        let before = self.errors.len();
        let server = self.endpoint(
            at,
            spec.url,
            spec.url_secret,
            "mqtt",
            &["mqtt", "mqtts", "tcp", "ssl"],
            "mqtt://host[:port] or mqtts://host[:port]",
        )?;
        if spec.topics.is_empty() {
            let message = "expected at least one topic filter".to_string();
            self.error(file, Some(label), Some("source.topics"), message);
        }
        for (i, topic) in spec.topics.iter().enumerate() {
            if let Err(message) = mqtt_filter(topic) {
                self.error(
                    file,
                    Some(label),
                    Some(&format!("source.topics[{i}]")),
                    message,
                );
            }
        }
        if let Some(id) = &spec.client_id
            && (id.is_empty() || id.len() > 128 || id.chars().any(|c| c.is_control()))
        {
            let message = "expected 1 to 128 printable characters".to_string();
            self.error(file, Some(label), Some("source.clientId"), message);
        }
        let keep_alive = spec
            .keep_alive
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(30));
        if !(Duration::from_secs(5)..=Duration::from_secs(65535)).contains(&keep_alive) {
            let message = "expected 5s to 65535s".to_string();
            self.error(file, Some(label), Some("source.keepAlive"), message);
        }
        let session_expiry = spec
            .session_expiry
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(24 * 3600));
        if session_expiry > Duration::from_secs(u32::MAX.into()) {
            let message = "expected at most 4294967295s (about 136 years)".to_string();
            self.error(file, Some(label), Some("source.sessionExpiry"), message);
        }
        let max_message_bytes = self.message_size(
            at,
            "source.maxMessageSize",
            spec.max_message_size.map(|b| b.0),
        );
        if self.errors.len() > before {
            return None;
        }
        Some(MqttConfig {
            server,
            topics: spec.topics,
            client_id: spec.client_id,
            clean_session: spec.clean_session.unwrap_or(false),
            protocol: match spec.protocol {
                Some(MqttProtocolSpec::V5) => MqttProtocol::V5,
                _ => MqttProtocol::V311,
            },
            keep_alive,
            session_expiry,
            max_message_bytes,
        })
    }
}

/// A JetStream stream or consumer name: what the server accepts in an API subject.
fn nats_name(name: &str) -> Result<(), String> {
    let bad = |c: char| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c);
    if name.is_empty() || name.len() > 255 || name.chars().any(bad) {
        return Err(format!(
            "invalid name `{}`: expected 1 to 255 characters without whitespace, `.`, `*`, `>`, `/` or `\\`",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// A NATS subject: dot-separated non-empty tokens; with `wildcards`, `*` as a
/// whole token and `>` as the whole last one.
fn nats_subject(subject: &str, wildcards: bool) -> Result<(), String> {
    let tokens: Vec<&str> = subject.split('.').collect();
    let ok = subject.len() <= 4096
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && !t.chars().any(|c| c.is_whitespace() || c.is_control())
                && match *t {
                    "*" => wildcards,
                    ">" => wildcards && i + 1 == tokens.len(),
                    t => !t.contains(['*', '>']),
                }
        });
    if ok {
        return Ok(());
    }
    let expected = if wildcards {
        "dot-separated tokens, `*` for one whole token and `>` for the rest"
    } else {
        "dot-separated tokens without wildcards"
    };
    Err(format!(
        "invalid subject `{}`: expected {expected}",
        subject.escape_debug()
    ))
}

/// An MQTT topic filter, or a shared subscription `$share/GROUP/FILTER`.
fn mqtt_filter(topic: &str) -> Result<(), String> {
    let filter = match topic.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((group, filter)) if !group.is_empty() && !group.contains(['+', '#']) => filter,
            _ => {
                return Err(format!(
                    "invalid shared subscription `{}`: expected $share/GROUP/FILTER",
                    topic.escape_debug()
                ));
            }
        },
        None => topic,
    };
    let levels: Vec<&str> = filter.split('/').collect();
    let ok = !filter.is_empty()
        && topic.len() <= 65535
        && !filter.contains('\0')
        && levels.iter().enumerate().all(|(i, l)| match *l {
            "+" => true,
            "#" => i + 1 == levels.len(),
            l => !l.contains(['+', '#']),
        });
    if ok {
        return Ok(());
    }
    Err(format!(
        "invalid topic filter `{}`: expected `/`-separated levels, `+` for one whole level and `#` for the whole rest",
        topic.escape_debug()
    ))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn a_server_a_stream_and_bounded_batches() {
        assert_problem(
            &with_source("{ type: redis-queue, stream: s }"),
            "source",
            "url",
        );
        assert_problem(
            &with_source("{ type: redis-queue, url: 'redis://h', stream: s, batch: 0 }"),
            "source.batch",
            "out of range",
        );
        assert_problem(
            &with_source("{ type: redis-queue, url: 'redis://h', stream: s, maxEntrySize: 1Gi }"),
            "source.maxEntrySize",
            "out of range",
        );
        loaded(&with_source(
            "{ type: redis-queue, urlSecret: redis-url, stream: jobs }",
        ));
    }

    #[test]
    fn nats_names_subjects_and_bounds_are_checked_where_written() {
        let ok = loaded(&with_source(
            "{ type: nats, url: 'nats://h:4222', stream: ORDERS, subject: 'orders.>' }",
        ));
        let crate::config::SourceConfig::Nats(nats) = &ok.triggers[0].source else {
            panic!("not a nats source: {:?}", ok.triggers[0].source);
        };
        assert_eq!(nats.consumer, "wasmtrigger-t");
        assert_eq!(nats.dead_letter, "wasmtrigger.dead.t");
        assert_problem(
            &with_source("{ type: nats, url: 'nats://u:pw@h', stream: S }"),
            "source.url",
            "password",
        );
        assert_problem(
            &with_source("{ type: nats, url: 'http://h', stream: S }"),
            "source.url",
            "nats://host",
        );
        assert_problem(
            &with_source("{ type: nats, url: 'nats://h', stream: 'a.b' }"),
            "source.stream",
            "without whitespace",
        );
        assert_problem(
            &with_source("{ type: nats, url: 'nats://h', stream: S, subject: 'a.>.b' }"),
            "source.subject",
            "invalid subject",
        );
        assert_problem(
            &with_source("{ type: nats, url: 'nats://h', stream: S, deadLetter: 'dead.*' }"),
            "source.deadLetter",
            "without wildcards",
        );
        assert_problem(
            &with_source("{ type: nats, url: 'nats://h', stream: S, ackWait: 10ms }"),
            "source.ackWait",
            "1s to 12h",
        );
        assert_problem(
            &with_source("{ type: nats, url: 'nats://h', stream: S, maxDeliver: 0 }"),
            "source.maxDeliver",
            "out of range",
        );
        assert_problem(
            &with_source("{ type: nats, url: 'nats://h', stream: S, queue: x }"),
            "source.queue",
            "expected one of `url`, `urlSecret`, `stream`",
        );
    }

    #[test]
    fn mqtt_topics_and_shared_subscriptions_are_checked() {
        let ok = loaded(&with_source(
            "{ type: mqtt, urlSecret: mqtt-url, topics: ['$share/workers/sensors/+/temp', 'alerts/#'] }",
        ));
        let crate::config::SourceConfig::Mqtt(mqtt) = &ok.triggers[0].source else {
            panic!("not an mqtt source: {:?}", ok.triggers[0].source);
        };
        assert!(!mqtt.clean_session, "persistent sessions by default");
        assert_problem(
            &with_source("{ type: mqtt, url: 'mqtt://h', topics: [] }"),
            "source.topics",
            "at least one",
        );
        assert_problem(
            &with_source("{ type: mqtt, url: 'mqtt://h', topics: ['a/#/b'] }"),
            "source.topics[0]",
            "invalid topic filter",
        );
        assert_problem(
            &with_source("{ type: mqtt, url: 'mqtt://h', topics: ['a', '$share//x'] }"),
            "source.topics[1]",
            "$share/GROUP/FILTER",
        );
        assert_problem(
            &with_source("{ type: mqtt, url: 'mqtt://h', topics: [a], protocol: '4' }"),
            "source.protocol",
            "3.1.1",
        );
        assert_problem(
            &with_source("{ type: mqtt, url: 'mqtt://h', topics: [a], keepAlive: 1s }"),
            "source.keepAlive",
            "5s to 65535s",
        );
    }
}
