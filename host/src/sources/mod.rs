//! Event sources, one file per source type. Each runs as a task that turns
//! what it watches into events and hands them to the dispatcher. (Webhooks
//! are pushed by the HTTP server, so their task only waits.)

pub mod chain;
pub mod kube_watch;
pub mod mqtt;
pub mod nats;
pub mod redis_queue;
pub mod schedule;

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::capabilities::HostServices;
use crate::config::SourceConfig;
use crate::dispatch::Submitter;
use crate::runs::RunRecord;
use crate::trigger::Trigger;

/// What sources get from the engine.
#[derive(Clone)]
pub struct SourceContext {
    /// Hands events to the dispatcher.
    pub submitter: Submitter,
    /// Every finished run, for chains.
    pub runs: broadcast::Sender<Arc<RunRecord>>,
    /// Capability services (secrets for connection credentials).
    pub services: Arc<HostServices>,
    /// The Kubernetes connection and shared watches.
    pub kube: Arc<crate::kube::KubeConnector>,
    /// Whether this replica leads, when replicas elect a leader (None: it always does).
    pub leading: Option<tokio::sync::watch::Receiver<bool>>,
    /// Where singleton sources publish their events for every replica (`engine.distribute`).
    pub distributor: Option<Arc<crate::distribute::Distributor>>,
}

/// Starts the source of a trigger; the task ends when `stop` is cancelled
/// or the source is exhausted (a one-shot schedule). Schedules and kube
/// watches are singletons: with leader election they run on the leader only.
pub fn spawn(
    trigger: Arc<Trigger>,
    ctx: &SourceContext,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let submitter = ctx.submitter.clone();
    if let Some(distributor) = &ctx.distributor
        && is_singleton(&trigger.config().source)
    {
        return distributed(trigger, ctx, distributor.clone(), stop);
    }
    match trigger.config().source.clone() {
        SourceConfig::Schedule(config) => singleton(ctx, stop, move |stop| {
            schedule::run(trigger.clone(), config.clone(), submitter.clone(), stop)
        }),
        SourceConfig::Chain(config) => {
            let runs = ctx.runs.subscribe();
            tokio::spawn(chain::run(trigger, config, submitter, runs, stop))
        }
        SourceConfig::Webhook(_) => tokio::spawn(async move { stop.cancelled().await }),
        SourceConfig::KubeWatch(config) => {
            let kube = ctx.kube.clone();
            singleton(ctx, stop, move |stop| {
                kube_watch::run(
                    trigger.clone(),
                    config.clone(),
                    submitter.clone(),
                    kube.clone(),
                    stop,
                )
            })
        }
        SourceConfig::RedisQueue(config) => {
            let services = ctx.services.clone();
            tokio::spawn(redis_queue::run(trigger, config, submitter, services, stop))
        }
        SourceConfig::Nats(config) => {
            let services = ctx.services.clone();
            tokio::spawn(nats::run(trigger, config, submitter, services, stop))
        }
        SourceConfig::Mqtt(config) => {
            let services = ctx.services.clone();
            tokio::spawn(mqtt::run(trigger, config, submitter, services, stop))
        }
    }
}

/// Whether a source runs on one replica only (on the leader, when replicas elect one).
pub fn is_singleton(source: &SourceConfig) -> bool {
    matches!(
        source,
        SourceConfig::Schedule(_) | SourceConfig::KubeWatch(_)
    )
}

/// A singleton trigger under `engine.distribute`: the source runs on the
/// leader and publishes into the trigger's stream; on every replica a
/// consumer drains that stream into this engine's workers.
fn distributed(
    trigger: Arc<Trigger>,
    ctx: &SourceContext,
    distributor: Arc<crate::distribute::Distributor>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let (submitter, services) = (ctx.submitter.clone(), ctx.services.clone());
    let consumer = match distributor.consumer(&trigger.name) {
        crate::distribute::Consumer::Redis(config) => tokio::spawn(redis_queue::run(
            trigger.clone(),
            config,
            submitter,
            services,
            stop.clone(),
        )),
        crate::distribute::Consumer::Nats(config) => tokio::spawn(nats::run(
            trigger.clone(),
            config,
            submitter,
            services,
            stop.clone(),
        )),
    };
    let (submitter, kube) = (ctx.submitter.clone(), ctx.kube.clone());
    let source = singleton(ctx, stop, move |stop| {
        let publishing = submitter.publishing(distributor.clone(), stop.clone());
        let trigger = trigger.clone();
        let kube = kube.clone();
        async move {
            match trigger.config().source.clone() {
                SourceConfig::Schedule(config) => {
                    schedule::run(trigger, config, publishing, stop).await
                }
                SourceConfig::KubeWatch(config) => {
                    kube_watch::run(trigger, config, publishing, kube, stop).await
                }
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        let _ = tokio::join!(consumer, source);
    })
}

/// Spawns a source that must run on one replica only.
fn singleton<F, Fut>(ctx: &SourceContext, stop: CancellationToken, start: F) -> JoinHandle<()>
where
    F: Fn(CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    match &ctx.leading {
        None => tokio::spawn(start(stop)),
        Some(leading) => tokio::spawn(crate::kube::leader::while_leading(
            leading.clone(),
            stop,
            start,
        )),
    }
}

/// The host name (a pod's name in Kubernetes), or `wasmtrigger` if there is none.
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wasmtrigger".into())
}

/// A consumer or client name for this process: the host name and process id.
pub(crate) fn process_name() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// A message payload as event data: JSON when it parses, else text when it
/// is UTF-8 (`body`), else base64 (`bodyBase64`).
pub(crate) fn payload_fields(
    data: &mut serde_json::Map<String, serde_json::Value>,
    payload: &[u8],
) {
    use base64::Engine as _;
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) {
        data.insert("body".into(), value);
    } else if let Ok(text) = std::str::from_utf8(payload) {
        data.insert("body".into(), serde_json::Value::String(text.to_string()));
    } else {
        let encoded = base64::engine::general_purpose::STANDARD.encode(payload);
        data.insert("bodyBase64".into(), serde_json::Value::String(encoded));
    }
}
