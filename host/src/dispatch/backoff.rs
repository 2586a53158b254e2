//! Retry waits and the per-worker rate limit.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RetryPolicy;

/// Wait before retry number `retry` (1-based): `delay * 2^(retry-1)` capped at
/// `max_delay`, with "equal jitter" — a uniformly random wait in [half, full] —
/// so that retries of many events spread out while each wait still grows.
pub fn backoff(policy: &RetryPolicy, retry: u32, unit_random: f64) -> Duration {
    let exp = retry.saturating_sub(1).min(32);
    let full = policy
        .delay
        .checked_mul(1u32 << exp.min(31))
        .unwrap_or(policy.max_delay)
        .min(policy.max_delay);
    let half = full / 2;
    half + half.mul_f64(unit_random.clamp(0.0, 1.0))
}

/// Spaces one worker's executions to at most `qps` per second (0 = unlimited).
pub struct RateLimiter {
    interval: Option<Duration>,
    next: Instant,
}

impl RateLimiter {
    /// A limiter for `qps` executions per second.
    pub fn new(qps: f64) -> Self {
        let interval = (qps > 0.0).then(|| Duration::from_secs_f64(1.0 / qps));
        RateLimiter {
            interval,
            next: Instant::now(),
        }
    }

    /// Waits for the next execution slot.
    pub async fn acquire(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = self.next.max(Instant::now());
        tokio::time::sleep_until(slot).await;
        self.next = slot + interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max: 10,
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }

    #[test]
    fn waits_double_and_are_capped() {
        let p = policy();
        let full: Vec<u128> = (1..=6).map(|n| backoff(&p, n, 1.0).as_millis()).collect();
        assert_eq!(full, vec![100, 200, 400, 800, 1000, 1000]);
        let low: Vec<u128> = (1..=3).map(|n| backoff(&p, n, 0.0).as_millis()).collect();
        assert_eq!(low, vec![50, 100, 200]);
        assert_eq!(backoff(&p, 200, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn jittered_waits_never_shrink_between_retries() {
        let p = policy();
        for _ in 0..1000 {
            let a = backoff(&p, 2, fastrand::f64());
            let b = backoff(&p, 3, fastrand::f64());
            assert!(b >= a, "{a:?} then {b:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_executions() {
        let mut limiter = RateLimiter::new(10.0);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        let mut unlimited = RateLimiter::new(0.0);
        let start = Instant::now();
        for _ in 0..5 {
            unlimited.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
