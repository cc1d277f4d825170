//! `noise-filter`: skips incidents by namespace, severity, fault type or cluster rules from its config.

use nightcrier_plugin_sdk::{
    Decision, Incident, Patch, PluginError, PluginInfo, PreTriage, Severity, export_pre_triage,
};
use serde::Deserialize;

/// Plugin configuration (`[plugins.plugin.noise-filter.config]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Incidents below this severity are skipped.
    #[serde(default)]
    pub min_severity: Option<String>,
    /// An incident matching every field set in a rule is skipped.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One skip rule; unset fields match anything. Patterns may end in `*`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Fault types.
    #[serde(default)]
    pub fault_types: Vec<String>,
    /// Severities.
    #[serde(default)]
    pub severities: Vec<String>,
    /// Clusters.
    #[serde(default)]
    pub clusters: Vec<String>,
}

fn matches(patterns: &[String], value: &str) -> bool {
    patterns.is_empty()
        || patterns
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => value.starts_with(prefix),
                None => pattern == value,
            })
}

fn rank(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

/// Decide for one incident.
pub fn decide(config: &Config, incident: &Incident) -> Result<Decision, PluginError> {
    let event = &incident.event;
    if let Some(minimum) = &config.min_severity {
        let minimum = Severity::parse(minimum)
            .ok_or_else(|| PluginError::fatal(format!("unknown min_severity {minimum}")))?;
        if rank(event.severity) < rank(minimum) {
            return Ok(Decision::Skip(format!(
                "severity {} is below {}",
                event.severity.as_str(),
                minimum.as_str()
            )));
        }
    }
    let namespace = event.resource.namespace.as_deref().unwrap_or("");
    for (index, rule) in config.rules.iter().enumerate() {
        if matches(&rule.namespaces, namespace)
            && matches(&rule.fault_types, &event.fault_type)
            && matches(&rule.severities, event.severity.as_str())
            && matches(&rule.clusters, &incident.cluster)
        {
            return Ok(Decision::Skip(format!("matched noise rule {index}")));
        }
    }
    Ok(Decision::Proceed(Patch::default()))
}

struct NoiseFilter;

impl PreTriage for NoiseFilter {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "noise-filter",
            env!("CARGO_PKG_VERSION"),
            "Skips incidents matching namespace, severity or fault-type rules",
        )
    }

    fn pre_triage(incident: Incident) -> Result<Decision, PluginError> {
        let config: Config = nightcrier_plugin_sdk::config().map_err(PluginError::fatal)?;
        decide(&config, &incident)
    }
}

export_pre_triage!(NoiseFilter);

#[cfg(test)]
mod tests {
    use super::*;
    use nightcrier_plugin_sdk::{FaultEvent, ResourceRef};

    fn incident(namespace: &str, severity: Severity) -> Incident {
        Incident {
            id: "i".into(),
            cluster: "prod".into(),
            event: FaultEvent {
                fault_id: "f".into(),
                cluster: "prod".into(),
                resource: ResourceRef {
                    api_version: "v1".into(),
                    kind: "Pod".into(),
                    name: "p".into(),
                    namespace: Some(namespace.into()),
                    uid: None,
                },
                fault_type: "CrashLoop".into(),
                severity,
                context: String::new(),
                timestamp: String::new(),
                labels: vec![],
            },
            labels: vec![],
            annotations: vec![],
            priority: 0,
            agent_profile: None,
        }
    }

    #[test]
    fn skips_by_rule_and_severity() {
        let config: Config = serde_json::from_str(r#"{"min_severity":"warning","rules":[{"namespaces":["kube-*"],"fault_types":["CrashLoop"]}]}"#).unwrap();
        assert!(matches!(
            decide(&config, &incident("kube-system", Severity::Critical)),
            Ok(Decision::Skip(_))
        ));
        assert!(matches!(
            decide(&config, &incident("shop", Severity::Info)),
            Ok(Decision::Skip(_))
        ));
        assert!(matches!(
            decide(&config, &incident("shop", Severity::Critical)),
            Ok(Decision::Proceed(_))
        ));
    }
}
