//! The checks every decoded fault event passes before it is stored, whatever plugin decoded it:
//! the cluster is a configured one or a Kubernetes-style name (never a path), the timestamp is
//! RFC 3339, ids are non-empty, and every field is bounded. A plugin is code the operator may
//! not have written; what it hands back is input like any other.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use nightcrier_plugin_host::types;

use crate::queue::{NewFaultEvent, ResourceRef};

/// Longest cluster name (a DNS subdomain).
pub const MAX_CLUSTER_BYTES: usize = 253;
/// Longest fault id, subscription id and resource uid.
pub const MAX_ID_BYTES: usize = 256;
/// Longest fault type, resource kind and API version.
pub const MAX_KIND_BYTES: usize = 128;
/// Longest resource name and namespace.
pub const MAX_NAME_BYTES: usize = 253;
/// Longest context text (kubernetes-mcp-server's log-enriched context stays under ~64 KiB).
pub const MAX_CONTEXT_BYTES: usize = 256 * 1024;
/// Most labels on one event.
pub const MAX_LABELS: usize = 64;
/// Longest label key.
pub const MAX_LABEL_KEY_BYTES: usize = 317;
/// Longest label value.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// Longest timestamp text.
const MAX_TIMESTAMP_BYTES: usize = 64;

/// Whether `name` can be a cluster name: 1–253 characters, letters, digits and `.`, `_`, `:`,
/// `@`, `-`, starting and ending with a letter or digit. That admits kubeconfig context names
/// (`kind-dev`, `admin@prod`, `gke_project_zone_name`) and refuses anything path-like.
pub fn is_cluster_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_CLUSTER_BYTES
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(b))
}

/// Checks a short identifier-like field: non-empty unless `optional`, bounded, no control
/// characters.
fn short_field(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(format!(
            "{field} is {} bytes, over the {max}-byte limit",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}

fn required(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() {
        return Err(format!("{field} is empty"));
    }
    short_field(field, value, max)
}

/// What a decoded event is checked against.
#[derive(Clone, Copy, Debug)]
pub struct EventContext<'a> {
    /// The source plugin id, recorded with the event.
    pub source: &'a str,
    /// The feed's configured cluster; it wins over the event's own.
    pub feed_cluster: Option<&'a str>,
    /// The configured clusters, always accepted.
    pub known_clusters: &'a BTreeSet<String>,
    /// When the message arrived (the timestamp of an event that gives none).
    pub received_at: DateTime<Utc>,
}

/// Turns a decoded event into one ready to store, or says why it cannot be stored.
pub fn event(
    cx: &EventContext<'_>,
    event: types::FaultEvent,
    payload: &serde_json::Value,
) -> Result<NewFaultEvent, String> {
    let cluster = match cx.feed_cluster {
        Some(cluster) => cluster.to_owned(),
        None => {
            let cluster = event.cluster.as_str();
            if cluster.trim().is_empty() {
                return Err("cluster is empty and the feed has no configured cluster".into());
            }
            if !cx.known_clusters.contains(cluster) && !is_cluster_name(cluster) {
                return Err(format!(
                    "cluster {cluster:?} is neither a configured cluster nor a valid cluster name"
                ));
            }
            cluster.to_owned()
        }
    };
    required("faultId", &event.fault_id, MAX_ID_BYTES)?;
    required("faultType", &event.fault_type, MAX_KIND_BYTES)?;
    let timestamp = if event.timestamp.trim().is_empty() {
        cx.received_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        short_field("timestamp", &event.timestamp, MAX_TIMESTAMP_BYTES)?;
        DateTime::parse_from_rfc3339(event.timestamp.trim()).map_err(|error| {
            format!(
                "timestamp {:?} is not an RFC 3339 time: {error}",
                event.timestamp
            )
        })?;
        event.timestamp.trim().to_owned()
    };
    if event.context.len() > MAX_CONTEXT_BYTES {
        return Err(format!(
            "context is {} bytes, over the {MAX_CONTEXT_BYTES}-byte limit",
            event.context.len()
        ));
    }
    let resource = &event.resource;
    short_field("resource.apiVersion", &resource.api_version, MAX_KIND_BYTES)?;
    short_field("resource.kind", &resource.kind, MAX_KIND_BYTES)?;
    short_field("resource.name", &resource.name, MAX_NAME_BYTES)?;
    if let Some(namespace) = &resource.namespace {
        short_field("resource.namespace", namespace, MAX_NAME_BYTES)?;
    }
    if let Some(uid) = &resource.uid {
        short_field("resource.uid", uid, MAX_ID_BYTES)?;
    }
    if resource.kind.is_empty() != resource.name.is_empty() {
        return Err("resource needs both a kind and a name, or neither".into());
    }
    if event.labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels, over the limit of {MAX_LABELS}",
            event.labels.len()
        ));
    }
    let mut labels = BTreeMap::new();
    for (key, value) in &event.labels {
        required("label key", key, MAX_LABEL_KEY_BYTES)?;
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(format!(
                "label {key:?} is {} bytes, over the {MAX_LABEL_VALUE_BYTES}-byte limit",
                value.len()
            ));
        }
        labels.insert(key.clone(), value.clone());
    }
    let subscription_id = labels.get("mcp.subscription-id").cloned();
    if let Some(id) = &subscription_id {
        short_field("mcp.subscription-id", id, MAX_ID_BYTES)?;
    }
    let resource = (!resource.kind.is_empty()).then(|| ResourceRef {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
        name: resource.name.clone(),
        namespace: resource.namespace.clone().filter(|n| !n.is_empty()),
        uid: resource.uid.clone().filter(|u| !u.is_empty()),
    });
    Ok(NewFaultEvent {
        source: cx.source.to_owned(),
        cluster,
        fault_id: Some(event.fault_id),
        subscription_id,
        resource,
        fault_type: event.fault_type,
        severity: severity_text(event.severity).to_owned(),
        context: event.context,
        timestamp: Some(timestamp),
        payload: payload.clone(),
        received_at: cx.received_at,
        labels,
    })
}

/// The stored text of a severity.
pub fn severity_text(severity: types::Severity) -> &'static str {
    match severity {
        types::Severity::Info => "info",
        types::Severity::Warning => "warning",
        types::Severity::Critical => "critical",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded() -> types::FaultEvent {
        types::FaultEvent {
            fault_id: "a817ebcffcb2cf13".into(),
            cluster: "kind-dev".into(),
            resource: types::ResourceRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "checkout".into(),
                namespace: Some("shop".into()),
                uid: Some("6b1f".into()),
            },
            fault_type: "CrashLoop".into(),
            severity: types::Severity::Critical,
            context: "Container entered CrashLoopBackOff".into(),
            timestamp: "2025-12-20T14:07:31Z".into(),
            labels: vec![("mcp.subscription-id".into(), "sub-1".into())],
        }
    }

    fn check(
        change: impl FnOnce(&mut types::FaultEvent),
        feed_cluster: Option<&str>,
    ) -> Result<NewFaultEvent, String> {
        let known = BTreeSet::from(["prod".to_owned()]);
        let cx = EventContext {
            source: "kubernetes-mcp",
            feed_cluster,
            known_clusters: &known,
            received_at: Utc::now(),
        };
        let mut event = decoded();
        change(&mut event);
        super::event(&cx, event, &serde_json::Value::Null)
    }

    #[test]
    fn a_good_event_passes_and_the_feed_cluster_wins() {
        let event = check(|_| {}, Some("prod")).unwrap();
        assert_eq!(event.cluster, "prod");
        assert_eq!(event.subscription_id.as_deref(), Some("sub-1"));
        assert_eq!(event.severity, "critical");
        assert_eq!(check(|_| {}, None).unwrap().cluster, "kind-dev");
    }

    #[test]
    fn path_like_or_empty_clusters_are_refused() {
        for bad in [
            "../../../../tmp/x",
            "/etc/passwd",
            "a/b",
            "",
            " ",
            "-x",
            "x\n",
        ] {
            let error = check(|e| e.cluster = bad.into(), None).unwrap_err();
            assert!(error.contains("cluster"), "{bad:?}: {error}");
        }
        for good in ["kind-dev", "admin@prod", "gke_p_z_c", "prod"] {
            assert!(check(|e| e.cluster = good.into(), None).is_ok(), "{good}");
        }
        let long = "a".repeat(254);
        assert!(check(|e| e.cluster = long, None).is_err());
    }

    #[test]
    fn ids_times_and_sizes_are_checked() {
        assert!(
            check(|e| e.fault_id.clear(), None)
                .unwrap_err()
                .contains("faultId is empty")
        );
        assert!(
            check(|e| e.fault_type = "   ".into(), None)
                .unwrap_err()
                .contains("faultType")
        );
        assert!(
            check(|e| e.timestamp = "not-a-time".into(), None)
                .unwrap_err()
                .contains("RFC 3339")
        );
        let stamped = check(|e| e.timestamp.clear(), None).unwrap();
        assert!(stamped.timestamp.unwrap().ends_with('Z'));
        assert!(
            check(|e| e.context = "x".repeat(MAX_CONTEXT_BYTES + 1), None)
                .unwrap_err()
                .contains("context")
        );
        assert!(
            check(|e| e.resource.name = "a\u{1b}[2J".into(), None)
                .unwrap_err()
                .contains("control")
        );
        assert!(
            check(
                |e| e.labels = (0..65).map(|i| (format!("k{i}"), "v".into())).collect(),
                None
            )
            .unwrap_err()
            .contains("labels")
        );
        assert!(
            check(|e| e.resource.name.clear(), None)
                .unwrap_err()
                .contains("both a kind and a name")
        );
    }
}
