//! Event sources, one file per source type. Each runs as a task that turns
//! what it watches into events and hands them to the dispatcher.

pub mod cron_expr;
pub mod schedule;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SourceConfig;
use crate::dispatch::Submitter;
use crate::trigger::Trigger;

/// Starts the source of a trigger; the task ends when `stop` is cancelled
/// or the source is exhausted (a one-shot schedule).
pub fn spawn(
    trigger: Arc<Trigger>,
    submitter: Submitter,
    stop: CancellationToken,
) -> JoinHandle<()> {
    match trigger.config().source.clone() {
        SourceConfig::Schedule(config) => {
            tokio::spawn(schedule::run(trigger, config, submitter, stop))
        }
    }
}
