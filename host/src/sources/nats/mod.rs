//! `type: nats`: a NATS JetStream stream drained through a durable pull
//! consumer. Every replica binds the same consumer, so the server hands each
//! message to one of them at a time.
//!
//! Delivery rules:
//!
//! - a message is acknowledged (`+ACK`) after its run has ended: succeeded,
//!   or filtered out;
//! - a run that failed after the trigger's retries is published to the
//!   dead-letter subject — the original payload and headers, plus
//!   `Wasmtrigger-Error`, `Wasmtrigger-Trigger`, `Wasmtrigger-Stream` and
//!   `Wasmtrigger-Sequence`, de-duplicated by `Nats-Msg-Id` — and, once the
//!   server has stored it, terminated (`+TERM`);
//! - a run the engine gave up on because it is stopping is negatively
//!   acknowledged (`-NAK`) with the delay its next retry would have waited,
//!   so another replica takes it up then;
//! - while a run is queued or running, its message is kept from redelivery
//!   by progress acknowledgements (`+WPI`) every third of `ackWait`;
//! - a message delivered more than `maxDeliver` times without an outcome
//!   (the engine died with it each time) is dead-lettered without a run,
//!   and so is one larger than `maxMessageSize`.
//!
//! The consumer's `maxAckPending` defaults to the dispatch queue's size, so
//! the server never hands this set of replicas more than they can hold.
//! The stream is the durable store for these events: they bypass the
//! engine's journal. A replica killed mid-run leaves its messages
//! unacknowledged, and the server redelivers them after `ackWait`.
//!
//! The same consumer drains a distributed trigger's stream
//! (`engine.distribute` via NATS, see `crate::distribute::nats`): there a
//! message is a whole event of this trigger (anything else is dead-lettered
//! as malformed), an ordered trigger's messages pass the gate in `gate`
//! before they run, and a dead-lettered message is acknowledged rather than
//! terminated, so that it leaves the work queue and its key's next event
//! may run.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::message::{AckKind, Acker};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{self, Context};
use futures::{FutureExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

mod gate;

use crate::capabilities::HostServices;
use crate::config::NatsConfig;
use crate::dispatch::{Completion, Submitter, backoff};
use crate::event::Event;
use crate::runs::{RunRecord, RunStatus};
use crate::trigger::Trigger;

/// How often consumer lag and pending counts are read for the metrics.
const GAUGE_EVERY: Duration = Duration::from_secs(2);
/// Longest wait between attempts to reach the server or the consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How soon keyed messages held for their turn are looked at again.
const HELD_RECHECK: Duration = Duration::from_millis(20);
/// Checks of whose turn it is sent to the server at once.
const CHECKS_AT_ONCE: usize = 64;
/// Delay of a message whose dead-lettering failed: it is run again then.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(30);

/// What a message's end asks of the server.
enum Settle {
    /// Done: `+ACK`.
    Ack(Arc<Acker>, u64),
    /// Deliver again after the delay: `-NAK`.
    Nak(Arc<Acker>, u64, Duration),
    /// Publish to the dead-letter subject, then `+TERM` (`+ACK` on a distributed stream).
    Dead(Arc<Acker>, u64, Box<DeadLetter>),
}

/// A message on its way to the dead-letter subject.
struct DeadLetter {
    payload: bytes::Bytes,
    headers: HeaderMap,
    error: String,
}

/// Messages handed to the dispatcher and not settled yet, by stream sequence.
type InFlight = Arc<Mutex<HashMap<u64, Arc<Acker>>>>;

/// Errors of one consumer session; all lead to a new one.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("stream `{stream}` is not available: {error}")]
    Stream { stream: String, error: String },
    #[error("consumer: {0}")]
    Consumer(String),
    #[error("messages: {0}")]
    Messages(String),
}

/// Runs the source until `stop` is cancelled.
pub async fn run(
    trigger: Arc<Trigger>,
    config: NatsConfig,
    submitter: Submitter,
    services: Arc<HostServices>,
    stop: CancellationToken,
) {
    let name = trigger.name.to_string();
    let Some(client) = connect(&name, &config, &services, &stop).await else {
        return;
    };
    let js = jetstream::new(client);
    let in_flight: InFlight = Arc::default();
    let (settle, settling) = mpsc::unbounded_channel();
    // The settler outlives this task: runs still in flight when the source
    // stops are settled as they finish.
    tokio::spawn(settler(
        name.clone(),
        config.clone(),
        js.clone(),
        in_flight.clone(),
        settling,
    ));
    tracing::info!(trigger = %name, stream = %config.stream, consumer = %config.consumer, "nats source starting");
    let session = Session {
        trigger: &trigger,
        config: &config,
        submitter: &submitter,
        settle: &settle,
        in_flight: &in_flight,
    };
    let mut backoff = Duration::from_millis(100);
    // Messages waiting for their turn stay this replica's across sessions:
    // the client reconnects underneath, and their acknowledgers still work.
    let mut held = gate::Held::default();
    loop {
        let result = tokio::select! {
            r = session.run(&js, &mut backoff, &mut held) => r,
            _ = stop.cancelled() => break,
        };
        if let Err(e) = result {
            tracing::warn!(trigger = %name, error = %e, retry_in_ms = backoff.as_millis() as u64, "nats: consumer lost; starting over");
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    tracing::debug!(trigger = %name, "nats source stopped");
}

/// Connects, retrying until it works or the source stops. The client then
/// reconnects on its own for as long as it lives.
async fn connect(
    trigger: &str,
    config: &NatsConfig,
    services: &HostServices,
    stop: &CancellationToken,
) -> Option<async_nats::Client> {
    let mut backoff = Duration::from_millis(100);
    loop {
        let name = format!("wasmtrigger {trigger}");
        let attempt = crate::distribute::nats::client(&config.server, &services.secrets, &name);
        let result = tokio::select! {
            r = attempt => r,
            _ = stop.cancelled() => return None,
        };
        match result {
            Ok(client) => return Some(client),
            Err(e) => {
                tracing::warn!(trigger, error = %e, retry_in_ms = backoff.as_millis() as u64, "nats: server not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return None,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

struct Session<'a> {
    trigger: &'a Arc<Trigger>,
    config: &'a NatsConfig,
    submitter: &'a Submitter,
    settle: &'a mpsc::UnboundedSender<Settle>,
    in_flight: &'a InFlight,
}

impl Session<'_> {
    /// One consumer's life: bind (or create) it, then take messages forever.
    async fn run(
        &self,
        js: &Context,
        backoff: &mut Duration,
        held: &mut gate::Held,
    ) -> Result<(), SessionError> {
        let config = self.config;
        let stream = match &config.distributed {
            // The leader may not have published yet: whoever comes first makes them.
            Some(names) => crate::distribute::nats::ensure_streams(js, names).await,
            None => js
                .get_stream(&config.stream)
                .await
                .map_err(|e| e.to_string()),
        }
        .map_err(|error| SessionError::Stream {
            stream: config.stream.clone(),
            error,
        })?;
        let max_ack_pending = config
            .max_ack_pending
            .unwrap_or_else(|| self.submitter.queue_capacity());
        let mut consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(config.consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                // Redelivery is this source's business (maxDeliver, dead letters).
                max_deliver: -1,
                filter_subject: config.subject.clone().unwrap_or_default(),
                max_ack_pending: max_ack_pending as i64,
                ..Default::default()
            })
            .await
            .map_err(|e| SessionError::Consumer(e.to_string()))?;
        if js.stream_by_subject(&config.dead_letter).await.is_err() {
            tracing::warn!(trigger = %self.trigger.name, subject = %config.dead_letter, "nats: no stream stores the dead-letter subject; failed messages will be redelivered instead of dead-lettered");
        }
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(config.batch)
            .messages()
            .await
            .map_err(|e| SessionError::Messages(e.to_string()))?;
        tracing::info!(trigger = %self.trigger.name, stream = %config.stream, consumer = %config.consumer, max_ack_pending, "nats consumer bound");
        *backoff = Duration::from_millis(100);
        let mut gauges = tokio::time::interval(GAUGE_EVERY);
        let mut recheck = tokio::time::interval(HELD_RECHECK);
        loop {
            tokio::select! {
                next = messages.next() => {
                    let mut next = Some(next);
                    let mut fresh = HashSet::new();
                    // What else has arrived is taken with it, so the checks
                    // of whose turn it is go out together.
                    while let Some(arrived) = next.take() {
                        match arrived {
                            Some(Ok(message)) => self.take(message, held, &mut fresh).await,
                            Some(Err(e)) => return Err(SessionError::Messages(e.to_string())),
                            None => return Err(SessionError::Messages("the message stream ended".into())),
                        }
                        if fresh.len() < config.batch {
                            next = messages.next().now_or_never();
                        }
                    }
                    self.admit(&stream, held, fresh.into_iter().collect()).await;
                }
                _ = recheck.tick(), if !held.is_empty() => {
                    let subjects = held.due(std::time::Instant::now());
                    self.admit(&stream, held, subjects).await;
                }
                _ = gauges.tick() => {
                    let metrics = self.submitter.metrics();
                    if let Ok(info) = consumer.info().await {
                        metrics.queue_lag(&self.trigger.name, info.num_pending as i64);
                        metrics.queue_pending(&self.trigger.name, info.num_ack_pending as i64);
                    }
                    if config.distributed.is_some() {
                        metrics.distributed_held(&self.trigger.name, held.len());
                    }
                }
            }
        }
    }

    /// Hands on a message just delivered; a distributed trigger's keyed
    /// messages wait in `held` for the gate, and their subject goes in
    /// `fresh` when the message is the oldest held of its key.
    async fn take(
        &self,
        message: jetstream::Message,
        held: &mut gate::Held,
        fresh: &mut HashSet<String>,
    ) {
        let Ok(info) = message.info() else {
            tracing::warn!(trigger = %self.trigger.name, subject = %message.subject, "nats: a message without JetStream metadata; ignored");
            return;
        };
        let (sequence, delivered) = (info.stream_sequence, info.delivered);
        let (message, acker) = message.split();
        let taken = gate::Taken {
            message,
            acker: Arc::new(acker),
            sequence,
            delivered,
            arrived: std::time::Instant::now(),
        };
        let Some(names) = &self.config.distributed else {
            return self.hand_on(taken).await;
        };
        if delivered > 1 {
            self.metrics()
                .distributed(&self.trigger.name, "redelivered", 1);
        }
        let subject = taken.message.subject.to_string();
        if !crate::distribute::nats::is_keyed(names, &subject) {
            return self.hand_on(taken).await;
        }
        // Kept from redelivery while it waits.
        self.track(&taken);
        held.hold(taken);
        if held.first(&subject) == Some(sequence) {
            fresh.insert(subject);
        }
    }

    /// Runs the held messages whose turn has come (the oldest held of each
    /// of `subjects`, checked together), and acknowledges those that ran
    /// elsewhere, then checks the next of their key.
    async fn admit(&self, stream: &Stream, held: &mut gate::Held, mut subjects: Vec<String>) {
        while !subjects.is_empty() {
            let ack_wait = self.config.ack_wait;
            let checks: Vec<(String, u64)> = subjects
                .drain(..)
                .filter_map(|s| {
                    let seq = held.oldest(&s).filter(|t| t.ripe(ack_wait))?.sequence;
                    Some((s, seq))
                })
                .collect();
            let verdicts: Vec<_> = futures::stream::iter(checks)
                .map(|(subject, seq)| async move {
                    let verdict = gate::verdict(stream, &subject, seq).await;
                    (subject, seq, verdict)
                })
                .buffer_unordered(CHECKS_AT_ONCE)
                .collect()
                .await;
            for (subject, seq, verdict) in verdicts {
                if held.first(&subject) != Some(seq) {
                    continue;
                }
                match verdict {
                    // The next one of its key waits for this run.
                    Ok(gate::Verdict::Run) => {
                        if let Some(taken) = held.pop(&subject) {
                            self.hand_on(taken).await;
                        }
                    }
                    Ok(gate::Verdict::Duplicate) => {
                        if let Some(taken) = held.pop(&subject) {
                            self.duplicate(taken);
                        }
                        subjects.push(subject);
                    }
                    Ok(gate::Verdict::Wait) => held.not_yet(&subject, std::time::Instant::now()),
                    Err(e) => {
                        tracing::debug!(trigger = %self.trigger.name, error = %e, "distribute: cannot tell whose turn it is yet");
                        held.not_yet(&subject, std::time::Instant::now());
                    }
                }
            }
        }
    }

    /// Acknowledges, unrun, a message that ran before this delivery.
    fn duplicate(&self, taken: gate::Taken) {
        tracing::info!(trigger = %self.trigger.name, sequence = taken.sequence, subject = %taken.message.subject, "distribute: message already ran; acknowledged without running it again");
        self.metrics()
            .distributed(&self.trigger.name, "duplicate", 1);
        let _ = self.settle.send(Settle::Ack(taken.acker, taken.sequence));
    }

    /// Keeps a message from redelivery until it is settled.
    fn track(&self, taken: &gate::Taken) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(taken.sequence, taken.acker.clone());
    }

    fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        self.submitter.metrics()
    }

    /// Turns a message into an event and waits for room in the queue.
    async fn hand_on(&self, taken: gate::Taken) {
        let gate::Taken {
            message,
            acker,
            sequence,
            delivered,
            ..
        } = taken;
        let headers = message.headers.clone().unwrap_or_default();
        let size = message.payload.len() + header_bytes(&headers);
        let dead = |error: String, payload: bytes::Bytes| {
            Settle::Dead(
                acker.clone(),
                sequence,
                Box::new(DeadLetter {
                    payload,
                    headers: headers.clone(),
                    error,
                }),
            )
        };
        if size as u64 > self.config.max_message_bytes {
            // Not an event: straight to the dead-letter subject, without its payload.
            let why = format!(
                "message is {size} bytes; this trigger takes at most {} (source.maxMessageSize)",
                self.config.max_message_bytes
            );
            tracing::warn!(trigger = %self.trigger.name, sequence, size, "nats: oversized message dead-lettered");
            self.submitter
                .metrics()
                .dropped(&self.trigger.name, "oversized");
            let _ = self.settle.send(dead(why, bytes::Bytes::new()));
            return;
        }
        if delivered > i64::from(self.config.max_deliver) {
            let why = format!(
                "delivered {delivered} times without an outcome (source.maxDeliver is {})",
                self.config.max_deliver
            );
            tracing::error!(trigger = %self.trigger.name, sequence, delivered, "nats: message dead-lettered unrun");
            self.submitter
                .metrics()
                .dropped(&self.trigger.name, "max-deliver");
            let _ = self.settle.send(dead(why, message.payload.clone()));
            return;
        }
        let event = if self.config.distributed.is_some() {
            // The event as the leader's source made it: same id, source and kind.
            let text = String::from_utf8_lossy(&message.payload);
            match crate::distribute::event_of(&text, &self.trigger.name) {
                Ok(event) => {
                    self.metrics()
                        .distributed(&self.trigger.name, "consumed", 1);
                    event
                }
                Err(why) => {
                    tracing::warn!(trigger = %self.trigger.name, sequence, error = %why, "distribute: malformed message dead-lettered");
                    self.metrics().dropped(&self.trigger.name, "malformed");
                    let _ = self.settle.send(dead(why, message.payload.clone()));
                    return;
                }
            }
        } else {
            let mut data = Map::new();
            data.insert("subject".into(), Value::String(message.subject.to_string()));
            super::payload_fields(&mut data, &message.payload);
            data.insert("headers".into(), headers_json(&headers));
            data.insert("stream".into(), Value::String(self.config.stream.clone()));
            data.insert("sequence".into(), sequence.into());
            data.insert("delivered".into(), delivered.into());
            let mut event = Event::new(&self.trigger.name, "nats", "message", &Value::Object(data));
            // Stable across redeliveries, so a duplicate is recognisable.
            event.id = format!("nats:{}:{sequence}", self.config.stream);
            event
        };
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sequence, acker.clone());
        let settle = self.settle.clone();
        let retry = self.trigger.config().action.retry;
        let (payload, kept_headers) = (message.payload.clone(), headers.clone());
        let done_acker = acker.clone();
        let on_done: Completion = Arc::new(move |record: &RunRecord, abandoned: bool| {
            let acker = done_acker.clone();
            let outcome = if abandoned {
                // Let another replica take it, when its next retry was due.
                let retries = record.attempts.len() as u32;
                let delay = if retries == 0 {
                    Duration::ZERO
                } else {
                    backoff(&retry, retries, fastrand::f64())
                };
                Settle::Nak(acker, sequence, delay)
            } else if record.status == RunStatus::Failed {
                let error = record.error.clone().unwrap_or_else(|| "failed".into());
                let letter = DeadLetter {
                    payload: payload.clone(),
                    headers: kept_headers.clone(),
                    error,
                };
                Settle::Dead(acker, sequence, Box::new(letter))
            } else {
                Settle::Ack(acker, sequence)
            };
            let _ = settle.send(outcome);
        });
        if self
            .submitter
            .submit_tracked(self.trigger, event, on_done)
            .await
            .is_err()
        {
            // Stopping: hand it back at once.
            let _ = self
                .settle
                .send(Settle::Nak(acker, sequence, Duration::ZERO));
        }
    }
}

/// Settles messages in the order their runs end, and keeps the unsettled
/// ones from redelivery; ends when every sender is gone.
async fn settler(
    trigger: String,
    config: NatsConfig,
    js: Context,
    in_flight: InFlight,
    mut rx: mpsc::UnboundedReceiver<Settle>,
) {
    let mut progress = tokio::time::interval(config.ack_wait / 3);
    progress.tick().await;
    loop {
        let settle = tokio::select! {
            s = rx.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = progress.tick() => {
                let live: Vec<Arc<Acker>> = in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .cloned()
                    .collect();
                for acker in live {
                    if let Err(e) = acker.ack_with(AckKind::Progress).await {
                        tracing::debug!(trigger, error = %e, "nats: progress acknowledgement failed");
                    }
                }
                continue;
            }
        };
        let (acker, sequence, result) = match settle {
            Settle::Ack(acker, seq) => {
                let r = acker.ack().await;
                (acker, seq, r)
            }
            Settle::Nak(acker, seq, delay) => {
                let r = acker.ack_with(AckKind::Nak(Some(delay))).await;
                (acker, seq, r)
            }
            Settle::Dead(acker, seq, letter) => {
                let kind = match dead_letter(&js, &trigger, &config, seq, &letter).await {
                    // A work queue drops what is acknowledged: the key's next event may run.
                    Ok(()) if config.distributed.is_some() => AckKind::Ack,
                    Ok(()) => AckKind::Term,
                    Err(e) => {
                        tracing::error!(trigger, sequence = seq, subject = %config.dead_letter, error = %e, "nats: cannot dead-letter a failed message; it will be delivered again");
                        AckKind::Nak(Some(DEAD_LETTER_RETRY))
                    }
                };
                let r = acker.ack_with(kind).await;
                (acker, seq, r)
            }
        };
        drop(acker);
        in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&sequence);
        if let Err(e) = result {
            // Redelivered after ackWait: at least once, never lost.
            tracing::warn!(trigger, sequence, error = %e, "nats: acknowledgement not sent; the server will deliver the message again");
        }
    }
}

/// Publishes a failed message to the dead-letter subject and waits until a
/// stream has stored it (a few tries).
async fn dead_letter(
    js: &Context,
    trigger: &str,
    config: &NatsConfig,
    sequence: u64,
    letter: &DeadLetter,
) -> Result<(), String> {
    let mut headers = letter.headers.clone();
    headers.insert("Wasmtrigger-Error", one_line(&letter.error).as_str());
    headers.insert("Wasmtrigger-Trigger", trigger);
    headers.insert("Wasmtrigger-Stream", config.stream.as_str());
    headers.insert("Wasmtrigger-Sequence", sequence.to_string().as_str());
    // The server drops a second copy with the same id (a retried publish).
    let id = format!("wasmtrigger:{trigger}:{}:{sequence}", config.stream);
    headers.insert("Nats-Msg-Id", id.as_str());
    let mut wait = Duration::from_millis(100);
    let mut last = String::new();
    for _ in 0..4 {
        let published = js
            .publish_with_headers(
                config.dead_letter.clone(),
                headers.clone(),
                letter.payload.clone(),
            )
            .await;
        match published {
            Ok(ack) => match ack.await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(wait).await;
        wait *= 2;
    }
    Err(last)
}

/// Header values cannot hold line breaks; errors can.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    flat.chars().take(4096).collect()
}

fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, vs)| {
            vs.iter()
                .map(|v| k.to_string().len() + v.as_str().len())
                .sum::<usize>()
        })
        .sum()
}

/// Headers as a JSON object: one value is a string, several are an array.
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, values) in headers.iter() {
        let mut values: Vec<Value> = values
            .iter()
            .map(|v| Value::String(v.as_str().to_string()))
            .collect();
        let value = if values.len() == 1 {
            values.remove(0)
        } else {
            Value::Array(values)
        };
        out.insert(name.to_string(), value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_become_strings_or_arrays_and_errors_one_line() {
        let mut headers = HeaderMap::new();
        headers.insert("A", "1");
        headers.append("B", "x");
        headers.append("B", "y");
        let json = headers_json(&headers);
        assert_eq!(json["A"], "1");
        assert_eq!(json["B"], serde_json::json!(["x", "y"]));
        assert_eq!(header_bytes(&headers), 6);
        assert_eq!(one_line("a\nb\r\tc"), "a b  c");
    }
}
