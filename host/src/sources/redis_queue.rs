//! `type: redis-queue`: a Redis stream drained through a consumer group, so
//! that any number of engine replicas share the work and each entry goes to
//! one of them at a time.
//!
//! An entry is acknowledged (`XACK`) only after its run has ended: succeeded,
//! filtered, or failed after its retries — a failed entry is first copied to
//! the dead-letter stream with the error, in the same transaction. Entries a
//! dead consumer left pending are claimed after `claimIdle` (`XAUTOCLAIM`).
//! Connection loss reconnects with backoff; nothing is acknowledged early.
//! The stream is the durable store for these events, so they bypass the
//! engine's own journal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::capabilities::HostServices;
use crate::capabilities::secrets::SecretStore;
use crate::config::RedisQueueConfig;
use crate::dispatch::{Completion, Submitter};
use crate::event::Event;
use crate::runs::{RunRecord, RunStatus};
use crate::trigger::Trigger;

/// How long one `XREADGROUP` blocks before the loop looks around again.
const BLOCK: Duration = Duration::from_secs(1);
/// How often queue lag and pending counts are read for the metrics.
const GAUGE_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a finished run asks of Redis for its entry.
struct Ack {
    entry: String,
    /// For a failed run: the entry's fields and the error, for the dead-letter stream.
    dead: Option<(Vec<(String, String)>, String)>,
}

/// Errors of one connection's life; all lead to a reconnect.
#[derive(Debug, thiserror::Error)]
enum QueueError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0}")]
    Url(String),
}

/// Runs the source until `stop` is cancelled.
pub async fn run(
    trigger: Arc<Trigger>,
    config: RedisQueueConfig,
    submitter: Submitter,
    services: Arc<HostServices>,
    stop: CancellationToken,
) {
    let consumer = config.consumer.clone().unwrap_or_else(super::process_name);
    let (acks, pending_acks) = mpsc::unbounded_channel();
    // The acker outlives this task: runs still in flight when the source stops
    // are acknowledged as they finish.
    tokio::spawn(acker(
        trigger.name.to_string(),
        config.clone(),
        services.clone(),
        pending_acks,
    ));
    tracing::info!(trigger = %trigger.name, stream = %config.stream, group = %config.group, consumer, "redis queue source starting");
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = Session {
            trigger: &trigger,
            config: &config,
            consumer: &consumer,
            submitter: &submitter,
            acks: &acks,
        };
        let result = tokio::select! {
            r = session.run(&services.secrets, &mut backoff) => r,
            _ = stop.cancelled() => break,
        };
        match result {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(trigger = %trigger.name, stream = %config.stream, error = %e, retry_in_ms = backoff.as_millis() as u64, "redis queue: connection lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::debug!(trigger = %trigger.name, "redis queue source stopped");
}

async fn connect(
    config: &RedisQueueConfig,
    secrets: &SecretStore,
    response_timeout: Duration,
) -> Result<MultiplexedConnection, QueueError> {
    let url = super::endpoint_url(&config.server, secrets)
        .await
        .map_err(QueueError::Url)?;
    // Never show the URL: it may hold a password.
    let client = redis::Client::open(url.as_str())
        .map_err(|e| QueueError::Url(format!("invalid Redis URL ({:?})", e.kind())))?;
    let settings = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(response_timeout));
    Ok(client
        .get_multiplexed_async_connection_with_config(&settings)
        .await?)
}

struct Session<'a> {
    trigger: &'a Arc<Trigger>,
    config: &'a RedisQueueConfig,
    consumer: &'a str,
    submitter: &'a Submitter,
    acks: &'a mpsc::UnboundedSender<Ack>,
}

impl Session<'_> {
    /// One connection's life: create the group, then claim and read forever.
    async fn run(&self, secrets: &SecretStore, backoff: &mut Duration) -> Result<(), QueueError> {
        let config = self.config;
        let mut reader = connect(config, secrets, BLOCK + Duration::from_secs(5)).await?;
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&config.stream)
            .arg(&config.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut reader)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(trigger = %self.trigger.name, stream = %config.stream, "redis queue connected");
        *backoff = Duration::from_millis(100);
        let mut claim_cursor = "0-0".to_string();
        let mut last_claim = Instant::now() - config.claim_idle;
        let mut last_gauge = Instant::now() - GAUGE_EVERY;
        loop {
            if last_gauge.elapsed() >= GAUGE_EVERY {
                self.update_gauges(&mut reader).await?;
                last_gauge = Instant::now();
            }
            // Reclaim entries whose consumer went quiet, a few times per idle period.
            if last_claim.elapsed() >= config.claim_idle / 4 {
                let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                    .arg(&config.stream)
                    .arg(&config.group)
                    .arg(self.consumer)
                    .arg(config.claim_idle.as_millis() as u64)
                    .arg(&claim_cursor)
                    .arg("COUNT")
                    .arg(config.batch)
                    .query_async(&mut reader)
                    .await?;
                if !reply.claimed.is_empty() {
                    tracing::info!(trigger = %self.trigger.name, entries = reply.claimed.len(), "redis queue: claimed entries left pending by another consumer");
                }
                let more = reply.next_stream_id != "0-0";
                claim_cursor = reply.next_stream_id;
                if !more {
                    last_claim = Instant::now();
                }
                for entry in reply.claimed {
                    self.hand_on(entry).await?;
                }
                if more {
                    continue;
                }
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&config.group)
                .arg(self.consumer)
                .arg("COUNT")
                .arg(config.batch)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(&config.stream)
                .arg(">")
                .query_async(&mut reader)
                .await?;
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                for entry in key.ids {
                    self.hand_on(entry).await?;
                }
            }
        }
    }

    /// Turns an entry into an event and waits for room in the queue.
    async fn hand_on(&self, entry: StreamId) -> Result<(), QueueError> {
        let fields = text_fields(&entry.map);
        let size: u64 = fields.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        if size > self.config.max_entry_bytes {
            // Not an event: straight to the dead-letter stream, without its payload.
            let why = format!(
                "entry is {size} bytes; this trigger takes at most {} (source.maxEntrySize)",
                self.config.max_entry_bytes
            );
            tracing::warn!(trigger = %self.trigger.name, entry = %entry.id, size, "redis queue: oversized entry dead-lettered");
            self.submitter
                .metrics()
                .dropped(&self.trigger.name, "oversized");
            let _ = self.acks.send(Ack {
                entry: entry.id,
                dead: Some((
                    vec![("wasmtrigger.size".to_string(), size.to_string())],
                    why,
                )),
            });
            return Ok(());
        }
        let data = event_data(&fields);
        let mut event = Event::new(&self.trigger.name, "redis-queue", "entry", &data);
        // Stable across redeliveries, so a duplicate is recognisable.
        event.id = format!("redis:{}:{}", self.config.stream, entry.id);
        let acks = self.acks.clone();
        let entry_id = entry.id;
        let on_done: Completion = Arc::new(move |record: &RunRecord, abandoned: bool| {
            if abandoned {
                return; // left pending: another consumer (or this one, later) claims it
            }
            let dead = (record.status == RunStatus::Failed).then(|| {
                let error = record.error.clone().unwrap_or_else(|| "failed".into());
                (fields.clone(), error)
            });
            let _ = acks.send(Ack {
                entry: entry_id.clone(),
                dead,
            });
        });
        if self
            .submitter
            .submit_tracked(self.trigger, event, on_done)
            .await
            .is_err()
        {
            // Stopping: the entry stays pending and is claimed later.
            return Ok(());
        }
        Ok(())
    }

    async fn update_gauges(&self, con: &mut MultiplexedConnection) -> Result<(), QueueError> {
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.config.stream)
            .query_async(con)
            .await?;
        if let Some((lag, pending)) = group_counts(&groups, &self.config.group) {
            let metrics = self.submitter.metrics();
            metrics.queue_lag(&self.trigger.name, lag);
            metrics.queue_pending(&self.trigger.name, pending);
        }
        Ok(())
    }
}

/// Applies acknowledgements until every sender is gone, reconnecting as
/// needed; an ack that fails is retried, never dropped.
async fn acker(
    trigger: String,
    config: RedisQueueConfig,
    services: Arc<HostServices>,
    mut rx: mpsc::UnboundedReceiver<Ack>,
) {
    let mut con: Option<MultiplexedConnection> = None;
    let mut backoff = Duration::from_millis(100);
    let mut batch: Vec<Ack> = Vec::new();
    loop {
        if batch.is_empty() {
            match rx.recv().await {
                Some(ack) => batch.push(ack),
                None => break,
            }
        }
        while let Ok(ack) = rx.try_recv() {
            batch.push(ack);
        }
        if con.is_none() {
            match connect(&config, &services.secrets, Duration::from_secs(5)).await {
                Ok(c) => con = Some(c),
                Err(e) => {
                    tracing::warn!(trigger, error = %e, "redis queue: cannot acknowledge yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let mut pipe = redis::pipe();
        pipe.atomic();
        for ack in &batch {
            if let Some((fields, error)) = &ack.dead {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(&config.dead_letter).arg("*");
                for (k, v) in fields {
                    xadd.arg(k).arg(v);
                }
                xadd.arg("wasmtrigger.error")
                    .arg(error)
                    .arg("wasmtrigger.entry")
                    .arg(&ack.entry)
                    .arg("wasmtrigger.trigger")
                    .arg(&trigger);
                pipe.add_command(xadd).ignore();
            }
            pipe.cmd("XACK")
                .arg(&config.stream)
                .arg(&config.group)
                .arg(&ack.entry)
                .ignore();
        }
        match pipe.query_async::<()>(c).await {
            Ok(()) => {
                batch.clear();
                backoff = Duration::from_millis(100);
            }
            Err(e) => {
                tracing::warn!(trigger, error = %e, pending = batch.len(), "redis queue: acknowledgement failed; reconnecting");
                con = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Why `enqueue` failed.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The item is not JSON.
    #[error("the item is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Redis refused or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Adds `item` (JSON text) to `stream` as the entry's `data` field; returns the entry id.
pub async fn enqueue(url: &str, stream: &str, item: &str) -> Result<String, EnqueueError> {
    let value: serde_json::Value = serde_json::from_str(item)?;
    let client = redis::Client::open(url)?;
    let mut con = client.get_multiplexed_async_connection().await?;
    let id: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("data")
        .arg(value.to_string())
        .query_async(&mut con)
        .await?;
    Ok(id)
}

/// The entry's fields as text (binary values are replaced lossily).
fn text_fields(map: &HashMap<String, Value>) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = map
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Value::SimpleString(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                other => format!("{other:?}"),
            };
            (k.clone(), text)
        })
        .collect();
    fields.sort();
    fields
}

/// The event data of an entry: its `data` field parsed as JSON when it is
/// JSON (what `wasmtrigger enqueue` writes), else an object of all fields.
fn event_data(fields: &[(String, String)]) -> serde_json::Value {
    if let Some((_, text)) = fields.iter().find(|(k, _)| k == "data")
        && let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
    {
        return value;
    }
    serde_json::Value::Object(
        fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

/// `lag` and `pending` of `group` from an `XINFO GROUPS` reply.
fn group_counts(reply: &Value, group: &str) -> Option<(i64, i64)> {
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
        let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        if get("name").and_then(as_text).as_deref() != Some(group) {
            return None;
        }
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        };
        Some((
            int(get("lag")).unwrap_or(0),
            int(get("pending")).unwrap_or(0),
        ))
    })
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_data_is_the_data_field_when_it_is_json() {
        let json = vec![("data".to_string(), r#"{"n":1}"#.to_string())];
        assert_eq!(event_data(&json), serde_json::json!({"n": 1}));
        let plain = vec![
            ("data".to_string(), "not json".to_string()),
            ("kind".to_string(), "x".to_string()),
        ];
        assert_eq!(
            event_data(&plain),
            serde_json::json!({"data": "not json", "kind": "x"})
        );
    }

    #[test]
    fn group_counts_reads_resp2_and_resp3_replies() {
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
