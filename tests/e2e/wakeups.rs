//! Wake-ups: with the poll interval set to a minute, an incident is still claimed within
//! seconds of being ingested — through pre-triage and the queue in one process (both backends),
//! from another queue over Postgres `LISTEN/NOTIFY`, after the listener's connection was killed,
//! and when a retry-later delay runs out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use nightcrier::Queue;
use nightcrier::queue::{
    Incident, Investigate, JobOutcome, JobStatus, LISTENER_APPLICATION_NAME, Lease, WorkerConfig,
    run_workers,
};
use nightcrier::triage::PluginPreTriage;
use sea_orm::{ConnectionTrait, Statement};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::support::{backends, event, postgres};

/// The fallback poll interval of these tests: far longer than any wake-up may take.
const POLL: Duration = Duration::from_secs(60);
/// How soon a woken incident must be claimed (a debug build on a busy machine).
const PROMPT: Duration = Duration::from_secs(5);

/// Records when each incident reached an agent; the first attempt of `retry_first` asks to be
/// retried after `retry_delay`.
#[derive(Default)]
struct Recorder {
    claimed: Mutex<Vec<(Uuid, Instant)>>,
    retry_first: Mutex<Option<(Uuid, Duration)>>,
}

impl Recorder {
    fn claimed_at(&self, id: Uuid) -> Vec<Instant> {
        self.claimed
            .lock()
            .unwrap()
            .iter()
            .filter(|(claimed, _)| *claimed == id)
            .map(|(_, at)| *at)
            .collect()
    }
}

impl Investigate for Recorder {
    async fn investigate(&self, incident: Incident, _: Lease, _: CancellationToken) -> JobOutcome {
        self.claimed
            .lock()
            .unwrap()
            .push((incident.id, Instant::now()));
        let retry = self
            .retry_first
            .lock()
            .unwrap()
            .take_if(|(id, _)| *id == incident.id);
        match retry {
            Some((_, delay)) => JobOutcome::RetryAfter {
                delay,
                reason: "retry later".into(),
            },
            None => JobOutcome::Done { exit_code: 0 },
        }
    }
}

fn config(owner: &str) -> WorkerConfig {
    WorkerConfig {
        owner: owner.into(),
        concurrency: 2,
        lease: Duration::from_secs(30),
        poll_interval: POLL,
        fleet_max_agents: None,
        max_attempts: 3,
        sweep_interval: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Workers, pre-triage and the listener of one process over `queue`.
struct Process {
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Process {
    fn start(queue: &Queue, owner: &str, agent: Arc<Recorder>) -> Self {
        let shutdown = CancellationToken::new();
        let pre_triage = PluginPreTriage::new(None, queue.store().clone());
        let tasks = vec![
            tokio::spawn(nightcrier::triage::run(
                queue.clone(),
                owner.to_owned(),
                pre_triage,
                POLL,
                shutdown.clone(),
            )),
            tokio::spawn(run_workers(
                queue.clone(),
                config(owner),
                agent,
                Vec::new(),
                shutdown.clone(),
            )),
        ];
        Self { shutdown, tasks }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.await.unwrap();
        }
    }
}

/// Ingests one incident on `queue` (pre-triage of its process queues it) and returns its id
/// and when it was committed.
async fn ingest(queue: &Queue, cluster: &str, n: usize) -> (Uuid, Instant) {
    let ids = queue.ingest(&event(cluster, n)).await.unwrap();
    (ids.incident_id, Instant::now())
}

/// Pre-triages everything pending on `queue` by hand (for a queue with no pre-triage task).
async fn queue_pending(queue: &Queue) {
    for incident in queue
        .take_pending("by-hand", 100, Duration::from_secs(60), Utc::now())
        .await
        .unwrap()
    {
        queue
            .mark_queued(&incident, "by-hand", &Default::default(), Utc::now())
            .await
            .unwrap();
    }
}

async fn resolved(queue: &Queue, id: Uuid) -> bool {
    queue.get(id).await.unwrap().status == JobStatus::Resolved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingested_incident_reaches_an_agent_long_before_the_poll_interval() {
    for db in backends().await {
        let queue = db.queue().await;
        let agent = Arc::new(Recorder::default());
        let process = Process::start(&queue, "solo", agent.clone());
        // Three rounds: after the first, every slot and pre-triage are idle in their one-minute
        // wait, so only a wake-up can get the next incident through in time.
        for round in 0..3 {
            let (id, committed) = ingest(&queue, &format!("c{round}"), round).await;
            wait_for("the incident resolved", async || resolved(&queue, id).await).await;
            let claimed = agent.claimed_at(id)[0];
            assert!(
                claimed - committed < PROMPT,
                "{}: round {round}: claimed {:?} after ingest with a {POLL:?} poll interval",
                db.backend,
                claimed - committed
            );
        }
        // A retry-later delay wakes a slot when it runs out, not at the next poll.
        let (id, _) = ingest(&queue, "delayed", 9).await;
        *agent.retry_first.lock().unwrap() = Some((id, Duration::from_millis(1500)));
        wait_for("the delayed incident resolved", async || {
            resolved(&queue, id).await
        })
        .await;
        let attempts = agent.claimed_at(id);
        assert_eq!(attempts.len(), 2, "{}", db.backend);
        let gap = attempts[1] - attempts[0];
        assert!(
            gap >= Duration::from_millis(1400) && gap < Duration::from_millis(1500) + PROMPT,
            "{}: retried {gap:?} after the first attempt, for a 1.5 s delay",
            db.backend
        );
        // An operator's retry wakes a slot too.
        let (id, _) = ingest(&queue, "retried", 10).await;
        wait_for("resolved", async || resolved(&queue, id).await).await;
        queue
            .store()
            .connection()
            .execute_unprepared(&format!(
                "UPDATE incidents SET status = 'failed' WHERE id = '{id}'"
            ))
            .await
            .unwrap();
        let asked = Instant::now();
        queue.retry(id, Utc::now()).await.unwrap();
        wait_for("retried incident claimed again", async || {
            agent.claimed_at(id).len() == 2
        })
        .await;
        assert!(agent.claimed_at(id)[1] - asked < PROMPT, "{}", db.backend);
        process.stop().await;
    }
}

async fn listener_pid(queue: &Queue) -> Option<i32> {
    let db = queue.store().connection();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
            [LISTENER_APPLICATION_NAME.into()],
        ))
        .await
        .unwrap();
    row.map(|row| row.try_get::<i32>("", "pid").unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wakes_another_replica_and_survives_a_killed_listener() {
    let db = postgres()
        .await
        .expect("NIGHTCRIER_TEST_PG_URL must be set: this test needs Postgres");
    // Two replicas: separate pools, separate in-process wake-ups; only NOTIFY links them.
    let worker_queue = db.queue().await;
    let producer = Queue::new(db.store().await);
    let agent = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let workers = tokio::spawn(run_workers(
        worker_queue.clone(),
        config("replica-a"),
        agent.clone(),
        Vec::new(),
        shutdown.clone(),
    ));
    wait_for("the listener connected", async || {
        listener_pid(&worker_queue).await.is_some()
    })
    .await;
    for round in 0..3 {
        let (id, committed) = ingest(&producer, &format!("c{round}"), round).await;
        queue_pending(&producer).await;
        wait_for("claimed by the other replica", async || {
            !agent.claimed_at(id).is_empty()
        })
        .await;
        let took = agent.claimed_at(id)[0] - committed;
        assert!(
            took < PROMPT,
            "round {round}: claimed {took:?} after the other replica queued it"
        );
    }

    // Kill the listener's connection: it reconnects, and wake-ups keep coming.
    let old = listener_pid(&worker_queue).await.unwrap();
    let admin = producer.store().connection();
    admin
        .execute_unprepared(&format!("SELECT pg_terminate_backend({old})"))
        .await
        .unwrap();
    wait_for("a new listener connection", async || {
        listener_pid(&worker_queue)
            .await
            .is_some_and(|pid| pid != old)
    })
    .await;
    for round in 3..5 {
        let (id, committed) = ingest(&producer, "after-kill", round).await;
        queue_pending(&producer).await;
        wait_for("claimed after the listener reconnected", async || {
            !agent.claimed_at(id).is_empty()
        })
        .await;
        let took = agent.claimed_at(id)[0] - committed;
        assert!(took < PROMPT, "after reconnect: claimed {took:?} later");
    }
    shutdown.cancel();
    workers.await.unwrap();
    wait_for("the listener's connection closed at shutdown", async || {
        listener_pid(&worker_queue).await.is_none()
    })
    .await;
}
