//! The incident as the agent sees it (`incident.json`, camelCase keys of the original) and the
//! cluster permissions document (`incident_cluster_permissions.json`).

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

/// What the engine knows about an incident when it asks for a triage run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentInput {
    /// Incident id (also the workspace directory name and container name suffix).
    pub incident_id: String,
    /// Fault id from the event.
    pub fault_id: String,
    /// When the incident was created.
    pub created_at: DateTime<FixedOffset>,
    /// Configured cluster name.
    pub cluster: String,
    /// Namespace of the resource.
    pub namespace: String,
    /// The Kubernetes resource, as received.
    pub resource: serde_json::Value,
    /// Fault type (e.g. `CrashLoop`).
    pub fault_type: String,
    /// Severity.
    pub severity: String,
    /// Free-text context from the event.
    pub context: String,
    /// Event timestamp, as received.
    pub timestamp: String,
}

/// The `incident.json` document: the input plus run state, keys in the original order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IncidentDocument {
    /// Incident id.
    pub incident_id: String,
    /// Fault id.
    pub fault_id: String,
    /// `investigating`, `resolved` or `agent_failed`.
    pub status: String,
    /// Creation time.
    pub created_at: DateTime<FixedOffset>,
    /// Agent start.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub started_at: Option<DateTime<Utc>>,
    /// Agent end.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub completed_at: Option<DateTime<Utc>>,
    /// Container exit code.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exit_code: Option<i64>,
    /// Failure reason text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failure_reason: Option<String>,
    /// Log file name → path.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub log_paths: Option<std::collections::BTreeMap<String, String>>,
    /// Cluster.
    pub cluster: String,
    /// Namespace.
    pub namespace: String,
    /// Resource.
    pub resource: serde_json::Value,
    /// Fault type.
    pub fault_type: String,
    /// Severity.
    pub severity: String,
    /// Context.
    pub context: String,
    /// Event timestamp.
    pub timestamp: String,
    /// Equals `faultId`.
    pub triggering_event_id: String,
}

impl IncidentDocument {
    /// The document written before the agent starts (status `investigating`, `startedAt` set).
    pub fn investigating(input: &IncidentInput, started_at: DateTime<Utc>) -> Self {
        let resource = if input.resource.is_null() {
            serde_json::json!({"apiVersion": "", "kind": "Unknown", "name": "Unknown"})
        } else {
            input.resource.clone()
        };
        Self {
            incident_id: input.incident_id.clone(),
            fault_id: input.fault_id.clone(),
            status: "investigating".to_owned(),
            created_at: input.created_at,
            started_at: Some(started_at),
            completed_at: None,
            exit_code: None,
            failure_reason: None,
            log_paths: None,
            cluster: input.cluster.clone(),
            namespace: input.namespace.clone(),
            resource,
            fault_type: input.fault_type.clone(),
            severity: input.severity.clone(),
            context: input.context.clone(),
            timestamp: input.timestamp.clone(),
            triggering_event_id: input.fault_id.clone(),
        }
    }
}

/// Result of the `kubectl auth can-i` checks (§2.5 keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterPermissions {
    /// Cluster name.
    pub cluster_name: String,
    /// When the checks ran.
    pub validated_at: DateTime<Utc>,
    /// `get pods`.
    pub can_get_pods: bool,
    /// `get pods/log`.
    pub can_get_logs: bool,
    /// `get events`.
    pub can_get_events: bool,
    /// `get deployments`.
    pub can_get_deployments: bool,
    /// `get services`.
    pub can_get_services: bool,
    /// The config flag allowing secrets access.
    pub secrets_access_allowed: bool,
    /// `get secrets`.
    pub can_get_secrets: bool,
    /// `get configmaps`.
    pub can_get_configmaps: bool,
    /// `get nodes`.
    pub can_get_nodes: bool,
    /// Warnings.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

impl ClusterPermissions {
    /// pods ∧ pods/log ∧ events.
    pub fn minimum_met(&self) -> bool {
        self.can_get_pods && self.can_get_logs && self.can_get_events
    }
}

/// How the workspace gets `incident_cluster_permissions.json`.
#[derive(Debug, Clone, PartialEq)]
pub enum PermissionsSource {
    /// Already computed by the engine (e.g. at startup).
    Known(ClusterPermissions),
    /// Probe with `kubectl auth can-i` using this kubeconfig; unknown if kubectl is missing or
    /// the checks fail. Never blocks the run for longer than the probe timeout.
    Probe {
        /// Kubeconfig on the host.
        kubeconfig: std::path::PathBuf,
        /// Whether the config allows reading secrets.
        secrets_access_allowed: bool,
    },
    /// Nothing is known; recorded as unknown.
    Unknown,
}

/// The permissions document when nothing could be established.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownPermissions {
    /// Cluster name.
    pub cluster_name: String,
    /// Always `unknown`.
    pub status: String,
    /// When this was recorded.
    pub validated_at: DateTime<Utc>,
    /// Why.
    pub warnings: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> IncidentInput {
        IncidentInput {
            incident_id: "226e7435-e760-4513-a0d2-8964341f9042".into(),
            fault_id: "9f2c".into(),
            created_at: DateTime::parse_from_rfc3339("2025-12-20T10:30:00.123456+01:00").unwrap(),
            cluster: "westeu-cluster1".into(),
            namespace: "default".into(),
            resource: serde_json::Value::Null,
            fault_type: "CrashLoop".into(),
            severity: "critical".into(),
            context: "back-off restarting".into(),
            timestamp: "2025-12-20T10:29:55Z".into(),
        }
    }

    #[test]
    fn document_keeps_the_original_keys_and_order() {
        let started = DateTime::parse_from_rfc3339("2025-12-20T09:30:01Z")
            .unwrap()
            .to_utc();
        let document = IncidentDocument::investigating(&sample(), started);
        let text = serde_json::to_string(&document).unwrap();
        let keys: Vec<&str> = [
            "incidentId",
            "faultId",
            "status",
            "createdAt",
            "startedAt",
            "cluster",
            "namespace",
            "resource",
            "faultType",
            "severity",
            "context",
            "timestamp",
            "triggeringEventId",
        ]
        .to_vec();
        let positions: Vec<usize> = keys
            .iter()
            .map(|key| text.find(&format!("\"{key}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
        assert!(!text.contains("exitCode"));
        assert!(text.contains(r#""kind":"Unknown""#));
        assert!(text.contains(r#""status":"investigating""#));
    }
}
