//! Event sources, one file per source type. Each runs as a task that turns
//! what it watches into events and hands them to the dispatcher. (Webhooks
//! are pushed by the HTTP server, so their task only waits.)

pub mod chain;
pub mod cron_expr;
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
}

/// Starts the source of a trigger; the task ends when `stop` is cancelled
/// or the source is exhausted (a one-shot schedule).
pub fn spawn(
    trigger: Arc<Trigger>,
    ctx: &SourceContext,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let submitter = ctx.submitter.clone();
    match trigger.config().source.clone() {
        SourceConfig::Schedule(config) => {
            tokio::spawn(schedule::run(trigger, config, submitter, stop))
        }
        SourceConfig::Chain(config) => {
            let runs = ctx.runs.subscribe();
            tokio::spawn(chain::run(trigger, config, submitter, runs, stop))
        }
        SourceConfig::Webhook(_) => tokio::spawn(async move { stop.cancelled().await }),
        SourceConfig::KubeWatch(config) => {
            let kube = ctx.kube.clone();
            tokio::spawn(kube_watch::run(trigger, config, submitter, kube, stop))
        }
        SourceConfig::RedisQueue(config) => {
            let services = ctx.services.clone();
            tokio::spawn(redis_queue::run(trigger, config, submitter, services, stop))
        }
    }
}
