//! Test fixture: a source plugin whose `decode` misbehaves as its config's `attack` says — traps
//! (`trap`), never returns (`loop`), eats memory (`memory`), returns too much (`oversized`) — or
//! returns events that must not be stored as they are (`bad-events`); with no attack it decodes a
//! minimal fault.

use std::hint::black_box;

use nightcrier_plugin_sdk::{
    DecodeError, Envelope, FaultEvent, Feed, PluginInfo, ResourceRef, Severity, Source, SourceInfo,
    WebhookFeed, export_source,
};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    attack: String,
}

fn event(cluster: &str, fault_id: &str, timestamp: &str) -> FaultEvent {
    FaultEvent {
        fault_id: fault_id.to_owned(),
        cluster: cluster.to_owned(),
        resource: ResourceRef {
            api_version: "v1".to_owned(),
            kind: "Pod".to_owned(),
            name: "victim".to_owned(),
            namespace: Some("default".to_owned()),
            uid: None,
        },
        fault_type: "Hostile".to_owned(),
        severity: Severity::Critical,
        context: String::new(),
        timestamp: timestamp.to_owned(),
        labels: Vec::new(),
    }
}

struct HostileSource;

impl Source for HostileSource {
    fn describe() -> SourceInfo {
        SourceInfo {
            info: PluginInfo::new(
                "hostile-source",
                env!("CARGO_PKG_VERSION"),
                "Misbehaves in decode on purpose (test fixture)",
            ),
            feed: Feed::Webhook(WebhookFeed {
                path: "/hostile-source".to_owned(),
            }),
        }
    }

    fn decode(_envelope: Envelope) -> Result<Vec<FaultEvent>, DecodeError> {
        let config: Config = nightcrier_plugin_sdk::config().unwrap_or_default();
        match config.attack.as_str() {
            "trap" => panic!("hostile source panics on purpose"),
            "loop" => {
                let mut counter: u64 = 0;
                loop {
                    counter = black_box(counter.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(black_box(vec![1u8; 1 << 20]));
                }
            }
            "oversized" => Ok((0..20_000)
                .map(|n| event("prod", &format!("{n:0>200}"), "2025-12-20T14:07:31Z"))
                .collect()),
            "bad-events" => Ok(vec![
                event("prod", "good", "2025-12-20T14:07:31Z"),
                event("../../../../tmp/x", "path", "2025-12-20T14:07:31Z"),
                event("prod", "time", "not-a-time"),
                event("prod", "", "2025-12-20T14:07:31Z"),
            ]),
            _ => Ok(vec![event("prod", "plain", "2025-12-20T14:07:31Z")]),
        }
    }
}

export_source!(HostileSource);
