//! `engine.distribute`: the leader watches, every replica works.
//!
//! With leader election, schedules and kube watches run on the leader only
//! (the API server must see one watch per kind, and a tick must fire once).
//! Without this module the leader also runs all of their Wasm work. With
//! it, the leader *publishes* what those sources produce into a stream per
//! trigger, and every replica (the leader included) drains that stream with
//! the machinery of the matching queue source: ack after the run,
//! dead-letter, redelivery after a replica dies.
//!
//! Two transports carry the stream, each in its own file with the same
//! three duties (publish a batch, read the watch positions, count what is
//! unfinished):
//! - [`redis`]: a Redis stream and consumer group (`type: redis-queue`);
//!   entries, per-key sequence numbers and watch positions are written by
//!   one Lua script, together or not at all;
//! - [`nats`]: a NATS JetStream work-queue stream and durable pull consumer
//!   (`type: nats`); an ordering key is a subject, the stream itself says
//!   whose turn it is, and a handover's republished changes are dropped by
//!   the server's de-duplication.
//!
//! Common to both:
//! - an entry holds the whole event as JSON (its id, source, kind, time and
//!   data stay what the source made), and a consumer refuses one that is
//!   not an event of its trigger;
//! - an ordered trigger's events run in per-key order across replicas: an
//!   event runs only once its key's previous event has ended on whichever
//!   replica ran it; one that ran already (its replica died before
//!   acknowledging it) is acknowledged unrun and counted `duplicate`;
//! - a kube-watch trigger records the resourceVersion of every object as
//!   the leader last handled it, *after* (or with) the events of the same
//!   batch. A new leader lists the objects and compares them with this:
//!   what changed, appeared or went while nobody led is published, nothing
//!   is missed;
//! - the stream is the durable record of these events, so they bypass the
//!   engine's journal; a publish that fails (server down) is retried until
//!   it succeeds, which holds the source back rather than dropping what it
//!   produced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub mod nats;
pub mod redis;

use crate::capabilities::secrets::SecretStore;
pub use crate::config::DistributedKeys as Keys;
use crate::config::{
    DistributeSettings, DistributedSubjects, NatsConfig, RedisQueueConfig, Transport,
};
use crate::event::Event;

pub use self::redis::{as_text, connect, group_counts, group_info};

/// Largest event a distributed entry carries (a Kubernetes object is at most ~1.5 MiB).
pub const MAX_ENTRY_BYTES: u64 = 16 << 20;

/// Longest wait between attempts to publish while the server is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why the transport could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DistributeError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// NATS refused or could not be reached.
    #[error("nats: {0}")]
    Nats(String),
    /// The URL could not be resolved or parsed (never shown: it may hold a password).
    #[error("{0}")]
    Url(String),
}

/// One event to publish, with its ordering key if the trigger has one.
pub struct Outgoing {
    /// The event as the source made it.
    pub event: Event,
    /// Its ordering key.
    pub key: Option<String>,
}

/// Where a kube watch stands on one object: (namespace, name) and its
/// resourceVersion, or None once it is gone.
pub type Position = ((String, String), Option<String>);

/// The watch positions of a trigger: resourceVersion by (namespace, name).
pub type Positions = HashMap<(String, String), String>;

/// How every replica drains a trigger's stream.
pub enum Consumer {
    /// A `redis-queue` consumer group.
    Redis(RedisQueueConfig),
    /// A `nats` durable pull consumer.
    Nats(NatsConfig),
}

/// The publishing side and the settings every replica's consumers share.
pub struct Distributor {
    settings: DistributeSettings,
    secrets: SecretStore,
    transport: Carrier,
}

/// The transport's connection, made on first use.
enum Carrier {
    Redis(redis::Publisher),
    Nats(nats::Publisher),
}

impl Distributor {
    /// A distributor for `settings`; it connects on first use.
    pub fn new(settings: DistributeSettings, secrets: SecretStore) -> Arc<Self> {
        let transport = match settings.via {
            Transport::Redis => Carrier::Redis(redis::Publisher::default()),
            Transport::Nats => Carrier::Nats(nats::Publisher::default()),
        };
        Arc::new(Distributor {
            settings,
            secrets,
            transport,
        })
    }

    /// The name of `trigger`'s stream, as shown to operators.
    pub fn stream_name(&self, trigger: &str) -> String {
        match self.settings.via {
            Transport::Redis => Keys::of(&self.settings.prefix, trigger).stream,
            Transport::Nats => {
                let names = DistributedSubjects::of(&self.settings.prefix, trigger);
                format!("NATS stream {}", names.stream)
            }
        }
    }

    /// How every replica drains `trigger`'s stream.
    pub fn consumer(&self, trigger: &str) -> Consumer {
        match self.settings.via {
            Transport::Redis => Consumer::Redis(redis::consumer(&self.settings, trigger)),
            Transport::Nats => Consumer::Nats(nats::consumer(&self.settings, trigger)),
        }
    }

    /// Publishes `events` and then records `positions`, retrying until the
    /// server takes them; `listed`: the watch has listed its objects.
    /// Returns the indices of events larger than the server takes (NATS's
    /// `max_payload`), which were not published; None if `stop` was
    /// cancelled first.
    pub async fn publish(
        &self,
        trigger: &str,
        events: &[Outgoing],
        positions: &[Position],
        listed: bool,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<Vec<usize>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let batch = Batch {
                trigger,
                events,
                positions,
                listed,
            };
            let result = match &self.transport {
                Carrier::Redis(p) => p
                    .publish(&self.settings, &self.secrets, &batch)
                    .await
                    .map(|()| Vec::new()),
                Carrier::Nats(p) => p.publish(&self.settings, &self.secrets, &batch).await,
            };
            match result {
                Ok(too_large) => return Some(too_large),
                Err(e) => {
                    tracing::warn!(trigger, error = %e, events = events.len(), retry_in_ms = backoff.as_millis() as u64, "distribute: cannot publish yet; holding the source back");
                    match &self.transport {
                        Carrier::Redis(p) => p.reset().await,
                        Carrier::Nats(p) => p.reset().await,
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return None,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The watch positions the last leader recorded for `trigger`, or None
    /// if no leader has listed its objects yet.
    pub async fn positions(&self, trigger: &str) -> Result<Option<Positions>, DistributeError> {
        match &self.transport {
            Carrier::Redis(p) => p.positions(&self.settings, &self.secrets, trigger).await,
            Carrier::Nats(p) => p.positions(&self.settings, &self.secrets, trigger).await,
        }
    }

    /// Events of `trigger` published and not yet finished by any replica:
    /// what a schedule's overlap rule counts as unfinished.
    pub async fn unfinished(&self, trigger: &str) -> Result<u64, DistributeError> {
        match &self.transport {
            Carrier::Redis(p) => p.unfinished(&self.settings, &self.secrets, trigger).await,
            Carrier::Nats(p) => p.unfinished(&self.settings, &self.secrets, trigger).await,
        }
    }
}

/// One publish: a trigger's events, then the watch positions they leave.
pub(crate) struct Batch<'a> {
    trigger: &'a str,
    events: &'a [Outgoing],
    positions: &'a [Position],
    listed: bool,
}

/// The position of a watched object as one field (namespace/name).
fn position_field((namespace, name): &(String, String)) -> String {
    format!("{namespace}/{name}")
}

/// The object a position field names.
fn position_object(field: &str) -> (String, String) {
    let (ns, name) = field.split_once('/').unwrap_or(("", field));
    (ns.to_string(), name.to_string())
}

/// The event an entry carries (its JSON text), which must be `trigger`'s.
pub fn event_of(text: &str, trigger: &str) -> Result<Event, String> {
    let event: Event =
        serde_json::from_str(text).map_err(|e| format!("the entry is not an event: {e}"))?;
    if event.trigger != trigger {
        return Err(format!(
            "the entry's event is for trigger `{}`, not `{trigger}`",
            event.trigger.escape_debug()
        ));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_must_be_an_event_of_its_trigger() {
        let event = Event::new("t", "kube-watch", "update", &serde_json::json!({"a": 1}));
        let text = serde_json::to_string(&event).unwrap();
        let back = event_of(&text, "t").expect("the event");
        assert_eq!(
            (back.id, back.source, back.kind),
            (event.id, event.source, event.kind)
        );
        assert!(
            event_of(&text, "other")
                .unwrap_err()
                .contains("for trigger `t`, not `other`")
        );
        assert!(
            event_of("{\"id\": 1}", "t")
                .unwrap_err()
                .contains("not an event")
        );
    }

    #[test]
    fn a_position_field_names_its_object() {
        let object = ("default".to_string(), "cm-1".to_string());
        assert_eq!(position_object(&position_field(&object)), object);
        assert_eq!(
            position_object("cluster-wide"),
            (String::new(), "cluster-wide".into())
        );
    }
}
