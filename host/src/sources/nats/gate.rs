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
    pub arrived: std::time::Instant,
}

impl Taken {
    /// Whether the gate may judge it yet. A redelivery may overlap a run of
    /// the same message still going on the replica that had it (the server
    /// redelivers at once after a restart, before that replica's progress
    /// acknowledgements resume): it waits one `ack_wait` first, by which
    /// time that run has ended and been acknowledged, and the redelivery is
    /// found to have left the stream, or that replica is truly gone.
    pub fn ripe(&self, ack_wait: std::time::Duration) -> bool {
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

/// Keyed messages waiting for their turn, by subject, oldest first.
#[derive(Default)]
pub(super) struct Held {
    by_subject: HashMap<String, BTreeMap<u64, Taken>>,
}

impl Held {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.by_subject.is_empty()
    }

    /// Keeps a message until its turn.
    pub fn hold(&mut self, taken: Taken) {
        self.by_subject
            .entry(taken.message.subject.to_string())
            .or_default()
            .insert(taken.sequence, taken);
    }

    /// The subjects with messages waiting.
    pub fn subjects(&self) -> Vec<String> {
        self.by_subject.keys().cloned().collect()
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
}
