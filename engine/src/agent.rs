//! Glue between the queue and the Docker agent runtime (`nightcrier-agent`): the database
//! implementations of its persistence traits, and [`AgentInvestigator`], which runs an incident's
//! agent (or drives one re-attached after a restart), hands the result to post-triage, turns the
//! outcome into a [`JobOutcome`], and holds claims while a profile cannot run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, Utc};
use futures::future::BoxFuture;
use nightcrier_agent::{
    AgentOutcome, AgentProfile, AgentRequest, BreakerEvent, BreakerState, BreakerStateStore,
    DockerRunner, ExecutionFinish, ExecutionRecorder, ExecutionStart, FailureReason, IncidentInput,
    IncidentStatus, PendingRun, PermissionsSource, ProfileProblem,
};
use sea_orm::{ConnectionTrait, Statement};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::ClusterSettings;
use crate::queue::{Incident, Investigate, JobOutcome, Lease};
use crate::store::{NewExecution, Store};
use crate::triage::PostTriage;

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
}

/// How often a profile found not ready is checked again.
const RECHECK_EVERY: Duration = Duration::from_secs(5);
/// How often the error about a profile still not ready is repeated.
const REALERT_EVERY: Duration = Duration::from_secs(60);

/// A profile that cannot run (a secret or its image went missing after start-up): while any is,
/// no incident is claimed, so none is failed for it.
struct NotReady {
    profile: AgentProfile,
    problems: Vec<ProfileProblem>,
    next_check: Instant,
    next_alert: Instant,
}

/// Runs the agent of an incident in Docker (or drives the run re-attached after a restart) and
/// hands its result to post-triage.
#[derive(Clone)]
pub struct AgentInvestigator {
    runner: DockerRunner,
    store: Store,
    settings: Arc<InvestigatorSettings>,
    post_triage: PostTriage,
    /// Runs re-attached at start-up, waiting for the worker to resume their incident.
    reattached: Arc<std::sync::Mutex<HashMap<Uuid, PendingRun>>>,
    not_ready: Arc<tokio::sync::Mutex<BTreeMap<String, NotReady>>>,
    /// Where the circuit breaker's degraded and recovered alerts go.
    alerts: Option<crate::alert::Alerts>,
}

impl AgentInvestigator {
    /// An investigator over `runner`, recording into `store`, handing each result to
    /// `post_triage`.
    pub fn new(
        runner: DockerRunner,
        store: Store,
        settings: InvestigatorSettings,
        post_triage: PostTriage,
    ) -> Self {
        Self {
            runner,
            store,
            settings: Arc::new(settings),
            post_triage,
            reattached: Arc::default(),
            not_ready: Arc::default(),
            alerts: None,
        }
    }

    /// Raises the circuit breaker's degraded and recovered alerts through `alerts` (recorded and
    /// delivered to the plugins that handle alerts) besides logging them.
    pub fn with_alerts(mut self, alerts: crate::alert::Alerts) -> Self {
        self.alerts = Some(alerts);
        self
    }

    /// Keeps runs re-attached after a restart; the worker resumes each incident through
    /// [`Investigate::investigate`], which then drives the run instead of starting one. A run
    /// whose incident is never resumed is dropped with the investigator, which removes its
    /// container.
    pub fn adopt(&self, runs: Vec<(Uuid, PendingRun)>) {
        self.reattached_runs().extend(runs);
    }

    fn reattached_runs(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, PendingRun>> {
        self.reattached
            .lock()
            .expect("the re-attached runs lock is never poisoned")
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

    /// Holds claims until `profile` can run again, alerting now and every minute.
    async fn hold_for(&self, profile: &AgentProfile, problem: &ProfileProblem) {
        let mut not_ready = self.not_ready.lock().await;
        if not_ready.contains_key(&profile.name) {
            return;
        }
        tracing::error!(profile = %profile.name, error = %problem, "agent profile is not ready: no incident is claimed until it is fixed; incidents stay queued");
        let now = Instant::now();
        not_ready.insert(
            profile.name.clone(),
            NotReady {
                profile: profile.clone(),
                problems: vec![problem.clone()],
                next_check: now + RECHECK_EVERY,
                next_alert: now + REALERT_EVERY,
            },
        );
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
        // A missing secret or image is a configuration problem: the incident goes back to the
        // queue untouched, and claims wait until the profile is ready again.
        (_, Some(reason @ FailureReason::NotReady(_))) => JobOutcome::RetryAfter {
            delay: Duration::ZERO,
            reason: reason.to_string(),
        },
        // The harness failed (Docker refused): the agent never judged the incident, so it is
        // nightcrier's failure, not the agent's.
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
        let cancelled = || JobOutcome::RetryAfter {
            delay: Duration::ZERO,
            reason: "investigation cancelled".into(),
        };
        let reattached = self.reattached_runs().remove(&incident.id);
        let (outcome, profile) = match reattached {
            Some(pending) => {
                tracing::info!(incident_id = %incident.id, cluster = %incident.cluster, "resuming the re-attached agent run");
                tokio::select! {
                    outcome = pending.run => (outcome, None),
                    // Dropping the run stops and removes its container.
                    _ = cancel.cancelled() => return cancelled(),
                }
            }
            None => {
                let request = match self.request(&incident).await {
                    Ok(request) => request,
                    Err(reason) => return JobOutcome::Abort { reason },
                };
                let profile = request.profile.clone();
                if let Some(queued_at) = incident.queued_at {
                    let waited = (chrono::Utc::now() - queued_at)
                        .to_std()
                        .unwrap_or_default();
                    metrics::histogram!("nightcrier_queue_wait_seconds", "profile" => profile.name.clone())
                        .record(waited.as_secs_f64());
                }
                let outcome = tokio::select! {
                    outcome = self.runner.run(request) => outcome,
                    _ = cancel.cancelled() => return cancelled(),
                };
                match outcome {
                    Ok(outcome) => (outcome, Some(profile)),
                    Err(error) => {
                        return JobOutcome::Abort {
                            reason: format!("cannot prepare the agent run: {error}"),
                        };
                    }
                }
            }
        };
        log_breaker_event(outcome.breaker_event.as_ref());
        if let (Some(alerts), Some(event)) = (&self.alerts, &outcome.breaker_event) {
            alerts.breaker(event).await;
        }
        let ran = (outcome.completed_at - outcome.started_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!(
            "nightcrier_agent_run_duration_seconds",
            "profile" => profile.as_ref().map_or_else(|| "resumed".to_owned(), |p| p.name.clone()),
            "outcome" => outcome.status.as_str()
        )
        .record(ran.as_secs_f64());
        if let (Some(FailureReason::NotReady(problem)), Some(profile)) =
            (&outcome.failure, &profile)
        {
            self.hold_for(profile, problem).await;
            return job_outcome(&outcome);
        }
        self.post_triage.finish(&incident, &outcome).await;
        job_outcome(&outcome)
    }

    async fn ready(&self) -> Result<(), String> {
        let mut not_ready = self.not_ready.lock().await;
        if not_ready.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        let mut fixed = Vec::new();
        for (name, state) in not_ready.iter_mut() {
            if now < state.next_check {
                continue;
            }
            state.next_check = now + RECHECK_EVERY;
            let problems = self.runner.check_profile(&state.profile, false).await;
            if problems.is_empty() {
                fixed.push(name.clone());
                continue;
            }
            state.problems = problems;
            if now >= state.next_alert {
                state.next_alert = now + REALERT_EVERY;
                for problem in &state.problems {
                    tracing::error!(profile = %name, error = %problem, "agent profile is still not ready: no incident is claimed; incidents stay queued");
                }
            }
        }
        for name in fixed {
            not_ready.remove(&name);
            tracing::warn!(profile = %name, "agent profile is ready again: claiming resumes");
        }
        if not_ready.is_empty() {
            return Ok(());
        }
        Err(not_ready
            .values()
            .flat_map(|state| state.problems.iter().map(ToString::to_string))
            .collect::<Vec<_>>()
            .join("; "))
    }
}

/// Logs the breaker's alerts; [`crate::alert::Alerts::breaker`] records and delivers them.
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
