//! `type: mqtt`: messages of MQTT topics (3.1.1 or 5), subscribed with QoS 1
//! on a persistent session.
//!
//! Delivery rules:
//!
//! - the PUBACK of a message is sent when its run has ended (succeeded,
//!   filtered out, or failed after the trigger's retries): the client library
//!   runs with manual acknowledgements. Until then the broker counts the
//!   message as in flight, so its in-flight window (mosquitto's
//!   `max_inflight_messages`, or the receive maximum this client announces
//!   under MQTT 5: the dispatch queue's size) is what bounds the messages
//!   held here;
//! - the session is persistent (`cleanSession: false`): when this client id
//!   reconnects, the broker delivers again every message it has not had a
//!   PUBACK for, and what arrived while it was away. A redelivery of a
//!   message whose run is still going is recognised by its packet id and
//!   not run twice;
//! - `$share/GROUP/FILTER` topics split messages among the replicas that
//!   subscribe with the same group;
//! - a message over `maxMessageSize` is acknowledged and dropped with a
//!   warning (MQTT has no dead-letter convention); a failed run is in the
//!   run history.
//!
//! What a crash loses: nothing published with QoS 1 while the session lives
//! — it is redelivered to the same client id (at least once, so possibly
//! twice). Messages published with QoS 0 are delivered at most once; a
//! session that expires (MQTT 5 `sessionExpiry`, or the broker's own limit
//! for 3.1.1) takes its queued messages with it; with `cleanSession: true`
//! whatever was in flight is gone.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::capabilities::HostServices;
use crate::config::{MqttConfig, MqttProtocol};
use crate::dispatch::{Completion, Submitter};
use crate::event::Event;
use crate::runs::RunRecord;
use crate::trigger::Trigger;

/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The largest packet the client reads at all; bigger ones end the connection.
const MAX_PACKET: usize = 64 << 20;

/// One received message, whichever protocol version brought it.
struct Incoming {
    topic: String,
    payload: Bytes,
    qos: u8,
    pkid: u16,
    retain: bool,
    /// MQTT 5 properties worth a filter's attention.
    properties: Option<Value>,
}

/// What one poll of the connection produced.
enum Polled {
    /// A CONNACK.
    Connected { session_present: bool },
    /// A SUBACK: how many of the topics the broker refused.
    Subscribed { refused: usize },
    /// A PUBLISH.
    Message(Incoming),
    /// Anything else.
    Other,
}

/// The client half, to subscribe and acknowledge.
#[derive(Clone)]
enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The connection half, polled by one task.
enum Connection {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl Client {
    async fn subscribe(&self, topics: &[String]) -> Result<(), String> {
        match self {
            Client::V311(c) => {
                let filters = topics
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), rumqttc::QoS::AtLeastOnce));
                c.subscribe_many(filters).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let filters = topics.iter().map(|t| {
                    rumqttc::v5::mqttbytes::v5::Filter::new(
                        t.clone(),
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    )
                });
                c.subscribe_many(filters).await.map_err(|e| e.to_string())
            }
        }
    }

    /// Sends the PUBACK of a QoS 1 message (QoS 0 has none).
    async fn ack(&self, qos: u8, pkid: u16) -> Result<(), String> {
        if qos == 0 {
            return Ok(());
        }
        match self {
            Client::V311(c) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let mut p = rumqttc::v5::mqttbytes::v5::Publish::new(
                    "",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    Vec::new(),
                    None,
                );
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
        }
    }
}

impl Connection {
    async fn poll(&mut self) -> Result<Polled, String> {
        match self {
            Connection::V311(c) => {
                use rumqttc::{Event, Packet};
                Ok(match c.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Polled::Connected {
                        session_present: a.session_present,
                    },
                    Event::Incoming(Packet::SubAck(a)) => Polled::Subscribed {
                        refused: a
                            .return_codes
                            .iter()
                            .filter(|c| !matches!(c, rumqttc::SubscribeReasonCode::Success(_)))
                            .count(),
                    },
                    Event::Incoming(Packet::Publish(p)) => Polled::Message(Incoming {
                        topic: p.topic,
                        payload: p.payload,
                        qos: p.qos as u8,
                        pkid: p.pkid,
                        retain: p.retain,
                        properties: None,
                    }),
                    _ => Polled::Other,
                })
            }
            Connection::V5(c) => {
                use rumqttc::v5::Event;
                use rumqttc::v5::mqttbytes::v5::Packet;
                Ok(match c.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(a)) => Polled::Connected {
                        session_present: a.session_present,
                    },
                    Event::Incoming(Packet::SubAck(a)) => Polled::Subscribed {
                        refused: a
                            .return_codes
                            .iter()
                            .filter(|c| {
                                !matches!(
                                    c,
                                    rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                                )
                            })
                            .count(),
                    },
                    Event::Incoming(Packet::Publish(p)) => Polled::Message(Incoming {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        qos: p.qos as u8,
                        pkid: p.pkid,
                        retain: p.retain,
                        properties: p.properties.map(|props| {
                            let user: Map<String, Value> = props
                                .user_properties
                                .into_iter()
                                .map(|(k, v)| (k, Value::String(v)))
                                .collect();
                            serde_json::json!({
                                "contentType": props.content_type,
                                "responseTopic": props.response_topic,
                                "user": user,
                            })
                        }),
                    }),
                    _ => Polled::Other,
                })
            }
        }
    }
}

/// A finished run's PUBACK, stamped with the session it belongs to.
#[derive(Clone, Copy)]
struct Ack {
    session: u64,
    qos: u8,
    pkid: u16,
}

/// Runs the source until `stop` is cancelled.
pub async fn run(
    trigger: Arc<Trigger>,
    config: MqttConfig,
    submitter: Submitter,
    services: Arc<HostServices>,
    stop: CancellationToken,
) {
    let name = trigger.name.to_string();
    let client_id = config
        .client_id
        .clone()
        .unwrap_or_else(|| default_client_id(&name));
    let url = tokio::select! {
        url = services.secrets.endpoint_url(&config.server) => url,
        _ = stop.cancelled() => return,
    };
    let (client, mut connection) = match connect(
        &config,
        &client_id,
        url.as_deref().map_err(String::as_str),
        submitter.queue_capacity(),
    ) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!(trigger = %name, error = %e, "mqtt: cannot set up the client; this trigger receives nothing");
            return;
        }
    };
    tracing::info!(trigger = %name, client_id, topics = ?config.topics, "mqtt source starting");
    // Packet ids of messages handed on and not acknowledged yet, and the
    // session they arrived in: a new session (the broker forgot the old one)
    // makes old packet ids meaningless, and their late PUBACKs are dropped.
    let in_flight: Arc<Mutex<HashSet<u16>>> = Arc::default();
    let session = Arc::new(AtomicU64::new(0));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel();
    tokio::spawn(acker(
        client.clone(),
        session.clone(),
        InFlight {
            trigger: name.clone(),
            ids: in_flight.clone(),
            metrics: submitter.metrics().clone(),
        },
        ack_rx,
    ));
    let (hand_tx, hand_rx) = mpsc::unbounded_channel();
    let handler = tokio::spawn(hand_on(
        trigger.clone(),
        config.clone(),
        submitter,
        hand_rx,
        ack_tx,
        session.clone(),
        in_flight.clone(),
    ));
    let mut backoff = Duration::from_millis(100);
    loop {
        let polled = tokio::select! {
            p = connection.poll() => p,
            _ = stop.cancelled() => break,
        };
        match polled {
            Ok(Polled::Connected { session_present }) => {
                backoff = Duration::from_millis(100);
                if !session_present {
                    session.fetch_add(1, Ordering::SeqCst);
                    in_flight.lock().unwrap_or_else(|p| p.into_inner()).clear();
                }
                tracing::info!(trigger = %name, session_present, "mqtt connected");
                // Subscribing goes through the request channel this loop
                // drains, so it must not wait here.
                let (client, topics, name) = (client.clone(), config.topics.clone(), name.clone());
                tokio::spawn(async move {
                    if let Err(e) = client.subscribe(&topics).await {
                        tracing::warn!(trigger = %name, error = %e, "mqtt: subscribe failed");
                    }
                });
            }
            Ok(Polled::Subscribed { refused: 0 }) => {
                tracing::info!(trigger = %name, "mqtt subscribed");
            }
            Ok(Polled::Subscribed { refused }) => {
                tracing::error!(trigger = %name, refused, topics = ?config.topics, "mqtt: the broker refused topic filters (not allowed, or shared subscriptions unsupported)");
            }
            Ok(Polled::Message(message)) => {
                let _ = hand_tx.send(message);
            }
            Ok(Polled::Other) => {}
            Err(e) => {
                tracing::warn!(trigger = %name, error = %e, retry_in_ms = backoff.as_millis() as u64, "mqtt: connection lost; reconnecting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    drop(hand_tx);
    let _ = handler.await;
    tracing::debug!(trigger = %name, "mqtt source stopped");
}

/// `wasmtrigger-TRIGGER-HOST`: stable across restarts on one host (a pod
/// name), so the persistent session is found again.
fn default_client_id(trigger: &str) -> String {
    format!("wasmtrigger-{trigger}-{}", super::host_name())
}

/// Builds the client for `url` (credentials in it are used, never logged).
fn connect(
    config: &MqttConfig,
    client_id: &str,
    url: Result<&str, &str>,
    queue: usize,
) -> Result<(Client, Connection), String> {
    let url = url.map_err(str::to_string)?;
    let parsed = url::Url::parse(url).map_err(|_| "invalid MQTT URL".to_string())?;
    let tls = matches!(parsed.scheme(), "mqtts" | "ssl");
    if !matches!(parsed.scheme(), "mqtt" | "mqtts" | "tcp" | "ssl") {
        return Err("expected an mqtt:// or mqtts:// URL".into());
    }
    let host = parsed
        .host_str()
        .ok_or("the MQTT URL has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = parsed.port().unwrap_or(if tls { 8883 } else { 1883 });
    let user = match crate::capabilities::secrets::url_userinfo(&parsed) {
        (Some(user), pass) => Some((user, pass.unwrap_or_default())),
        _ => None,
    };
    let transport = if tls {
        rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(tls_config()?))
    } else {
        rumqttc::Transport::Tcp
    };
    let receive_max = queue.clamp(1, u16::MAX as usize) as u16;
    if config.protocol == MqttProtocol::V5 {
        let mut o = rumqttc::v5::MqttOptions::new(client_id, host, port);
        o.set_keep_alive(config.keep_alive)
            .set_clean_start(config.clean_session)
            .set_manual_acks(true)
            .set_transport(transport)
            .set_receive_maximum(Some(receive_max))
            .set_max_packet_size(Some(MAX_PACKET as u32))
            .set_session_expiry_interval(Some(config.session_expiry.as_secs() as u32));
        if let Some((user, pass)) = user {
            o.set_credentials(user, pass);
        }
        let (c, e) = rumqttc::v5::AsyncClient::new(o, 1024);
        Ok((Client::V5(c), Connection::V5(Box::new(e))))
    } else {
        let mut o = rumqttc::MqttOptions::new(client_id, host, port);
        o.set_keep_alive(config.keep_alive)
            .set_clean_session(config.clean_session)
            .set_manual_acks(true)
            .set_transport(transport)
            .set_max_packet_size(MAX_PACKET, 1 << 20);
        if let Some((user, pass)) = user {
            o.set_credentials(user, pass);
        }
        let (c, e) = rumqttc::AsyncClient::new(o, 1024);
        Ok((Client::V311(c), Connection::V311(Box::new(e))))
    }
}

/// TLS with the web PKI roots, on the ring provider the rest of the engine uses.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Turns messages into events, in arrival order, waiting for room in the queue.
async fn hand_on(
    trigger: Arc<Trigger>,
    config: MqttConfig,
    submitter: Submitter,
    mut messages: mpsc::UnboundedReceiver<Incoming>,
    acks: mpsc::UnboundedSender<Ack>,
    session: Arc<AtomicU64>,
    in_flight: Arc<Mutex<HashSet<u16>>>,
) {
    while let Some(message) = messages.recv().await {
        let current = session.load(Ordering::SeqCst);
        let ack = Ack {
            session: current,
            qos: message.qos,
            pkid: message.pkid,
        };
        let fresh = message.qos == 0 || {
            let mut ids = in_flight.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = ids.insert(message.pkid);
            submitter
                .metrics()
                .queue_pending(&trigger.name, ids.len() as i64);
            fresh
        };
        if !fresh {
            // Redelivered while its first run is still going: that run acknowledges it.
            tracing::debug!(trigger = %trigger.name, pkid = message.pkid, "mqtt: redelivery of a message in flight; not run twice");
            continue;
        }
        let size = message.payload.len() + message.topic.len();
        if size as u64 > config.max_message_bytes {
            tracing::warn!(trigger = %trigger.name, topic = %message.topic, size, max = config.max_message_bytes, "mqtt: message over source.maxMessageSize acknowledged and dropped");
            submitter.metrics().dropped(&trigger.name, "oversized");
            let _ = acks.send(ack);
            continue;
        }
        let mut data = Map::new();
        data.insert("topic".into(), Value::String(message.topic));
        super::payload_fields(&mut data, &message.payload);
        data.insert("qos".into(), message.qos.into());
        data.insert("retain".into(), message.retain.into());
        if let Some(properties) = message.properties {
            data.insert("properties".into(), properties);
        }
        let event = Event::new(&trigger.name, "mqtt", "message", &Value::Object(data));
        let done_acks = acks.clone();
        let on_done: Completion = Arc::new(move |_: &RunRecord, abandoned: bool| {
            // An abandoned run is not acknowledged: the broker delivers it
            // again when this client id reconnects.
            if !abandoned {
                let _ = done_acks.send(ack);
            }
        });
        if submitter
            .submit_tracked(&trigger, event, on_done)
            .await
            .is_err()
        {
            break; // stopping: unacknowledged, so redelivered
        }
    }
}

/// The packet ids in flight, and the gauge that shows how many.
struct InFlight {
    trigger: String,
    ids: Arc<Mutex<HashSet<u16>>>,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Sends PUBACKs for finished runs of the current session.
async fn acker(
    client: Client,
    session: Arc<AtomicU64>,
    in_flight: InFlight,
    mut acks: mpsc::UnboundedReceiver<Ack>,
) {
    while let Some(ack) = acks.recv().await {
        if ack.session != session.load(Ordering::SeqCst) {
            continue; // the broker forgot that session; this packet id is someone else's now
        }
        if ack.qos > 0 {
            let mut ids = in_flight.ids.lock().unwrap_or_else(|p| p.into_inner());
            ids.remove(&ack.pkid);
            in_flight
                .metrics
                .queue_pending(&in_flight.trigger, ids.len() as i64);
        }
        if let Err(e) = client.ack(ack.qos, ack.pkid).await {
            tracing::debug!(error = %e, "mqtt: PUBACK not sent; the broker will deliver again");
        }
    }
}
