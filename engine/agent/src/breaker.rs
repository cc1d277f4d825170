//! Circuit breaker over consecutive agent failures: one degraded alert when the threshold is
//! reached, one recovered alert on the next success, state persisted per scope.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::record::BreakerStateStore;

/// Breaker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (default 3, at least 1).
    pub failure_threshold: u32,
    /// How many recent reasons to keep (default 5).
    pub max_reasons: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 3,
            max_reasons: 5,
        }
    }
}

/// Persisted breaker state (serialisable so the engine can store it as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerState {
    /// Threshold reached and not yet recovered.
    pub open: bool,
    /// Consecutive failures.
    pub consecutive_failures: u32,
    /// First failure of the current streak.
    pub first_failure_at: Option<DateTime<Utc>>,
    /// Last failure.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Whether the degraded alert was emitted for this open period.
    pub alerted: bool,
    /// The most recent failure reasons, oldest first.
    pub recent_reasons: Vec<String>,
}

/// An alert for the engine to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakerEvent {
    /// The threshold was reached.
    Degraded {
        /// Breaker scope (cluster).
        scope: String,
        /// Failures so far.
        consecutive_failures: u32,
        /// First failure of the streak.
        first_failure_at: DateTime<Utc>,
        /// Latest failure.
        last_failure_at: DateTime<Utc>,
        /// Recent reasons, oldest first.
        recent_reasons: Vec<String>,
    },
    /// The first success after a degraded alert.
    Recovered {
        /// Breaker scope (cluster).
        scope: String,
        /// Failures in the streak.
        failures: u32,
        /// First failure of the streak.
        down_since: DateTime<Utc>,
        /// When the success happened.
        recovered_at: DateTime<Utc>,
    },
}

/// The breaker; one instance per runner, with state per scope.
pub struct CircuitBreaker {
    config: BreakerConfig,
    store: Arc<dyn BreakerStateStore>,
    states: Mutex<HashMap<String, BreakerState>>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CircuitBreaker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl CircuitBreaker {
    /// A breaker backed by `store`.
    pub fn new(config: BreakerConfig, store: Arc<dyn BreakerStateStore>) -> Self {
        Self {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                max_reasons: config.max_reasons.max(1),
            },
            store,
            states: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a failure; returns the degraded alert exactly once per open period.
    pub async fn record_failure(&self, scope: &str, reason: &str) -> Option<BreakerEvent> {
        let now = Utc::now();
        self.update(scope, |state, config| {
            if state.consecutive_failures == 0 {
                state.first_failure_at = Some(now);
            }
            state.consecutive_failures = state.consecutive_failures.saturating_add(1);
            state.last_failure_at = Some(now);
            state.recent_reasons.push(reason.to_owned());
            let excess = state
                .recent_reasons
                .len()
                .saturating_sub(config.max_reasons);
            state.recent_reasons.drain(..excess);
            if state.consecutive_failures >= config.failure_threshold {
                state.open = true;
            }
            if state.open && !state.alerted {
                state.alerted = true;
                return Some(BreakerEvent::Degraded {
                    scope: scope.to_owned(),
                    consecutive_failures: state.consecutive_failures,
                    first_failure_at: state.first_failure_at.unwrap_or(now),
                    last_failure_at: now,
                    recent_reasons: state.recent_reasons.clone(),
                });
            }
            None
        })
        .await
    }

    /// Counts a success; returns the recovered alert if a degraded one was sent.
    pub async fn record_success(&self, scope: &str) -> Option<BreakerEvent> {
        let now = Utc::now();
        self.update(scope, |state, _| {
            let event =
                (state.open && state.alerted && state.consecutive_failures > 0).then(|| {
                    BreakerEvent::Recovered {
                        scope: scope.to_owned(),
                        failures: state.consecutive_failures,
                        down_since: state.first_failure_at.unwrap_or(now),
                        recovered_at: now,
                    }
                });
            *state = BreakerState::default();
            event
        })
        .await
    }

    /// The current state of `scope`.
    pub async fn state(&self, scope: &str) -> BreakerState {
        self.update(scope, |_, _| None).await;
        self.states
            .lock()
            .await
            .get(scope)
            .cloned()
            .unwrap_or_default()
    }

    async fn update(
        &self,
        scope: &str,
        change: impl FnOnce(&mut BreakerState, &BreakerConfig) -> Option<BreakerEvent>,
    ) -> Option<BreakerEvent> {
        let mut states = self.states.lock().await;
        if !states.contains_key(scope) {
            let loaded = match self.store.load(scope).await {
                Ok(state) => state.unwrap_or_default(),
                Err(error) => {
                    tracing::error!(cluster = scope, error = %error, "failed to load circuit breaker state");
                    BreakerState::default()
                }
            };
            states.insert(scope.to_owned(), loaded);
        }
        let state = states.get_mut(scope).expect("state was inserted above");
        let before = state.clone();
        let event = change(state, &self.config);
        if *state != before
            && let Err(error) = self.store.save(scope, state).await
        {
            tracing::error!(cluster = scope, error = %error, "failed to save circuit breaker state");
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::InMemoryBreakerStore;

    #[tokio::test]
    async fn one_degraded_and_one_recovered_alert_per_streak() {
        let store = Arc::new(InMemoryBreakerStore::default());
        let breaker = CircuitBreaker::new(BreakerConfig::default(), store);
        assert_eq!(breaker.record_failure("c1", "a").await, None);
        assert_eq!(breaker.record_failure("c1", "b").await, None);
        let Some(BreakerEvent::Degraded {
            consecutive_failures,
            recent_reasons,
            ..
        }) = breaker.record_failure("c1", "c").await
        else {
            panic!("third failure must alert");
        };
        assert_eq!(consecutive_failures, 3);
        assert_eq!(recent_reasons, ["a", "b", "c"]);
        assert_eq!(breaker.record_failure("c1", "d").await, None);
        assert_eq!(breaker.record_failure("c2", "other cluster").await, None);
        assert!(matches!(
            breaker.record_success("c1").await,
            Some(BreakerEvent::Recovered { failures: 4, .. })
        ));
        assert_eq!(breaker.record_success("c1").await, None);
        assert_eq!(breaker.state("c1").await, BreakerState::default());
    }

    #[tokio::test]
    async fn state_survives_a_restart_through_the_store() {
        let store = Arc::new(InMemoryBreakerStore::default());
        let first = CircuitBreaker::new(BreakerConfig::default(), store.clone());
        first.record_failure("c1", "a").await;
        first.record_failure("c1", "b").await;
        let second = CircuitBreaker::new(BreakerConfig::default(), store.clone());
        assert!(matches!(
            second.record_failure("c1", "c").await,
            Some(BreakerEvent::Degraded { .. })
        ));
        let third = CircuitBreaker::new(BreakerConfig::default(), store);
        assert_eq!(
            third.record_failure("c1", "d").await,
            None,
            "alert already sent"
        );
        assert!(matches!(
            third.record_success("c1").await,
            Some(BreakerEvent::Recovered { .. })
        ));
    }

    #[tokio::test]
    async fn success_before_threshold_resets_silently_and_reasons_are_bounded() {
        let breaker = CircuitBreaker::new(
            BreakerConfig {
                failure_threshold: 10,
                max_reasons: 2,
            },
            Arc::new(InMemoryBreakerStore::default()),
        );
        for reason in ["a", "b", "c"] {
            breaker.record_failure("c1", reason).await;
        }
        assert_eq!(breaker.state("c1").await.recent_reasons, ["b", "c"]);
        assert_eq!(breaker.record_success("c1").await, None);
        assert_eq!(breaker.state("c1").await.consecutive_failures, 0);
    }
}
