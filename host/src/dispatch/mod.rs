//! Dispatch: a bounded queue between sources and a pool of workers, with
//! per-key ordering ([`queue`]), a per-worker rate limit, retries with
//! backoff, and an orderly stop.
//!
//! Sources never wait on a full queue: [`Submitter::submit`] answers at once,
//! and a refused event is counted and logged (a webhook turns it into a 429).

mod backoff;
mod key;
mod outlet;
pub mod queue;
pub mod shadow;
mod worker;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::capabilities::HostServices;
use crate::config::EngineSettings;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::runs::journal::{Journal, JournalEntry};
use crate::runs::{Attempt, RunRecord, RunRecorder, Upstream};
use crate::runtime::{ModuleRegistry, Runtime};
use crate::trigger::Trigger;

pub use backoff::{RateLimiter, backoff};
pub(crate) use key::key_of;
use queue::{JobKey, Queue, Refused};

/// Counters kept by the dispatcher (exported as metrics by a later layer).
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Events accepted into the queue.
    pub accepted: AtomicU64,
    /// Events refused because the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Schedule ticks skipped because the previous run was unfinished.
    pub ticks_skipped: AtomicU64,
    /// Runs that ended filtered.
    pub filtered: AtomicU64,
    /// Runs that ended succeeded.
    pub succeeded: AtomicU64,
    /// Runs that ended failed.
    pub failed: AtomicU64,
    /// Retry attempts scheduled.
    pub retries: AtomicU64,
}

/// A point-in-time copy of [`DispatchStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub accepted: u64,
    pub dropped_queue_full: u64,
    pub ticks_skipped: u64,
    pub filtered: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retries: u64,
}

impl DispatchStats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            accepted: get(&self.accepted),
            dropped_queue_full: get(&self.dropped_queue_full),
            ticks_skipped: get(&self.ticks_skipped),
            filtered: get(&self.filtered),
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            retries: get(&self.retries),
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// An event on its way through one trigger, with its history so far.
pub struct Job {
    pub(crate) trigger: Arc<Trigger>,
    pub(crate) event: Event,
    pub(crate) accepted: (Instant, String),
    pub(crate) started: Option<(Instant, String)>,
    pub(crate) filter: Option<String>,
    pub(crate) filter_passed: bool,
    pub(crate) attempts: Vec<Attempt>,
    pub(crate) module: Option<String>,
    pub(crate) upstream: Option<Upstream>,
    /// Whether the event has a journal entry to remove when its run ends.
    pub(crate) journaled: bool,
    /// Which delivery of the event this is (more than 1: replayed from the journal).
    pub(crate) delivery: u32,
    /// Told when the run ends (sources that acknowledge upstream, like queues).
    pub(crate) on_done: Option<Completion>,
    /// Runs one at a time, in admission order, with the other jobs of this key.
    pub(crate) key: Option<JobKey>,
    /// The run's log lines and calls so far, when runs are recorded.
    pub(crate) trace: Option<Arc<crate::runs::recording::Trace>>,
    /// The recording being built (event, verdict), when runs are recorded.
    pub(crate) recording: Option<Box<crate::runs::recording::Recording>>,
    /// For a dry-run trigger: the run's kv overlay (side effects suppressed).
    pub(crate) dry_run: Option<Arc<crate::capabilities::kv::Overlay>>,
}

/// Called once when a run ends, with its record; `abandoned` is true when the
/// engine stopped before the run could end on its own (the event was not
/// really processed and should be delivered again).
pub type Completion = Arc<dyn Fn(&RunRecord, bool) + Send + Sync>;

impl Job {
    /// A copy with the identity of the job (what an abandoned-run record needs), none of its progress.
    pub(crate) fn stub(&self) -> Job {
        Job {
            accepted: self.accepted.clone(),
            journaled: self.journaled,
            delivery: self.delivery,
            on_done: self.on_done.clone(),
            key: self.key.clone(),
            ..Job::new(&self.trigger, self.event.clone(), self.upstream.clone())
        }
    }

    fn new(trigger: &Arc<Trigger>, event: Event, upstream: Option<Upstream>) -> Self {
        Job {
            trigger: trigger.clone(),
            event,
            accepted: (Instant::now(), crate::event::now_rfc3339()),
            started: None,
            filter: None,
            filter_passed: false,
            attempts: Vec::new(),
            module: None,
            upstream,
            journaled: false,
            delivery: 1,
            on_done: None,
            key: None,
            trace: None,
            recording: None,
            dry_run: None,
        }
    }
}

/// Why an event was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full; try again later.
    #[error("the dispatch queue is full")]
    QueueFull,
    /// The engine is stopping.
    #[error("the engine is stopping")]
    Stopping,
    /// The event could not be written to the journal, so it was not accepted.
    #[error("the event journal cannot be written")]
    Journal,
}

/// The handle sources use to hand events to the dispatcher.
#[derive(Clone)]
pub struct Submitter {
    queue: Arc<Queue>,
    stats: Arc<DispatchStats>,
    metrics: Arc<Metrics>,
    journal: Option<Journal>,
    /// Some on a distributing leader's singleton sources: events are
    /// published for every replica instead of queued here (`outlet.rs`).
    outlet: Option<outlet::Outlet>,
}

impl Submitter {
    /// Offers an event for a trigger without waiting for room; once this
    /// returns Ok the event is journaled (when the journal is on) and queued.
    pub async fn submit(&self, trigger: &Arc<Trigger>, event: Event) -> Result<(), SubmitError> {
        self.submit_from(trigger, event, None).await
    }

    /// Offers an event started by the end of another run (a chain).
    pub async fn submit_from(
        &self,
        trigger: &Arc<Trigger>,
        event: Event,
        upstream: Option<Upstream>,
    ) -> Result<(), SubmitError> {
        if self.outlet.is_some() {
            let published = self.publish(trigger, vec![event], Vec::new(), false).await;
            return if published == 1 {
                Ok(())
            } else {
                Err(SubmitError::Stopping)
            };
        }
        let (event_id, source) = (event.id.clone(), event.source.clone());
        let full = || {
            bump(&self.stats.dropped_queue_full);
            self.metrics.dropped(&trigger.name, "queue-full");
            tracing::warn!(
                trigger = %trigger.name,
                event_id = %event_id,
                capacity = self.queue.capacity(),
                "dispatch queue full: event not accepted"
            );
            SubmitError::QueueFull
        };
        // A full queue refuses before anything is written.
        if self.queue.depth() >= self.queue.capacity() {
            return Err(full());
        }
        let key = key_of(&trigger.name, &trigger.config().ordering, &event).await;
        let mut job = Job::new(trigger, event, upstream);
        job.key = key;
        self.write_journal(trigger, &mut job).await?;
        self.count(&job);
        match self.queue.try_admit(job) {
            Ok(()) => {
                self.metrics.accepted(&trigger.name, &source);
                Ok(())
            }
            // Filled up meanwhile: the event was not accepted after all.
            Err(Refused::Full(job)) => {
                self.uncount(&job);
                self.forget(&job.event.id);
                Err(full())
            }
            Err(Refused::Closed(job)) => {
                self.uncount(&job);
                self.forget(&job.event.id);
                Err(SubmitError::Stopping)
            }
        }
    }

    /// Writes a job's event to the journal, when the journal is on.
    async fn write_journal(
        &self,
        trigger: &Arc<Trigger>,
        job: &mut Job,
    ) -> Result<(), SubmitError> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let entry = JournalEntry {
            trigger: trigger.name.to_string(),
            event: job.event.clone(),
            upstream: job.upstream.clone(),
            deliveries: 0,
        };
        if let Err(e) = journal.append(entry).await {
            self.metrics.dropped(&trigger.name, "journal");
            tracing::error!(trigger = %trigger.name, event_id = %job.event.id, error = %e, "event not accepted");
            return Err(SubmitError::Journal);
        }
        job.journaled = true;
        Ok(())
    }

    /// Journals events (when the journal is on; all at once, so they share
    /// one commit), then waits for room and queues them in order: for a
    /// source that must not drop what it saw (a Kubernetes watch), where
    /// waiting slows the source instead of losing events. Returns how many
    /// were queued; the rest were refused (journal failure, or stopping: a
    /// journaled event then runs at the next start).
    pub async fn submit_waiting(&self, trigger: &Arc<Trigger>, events: Vec<Event>) -> usize {
        if self.outlet.is_some() {
            return self.publish(trigger, events, Vec::new(), false).await;
        }
        let ordering = trigger.config().ordering.clone();
        let mut jobs = Vec::with_capacity(events.len());
        for event in events {
            let key = key_of(&trigger.name, &ordering, &event).await;
            let mut job = Job::new(trigger, event, None);
            job.key = key;
            jobs.push(job);
        }
        let written =
            futures::future::join_all(jobs.iter_mut().map(|job| self.write_journal(trigger, job)))
                .await;
        let mut queued = 0;
        for (job, written) in jobs.into_iter().zip(written) {
            if written.is_ok() && self.enqueue(trigger, job, false).await.is_ok() {
                queued += 1;
            }
        }
        queued
    }

    /// Waits for room and queues an event whose source keeps it durable
    /// itself (a work queue: not journaled); `on_done` hears how its run ended.
    pub async fn submit_tracked(
        &self,
        trigger: &Arc<Trigger>,
        event: Event,
        on_done: Completion,
    ) -> Result<(), SubmitError> {
        let key = key_of(&trigger.name, &trigger.config().ordering, &event).await;
        let mut job = Job::new(trigger, event, None);
        job.on_done = Some(on_done);
        job.key = key;
        self.enqueue(trigger, job, false).await
    }

    /// Counts and queues a job, waiting for room (a replayed one goes ahead
    /// of its key's new events).
    async fn enqueue(
        &self,
        trigger: &Arc<Trigger>,
        job: Job,
        replayed: bool,
    ) -> Result<(), SubmitError> {
        let source = job.event.source.clone();
        self.count(&job);
        let admitted = if replayed {
            self.queue.admit_replayed(job).await
        } else {
            self.queue.admit(job).await
        };
        admitted.map_err(|job| {
            self.uncount(&job);
            SubmitError::Stopping
        })?;
        self.metrics.accepted(&trigger.name, &source);
        Ok(())
    }

    /// The ordering keys of journaled events about to be replayed, in order,
    /// and holds new events of those keys back until the replays are queued.
    pub(crate) async fn gate_replays(
        &self,
        entries: &[JournalEntry],
        triggers: &[crate::config::TriggerConfig],
    ) -> Vec<Option<JobKey>> {
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let key = match triggers.iter().find(|t| t.name == entry.trigger) {
                Some(config) => {
                    let name: Arc<str> = config.name.as_str().into();
                    key_of(&name, &config.ordering, &entry.event).await
                }
                None => None,
            };
            keys.push(key);
        }
        self.queue.gate(keys.iter().flatten().cloned());
        keys
    }

    /// Lets go of a replay gated by [`Submitter::gate_replays`] that will not come.
    pub(crate) fn ungate(&self, key: &JobKey) {
        self.queue.ungate(key);
    }

    /// Queues a journaled event again after a restart, waiting for room. The
    /// entry's delivery count goes up first, durably, so that a crash during
    /// this delivery too is seen as such by the next one.
    pub(crate) async fn replay(
        &self,
        trigger: &Arc<Trigger>,
        mut entry: JournalEntry,
        key: Option<JobKey>,
    ) -> Result<(), SubmitError> {
        entry.deliveries = entry.deliveries.saturating_add(1);
        let delivery = entry.deliveries.saturating_add(1);
        if let Some(journal) = &self.journal
            && let Err(e) = journal.append(entry.clone()).await
        {
            // The old entry is still there: the event runs now and, if this
            // run is not recorded either, again at the next start.
            tracing::warn!(event_id = %entry.event.id, error = %e, "cannot count a replayed delivery in the journal");
        }
        let mut job = Job::new(trigger, entry.event, entry.upstream);
        job.journaled = true;
        job.delivery = delivery;
        job.key = key;
        self.enqueue(trigger, job, true).await
    }

    /// The journal, if events are journaled.
    pub(crate) fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Drops a journaled event that can no longer run.
    pub(crate) fn forget(&self, event_id: &str) {
        if let Some(journal) = &self.journal {
            journal.complete(event_id);
        }
    }

    /// Counts a job as accepted before it is queued (a worker may end it at
    /// once); its trigger now has an unfinished run.
    fn count(&self, job: &Job) {
        job.trigger.accepted();
        bump(&self.stats.accepted);
    }

    /// Takes back [`Submitter::count`] for a job that was not queued after all.
    fn uncount(&self, job: &Job) {
        job.trigger.completed();
        self.stats.accepted.fetch_sub(1, Ordering::Relaxed);
    }

    /// A submitter on its own queue, for unit tests of sources.
    #[cfg(test)]
    pub(crate) fn for_tests(capacity: usize) -> (Self, Arc<Queue>) {
        let queue = Queue::new(capacity);
        let submitter = Submitter {
            queue: queue.clone(),
            stats: Arc::default(),
            metrics: Metrics::new(),
            journal: None,
            outlet: None,
        };
        (submitter, queue)
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Capacity of the queue.
    pub fn queue_capacity(&self) -> usize {
        self.queue.capacity()
    }

    /// Counters shared with the dispatcher.
    pub fn stats(&self) -> &Arc<DispatchStats> {
        &self.stats
    }

    /// Events waiting in the queue, ready or held behind their key.
    pub fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    /// How per-key ordering holds events back right now.
    pub fn ordering(&self) -> queue::OrderingSnapshot {
        self.queue.ordering()
    }
}

/// The queue and its workers.
pub struct Dispatcher {
    submitter: Option<Submitter>,
    workers: Vec<JoinHandle<()>>,
    /// Cancelled when the engine starts stopping: pending retries give up.
    stopping: CancellationToken,
    /// Cancelled when the grace period is over: in-flight runs are abandoned.
    abort: CancellationToken,
    queue: Arc<Queue>,
    recorder: RunRecorder,
    stats: Arc<DispatchStats>,
    shadows: Arc<shadow::ShadowLog>,
}

impl Dispatcher {
    /// Starts `settings.workers` workers on a queue of `settings.queue_size`.
    pub fn start(
        settings: &EngineSettings,
        runtime: Arc<Runtime>,
        services: Arc<HostServices>,
        registry: Arc<ModuleRegistry>,
        recorder: RunRecorder,
        metrics: Arc<Metrics>,
        journal: Option<Journal>,
    ) -> Self {
        let queue = Queue::new(settings.queue_size);
        let stats = Arc::new(DispatchStats::default());
        let shadows = Arc::new(shadow::ShadowLog::default());
        let stopping = CancellationToken::new();
        let abort = CancellationToken::new();
        let ctx = Arc::new(worker::WorkerContext {
            runtime,
            services,
            registry,
            recorder: recorder.clone(),
            stats: stats.clone(),
            queue: queue.clone(),
            journal: journal.clone(),
            stopping: stopping.clone(),
            abort: abort.clone(),
            record_event_bytes: settings.history.record_event_bytes,
            shadows: shadows.clone(),
            metrics: metrics.clone(),
        });
        let workers = (0..settings.workers)
            .map(|id| {
                let limiter = RateLimiter::new(settings.per_worker_qps);
                tokio::spawn(worker::run(id, ctx.clone(), limiter))
            })
            .collect();
        Dispatcher {
            submitter: Some(Submitter {
                queue: queue.clone(),
                stats: stats.clone(),
                metrics,
                journal: journal.clone(),
                outlet: None,
            }),
            workers,
            stopping,
            abort,
            queue,
            recorder,
            stats,
            shadows,
        }
    }

    /// Every trigger's shadow comparisons.
    pub fn shadows(&self) -> &Arc<shadow::ShadowLog> {
        &self.shadows
    }

    /// A handle for sources.
    pub fn submitter(&self) -> Submitter {
        self.submitter
            .clone()
            .expect("the submitter exists until the dispatcher stops")
    }

    /// Counters.
    pub fn stats(&self) -> &Arc<DispatchStats> {
        &self.stats
    }

    /// Stops after the sources have stopped: queued and running events get up
    /// to `grace` to finish; whatever is left is recorded as failed.
    pub async fn stop(mut self, grace: Duration) {
        self.stopping.cancel();
        self.queue.close();
        drop(self.submitter.take());
        let mut workers = std::mem::take(&mut self.workers);
        let finished = tokio::time::timeout(grace, async {
            for w in workers.iter_mut() {
                let _ = w.await;
            }
        })
        .await;
        if finished.is_err() {
            tracing::warn!(
                grace = %humantime::format_duration(grace),
                "grace period over: abandoning unfinished runs"
            );
            self.abort.cancel();
            self.queue.wake_all();
            for w in workers {
                let _ = w.await;
            }
        }
        // A retry may have re-queued a job after the workers drained.
        for job in self.queue.drain() {
            worker::abandon(
                &self.recorder,
                &self.stats,
                job,
                "engine stopped before the run started",
            );
        }
    }
}
