//! Persistence seams the engine implements over its database (`ExecutionRecorder`,
//! `BreakerStateStore`), their records, and in-memory implementations for tests.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::breaker::BreakerState;
use crate::outcome::FailureReason;
use crate::workspace::LogPaths;

/// Error type of the persistence traits (the implementer's error, boxed).
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// The start of an agent execution (`agent_executions` row).
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionStart {
    /// Incident (= execution id).
    pub incident_id: String,
    /// Cluster.
    pub cluster: String,
    /// Docker container id.
    pub container_id: String,
    /// Container name (`nightcrier-agent-<incident id>`).
    pub container_name: String,
    /// Image reference.
    pub image: String,
    /// Profile name.
    pub profile: String,
    /// When the container started.
    pub started_at: DateTime<Utc>,
    /// Captured logs.
    pub log_paths: LogPaths,
}

/// The end of an agent execution.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionFinish {
    /// Incident.
    pub incident_id: String,
    /// Profile name (so a finish without a start, e.g. a missing image, can be upserted).
    pub profile: String,
    /// Image reference.
    pub image: String,
    /// When the run started (same value as in the start record).
    pub started_at: DateTime<Utc>,
    /// Docker container id (empty when the container never existed).
    pub container_id: String,
    /// Exit code, when the container exited.
    pub exit_code: Option<i64>,
    /// When the run ended.
    pub completed_at: DateTime<Utc>,
    /// Why it failed, if it did.
    pub failure: Option<FailureReason>,
    /// Whether a log file hit its cap.
    pub logs_capped: bool,
}

/// Records agent executions; the engine implements it over `agent_executions`.
pub trait ExecutionRecorder: Send + Sync {
    /// Called once the container has started.
    fn record_start<'a>(
        &'a self,
        start: &'a ExecutionStart,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Called once the run is over and validated.
    fn record_finish<'a>(
        &'a self,
        finish: &'a ExecutionFinish,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Loads and saves circuit-breaker state per scope (usually the cluster name).
pub trait BreakerStateStore: Send + Sync {
    /// The saved state, if any.
    fn load<'a>(
        &'a self,
        scope: &'a str,
    ) -> BoxFuture<'a, Result<Option<BreakerState>, StoreError>>;
    /// Saves the state.
    fn save<'a>(
        &'a self,
        scope: &'a str,
        state: &'a BreakerState,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// An `ExecutionRecorder` that keeps everything in memory.
#[derive(Debug, Default)]
pub struct InMemoryRecorder {
    starts: Mutex<Vec<ExecutionStart>>,
    finishes: Mutex<Vec<ExecutionFinish>>,
}

impl InMemoryRecorder {
    /// Recorded starts, in order.
    pub fn starts(&self) -> Vec<ExecutionStart> {
        self.starts
            .lock()
            .expect("recorder lock is never poisoned")
            .clone()
    }

    /// Recorded finishes, in order.
    pub fn finishes(&self) -> Vec<ExecutionFinish> {
        self.finishes
            .lock()
            .expect("recorder lock is never poisoned")
            .clone()
    }
}

impl ExecutionRecorder for InMemoryRecorder {
    fn record_start<'a>(
        &'a self,
        start: &'a ExecutionStart,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.starts
            .lock()
            .expect("recorder lock is never poisoned")
            .push(start.clone());
        Box::pin(async { Ok(()) })
    }

    fn record_finish<'a>(
        &'a self,
        finish: &'a ExecutionFinish,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.finishes
            .lock()
            .expect("recorder lock is never poisoned")
            .push(finish.clone());
        Box::pin(async { Ok(()) })
    }
}

/// A `BreakerStateStore` that keeps state in memory (share it across breakers to simulate a
/// restart).
#[derive(Debug, Default)]
pub struct InMemoryBreakerStore {
    states: Mutex<HashMap<String, BreakerState>>,
}

impl BreakerStateStore for InMemoryBreakerStore {
    fn load<'a>(
        &'a self,
        scope: &'a str,
    ) -> BoxFuture<'a, Result<Option<BreakerState>, StoreError>> {
        let state = self
            .states
            .lock()
            .expect("store lock is never poisoned")
            .get(scope)
            .cloned();
        Box::pin(async move { Ok(state) })
    }

    fn save<'a>(
        &'a self,
        scope: &'a str,
        state: &'a BreakerState,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.states
            .lock()
            .expect("store lock is never poisoned")
            .insert(scope.to_owned(), state.clone());
        Box::pin(async { Ok(()) })
    }
}
