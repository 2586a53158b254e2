//! The Redis transport of `engine.distribute` (see the parent module).
//!
//! Keys, per trigger `T` (the braces keep one trigger's keys in one Redis
//! Cluster slot, since one script writes them together):
//! - `<prefix>:{T}:events`: the stream; each entry holds the whole event
//!   (`wasmtrigger.event`) and, for an ordered trigger, its ordering key and
//!   that key's sequence number;
//! - `<prefix>:{T}:seq` and `:done`: per ordering key, the last sequence
//!   number published and the last one whose run ended. A replica runs entry
//!   `n` of a key only once `done` is `n - 1`; an entry whose number is
//!   already done is a duplicate and is acknowledged unrun;
//! - `<prefix>:{T}:watch`: for a kube-watch trigger, the resourceVersion of
//!   every object as the leader last handled it, written in the same script
//!   as the entries, so nothing the old leader published is published
//!   again. `:watching` marks that a leader has listed once.
//!
//! Publishing is one Lua script per batch, so entries, sequence numbers and
//! watch positions are written together or not at all.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::{
    Batch, DistributeError, Keys, MAX_ENTRY_BYTES, Positions, position_field, position_object,
};
use crate::capabilities::secrets::SecretStore;
use crate::config::{DistributeSettings, Endpoint, RedisQueueConfig};

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

/// The leader's connection, made on first use.
#[derive(Default)]
pub struct Publisher {
    con: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

/// How every replica drains `trigger`'s stream: a `redis-queue` consumer
/// group that carries whole events and keeps per-key order.
pub(super) fn consumer(settings: &DistributeSettings, trigger: &str) -> RedisQueueConfig {
    let keys = Keys::of(&settings.prefix, trigger);
    RedisQueueConfig {
        server: settings.server.clone(),
        dead_letter: format!("{}:dead", keys.stream),
        stream: keys.stream.clone(),
        group: "wasmtrigger".into(),
        consumer: None,
        claim_idle: settings.claim_idle,
        batch: settings.batch,
        max_entry_bytes: MAX_ENTRY_BYTES,
        distributed: Some(keys),
    }
}

impl Publisher {
    /// Forgets the connection (after an error: the next use reconnects).
    pub(super) async fn reset(&self) {
        *self.con.lock().await = None;
    }

    /// Publishes a batch with its positions in one script.
    pub(super) async fn publish(
        &self,
        settings: &DistributeSettings,
        secrets: &SecretStore,
        batch: &Batch<'_>,
    ) -> Result<(), DistributeError> {
        let keys = Keys::of(&settings.prefix, batch.trigger);
        // EVAL rather than EVALSHA: nothing to go stale after a Redis restart.
        let mut call = redis::cmd("EVAL");
        call.arg(PUBLISH)
            .arg(4)
            .arg(&keys.stream)
            .arg(&keys.seq)
            .arg(&keys.watch)
            .arg(&keys.watching)
            .arg(batch.events.len())
            .arg(batch.positions.len());
        for out in batch.events {
            let text = serde_json::to_string(&out.event).unwrap_or_default();
            call.arg(text).arg(out.key.as_deref().unwrap_or(""));
        }
        for (object, version) in batch.positions {
            call.arg(position_field(object))
                .arg(version.as_deref().unwrap_or(""));
        }
        call.arg(if batch.listed { "listed" } else { "" });
        let mut con = self.connection(settings, secrets).await?;
        let _: i64 = call.query_async(&mut con).await?;
        Ok(())
    }

    /// The watch positions the last leader recorded, or None if no leader
    /// has listed yet.
    pub(super) async fn positions(
        &self,
        settings: &DistributeSettings,
        secrets: &SecretStore,
        trigger: &str,
    ) -> Result<Option<Positions>, DistributeError> {
        let keys = Keys::of(&settings.prefix, trigger);
        let mut con = self.connection(settings, secrets).await?;
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
                .map(|(field, version)| (position_object(&field), version))
                .collect(),
        ))
    }

    /// The group's lag plus its pending entries.
    pub(super) async fn unfinished(
        &self,
        settings: &DistributeSettings,
        secrets: &SecretStore,
        trigger: &str,
    ) -> Result<u64, DistributeError> {
        let keys = Keys::of(&settings.prefix, trigger);
        let mut con = self.connection(settings, secrets).await?;
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

    async fn connection(
        &self,
        settings: &DistributeSettings,
        secrets: &SecretStore,
    ) -> Result<MultiplexedConnection, DistributeError> {
        let mut held = self.con.lock().await;
        if let Some(con) = held.as_ref() {
            return Ok(con.clone());
        }
        let con = connect(&settings.server, secrets, Duration::from_secs(5)).await?;
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
