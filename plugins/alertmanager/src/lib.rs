//! `alertmanager`: decodes Prometheus Alertmanager webhook JSON, one fault event per firing alert.

use std::collections::BTreeMap;

use nightcrier_plugin_sdk::{
    DecodeError, Envelope, FaultEvent, Feed, PluginInfo, ResourceRef, Severity, Source, SourceInfo,
    WebhookFeed, export_source,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Webhook {
    #[serde(default)]
    alerts: Vec<Alert>,
    #[serde(default)]
    common_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alert {
    #[serde(default)]
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    fingerprint: String,
}

/// Picks the Kubernetes object an alert is about from the usual kube-state-metrics labels.
fn resource_of(labels: &BTreeMap<String, String>) -> ResourceRef {
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

/// Decode a webhook body; resolved alerts are left out.
pub fn decode_webhook(body: &[u8], cluster: Option<&str>) -> Result<Vec<FaultEvent>, DecodeError> {
    let webhook: Webhook = serde_json::from_slice(body)
        .map_err(|error| DecodeError::Malformed(format!("not an Alertmanager webhook: {error}")))?;
    let mut events = Vec::new();
    for alert in webhook
        .alerts
        .into_iter()
        .filter(|alert| alert.status == "firing")
    {
        let mut labels = webhook.common_labels.clone();
        labels.extend(alert.labels);
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
        let context = alert
            .annotations
            .get("description")
            .or_else(|| alert.annotations.get("summary"))
            .or_else(|| alert.annotations.get("message"))
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
        events.push(FaultEvent {
            fault_id,
            cluster,
            resource: resource_of(&labels),
            fault_type,
            severity,
            context,
            timestamp: alert.starts_at,
            labels: labels.into_iter().collect(),
        });
    }
    Ok(events)
}

struct Alertmanager;

impl Source for Alertmanager {
    fn describe() -> SourceInfo {
        SourceInfo {
            info: PluginInfo::new(
                "alertmanager",
                env!("CARGO_PKG_VERSION"),
                "Prometheus Alertmanager webhook receiver",
            ),
            feed: Feed::Webhook(WebhookFeed {
                path: "/alertmanager".to_owned(),
            }),
        }
    }

    fn decode(envelope: Envelope) -> Result<Vec<FaultEvent>, DecodeError> {
        decode_webhook(&envelope.body, envelope.cluster.as_deref())
    }
}

export_source!(Alertmanager);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_firing_alert() {
        let body = br#"{"version":"4","status":"firing","commonLabels":{"cluster":"prod"},"alerts":[
          {"status":"firing","labels":{"alertname":"KubePodCrashLooping","severity":"critical","namespace":"shop","pod":"api-1"},"annotations":{"description":"api-1 restarts"},"startsAt":"2025-12-20T14:07:31Z","fingerprint":"abc"},
          {"status":"resolved","labels":{"alertname":"Old"},"annotations":{},"startsAt":"","fingerprint":"def"}]}"#;
        let events = decode_webhook(body, None).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].fault_type, "KubePodCrashLooping");
        assert_eq!(events[0].cluster, "prod");
        assert_eq!(events[0].resource.kind, "Pod");
        assert_eq!(events[0].severity, Severity::Critical);
    }
}
