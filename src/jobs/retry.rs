//! When to try again, and how long to wait: a pure decision.

use std::time::Duration;

use rand::Rng;

/// Picks the wait before a retry given the backoff's ceiling: [`full_jitter`] in the app; a test passes a
/// fixed choice (no wait, or the ceiling) so that its retries do not wait on chance.
pub type Jitter = fn(Duration) -> Duration;

/// A random wait between 0 and `ceiling` (AWS's "full jitter"): retries from many jobs spread out.
pub fn full_jitter(ceiling: Duration) -> Duration {
    Duration::from_millis(rand::rng().random_range(0..=ceiling.as_millis() as u64))
}

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub base: Duration,
    pub max: Duration,
    pub max_attempts: u32,
    /// Oldest a job may be (since its event arrived) and still be retried.
    pub max_age: Duration,
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: the server's `Retry-After` when it gave one, else exponential
    /// backoff with jitter (by default a random wait between 0 and `base · 2^(attempt-1)`, capped at `max`).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait.min(Duration::from_secs(3600));
        }
        let exp = 2u32.saturating_pow(attempt.saturating_sub(1).min(30));
        (self.jitter)(self.base.saturating_mul(exp).min(self.max))
    }

    /// Why no further attempt is allowed after `attempts` tries on a job of age `age`, if that is so.
    pub fn exhausted(&self, attempts: u32, age: Duration) -> Option<String> {
        if attempts >= self.max_attempts {
            Some(format!("gave up after {attempts} attempts"))
        } else if age >= self.max_age {
            Some(format!(
                "gave up after {attempts} attempts: the job is older than {} s (RETRY_MAX_AGE_SECS)",
                self.max_age.as_secs()
            ))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_capped_and_yields_to_retry_after() {
        let p = RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts: 5,
            max_age: Duration::from_secs(60),
            jitter: full_jitter,
        };
        for attempt in 1..20 {
            let d = p.delay(attempt, None);
            assert!(d <= Duration::from_secs(2));
            assert!(d <= Duration::from_millis(100 * 2u64.pow((attempt - 1).min(10))));
        }
        assert_eq!(
            p.delay(3, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        let at_the_ceiling = RetryPolicy {
            jitter: |ceiling| ceiling,
            ..p
        };
        assert_eq!(at_the_ceiling.delay(3, None), Duration::from_millis(400));
        assert_eq!(at_the_ceiling.delay(9, None), Duration::from_secs(2));
        assert_eq!(p.exhausted(4, Duration::from_secs(1)), None);
        assert!(p
            .exhausted(5, Duration::from_secs(1))
            .unwrap()
            .contains("5 attempts"));
        assert!(p
            .exhausted(1, Duration::from_secs(61))
            .unwrap()
            .contains("older than 60 s"));
    }
}
