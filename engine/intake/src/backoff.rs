//! Exponential backoff with jitter, one per feed: waits double from `initial` to `max`, each
//! spread by ±`jitter` so that feeds failing together (every server restarted at once) do not
//! retry together; a feed that stayed healthy for `reset_after` starts again from `initial`.

use std::time::Duration;

use rand::Rng;

/// How a feed backs off after failures.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// First wait.
    pub initial: Duration,
    /// Longest wait (before jitter).
    pub max: Duration,
    /// Spread of each wait, as a fraction (0.2 = ±20 %).
    pub jitter: f64,
    /// A session that stayed up this long resets the backoff.
    pub reset_after: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.2,
            reset_after: Duration::from_secs(60),
        }
    }
}

/// The backoff state of one feed.
#[derive(Clone, Debug)]
pub struct Backoff {
    config: BackoffConfig,
    failures: u32,
}

impl Backoff {
    /// A backoff that has seen no failure.
    pub fn new(config: BackoffConfig) -> Self {
        Self {
            config,
            failures: 0,
        }
    }

    /// The wait before the next attempt, counting one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.base(self.failures);
        self.failures = self.failures.saturating_add(1);
        let jitter = self.config.jitter.clamp(0.0, 1.0);
        let factor = if jitter > 0.0 {
            rand::rng().random_range((1.0 - jitter)..=(1.0 + jitter))
        } else {
            1.0
        };
        base.mul_f64(factor)
    }

    /// The wait without jitter after `failures` failures.
    fn base(&self, failures: u32) -> Duration {
        let doubled = self
            .config
            .initial
            .checked_mul(2u32.saturating_pow(failures.min(31)))
            .unwrap_or(self.config.max);
        doubled.min(self.config.max)
    }

    /// Forgets earlier failures.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The configuration.
    pub fn config(&self) -> &BackoffConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_within_the_jitter() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        let expected = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for secs in expected {
            let delay = backoff.next_delay().as_secs_f64();
            let base = secs as f64;
            assert!(
                (base * 0.8..=base * 1.2).contains(&delay),
                "{delay} not within ±20 % of {base}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(1200));
    }

    #[test]
    fn jitter_spreads_feeds_that_fail_together() {
        let delays: Vec<Duration> = (0..200)
            .map(|_| Backoff::new(BackoffConfig::default()).next_delay())
            .collect();
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > Duration::from_millis(200), "{min:?}..{max:?}");
    }

    #[test]
    fn many_failures_never_overflow() {
        let mut backoff = Backoff::new(BackoffConfig::default());
        for _ in 0..1000 {
            assert!(backoff.next_delay() <= Duration::from_secs(72));
        }
    }
}
