//! `dedup`: skips a repeat of the same fault within a window ("notify once"), remembered in the host's key-value store.

use nightcrier_plugin_sdk::{
    Decision, Incident, Patch, PluginError, PluginInfo, PreTriage, export_pre_triage, kv,
};
use serde::Deserialize;

/// Plugin configuration (`[plugins.plugin.dedup.config]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// How long a fault stays "already seen", in seconds.
    #[serde(default = "default_window")]
    pub window_seconds: u32,
}

fn default_window() -> u32 {
    900
}

/// The key identifying "the same fault": the upstream fault id, or type + object when there is none.
pub fn dedup_key(incident: &Incident) -> String {
    let event = &incident.event;
    if event.fault_id.is_empty() {
        let object = event.resource.uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}/{}",
                event.resource.kind,
                event.resource.namespace.as_deref().unwrap_or(""),
                event.resource.name
            )
        });
        format!("fault:{}:{}:{}", incident.cluster, event.fault_type, object)
    } else {
        format!("fault:{}:{}", incident.cluster, event.fault_id)
    }
}

struct Dedup;

impl PreTriage for Dedup {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "dedup",
            env!("CARGO_PKG_VERSION"),
            "Skips repeats of the same fault within a time window",
        )
    }

    fn pre_triage(incident: Incident) -> Result<Decision, PluginError> {
        let config: Config = nightcrier_plugin_sdk::config().map_err(PluginError::fatal)?;
        let key = dedup_key(&incident);
        let now = nightcrier_plugin_sdk::now_ms();
        let window_ms = u64::from(config.window_seconds) * 1000;
        let seen = kv::get(&key).map_err(|error| PluginError::retryable(format!("{error:?}")))?;
        if let Some(first) = seen
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|text| text.parse::<u64>().ok())
            && now.saturating_sub(first) < window_ms
        {
            return Ok(Decision::Skip(format!(
                "duplicate of {} first seen {} s ago (window {} s)",
                key,
                now.saturating_sub(first) / 1000,
                config.window_seconds
            )));
        }
        kv::set(
            &key,
            now.to_string().as_bytes(),
            Some(config.window_seconds),
        )
        .map_err(|error| PluginError::retryable(format!("{error:?}")))?;
        Ok(Decision::Proceed(Patch {
            annotations: vec![("dedup.nightcrier.io/key".to_owned(), key)],
            ..Patch::default()
        }))
    }
}

export_pre_triage!(Dedup);
