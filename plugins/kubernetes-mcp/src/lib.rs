//! `kubernetes-mcp`: decodes kubernetes-mcp-server faults-mode `notifications/message` data into fault events.

use nightcrier_plugin_sdk::{
    DecodeError, Envelope, FaultEvent, Feed, McpFeed, PluginInfo, ResourceRef, Severity, Source,
    SourceInfo, export_source,
};
use serde::Deserialize;

/// The logger kubernetes-mcp-server uses for faults.
pub const FAULT_LOGGER: &str = "kubernetes/faults";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Notification {
    #[serde(default)]
    subscription_id: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    fault_id: String,
    #[serde(default)]
    fault_type: String,
    #[serde(default)]
    severity: String,
    resource: Option<Resource>,
    #[serde(default)]
    context: String,
    #[serde(default)]
    timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Resource {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    name: String,
    namespace: Option<String>,
    uid: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|text| !text.is_empty())
}

/// Decode one notification's `params.data`; `cluster` is the feed's cluster when the host knows it.
pub fn decode_notification(body: &[u8], cluster: Option<&str>) -> Result<FaultEvent, DecodeError> {
    // Server diagnostics are JSON strings; faults are objects. Peek instead of parsing twice.
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'"') {
        return Err(DecodeError::Unsupported(
            "server diagnostic message, not a fault".to_owned(),
        ));
    }
    let notification: Notification = serde_json::from_slice(body)
        .map_err(|error| DecodeError::Malformed(format!("data is not a fault: {error}")))?;
    if notification.fault_type.is_empty() {
        return Err(DecodeError::Malformed("faultType is missing".to_owned()));
    }
    let resource = notification.resource.unwrap_or(Resource {
        api_version: String::new(),
        kind: String::new(),
        name: String::new(),
        namespace: None,
        uid: None,
    });
    let mut labels = Vec::new();
    if !notification.subscription_id.is_empty() {
        labels.push((
            "mcp.subscription-id".to_owned(),
            notification.subscription_id,
        ));
    }
    let severity = Severity::parse(&notification.severity).unwrap_or_else(|| {
        labels.push(("severity.raw".to_owned(), notification.severity.clone()));
        Severity::Warning
    });
    let cluster = match cluster {
        Some(cluster) if !cluster.is_empty() => cluster.to_owned(),
        _ => notification.cluster,
    };
    Ok(FaultEvent {
        fault_id: notification.fault_id,
        cluster,
        resource: ResourceRef {
            api_version: resource.api_version,
            kind: resource.kind,
            name: resource.name,
            namespace: non_empty(resource.namespace),
            uid: non_empty(resource.uid),
        },
        fault_type: notification.fault_type,
        severity,
        context: notification.context,
        timestamp: notification.timestamp,
        labels,
    })
}

struct KubernetesMcp;

impl Source for KubernetesMcp {
    fn describe() -> SourceInfo {
        SourceInfo {
            info: PluginInfo::new(
                "kubernetes-mcp",
                env!("CARGO_PKG_VERSION"),
                "Faults from kubernetes-mcp-server (events_subscribe, mode faults)",
            ),
            feed: Feed::Mcp(McpFeed {
                tool: "events_subscribe".to_owned(),
                arguments: r#"{"mode":"faults"}"#.to_owned(),
                logger: FAULT_LOGGER.to_owned(),
            }),
        }
    }

    fn decode(envelope: Envelope) -> Result<Vec<FaultEvent>, DecodeError> {
        if let Some(logger) = &envelope.logger
            && logger != FAULT_LOGGER
        {
            return Err(DecodeError::Unsupported(format!(
                "logger {logger} is not {FAULT_LOGGER}"
            )));
        }
        decode_notification(&envelope.body, envelope.cluster.as_deref()).map(|event| vec![event])
    }
}

export_source!(KubernetesMcp);

#[cfg(test)]
mod tests {
    use super::*;

    const CRASH_LOOP: &str = r#"{"subscriptionId":"sub-3f2a9c1e","cluster":"kind-dev","faultId":"a817ebcffcb2cf13","faultType":"CrashLoop","severity":"critical","resource":{"apiVersion":"v1","kind":"Pod","name":"checkout-7d9f8b6c5-x2k4q","namespace":"shop","uid":"6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f"},"context":"Container entered CrashLoopBackOff state, restart count: 3","timestamp":"2025-12-20T14:07:31Z"}"#;
    const NODE: &str = r#"{"subscriptionId":"sub-3f2a9c1e","cluster":"kind-dev","faultId":"e4f6301031210dd7","faultType":"NodeUnhealthy","severity":"warning","resource":{"apiVersion":"v1","kind":"Node","name":"kind-dev-worker2","uid":"0d9e8f7a-1111-4222-8333-944455566677"},"context":"Node became unhealthy: Ready=Unknown","timestamp":"2025-12-20T14:09:02Z"}"#;

    #[test]
    fn decodes_a_crash_loop() {
        let event = decode_notification(CRASH_LOOP.as_bytes(), None).unwrap();
        assert_eq!(event.fault_id, "a817ebcffcb2cf13");
        assert_eq!(event.cluster, "kind-dev");
        assert_eq!(event.severity, Severity::Critical);
        assert_eq!(event.resource.namespace.as_deref(), Some("shop"));
        assert_eq!(
            event.labels,
            vec![("mcp.subscription-id".to_owned(), "sub-3f2a9c1e".to_owned())]
        );
    }

    #[test]
    fn nodes_have_no_namespace_and_the_feed_cluster_wins() {
        let event = decode_notification(NODE.as_bytes(), Some("prod")).unwrap();
        assert_eq!(event.resource.namespace, None);
        assert_eq!(event.cluster, "prod");
        assert_eq!(event.severity, Severity::Warning);
    }

    #[test]
    fn refuses_diagnostics_and_garbage() {
        assert!(matches!(
            decode_notification(br#""server started""#, None),
            Err(DecodeError::Unsupported(_))
        ));
        assert!(matches!(
            decode_notification(b"{", None),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode_notification(b"{}", None),
            Err(DecodeError::Malformed(_))
        ));
    }
}
