//! The consumer side of a distributed trigger's NATS stream
//! (`crate::distribute::nats`): messages carry whole events, and an ordered
//! trigger's events are on one subject per key. The stream is a work queue,
//! so the oldest message left on a subject is the one whose turn it is. A
//! message runs when it is that oldest one, waits here (unacknowledged, kept
//! from redelivery by progress acknowledgements) while an older one is
//! there, and is acknowledged unrun when it is gone from the stream already:
//! it ran before, on a replica that died before this delivery was settled.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::Acker;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};

/// A message taken from the consumer, split from its acknowledger.
pub(super) struct Taken {
    pub message: async_nats::Message,
    pub acker: Arc<Acker>,
    /// Its place in the stream.
    pub sequence: u64,
    /// How often the server has delivered it.
    pub delivered: i64,
    /// When this delivery came.
    pub arrived: Instant,
}

impl Taken {
    /// Whether the gate may judge it yet. A redelivery may overlap a run of
    /// the same message still going on the replica that had it (the server
    /// redelivers at once after a restart, before that replica's progress
    /// acknowledgements resume): it waits one `ack_wait` first, by which
    /// time that run has ended and been acknowledged, and the redelivery is
    /// found to have left the stream, or that replica is truly gone.
    pub fn ripe(&self, ack_wait: Duration) -> bool {
        self.delivered <= 1 || self.arrived.elapsed() >= ack_wait
    }
}

/// What to do with a keyed message now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It is the oldest of its key: run it.
    Run,
    /// An older message of its key is still in the stream: hold it.
    Wait,
    /// It has left the stream (it ran): acknowledge it unrun.
    Duplicate,
}

/// The verdict for the message at `sequence` on `subject`.
pub(super) async fn verdict(
    stream: &Stream,
    subject: &str,
    sequence: u64,
) -> Result<Verdict, String> {
    match stream.get_first_raw_message_by_subject(subject, 1).await {
        Ok(first) => Ok(judge(Some(first.sequence), sequence)),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(judge(None, sequence)),
        Err(e) => Err(e.to_string()),
    }
}

/// `first`: the sequence of the oldest message on the subject, if any.
fn judge(first: Option<u64>, sequence: u64) -> Verdict {
    match first {
        Some(first) if first == sequence => Verdict::Run,
        Some(first) if first < sequence => Verdict::Wait,
        _ => Verdict::Duplicate,
    }
}

/// First and longest wait between checks of a key whose turn has not come:
/// a key waiting on a long run elsewhere costs the server a request per
/// `MAX_RECHECK`, not one per `MIN_RECHECK`.
const MIN_RECHECK: Duration = Duration::from_millis(20);
const MAX_RECHECK: Duration = Duration::from_millis(160);

/// Keyed messages waiting for their turn, by subject, oldest first, and
/// when each key is to be checked again.
#[derive(Default)]
pub(super) struct Held {
    by_subject: HashMap<String, BTreeMap<u64, Taken>>,
    recheck: HashMap<String, (Instant, Duration)>,
}

impl Held {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.by_subject.values().map(BTreeMap::len).sum()
    }

    /// Keeps a message until its turn.
    pub fn hold(&mut self, taken: Taken) {
        self.by_subject
            .entry(taken.message.subject.to_string())
            .or_default()
            .insert(taken.sequence, taken);
    }

    /// The subjects with messages waiting whose check is due.
    pub fn due(&self, now: Instant) -> Vec<String> {
        self.by_subject
            .keys()
            .filter(|s| self.recheck.get(*s).is_none_or(|(at, _)| *at <= now))
            .cloned()
            .collect()
    }

    /// The oldest of `subject` must wait: check it again later, and later
    /// each time it still waits.
    pub fn not_yet(&mut self, subject: &str, now: Instant) {
        let (at, wait) = self
            .recheck
            .entry(subject.to_string())
            .or_insert((now, MIN_RECHECK / 2));
        *wait = (*wait * 2).min(MAX_RECHECK);
        *at = now + *wait;
    }

    /// The sequence of the oldest message waiting on `subject`.
    pub fn first(&self, subject: &str) -> Option<u64> {
        self.oldest(subject).map(|t| t.sequence)
    }

    /// The oldest message waiting on `subject`.
    pub fn oldest(&self, subject: &str) -> Option<&Taken> {
        self.by_subject.get(subject)?.values().next()
    }

    /// Takes the oldest message waiting on `subject`.
    pub fn pop(&mut self, subject: &str) -> Option<Taken> {
        let waiting = self.by_subject.get_mut(subject)?;
        let taken = waiting.pop_first().map(|(_, t)| t);
        if waiting.is_empty() {
            self.by_subject.remove(subject);
        }
        // The next one is news: checked at once, then from the shortest wait.
        self.recheck.remove(subject);
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_runs_only_as_the_oldest_of_its_key() {
        assert_eq!(judge(Some(7), 7), Verdict::Run);
        assert_eq!(judge(Some(3), 7), Verdict::Wait);
        assert_eq!(judge(Some(9), 7), Verdict::Duplicate);
        assert_eq!(judge(None, 7), Verdict::Duplicate);
    }

    #[test]
    fn a_waiting_key_is_checked_less_often_the_longer_it_waits() {
        let mut held = Held::default();
        held.by_subject.insert("k".into(), BTreeMap::new());
        let now = Instant::now();
        assert_eq!(held.due(now), ["k"]);
        let mut waits = Vec::new();
        for _ in 0..6 {
            held.not_yet("k", now);
            waits.push(held.recheck["k"].1);
        }
        assert_eq!(
            waits,
            [20, 40, 80, 160, 160, 160].map(Duration::from_millis)
        );
        assert!(held.due(now).is_empty());
        assert_eq!(held.due(now + MAX_RECHECK), ["k"]);
        held.recheck.clear();
        assert_eq!(held.due(now), ["k"]);
    }
}
