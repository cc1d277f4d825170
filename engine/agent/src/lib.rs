//! Runs the triage agent for one incident in a hardened, always-removed Docker container.
//!
//! Module map:
//! - [`profile`]: agent profiles (`AgentProfileConfig` → `AgentProfile`), defaults for claude,
//!   codex, gemini and goose, and the [`Secret`] newtype for API keys.
//! - [`incident`]: the incident input (`incident.json`, camelCase) and cluster permissions.
//! - [`workspace`]: the per-incident directory, its files, modes and ownership.
//! - [`runner`]: [`DockerRunner`], the bollard-driven life cycle: ensure image, create, start,
//!   stream logs, wait with timeout, stop, kill, remove; and [`DockerRunner::recover`].
//! - [`logs`]: capped log files, the live broadcast, and [`tail`].
//! - [`mask`]: [`SecretMasker`], which masks every secret value handed to the agent (and its
//!   base64 forms) in everything captured from it: logs, live output, the report, errors.
//! - [`outcome`]: output validation and the typed [`FailureReason`].
//! - [`breaker`]: the circuit breaker over consecutive failures and its persisted state.
//! - [`record`]: the persistence traits the engine implements (`ExecutionRecorder`,
//!   `BreakerStateStore`) and in-memory implementations.
//!
//! The crate knows nothing of the database or the queue.

pub mod breaker;
pub mod error;
pub mod incident;
pub mod logs;
pub mod mask;
pub mod outcome;
pub mod profile;
pub mod record;
pub mod runner;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod workspace;

mod permissions;
mod secret;

pub use breaker::{BreakerConfig, BreakerEvent, BreakerState, CircuitBreaker};
pub use error::AgentError;
pub use incident::{ClusterPermissions, IncidentInput, PermissionsSource};
pub use logs::{LogChunk, LogStream, tail};
pub use mask::{NamedSecret, SecretMasker, StreamMasker};
pub use outcome::{AgentOutcome, FailureReason, IncidentStatus};
pub use permissions::{ProbedPermissions, probe_cluster_permissions};
pub use profile::{
    AgentProfile, AgentProfileConfig, BUILT_IN_CLIS, NetworkMode, ProfileError, ProfileProblem,
    parse_size,
};
pub use record::{
    BreakerStateStore, ExecutionFinish, ExecutionRecorder, ExecutionStart, InMemoryBreakerStore,
    InMemoryRecorder, StoreError,
};
pub use runner::{AgentRequest, DockerRunner, PendingRun, RecoveryReport, RunnerConfig};
pub use secret::Secret;
pub use workspace::{LogPaths, Workspace};
