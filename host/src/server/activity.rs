//! Runs per minute for each trigger over the last hour, counted in memory
//! from the finished-run broadcast: what the web page's small charts show.
//! It starts empty with the engine; the history holds the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::runs::RunRecord;

/// Minutes kept.
pub const MINUTES: usize = 60;

/// Per-trigger counts of runs finished in each of the last [`MINUTES`] minutes.
#[derive(Default)]
pub struct Activity {
    by_trigger: Mutex<HashMap<String, Ring>>,
}

struct Ring {
    /// The minute (since the epoch) `counts[minute % MINUTES]` last counted.
    latest: i64,
    counts: [u32; MINUTES],
}

fn minute_now() -> i64 {
    chrono::Utc::now().timestamp() / 60
}

impl Activity {
    /// Counts the runs `runs` announces, until the engine stops.
    pub fn follow(mut runs: broadcast::Receiver<Arc<RunRecord>>) -> Arc<Activity> {
        let activity = Arc::new(Activity::default());
        let counting = activity.clone();
        tokio::spawn(async move {
            loop {
                match runs.recv().await {
                    Ok(run) => counting.note(&run.trigger, minute_now()),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        activity
    }

    /// One run of `trigger` finished in `minute`.
    pub fn note(&self, trigger: &str, minute: i64) {
        let mut all = self.by_trigger.lock().unwrap_or_else(|p| p.into_inner());
        // The name is copied once per trigger, not once per run.
        if !all.contains_key(trigger) {
            all.insert(
                trigger.to_string(),
                Ring {
                    latest: minute,
                    counts: [0; MINUTES],
                },
            );
        }
        let Some(ring) = all.get_mut(trigger) else {
            return;
        };
        ring.advance(minute);
        ring.counts[minute.rem_euclid(MINUTES as i64) as usize] += 1;
    }

    /// `trigger`'s counts for the [`MINUTES`] minutes up to `minute`, oldest first.
    pub fn last_hour(&self, trigger: &str, minute: i64) -> Vec<u32> {
        let mut all = self.by_trigger.lock().unwrap_or_else(|p| p.into_inner());
        let Some(ring) = all.get_mut(trigger) else {
            return vec![0; MINUTES];
        };
        ring.advance(minute);
        (0..MINUTES as i64)
            .map(|back| {
                let m = minute - (MINUTES as i64 - 1) + back;
                ring.counts[m.rem_euclid(MINUTES as i64) as usize]
            })
            .collect()
    }

    /// Now's counts, oldest first.
    pub fn now(&self, trigger: &str) -> Vec<u32> {
        self.last_hour(trigger, minute_now())
    }
}

impl Ring {
    /// Zeroes the minutes between the latest counted and `minute`.
    fn advance(&mut self, minute: i64) {
        if minute <= self.latest {
            return;
        }
        let gap = (minute - self.latest).min(MINUTES as i64);
        for m in (minute - gap + 1)..=minute {
            self.counts[m.rem_euclid(MINUTES as i64) as usize] = 0;
        }
        self.latest = minute;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_minute_and_age_out() {
        let a = Activity::default();
        a.note("t", 1000);
        a.note("t", 1000);
        a.note("t", 1002);
        let hour = a.last_hour("t", 1002);
        assert_eq!(hour.len(), MINUTES);
        assert_eq!(&hour[MINUTES - 3..], &[2, 0, 1]);
        let later = a.last_hour("t", 1000 + MINUTES as i64);
        assert_eq!(
            later.iter().sum::<u32>(),
            1,
            "minute 1000 aged out, 1002 stays"
        );
        assert_eq!(a.last_hour("t", 5000).iter().sum::<u32>(), 0);
        assert_eq!(a.last_hour("other", 5000), vec![0; MINUTES]);
    }
}
