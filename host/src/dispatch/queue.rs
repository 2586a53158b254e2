//! The dispatch queue: bounded, and ordered per key.
//!
//! A job may carry an ordering key (its trigger's name and a key computed
//! from the event). Jobs with the same key run one at a time, in the order
//! they were admitted; jobs with different keys, or none, go to whichever
//! worker is free. The rules:
//!
//! - A keyed job whose key is free makes the key busy and is *ready*; one
//!   whose key is busy is *held* behind it, in admission order.
//! - A key stays busy until its job ends for good — through retries, which
//!   come back as ready without giving the key up — and then passes to the
//!   next held job of that key, which joins the end of the ready line. So a
//!   slow or retrying key holds back only itself.
//! - Ready and held jobs together are the queue's depth, bounded by its
//!   capacity: admission is refused (or waits) when it is full. Retries are
//!   not admissions; they return to the line they already belong to.
//! - After a restart, keys with journaled events are *gated* until those
//!   events are admitted again, so a new event never overtakes a replayed
//!   one of its key.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::Job;

/// An ordering key: the trigger's name and the key computed from the event.
pub type JobKey = Arc<(Arc<str>, String)>;

/// Why a job was not admitted.
pub(crate) enum Refused {
    /// At capacity.
    Full(Box<Job>),
    /// The queue no longer admits jobs.
    Closed(Box<Job>),
}

/// A point-in-time view of the per-key ordering, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrderingSnapshot {
    /// Jobs held behind a busy key.
    pub held: u64,
    /// The most jobs held behind any one key.
    pub max_held_per_key: u64,
    /// Keys with a job ready or running.
    pub busy_keys: u64,
}

#[derive(Default)]
struct State {
    ready: VecDeque<Job>,
    held: HashMap<JobKey, VecDeque<Job>>,
    held_count: usize,
    busy: HashSet<JobKey>,
    /// Replayed jobs still to come, per key.
    gated: HashMap<JobKey, usize>,
    closed: bool,
}

/// The queue shared by the submitter and the workers.
pub(crate) struct Queue {
    state: Mutex<State>,
    capacity: usize,
    /// A job became ready, or the queue closed.
    work: Notify,
    /// Room was made.
    room: Notify,
}

impl Queue {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Queue {
            state: Mutex::default(),
            capacity,
            work: Notify::new(),
            room: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most jobs waiting at once.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs waiting: ready or held.
    pub(crate) fn depth(&self) -> usize {
        let state = self.lock();
        state.ready.len() + state.held_count
    }

    /// Admits a job if there is room.
    pub(crate) fn try_admit(&self, job: Job) -> Result<(), Refused> {
        let mut state = self.lock();
        if state.closed {
            return Err(Refused::Closed(Box::new(job)));
        }
        if state.ready.len() + state.held_count >= self.capacity {
            return Err(Refused::Full(Box::new(job)));
        }
        self.place(&mut state, job, false);
        Ok(())
    }

    /// Admits a job, waiting for room; gives it back if the queue closes.
    pub(crate) async fn admit(&self, job: Job) -> Result<(), Job> {
        self.admit_waiting(job, false).await
    }

    /// Admits a replayed job (see [`Queue::gate`]), waiting for room.
    pub(crate) async fn admit_replayed(&self, job: Job) -> Result<(), Job> {
        self.admit_waiting(job, true).await
    }

    async fn admit_waiting(&self, job: Job, replayed: bool) -> Result<(), Job> {
        loop {
            let room = self.room.notified();
            {
                let mut state = self.lock();
                if state.closed {
                    return Err(job);
                }
                if state.ready.len() + state.held_count < self.capacity {
                    self.place(&mut state, job, replayed);
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Holds back new jobs of these keys until their replayed jobs are
    /// admitted (one count per replayed job).
    pub(crate) fn gate(&self, keys: impl IntoIterator<Item = JobKey>) {
        let mut state = self.lock();
        for key in keys {
            *state.gated.entry(key).or_default() += 1;
        }
    }

    /// Gives up one replayed job of `key` that will not come (its trigger is gone).
    pub(crate) fn ungate(&self, key: &JobKey) {
        let mut state = self.lock();
        Self::count_down(&mut state, key);
        if !state.busy.contains(key) {
            self.pass_on(&mut state, key);
        }
    }

    fn count_down(state: &mut State, key: &JobKey) {
        if let Some(n) = state.gated.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                state.gated.remove(key);
            }
        }
    }

    fn place(&self, state: &mut State, job: Job, replayed: bool) {
        let Some(key) = job.key.clone() else {
            state.ready.push_back(job);
            self.work.notify_one();
            return;
        };
        if replayed {
            Self::count_down(state, &key);
        }
        // A replayed job goes ahead of held new ones (they came later);
        // a new job waits while its key is busy or gated.
        let wait = state.busy.contains(&key) || (!replayed && state.gated.contains_key(&key));
        if !wait {
            state.busy.insert(key);
            state.ready.push_back(job);
            self.work.notify_one();
            return;
        }
        let line = state.held.entry(key).or_default();
        if replayed {
            let position = line.iter().take_while(|j| j.delivery > 1).count();
            line.insert(position, job);
        } else {
            line.push_back(job);
        }
        state.held_count += 1;
    }

    /// Puts a job that is being retried back in line; it keeps its key.
    pub(crate) fn requeue(&self, job: Job) {
        self.lock().ready.push_back(job);
        self.work.notify_one();
    }

    /// The next ready job, if any.
    pub(crate) fn try_next(&self) -> Option<Job> {
        let job = self.lock().ready.pop_front();
        if job.is_some() {
            self.room.notify_waiters();
        }
        job
    }

    /// Waits for the next ready job; None once the queue is closed and empty.
    pub(crate) async fn next(&self) -> Option<Job> {
        loop {
            let work = self.work.notified();
            if let Some(job) = self.try_next() {
                return Some(job);
            }
            if self.lock().closed {
                return None;
            }
            work.await;
        }
    }

    /// A future that completes when a job may have become ready.
    pub(crate) fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.work.notified()
    }

    /// Whether jobs are held behind busy keys (they become ready as keys free up).
    pub(crate) fn has_held(&self) -> bool {
        self.lock().held_count > 0
    }

    /// A job has ended for good: its key passes to the next held job.
    pub(crate) fn done(&self, key: Option<&JobKey>) {
        let Some(key) = key else { return };
        let mut state = self.lock();
        state.busy.remove(key);
        self.pass_on(&mut state, key);
    }

    fn pass_on(&self, state: &mut State, key: &JobKey) {
        let next = state.held.get_mut(key).and_then(VecDeque::pop_front);
        if state.held.get(key).is_some_and(VecDeque::is_empty) {
            state.held.remove(key);
        }
        if let Some(job) = next {
            // A new job still waits for the key's replayed ones.
            if job.delivery <= 1 && state.gated.contains_key(key) {
                state.held.entry(key.clone()).or_default().push_front(job);
                return;
            }
            state.held_count -= 1;
            state.busy.insert(key.clone());
            state.ready.push_back(job);
            self.work.notify_one();
            self.room.notify_waiters();
        }
    }

    /// Stops admitting; waiting admitters get their jobs back.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.room.notify_waiters();
        self.work.notify_waiters();
    }

    /// Wakes every waiting worker (the engine is stopping).
    pub(crate) fn wake_all(&self) {
        self.work.notify_waiters();
    }

    /// Takes every waiting job, ready and held (the engine has stopped).
    pub(crate) fn drain(&self) -> Vec<Job> {
        let mut state = self.lock();
        let mut jobs: Vec<Job> = state.ready.drain(..).collect();
        for (_, line) in state.held.drain() {
            jobs.extend(line);
        }
        state.held_count = 0;
        state.busy.clear();
        jobs
    }

    /// The per-key view, for metrics.
    pub(crate) fn ordering(&self) -> OrderingSnapshot {
        let state = self.lock();
        OrderingSnapshot {
            held: state.held_count as u64,
            max_held_per_key: state.held.values().map(VecDeque::len).max().unwrap_or(0) as u64,
            busy_keys: state.busy.len() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EngineOverrides, load_declarations};
    use crate::event::Event;
    use crate::state::StateStore;
    use crate::trigger::Trigger;

    fn trigger() -> Arc<Trigger> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        std::fs::write(
            &path,
            "triggers:\n  - name: t\n    source: { type: webhook, auth: none }\n    action: { module: m.wasm }\n",
        )
        .unwrap();
        let config = load_declarations(&path, &EngineOverrides::default()).unwrap();
        let store = StateStore::in_memory(Default::default()).unwrap();
        Trigger::new(config.triggers[0].clone(), &store)
    }

    fn job(trigger: &Arc<Trigger>, key: Option<&str>, n: u32) -> Job {
        let mut job = Job::new(trigger, Event::new("t", "webhook", "post", &n.into()), None);
        job.key = key.map(|k| Arc::new((trigger.name.clone(), k.to_string())));
        job
    }

    fn n(job: &Job) -> u32 {
        job.event.data.parse().unwrap()
    }

    #[test]
    fn a_key_runs_one_at_a_time_in_order_and_others_pass_it() {
        let (t, q) = (trigger(), Queue::new(10));
        for (key, i) in [
            (Some("a"), 1),
            (Some("a"), 2),
            (Some("b"), 3),
            (None, 4),
            (Some("a"), 5),
        ] {
            assert!(q.try_admit(job(&t, key, i)).is_ok());
        }
        // Ready: a1, b3, 4; held: a2, a5 — held jobs count against the bound.
        assert_eq!(q.depth(), 5);
        let a1 = q.try_next().unwrap();
        assert_eq!(n(&a1), 1);
        assert_eq!(n(&q.try_next().unwrap()), 3);
        assert_eq!(n(&q.try_next().unwrap()), 4);
        assert!(q.try_next().is_none(), "a2 waits for a1");
        assert_eq!(q.ordering().held, 2);
        assert_eq!(q.ordering().max_held_per_key, 2);
        // A retry of a1 keeps the key: a2 still waits.
        q.requeue(a1);
        let a1 = q.try_next().unwrap();
        assert!(q.try_next().is_none());
        q.done(a1.key.as_ref());
        let a2 = q.try_next().unwrap();
        assert_eq!(n(&a2), 2);
        q.done(a2.key.as_ref());
        assert_eq!(n(&q.try_next().unwrap()), 5);
    }

    #[test]
    fn held_jobs_fill_the_queue_and_a_closed_queue_refuses() {
        let (t, q) = (trigger(), Queue::new(2));
        assert!(q.try_admit(job(&t, Some("a"), 1)).is_ok());
        let running = q.try_next().unwrap();
        assert!(q.try_admit(job(&t, Some("a"), 2)).is_ok());
        assert!(q.try_admit(job(&t, Some("a"), 3)).is_ok());
        assert!(matches!(
            q.try_admit(job(&t, Some("b"), 4)),
            Err(Refused::Full(_))
        ));
        q.done(running.key.as_ref());
        q.close();
        assert!(matches!(
            q.try_admit(job(&t, None, 5)),
            Err(Refused::Closed(_))
        ));
        assert_eq!(q.drain().len(), 2);
    }

    #[test]
    fn replayed_jobs_of_a_gated_key_go_before_new_ones() {
        let (t, q) = (trigger(), Queue::new(10));
        let key: JobKey = Arc::new((t.name.clone(), "a".into()));
        q.gate([key.clone(), key.clone()]);
        // A new event arrives before the replays are queued: it waits.
        assert!(q.try_admit(job(&t, Some("a"), 10)).is_ok());
        assert!(q.try_next().is_none());
        let replayed = |i| {
            let mut j = job(&t, Some("a"), i);
            j.delivery = 2;
            j
        };
        let admit = |j| futures::executor::block_on(q.admit_replayed(j)).is_ok();
        assert!(admit(replayed(1)));
        assert!(admit(replayed(2)));
        let mut order = Vec::new();
        while let Some(j) = q.try_next() {
            order.push(n(&j));
            q.done(j.key.as_ref());
        }
        assert_eq!(order, [1, 2, 10]);
        // A gate given up on frees its key.
        q.gate([key.clone()]);
        assert!(q.try_admit(job(&t, Some("a"), 11)).is_ok());
        assert!(q.try_next().is_none());
        q.ungate(&key);
        assert_eq!(n(&q.try_next().unwrap()), 11);
    }
}
