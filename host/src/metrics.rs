//! Prometheus metrics: per-trigger series updated as things happen, and
//! engine-wide values (queue, reloads, cache, capabilities) read at scrape time.
//! Served as OpenMetrics text at `/metrics`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use crate::capabilities::CapabilitySnapshot;
use crate::runs::{RunRecord, RunSink, RunStatus};

/// `trigger` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    pub trigger: String,
}

/// `trigger`, `status` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub trigger: String,
    pub status: String,
}

/// `trigger`, `reason` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub trigger: String,
    pub reason: String,
}

/// `trigger`, `outcome` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub trigger: String,
    pub outcome: String,
}

/// `trigger`, `source` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub trigger: String,
    pub source: String,
}

/// `trigger`, `code` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub trigger: String,
    pub code: String,
}

/// Reload counters.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Config changes applied.
    pub config_reloads: AtomicU64,
    /// Config changes rejected (the previous config kept running).
    pub config_rejections: AtomicU64,
    /// Module versions swapped in.
    pub module_reloads: AtomicU64,
    /// Module versions rejected (the previous version kept serving).
    pub module_rejections: AtomicU64,
}

impl ReloadStats {
    /// Reads the counters, with the module cache's (`None`: no cache).
    pub fn snapshot(&self, cache: Option<&crate::runtime::CacheStats>) -> ReloadSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReloadSnapshot {
            config_reloads: get(&self.config_reloads),
            config_rejections: get(&self.config_rejections),
            module_reloads: get(&self.module_reloads),
            module_rejections: get(&self.module_rejections),
            cache_hits: cache.map(|c| get(&c.hits)).unwrap_or(0),
            cache_misses: cache.map(|c| get(&c.misses)).unwrap_or(0),
            cache_discarded: cache.map(|c| get(&c.discarded)).unwrap_or(0),
        }
    }
}

/// A point-in-time copy of [`ReloadStats`] and the module cache counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReloadSnapshot {
    pub config_reloads: u64,
    pub config_rejections: u64,
    pub module_reloads: u64,
    pub module_rejections: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_discarded: u64,
}

/// Engine-wide values, read at each scrape.
#[derive(Clone, Debug, Default)]
pub struct EngineReadings {
    pub ready: bool,
    pub queue_depth: u64,
    pub queue_capacity: u64,
    /// Events held behind a busy ordering key (part of `queue_depth`).
    pub ordering_held: u64,
    /// The most events held behind any one key.
    pub ordering_max_held_per_key: u64,
    /// Ordering keys with an event ready or running.
    pub ordering_keys: u64,
    pub modules_loaded: u64,
    pub triggers: u64,
    pub reload: ReloadSnapshot,
    pub capabilities: CapabilitySnapshot,
}

type ReadingsFn = Box<dyn Fn() -> EngineReadings + Send + Sync>;

/// All metrics of one engine.
pub struct Metrics {
    registry: Registry,
    /// Finished runs by trigger and status.
    pub runs: Family<RunLabels, Counter>,
    /// Run duration by trigger.
    pub run_duration: Family<TriggerLabels, Histogram, fn() -> Histogram>,
    /// Retry attempts by trigger.
    pub retries: Family<TriggerLabels, Counter>,
    /// Failed runs by trigger and reason.
    pub errors: Family<ReasonLabels, Counter>,
    /// Events accepted by trigger and source.
    pub accepted: Family<SourceLabels, Counter>,
    /// Events refused by trigger and reason (`queue-full`).
    pub dropped: Family<ReasonLabels, Counter>,
    /// Schedule ticks skipped because the previous run was unfinished.
    pub ticks_skipped: Family<TriggerLabels, Counter>,
    /// Webhook responses by trigger and status code.
    pub webhook_responses: Family<CodeLabels, Counter>,
    /// Work-queue entries not yet delivered to any consumer, per trigger.
    pub queue_lag: Family<TriggerLabels, Gauge>,
    /// Work-queue entries delivered but not yet acknowledged, per trigger.
    pub queue_pending: Family<TriggerLabels, Gauge>,
    /// Shadow runs by how they compared (`match`, `diff`, `error`).
    pub shadow_runs: Family<OutcomeLabels, Counter>,
    /// Events of distributed triggers (`engine.distribute`) by what happened:
    /// `published` by the leader, `consumed` by this replica, `redelivered`
    /// (claimed from a replica that went quiet), `duplicate` (already run;
    /// acknowledged unrun), `local` (too large for the server; run on the leader).
    pub distributed: Family<OutcomeLabels, Counter>,
    /// Events of a distributed trigger this replica holds until an earlier
    /// event of their key has run, wherever it runs.
    pub distributed_held: Family<TriggerLabels, Gauge>,
    readings: Arc<OnceLock<ReadingsFn>>,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("wasmtrigger");
        let runs = Family::<RunLabels, Counter>::default();
        let run_duration =
            Family::<TriggerLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        let retries = Family::<TriggerLabels, Counter>::default();
        let errors = Family::<ReasonLabels, Counter>::default();
        let accepted = Family::<SourceLabels, Counter>::default();
        let dropped = Family::<ReasonLabels, Counter>::default();
        let ticks_skipped = Family::<TriggerLabels, Counter>::default();
        let webhook_responses = Family::<CodeLabels, Counter>::default();
        let queue_lag = Family::<TriggerLabels, Gauge>::default();
        let queue_pending = Family::<TriggerLabels, Gauge>::default();
        registry.register(
            "queue_lag",
            "Work-queue entries not yet delivered to any consumer of the group (scale on this)",
            queue_lag.clone(),
        );
        registry.register(
            "queue_pending",
            "Work-queue entries delivered but not yet acknowledged",
            queue_pending.clone(),
        );
        registry.register("runs", "Finished runs by trigger and status", runs.clone());
        registry.register_with_unit(
            "run_duration",
            "Run duration from start of processing to the record, retries included",
            Unit::Seconds,
            run_duration.clone(),
        );
        registry.register("retries", "Action attempts retried", retries.clone());
        registry.register("run_errors", "Failed runs by reason", errors.clone());
        registry.register(
            "events_accepted",
            "Events accepted into the queue",
            accepted.clone(),
        );
        registry.register(
            "events_dropped",
            "Events refused (queue full)",
            dropped.clone(),
        );
        registry.register(
            "schedule_ticks_skipped",
            "Ticks skipped while a run was unfinished",
            ticks_skipped.clone(),
        );
        registry.register(
            "webhook_responses",
            "Webhook responses by status code",
            webhook_responses.clone(),
        );
        let shadow_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "shadow_runs",
            "Shadow candidate runs by how they compared with the primary",
            shadow_runs.clone(),
        );
        let distributed = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "distributed_events",
            "Events of distributed triggers: published, consumed, redelivered, duplicate, local",
            distributed.clone(),
        );
        let distributed_held = Family::<TriggerLabels, Gauge>::default();
        registry.register(
            "distributed_held_events",
            "Events of a distributed trigger held on this replica until an earlier event of their key has run",
            distributed_held.clone(),
        );
        let readings: Arc<OnceLock<ReadingsFn>> = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(EngineCollector {
            readings: readings.clone(),
        }));
        Arc::new(Metrics {
            registry,
            runs,
            run_duration,
            retries,
            errors,
            accepted,
            dropped,
            ticks_skipped,
            webhook_responses,
            queue_lag,
            queue_pending,
            shadow_runs,
            distributed,
            distributed_held,
            readings,
        })
    }

    /// Sets a work queue's lag (undelivered entries).
    pub fn queue_lag(&self, trigger: &str, value: i64) {
        let labels = TriggerLabels {
            trigger: trigger.to_string(),
        };
        self.queue_lag.get_or_create(&labels).set(value);
    }

    /// Counts `n` events of a distributed trigger by what happened to them.
    pub fn distributed(&self, trigger: &str, outcome: &str, n: u64) {
        self.distributed
            .get_or_create(&OutcomeLabels {
                trigger: trigger.into(),
                outcome: outcome.into(),
            })
            .inc_by(n);
    }

    /// Sets how many events of a distributed trigger wait here for their key's turn.
    pub fn distributed_held(&self, trigger: &str, value: usize) {
        let labels = TriggerLabels {
            trigger: trigger.to_string(),
        };
        self.distributed_held
            .get_or_create(&labels)
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// Counts a shadow run by how it compared.
    pub fn shadow_run(&self, trigger: &str, outcome: &str) {
        self.shadow_runs
            .get_or_create(&OutcomeLabels {
                trigger: trigger.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Sets a work queue's pending (unacknowledged) entries.
    pub fn queue_pending(&self, trigger: &str, value: i64) {
        let labels = TriggerLabels {
            trigger: trigger.to_string(),
        };
        self.queue_pending.get_or_create(&labels).set(value);
    }

    /// Supplies the engine-wide readings (once, when the engine is up).
    pub fn set_readings(&self, f: impl Fn() -> EngineReadings + Send + Sync + 'static) {
        let _ = self.readings.set(Box::new(f));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// Counts an accepted event.
    pub fn accepted(&self, trigger: &str, source: &str) {
        self.accepted
            .get_or_create(&SourceLabels {
                trigger: trigger.into(),
                source: source.into(),
            })
            .inc();
    }

    /// Counts a refused event.
    pub fn dropped(&self, trigger: &str, reason: &str) {
        self.dropped
            .get_or_create(&ReasonLabels {
                trigger: trigger.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a skipped tick.
    pub fn tick_skipped(&self, trigger: &str) {
        self.ticks_skipped
            .get_or_create(&TriggerLabels {
                trigger: trigger.into(),
            })
            .inc();
    }

    /// Counts a webhook response.
    pub fn webhook_response(&self, trigger: &str, code: u16) {
        self.webhook_responses
            .get_or_create(&CodeLabels {
                trigger: trigger.into(),
                code: code.to_string(),
            })
            .inc();
    }
}

/// Records every finished run in the per-trigger series.
pub struct MetricsSink(pub Arc<Metrics>);

impl RunSink for MetricsSink {
    fn record(&self, run: &RunRecord) {
        let m = &self.0;
        let status = match run.status {
            RunStatus::Filtered => "filtered",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
        };
        m.runs
            .get_or_create(&RunLabels {
                trigger: run.trigger.clone(),
                status: status.into(),
            })
            .inc();
        let trigger = TriggerLabels {
            trigger: run.trigger.clone(),
        };
        m.run_duration
            .get_or_create(&trigger)
            .observe(run.duration_ms as f64 / 1000.0);
        let retries = run.attempts.len().saturating_sub(1) as u64;
        if retries > 0 {
            m.retries.get_or_create(&trigger).inc_by(retries);
        }
        if run.status == RunStatus::Failed {
            let reason = run.reason.map(|r| r.as_str()).unwrap_or("unknown");
            m.errors
                .get_or_create(&ReasonLabels {
                    trigger: run.trigger.clone(),
                    reason: reason.into(),
                })
                .inc();
        }
    }
}

/// Encodes the engine-wide readings at scrape time.
struct EngineCollector {
    readings: Arc<OnceLock<ReadingsFn>>,
}

impl fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EngineCollector")
    }
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(value as i64);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let r = self.readings.get().map(|f| f()).unwrap_or_default();
        let e = &mut encoder;
        gauge(
            e,
            "ready",
            "1 when config is loaded, modules compiled and sources started",
            r.ready as u64,
        )?;
        gauge(
            e,
            "queue_depth",
            "Events waiting in the dispatch queue",
            r.queue_depth,
        )?;
        gauge(
            e,
            "queue_capacity",
            "Capacity of the dispatch queue",
            r.queue_capacity,
        )?;
        gauge(
            e,
            "ordering_held_events",
            "Events waiting behind an earlier event of the same ordering key",
            r.ordering_held,
        )?;
        gauge(
            e,
            "ordering_max_held_per_key",
            "The most events waiting behind any one ordering key",
            r.ordering_max_held_per_key,
        )?;
        gauge(
            e,
            "ordering_keys",
            "Ordering keys with an event ready or running",
            r.ordering_keys,
        )?;
        gauge(
            e,
            "modules_loaded",
            "Module versions serving",
            r.modules_loaded,
        )?;
        gauge(e, "triggers", "Triggers running", r.triggers)?;
        counter(
            e,
            "config_reloads",
            "Config changes applied",
            r.reload.config_reloads,
        )?;
        counter(
            e,
            "config_rejections",
            "Config changes rejected",
            r.reload.config_rejections,
        )?;
        counter(
            e,
            "module_reloads",
            "Module versions swapped in",
            r.reload.module_reloads,
        )?;
        counter(
            e,
            "module_rejections",
            "Module versions rejected",
            r.reload.module_rejections,
        )?;
        counter(
            e,
            "module_cache_hits",
            "Modules loaded from the compiled-module cache",
            r.reload.cache_hits,
        )?;
        counter(
            e,
            "module_cache_misses",
            "Modules compiled (not in the cache)",
            r.reload.cache_misses,
        )?;
        counter(
            e,
            "module_cache_discarded",
            "Invalid cache entries discarded",
            r.reload.cache_discarded,
        )?;
        let c = &r.capabilities;
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Cap {
            capability: &'static str,
        }
        let per_capability = [
            ("http", c.http_calls, c.http_denials),
            ("secrets", c.secrets_calls, c.secrets_denials),
            ("kv", c.kv_calls, c.kv_denials),
        ];
        for (name, help, denials) in [
            ("capability_calls", "Capability calls by capability", false),
            (
                "capability_denials",
                "Capability calls denied by capability",
                true,
            ),
        ] {
            let mut family =
                e.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for (capability, calls, denied) in per_capability {
                let value = if denials { denied } else { calls };
                ConstCounter::new(value).encode(family.encode_family(&Cap { capability })?)?;
            }
        }
        Ok(())
    }
}
