//! Event sources, one file per source type. Each runs as a task that turns
//! what it watches into events and hands them to the dispatcher. (Webhooks
//! are pushed by the HTTP server, so their task only waits.)

pub mod chain;
pub mod kube_watch;
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
    }
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
