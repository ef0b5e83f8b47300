//! How long to wait before trying again: the one retry policy type of the
//! platform. Every retry (a worker restarted after a failure, a command that
//! lost a race for its stream, a saga step that failed transiently, a
//! connection that was refused) waits what a [`Backoff`] says, so changing
//! how the platform retries is changing this type or one of its constants.
//!
//! A delay doubles from `base` per attempt up to `max`, then [`Jitter`]
//! spreads it so that callers that failed together do not retry together.
//! Randomness comes from `rand`, never from ids.

use std::time::Duration;

use rand::Rng;

/// How a delay is spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the delay: for a lone worker, which races nobody.
    None,
    /// Anywhere in `[0, delay)`: for writers racing on one stream, who gain
    /// most from spreading out.
    Full,
    /// Anywhere in `[delay / 2, delay]`: spread out, but never much sooner
    /// than the policy says.
    Half,
}

/// A retry policy: exponential from `base`, capped at `max`, with jitter,
/// for at most `attempts` attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    pub jitter: Jitter,
    /// How many attempts a caller makes in all before it gives up
    /// (`u32::MAX`: it never does).
    pub attempts: u32,
}

impl Backoff {
    /// A worker restarted after it failed or stalled (the relay, the Kafka
    /// consumers): 1 s doubling to 30 s, reset once it made progress.
    pub const RESTART: Self = Self::new(Duration::from_secs(1), Duration::from_secs(30));

    /// A command that lost a race for its stream (optimistic concurrency):
    /// up to 2, 4, 8 ... ms, at most 50 ms, spread over the whole range, and
    /// decided at most 8 times.
    pub const CONTENTION: Self = Self::new(Duration::from_millis(2), Duration::from_millis(50))
        .with_jitter(Jitter::Full)
        .with_attempts(8);

    /// Waiting for a dependency to answer at start-up (PostgreSQL while it
    /// starts, a schema not migrated yet): a fixed pace, so the log says
    /// regularly what is awaited.
    pub const fn steady(every: Duration) -> Self {
        Self::new(every, every)
    }

    /// Doubling from `base` to `max`, without jitter, never giving up.
    pub const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: Jitter::None,
            attempts: u32::MAX,
        }
    }

    pub const fn with_jitter(self, jitter: Jitter) -> Self {
        Self { jitter, ..self }
    }

    pub const fn with_attempts(self, attempts: u32) -> Self {
        Self { attempts, ..self }
    }

    /// The delay after attempt `attempt` (1 for the first) failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(16);
        let delay = self.base.saturating_mul(1 << doublings).min(self.max);
        match self.jitter {
            Jitter::None => delay,
            Jitter::Full if delay.is_zero() => delay,
            Jitter::Full => rand::rng().random_range(Duration::ZERO..delay),
            Jitter::Half => delay.mul_f64(rand::rng().random_range(0.5..=1.0)),
        }
    }

    /// Sleeps [`Backoff::delay`] of `attempt`.
    pub async fn sleep(&self, attempt: u32) {
        tokio::time::sleep(self.delay(attempt)).await;
    }

    /// The attempts a caller makes, numbered from 1.
    pub fn attempts(&self) -> std::ops::RangeInclusive<u32> {
        1..=self.attempts
    }

    /// A counter over this policy, for a loop that retries until it is
    /// told it made progress.
    pub fn retries(self) -> Retries {
        Retries {
            policy: self,
            failed: 0,
        }
    }
}

/// The attempts that failed in a row under a [`Backoff`].
#[derive(Debug, Clone)]
pub struct Retries {
    policy: Backoff,
    failed: u32,
}

impl Retries {
    /// Counts a failure and says how long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.failed = self.failed.saturating_add(1);
        self.policy.delay(self.failed)
    }

    /// Progress was made: the next failure waits `base` again.
    pub fn reset(&mut self) {
        self.failed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_doubles_up_to_its_bound_and_resets() {
        let mut retries = Backoff::new(Duration::from_secs(1), Duration::from_secs(5)).retries();
        let delays: Vec<u64> = (0..5).map(|_| retries.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        retries.reset();
        assert_eq!(retries.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn contention_spreads_each_delay_below_its_ceiling() {
        for (attempt, ceiling_ms) in [(1, 2), (2, 4), (3, 8), (5, 32), (6, 50), (40, 50)] {
            for _ in 0..100 {
                let delay = Backoff::CONTENTION.delay(attempt);
                assert!(delay < Duration::from_millis(ceiling_ms), "{delay:?}");
            }
        }
        assert_eq!(Backoff::CONTENTION.attempts().count(), 8);
    }

    #[test]
    fn half_jitter_waits_at_least_half_the_delay() {
        let policy = Backoff::new(Duration::from_millis(100), Duration::from_secs(1))
            .with_jitter(Jitter::Half);
        for _ in 0..100 {
            let delay = policy.delay(3);
            assert!(
                (Duration::from_millis(200)..=Duration::from_millis(400)).contains(&delay),
                "{delay:?}"
            );
        }
        let capped = policy.delay(100);
        assert!(
            (Duration::from_millis(500)..=Duration::from_secs(1)).contains(&capped),
            "{capped:?}"
        );
    }
}
