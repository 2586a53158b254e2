//! `type: schedule`: cron expressions, fixed periods, one instant, or once at start.
//!
//! Overlap: a tick that comes while an earlier event of the same trigger is
//! still queued or running is either skipped (the default; counted and
//! logged) or, with `overlap: coalesce`, remembered — at most one — and fired
//! as soon as the trigger is idle. Ticks never pile up.
//!
//! Missed ticks (the process was suspended, or a tick took the engine past
//! several periods) are not replayed: the schedule resumes at the next due time.
//! The exception is `at`: a one-shot that passed while the engine was not
//! running fires once at the next start. Its firing is recorded in the state
//! store, so it never fires twice, across restarts too.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{Overlap, ScheduleConfig, ScheduleMode};
use crate::dispatch::{Submitter, bump};
use crate::event::Event;
use crate::trigger::Trigger;

/// Longest single sleep, so that wall-clock changes are noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Runs one trigger's schedule until it is exhausted or `stop` is cancelled.
pub async fn run(
    trigger: Arc<Trigger>,
    config: ScheduleConfig,
    submitter: Submitter,
    stop: CancellationToken,
) {
    let mut schedule = Schedule {
        trigger,
        config,
        submitter,
        pending: false,
        sequence: 0,
    };
    let mut next = schedule.first(Utc::now());
    loop {
        if schedule.pending && schedule.submitter.unfinished(&schedule.trigger).await == 0 {
            schedule.pending = false;
            schedule.submit(Utc::now(), true).await;
        }
        if let (Some(at), Some(until)) = (next, schedule.config.until)
            && at > until
        {
            tracing::info!(trigger = %schedule.trigger.name, until = %until, "schedule passed its `until`; it fires no more");
            next = None;
        }
        if next.is_none() && !schedule.pending {
            break;
        }
        let pending = schedule.pending;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_until_wall(next), if next.is_some() => {
                if let Some(at) = next {
                    schedule.tick(at).await;
                    next = schedule.following(at, Utc::now());
                }
            }
            _ = schedule.idle(), if pending => {}
        }
    }
    tracing::debug!(trigger = %schedule.trigger.name, "schedule stopped");
}

struct Schedule {
    trigger: Arc<Trigger>,
    config: ScheduleConfig,
    submitter: Submitter,
    /// A coalesced tick waits for the trigger to become idle.
    pending: bool,
    sequence: u64,
}

impl Schedule {
    fn first(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.config.mode {
            ScheduleMode::Cron { schedule, timezone } => schedule
                .next_after(&now.with_timezone(timezone))
                .map(|t| t.with_timezone(&Utc)),
            ScheduleMode::Every {
                period,
                immediately,
            } => Some(if *immediately { now } else { now + *period }),
            ScheduleMode::At(at) => match self
                .trigger
                .state
                .is_marked(&self.trigger.name, &at_key(at))
            {
                Ok(false) if *at <= now => {
                    tracing::info!(trigger = %self.trigger.name, at = %at, "`at` passed while the engine was not running; firing now");
                    Some(*at)
                }
                Ok(false) => Some(*at),
                Ok(true) => {
                    tracing::info!(trigger = %self.trigger.name, at = %at, "`at` already fired; nothing to do");
                    None
                }
                Err(e) => {
                    tracing::error!(trigger = %self.trigger.name, error = %e, "cannot read schedule state; `at` will not fire");
                    None
                }
            },
            ScheduleMode::Now => Some(now),
        }
    }

    /// The due time after the tick at `prev`, skipping times already past.
    fn following(&self, prev: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.config.mode {
            ScheduleMode::Cron { schedule, timezone } => schedule
                .next_after(&prev.max(now).with_timezone(timezone))
                .map(|t| t.with_timezone(&Utc)),
            ScheduleMode::Every { period, .. } => {
                let period_ns = period.as_nanos().max(1) as i64;
                let behind = (now - prev).num_nanoseconds().unwrap_or(i64::MAX).max(0);
                let periods = behind / period_ns + 1;
                Some(prev + chrono::Duration::nanoseconds(period_ns.saturating_mul(periods)))
            }
            ScheduleMode::At(_) | ScheduleMode::Now => None,
        }
    }

    async fn tick(&mut self, at: DateTime<Utc>) {
        if let ScheduleMode::At(due) = &self.config.mode {
            // Exactly once, even if this process dies right after.
            match self
                .trigger
                .state
                .mark_once(&self.trigger.name, &at_key(due))
            {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    tracing::error!(trigger = %self.trigger.name, error = %e, "cannot record the `at` firing; not firing");
                    return;
                }
            }
        }
        if self.submitter.unfinished(&self.trigger).await == 0 {
            return self.submit(at, false).await;
        }
        match self.config.overlap {
            Overlap::Coalesce if !self.pending => {
                self.pending = true;
                tracing::debug!(trigger = %self.trigger.name, "previous run unfinished; tick coalesced");
            }
            _ => {
                bump(&self.submitter.stats().ticks_skipped);
                self.submitter.metrics().tick_skipped(&self.trigger.name);
                tracing::info!(trigger = %self.trigger.name, scheduled = %at, "previous run unfinished; tick skipped");
            }
        }
    }

    /// Resolves when the trigger may have become idle: a run here ended, or,
    /// when its runs are distributed over every replica, a second passed.
    async fn idle(&self) {
        if self.submitter.distributor().is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            self.trigger.run_finished().await;
        }
    }

    /// Emits a tick; `coalesced` marks one that waited for an unfinished run.
    async fn submit(&mut self, scheduled: DateTime<Utc>, coalesced: bool) {
        self.sequence += 1;
        let mut data = serde_json::json!({
            "scheduledTime": scheduled.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "sequence": self.sequence,
            "schedule": describe(&self.config.mode),
        });
        if coalesced {
            data["coalesced"] = true.into();
        }
        let event = Event::new(&self.trigger.name, "schedule", "tick", &data);
        // A refused tick is counted and logged by the submitter; the next one comes anyway.
        let _ = self.submitter.submit(&self.trigger, event).await;
    }
}

/// State-store key marking that the one-shot at `at` fired.
fn at_key(at: &DateTime<Utc>) -> String {
    format!("schedule.at/{}", at.to_rfc3339())
}

fn describe(mode: &ScheduleMode) -> serde_json::Value {
    match mode {
        ScheduleMode::Cron { schedule, timezone } => {
            serde_json::json!({"cron": schedule.text(), "timezone": timezone.name()})
        }
        ScheduleMode::Every { period, .. } => {
            serde_json::json!({"every": humantime::format_duration(*period).to_string()})
        }
        ScheduleMode::At(at) => serde_json::json!({"at": at.to_rfc3339()}),
        ScheduleMode::Now => serde_json::json!({"now": true}),
    }
}

/// Sleeps until a wall-clock instant, in bounded steps so clock changes count.
async fn sleep_until_wall(at: Option<DateTime<Utc>>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    loop {
        let left = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        if left.is_zero() {
            return;
        }
        tokio::time::sleep(left.min(MAX_SLEEP)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(period_ms: u64) -> ScheduleMode {
        ScheduleMode::Every {
            period: Duration::from_millis(period_ms),
            immediately: false,
        }
    }

    fn following(
        mode: ScheduleMode,
        prev: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let store = crate::state::StateStore::in_memory(Default::default()).unwrap();
        let trigger_cfg = crate::config::TriggerConfig {
            name: "t".into(),
            description: None,
            file: "x.yaml".into(),
            source: crate::config::SourceConfig::Schedule(ScheduleConfig {
                mode: mode.clone(),
                until: None,
                overlap: Overlap::Skip,
            }),
            filter: None,
            ordering: crate::config::OrderingConfig::None,
            dry_run: false,
            shadow: None,
            action: crate::config::ActionConfig {
                module: crate::config::ModuleUse {
                    name: "a.wasm".into(),
                    path: "a.wasm".into(),
                    limits: crate::config::Limits {
                        timeout: Duration::from_secs(1),
                        memory: 1 << 20,
                    },
                    isolation: Default::default(),
                },
                params: "{}".into(),
                retry: Default::default(),
                grants: Default::default(),
                http: Default::default(),
                imports: Vec::new(),
            },
        };
        let (submitter, _queue) = Submitter::for_tests(1);
        let s = Schedule {
            trigger: Trigger::new(trigger_cfg, &store),
            config: ScheduleConfig {
                mode,
                until: None,
                overlap: Overlap::Skip,
            },
            submitter,
            pending: false,
            sequence: 0,
        };
        s.following(prev, now)
    }

    #[test]
    fn every_keeps_a_fixed_rate_and_skips_missed_ticks() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let ms = chrono::Duration::milliseconds;
        assert_eq!(following(every(100), t0, t0 + ms(30)), Some(t0 + ms(100)));
        assert_eq!(following(every(100), t0, t0 + ms(350)), Some(t0 + ms(400)));
        assert_eq!(following(ScheduleMode::Now, t0, t0), None);
    }
}
