//! Turning raw fault payloads into validated [`NewFaultEvent`]s, or into a reason to reject them.
//!
//! The accepted shape is the `data` object of a kubernetes-mcp-server `notifications/message`
//! in faults mode (camelCase keys, unknown keys ignored). Anything else gets a reason that goes
//! to the dead letter table with the bytes as received.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::queue::{NewFaultEvent, ResourceRef};

/// Largest payload accepted, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireFault {
    fault_id: Option<String>,
    subscription_id: Option<String>,
    cluster: Option<String>,
    resource: Option<ResourceRef>,
    fault_type: Option<String>,
    severity: Option<String>,
    context: Option<String>,
    timestamp: Option<String>,
}

/// Validates one payload. `cluster` (the configured cluster name) wins over the payload's own.
pub fn parse_fault(
    source: &str,
    cluster: Option<&str>,
    payload: &serde_json::Value,
    received_at: DateTime<Utc>,
) -> Result<NewFaultEvent, String> {
    if !payload.is_object() {
        return Err(format!(
            "payload is a JSON {}, not an object",
            json_kind(payload)
        ));
    }
    let wire: WireFault = serde_json::from_value(payload.clone())
        .map_err(|e| format!("payload has a field of the wrong type: {e}"))?;
    let cluster = cluster
        .map(str::to_owned)
        .or(wire.cluster)
        .filter(|c| !c.trim().is_empty())
        .ok_or("cluster is missing or empty (configure the source's cluster)")?;
    let fault_type = wire
        .fault_type
        .filter(|t| !t.trim().is_empty())
        .ok_or("faultType is missing or empty")?;
    let severity = wire
        .severity
        .filter(|s| !s.trim().is_empty())
        .ok_or("severity is missing or empty")?
        .to_lowercase();
    if let Some(resource) = &wire.resource
        && (resource.kind.is_empty() || resource.name.is_empty())
    {
        return Err("resource must have a kind and a name".into());
    }
    Ok(NewFaultEvent {
        source: source.to_owned(),
        cluster,
        fault_id: wire.fault_id.filter(|f| !f.is_empty()),
        subscription_id: wire.subscription_id.filter(|s| !s.is_empty()),
        resource: wire.resource,
        fault_type,
        severity,
        context: wire.context.unwrap_or_default(),
        timestamp: wire.timestamp.filter(|t| !t.is_empty()),
        payload: payload.clone(),
        received_at,
        labels: BTreeMap::new(),
    })
}

/// Splits a file's bytes into payloads: one JSON object, a JSON array of them, or one per line.
/// Each item is the raw bytes (for the dead letter table) and the parse result.
pub fn split_payloads(bytes: &[u8]) -> Vec<(Vec<u8>, Result<serde_json::Value, String>)> {
    if bytes.len() > MAX_PAYLOAD_BYTES * 64 {
        return vec![(
            bytes[..MAX_PAYLOAD_BYTES.min(bytes.len())].to_vec(),
            Err(format!("input is {} bytes, over the limit", bytes.len())),
        )];
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Array(items)) => items
            .into_iter()
            .map(|item| (serde_json::to_vec(&item).unwrap_or_default(), Ok(item)))
            .collect(),
        Ok(value) => vec![(bytes.to_vec(), Ok(value))],
        Err(whole_error) => {
            let lines: Vec<&[u8]> = bytes
                .split(|b| *b == b'\n')
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .collect();
            if lines.len() <= 1 {
                return vec![(
                    bytes.to_vec(),
                    Err(format!("payload is not valid JSON: {whole_error}")),
                )];
            }
            lines
                .into_iter()
                .map(|line| {
                    let parsed = if line.len() > MAX_PAYLOAD_BYTES {
                        Err(format!(
                            "payload is {} bytes, over the {MAX_PAYLOAD_BYTES} limit",
                            line.len()
                        ))
                    } else {
                        serde_json::from_slice(line)
                            .map_err(|e| format!("payload is not valid JSON: {e}"))
                    };
                    (line.to_vec(), parsed)
                })
                .collect()
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crashloop() -> serde_json::Value {
        json!({"subscriptionId":"sub-3f2a9c1e","cluster":"kind-dev","faultId":"a817ebcffcb2cf13",
               "faultType":"CrashLoop","severity":"critical",
               "resource":{"apiVersion":"v1","kind":"Pod","name":"checkout","namespace":"shop","uid":"6b1f"},
               "context":"Container entered CrashLoopBackOff state","timestamp":"2025-12-20T14:07:31Z",
               "futureField": 1})
    }

    #[test]
    fn upstream_fault_is_accepted_and_configured_cluster_wins() {
        let event = parse_fault("kubernetes-mcp", Some("prod"), &crashloop(), Utc::now()).unwrap();
        assert_eq!(event.cluster, "prod");
        assert_eq!(event.fault_id.as_deref(), Some("a817ebcffcb2cf13"));
        assert_eq!(event.resource.unwrap().namespace.as_deref(), Some("shop"));
        assert_eq!(event.fault_type, "CrashLoop");
    }

    #[test]
    fn node_fault_without_namespace_is_accepted() {
        let payload = json!({"cluster":"kind-dev","faultType":"NodeUnhealthy","severity":"warning",
            "resource":{"apiVersion":"v1","kind":"Node","name":"w2","uid":"0d9e"},"timestamp":"2025-12-20T14:09:02Z"});
        let event = parse_fault("kubernetes-mcp", None, &payload, Utc::now()).unwrap();
        assert_eq!(event.cluster, "kind-dev");
        assert_eq!(event.resource.unwrap().namespace, None);
    }

    #[test]
    fn bad_payloads_get_reasons() {
        let now = Utc::now();
        let no_type = json!({"cluster":"c","severity":"critical"});
        assert_eq!(
            parse_fault("s", None, &no_type, now).unwrap_err(),
            "faultType is missing or empty"
        );
        let no_cluster = json!({"faultType":"CrashLoop","severity":"critical","cluster":""});
        assert!(
            parse_fault("s", None, &no_cluster, now)
                .unwrap_err()
                .contains("cluster is missing")
        );
        let wrong_type = json!({"cluster":"c","faultType":7,"severity":"critical"});
        assert!(
            parse_fault("s", None, &wrong_type, now)
                .unwrap_err()
                .contains("wrong type")
        );
        assert!(
            parse_fault("s", None, &json!([1]), now)
                .unwrap_err()
                .contains("array")
        );
        let nameless =
            json!({"cluster":"c","faultType":"X","severity":"info","resource":{"kind":"Pod"}});
        assert!(
            parse_fault("s", None, &nameless, now)
                .unwrap_err()
                .contains("kind and a name")
        );
    }

    #[test]
    fn files_split_into_objects_arrays_or_lines() {
        assert_eq!(split_payloads(br#"{"a":1}"#).len(), 1);
        assert_eq!(split_payloads(br#"[{"a":1},{"a":2}]"#).len(), 2);
        let lines = split_payloads(b"{\"a\":1}\nnot json\n\n{\"a\":3}\n");
        assert_eq!(lines.len(), 3);
        assert!(lines[1].1.is_err());
        assert_eq!(lines[1].0, b"not json");
        let garbage = split_payloads(b"\xff\xfe");
        assert_eq!(garbage.len(), 1);
        assert!(
            garbage[0]
                .1
                .as_ref()
                .unwrap_err()
                .contains("not valid JSON")
        );
    }
}
