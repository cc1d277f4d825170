//! The crate-boundary error type; every message names the incident, container or image involved.

use std::path::PathBuf;

/// Errors that stop an agent run from being prepared or supervised.
///
/// Failures of the agent itself are not errors: they are a [`crate::FailureReason`] in the
/// returned [`crate::AgentOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The Docker engine could not be reached.
    #[error("docker engine is unavailable: {source}")]
    DockerUnavailable {
        /// The client error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The image is not present and could not be pulled.
    #[error("image {image} is not present locally and could not be pulled: {reason}")]
    ImageUnavailable {
        /// The image reference from the profile.
        image: String,
        /// Why the pull failed.
        reason: String,
    },
    /// A Docker call about one container failed.
    #[error(
        "docker {operation} failed for incident {incident_id} (container {container}): {source}"
    )]
    Docker {
        /// What was being done (`create`, `start`, `wait`, ...).
        operation: &'static str,
        /// The incident whose container it is.
        incident_id: String,
        /// Container name or id.
        container: String,
        /// The client error.
        #[source]
        source: bollard::errors::Error,
    },
    /// Listing containers during recovery failed.
    #[error("failed to list containers of instance {instance_id}: {source}")]
    List {
        /// This nightcrier instance.
        instance_id: String,
        /// The client error.
        #[source]
        source: bollard::errors::Error,
    },
    /// A workspace file or directory could not be written.
    #[error("failed to prepare workspace {path} for incident {incident_id}: {source}")]
    Workspace {
        /// The incident.
        incident_id: String,
        /// The path involved.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The incident id cannot be used as a directory or container name.
    #[error(
        "invalid incident id {incident_id:?}: only ASCII letters, digits, '-' and '_' (1-64) are allowed"
    )]
    InvalidIncidentId {
        /// The rejected id.
        incident_id: String,
    },
    /// The incident has no workspace (for `tail`).
    #[error("no agent logs for incident {incident_id} at {path}")]
    NoLogs {
        /// The incident.
        incident_id: String,
        /// The log file looked for.
        path: PathBuf,
    },
    /// Reading a log file for `tail` failed.
    #[error("failed to read logs of incident {incident_id}: {source}")]
    Tail {
        /// The incident.
        incident_id: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Checks that an incident id is safe as a path component and container name.
pub(crate) fn check_incident_id(incident_id: &str) -> Result<(), AgentError> {
    let valid = !incident_id.is_empty()
        && incident_id.len() <= 64
        && incident_id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(AgentError::InvalidIncidentId {
            incident_id: incident_id.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_ids_that_could_escape_the_root_are_rejected() {
        assert!(check_incident_id("226e7435-e760-4513-a0d2-8964341f9042").is_ok());
        for bad in ["", "../etc", "a/b", "a b", &"x".repeat(65)] {
            let error = check_incident_id(bad).unwrap_err();
            assert!(error.to_string().contains("invalid incident id"), "{error}");
        }
    }
}
