//! `slack`: posts the Block Kit incident message of the original nightcrier to a Slack webhook through `wasi:http`.

use nightcrier_plugin_sdk::{
    AgentResult, Incident, Outcome, PluginError, PluginInfo, PostTriage, export_post_triage, http,
};
use serde::Deserialize;
use serde_json::json;

/// The environment variable the webhook URL is read from when the config does not give one (the
/// operator grants it with `env = ["SLACK_WEBHOOK_URL"]`): a webhook URL is a credential.
pub const WEBHOOK_ENV: &str = "SLACK_WEBHOOK_URL";

/// The origin requested when the URL is not known at load.
const DEFAULT_ORIGIN: &str = "https://hooks.slack.com:443";

/// Plugin configuration (`[plugins.plugin.slack.config]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The incoming-webhook URL; its origin must be granted in `allowed_hosts`. Without it the
    /// URL is read from `SLACK_WEBHOOK_URL`.
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Link to the report; `{id}` is replaced by the incident id.
    #[serde(default)]
    pub report_url_template: Option<String>,
}

/// The webhook URL: the configured one, else `SLACK_WEBHOOK_URL` from the (granted) environment.
fn webhook_url(config: &Config) -> Option<String> {
    config
        .webhook_url
        .clone()
        .or_else(|| std::env::var(WEBHOOK_ENV).ok())
        .filter(|url| !url.trim().is_empty())
}

/// `scheme://host:port` of a URL, as requested from the operator.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    if authority.is_empty() {
        return None;
    }
    if authority.contains(':') {
        Some(format!("{scheme}://{authority}"))
    } else {
        let port = if scheme == "http" { 80 } else { 443 };
        Some(format!("{scheme}://{authority}:{port}"))
    }
}

/// Go-style duration (`2m35s`), rounded to seconds.
pub fn go_duration(milliseconds: u64) -> String {
    let total = (milliseconds + 500) / 1000;
    let (hours, minutes, seconds) = (total / 3600, (total % 3600) / 60, total % 60);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, _) => format!("{minutes}m{seconds}s"),
        _ => format!("{hours}h{minutes}m{seconds}s"),
    }
}

/// Root cause and confidence from the report, as the original `ExtractSummaryFromReport` did.
pub fn extract_summary(report: &str) -> (String, String) {
    let mut confidence = "UNKNOWN".to_owned();
    let mut root_cause: Vec<String> = Vec::new();
    let mut in_root_cause = false;
    for line in report.lines() {
        let lower = line.to_lowercase();
        if lower.contains("confidence level")
            || lower.contains("confidence:")
            || line.contains("confidence)")
        {
            let upper = line.to_uppercase();
            confidence = if upper.contains("HIGH") {
                "HIGH"
            } else if upper.contains("MEDIUM") {
                "MEDIUM"
            } else {
                "LOW"
            }
            .to_owned();
        }
        if line.starts_with("## Root Cause") {
            in_root_cause = true;
            continue;
        }
        if in_root_cause {
            if line.starts_with("## ") {
                in_root_cause = false;
                continue;
            }
            let trimmed = line.trim();
            if !trimmed.is_empty()
                && !trimmed.starts_with('#')
                && !trimmed.starts_with("**Confidence")
            {
                root_cause.push(trimmed.to_owned());
                if root_cause.len() == 2 {
                    break;
                }
            }
        }
    }
    let root_cause = if root_cause.is_empty() {
        "See investigation report for details".to_owned()
    } else {
        root_cause.join(" ")
    };
    (root_cause, confidence)
}

/// The Block Kit payload.
pub fn message(
    incident: &Incident,
    agent_result: &AgentResult,
    report_url: Option<&str>,
) -> serde_json::Value {
    let resolved = agent_result.failure_reason.is_none();
    let (emoji, color) = if resolved {
        (":white_check_mark:", "good")
    } else {
        (":x:", "danger")
    };
    let event = &incident.event;
    let (root_cause, confidence) = extract_summary(&agent_result.report_markdown);
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("Kubernetes Incident Triage {emoji}")}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Cluster:*\n{}", incident.cluster)},
            {"type": "mrkdwn", "text": format!("*Namespace:*\n{}", event.resource.namespace.as_deref().unwrap_or(""))},
            {"type": "mrkdwn", "text": format!("*Resource:*\n{}/{}", event.resource.kind, event.resource.name)},
            {"type": "mrkdwn", "text": format!("*Reason:*\n{}", event.fault_type)},
        ]}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Root Cause ({confidence} confidence):*\n{root_cause}")}}),
        json!({"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("Incident ID: `{}` | Duration: {}", incident.id, go_duration(agent_result.duration_ms))},
        ]}),
    ];
    let footer = match report_url {
        Some(url) => {
            blocks.push(json!({"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "View Report"}, "url": url},
            ]}));
            "Report: URL (see button above)".to_owned()
        }
        None => format!("Report: incident {}", incident.id),
    };
    json!({"blocks": blocks, "attachments": [{"color": color, "footer": footer}]})
}

struct Slack;

impl PostTriage for Slack {
    fn describe() -> PluginInfo {
        let info = PluginInfo::new(
            "slack",
            env!("CARGO_PKG_VERSION"),
            "Posts the triage summary to a Slack incoming webhook",
        );
        // Ask exactly for the webhook's origin, so the operator's grant can be checked at load;
        // and for the variable holding the URL when the config does not give it.
        let config = nightcrier_plugin_sdk::config::<Config>().unwrap_or_default();
        let requested = webhook_url(&config)
            .and_then(|url| origin(&url))
            .unwrap_or_else(|| DEFAULT_ORIGIN.to_owned());
        let info = info.with_outbound_hosts(&[&requested]);
        if config.webhook_url.is_none() {
            info.with_env_vars(&[WEBHOOK_ENV])
        } else {
            info
        }
    }

    fn post_triage(incident: Incident, agent_result: AgentResult) -> Result<Outcome, PluginError> {
        let config: Config = nightcrier_plugin_sdk::config().map_err(PluginError::fatal)?;
        let Some(url) = webhook_url(&config) else {
            nightcrier_plugin_sdk::log::warn(
                "no Slack webhook URL: set SLACK_WEBHOOK_URL or webhook_url; nothing was sent",
            );
            return Ok(Outcome {
                report_markdown: None,
                fields: vec![(
                    "slack-status".to_owned(),
                    format!("not sent: {WEBHOOK_ENV} is not set"),
                )],
            });
        };
        let report_url = config
            .report_url_template
            .as_ref()
            .map(|template| template.replace("{id}", &incident.id));
        let payload = message(&incident, &agent_result, report_url.as_deref());
        let body =
            serde_json::to_vec(&payload).map_err(|error| PluginError::fatal(error.to_string()))?;
        let response =
            http::post(&url, &[("content-type", "application/json")], &body).map_err(|error| {
                PluginError::retryable(format!("slack webhook request failed: {error}"))
            })?;
        if response.status != 200 {
            let text = String::from_utf8_lossy(&response.body)
                .chars()
                .take(200)
                .collect::<String>();
            let retryable = response.status == 429 || response.status >= 500;
            return Err(PluginError {
                message: format!("slack webhook returned status {}: {text}", response.status),
                retryable,
            });
        }
        let (root_cause, confidence) = extract_summary(&agent_result.report_markdown);
        Ok(Outcome {
            report_markdown: None,
            fields: vec![
                ("root-cause".to_owned(), root_cause),
                ("confidence".to_owned(), confidence),
                ("slack-status".to_owned(), response.status.to_string()),
            ],
        })
    }
}

export_post_triage!(Slack);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_and_durations() {
        assert_eq!(
            origin("https://hooks.slack.com/services/T/B/x").as_deref(),
            Some("https://hooks.slack.com:443")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/hook").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(go_duration(155_000), "2m35s");
        assert_eq!(go_duration(4_000), "4s");
        assert_eq!(go_duration(3_723_000), "1h2m3s");
    }

    #[test]
    fn extracts_root_cause_and_confidence() {
        let report = "# Report\n## Root Cause\n\nThe image tag does not exist.\n**Confidence: HIGH**\nSecond line.\nThird.\n## Next\n";
        assert_eq!(
            extract_summary(report),
            (
                "The image tag does not exist. Second line.".to_owned(),
                "HIGH".to_owned()
            )
        );
        assert_eq!(
            extract_summary("nothing"),
            (
                "See investigation report for details".to_owned(),
                "UNKNOWN".to_owned()
            )
        );
    }
}
