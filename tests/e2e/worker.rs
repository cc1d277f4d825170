//! The worker loop on both backends: slots claim and finish, leases are renewed while an
//! investigation runs, and a lost lease cancels the investigation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::Utc;
use nightcrier::queue::{
    Incident, Investigate, JobOutcome, JobStatus, Lease, WorkerConfig, run_workers,
};
use tokio_util::sync::CancellationToken;

use crate::support::{backends, event, queue_all_pending};

/// Takes `duration` per incident, then reports success; counts cancellations.
struct FakeAgent {
    duration: Duration,
    cancelled: AtomicUsize,
    finished: AtomicUsize,
}

impl Investigate for FakeAgent {
    async fn investigate(
        &self,
        _incident: Incident,
        _lease: Lease,
        cancel: CancellationToken,
    ) -> JobOutcome {
        tokio::select! {
            _ = tokio::time::sleep(self.duration) => {
                self.finished.fetch_add(1, Ordering::SeqCst);
                JobOutcome::Done { exit_code: 0 }
            }
            _ = cancel.cancelled() => {
                self.cancelled.fetch_add(1, Ordering::SeqCst);
                JobOutcome::Abort { reason: "cancelled".into() }
            }
        }
    }
}

fn config(lease: Duration) -> WorkerConfig {
    WorkerConfig {
        owner: "test".into(),
        concurrency: 4,
        lease,
        poll_interval: Duration::from_millis(20),
        fleet_max_agents: None,
        max_attempts: 3,
        sweep_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_drain_the_queue_and_stop_on_shutdown() {
    for db in backends().await {
        let queue = db.queue().await;
        let events: Vec<_> = (0..40).map(|n| event(&format!("c{}", n % 5), n)).collect();
        queue.ingest_batch(&events).await.unwrap();
        queue_all_pending(&queue).await;
        let agent = Arc::new(FakeAgent {
            duration: Duration::from_millis(5),
            cancelled: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        });
        let shutdown = CancellationToken::new();
        let workers = tokio::spawn(run_workers(
            queue.clone(),
            config(Duration::from_secs(30)),
            agent.clone(),
            Vec::new(),
            shutdown.clone(),
        ));
        wait_for("all incidents resolved", async || {
            queue.counts().await.unwrap().get(&JobStatus::Resolved) == Some(&40)
        })
        .await;
        shutdown.cancel();
        workers.await.unwrap();
        assert_eq!(agent.finished.load(Ordering::SeqCst), 40, "{}", db.backend);
        assert_eq!(agent.cancelled.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_renewed_while_an_investigation_outlives_them() {
    for db in backends().await {
        let queue = db.queue().await;
        let ids = queue.ingest(&event("slow", 1)).await.unwrap();
        queue_all_pending(&queue).await;
        // the investigation takes four lease lengths; the sweeper runs all along
        let agent = Arc::new(FakeAgent {
            duration: Duration::from_millis(2000),
            cancelled: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        });
        let shutdown = CancellationToken::new();
        let workers = tokio::spawn(run_workers(
            queue.clone(),
            config(Duration::from_millis(500)),
            agent.clone(),
            Vec::new(),
            shutdown.clone(),
        ));
        wait_for("the slow incident resolved", async || {
            queue.get(ids.incident_id).await.unwrap().status == JobStatus::Resolved
        })
        .await;
        shutdown.cancel();
        workers.await.unwrap();
        let incident = queue.get(ids.incident_id).await.unwrap();
        assert_eq!(
            incident.attempts, 1,
            "{}: the lease never lapsed",
            db.backend
        );
        assert_eq!(agent.cancelled.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_cancels_the_investigation() {
    for db in backends().await {
        let queue = db.queue().await;
        let ids = queue.ingest(&event("stolen", 1)).await.unwrap();
        queue_all_pending(&queue).await;
        let agent = Arc::new(FakeAgent {
            duration: Duration::from_secs(120),
            cancelled: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        });
        let shutdown = CancellationToken::new();
        let mut cfg = config(Duration::from_millis(600));
        cfg.concurrency = 1;
        cfg.sweep_interval = Duration::from_secs(3600);
        cfg.shutdown_grace = Duration::from_millis(100);
        let workers = tokio::spawn(run_workers(
            queue.clone(),
            cfg,
            agent.clone(),
            Vec::new(),
            shutdown.clone(),
        ));
        wait_for("the incident claimed", async || {
            queue.get(ids.incident_id).await.unwrap().status == JobStatus::Investigating
        })
        .await;
        // another replica's sweeper, with a clock far ahead, takes the lease away
        let swept = queue
            .sweep_expired(3, Utc::now() + chrono::Duration::hours(1))
            .await
            .unwrap();
        assert_eq!(swept.requeued, vec![ids.incident_id], "{}", db.backend);
        wait_for("the investigation cancelled", async || {
            agent.cancelled.load(Ordering::SeqCst) == 1
        })
        .await;
        // the abandoned outcome was not written: the incident is claimed afresh
        wait_for("the second attempt", async || {
            let incident = queue.get(ids.incident_id).await.unwrap();
            incident.status == JobStatus::Investigating && incident.attempts == 2
        })
        .await;
        // shutdown cuts the second attempt short after the grace period: back to the queue
        shutdown.cancel();
        workers.await.unwrap();
        assert_eq!(agent.cancelled.load(Ordering::SeqCst), 2, "{}", db.backend);
        let incident = queue.get(ids.incident_id).await.unwrap();
        assert_eq!(incident.status, JobStatus::Queued, "{}", db.backend);
        assert!(incident.failure_reason.unwrap().contains("shutting down"));
    }
}

/// An investigator that is not ready holds every claim (the incidents stay queued, none is
/// taken and failed); once it is ready, the workers drain the queue.
struct GatedAgent {
    open: std::sync::atomic::AtomicBool,
    investigated: AtomicUsize,
}

impl Investigate for GatedAgent {
    async fn investigate(
        &self,
        _incident: Incident,
        _lease: Lease,
        _cancel: CancellationToken,
    ) -> JobOutcome {
        self.investigated.fetch_add(1, Ordering::SeqCst);
        JobOutcome::Done { exit_code: 0 }
    }

    async fn ready(&self) -> Result<(), String> {
        if self.open.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("a secret is missing".into())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_ready_investigator_keeps_incidents_queued() {
    for db in backends().await {
        let queue = db.queue().await;
        let events: Vec<_> = (0..3).map(|n| event(&format!("g{n}"), n)).collect();
        queue.ingest_batch(&events).await.unwrap();
        queue_all_pending(&queue).await;
        let agent = Arc::new(GatedAgent {
            open: std::sync::atomic::AtomicBool::new(false),
            investigated: AtomicUsize::new(0),
        });
        let shutdown = CancellationToken::new();
        let workers = tokio::spawn(run_workers(
            queue.clone(),
            config(Duration::from_secs(30)),
            agent.clone(),
            Vec::new(),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            agent.investigated.load(Ordering::SeqCst),
            0,
            "{}",
            db.backend
        );
        let counts = queue.counts().await.unwrap();
        assert_eq!(
            counts.get(&JobStatus::Queued),
            Some(&3),
            "{}: {counts:?}",
            db.backend
        );
        agent.open.store(true, Ordering::SeqCst);
        wait_for("all incidents resolved", async || {
            queue.counts().await.unwrap().get(&JobStatus::Resolved) == Some(&3)
        })
        .await;
        shutdown.cancel();
        workers.await.unwrap();
    }
}
