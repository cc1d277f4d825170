//! Alertmanager alerts → fault events: the mapping shared by the `alertmanager` webhook plugin
//! and the `alertmanager-poll` plugin (a library only; it exports no component).

use std::collections::BTreeMap;

use nightcrier_plugin_sdk::{FaultEvent, ResourceRef, Severity};

/// The parts of an alert the mapping reads, whichever API it came from.
pub struct AlertParts {
    /// Its labels (group labels merged in).
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (RFC 3339).
    pub starts_at: String,
    /// Alertmanager's fingerprint.
    pub fingerprint: String,
}

/// Picks the Kubernetes object an alert is about from the usual kube-state-metrics labels.
pub fn resource_of(labels: &BTreeMap<String, String>) -> ResourceRef {
    let namespace = labels.get("namespace").cloned();
    let pick = |key: &str, api_version: &str, kind: &str| {
        labels.get(key).map(|name| ResourceRef {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: name.clone(),
            namespace: if kind == "Node" {
                None
            } else {
                namespace.clone()
            },
            uid: labels.get("uid").cloned(),
        })
    };
    pick("pod", "v1", "Pod")
        .or_else(|| pick("deployment", "apps/v1", "Deployment"))
        .or_else(|| pick("statefulset", "apps/v1", "StatefulSet"))
        .or_else(|| pick("daemonset", "apps/v1", "DaemonSet"))
        .or_else(|| pick("job_name", "batch/v1", "Job"))
        .or_else(|| pick("node", "v1", "Node"))
        .unwrap_or_else(|| ResourceRef {
            api_version: String::new(),
            kind: "Alert".to_owned(),
            name: labels.get("alertname").cloned().unwrap_or_default(),
            namespace,
            uid: None,
        })
}

/// The fault event of one firing alert; `cluster` (the feed's) wins over the `cluster` label.
pub fn event_of(alert: AlertParts, cluster: Option<&str>) -> FaultEvent {
    let labels = alert.labels;
    let fault_type = labels
        .get("alertname")
        .cloned()
        .unwrap_or_else(|| "Alert".to_owned());
    let severity = labels
        .get("severity")
        .and_then(|severity| Severity::parse(severity))
        .unwrap_or(Severity::Warning);
    let cluster = cluster
        .filter(|cluster| !cluster.is_empty())
        .map(str::to_owned)
        .or_else(|| labels.get("cluster").cloned())
        .unwrap_or_default();
    let annotations = alert.annotations;
    let context = annotations
        .get("description")
        .or_else(|| annotations.get("summary"))
        .or_else(|| annotations.get("message"))
        .cloned()
        .unwrap_or_default();
    let fault_id = if alert.fingerprint.is_empty() {
        labels
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .collect::<Vec<_>>()
            .join(",")
    } else {
        alert.fingerprint
    };
    FaultEvent {
        fault_id,
        cluster,
        resource: resource_of(&labels),
        fault_type,
        severity,
        context,
        timestamp: alert.starts_at,
        labels: labels.into_iter().collect(),
    }
}
