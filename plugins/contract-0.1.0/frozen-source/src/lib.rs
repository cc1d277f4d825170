//! Contract fixture: a source plugin built against the frozen `nightcrier:plugin@0.1.0` (`wit/deps/nightcrier-plugin@0.1.0`).
//!
//! Decodes any non-empty body into one fault event whose id is the body, logs, and records the body
//! under the key `last`; an empty body is `malformed`.

#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({
    world: "nightcrier:plugin/source@0.1.0",
    path: "../../../wit",
});

use exports::nightcrier::plugin0_1_0::event_source::{
    DecodeError, Envelope, Feed, Guest, SourceInfo, WebhookFeed,
};
use nightcrier::plugin0_1_0::host;
use nightcrier::plugin0_1_0::types::{Capabilities, FaultEvent, PluginInfo, ResourceRef, Severity};

struct Frozen;

impl Guest for Frozen {
    fn describe() -> SourceInfo {
        SourceInfo {
            info: PluginInfo {
                name: "frozen-source".to_owned(),
                version: "0.1.0".to_owned(),
                description: "built against nightcrier:plugin@0.1.0".to_owned(),
                capabilities: Capabilities {
                    outbound_hosts: Vec::new(),
                    env_vars: Vec::new(),
                    read_only_dirs: Vec::new(),
                },
            },
            feed: Feed::Webhook(WebhookFeed {
                path: "/frozen".to_owned(),
            }),
        }
    }

    fn decode(envelope: Envelope) -> Result<Vec<FaultEvent>, DecodeError> {
        if envelope.body.is_empty() {
            return Err(DecodeError::Malformed("empty body".to_owned()));
        }
        let body = String::from_utf8_lossy(&envelope.body).into_owned();
        host::log(
            host::Level::Info,
            "decoding",
            &[("bytes".to_owned(), body.len().to_string())],
        );
        host::kv_set("last", &envelope.body, None)
            .map_err(|_| DecodeError::Unsupported("key-value store refused".to_owned()))?;
        Ok(vec![FaultEvent {
            fault_id: body.clone(),
            cluster: envelope.cluster.unwrap_or_default(),
            resource: ResourceRef {
                api_version: "v1".to_owned(),
                kind: "Pod".to_owned(),
                name: "frozen".to_owned(),
                namespace: Some("default".to_owned()),
                uid: None,
            },
            fault_type: "CrashLoop".to_owned(),
            severity: Severity::Critical,
            context: body,
            timestamp: "2026-01-01T00:00:00Z".to_owned(),
            labels: vec![("contract".to_owned(), "0.1.0".to_owned())],
        }])
    }
}

export!(Frozen);
