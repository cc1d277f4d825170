//! The pre-triage stage: leases pending incidents and lets a [`PreTriage`] decide whether each
//! is queued (possibly patched), skipped or deferred. `plugin::PluginPreTriage` implements
//! [`PreTriage`]; without plugins it queues everything (the core rule: 1 fault event = 1
//! incident, no policy).

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::queue::{Incident, Queue, QueuePatch};

/// What pre-triage decided for one incident.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Queue it, with these changes.
    Proceed(QueuePatch),
    /// Do not investigate it.
    Skip(String),
    /// Look again after this long.
    Delay(Duration),
}

/// Decides what happens to a pending incident.
pub trait PreTriage: Send + Sync + 'static {
    /// The decision for `incident`.
    fn decide(&self, incident: &Incident) -> impl Future<Output = Decision> + Send;
}

/// How long a pre-triage lease on a pending incident lasts.
const PRE_TRIAGE_LEASE: Duration = Duration::from_secs(60);
/// Pending incidents taken per round.
const BATCH: u64 = 100;

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
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(poll_interval) => continue,
            }
        }
        for incident in taken {
            let decision = pre_triage.decide(&incident).await;
            let result = match &decision {
                Decision::Proceed(patch) => {
                    queue
                        .mark_queued(&incident, &owner, patch, Utc::now())
                        .await
                }
                Decision::Skip(reason) => {
                    queue
                        .mark_skipped(incident.id, &owner, reason, Utc::now())
                        .await
                }
                Decision::Delay(delay) => {
                    queue
                        .defer_pending(incident.id, &owner, *delay, Utc::now())
                        .await
                }
            };
            match result {
                Ok(()) => {
                    tracing::info!(incident_id = %incident.id, cluster = %incident.cluster, decision = ?decision, "pre-triage decided")
                }
                Err(error) => {
                    tracing::error!(incident_id = %incident.id, error = %error, "recording the pre-triage decision failed")
                }
            }
        }
    }
}
