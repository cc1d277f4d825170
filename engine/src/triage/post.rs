//! The post-triage stage: after an agent run (fresh or re-attached after a restart), runs the
//! post-triage plugins on its result (redact, enrich, notify) and hands the report they leave to
//! the report stage ([`crate::report`]). The report it starts from is the runtime's, with every secret nightcrier
//! handed the agent already masked, so no plugin and no row ever sees one.

use chrono::Utc;
use nightcrier_agent::AgentOutcome;
use nightcrier_plugin_host::types::{self, AgentResult};
use nightcrier_plugin_host::{PluginHost, PostTriageVerdict, World};
use uuid::Uuid;

use crate::plugin::wit_incident;
use crate::queue::Incident;
use crate::report::{Draft, Reports};
use crate::store::entity::fault_events;
use crate::store::{NewPluginRun, Store};

/// Most characters of the summary line kept with a report.
const SUMMARY_CHARS: usize = 300;

/// Runs post-triage plugins on agent results and stores the reports.
#[derive(Clone)]
pub struct PostTriage {
    store: Store,
    plugins: Option<PluginHost>,
    reports: Reports,
}

impl PostTriage {
    /// A stage writing to `store`, running the post-triage plugins of `plugins`, handing
    /// reports to `reports`.
    pub fn new(store: Store, plugins: Option<PluginHost>, reports: Reports) -> Self {
        Self {
            store,
            plugins,
            reports,
        }
    }

    /// Post-triage of one run: the plugin chain over its result, then the report, if any, to
    /// the report stage. Failures are logged and recorded in `plugin_runs`; they never change
    /// the incident's outcome.
    pub async fn finish(&self, incident: &Incident, outcome: &AgentOutcome) {
        let raw = outcome.report.clone().unwrap_or_default();
        let mut markdown = raw.clone();
        let mut structured = None;
        if let Some(host) = &self.plugins {
            match self
                .store
                .fault_event(&incident.fault_event_id.to_string())
                .await
            {
                Ok(Some(event)) => {
                    if let Some(verdict) = run_chain(
                        host,
                        &self.store,
                        incident,
                        &event,
                        agent_result(outcome, raw),
                    )
                    .await
                    {
                        markdown = verdict.report_markdown;
                        let fields: serde_json::Map<String, serde_json::Value> = verdict
                            .fields
                            .into_iter()
                            .map(|(plugin, key, value)| (format!("{plugin}.{key}"), value.into()))
                            .collect();
                        structured = Some(serde_json::Value::Object(fields));
                    }
                }
                Ok(None) => {
                    tracing::error!(incident_id = %incident.id, "fault event missing; post-triage plugins skipped");
                }
                Err(error) => {
                    tracing::error!(incident_id = %incident.id, error = %error, "cannot read the fault event; post-triage plugins skipped");
                }
            }
        }
        if markdown.is_empty() {
            return;
        }
        let execution_id = self
            .store
            .agent_executions(incident.id)
            .await
            .ok()
            .and_then(|runs| {
                runs.into_iter()
                    .rev()
                    .find(|run| run.container_id.as_deref() == Some(outcome.container_id.as_str()))
            })
            .and_then(|run| Uuid::parse_str(&run.id).ok());
        let summary = markdown
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .map(|line| line.chars().take(SUMMARY_CHARS).collect());
        let artifact = outcome
            .log_paths
            .full
            .parent()
            .and_then(|logs| logs.parent())
            .map(|workspace| {
                workspace
                    .join(nightcrier_agent::workspace::REPORT_FILE)
                    .display()
                    .to_string()
            });
        let draft = Draft {
            execution_id,
            markdown,
            structured,
            summary,
            artifact_uri: artifact,
            outcome: Some((outcome.status.as_str().to_owned(), outcome.completed_at)),
        };
        self.reports.keep(incident, draft).await;
    }
}

/// The WIT view of a run's result.
fn agent_result(outcome: &AgentOutcome, report: String) -> AgentResult {
    types::AgentResult {
        exit_code: outcome
            .exit_code
            .map(|code| i32::try_from(code).unwrap_or(i32::MIN))
            .unwrap_or(-1),
        duration_ms: u64::try_from((outcome.completed_at - outcome.started_at).num_milliseconds())
            .unwrap_or_default(),
        failure_reason: outcome.failure.as_ref().map(ToString::to_string),
        report_markdown: report,
        artifact_names: vec!["investigation.md".into()],
    }
}

/// Runs the post-triage chain on an agent's result; returns the (possibly redacted) report and
/// the structured fields, or `None` when no post-triage plugin is loaded.
pub async fn run_chain(
    host: &PluginHost,
    store: &Store,
    incident: &Incident,
    event: &fault_events::Model,
    result: types::AgentResult,
) -> Option<PostTriageVerdict> {
    let chain = host.chain(World::PostTriage);
    if chain.is_empty() {
        return None;
    }
    let started = tokio::time::Instant::now();
    let verdict = host
        .run_post_triage(&wit_incident(incident, event), &result)
        .await;
    let took = started.elapsed();
    let (outcome, error, verdict) = match verdict {
        Ok(verdict) => {
            // each plugin that failed under fail-open gets its own row, as in pre-triage
            for (plugin, error, _) in &verdict.failures {
                tracing::warn!(incident_id = %incident.id, plugin = %plugin, error = %error, "post-triage plugin failed (fail-open)");
                let run = NewPluginRun {
                    incident_id: Some(incident.id),
                    stage: "post_triage",
                    plugin: plugin.clone(),
                    plugin_version: host.plugin(plugin).map(|summary| summary.version),
                    outcome: "failed-open".to_owned(),
                    duration: took,
                    error: Some(error.clone()),
                };
                if let Err(error) = store.insert_plugin_run(&run, Utc::now()).await {
                    tracing::error!(incident_id = %incident.id, error = %error, "recording a plugin run failed");
                }
            }
            ("done", None, Some(verdict))
        }
        Err(error) => {
            tracing::error!(incident_id = %incident.id, error = %error, "post-triage failed");
            ("error", Some(error.to_string()), None)
        }
    };
    let run = NewPluginRun {
        incident_id: Some(incident.id),
        stage: "post_triage",
        plugin: chain.join(","),
        plugin_version: None,
        outcome: outcome.to_owned(),
        duration: took,
        error,
    };
    if let Err(error) = store.insert_plugin_run(&run, Utc::now()).await {
        tracing::error!(incident_id = %incident.id, error = %error, "recording a plugin run failed");
    }
    verdict
}
