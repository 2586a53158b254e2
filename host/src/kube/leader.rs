//! Leader election through a `coordination.k8s.io/v1` Lease, so that with
//! several replicas the singleton sources (schedules, kube watches) run on one
//! of them only.
//!
//! The protocol is client-go's: the leader renews the Lease every retry
//! period; a follower takes it over once it has seen the same record, unchanged,
//! for a whole lease duration (its own clock, so clock skew between nodes does
//! not matter); every write carries the resourceVersion it read, so of two
//! candidates only one wins (409 for the other). A leader that cannot renew
//! within the renew deadline steps down — before its lease can expire, so its
//! sources have stopped by the time anyone else may start them. On shutdown the
//! leader releases the Lease so that a follower takes over at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::kube::KubeConnector;

/// Where and how to elect.
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub lease: String,
    /// This replica's identity (unique per process).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it steps down.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaderConfig {
    /// The timings must order as client-go requires: retry < renew deadline < lease duration.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_period.is_zero()
            || self.retry_period >= self.renew_deadline
            || self.renew_deadline >= self.lease_duration
        {
            return Err(format!(
                "leader election needs retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            ));
        }
        Ok(())
    }

    /// A unique identity: `POD_NAME` or the host name, plus a random suffix.
    pub fn default_identity() -> String {
        let base = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "wasmtrigger".to_string());
        // The tail of a v7 UUID is random.
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        format!("{base}-{}", &suffix[suffix.len() - 6..])
    }
}

/// The record a candidate last saw, and when it first saw it.
struct Observed {
    record: Value,
    since: Instant,
}

/// Runs the election until `stop`; the receiver says whether this replica leads.
pub fn spawn(
    kube: Arc<KubeConnector>,
    config: LeaderConfig,
    stop: CancellationToken,
) -> (watch::Receiver<bool>, JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let handle = tokio::spawn(run(kube, config, tx, stop));
    (rx, handle)
}

async fn run(
    kube: Arc<KubeConnector>,
    config: LeaderConfig,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut observed: Option<Observed> = None;
    let mut last_renew: Option<Instant> = None;
    let mut api: Option<Api<Lease>> = None;
    loop {
        if api.is_none() {
            match kube.client().await {
                Ok(client) => api = Some(Api::namespaced(client, &config.namespace)),
                Err(e) => tracing::error!(error = %e, "leader election: no Kubernetes connection"),
            }
        }
        if let Some(api) = &api {
            match try_acquire_or_renew(api, &config, &mut observed).await {
                Ok(true) => {
                    last_renew = Some(Instant::now());
                    if !*leading.borrow() {
                        tracing::info!(identity = %config.identity, lease = %config.lease, namespace = %config.namespace, "became the leader");
                        leading.send_replace(true);
                    }
                }
                Ok(false) => {
                    if *leading.borrow() {
                        tracing::warn!(identity = %config.identity, "lost the lease to another replica; stopping singleton sources");
                        leading.send_replace(false);
                    }
                    last_renew = None;
                }
                Err(e) => {
                    tracing::warn!(identity = %config.identity, error = %e, "leader election: Lease request failed")
                }
            }
        }
        if *leading.borrow() && last_renew.is_none_or(|at| at.elapsed() >= config.renew_deadline) {
            tracing::warn!(identity = %config.identity, "could not renew the lease within the renew deadline; stopping singleton sources");
            leading.send_replace(false);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(config.retry_period) => {}
        }
    }
    if *leading.borrow() {
        // The engine stops its sources before it stops the election, so
        // handing the lease over now cannot double-run anything.
        leading.send_replace(false);
        if let Some(api) = &api {
            match release(api, &config).await {
                Ok(()) => tracing::info!(identity = %config.identity, "released the lease"),
                Err(e) => {
                    tracing::warn!(identity = %config.identity, error = %e, "could not release the lease; it expires instead")
                }
            }
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn spec(lease: &Lease) -> Value {
    serde_json::to_value(&lease.spec).unwrap_or(Value::Null)
}

/// One round of the protocol: Ok(true) if this replica holds the lease now.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    config: &LeaderConfig,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let seconds = config.lease_duration.as_secs().max(1);
    let Some(current) = api.get_opt(&config.lease).await? else {
        let lease: Lease = from_json(json!({
            "metadata": {"name": config.lease, "namespace": config.namespace},
            "spec": {
                "holderIdentity": config.identity,
                "leaseDurationSeconds": seconds,
                "acquireTime": now(),
                "renewTime": now(),
                "leaseTransitions": 0,
            },
        }))?;
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let record = spec(&current);
    let holder = record["holderIdentity"].as_str().unwrap_or_default();
    let ours = holder == config.identity;
    if !ours {
        let changed = observed.as_ref().is_none_or(|o| o.record != record);
        if changed {
            *observed = Some(Observed {
                record: record.clone(),
                since: Instant::now(),
            });
        }
        let held_for =
            Duration::from_secs(record["leaseDurationSeconds"].as_u64().unwrap_or(seconds));
        let expired = observed
            .as_ref()
            .is_some_and(|o| o.since.elapsed() >= held_for);
        if !holder.is_empty() && !expired {
            return Ok(false);
        }
    }
    let mut next = record.clone();
    next["holderIdentity"] = json!(config.identity);
    next["leaseDurationSeconds"] = json!(seconds);
    next["renewTime"] = json!(now());
    if !ours {
        next["acquireTime"] = json!(now());
        next["leaseTransitions"] = json!(record["leaseTransitions"].as_i64().unwrap_or(0) + 1);
    }
    let mut lease = current;
    lease.spec = Some(from_json(next)?);
    match api
        .replace(&config.lease, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        // Someone else wrote first: they hold it (or renewed it).
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the lease up: no holder, so a follower acquires it on its next try.
async fn release(api: &Api<Lease>, config: &LeaderConfig) -> Result<(), kube::Error> {
    let Some(current) = api.get_opt(&config.lease).await? else {
        return Ok(());
    };
    let mut record = spec(&current);
    if record["holderIdentity"].as_str() != Some(config.identity.as_str()) {
        return Ok(());
    }
    record["holderIdentity"] = Value::Null;
    record["leaseDurationSeconds"] = json!(1);
    record["renewTime"] = json!(now());
    let mut lease = current;
    lease.spec = Some(from_json(record)?);
    api.replace(&config.lease, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, kube::Error> {
    serde_json::from_value(value).map_err(kube::Error::SerdeError)
}

/// Runs a singleton source only while this replica leads: `start` is called
/// each time leadership is gained, and its token is cancelled (and the task
/// awaited) as soon as it is lost. Ends when `stop` is cancelled or a started
/// source finishes on its own (a one-shot schedule).
pub async fn while_leading<F, Fut>(
    mut leading: watch::Receiver<bool>,
    stop: CancellationToken,
    start: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            gained = async { leading.wait_for(|l| *l).await.map(|_| ()) } => {
                if gained.is_err() {
                    return;
                }
            }
        }
        let term = stop.child_token();
        let mut source = tokio::spawn(start(term.clone()));
        tokio::select! {
            _ = &mut source => return,
            _ = async { leading.wait_for(|l| !*l).await.map(|_| ()) } => {
                term.cancel();
                let _ = source.await;
            }
        }
    }
}
