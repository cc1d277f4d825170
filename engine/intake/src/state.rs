//! What each feed is doing, kept in memory for `nightcrier clusters` and the HTTP API: phase,
//! since when, backoff, the last error, and how many events it received.
//!
//! Each feed owns a [`FeedHandle`] and is its only writer, so the lock is never contended on the
//! hot path; readers take a [`FeedRegistry::snapshot`].

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::FeedKind;

/// Where a feed is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedPhase {
    /// Opening a session (initialize, stream, log level).
    Connecting,
    /// Waiting for the subscribe call to answer.
    Subscribing,
    /// Receiving.
    Active,
    /// Waiting before the next attempt.
    Backoff,
    /// Held by another replica (`owner`).
    Standby,
    /// Not started, with the reason in `last_error` (its source plugin was refused, …).
    Disabled,
    /// Stopped by shutdown.
    Stopped,
}

impl FeedPhase {
    /// The snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedPhase::Connecting => "connecting",
            FeedPhase::Subscribing => "subscribing",
            FeedPhase::Active => "active",
            FeedPhase::Backoff => "backoff",
            FeedPhase::Standby => "standby",
            FeedPhase::Disabled => "disabled",
            FeedPhase::Stopped => "stopped",
        }
    }
}

/// The state of one feed.
#[derive(Clone, Debug, Serialize)]
pub struct FeedState {
    /// The cluster for MCP feeds, the source id for webhook and poll feeds.
    pub name: String,
    /// The transport.
    pub kind: FeedKind,
    /// The source plugin decoding its messages.
    pub source: String,
    /// The configured cluster, when the feed has one.
    pub cluster: Option<String>,
    /// The server URL (without credentials) or the webhook path.
    pub endpoint: String,
    /// Current phase.
    pub phase: FeedPhase,
    /// The replica running the feed, when replicas share the fleet.
    pub owner: Option<String>,
    /// When the phase began.
    pub phase_since: DateTime<Utc>,
    /// When the current subscription became active.
    pub active_since: Option<DateTime<Utc>>,
    /// While the feed runs here but is not active (connecting, subscribing, backing off): since
    /// when, across those phases (it is reset only by becoming active, standby, disabled or
    /// stopped). What `feed-down` alerts measure.
    pub down_since: Option<DateTime<Utc>>,
    /// When the next attempt is due, while backing off.
    pub backoff_until: Option<DateTime<Utc>>,
    /// Failed attempts since the feed was last healthy.
    pub failures: u32,
    /// Sessions established since start.
    pub sessions: u64,
    /// The last failure, as the feed saw it (untrusted text from the server: escape to show).
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// The upstream subscription id, while subscribed.
    pub subscription_id: Option<String>,
    /// `subscription_error` notifications received.
    pub subscription_errors: u64,
    /// The last `subscription_error`, as sent.
    pub last_subscription_error: Option<String>,
    /// Messages received.
    pub events_received: u64,
    /// When the last one arrived.
    pub last_event_at: Option<DateTime<Utc>>,
}

impl FeedState {
    /// A feed that has not started.
    pub fn new(
        name: impl Into<String>,
        kind: FeedKind,
        source: impl Into<String>,
        cluster: Option<String>,
        endpoint: impl Into<String>,
    ) -> Self {
        let now = Utc::now();
        Self {
            name: name.into(),
            kind,
            source: source.into(),
            cluster,
            endpoint: endpoint.into(),
            phase: FeedPhase::Connecting,
            owner: None,
            phase_since: now,
            active_since: None,
            down_since: Some(now),
            backoff_until: None,
            failures: 0,
            sessions: 0,
            last_error: None,
            last_error_at: None,
            subscription_id: None,
            subscription_errors: 0,
            last_subscription_error: None,
            events_received: 0,
            last_event_at: None,
        }
    }
}

/// The writer side of one feed's state.
#[derive(Clone, Debug)]
pub struct FeedHandle(Arc<Mutex<FeedState>>);

impl FeedHandle {
    fn update<T>(&self, change: impl FnOnce(&mut FeedState) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; the state is still usable.
        let mut state = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut state)
    }

    /// A copy of the state.
    pub fn get(&self) -> FeedState {
        self.update(|state| state.clone())
    }

    fn set_phase(state: &mut FeedState, phase: FeedPhase) {
        if state.phase != phase {
            state.phase = phase;
            state.phase_since = Utc::now();
        }
        state.down_since = match phase {
            FeedPhase::Connecting | FeedPhase::Subscribing | FeedPhase::Backoff => {
                state.down_since.or(Some(state.phase_since))
            }
            FeedPhase::Active | FeedPhase::Standby | FeedPhase::Disabled | FeedPhase::Stopped => {
                None
            }
        };
    }

    /// Opening a session.
    pub fn connecting(&self) {
        self.update(|state| {
            Self::set_phase(state, FeedPhase::Connecting);
            state.backoff_until = None;
        });
    }

    /// Session open, subscribing.
    pub fn subscribing(&self) {
        self.update(|state| {
            Self::set_phase(state, FeedPhase::Subscribing);
            state.sessions += 1;
        });
    }

    /// Subscribed and receiving.
    pub fn active(&self, subscription_id: Option<String>) {
        self.update(|state| {
            Self::set_phase(state, FeedPhase::Active);
            state.active_since = Some(Utc::now());
            state.subscription_id = subscription_id;
            state.failures = 0;
        });
    }

    /// Poll feeds: the last fetch worked.
    pub fn healthy(&self) {
        self.update(|state| {
            if state.phase != FeedPhase::Active {
                state.active_since = Some(Utc::now());
            }
            Self::set_phase(state, FeedPhase::Active);
            state.failures = 0;
        });
    }

    /// A failure; the next attempt comes after `delay`.
    pub fn backoff(&self, error: &str, delay: Duration, failures: u32) {
        self.update(|state| {
            Self::set_phase(state, FeedPhase::Backoff);
            state.active_since = None;
            state.subscription_id = None;
            state.failures = failures;
            state.last_error = Some(error.to_owned());
            state.last_error_at = Some(Utc::now());
            state.backoff_until = chrono::Duration::from_std(delay)
                .ok()
                .map(|delay| Utc::now() + delay);
        });
    }

    /// Records a failure that does not change the phase (a failed poll, a refused message…).
    pub fn error(&self, error: &str) {
        self.update(|state| {
            state.last_error = Some(error.to_owned());
            state.last_error_at = Some(Utc::now());
        });
    }

    /// The feed will not run; `reason` says why.
    pub fn disabled(&self, reason: &str) {
        self.update(|state| {
            Self::set_phase(state, FeedPhase::Disabled);
            state.last_error = Some(reason.to_owned());
            state.last_error_at = Some(Utc::now());
        });
    }

    /// Another replica holds the feed (`owner`, when known).
    pub fn standby(&self, owner: Option<&str>) {
        self.update(|state| {
            Self::set_phase(state, FeedPhase::Standby);
            state.owner = owner.map(str::to_owned);
            state.active_since = None;
            state.backoff_until = None;
            state.subscription_id = None;
        });
    }

    /// This replica runs the feed.
    pub fn owned_by(&self, owner: &str) {
        self.update(|state| state.owner = Some(owner.to_owned()));
    }

    /// Stopped by shutdown.
    pub fn stopped(&self) {
        self.update(|state| {
            Self::set_phase(state, FeedPhase::Stopped);
            state.active_since = None;
            state.backoff_until = None;
        });
    }

    /// A `subscription_error` notification arrived.
    pub fn subscription_error(&self, text: &str) {
        self.update(|state| {
            state.subscription_errors += 1;
            state.last_subscription_error = Some(text.to_owned());
        });
    }

    /// `count` messages arrived at `at`.
    pub fn received(&self, count: u64, at: DateTime<Utc>) {
        self.update(|state| {
            state.events_received += count;
            state.last_event_at = Some(at);
        });
    }
}

/// Every feed's state, for readers.
#[derive(Clone, Debug, Default)]
pub struct FeedRegistry(Arc<RwLock<Vec<FeedHandle>>>);

impl FeedRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a feed and returns its writer.
    pub fn register(&self, state: FeedState) -> FeedHandle {
        let handle = FeedHandle(Arc::new(Mutex::new(state)));
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(handle.clone());
        handle
    }

    /// Every feed's state, in registration order.
    pub fn snapshot(&self) -> Vec<FeedState> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(FeedHandle::get)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feed_goes_through_its_phases() {
        let registry = FeedRegistry::new();
        let feed = registry.register(FeedState::new(
            "prod",
            FeedKind::Mcp,
            "kubernetes-mcp",
            Some("prod".into()),
            "http://kms:8080/mcp",
        ));
        feed.connecting();
        feed.subscribing();
        feed.active(Some("sub-1".into()));
        feed.received(3, Utc::now());
        let state = &registry.snapshot()[0];
        assert_eq!(state.phase, FeedPhase::Active);
        assert_eq!(state.sessions, 1);
        assert_eq!(state.events_received, 3);
        assert_eq!(state.subscription_id.as_deref(), Some("sub-1"));
        feed.backoff("session not found", Duration::from_secs(2), 1);
        let state = &registry.snapshot()[0];
        assert_eq!(state.phase, FeedPhase::Backoff);
        assert!(state.backoff_until.is_some());
        assert_eq!(state.subscription_id, None);
        assert_eq!(state.last_error.as_deref(), Some("session not found"));
    }

    #[test]
    fn down_since_spans_every_phase_until_the_feed_is_active_again() {
        let registry = FeedRegistry::new();
        let feed = registry.register(FeedState::new(
            "prod",
            FeedKind::Mcp,
            "kubernetes-mcp",
            Some("prod".into()),
            "http://kms:8080/mcp",
        ));
        let started = registry.snapshot()[0].down_since.unwrap();
        feed.subscribing();
        feed.backoff("refused", Duration::from_millis(10), 1);
        feed.connecting();
        assert_eq!(registry.snapshot()[0].down_since, Some(started));
        feed.active(None);
        assert_eq!(registry.snapshot()[0].down_since, None);
        feed.backoff("stream ended", Duration::from_millis(10), 1);
        let again = registry.snapshot()[0].down_since.unwrap();
        assert!(again >= started);
        feed.connecting();
        assert_eq!(registry.snapshot()[0].down_since, Some(again));
        feed.standby(Some("replica-2"));
        assert_eq!(registry.snapshot()[0].down_since, None);
    }
}
