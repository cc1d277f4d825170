//! Output validation (§5.1) and the typed result of a run.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::breaker::BreakerEvent;
use crate::mask::SecretMasker;
use crate::profile::ProfileProblem;
use crate::workspace::LogPaths;

/// Why a run counts as failed. `Display` keeps the original's reason texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureReason {
    /// nightcrier could not run or supervise the container (image missing, Docker error).
    Harness(String),
    /// The agent ran past its timeout and was stopped.
    TimedOut {
        /// The configured timeout.
        timeout: Duration,
    },
    /// The agent exited with a non-zero code.
    NonZeroExit(i64),
    /// `output/investigation.md` does not exist.
    ReportMissing,
    /// `output/investigation.md` could not be inspected.
    ReportUnreadable(String),
    /// `output/investigation.md` is smaller than the minimum.
    ReportTooSmall {
        /// Actual size.
        size: u64,
        /// Required size.
        min: u64,
    },
    /// The container disappeared while nightcrier was not watching (seen during recovery).
    ContainerLost,
    /// The agent wrote more than its cap under `output/`; it was killed and `output/` emptied.
    OutputTooLarge {
        /// Bytes found when the cap was noticed.
        size: u64,
        /// The profile's cap.
        limit: u64,
    },
    /// The profile cannot run (a secret's source or the image is missing): no container was
    /// started. A configuration problem; the incident is not at fault.
    NotReady(ProfileProblem),
}

impl FailureReason {
    /// The reason with any secret value in its texts masked.
    pub(crate) fn masked(self, masker: &SecretMasker) -> Self {
        match self {
            Self::Harness(text) => Self::Harness(masker.mask_str(&text).into_owned()),
            Self::ReportUnreadable(text) => {
                Self::ReportUnreadable(masker.mask_str(&text).into_owned())
            }
            other => other,
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Harness(error) => write!(formatter, "agent execution error: {error}"),
            Self::TimedOut { timeout } => {
                write!(
                    formatter,
                    "agent timed out after {} seconds",
                    timeout.as_secs()
                )
            }
            Self::NonZeroExit(code) => write!(formatter, "agent exited with non-zero code: {code}"),
            Self::ReportMissing => formatter.write_str("investigation.md file not found"),
            Self::ReportUnreadable(error) => {
                write!(formatter, "error checking investigation.md: {error}")
            }
            Self::ReportTooSmall { size, min } => write!(
                formatter,
                "investigation.md too small: {size} bytes (expected >= {min})"
            ),
            Self::ContainerLost => formatter.write_str("agent container disappeared"),
            Self::OutputTooLarge { size, limit } => write!(
                formatter,
                "agent wrote {size} bytes under output/, over the cap of {limit} bytes; it was stopped and output/ emptied"
            ),
            Self::NotReady(problem) => write!(formatter, "agent could not start: {problem}"),
        }
    }
}

/// Final status of the incident, as written to `incident.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentStatus {
    /// A valid report exists.
    Resolved,
    /// The agent failed (see the reason).
    AgentFailed,
}

impl IncidentStatus {
    /// The status string (`resolved` / `agent_failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::AgentFailed => "agent_failed",
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutcome {
    /// Incident.
    pub incident_id: String,
    /// Cluster.
    pub cluster: String,
    /// Container id (empty if none was created).
    pub container_id: String,
    /// Image.
    pub image: String,
    /// Exit code, when the container exited on its own or was stopped.
    pub exit_code: Option<i64>,
    /// When the container started (or the run was attempted).
    pub started_at: DateTime<Utc>,
    /// When the container's `create` call was made; `None` when no container was created or
    /// the run was re-attached after a restart. What the dispatch benchmark times.
    pub create_called_at: Option<DateTime<Utc>>,
    /// When the run ended.
    pub completed_at: DateTime<Utc>,
    /// `Resolved` or `AgentFailed`.
    pub status: IncidentStatus,
    /// Why it failed.
    pub failure: Option<FailureReason>,
    /// Captured logs.
    pub log_paths: LogPaths,
    /// Whether a log file hit its cap.
    pub logs_capped: bool,
    /// A degraded/recovered alert to deliver, at most one per run.
    pub breaker_event: Option<BreakerEvent>,
    /// Whether this run was re-attached after a restart.
    pub recovered: bool,
    /// `output/investigation.md` as the agent left it, with every secret nightcrier gave the
    /// agent masked; `None` when there is no such file.
    pub report: Option<String>,
}

/// Checks the report: exists and is at least `min_bytes` long. Blocking-free.
pub async fn validate_report(report: &Path, min_bytes: u64) -> Option<FailureReason> {
    match tokio::fs::metadata(report).await {
        Ok(metadata) if !metadata.is_file() => Some(FailureReason::ReportUnreadable(
            "not a regular file".to_owned(),
        )),
        Ok(metadata) if metadata.len() < min_bytes => Some(FailureReason::ReportTooSmall {
            size: metadata.len(),
            min: min_bytes,
        }),
        Ok(_) => None,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Some(FailureReason::ReportMissing)
        }
        Err(error) => Some(FailureReason::ReportUnreadable(error.to_string())),
    }
}

/// The §5.1 order: harness error, timeout, exit code, then the report.
pub(crate) async fn judge(
    harness_failure: Option<FailureReason>,
    exit_code: Option<i64>,
    report: &Path,
    min_bytes: u64,
) -> Option<FailureReason> {
    if let Some(failure) = harness_failure {
        return Some(failure);
    }
    match exit_code {
        Some(0) => validate_report(report, min_bytes).await,
        Some(code) => Some(FailureReason::NonZeroExit(code)),
        None => Some(FailureReason::Harness("no exit code".to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn validation_follows_the_original_order_and_texts() {
        let directory = tempfile::tempdir().unwrap();
        let report = directory.path().join("investigation.md");
        assert_eq!(
            judge(None, Some(0), &report, 100).await,
            Some(FailureReason::ReportMissing)
        );
        std::fs::write(&report, "short").unwrap();
        let failure = judge(None, Some(0), &report, 100).await.unwrap();
        assert_eq!(
            failure.to_string(),
            "investigation.md too small: 5 bytes (expected >= 100)"
        );
        std::fs::write(&report, "x".repeat(100)).unwrap();
        assert_eq!(judge(None, Some(0), &report, 100).await, None);
        assert_eq!(
            judge(None, Some(3), &report, 100)
                .await
                .unwrap()
                .to_string(),
            "agent exited with non-zero code: 3"
        );
        let timeout = FailureReason::TimedOut {
            timeout: Duration::from_secs(5),
        };
        assert_eq!(
            judge(Some(timeout.clone()), Some(137), &report, 100).await,
            Some(timeout)
        );
        std::fs::create_dir(directory.path().join("dir.md")).unwrap();
        assert!(matches!(
            validate_report(&directory.path().join("dir.md"), 1).await,
            Some(FailureReason::ReportUnreadable(_))
        ));
    }
}
