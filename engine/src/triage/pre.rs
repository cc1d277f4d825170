//! The pre-triage stage: leases pending incidents and lets a [`PreTriage`] decide whether each
//! is queued (possibly patched), skipped or deferred. [`PluginPreTriage`] runs the pre-triage
//! plugins; without plugins it queues everything (the core rule: 1 fault event = 1 incident, no
//! policy).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use nightcrier_plugin_host::{PluginHost, PreTriageVerdict, World};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::plugin::{CONTEXT_FILE_ANNOTATION, wit_incident};
use crate::queue::{Decided, Incident, JobStatus, Queue, QueuePatch};
use crate::store::{NewPluginRun, Store};

pub use crate::queue::{Decision, Ruling};

/// Decides what happens to a pending incident.
pub trait PreTriage: Send + Sync + 'static {
    /// The decision for `incident`, with the plugin calls that made it (recorded with it).
    fn decide(&self, incident: &Incident) -> impl Future<Output = Ruling> + Send;
}

/// How long a pre-triage lease on a pending incident lasts.
const PRE_TRIAGE_LEASE: Duration = Duration::from_secs(60);
/// Pending incidents taken per round.
const BATCH: u64 = 100;

/// Decisions waiting longer than this (slow plugins) are recorded without waiting for the rest
/// of their round.
const RECORD_EVERY: Duration = Duration::from_secs(1);

/// Records `decided` in one transaction and empties it.
async fn record(queue: &Queue, owner: &str, decided: &mut Vec<Decided>) {
    if decided.is_empty() {
        return;
    }
    let outcomes = queue.record_decisions(owner, decided, Utc::now()).await;
    for (decided, outcome) in decided.drain(..).zip(outcomes) {
        let incident = &decided.incident;
        match outcome {
            Ok(()) => {
                tracing::debug!(incident_id = %incident.id, cluster = %incident.cluster, decision = ?decided.decision, "pre-triage decided")
            }
            Err(error) => {
                tracing::error!(incident_id = %incident.id, error = %error, "recording the pre-triage decision failed")
            }
        }
    }
}

/// Runs pre-triage until `shutdown` fires.
pub async fn run<P: PreTriage>(
    queue: Queue,
    owner: String,
    pre_triage: P,
    poll_interval: Duration,
    shutdown: CancellationToken,
) {
    let owner = format!("{owner}/pre-triage");
    while !shutdown.is_cancelled() {
        let taken = match queue
            .take_pending(&owner, BATCH, PRE_TRIAGE_LEASE, Utc::now())
            .await
        {
            Ok(taken) => taken,
            Err(error) => {
                tracing::error!(error = %error, "taking pending incidents failed");
                Vec::new()
            }
        };
        if taken.is_empty() {
            // Woken by new pending incidents of this process, or at the next deferral's due time.
            let now = Utc::now();
            let wait = match queue.next_due(JobStatus::Pending, now).await {
                Ok(Some(due)) => (due - now).to_std().unwrap_or_default().min(poll_interval),
                _ => poll_interval,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = queue.wait_for_pending(wait) => continue,
            }
        }
        // Decisions are recorded together, one transaction per round (or per second of slow
        // plugin calls, well inside the pre-triage lease): a storm of incidents costs
        // pre-triage a commit per batch, not one per incident, and leaves the database's write
        // lock (SQLite) and its log flushes to ingest.
        let mut decided = Vec::with_capacity(taken.len());
        let mut since = tokio::time::Instant::now();
        for incident in taken {
            let Ruling { decision, runs } = pre_triage.decide(&incident).await;
            decided.push(Decided {
                incident,
                decision,
                runs,
            });
            if since.elapsed() >= RECORD_EVERY {
                record(&queue, &owner, &mut decided).await;
                since = tokio::time::Instant::now();
            }
        }
        record(&queue, &owner, &mut decided).await;
    }
}

/// Pre-triage through the loaded pre-triage plugins, in their configured order; without a
/// plugin host, every incident proceeds unchanged.
#[derive(Clone)]
pub struct PluginPreTriage {
    host: Option<PluginHost>,
    store: Store,
}

impl PluginPreTriage {
    /// A pre-triage stage over `host`.
    pub fn new(host: Option<PluginHost>, store: Store) -> Self {
        Self { host, store }
    }

    fn run_of(
        &self,
        incident_id: Uuid,
        plugin: &str,
        outcome: &str,
        took: Duration,
        error: Option<String>,
    ) -> NewPluginRun {
        let version = self
            .host
            .as_ref()
            .and_then(|host| host.plugin(plugin))
            .map(|p| p.version);
        NewPluginRun {
            incident_id: Some(incident_id),
            stage: "pre_triage",
            plugin: plugin.to_owned(),
            plugin_version: version,
            outcome: outcome.to_owned(),
            duration: took,
            error,
        }
    }

    /// The decision for `incident`; the plugin calls made for it go to `runs`.
    async fn decide_into(&self, incident: &Incident, runs: &mut Vec<NewPluginRun>) -> Decision {
        let Some(host) = &self.host else {
            return Decision::Proceed(QueuePatch::default());
        };
        let chain = host.chain(World::PreTriage);
        if chain.is_empty() {
            return Decision::Proceed(QueuePatch::default());
        }
        let event = match self
            .store
            .fault_event(&incident.fault_event_id.to_string())
            .await
        {
            Ok(Some(event)) => event,
            Ok(None) => {
                return Decision::Skip(format!(
                    "fault event {} is missing",
                    incident.fault_event_id
                ));
            }
            Err(error) => {
                tracing::error!(incident_id = %incident.id, error = %error, "cannot read the fault event");
                return Decision::Delay(Duration::from_secs(30));
            }
        };
        let started = tokio::time::Instant::now();
        let verdict = host.run_pre_triage(&wit_incident(incident, &event)).await;
        let took = started.elapsed();
        let chain_name = chain.join(",");
        match verdict {
            Ok(PreTriageVerdict::Proceed {
                incident: patched,
                context_files,
                failures,
            }) => {
                for (plugin, error) in &failures {
                    runs.push(self.run_of(
                        incident.id,
                        plugin,
                        "failed-open",
                        took,
                        Some(error.clone()),
                    ));
                }
                runs.push(self.run_of(incident.id, &chain_name, "proceed", took, None));
                let mut annotations: BTreeMap<String, String> =
                    patched.annotations.into_iter().collect();
                for (path, content) in context_files {
                    annotations.insert(
                        format!("{CONTEXT_FILE_ANNOTATION}{path}"),
                        String::from_utf8_lossy(&content).into_owned(),
                    );
                }
                Decision::Proceed(QueuePatch {
                    labels: patched.labels.into_iter().collect(),
                    annotations,
                    priority: Some(i32::from(patched.priority)),
                    agent_profile: patched.agent_profile,
                })
            }
            Ok(PreTriageVerdict::Skip { plugin, reason }) => {
                runs.push(self.run_of(incident.id, &plugin, "skip", took, None));
                Decision::Skip(format!("{plugin}: {reason}"))
            }
            Ok(PreTriageVerdict::Delay { plugin, delay }) => {
                runs.push(self.run_of(incident.id, &plugin, "delay", took, None));
                Decision::Delay(delay)
            }
            Err(error) => {
                // fail-closed: a retryable failure waits, any other keeps the incident out of
                // the queue with the reason, for an operator to retry
                runs.push(self.run_of(
                    incident.id,
                    &chain_name,
                    "error",
                    took,
                    Some(error.to_string()),
                ));
                if error.is_retryable() {
                    Decision::Delay(Duration::from_secs(60))
                } else {
                    Decision::Skip(format!("pre-triage failed (fail-closed): {error}"))
                }
            }
        }
    }
}

impl PreTriage for PluginPreTriage {
    async fn decide(&self, incident: &Incident) -> Ruling {
        let mut runs = Vec::new();
        let decision = self.decide_into(incident, &mut runs).await;
        Ruling { decision, runs }
    }
}
