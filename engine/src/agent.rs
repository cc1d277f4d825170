//! Glue between the queue and the Docker agent runtime (`nightcrier-agent`): the database
//! implementations of its persistence traits, and [`AgentInvestigator`], which runs an incident's
//! agent and turns its outcome into a [`JobOutcome`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Utc};
use futures::future::BoxFuture;
use nightcrier_agent::{
    AgentOutcome, AgentProfile, AgentRequest, BreakerEvent, BreakerState, BreakerStateStore,
    DockerRunner, ExecutionFinish, ExecutionRecorder, ExecutionStart, FailureReason, IncidentInput,
    IncidentStatus, PermissionsSource,
};
use sea_orm::{ConnectionTrait, Statement};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::ClusterSettings;
use crate::queue::{Incident, Investigate, JobOutcome, Lease};
use crate::store::{NewExecution, NewReport, Store};
use nightcrier_plugin_host::PluginHost;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Records agent executions in `agent_executions`.
#[derive(Clone, Debug)]
pub struct DbRecorder {
    store: Store,
}

impl DbRecorder {
    /// A recorder writing to `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    async fn attempt_of(&self, incident_id: Uuid) -> Result<i32, BoxError> {
        let db = self.store.connection();
        let row = db
            .query_one_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                "SELECT attempts FROM incidents WHERE id = $1",
                [incident_id.to_string().into()],
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get("", "attempts")?,
            None => 0,
        })
    }

    async fn start(&self, start: &ExecutionStart) -> Result<(), BoxError> {
        let incident_id = Uuid::parse_str(&start.incident_id)?;
        let attempt = self.attempt_of(incident_id).await?;
        self.store
            .insert_execution(&NewExecution {
                incident_id,
                attempt,
                agent_profile: start.profile.clone(),
                image: start.image.clone(),
                container_id: start.container_id.clone(),
                started_at: start.started_at,
                log_paths: serde_json::to_value(start.log_paths.as_map())?,
            })
            .await?;
        Ok(())
    }

    async fn finish(&self, finish: &ExecutionFinish) -> Result<(), BoxError> {
        let incident_id = Uuid::parse_str(&finish.incident_id)?;
        let error_message = finish.failure.as_ref().map(ToString::to_string);
        let changed = self
            .store
            .finish_execution(
                incident_id,
                &finish.container_id,
                finish.completed_at,
                finish.exit_code,
                error_message.clone(),
            )
            .await?;
        if changed == 0 {
            // A run that never got a container has no start record: write the whole row.
            let attempt = self.attempt_of(incident_id).await?;
            self.store
                .insert_execution(&NewExecution {
                    incident_id,
                    attempt,
                    agent_profile: finish.profile.clone(),
                    image: finish.image.clone(),
                    container_id: finish.container_id.clone(),
                    started_at: finish.started_at,
                    log_paths: serde_json::Value::Null,
                })
                .await?;
            self.store
                .finish_execution(
                    incident_id,
                    &finish.container_id,
                    finish.completed_at,
                    finish.exit_code,
                    error_message,
                )
                .await?;
        }
        Ok(())
    }
}

impl ExecutionRecorder for DbRecorder {
    fn record_start<'a>(
        &'a self,
        start: &'a ExecutionStart,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(self.start(start))
    }

    fn record_finish<'a>(
        &'a self,
        finish: &'a ExecutionFinish,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(self.finish(finish))
    }
}

/// Keeps circuit-breaker state in `circuit_breakers`, so a restart does not reset it.
#[derive(Clone, Debug)]
pub struct DbBreakerStore {
    store: Store,
}

impl DbBreakerStore {
    /// A breaker store writing to `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl BreakerStateStore for DbBreakerStore {
    fn load<'a>(&'a self, scope: &'a str) -> BoxFuture<'a, Result<Option<BreakerState>, BoxError>> {
        Box::pin(async move {
            match self.store.load_breaker(scope).await? {
                Some(value) => Ok(Some(serde_json::from_value(value)?)),
                None => Ok(None),
            }
        })
    }

    fn save<'a>(
        &'a self,
        scope: &'a str,
        state: &'a BreakerState,
    ) -> BoxFuture<'a, Result<(), BoxError>> {
        Box::pin(async move {
            let value = serde_json::to_value(state)?;
            self.store.save_breaker(scope, value, Utc::now()).await?;
            Ok(())
        })
    }
}

/// What the investigator needs besides the runner.
#[derive(Clone, Debug)]
pub struct InvestigatorSettings {
    /// Profiles by name.
    pub profiles: BTreeMap<String, AgentProfile>,
    /// The profile used when nothing else names one.
    pub default_profile: String,
    /// The system prompt.
    pub system_prompt: String,
    /// Per-cluster settings.
    pub clusters: BTreeMap<String, ClusterSettings>,
    /// The workspace root (to read the report back).
    pub workspace_root: PathBuf,
}

/// Runs the agent of an incident in Docker and stores its report.
#[derive(Clone)]
pub struct AgentInvestigator {
    runner: DockerRunner,
    store: Store,
    settings: Arc<InvestigatorSettings>,
    plugins: Option<PluginHost>,
}

impl AgentInvestigator {
    /// An investigator over `runner`, recording into `store`, running post-triage plugins of
    /// `plugins` on each result.
    pub fn new(
        runner: DockerRunner,
        store: Store,
        settings: InvestigatorSettings,
        plugins: Option<PluginHost>,
    ) -> Self {
        Self {
            runner,
            store,
            settings: Arc::new(settings),
            plugins,
        }
    }

    async fn request(&self, incident: &Incident) -> Result<AgentRequest, String> {
        let cluster = self
            .settings
            .clusters
            .get(&incident.cluster)
            .cloned()
            .unwrap_or_default();
        let profile_name = incident
            .agent_profile
            .clone()
            .or(cluster.agent_profile.clone())
            .unwrap_or_else(|| self.settings.default_profile.clone());
        let profile = self
            .settings
            .profiles
            .get(&profile_name)
            .cloned()
            .ok_or_else(|| format!("unknown agent profile `{profile_name}`"))?;
        let event = self
            .store
            .fault_event(&incident.fault_event_id.to_string())
            .await
            .map_err(|e| format!("cannot read the fault event: {e}"))?
            .ok_or_else(|| format!("fault event {} is missing", incident.fault_event_id))?;
        let resource = serde_json::json!({
            "apiVersion": event.resource_api_version.clone().unwrap_or_default(),
            "kind": event.resource_kind.clone().unwrap_or_else(|| "Unknown".into()),
            "name": event.resource_name.clone().unwrap_or_else(|| "Unknown".into()),
            "namespace": event.resource_namespace.clone(),
            "uid": event.resource_uid.clone(),
        });
        let permissions = match &cluster.kubeconfig {
            Some(kubeconfig) => PermissionsSource::Probe {
                kubeconfig: kubeconfig.clone(),
                secrets_access_allowed: cluster.secrets_access_allowed,
            },
            None => PermissionsSource::Unknown,
        };
        let context_files = incident
            .annotations
            .iter()
            .filter_map(|(key, value)| {
                key.strip_prefix("context-file/")
                    .map(|name| (name.to_owned(), value.clone().into_bytes()))
            })
            .collect();
        Ok(AgentRequest {
            incident: IncidentInput {
                incident_id: incident.id.to_string(),
                fault_id: event.fault_id.clone().unwrap_or_default(),
                created_at: DateTime::<FixedOffset>::from(incident.created_at),
                cluster: incident.cluster.clone(),
                namespace: event.resource_namespace.clone().unwrap_or_default(),
                resource,
                fault_type: event.fault_type.clone(),
                severity: event.severity.clone(),
                context: event.context.clone(),
                timestamp: event.timestamp.clone().unwrap_or_default(),
            },
            permissions,
            kubeconfig: cluster.kubeconfig.clone(),
            context_files,
            system_prompt: self.settings.system_prompt.clone(),
            additional_prompt: None,
            profile,
        })
    }

    async fn store_report(&self, incident: &Incident, outcome: &AgentOutcome) {
        let path = self
            .settings
            .workspace_root
            .join(incident.id.to_string())
            .join("output")
            .join("investigation.md");
        let raw = tokio::fs::read_to_string(&path).await.unwrap_or_default();
        let mut markdown = raw.clone();
        let mut structured = None;
        if let Some(host) = &self.plugins
            && let Ok(Some(event)) = self
                .store
                .fault_event(&incident.fault_event_id.to_string())
                .await
        {
            let result = nightcrier_plugin_host::types::AgentResult {
                exit_code: outcome
                    .exit_code
                    .map(|code| i32::try_from(code).unwrap_or(i32::MIN))
                    .unwrap_or(-1),
                duration_ms: u64::try_from(
                    (outcome.completed_at - outcome.started_at).num_milliseconds(),
                )
                .unwrap_or_default(),
                failure_reason: outcome.failure.as_ref().map(ToString::to_string),
                report_markdown: raw,
                artifact_names: vec!["investigation.md".into()],
            };
            if let Some(verdict) =
                crate::plugin::post_triage(host, &self.store, incident, &event, result).await
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
            .map(|line| line.chars().take(300).collect());
        let report = NewReport {
            incident_id: incident.id,
            execution_id,
            markdown,
            html: None,
            structured,
            summary,
            artifact_uri: Some(path.display().to_string()),
            storage_type: "filesystem".into(),
        };
        if let Err(error) = self.store.insert_report(&report, Utc::now()).await {
            tracing::error!(incident_id = %incident.id, error = %error, "could not store the report");
        }
    }
}

/// Maps the runtime's outcome onto the queue's.
pub fn job_outcome(outcome: &AgentOutcome) -> JobOutcome {
    let exit_code = outcome
        .exit_code
        .map(|code| i32::try_from(code).unwrap_or(i32::MIN));
    match (&outcome.status, &outcome.failure) {
        (IncidentStatus::Resolved, _) => JobOutcome::Done {
            exit_code: exit_code.unwrap_or(0),
        },
        // The harness failed (image missing, Docker refused): the agent never judged the
        // incident, so it is nightcrier's failure, not the agent's.
        (_, Some(reason @ FailureReason::Harness(_))) => JobOutcome::Abort {
            reason: reason.to_string(),
        },
        (_, failure) => JobOutcome::AgentFailed {
            reason: failure
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_else(|| "agent failed".into()),
            exit_code,
        },
    }
}

impl Investigate for AgentInvestigator {
    async fn investigate(
        &self,
        incident: Incident,
        _lease: Lease,
        cancel: CancellationToken,
    ) -> JobOutcome {
        let request = match self.request(&incident).await {
            Ok(request) => request,
            Err(reason) => return JobOutcome::Abort { reason },
        };
        let outcome = tokio::select! {
            outcome = self.runner.run(request) => outcome,
            // Dropping the run stops and removes its container.
            _ = cancel.cancelled() => {
                return JobOutcome::RetryAfter {
                    delay: std::time::Duration::ZERO,
                    reason: "investigation cancelled".into(),
                };
            }
        };
        match outcome {
            Ok(outcome) => {
                log_breaker_event(outcome.breaker_event.as_ref());
                self.store_report(&incident, &outcome).await;
                job_outcome(&outcome)
            }
            Err(error) => JobOutcome::Abort {
                reason: format!("cannot prepare the agent run: {error}"),
            },
        }
    }
}

/// Reports the breaker's alerts; delivery to people is a post-triage plugin's job.
pub fn log_breaker_event(event: Option<&BreakerEvent>) {
    match event {
        Some(BreakerEvent::Degraded { .. }) => {
            tracing::error!(event = ?event, "agent circuit breaker opened: triage is degraded");
        }
        Some(BreakerEvent::Recovered { .. }) => {
            tracing::warn!(event = ?event, "agent circuit breaker closed: triage recovered");
        }
        None => {}
    }
}
