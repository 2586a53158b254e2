//! `type: schedule` sources: cron, every, at, now, until and overlap.

use std::path::Path;

use super::super::schema::{OverlapSpec, ScheduleSpec};
use super::super::*;
use super::Loader;

impl Loader<'_> {
    pub(super) fn schedule(
        &mut self,
        file: &Path,
        label: &str,
        spec: ScheduleSpec,
    ) -> Option<ScheduleConfig> {
        let chosen: Vec<&str> = [
            ("cron", spec.cron.is_some()),
            ("every", spec.every.is_some()),
            ("at", spec.at.is_some()),
            ("now", spec.now == Some(true)),
        ]
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
        if chosen.len() != 1 {
            let message = if chosen.is_empty() {
                "a schedule needs exactly one of `cron`, `every`, `at` or `now: true`".to_string()
            } else {
                format!(
                    "a schedule takes exactly one of `cron`, `every`, `at` or `now`, found {}",
                    chosen.join(" and ")
                )
            };
            self.error(file, Some(label), Some("source"), message);
            return None;
        }
        let mut misplaced = |field: &str, belongs: &str| {
            let message = format!("`{field}` only applies to `{belongs}` schedules");
            self.error(file, Some(label), Some(&format!("source.{field}")), message);
        };
        if spec.timezone.is_some() && spec.cron.is_none() {
            misplaced("timezone", "cron");
        }
        if spec.immediately.is_some() && spec.every.is_none() {
            misplaced("immediately", "every");
        }
        let mode = if let Some(text) = &spec.cron {
            match CronSchedule::parse(text) {
                Ok(schedule) => ScheduleMode::Cron {
                    schedule,
                    timezone: spec.timezone.map(|t| t.0).unwrap_or(chrono_tz::UTC),
                },
                Err(message) => {
                    self.error(file, Some(label), Some("source.cron"), message);
                    return None;
                }
            }
        } else if let Some(period) = spec.every {
            if period.0 < std::time::Duration::from_millis(1) {
                self.error(
                    file,
                    Some(label),
                    Some("source.every"),
                    "expected a period of at least 1ms".into(),
                );
                return None;
            }
            ScheduleMode::Every {
                period: period.0,
                immediately: spec.immediately.unwrap_or(false),
            }
        } else if let Some(at) = spec.at {
            ScheduleMode::At(at.0)
        } else {
            ScheduleMode::Now
        };
        if let (ScheduleMode::At(at), Some(until)) = (&mode, spec.until)
            && until.0 <= *at
        {
            self.error(
                file,
                Some(label),
                Some("source.until"),
                "`until` is not after `at`; the schedule would never fire".into(),
            );
            return None;
        }
        Some(ScheduleConfig {
            mode,
            until: spec.until.map(|t| t.0),
            overlap: match spec.overlap.unwrap_or(OverlapSpec::Skip) {
                OverlapSpec::Skip => Overlap::Skip,
                OverlapSpec::Coalesce => Overlap::Coalesce,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn exactly_one_way_to_fire() {
        assert_problem(
            &with_source("{ type: schedule }"),
            "source",
            "exactly one of",
        );
        assert_problem(
            &with_source("{ type: schedule, every: 1m, cron: '* * * * *' }"),
            "source",
            "exactly one of",
        );
        assert_problem(
            &with_source("{ type: schedule, cron: '61 * * * *' }"),
            "source.cron",
            "invalid cron expression",
        );
        let config = loaded(&with_source(
            "{ type: schedule, every: 5s, immediately: true }",
        ));
        assert_eq!(config.triggers[0].source.type_name(), "schedule");
    }
}
