//! `alertmanager`: decodes Prometheus Alertmanager webhook JSON, one fault event per firing alert.

use std::collections::BTreeMap;

use alertmanager_alerts::{AlertParts, event_of};
use nightcrier_plugin_sdk::{
    DecodeError, Envelope, FaultEvent, Feed, PluginInfo, Source, SourceInfo, WebhookFeed,
    export_source,
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
        events.push(event_of(
            AlertParts {
                labels,
                annotations: alert.annotations,
                starts_at: alert.starts_at,
                fingerprint: alert.fingerprint,
            },
            cluster,
        ));
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
    use nightcrier_plugin_sdk::Severity;

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
