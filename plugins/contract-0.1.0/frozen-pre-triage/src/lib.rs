//! Contract fixture: a pre-triage plugin built against the frozen `nightcrier:plugin@0.1.0` (`wit/deps/nightcrier-plugin@0.1.0`).
//!
//! Skips incidents of the cluster `skip-me`; otherwise proceeds with a label holding its config,
//! counts its calls under the key `calls` and raises the priority by one.

#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({
    world: "nightcrier:plugin/pre-triage@0.1.0",
    path: "../../../wit",
});

use exports::nightcrier::plugin0_1_0::pre_triage_processor::{Decision, Guest, Patch};
use nightcrier::plugin0_1_0::host;
use nightcrier::plugin0_1_0::types::{Capabilities, Incident, PluginError, PluginInfo};

struct Frozen;

impl Guest for Frozen {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "frozen-pre-triage".to_owned(),
            version: "0.1.0".to_owned(),
            description: "built against nightcrier:plugin@0.1.0".to_owned(),
            capabilities: Capabilities {
                outbound_hosts: Vec::new(),
                env_vars: Vec::new(),
                read_only_dirs: Vec::new(),
            },
        }
    }

    fn pre_triage(incident: Incident) -> Result<Decision, PluginError> {
        if incident.cluster == "skip-me" {
            return Ok(Decision::Skip("cluster skip-me".to_owned()));
        }
        let failed = |what: &str| PluginError {
            message: format!("key-value {what} failed"),
            retryable: true,
        };
        let calls = host::kv_get("calls")
            .map_err(|_| failed("read"))?
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        host::kv_set("calls", calls.to_string().as_bytes(), None).map_err(|_| failed("write"))?;
        host::log(
            host::Level::Info,
            "pre-triage",
            &[("calls".to_owned(), calls.to_string())],
        );
        Ok(Decision::Proceed(Patch {
            labels: vec![("frozen-config".to_owned(), host::get_config())],
            annotations: Vec::new(),
            priority: Some(incident.priority.saturating_add(1)),
            agent_profile: None,
            context_files: Vec::new(),
        }))
    }
}

export!(Frozen);
