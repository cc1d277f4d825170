//! The worker loop: claim → investigate (with lease renewal) → finish, for N slots at once, plus
//! the sweeper that returns expired leases to the queue. Investigations resumed after a restart
//! take the same path from the investigation on: lease renewal, cancellation on a lost lease,
//! finish.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Incident, JobOutcome, JobStatus, Lease, Queue, QueueError};

/// Runs one investigation. Implemented by the agent runtime; tests use fakes.
pub trait Investigate: Send + Sync + 'static {
    /// Investigates `incident`. `cancel` fires when the lease is lost or the engine shuts down
    /// past its grace period; the investigation should then stop (its outcome is discarded).
    fn investigate(
        &self,
        incident: Incident,
        lease: Lease,
        cancel: CancellationToken,
    ) -> impl Future<Output = JobOutcome> + Send;

    /// Whether new incidents may be claimed now. `Err` (the reason) holds every claim: the
    /// incidents stay queued until it clears, rather than being taken and failed. Investigations
    /// already running are not affected.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send {
        async { Ok(()) }
    }
}

/// An investigation this process holds the lease of without claiming it now: one a previous
/// process started and this one re-attached to after a restart.
#[derive(Clone, Debug)]
pub struct Resumed {
    /// The incident.
    pub incident: Incident,
    /// The lease the previous process held (same owner and attempt, so still fenced).
    pub lease: Lease,
}

/// How workers behave.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Identity of this process in `lease_owner` (a slot number is appended).
    pub owner: String,
    /// Investigations run at once by this process.
    pub concurrency: usize,
    /// Lease length; renewed every `lease / 3`.
    pub lease: Duration,
    /// The fallback: how long an idle slot waits before looking again when no wake-up came
    /// (wake-ups come from this process, from other replicas through Postgres `NOTIFY`, and at a
    /// delayed incident's due time).
    pub poll_interval: Duration,
    /// Investigations running at once across every replica on the database (`None`: no cap).
    pub fleet_max_agents: Option<u32>,
    /// Claims after which an incident whose lease keeps expiring is failed.
    pub max_attempts: i32,
    /// How often the sweeper runs.
    pub sweep_interval: Duration,
    /// How long in-flight investigations may finish after shutdown before they are cancelled.
    pub shutdown_grace: Duration,
}

impl Default for WorkerConfig {
    /// The defaults of `[workers]`; the config file overrides each.
    fn default() -> Self {
        let lease = Duration::from_secs(60);
        Self {
            owner: "nightcrier".to_owned(),
            concurrency: 2,
            lease,
            poll_interval: Duration::from_secs(1),
            fleet_max_agents: None,
            max_attempts: 3,
            sweep_interval: sweep_interval(lease),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// How often the sweeper runs for a lease length: a quarter of it, at least every second, so an
/// expired lease is back in the queue soon after it runs out.
pub fn sweep_interval(lease: Duration) -> Duration {
    (lease / 4).max(Duration::from_secs(1))
}

/// Runs `config.concurrency` worker slots, the sweeper and (on Postgres) the wake-up listener
/// until `shutdown` fires, then lets in-flight investigations finish for `shutdown_grace` and
/// cancels the rest. Claims respect `config.fleet_max_agents`. Each of `resumed` runs first, one
/// per slot (in extra slots that end with it when there are more resumed investigations than
/// slots).
pub async fn run<I: Investigate>(
    queue: Queue,
    config: WorkerConfig,
    investigator: Arc<I>,
    resumed: Vec<Resumed>,
    shutdown: CancellationToken,
) {
    let queue = queue.with_fleet_max_agents(config.fleet_max_agents);
    let hard_stop = CancellationToken::new();
    let listener = {
        let queue = queue.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { queue.listen_for_wakeups(shutdown).await })
    };
    let mut slots = JoinSet::new();
    let claiming = config.concurrency.max(1);
    let mut resumed = resumed.into_iter();
    for slot in 0..claiming.max(resumed.len()) {
        let queue = queue.clone();
        let config = config.clone();
        let investigator = investigator.clone();
        let shutdown = shutdown.clone();
        let hard_stop = hard_stop.clone();
        let first = resumed.next();
        slots.spawn(async move {
            if let Some(Resumed { incident, lease }) = first {
                run_one(
                    &queue,
                    &config,
                    investigator.as_ref(),
                    incident,
                    lease,
                    &hard_stop,
                )
                .await;
            }
            if slot >= claiming {
                return;
            }
            let owner = format!("{}/{slot}", config.owner);
            slot_loop(
                &queue,
                &config,
                &owner,
                investigator.as_ref(),
                &shutdown,
                &hard_stop,
            )
            .await;
        });
    }
    let sweeper = {
        let queue = queue.clone();
        let config = config.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { sweep_loop(&queue, &config, &shutdown).await })
    };
    shutdown.cancelled().await;
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while slots.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(grace = ?config.shutdown_grace, "cancelling investigations still running after the shutdown grace period");
        hard_stop.cancel();
        while slots.join_next().await.is_some() {}
    }
    let _ = sweeper.await;
    let _ = listener.await;
}

async fn sweep_loop(queue: &Queue, config: &WorkerConfig, shutdown: &CancellationToken) {
    let mut ticker = tokio::time::interval(config.sweep_interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match queue.sweep_expired(config.max_attempts, Utc::now()).await {
            Ok(report) if !report.requeued.is_empty() || !report.failed.is_empty() => {
                tracing::warn!(
                    requeued = report.requeued.len(),
                    failed = report.failed.len(),
                    "swept expired leases"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::error!(error = %error, "sweep failed"),
        }
        if let Err(error) = queue.store().checkpoint().await {
            tracing::warn!(error = %error, "checkpoint failed");
        }
        if let Err(error) = queue.store().kv_purge_expired(Utc::now()).await {
            tracing::warn!(error = %error, "purging expired plugin keys failed");
        }
    }
}

async fn slot_loop<I: Investigate>(
    queue: &Queue,
    config: &WorkerConfig,
    owner: &str,
    investigator: &I,
    shutdown: &CancellationToken,
    hard_stop: &CancellationToken,
) {
    while !shutdown.is_cancelled() {
        if investigator.ready().await.is_err() {
            // The investigator says why, and alerts; the incidents wait in the queue.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(config.poll_interval) => continue,
            }
        }
        match queue.claim(owner, config.lease, Utc::now()).await {
            Ok(Some((incident, lease))) => {
                run_one(queue, config, investigator, incident, lease, hard_stop).await;
            }
            Ok(None) => {
                let wait = idle_wait(queue, config.poll_interval).await;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = queue.wait_for_work(wait) => {}
                }
            }
            Err(error) => {
                tracing::error!(worker = owner, error = %error, "claim failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(config.poll_interval) => {}
                }
            }
        }
    }
}

/// How long an idle slot waits for a wake-up: the poll interval, or less when a delayed
/// incident becomes due sooner.
async fn idle_wait(queue: &Queue, poll_interval: Duration) -> Duration {
    let now = Utc::now();
    match queue.next_due(JobStatus::Queued, now).await {
        Ok(Some(due)) => (due - now).to_std().unwrap_or_default().min(poll_interval),
        Ok(None) => poll_interval,
        Err(error) => {
            tracing::warn!(error = %error, "could not read the next due time; polling");
            poll_interval
        }
    }
}

async fn run_one<I: Investigate>(
    queue: &Queue,
    config: &WorkerConfig,
    investigator: &I,
    incident: Incident,
    mut lease: Lease,
    hard_stop: &CancellationToken,
) {
    let incident_id = incident.id;
    let cluster = incident.cluster.clone();
    tracing::info!(incident_id = %incident_id, cluster = %cluster, attempt = lease.attempt, "investigating");
    let cancel = hard_stop.child_token();
    let investigation = investigator.investigate(incident, lease.clone(), cancel.clone());
    tokio::pin!(investigation);
    let renew_every = (config.lease / 3).max(Duration::from_millis(10));
    let mut renew =
        tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
    let outcome = loop {
        tokio::select! {
            outcome = &mut investigation => break Some(outcome),
            _ = renew.tick() => {
                match queue.heartbeat(&mut lease, config.lease, Utc::now()).await {
                    Ok(()) => {}
                    Err(QueueError::LeaseLost { .. }) => {
                        tracing::warn!(incident_id = %incident_id, cluster = %cluster, "lease lost; abandoning the investigation");
                        cancel.cancel();
                        break None;
                    }
                    Err(error) => tracing::error!(incident_id = %incident_id, error = %error, "heartbeat failed"),
                }
            }
        }
    };
    let Some(mut outcome) = outcome else {
        // Let the investigation observe the cancellation and clean up.
        investigation.await;
        return;
    };
    if hard_stop.is_cancelled() {
        // The outcome of an investigation cut short by shutdown says nothing about the
        // incident: hand it back to the queue for this or another replica.
        outcome = JobOutcome::RetryAfter {
            delay: Duration::ZERO,
            reason: "interrupted by nightcrier shutting down".into(),
        };
    }
    match queue.finish(&lease, &outcome, Utc::now()).await {
        Ok(status) => {
            tracing::info!(incident_id = %incident_id, cluster = %cluster, status = %status, "investigation finished")
        }
        Err(error) => {
            tracing::error!(incident_id = %incident_id, cluster = %cluster, error = %error, "could not record the outcome")
        }
    }
}
