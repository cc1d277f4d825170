//! Contract fixture: a post-triage plugin built against the frozen `nightcrier:plugin@0.1.1` (`wit/deps/nightcrier-plugin@0.1.1`).
//!
//! Appends a line to the report and returns the agent's exit code and whether the host clock
//! answered as fields.

#![allow(missing_docs, unsafe_code)]

wit_bindgen::generate!({
    world: "nightcrier:plugin/post-triage@0.1.1",
    path: "../../../wit",
    generate_all,
});

use exports::nightcrier::plugin0_1_1::post_triage_processor::{Guest, Outcome};
use nightcrier::plugin0_1_1::host;
use nightcrier::plugin0_1_1::types::{
    AgentResult, Capabilities, Incident, PluginError, PluginInfo,
};

struct Frozen;

impl Guest for Frozen {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "frozen-post-triage-0-1-1".to_owned(),
            version: "0.1.1".to_owned(),
            description: "built against nightcrier:plugin@0.1.1".to_owned(),
            capabilities: Capabilities {
                outbound_hosts: Vec::new(),
                env_vars: Vec::new(),
                read_only_dirs: Vec::new(),
            },
        }
    }

    fn post_triage(incident: Incident, result: AgentResult) -> Result<Outcome, PluginError> {
        Ok(Outcome {
            report_markdown: Some(format!(
                "{}\n\nchecked for {}",
                result.report_markdown, incident.id
            )),
            fields: vec![
                ("exit-code".to_owned(), result.exit_code.to_string()),
                ("clock".to_owned(), (host::now_ms() > 0).to_string()),
            ],
        })
    }
}

export!(Frozen);
