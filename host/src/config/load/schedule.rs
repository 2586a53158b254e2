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

/// Everything `check` warns about and `run` logs: [`schedule_warnings`]
/// and module files named like a builtin.
pub fn warnings(
    triggers: &[TriggerConfig],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<ConfigError> {
    let mut warnings = schedule_warnings(triggers, now);
    for trigger in triggers {
        let filter = match &trigger.filter {
            Some(crate::config::FilterConfig::Module(m)) => Some(("filter.module", m)),
            _ => None,
        };
        for (field, module) in filter
            .into_iter()
            .chain([("action.module", &trigger.action.module)])
        {
            if let Some(builtin) = crate::builtins::shadowed_by_file(&module.name) {
                warnings.push(ConfigError {
                    file: trigger.file.clone(),
                    trigger: Some(trigger.name.clone()),
                    field: Some(field.to_string()),
                    message: format!(
                        "uses the file {}, not the builtin of the same name; write `module: {}{}` for the builtin (it needs no file)",
                        module.path.display(),
                        crate::builtins::PREFIX,
                        builtin.name
                    ),
                });
            }
        }
    }
    warnings
}

/// Schedules that load but will never fire after `now`: a cron day no month
/// has (`0 0 31 2 *`), an `until` already passed, a cron whose next time is
/// after its `until`. They are legal, so `check` reports them as warnings
/// and `run` logs them.
pub fn schedule_warnings(
    triggers: &[TriggerConfig],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<ConfigError> {
    let mut warnings = Vec::new();
    for trigger in triggers {
        let SourceConfig::Schedule(schedule) = &trigger.source else {
            continue;
        };
        let mut warn = |field: &str, message: String| {
            warnings.push(ConfigError {
                file: trigger.file.clone(),
                trigger: Some(trigger.name.clone()),
                field: Some(field.to_string()),
                message,
            });
        };
        if let Some(until) = schedule.until
            && until <= now
        {
            warn(
                "source.until",
                format!("`until` ({until}) has passed; this trigger will not fire"),
            );
            continue;
        }
        // A past `at` is not warned about: it still fires once at the next
        // start unless it already fired (recorded in the state directory).
        let ScheduleMode::Cron {
            schedule: cron,
            timezone,
        } = &schedule.mode
        else {
            continue;
        };
        match cron.next_after(&now.with_timezone(timezone)) {
            None => warn(
                "source.cron",
                format!(
                    "`{}` matches no date (no month has that day); this trigger will never fire",
                    cron.text()
                ),
            ),
            Some(next) if schedule.until.is_some_and(|u| next > u) => warn(
                "source.cron",
                format!(
                    "`{}` next fires at {next}, after `until`; this trigger will not fire",
                    cron.text()
                ),
            ),
            Some(_) => {}
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::schedule_warnings;

    #[test]
    fn schedules_that_cannot_fire_are_warned_about() {
        let now = chrono::Utc::now();
        let warned = |source: &str| {
            let config = loaded(&with_source(source));
            schedule_warnings(&config.triggers, now)
                .into_iter()
                .map(|w| format!("{}: {}", w.field.unwrap_or_default(), w.message))
                .collect::<Vec<_>>()
        };
        let w = warned("{ type: schedule, cron: '0 0 31 2 *' }");
        assert!(
            w.len() == 1 && w[0].starts_with("source.cron:") && w[0].contains("never fire"),
            "{w:?}"
        );
        // A past `at` still fires once at the next start if it never fired.
        assert!(warned("{ type: schedule, at: '2001-01-01T00:00:00Z' }").is_empty());
        let w = warned("{ type: schedule, cron: '0 0 1 1 *', until: '2001-01-01T00:00:00Z' }");
        assert!(w.len() == 1 && w[0].starts_with("source.until:"), "{w:?}");
        assert!(warned("{ type: schedule, cron: '0 0 29 2 *' }").is_empty());
        assert!(warned("{ type: schedule, every: 1s }").is_empty());
    }

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
