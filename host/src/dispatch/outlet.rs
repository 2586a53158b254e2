//! Where a distributing leader's singleton sources put their events: into
//! the trigger's stream for every replica (`crate::distribute`)
//! instead of this engine's queue. The sources keep calling the same
//! `Submitter` methods; a submitter made by [`Submitter::publishing`] routes them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Submitter;
use super::key::key_of;
use crate::distribute::{Distributor, Outgoing, Position};
use crate::event::Event;
use crate::trigger::Trigger;

/// The distributor and the source's stop signal (a publish retries until
/// the server takes it or the source stops).
#[derive(Clone)]
pub(super) struct Outlet {
    distributor: Arc<Distributor>,
    stop: CancellationToken,
}

impl Submitter {
    /// This submitter, publishing into `distributor` instead of queueing
    /// here, until `stop` is cancelled.
    pub fn publishing(&self, distributor: Arc<Distributor>, stop: CancellationToken) -> Submitter {
        Submitter {
            outlet: Some(Outlet { distributor, stop }),
            ..self.clone()
        }
    }

    /// The distributor, when this submitter publishes.
    pub fn distributor(&self) -> Option<&Arc<Distributor>> {
        self.outlet.as_ref().map(|o| &o.distributor)
    }

    /// A kube watch's events with where the watch now stands on the objects
    /// it handled (published together, with the mark that the watch has
    /// listed; locally the positions are the source's own business).
    pub async fn submit_watched(
        &self,
        trigger: &Arc<Trigger>,
        events: Vec<Event>,
        positions: Vec<Position>,
    ) -> usize {
        if self.outlet.is_some() {
            self.publish(trigger, events, positions, true).await
        } else {
            self.submit_waiting(trigger, events).await
        }
    }

    /// Runs of `trigger` not finished yet: here, or across every replica
    /// when its events are distributed (an unreachable Redis counts as busy,
    /// so an overlap rule skips rather than piles up).
    pub async fn unfinished(&self, trigger: &Trigger) -> usize {
        match &self.outlet {
            None => trigger.unfinished(),
            Some(out) => match out.distributor.unfinished(&trigger.name).await {
                Ok(n) => n as usize,
                Err(e) => {
                    tracing::warn!(trigger = %trigger.name, error = %e, "distribute: cannot read the stream's backlog; counting the trigger as busy");
                    1
                }
            },
        }
    }

    /// Publishes events (each with its ordering key) and positions; returns
    /// how many events were published (all, or none if the source stopped).
    pub(super) async fn publish(
        &self,
        trigger: &Arc<Trigger>,
        events: Vec<Event>,
        positions: Vec<Position>,
        listed: bool,
    ) -> usize {
        let Some(out) = &self.outlet else { return 0 };
        let ordering = trigger.config().ordering.clone();
        let mut outgoing = Vec::with_capacity(events.len());
        for event in events {
            let key = key_of(&trigger.name, &ordering, &event)
                .await
                .map(|k| k.1.clone());
            outgoing.push(Outgoing { event, key });
        }
        let Some(too_large) = out
            .distributor
            .publish(&trigger.name, &outgoing, &positions, listed, &out.stop)
            .await
        else {
            return 0;
        };
        let n = outgoing.len() - too_large.len();
        if n > 0 {
            self.metrics
                .distributed(&trigger.name, "published", n as u64);
        }
        if too_large.is_empty() {
            return outgoing.len();
        }
        // Larger than the server takes: run here rather than lose them.
        tracing::warn!(trigger = %trigger.name, events = too_large.len(), "distribute: events larger than the server's largest message run on the leader, outside the per-key order of the stream");
        self.metrics
            .distributed(&trigger.name, "local", too_large.len() as u64);
        let mut local = Vec::with_capacity(too_large.len());
        let mut outgoing: Vec<Option<Outgoing>> = outgoing.into_iter().map(Some).collect();
        for i in too_large {
            if let Some(out) = outgoing.get_mut(i).and_then(Option::take) {
                local.push(out.event);
            }
        }
        let here = Submitter {
            outlet: None,
            ..self.clone()
        };
        // Boxed: `submit_waiting` publishes when a submitter has an outlet (this one has none).
        n + Box::pin(here.submit_waiting(trigger, local)).await
    }
}
