//! `slack`: posts the Block Kit incident message of the original nightcrier to a Slack webhook through `wasi:http`,
//! and nightcrier's operational alerts (triage degraded or recovered, a cluster's feed down or back
//! up) to the same webhook.

use nightcrier_plugin_sdk::{
    AgentResult, Alert, AlertHandler, Incident, Outcome, PluginError, PluginInfo, PostTriage,
    Severity, export_post_triage_with_alerts, http,
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

/// Heading, emoji and attachment colour of an alert, by kind (an open set: unknown kinds get a
/// generic heading from their severity).
fn alert_style(alert: &Alert) -> (String, &'static str, &'static str) {
    let cluster = alert.cluster.as_deref().unwrap_or("all clusters");
    match alert.kind.as_str() {
        "breaker-degraded" => (
            format!("Triage degraded on {cluster}"),
            ":rotating_light:",
            "danger",
        ),
        "breaker-recovered" => (
            format!("Triage recovered on {cluster}"),
            ":white_check_mark:",
            "good",
        ),
        "feed-down" => (
            format!("Event feed down on {cluster}"),
            ":electric_plug:",
            "danger",
        ),
        "feed-up" => (
            format!("Event feed back up on {cluster}"),
            ":white_check_mark:",
            "good",
        ),
        _ => {
            let (emoji, color) = match alert.severity {
                Severity::Critical => (":rotating_light:", "danger"),
                Severity::Warning => (":warning:", "warning"),
                Severity::Info => (":information_source:", "good"),
            };
            (format!("nightcrier alert: {}", alert.kind), emoji, color)
        }
    }
}

/// Slack's section text limit, kept well under.
const MAX_TEXT: usize = 2800;

fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(MAX_TEXT).collect();
    clipped.push('…');
    clipped
}

/// The Block Kit payload of an operational alert.
pub fn alert_message(alert: &Alert) -> serde_json::Value {
    let (heading, emoji, color) = alert_style(alert);
    let mut fields = vec![
        json!({"type": "mrkdwn", "text": format!("*Cluster:*\n{}", alert.cluster.as_deref().unwrap_or("-"))}),
        json!({"type": "mrkdwn", "text": format!("*Severity:*\n{}", alert.severity.as_str())}),
    ];
    // Slack allows ten fields in a section
    for (key, value) in alert.fields.iter().take(8) {
        fields.push(json!({"type": "mrkdwn", "text": format!("*{key}:*\n{}", clip(value))}));
    }
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": format!("{heading} {emoji}")}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": clip(&alert.summary)}}),
        json!({"type": "section", "fields": fields}),
    ];
    if !alert.detail.trim().is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{}```", clip(&alert.detail))}}));
    }
    blocks.push(json!({"type": "context", "elements": [
        {"type": "mrkdwn", "text": format!("Alert `{}` | {} | raised at {} ms", alert.id, alert.kind, alert.raised_at_ms)},
    ]}));
    json!({
        "text": format!("{heading}: {}", alert.summary),
        "blocks": blocks,
        "attachments": [{"color": color, "footer": format!("nightcrier alert {}", alert.kind)}],
    })
}

/// POST a payload to the webhook; Slack answers 200, a 429 or 5xx is worth retrying.
fn send(url: &str, payload: &serde_json::Value) -> Result<u16, PluginError> {
    let body =
        serde_json::to_vec(payload).map_err(|error| PluginError::fatal(error.to_string()))?;
    let response =
        http::post(url, &[("content-type", "application/json")], &body).map_err(|error| {
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
    Ok(response.status)
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
        let status = send(&url, &payload)?;
        let (root_cause, confidence) = extract_summary(&agent_result.report_markdown);
        Ok(Outcome {
            report_markdown: None,
            fields: vec![
                ("root-cause".to_owned(), root_cause),
                ("confidence".to_owned(), confidence),
                ("slack-status".to_owned(), status.to_string()),
            ],
        })
    }
}

impl AlertHandler for Slack {
    fn on_alert(alert: Alert) -> Result<(), PluginError> {
        let config: Config = nightcrier_plugin_sdk::config().map_err(PluginError::fatal)?;
        let Some(url) = webhook_url(&config) else {
            nightcrier_plugin_sdk::log::warn(
                "no Slack webhook URL: set SLACK_WEBHOOK_URL or webhook_url; the alert was not sent",
            );
            return Err(PluginError::fatal(format!(
                "not sent: {WEBHOOK_ENV} is not set"
            )));
        };
        send(&url, &alert_message(&alert)).map(|_| ())
    }
}

export_post_triage_with_alerts!(Slack);

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

    fn alert(kind: &str, severity: Severity) -> Alert {
        Alert {
            id: "0190f0e0-0000-7000-8000-000000000001".to_owned(),
            kind: kind.to_owned(),
            severity,
            cluster: Some("prod".to_owned()),
            summary: "triage is degraded on cluster prod: 3 agent runs failed in a row".to_owned(),
            detail: "agent exited with code 1".to_owned(),
            fields: vec![("consecutive-failures".to_owned(), "3".to_owned())],
            raised_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn alert_messages_name_what_happened() {
        for (kind, severity, heading, color) in [
            (
                "breaker-degraded",
                Severity::Critical,
                "Triage degraded on prod",
                "danger",
            ),
            (
                "breaker-recovered",
                Severity::Info,
                "Triage recovered on prod",
                "good",
            ),
            (
                "feed-down",
                Severity::Critical,
                "Event feed down on prod",
                "danger",
            ),
            (
                "feed-up",
                Severity::Info,
                "Event feed back up on prod",
                "good",
            ),
            (
                "disk-full",
                Severity::Warning,
                "nightcrier alert: disk-full",
                "warning",
            ),
        ] {
            let payload = alert_message(&alert(kind, severity));
            let header = payload["blocks"][0]["text"]["text"].as_str().unwrap();
            assert!(header.starts_with(heading), "{kind}: {header}");
            assert_eq!(payload["attachments"][0]["color"], color, "{kind}");
            assert!(
                payload["text"]
                    .as_str()
                    .unwrap()
                    .contains("3 agent runs failed")
            );
            let text = payload.to_string();
            assert!(
                text.contains("consecutive-failures") && text.contains("agent exited with code 1"),
                "{text}"
            );
        }
        let mut quiet = alert("feed-up", Severity::Info);
        quiet.detail = String::new();
        quiet.cluster = None;
        let payload = alert_message(&quiet);
        assert!(
            payload["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("all clusters")
        );
        assert_eq!(
            payload["blocks"].as_array().unwrap().len(),
            4,
            "no detail block when empty"
        );
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
