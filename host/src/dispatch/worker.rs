//! A worker: takes a job, runs the filter once and the action (retrying with
//! backoff on failure), and writes exactly one run record per event.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::queue::Queue;
use super::{DispatchStats, Job, RateLimiter, backoff, bump};
use crate::capabilities::secrets::merge_imports;
use crate::capabilities::{ActionAccess, HostServices};
use crate::cel::CelError;
use crate::config::{FilterConfig, Isolation};
use crate::event::now_rfc3339;
use crate::runs::journal::Journal;
use crate::runs::recording::{MAX_ANSWER, Phase, RecordedEvent, Recording, Trace, Verdict};
use crate::runs::{Attempt, MAX_OUTPUT_BYTES, RunRecord, RunRecorder, RunStatus, cap_text};
use crate::runtime::{FailureKind, Invocation, InvokeError, ModuleRegistry, Runtime};

/// What every worker shares.
pub(super) struct WorkerContext {
    pub runtime: Arc<Runtime>,
    pub services: Arc<HostServices>,
    pub registry: Arc<ModuleRegistry>,
    pub recorder: RunRecorder,
    pub stats: Arc<DispatchStats>,
    /// Where jobs wait; retries go back to it and ended jobs free their key in it.
    pub queue: Arc<Queue>,
    pub stopping: CancellationToken,
    pub abort: CancellationToken,
    /// Where accepted events are journaled, if anywhere.
    pub journal: Option<Journal>,
    /// Largest event data a recording keeps (None: runs are not recorded).
    pub record_event_bytes: Option<u64>,
    /// Shadow comparisons.
    pub shadows: Arc<super::shadow::ShadowLog>,
    /// Counters (shadow runs).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The worker loop: runs jobs until the engine stops; then drains what is
/// queued, including jobs still held behind a key, and ends (or ends at
/// once on abort).
pub(super) async fn run(id: usize, ctx: Arc<WorkerContext>, mut limiter: RateLimiter) {
    loop {
        let job = if ctx.abort.is_cancelled() {
            None
        } else if ctx.stopping.is_cancelled() {
            tokio::select! {
                job = draining(&ctx.queue) => job,
                _ = ctx.abort.cancelled() => None,
            }
        } else {
            tokio::select! {
                job = ctx.queue.next() => job,
                _ = ctx.stopping.cancelled() => continue,
            }
        };
        let Some(job) = job else { break };
        tokio::select! {
            _ = limiter.acquire() => {}
            _ = ctx.abort.cancelled() => {
                abandon(&ctx.recorder, &ctx.stats, job, "engine stopped before the run started");
                break;
            }
        }
        // The job moves into `process`; keep what is needed to record an abandoned run.
        let stub = job.stub();
        tokio::select! {
            _ = process(&ctx, job) => {}
            _ = ctx.abort.cancelled() => {
                let job = stub;
                abandon(&ctx.recorder, &ctx.stats, job, "engine stopped before the run finished");
                break;
            }
        }
    }
    tracing::debug!(worker = id, "worker stopped");
}

/// While stopping: the next ready job, waiting only while jobs are held
/// behind a key that a running job will free.
async fn draining(queue: &Queue) -> Option<Job> {
    loop {
        let work = queue.notified();
        if let Some(job) = queue.try_next() {
            return Some(job);
        }
        if !queue.has_held() {
            return None;
        }
        work.await;
    }
}

/// Runs one step of a job: the filter (first time only) and one action attempt.
async fn process(ctx: &Arc<WorkerContext>, mut job: Job) {
    if job.started.is_none() {
        job.started = Some((Instant::now(), now_rfc3339()));
        if let Some(max) = ctx.record_event_bytes {
            job.trace = Some(Arc::new(Trace::default()));
            job.recording = Some(Box::new(Recording {
                event: Some(RecordedEvent::of(&job.event, max)),
                ..Recording::default()
            }));
        }
    }
    let trigger = job.trigger.clone();
    let config = trigger.config();
    if config.dry_run && job.dry_run.is_none() {
        match crate::capabilities::kv::Overlay::new(&trigger.name) {
            Ok(overlay) => job.dry_run = Some(Arc::new(overlay)),
            Err(e) => {
                let error = InvokeError::new(FailureKind::Host, format!("dry run: {e}"));
                let started = (Instant::now(), now_rfc3339());
                job.attempts.push(attempt(1, started, Some(&error)));
                return finish(ctx, job, RunStatus::Failed, None, Some(error));
            }
        }
    }
    if !job.filter_passed {
        if let Some(trace) = &job.trace {
            trace.enter(Phase::Filter, 0);
        }
        let outcome = match &config.filter {
            None => Ok(true),
            Some(FilterConfig::Cel(cel)) => {
                job.filter = Some("cel".into());
                let started = (Instant::now(), now_rfc3339());
                // Bounded by the trigger's timeout, off the async workers.
                let deadline = started.0 + config.action.module.limits.timeout;
                cel.evaluate_until(&job.event, deadline).await.map_err(|e| {
                    let kind = match e {
                        CelError::Timeout(_) => FailureKind::Timeout,
                        CelError::Failed(_) => FailureKind::Host,
                    };
                    (started, InvokeError::new(kind, format!("filter: {e}")))
                })
            }
            Some(FilterConfig::Module(used)) => {
                let started = (Instant::now(), now_rfc3339());
                match trigger.module(&ctx.registry, &used.name) {
                    Err(why) => Err((started, unavailable(why))),
                    Ok(module) => {
                        job.filter = Some(module.label());
                        let inv = Invocation {
                            trace: job.trace.clone(),
                            dry_run: job.dry_run.clone(),
                            ..Invocation::new(
                                &trigger.name,
                                used.limits,
                                Some(trigger.kv.clone()),
                                ctx.services.clone(),
                            )
                        };
                        let verdict = match used.isolation {
                            Isolation::Fresh => {
                                ctx.runtime.call_filter(&module, &inv, &job.event).await
                            }
                            Isolation::Pooled => {
                                let warm = &trigger.warm;
                                ctx.runtime
                                    .call_filter_pooled(&module, &inv, &job.event, warm)
                                    .await
                            }
                        };
                        verdict.map_err(|e| (started, e))
                    }
                }
            }
        };
        if let (Some(recording), Some(filter)) = (&mut job.recording, &job.filter) {
            recording.verdict = Some(Verdict {
                filter: filter.clone(),
                expression: match &config.filter {
                    Some(FilterConfig::Cel(cel)) => Some(cel.source().to_string()),
                    _ => None,
                },
                passed: outcome.as_ref().ok().copied(),
            });
        }
        match outcome {
            Ok(true) => job.filter_passed = true,
            Ok(false) => return finish(ctx, job, RunStatus::Filtered, None, None),
            Err((started, error)) => {
                job.attempts.push(attempt(1, started, Some(&error)));
                return finish(ctx, job, RunStatus::Failed, None, Some(error));
            }
        }
    }

    let action = &config.action;
    let number = job.attempts.len() as u32 + 1;
    if let Some(trace) = &job.trace {
        trace.enter(Phase::Action, number);
    }
    let started = (Instant::now(), now_rfc3339());
    let params = merge_imports(&ctx.services.secrets, &action.params, &action.imports).await;
    let result = match (trigger.module(&ctx.registry, &action.module.name), params) {
        (Err(why), _) => Err(unavailable(why)),
        (_, Err(why)) => Err(InvokeError::new(FailureKind::Host, why)),
        (Ok(module), Ok(params)) => {
            job.module = Some(module.label());
            if let Some(recording) = &mut job.recording {
                let kept = crate::redact::redact_str(&params);
                recording.params = Some(crate::runs::recording::cut(&kept, MAX_ANSWER));
            }
            let inv = Invocation {
                access: Some(Arc::new(ActionAccess {
                    grants: action.grants.clone(),
                    http: action.http,
                })),
                trace: job.trace.clone(),
                dry_run: job.dry_run.clone(),
                ..Invocation::new(
                    &trigger.name,
                    action.module.limits,
                    Some(trigger.kv.clone()),
                    ctx.services.clone(),
                )
            };
            ctx.runtime
                .call_action(&module, &inv, &job.event, &params)
                .await
        }
    };
    match result {
        Ok(output) => {
            job.attempts.push(attempt(number, started, None));
            finish(ctx, job, RunStatus::Succeeded, Some(output), None)
        }
        Err(error) => {
            job.attempts.push(attempt(number, started, Some(&error)));
            let retries_used = number - 1;
            if retries_used < action.retry.max && !ctx.stopping.is_cancelled() {
                schedule_retry(ctx, job, &action.retry, number, error);
            } else {
                finish(ctx, job, RunStatus::Failed, None, Some(error));
            }
        }
    }
}

/// Puts the job back on the queue after its backoff, off the worker.
fn schedule_retry(
    ctx: &Arc<WorkerContext>,
    job: Job,
    policy: &crate::config::RetryPolicy,
    failed_attempt: u32,
    error: InvokeError,
) {
    let delay = backoff(policy, failed_attempt, fastrand::f64());
    bump(&ctx.stats.retries);
    tracing::info!(
        trigger = %job.trigger.name,
        event_id = %job.event.id,
        attempt = failed_attempt,
        retry_in_ms = delay.as_millis() as u64,
        error = %error,
        "action failed; will retry"
    );
    let ctx = ctx.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(delay) => ctx.queue.requeue(job),
            _ = ctx.stopping.cancelled() => {
                let error = InvokeError::new(error.kind, format!("{} (engine stopped before the next retry)", error.message));
                finish(&ctx, job, RunStatus::Failed, None, Some(error));
            }
        }
    });
}

fn unavailable(why: String) -> InvokeError {
    InvokeError::new(FailureKind::ModuleUnavailable, why)
}

fn attempt(number: u32, started: (Instant, String), error: Option<&InvokeError>) -> Attempt {
    Attempt {
        number,
        started_at: started.1,
        duration_ms: started.0.elapsed().as_millis() as u64,
        error: error.map(|e| e.message.clone()),
        reason: error.map(|e| e.kind),
    }
}

/// The one place a run record is made: the job's history so far, its end,
/// and the times from acceptance to now.
fn run_record(
    job: &mut Job,
    status: RunStatus,
    output: Option<String>,
    error: Option<InvokeError>,
) -> RunRecord {
    let now = Instant::now();
    let (started_instant, started_at) = job.started.clone().unwrap_or_else(|| (now, now_rfc3339()));
    RunRecord {
        run_id: crate::runs::run_id_at(&started_at),
        event_id: job.event.id.clone(),
        trigger: job.trigger.name.to_string(),
        source: job.event.source.clone(),
        kind: job.event.kind.clone(),
        status,
        attempts: std::mem::take(&mut job.attempts),
        accepted_at: job.accepted.1.clone(),
        started_at,
        finished_at: now_rfc3339(),
        queued_ms: started_instant
            .saturating_duration_since(job.accepted.0)
            .as_millis() as u64,
        duration_ms: now.saturating_duration_since(started_instant).as_millis() as u64,
        filter: job.filter.take(),
        module: job.module.take(),
        output: output.map(|o| cap_text(o, MAX_OUTPUT_BYTES)),
        reason: error.as_ref().map(|e| e.kind),
        error: error.map(|e| e.message),
        upstream: job.upstream.take(),
        delivery: job.delivery,
        replayed: job.delivery > 1,
        redrive_of: job.event.redrive_of.clone(),
        dry_run: job.trigger.config().dry_run,
        recording: job.recording.take().map(|mut recording| {
            if let Some(trace) = job.trace.take() {
                trace.take_into(&mut recording);
            }
            recording
        }),
    }
}

/// Writes the run record, updates counters and releases the trigger's slot.
fn finish(
    ctx: &Arc<WorkerContext>,
    mut job: Job,
    status: RunStatus,
    output: Option<String>,
    error: Option<InvokeError>,
) {
    let counter = match status {
        RunStatus::Filtered => &ctx.stats.filtered,
        RunStatus::Succeeded => &ctx.stats.succeeded,
        RunStatus::Failed => &ctx.stats.failed,
    };
    bump(counter);
    let record = run_record(&mut job, status, output, error);
    match (job.journaled, &ctx.journal) {
        (true, Some(journal)) => {
            // The record and the entry's removal commit together when a store takes them.
            if !ctx.recorder.record_completing(&record, &job.event.id) {
                journal.complete(&job.event.id);
            }
        }
        _ => ctx.recorder.record(&record),
    }
    if let Some(on_done) = &job.on_done {
        on_done(&record, false);
    }
    super::shadow::maybe_start(ctx, &job.trigger, &job.event, &record);
    job.trigger.completed();
    // Last: the next job of the key starts after this one is recorded.
    ctx.queue.done(job.key.as_ref());
}

/// Records a job the engine gave up on while stopping. Its journal entry
/// stays (the event is replayed at the next start) and a tracking source is
/// told it was abandoned (a queue leaves the entry for another consumer).
pub(super) fn abandon(recorder: &RunRecorder, stats: &DispatchStats, mut job: Job, why: &str) {
    let why = if job.journaled {
        format!("{why}; journaled, it runs again when the engine restarts")
    } else {
        why.to_string()
    };
    bump(&stats.failed);
    let error = InvokeError::new(FailureKind::Host, why);
    let record = run_record(&mut job, RunStatus::Failed, None, Some(error));
    recorder.record(&record);
    if let Some(on_done) = &job.on_done {
        on_done(&record, true);
    }
    job.trigger.completed();
}
