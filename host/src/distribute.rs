//! `engine.distribute`: the leader watches, every replica works.
//!
//! With leader election, schedules and kube watches run on the leader only
//! (the API server must see one watch per kind, and a tick must fire once).
//! Without this module the leader also runs all of their Wasm work. With
//! it, the leader *publishes* what those sources produce and every replica
//! (the leader included) drains it through a consumer group, the machinery
//! of `type: redis-queue` (ack after the run, dead-letter, `XAUTOCLAIM`
//! after a replica dies).
//!
//! Keys, per trigger `T` (the braces keep one trigger's keys in one Redis
//! Cluster slot, since one script writes them together):
//! - `<prefix>:{T}:events`: the stream; each entry holds the whole event
//!   (`wasmtrigger.event`, JSON: its id, source, kind, time and data stay
//!   what the source made) and, for an ordered trigger, its ordering key and
//!   that key's sequence number;
//! - `<prefix>:{T}:seq` and `:done`: per ordering key, the last sequence
//!   number published and the last one whose run ended. A replica runs entry
//!   `n` of a key only once `done` is `n - 1`, so per-key order holds across
//!   replicas; an entry whose number is already done is a duplicate and is
//!   acknowledged unrun;
//! - `<prefix>:{T}:watch`: for a kube-watch trigger, the resourceVersion of
//!   every object as the leader last handled it, written in the same script
//!   as the entries. A new leader lists the objects and compares them with
//!   this: what changed, appeared or went while nobody led is published,
//!   nothing is missed, and nothing the old leader published is published
//!   again. `:watching` marks that a leader has listed once.
//!
//! Publishing is one Lua script per batch, so entries, sequence numbers and
//! watch positions are written together or not at all. The stream is the
//! durable record of these events, so they bypass the engine's journal;
//! a publish that fails (Redis down) is retried until it succeeds, which
//! holds the source back rather than dropping what it produced.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::capabilities::secrets::SecretStore;
pub use crate::config::DistributedKeys as Keys;
use crate::config::{DistributeSettings, Endpoint, RedisQueueConfig};
use crate::event::Event;

/// Largest event a distributed entry carries (a Kubernetes object is at most ~1.5 MiB).
pub const MAX_ENTRY_BYTES: u64 = 16 << 20;

/// Longest wait between attempts to publish while Redis is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DistributeError {
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
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

/// The position of a watched object as a hash field (namespace/name).
fn position_field((namespace, name): &(String, String)) -> String {
    format!("{namespace}/{name}")
}

/// Writes a batch: per event `HINCRBY` its key's sequence and `XADD` it;
/// then the watch positions; then the `watching` mark.
const PUBLISH: &str = r"
local n = tonumber(ARGV[1])
local m = tonumber(ARGV[2])
local i = 3
for _ = 1, n do
  local event, key = ARGV[i], ARGV[i + 1]
  i = i + 2
  if key == '' then
    redis.call('XADD', KEYS[1], '*', 'wasmtrigger.event', event)
  else
    local seq = redis.call('HINCRBY', KEYS[2], key, 1)
    redis.call('XADD', KEYS[1], '*', 'wasmtrigger.event', event, 'wasmtrigger.key', key, 'wasmtrigger.seq', seq)
  end
end
for _ = 1, m do
  local field, version = ARGV[i], ARGV[i + 1]
  i = i + 2
  if version == '' then
    redis.call('HDEL', KEYS[3], field)
  else
    redis.call('HSET', KEYS[3], field, version)
  end
end
if ARGV[i] == 'listed' then
  redis.call('SET', KEYS[4], '1')
end
return n
";

/// The publishing side and the settings every replica's consumers share.
pub struct Distributor {
    settings: DistributeSettings,
    secrets: SecretStore,
    con: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl Distributor {
    /// A distributor for `settings`; it connects on first use.
    pub fn new(settings: DistributeSettings, secrets: SecretStore) -> Arc<Self> {
        Arc::new(Distributor {
            settings,
            secrets,
            con: tokio::sync::Mutex::new(None),
        })
    }

    /// The keys of `trigger`'s distributed work.
    pub fn keys(&self, trigger: &str) -> Keys {
        Keys::of(&self.settings.prefix, trigger)
    }

    /// How every replica drains `trigger`'s stream: a `redis-queue` consumer
    /// group that carries whole events and keeps per-key order.
    pub fn consumer(&self, trigger: &str) -> RedisQueueConfig {
        let keys = self.keys(trigger);
        RedisQueueConfig {
            server: self.settings.server.clone(),
            dead_letter: format!("{}:dead", keys.stream),
            stream: keys.stream.clone(),
            group: "wasmtrigger".into(),
            consumer: None,
            claim_idle: self.settings.claim_idle,
            batch: self.settings.batch,
            max_entry_bytes: MAX_ENTRY_BYTES,
            distributed: Some(keys),
        }
    }

    /// Publishes `events` and records `positions` in one script, retrying
    /// until Redis takes them; `listed`: the watch has listed its objects.
    /// Gives up only when `stop` is cancelled (returns false).
    pub async fn publish(
        &self,
        trigger: &str,
        events: &[Outgoing],
        positions: &[Position],
        listed: bool,
        stop: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.try_publish(trigger, events, positions, listed).await {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(trigger, error = %e, events = events.len(), retry_in_ms = backoff.as_millis() as u64, "distribute: cannot publish yet; holding the source back");
                    *self.con.lock().await = None;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.cancelled() => return false,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn try_publish(
        &self,
        trigger: &str,
        events: &[Outgoing],
        positions: &[Position],
        listed: bool,
    ) -> Result<(), DistributeError> {
        let keys = self.keys(trigger);
        // EVAL rather than EVALSHA: nothing to go stale after a Redis restart.
        let mut call = redis::cmd("EVAL");
        call.arg(PUBLISH)
            .arg(4)
            .arg(&keys.stream)
            .arg(&keys.seq)
            .arg(&keys.watch)
            .arg(&keys.watching)
            .arg(events.len())
            .arg(positions.len());
        for out in events {
            let text = serde_json::to_string(&out.event).unwrap_or_default();
            call.arg(text).arg(out.key.as_deref().unwrap_or(""));
        }
        for (object, version) in positions {
            call.arg(position_field(object))
                .arg(version.as_deref().unwrap_or(""));
        }
        call.arg(if listed { "listed" } else { "" });
        let mut con = self.connection().await?;
        let _: i64 = call.query_async(&mut con).await?;
        Ok(())
    }

    /// The watch positions the last leader recorded for `trigger`, or None
    /// if no leader has listed its objects yet.
    pub async fn positions(
        &self,
        trigger: &str,
    ) -> Result<Option<HashMap<(String, String), String>>, DistributeError> {
        let keys = self.keys(trigger);
        let mut con = self.connection().await?;
        let listed: Option<String> = redis::cmd("GET")
            .arg(&keys.watching)
            .query_async(&mut con)
            .await?;
        if listed.is_none() {
            return Ok(None);
        }
        let all: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&keys.watch)
            .query_async(&mut con)
            .await?;
        Ok(Some(
            all.into_iter()
                .map(|(field, version)| {
                    let (ns, name) = field.split_once('/').unwrap_or(("", &field));
                    ((ns.to_string(), name.to_string()), version)
                })
                .collect(),
        ))
    }

    /// Events of `trigger` published and not yet finished by any replica
    /// (the group's lag plus its pending entries): what a schedule's overlap
    /// rule counts as unfinished.
    pub async fn unfinished(&self, trigger: &str) -> Result<u64, DistributeError> {
        let keys = self.keys(trigger);
        let mut con = self.connection().await?;
        let reply: redis::Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&keys.stream)
            .query_async(&mut con)
            .await
            .or_else(|e| match e.kind() {
                // No stream yet: nothing published, nothing unfinished.
                redis::ErrorKind::Server(_) | redis::ErrorKind::Extension => {
                    Ok(redis::Value::Array(vec![]))
                }
                _ => Err(e),
            })?;
        let (lag, pending) = group_counts(&reply, "wasmtrigger").unwrap_or((0, 0));
        Ok((lag.max(0) + pending.max(0)) as u64)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, DistributeError> {
        let mut held = self.con.lock().await;
        if let Some(con) = held.as_ref() {
            return Ok(con.clone());
        }
        let con = connect(&self.settings.server, &self.secrets, Duration::from_secs(5)).await?;
        *held = Some(con.clone());
        Ok(con)
    }
}

/// Connects to the Redis an endpoint names (the URL is never shown: it may
/// hold a password).
pub async fn connect(
    endpoint: &Endpoint,
    secrets: &SecretStore,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, DistributeError> {
    let url = secrets
        .endpoint_url(endpoint)
        .await
        .map_err(DistributeError::Url)?;
    let client = redis::Client::open(url.as_str())
        .map_err(|e| DistributeError::Url(format!("invalid Redis URL ({:?})", e.kind())))?;
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(response_timeout));
    Ok(client
        .get_multiplexed_async_connection_with_config(&settings)
        .await?)
}

/// The fields of `group` in an `XINFO GROUPS` reply (RESP2 pairs or a RESP3 map).
pub fn group_info<'a>(
    reply: &'a redis::Value,
    group: &str,
) -> Option<Vec<(String, &'a redis::Value)>> {
    use redis::Value;
    let Value::Array(groups) = reply else {
        return None;
    };
    groups.iter().find_map(|g| {
        let pairs: Vec<(String, &Value)> = match g {
            Value::Array(items) => items
                .chunks(2)
                .filter_map(|kv| Some((as_text(kv.first()?)?, kv.get(1)?)))
                .collect(),
            Value::Map(items) => items
                .iter()
                .filter_map(|(k, v)| Some((as_text(k)?, v)))
                .collect(),
            _ => return None,
        };
        let named = pairs
            .iter()
            .any(|(k, v)| k == "name" && as_text(v).as_deref() == Some(group));
        named.then_some(pairs)
    })
}

/// `lag` and `pending` of `group` from an `XINFO GROUPS` reply.
pub fn group_counts(reply: &redis::Value, group: &str) -> Option<(i64, i64)> {
    let pairs = group_info(reply, group)?;
    let int = |name: &str| match pairs.iter().find(|(k, _)| k == name) {
        Some((_, redis::Value::Int(i))) => *i,
        _ => 0,
    };
    Some((int("lag"), int("pending")))
}

/// A bulk or simple string reply as text.
pub fn as_text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_triggers_keys_share_a_cluster_slot() {
        let keys = Keys::of("wt", "web-hook");
        for key in [&keys.stream, &keys.seq, &keys.done, &keys.watch] {
            assert!(key.starts_with("wt:{web-hook}:"), "{key}");
        }
        assert_ne!(keys.stream, keys.seq);
    }

    #[test]
    fn group_counts_reads_resp2_and_resp3_replies() {
        use redis::Value;
        let text = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let resp2 = Value::Array(vec![Value::Array(vec![
            text("name"),
            text("g"),
            text("pending"),
            Value::Int(3),
            text("lag"),
            Value::Int(7),
        ])]);
        assert_eq!(group_counts(&resp2, "g"), Some((7, 3)));
        assert_eq!(group_counts(&resp2, "other"), None);
        let resp3 = Value::Array(vec![Value::Map(vec![
            (text("name"), text("g")),
            (text("lag"), Value::Int(1)),
            (text("pending"), Value::Int(2)),
        ])]);
        assert_eq!(group_counts(&resp3, "g"), Some((1, 2)));
    }
}
