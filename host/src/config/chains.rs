//! The settings of a `type: trigger` source: which upstream runs, ending how,
//! start a chained run.

use std::time::Duration;

/// How an upstream run ended, as a chain condition sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The run succeeded.
    Success,
    /// The run failed (after its retries).
    Failure,
}

impl Outcome {
    /// Name as in config (`success`, `failure`).
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// One upstream condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainCondition {
    /// The upstream trigger.
    pub of: String,
    /// The outcomes that satisfy the condition.
    pub on: Vec<Outcome>,
}

/// How conditions combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainMode {
    /// Any condition fires the trigger (`of:` is `any:` with one condition).
    Any,
    /// Every condition must be met within the window (fan-in).
    All,
}

/// A chain source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainConfig {
    /// Any or all.
    pub mode: ChainMode,
    /// The upstream conditions.
    pub conditions: Vec<ChainCondition>,
    /// For `all`: how close together the upstream runs must end.
    pub window: Duration,
}
