//! `type: trigger` sources: chains on other triggers' runs, and the checks
//! that span triggers (unknown upstreams, cycles).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::super::schema::{ChainSpec, ConditionSpec, OutcomeSpec};
use super::super::*;
use super::Loader;

impl Loader<'_> {
    pub(super) fn chain(
        &mut self,
        file: &Path,
        label: &str,
        spec: ChainSpec,
    ) -> Option<ChainConfig> {
        let outcomes = |on: Option<Vec<OutcomeSpec>>| -> Vec<Outcome> {
            let mut list: Vec<Outcome> = on
                .unwrap_or_else(|| vec![OutcomeSpec::Success])
                .into_iter()
                .map(|o| match o {
                    OutcomeSpec::Success => Outcome::Success,
                    OutcomeSpec::Failure => Outcome::Failure,
                })
                .collect();
            list.dedup();
            list
        };
        let condition = |c: ConditionSpec| ChainCondition {
            of: c.of,
            on: outcomes(c.on),
        };
        let (mode, conditions, field) = match (spec.of, spec.all, spec.any) {
            (Some(of), None, None) => (
                ChainMode::Any,
                vec![ChainCondition {
                    of,
                    on: outcomes(spec.on),
                }],
                "source.of",
            ),
            (None, Some(all), None) if spec.on.is_none() => (
                ChainMode::All,
                all.into_iter().map(condition).collect(),
                "source.all",
            ),
            (None, None, Some(any)) if spec.on.is_none() => (
                ChainMode::Any,
                any.into_iter().map(condition).collect(),
                "source.any",
            ),
            _ => {
                let message = "a trigger source takes exactly one of `of` (with optional `on`), `all` or `any`".to_string();
                self.error(file, Some(label), Some("source"), message);
                return None;
            }
        };
        if conditions.is_empty() {
            self.error(
                file,
                Some(label),
                Some(field),
                "expected at least one upstream condition".into(),
            );
            return None;
        }
        if spec.window.is_some() && mode != ChainMode::All {
            self.error(
                file,
                Some(label),
                Some("source.window"),
                "`window` only applies to `all`".into(),
            );
            return None;
        }
        let window = spec
            .window
            .map(|w| w.0)
            .unwrap_or(std::time::Duration::from_secs(600));
        if window.is_zero() {
            self.error(
                file,
                Some(label),
                Some("source.window"),
                "expected a window above zero".into(),
            );
            return None;
        }
        Some(ChainConfig {
            mode,
            conditions,
            window,
        })
    }
}

/// A trigger as far as chains care: its name and, for a chained trigger,
/// its conditions — kept for triggers with other problems too, so a missing
/// module does not hide an unknown upstream, nor make its trigger "unknown".
pub(super) struct Declared {
    pub file: PathBuf,
    pub name: String,
    pub chain: Option<ChainConfig>,
}

impl Declared {
    fn of(t: &TriggerConfig) -> Self {
        Declared {
            file: t.file.clone(),
            name: t.name.clone(),
            chain: match &t.source {
                SourceConfig::Chain(chain) => Some(chain.clone()),
                _ => None,
            },
        }
    }
}

/// The chain problems of a set of triggers (unknown upstreams, cycles).
pub fn chain_errors(triggers: &[TriggerConfig]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let declared: Vec<Declared> = triggers.iter().map(Declared::of).collect();
    check_chains(&declared, triggers, &mut errors);
    errors
}

/// Chains must name declared triggers (valid or not) and the valid ones must
/// not form a cycle: a chain that can reach itself could run forever
/// (retrying a failed run is `retry:`'s job).
pub(super) fn check_chains(
    declared: &[Declared],
    triggers: &[TriggerConfig],
    errors: &mut Vec<ConfigError>,
) {
    let names: std::collections::HashSet<&str> = declared.iter().map(|t| t.name.as_str()).collect();
    for t in declared {
        let Some(chain) = &t.chain else {
            continue;
        };
        for (i, c) in chain.conditions.iter().enumerate() {
            if !names.contains(c.of.as_str()) {
                let field = if chain.conditions.len() == 1 && chain.mode == ChainMode::Any {
                    "source.of".to_string()
                } else {
                    format!(
                        "source.{}[{i}].of",
                        if chain.mode == ChainMode::All {
                            "all"
                        } else {
                            "any"
                        }
                    )
                };
                errors.push(ConfigError {
                    file: t.file.clone(),
                    trigger: Some(t.name.clone()),
                    field: Some(field),
                    message: format!("no trigger named `{}` to chain on", c.of),
                });
            }
        }
    }
    let mut upstreams: HashMap<&str, Vec<&str>> = HashMap::new();
    for t in triggers {
        if let SourceConfig::Chain(chain) = &t.source {
            for c in &chain.conditions {
                upstreams
                    .entry(t.name.as_str())
                    .or_default()
                    .push(c.of.as_str());
            }
        }
    }
    // Depth-first search from each trigger along its upstreams; reaching the start again is a cycle.
    let mut reported: std::collections::HashSet<Vec<&str>> = std::collections::HashSet::new();
    for t in triggers {
        let start = t.name.as_str();
        let mut stack: Vec<Vec<&str>> = vec![vec![start]];
        let mut seen = std::collections::HashSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().unwrap_or(&start);
            for up in upstreams.get(last).into_iter().flatten() {
                if *up == start {
                    let mut cycle: Vec<&str> = path.iter().rev().copied().collect();
                    cycle.push(cycle[0]);
                    let mut key = cycle[..cycle.len() - 1].to_vec();
                    key.sort();
                    if reported.insert(key) {
                        let message = if cycle.len() == 2 {
                            format!(
                                "`{start}` chains on itself, so it could run forever; to retry failed runs use `action.retry`"
                            )
                        } else {
                            format!(
                                "chain cycle {}: it could run forever; break the cycle (to retry failed runs use `action.retry`)",
                                cycle.join(" -> ")
                            )
                        };
                        errors.push(ConfigError {
                            file: t.file.clone(),
                            trigger: Some(start.to_string()),
                            field: Some("source".into()),
                            message,
                        });
                    }
                } else if seen.insert(*up) {
                    let mut next = path.clone();
                    next.push(up);
                    stack.push(next);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn chains_need_existing_upstreams_and_no_cycles() {
        assert_problem(
            &with_source("{ type: trigger, of: nowhere }"),
            "source.of",
            "no trigger named `nowhere`",
        );
        let cycle = "triggers:\n  - name: a\n    source: { type: trigger, of: b }\n    action: { module: m.wasm }\n  - name: b\n    source: { type: trigger, of: a }\n    action: { module: m.wasm }\n";
        assert_problem(cycle, "source", "chain cycle");
        // A trigger with another problem still has a name and an upstream.
        let both = "triggers:\n  - name: a\n    source: { type: schedule, every: 1m }\n    action: { module: m.wasm, timout: 1s }\n  - name: b\n    source: { type: trigger, of: ghost }\n    action: { module: m.wasm, timout: 1s }\n  - name: c\n    source: { type: trigger, of: a }\n    action: { module: m.wasm }\n";
        assert_problem(both, "action.timout", "unknown field");
        assert_problem(both, "source.of", "no trigger named `ghost`");
        assert!(
            !problems(both)
                .iter()
                .any(|p| p.message.contains("no trigger named `a`")),
            "`a` is declared, though invalid"
        );
        let itself = "triggers:\n  - name: a\n    source: { type: trigger, of: a, on: [failure] }\n    action: { module: m.wasm }\n";
        assert_problem(itself, "source", "chains on itself");
    }
}
