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

use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod gate;

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
/// Most entries held for their turn before this consumer stops reading.
const MAX_HELD: usize = 10_000;
/// How soon entries held for their turn are looked at again.
const HELD_RECHECK: Duration = Duration::from_millis(20);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a finished run asks of Redis for its entry.
struct Ack {
    entry: String,
    /// For a failed run: the entry's fields and the error, for the dead-letter stream.
    dead: Option<(Vec<(String, String)>, String)>,
    /// A distributed entry's place in its key's order, marked done with the ack.
    done: Option<gate::Sequenced>,
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
    let in_flight = InFlight::default();
    // Entries waiting for their turn stay this consumer's across reconnects.
    let mut held: Vec<gate::Held> = Vec::new();
    // The acker outlives this task: runs still in flight when the source stops
    // are acknowledged as they finish.
    tokio::spawn(acker(
        trigger.name.to_string(),
        config.clone(),
        services.clone(),
        pending_acks,
        in_flight.clone(),
    ));
    tokio::spawn(keeper(
        config.clone(),
        consumer.clone(),
        services.clone(),
        in_flight.clone(),
        stop.clone(),
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
            in_flight: &in_flight,
        };
        let result = tokio::select! {
            r = session.run(&services.secrets, &mut backoff, &mut held) => {
                in_flight.forget_unsettled();
                r
            }
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
    crate::distribute::connect(&config.server, secrets, response_timeout)
        .await
        .map_err(|e| match e {
            crate::distribute::DistributeError::Redis(e) => QueueError::Redis(e),
            crate::distribute::DistributeError::Url(why)
            | crate::distribute::DistributeError::Nats(why) => QueueError::Url(why),
        })
}

/// Entries this consumer holds (read and not yet handed on, queued,
/// running, or held for their turn): their idle time is reset while they
/// are here, so a busy replica's entries are claimed by others only if it
/// stops answering, not when it is slow. The flag: handed on or held, as
/// opposed to only read (what a lost connection forgets).
#[derive(Clone, Default)]
struct InFlight(Arc<std::sync::Mutex<HashMap<String, bool>>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, bool>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read: kept from now on.
    fn read(&self, id: &str) {
        self.lock().entry(id.to_string()).or_insert(false);
    }

    /// Handed on or held.
    fn add(&self, id: &str) {
        self.lock().insert(id.to_string(), true);
    }

    fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Forgets entries read but never handed on or held (the connection was
    /// lost meanwhile): left idle, they are claimed again, by anyone.
    fn forget_unsettled(&self) {
        self.lock().retain(|_, settled| *settled);
    }

    fn ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

struct Session<'a> {
    trigger: &'a Arc<Trigger>,
    config: &'a RedisQueueConfig,
    consumer: &'a str,
    submitter: &'a Submitter,
    acks: &'a mpsc::UnboundedSender<Ack>,
    in_flight: &'a InFlight,
}

impl Session<'_> {
    /// One connection's life: create the group, then claim and read forever.
    async fn run(
        &self,
        secrets: &SecretStore,
        backoff: &mut Duration,
        held: &mut Vec<gate::Held>,
    ) -> Result<(), QueueError> {
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
                self.update_gauges(&mut reader, held.len()).await?;
                last_gauge = Instant::now();
            }
            if !held.is_empty() {
                let waiting = std::mem::take(held);
                self.admit(&mut reader, waiting, held).await?;
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
                    if config.distributed.is_some() {
                        let n = reply.claimed.len() as u64;
                        self.metrics()
                            .distributed(&self.trigger.name, "redelivered", n);
                    }
                }
                let more = reply.next_stream_id != "0-0";
                claim_cursor = reply.next_stream_id;
                if !more {
                    last_claim = Instant::now();
                }
                self.take(&mut reader, reply.claimed, held).await?;
                if more {
                    continue;
                }
            }
            if held.len() >= MAX_HELD {
                // Enough waiting here: read no more until some of it runs,
                // so a key that is stuck cannot fill this replica's memory.
                tokio::time::sleep(HELD_RECHECK).await;
                continue;
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&config.group)
                .arg(self.consumer)
                .arg("COUNT")
                .arg(config.batch)
                .arg("BLOCK")
                // Held entries are looked at again soon: their turn comes
                // when another replica finishes a run.
                .arg(if held.is_empty() { BLOCK } else { HELD_RECHECK }.as_millis() as u64)
                .arg("STREAMS")
                .arg(&config.stream)
                .arg(">")
                .query_async(&mut reader)
                .await?;
            for key in reply.map(|r| r.keys).unwrap_or_default() {
                self.take(&mut reader, key.ids, held).await?;
            }
        }
    }

    fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.submitter.metrics()
    }

    /// Hands on entries just read or claimed; a distributed stream's
    /// ordered entries go through the gate first.
    async fn take(
        &self,
        con: &mut MultiplexedConnection,
        entries: Vec<StreamId>,
        held: &mut Vec<gate::Held>,
    ) -> Result<(), QueueError> {
        for entry in &entries {
            self.in_flight.read(&entry.id);
        }
        if self.config.distributed.is_none() {
            for entry in entries {
                self.hand_on(entry, None).await?;
            }
            return Ok(());
        }
        let mut ordered = Vec::new();
        for entry in entries {
            match gate::sequenced(&text_fields(&entry.map)) {
                Some(order) => ordered.push(gate::Held { entry, order }),
                None => self.hand_on(entry, None).await?,
            }
        }
        self.admit(con, ordered, held).await
    }

    /// Runs the ordered entries whose turn it is, acknowledges duplicates,
    /// and keeps the rest in `held`, in order.
    async fn admit(
        &self,
        con: &mut MultiplexedConnection,
        waiting: Vec<gate::Held>,
        held: &mut Vec<gate::Held>,
    ) -> Result<(), QueueError> {
        let Some(keys) = &self.config.distributed else {
            return Ok(());
        };
        let orders: Vec<gate::Sequenced> = waiting.iter().map(|h| h.order.clone()).collect();
        let verdicts = match gate::verdicts(con, keys, &orders).await {
            Ok(v) => v,
            Err(e) => {
                // Still waiting, and still this consumer's: looked at after the reconnect.
                held.extend(waiting);
                return Err(e.into());
            }
        };
        // A key whose earlier entry waits keeps its later ones waiting too.
        let mut blocked = std::collections::HashSet::new();
        for (h, verdict) in waiting.into_iter().zip(verdicts) {
            if blocked.contains(&h.order.key) {
                self.in_flight.add(&h.entry.id);
                held.push(h);
                continue;
            }
            match verdict {
                gate::Verdict::Run => {
                    blocked.insert(h.order.key.clone());
                    self.hand_on(h.entry, Some(h.order)).await?
                }
                gate::Verdict::Wait => {
                    blocked.insert(h.order.key.clone());
                    self.in_flight.add(&h.entry.id);
                    held.push(h);
                }
                gate::Verdict::Duplicate => {
                    tracing::info!(trigger = %self.trigger.name, entry = %h.entry.id, key = %h.order.key, seq = h.order.seq, "distribute: entry already ran; acknowledged without running it again");
                    self.metrics()
                        .distributed(&self.trigger.name, "duplicate", 1);
                    let _ = self.acks.send(Ack {
                        entry: h.entry.id,
                        dead: None,
                        done: None,
                    });
                }
            }
        }
        Ok(())
    }

    /// Turns an entry into an event and waits for room in the queue.
    async fn hand_on(
        &self,
        entry: StreamId,
        order: Option<gate::Sequenced>,
    ) -> Result<(), QueueError> {
        self.in_flight.add(&entry.id);
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
                done: order,
            });
            return Ok(());
        }
        let event = if self.config.distributed.is_some() {
            // The event as the leader's source made it: same id, source and kind.
            match gate::event_of(&fields, &self.trigger.name) {
                Ok(event) => {
                    self.metrics()
                        .distributed(&self.trigger.name, "consumed", 1);
                    event
                }
                Err(why) => {
                    tracing::warn!(trigger = %self.trigger.name, entry = %entry.id, error = %why, "distribute: malformed entry dead-lettered");
                    self.metrics().dropped(&self.trigger.name, "malformed");
                    let _ = self.acks.send(Ack {
                        entry: entry.id,
                        dead: Some((fields, why)),
                        done: order,
                    });
                    return Ok(());
                }
            }
        } else {
            let data = event_data(&fields);
            let mut event = Event::new(&self.trigger.name, "redis-queue", "entry", &data);
            // Stable across redeliveries, so a duplicate is recognisable.
            event.id = format!("redis:{}:{}", self.config.stream, entry.id);
            event
        };
        let acks = self.acks.clone();
        let id = entry.id;
        let entry_id = id.clone();
        let in_flight = self.in_flight.clone();
        let on_done: Completion = Arc::new(move |record: &RunRecord, abandoned: bool| {
            if abandoned {
                // Left pending and no longer kept: another consumer claims it.
                in_flight.remove(&entry_id);
                return;
            }
            let dead = (record.status == RunStatus::Failed).then(|| {
                let error = record.error.clone().unwrap_or_else(|| "failed".into());
                (fields.clone(), error)
            });
            let _ = acks.send(Ack {
                entry: entry_id.clone(),
                dead,
                done: order.clone(),
            });
        });
        if self
            .submitter
            .submit_tracked(self.trigger, event, on_done)
            .await
            .is_err()
        {
            // Stopping: the entry stays pending and is claimed later.
            self.in_flight.remove(&id);
            return Ok(());
        }
        Ok(())
    }

    /// The queue's lag and pending counts, and for a distributed stream the
    /// entries `held` here for their turn (and a trim of what all have finished).
    async fn update_gauges(
        &self,
        con: &mut MultiplexedConnection,
        held: usize,
    ) -> Result<(), QueueError> {
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.config.stream)
            .query_async(con)
            .await?;
        if self.config.distributed.is_some() {
            gate::trim(con, &self.config.stream, &self.config.group).await?;
            self.metrics().distributed_held(&self.trigger.name, held);
        }
        if let Some((lag, pending)) = crate::distribute::group_counts(&groups, &self.config.group) {
            let metrics = self.submitter.metrics();
            metrics.queue_lag(&self.trigger.name, lag);
            metrics.queue_pending(&self.trigger.name, pending);
        }
        Ok(())
    }
}

/// Resets, a few times per `claimIdle`, the idle time of the entries this
/// consumer holds (`XCLAIM` to itself, `JUSTID`: the delivery count stays),
/// on its own connection, so entries waiting behind a full dispatch queue
/// stay this replica's. Ends once the source stopped and nothing is held.
async fn keeper(
    config: RedisQueueConfig,
    consumer: String,
    services: Arc<HostServices>,
    in_flight: InFlight,
    stop: CancellationToken,
) {
    let mut con: Option<MultiplexedConnection> = None;
    loop {
        tokio::time::sleep(config.claim_idle / 4).await;
        let ids = in_flight.ids();
        if ids.is_empty() {
            if stop.is_cancelled() {
                return;
            }
            continue;
        }
        if con.is_none() {
            con = connect(&config, &services.secrets, Duration::from_secs(5))
                .await
                .ok();
        }
        let Some(c) = con.as_mut() else { continue };
        for chunk in ids.chunks(500) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(&config.stream)
                .arg(&config.group)
                .arg(&consumer)
                .arg(0)
                .arg(chunk)
                .arg("JUSTID");
            if cmd.query_async::<Value>(c).await.is_err() {
                con = None;
                break;
            }
        }
    }
}

/// Applies acknowledgements until every sender is gone, reconnecting as
/// needed; an ack that fails is retried, never dropped.
async fn acker(
    trigger: String,
    config: RedisQueueConfig,
    services: Arc<HostServices>,
    mut rx: mpsc::UnboundedReceiver<Ack>,
    in_flight: InFlight,
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
            if let (Some(keys), Some(order)) = (&config.distributed, &ack.done) {
                // In the same transaction as the ack: the key's next entry may run.
                pipe.cmd("HSET")
                    .arg(&keys.done)
                    .arg(&order.key)
                    .arg(order.seq)
                    .ignore();
            }
        }
        match pipe.query_async::<()>(c).await {
            Ok(()) => {
                for ack in batch.drain(..) {
                    in_flight.remove(&ack.entry);
                }
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
}
