//! The NATS JetStream transport of `engine.distribute` (see the parent module).
//!
//! Names, per trigger `T` (a `.` in the name is written `_d`, a `_` `__`):
//! - stream `<prefix>_T`, a *work queue*: a message is removed once a
//!   replica acknowledges it. Its subjects are `<prefix>.T.events.>`: an
//!   ordered trigger's event goes to `…events.k.<hash of its key>`, any
//!   other to `…events.all`;
//! - per-key order needs no counter: the oldest message still in the stream
//!   on a key's subject is the one whose turn it is. A replica runs a
//!   message when it is that oldest one, holds it while an older one is
//!   there, and acknowledges it unrun when it is gone from the stream
//!   already (it ran, and was acknowledged, before this delivery). Two keys
//!   whose hashes collide only share an order. The check reads the stream's
//!   leader (`STREAM.MSG.GET`), never a direct get, which may answer from a
//!   replica that is behind and make a message look as if it had run;
//! - every message carries `Nats-Msg-Id`: a kube-watch change is named by
//!   its object and resourceVersion (`kube:<namespace>/<name>@<version>`),
//!   anything else by its event id. The stream drops a second message with
//!   the same id within [`DEDUPE_WINDOW`]: a publish retried after a lost
//!   acknowledgement, or a change a new leader finds again because the old
//!   one died between publishing it and recording its position;
//! - stream `<prefix>_T_watch`, one message kept per subject: the
//!   resourceVersion of every watched object as the leader last handled it
//!   (`<prefix>.T.watch.o.<base64url of namespace/name>`, empty once the
//!   object is gone) and `…watch.listed`, written once the batch's events
//!   are stored. NATS has no transaction over two streams, which is why the
//!   de-duplication above covers the gap. (A plain stream rather than a
//!   key-value bucket: async-nats 0.42's bucket calls do not parse
//!   nats-server 2.9's replies.);
//! - failed events go to `<prefix>.T.dead`, stored by stream `<prefix>_T_dead`.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use base64::Engine as _;
use futures::StreamExt;
use sha2::Digest as _;

use super::{Batch, DistributeError, MAX_ENTRY_BYTES, Positions, position_field, position_object};
use crate::capabilities::secrets::SecretStore;
use crate::config::{DistributeSettings, DistributedSubjects, Endpoint, NatsConfig};
use crate::event::Event;

/// How long the stream remembers a message id to drop a second copy.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(120);

/// Longest a leader waits to read the recorded positions.
const READ_POSITIONS: Duration = Duration::from_secs(60);

/// The subject of an event: its key's, or the one of unordered events.
pub fn subject(names: &DistributedSubjects, key: Option<&str>) -> String {
    match key {
        None => format!("{}.events.all", names.base),
        Some(key) => {
            let hash = sha2::Sha256::digest(key.as_bytes());
            let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
            format!("{}.events.k.{hex}", names.base)
        }
    }
}

/// Whether a subject is an ordering key's.
pub fn is_keyed(names: &DistributedSubjects, subject: &str) -> bool {
    subject
        .strip_prefix(names.base.as_str())
        .is_some_and(|rest| rest.starts_with(".events.k."))
}

/// How every replica drains `trigger`'s stream: a `nats` durable pull
/// consumer whose messages are whole events, in per-key order.
pub(super) fn consumer(settings: &DistributeSettings, trigger: &str) -> NatsConfig {
    let names = DistributedSubjects::of(&settings.prefix, trigger);
    NatsConfig {
        server: settings.server.clone(),
        stream: names.stream.clone(),
        subject: Some(names.events()),
        consumer: "wasmtrigger".into(),
        dead_letter: names.dead_letter(),
        ack_wait: settings.claim_idle,
        // A replica killed with the message this often: it is the message.
        max_deliver: 10,
        max_ack_pending: None,
        batch: settings.batch,
        max_message_bytes: MAX_ENTRY_BYTES,
        distributed: Some(names),
    }
}

/// Connects to the NATS server an endpoint names; the client then
/// reconnects on its own for as long as it lives. The URL is never shown:
/// it may hold credentials.
pub async fn client(
    endpoint: &Endpoint,
    secrets: &SecretStore,
    name: &str,
) -> Result<async_nats::Client, String> {
    let url = secrets.endpoint_url(endpoint).await?;
    let (address, credentials) = split_credentials(&url)?;
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    options = match credentials {
        Credentials::None => options,
        Credentials::Token(token) => options.token(token),
        Credentials::User(user, pass) => options.user_and_password(user, pass),
    };
    options
        .connect(address.as_str())
        .await
        // The error text names the server, not the URL's credentials.
        .map_err(|e| format!("cannot connect: {}", e.kind()))
}

/// What a NATS URL carries in its user-info part.
#[derive(Debug, PartialEq)]
enum Credentials {
    None,
    /// `nats://TOKEN@host`.
    Token(String),
    /// `nats://USER:PASSWORD@host`.
    User(String, String),
}

/// Splits the credentials off a URL (the client takes them separately).
fn split_credentials(url: &str) -> Result<(String, Credentials), String> {
    // Never echo the URL: it holds the credentials.
    let mut parsed = url::Url::parse(url).map_err(|_| "invalid NATS URL".to_string())?;
    let credentials = match crate::capabilities::secrets::url_userinfo(&parsed) {
        (None, None) => Credentials::None,
        (Some(token), None) => Credentials::Token(token),
        (user, Some(pass)) => Credentials::User(user.unwrap_or_default(), pass),
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok((parsed.to_string(), credentials))
}

/// Creates (or finds) the event stream and the dead-letter stream of a
/// trigger; every replica and the leader call it, so whoever comes first
/// makes them.
pub async fn ensure_streams(
    js: &Context,
    names: &DistributedSubjects,
) -> Result<stream::Stream, String> {
    js.get_or_create_stream(stream::Config {
        name: names.watch_stream(),
        subjects: vec![format!("{}.watch.>", names.base)],
        storage: StorageType::File,
        max_messages_per_subject: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("stream `{}`: {e}", names.watch_stream()))?;
    js.get_or_create_stream(stream::Config {
        name: names.dead_stream.clone(),
        subjects: vec![names.dead_letter()],
        storage: StorageType::File,
        duplicate_window: DEDUPE_WINDOW,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("dead-letter stream `{}`: {e}", names.dead_stream))?;
    js.get_or_create_stream(stream::Config {
        name: names.stream.clone(),
        subjects: vec![names.events()],
        retention: RetentionPolicy::WorkQueue,
        storage: StorageType::File,
        duplicate_window: DEDUPE_WINDOW,
        max_message_size: MAX_ENTRY_BYTES as i32,
        ..Default::default()
    })
    .await
    .map_err(|e| format!("stream `{}`: {e}", names.stream))
}

/// The id the stream de-duplicates an event by.
fn dedupe_id(event: &Event) -> String {
    if event.source == "kube-watch" && event.kind != "delete" {
        #[derive(serde::Deserialize)]
        struct Data {
            object: Object,
        }
        #[derive(serde::Deserialize)]
        struct Object {
            metadata: Metadata,
        }
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Metadata {
            #[serde(default)]
            namespace: String,
            name: String,
            resource_version: String,
        }
        if let Ok(data) = serde_json::from_str::<Data>(&event.data) {
            let m = data.object.metadata;
            return format!("kube:{}/{}@{}", m.namespace, m.name, m.resource_version);
        }
    }
    event.id.clone()
}

/// The subject token of a watched object (after `…watch.`).
fn position_key(object: &(String, String)) -> String {
    let field = position_field(object);
    format!(
        "o.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(field)
    )
}

/// The object a subject token names.
fn key_object(key: &str) -> Option<(String, String)> {
    let encoded = key.strip_prefix("o.")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    Some(position_object(std::str::from_utf8(&bytes).ok()?))
}

/// The leader's connection, made on first use, with the triggers whose
/// streams and bucket it has made sure of.
#[derive(Default)]
pub struct Publisher {
    held: tokio::sync::Mutex<Option<Connected>>,
}

struct Connected {
    js: Context,
    ensured: HashSet<String>,
    /// The largest message the server takes.
    max_payload: usize,
}

fn nats_error(e: impl std::fmt::Display) -> DistributeError {
    DistributeError::Nats(e.to_string())
}

impl Publisher {
    /// Forgets the connection (after an error: the next use reconnects).
    pub(super) async fn reset(&self) {
        *self.held.lock().await = None;
    }

    /// The connection, with `trigger`'s streams and bucket in place.
    async fn context(
        &self,
        settings: &DistributeSettings,
        secrets: &SecretStore,
        trigger: &str,
    ) -> Result<(Context, DistributedSubjects, usize), DistributeError> {
        let names = DistributedSubjects::of(&settings.prefix, trigger);
        let mut held = self.held.lock().await;
        if held.is_none() {
            let client = client(&settings.server, secrets, "wasmtrigger distribute")
                .await
                .map_err(DistributeError::Nats)?;
            let max_payload = client.server_info().max_payload;
            if max_payload < (2 << 20) {
                tracing::warn!(
                    max_payload,
                    "distribute: the NATS server takes messages up to max_payload bytes, less than the largest Kubernetes object; larger events run on the leader (raise max_payload to 8MB)"
                );
            }
            *held = Some(Connected {
                js: jetstream::new(client),
                ensured: HashSet::new(),
                max_payload,
            });
        }
        let Some(connected) = held.as_mut() else {
            return Err(DistributeError::Nats("not connected".into()));
        };
        if !connected.ensured.contains(trigger) {
            ensure_streams(&connected.js, &names)
                .await
                .map_err(DistributeError::Nats)?;
            connected.ensured.insert(trigger.to_string());
        }
        Ok((connected.js.clone(), names, connected.max_payload))
    }

    /// Publishes a batch's events, in order, then records its positions;
    /// returns the indices of the events too large to publish.
    pub(super) async fn publish(
        &self,
        settings: &DistributeSettings,
        secrets: &SecretStore,
        batch: &Batch<'_>,
    ) -> Result<Vec<usize>, DistributeError> {
        let (js, names, max_payload) = self.context(settings, secrets, batch.trigger).await?;
        // Sent one after another on one connection, stored in that order;
        // the acknowledgements are awaited together.
        let mut acks = Vec::with_capacity(batch.events.len());
        let mut too_large = Vec::new();
        for (i, out) in batch.events.iter().enumerate() {
            let id = dedupe_id(&out.event);
            let payload = serde_json::to_vec(&out.event).unwrap_or_default();
            // Room for the headers and the subject, which count too.
            if payload.len() + id.len() + 256 > max_payload {
                too_large.push(i);
                continue;
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let ack = js
                .publish_with_headers(subject(&names, out.key.as_deref()), headers, payload.into())
                .await
                .map_err(nats_error)?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(nats_error)?;
        }
        let prefix = format!("{}.watch.", names.base);
        let mut acks = Vec::with_capacity(batch.positions.len() + 1);
        for (object, version) in batch.positions {
            let key = format!("{prefix}{}", position_key(object));
            // Empty: the object is gone.
            let version = version.clone().unwrap_or_default();
            let ack = js.publish(key, version.into_bytes().into()).await;
            acks.push(ack.map_err(nats_error)?);
        }
        if batch.listed {
            let ack = js
                .publish(format!("{prefix}listed"), "1".into())
                .await
                .map_err(nats_error)?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(nats_error)?;
        }
        Ok(too_large)
    }

    /// The watch positions the last leader recorded, or None if no leader
    /// has listed yet.
    pub(super) async fn positions(
        &self,
        settings: &DistributeSettings,
        secrets: &SecretStore,
        trigger: &str,
    ) -> Result<Option<Positions>, DistributeError> {
        let (js, names, _) = self.context(settings, secrets, trigger).await?;
        let mut stream = js
            .get_stream(names.watch_stream())
            .await
            .map_err(nats_error)?;
        let listed = format!("{}.watch.listed", names.base);
        match stream.get_last_raw_message_by_subject(&listed).await {
            Ok(_) => {}
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(nats_error(e)),
        }
        let mut positions = Positions::new();
        // `listed` is one message; with no other, no object is recorded
        // (and a consumer would wait for one forever).
        if stream.info().await.map_err(nats_error)?.state.messages <= 1 {
            return Ok(Some(positions));
        }
        let read = async {
            let consumer = stream
                .create_consumer(pull::Config {
                    filter_subject: format!("{}.watch.o.>", names.base),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::None,
                    inactive_threshold: Duration::from_secs(30),
                    ..Default::default()
                })
                .await
                .map_err(nats_error)?;
            let mut messages = consumer.messages().await.map_err(nats_error)?;
            let token = format!("{}.watch.", names.base);
            while let Some(message) = messages.next().await {
                let message = message.map_err(nats_error)?;
                let pending = message.info().map_err(nats_error)?.pending;
                if let Some(object) = message
                    .subject
                    .strip_prefix(token.as_str())
                    .and_then(key_object)
                {
                    if message.payload.is_empty() {
                        positions.remove(&object);
                    } else {
                        let version = String::from_utf8_lossy(&message.payload).into_owned();
                        positions.insert(object, version);
                    }
                }
                if pending == 0 {
                    break;
                }
            }
            Ok::<_, DistributeError>(())
        };
        tokio::time::timeout(READ_POSITIONS, read)
            .await
            .map_err(|_| DistributeError::Nats("reading the watch positions timed out".into()))??;
        Ok(Some(positions))
    }

    /// Messages in the work queue: published and not yet finished.
    pub(super) async fn unfinished(
        &self,
        settings: &DistributeSettings,
        secrets: &SecretStore,
        trigger: &str,
    ) -> Result<u64, DistributeError> {
        let (js, names, _) = self.context(settings, secrets, trigger).await?;
        let mut stream = js.get_stream(&names.stream).await.map_err(nats_error)?;
        Ok(stream.info().await.map_err(nats_error)?.state.messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_distinct_triggers_distinct_and_fit_nats() {
        let a = DistributedSubjects::of("wt", "web.hook");
        let b = DistributedSubjects::of("wt", "web_dhook");
        assert_ne!(a.stream, b.stream);
        assert_eq!(a.stream, "wt_web_dhook");
        assert_eq!(b.stream, "wt_web__dhook");
        assert_eq!(a.events(), "wt.web_dhook.events.>");
        assert!(!a.stream.contains('.') && !a.watch_stream().contains('.'));
        let keyed = subject(&a, Some("uid-1"));
        assert!(is_keyed(&a, &keyed), "{keyed}");
        assert_ne!(keyed, subject(&a, Some("uid-2")));
        assert!(!is_keyed(&a, &subject(&a, None)));
        assert!(!is_keyed(&b, &keyed));
    }

    #[test]
    fn a_kube_change_is_named_by_its_object_and_version() {
        let data = serde_json::json!({"type": "update", "object": {"metadata": {"namespace": "d", "name": "cm", "resourceVersion": "7"}, "data": {}}});
        let a = Event::new("t", "kube-watch", "update", &data);
        let b = Event::new("t", "kube-watch", "update", &data);
        assert_eq!(dedupe_id(&a), "kube:d/cm@7");
        assert_eq!(dedupe_id(&a), dedupe_id(&b));
        let gone = Event::new("t", "kube-watch", "delete", &data);
        assert_eq!(dedupe_id(&gone), gone.id);
        let tick = Event::new("t", "schedule", "tick", &serde_json::json!({}));
        assert_eq!(dedupe_id(&tick), tick.id);
    }

    #[test]
    fn a_position_key_names_its_object() {
        let object = ("kube-system".to_string(), "system:role.x".to_string());
        let key = position_key(&object);
        assert!(
            key.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "{key}"
        );
        assert_eq!(key_object(&key), Some(object));
        assert_eq!(key_object("listed"), None);
    }

    #[test]
    fn credentials_are_split_off_the_url() {
        let (address, credentials) = split_credentials("nats://me:p%40ss@h:4222").unwrap();
        assert_eq!(address, "nats://h:4222");
        assert_eq!(credentials, Credentials::User("me".into(), "p@ss".into()));
        let (_, token) = split_credentials("nats://t0ken@h").unwrap();
        assert_eq!(token, Credentials::Token("t0ken".into()));
        assert_eq!(split_credentials("nats://h").unwrap().1, Credentials::None);
    }
}
