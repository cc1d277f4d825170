//! Many workers, in one process and in two OS processes, on one database: each incident is
//! claimed exactly once, no two incidents of a cluster are ever investigating together (checked
//! after every claim, in memory and in the database), and abandoned leases are requeued.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use nightcrier::Queue;
use nightcrier::queue::JobStatus;
use sea_orm::{ConnectionTrait, Statement};

use crate::support::{TestDb, backends, event, queue_all_pending};

const INCIDENTS: usize = 1000;
const CLUSTERS: usize = 20;
const WORKERS: usize = 8;

async fn seed(db: &TestDb) -> (Queue, BTreeSet<uuid::Uuid>) {
    let queue = db.queue().await;
    let events: Vec<_> = (0..INCIDENTS)
        .map(|n| event(&format!("cluster-{:02}", n % CLUSTERS), n))
        .collect();
    let ids = queue.ingest_batch(&events).await.unwrap();
    queue_all_pending(&queue).await;
    (queue, ids.into_iter().map(|i| i.incident_id).collect())
}

async fn investigating_in(queue: &Queue, cluster: &str) -> i64 {
    let db = queue.store().connection();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM incidents WHERE cluster = $1 AND status = 'investigating'",
            [cluster.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get("", "n").unwrap()
}

async fn open_work(queue: &Queue) -> u64 {
    let counts = queue.counts().await.unwrap();
    counts.get(&JobStatus::Queued).copied().unwrap_or(0)
        + counts.get(&JobStatus::Investigating).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_workers_claim_each_incident_once_and_one_per_cluster() {
    for db in backends().await {
        let (queue, all_ids) = seed(&db).await;

        // A worker that crashes: it claims a few incidents and never finishes them. Its leases
        // were granted in the past, so they have already run out.
        let mut abandoned = BTreeSet::new();
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        for _ in 0..3 {
            let (incident, _) = queue
                .claim("crashed-worker", Duration::from_secs(30), long_ago)
                .await
                .unwrap()
                .unwrap();
            abandoned.insert(incident.id);
        }

        let active: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let completed: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..WORKERS {
            // each worker has its own connection pool, as separate replicas would
            let queue = Queue::new(db.store().await);
            let active = active.clone();
            let completed = completed.clone();
            let backend = db.backend;
            tasks.spawn(async move {
                let owner = format!("worker-{worker}");
                loop {
                    if worker == 0 {
                        queue.sweep_expired(3, Utc::now()).await.unwrap();
                    }
                    let Some((incident, lease)) = queue
                        .claim(&owner, Duration::from_secs(60), Utc::now())
                        .await
                        .unwrap()
                    else {
                        if open_work(&queue).await == 0 {
                            return;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    };
                    {
                        let mut active = active.lock().unwrap();
                        let busy = active.entry(incident.cluster.clone()).or_default();
                        assert_eq!(
                            *busy, 0,
                            "{backend}: two workers hold cluster {}",
                            incident.cluster
                        );
                        *busy += 1;
                    }
                    assert_eq!(
                        investigating_in(&queue, &incident.cluster).await,
                        1,
                        "{backend}"
                    );
                    tokio::task::yield_now().await;
                    *active.lock().unwrap().get_mut(&incident.cluster).unwrap() -= 1;
                    completed.lock().unwrap().push(incident.id);
                    queue.complete(&lease, 0, Utc::now()).await.unwrap();
                }
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }

        let completed = completed.lock().unwrap().clone();
        let unique: BTreeSet<_> = completed.iter().copied().collect();
        assert_eq!(
            completed.len(),
            INCIDENTS,
            "{}: every incident completed once",
            db.backend
        );
        assert_eq!(unique, all_ids, "{}", db.backend);
        let counts = queue.counts().await.unwrap();
        assert_eq!(
            counts.get(&JobStatus::Resolved),
            Some(&(INCIDENTS as u64)),
            "{}",
            db.backend
        );
        for id in &abandoned {
            assert_eq!(
                queue.get(*id).await.unwrap().attempts,
                2,
                "{}: abandoned lease requeued",
                db.backend
            );
        }
        let once = queue
            .list(&nightcrier::queue::ListFilter {
                limit: 2000,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            once.iter().filter(|i| i.attempts == 1).count(),
            INCIDENTS - abandoned.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_the_queue_safely() {
    two_processes(None).await;
}

/// Two OS processes of four claimers each under a fleet cap of 2: every claimer checks after
/// its claim that no more than 2 incidents are investigating anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_respect_the_fleet_cap() {
    two_processes(Some(2)).await;
}

async fn two_processes(cap: Option<u32>) {
    for db in backends().await {
        let (queue, all_ids) = seed(&db).await;
        let cap_arg = cap.map(|cap| cap.to_string());
        let spawn = |owner: &str| {
            let mut args = vec![db.url.as_str(), owner, "4"];
            args.extend(cap_arg.as_deref());
            tokio::process::Command::new(env!("CARGO_BIN_EXE_nightcrier-queue-worker"))
                .args(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        let first = spawn("process-a");
        let second = spawn("process-b");
        let (first, second) = tokio::join!(first.wait_with_output(), second.wait_with_output());
        let mut claimed = Vec::new();
        let mut per_process = Vec::new();
        for output in [first.unwrap(), second.unwrap()] {
            assert!(
                output.status.success(),
                "{}: worker process failed: {}",
                db.backend,
                String::from_utf8_lossy(&output.stderr)
            );
            let ids: Vec<uuid::Uuid> = String::from_utf8(output.stdout)
                .unwrap()
                .lines()
                .map(|line| line.parse().unwrap())
                .collect();
            per_process.push(ids.len());
            claimed.extend(ids);
        }
        let unique: BTreeSet<_> = claimed.iter().copied().collect();
        assert_eq!(
            claimed.len(),
            INCIDENTS,
            "{}: each incident claimed exactly once",
            db.backend
        );
        assert_eq!(unique, all_ids);
        assert!(
            per_process.iter().all(|n| *n > 0),
            "{}: both processes worked: {per_process:?}",
            db.backend
        );
        assert_eq!(
            queue.counts().await.unwrap().get(&JobStatus::Resolved),
            Some(&(INCIDENTS as u64))
        );
    }
}

/// Investigating incidents and the agent slots they hold, from the database.
async fn slots_in_use(queue: &Queue) -> (i64, Vec<i32>) {
    let db = queue.store().connection();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT agent_slot FROM incidents WHERE status = 'investigating'",
        ))
        .await
        .unwrap();
    let slots: Vec<i32> = rows
        .iter()
        .filter_map(|row| row.try_get::<Option<i32>>("", "agent_slot").unwrap())
        .collect();
    (rows.len() as i64, slots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_fleet_cap_holds_across_concurrent_claimers_and_survives_crashed_holders() {
    const CAP: u32 = 3;
    for db in backends().await {
        let (queue, all_ids) = seed(&db).await;
        // A crashed replica held every slot; its leases have run out, so only the sweeper can
        // free them, and until it does nobody may start an agent.
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        let crashed = queue.clone().with_fleet_max_agents(Some(CAP));
        for _ in 0..CAP {
            crashed
                .claim("crashed-replica", Duration::from_secs(30), long_ago)
                .await
                .unwrap()
                .unwrap();
        }
        assert!(
            crashed
                .claim("crashed-replica", Duration::from_secs(30), long_ago)
                .await
                .unwrap()
                .is_none(),
            "{}: every slot is held",
            db.backend
        );

        let running = Arc::new(Mutex::new(0usize));
        let peak = Arc::new(Mutex::new(0usize));
        let completed: Arc<Mutex<Vec<uuid::Uuid>>> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..WORKERS {
            // each worker has its own connection pool, as separate replicas would
            let queue = Queue::new(db.store().await).with_fleet_max_agents(Some(CAP));
            let (running, peak, completed) = (running.clone(), peak.clone(), completed.clone());
            let backend = db.backend;
            tasks.spawn(async move {
                let owner = format!("replica-{worker}");
                loop {
                    if worker == 0 {
                        queue.sweep_expired(3, Utc::now()).await.unwrap();
                    }
                    let Some((incident, lease)) = queue
                        .claim(&owner, Duration::from_secs(60), Utc::now())
                        .await
                        .unwrap()
                    else {
                        if open_work(&queue).await == 0 {
                            return;
                        }
                        tokio::task::yield_now().await;
                        continue;
                    };
                    {
                        let mut running = running.lock().unwrap();
                        *running += 1;
                        assert!(
                            *running <= CAP as usize,
                            "{backend}: {} agents at once over a cap of {CAP}",
                            *running
                        );
                        let mut peak = peak.lock().unwrap();
                        *peak = (*peak).max(*running);
                    }
                    let (investigating, slots) = slots_in_use(&queue).await;
                    assert!(
                        investigating <= i64::from(CAP),
                        "{backend}: {investigating} investigating in the database"
                    );
                    let distinct: BTreeSet<i32> = slots.iter().copied().collect();
                    assert_eq!(distinct.len(), slots.len(), "{backend}: a slot held twice");
                    assert!(slots.iter().all(|slot| (0..CAP as i32).contains(slot)));
                    tokio::task::yield_now().await;
                    *running.lock().unwrap() -= 1;
                    completed.lock().unwrap().push(incident.id);
                    queue.complete(&lease, 0, Utc::now()).await.unwrap();
                }
            });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
        let completed = completed.lock().unwrap().clone();
        let unique: BTreeSet<_> = completed.iter().copied().collect();
        assert_eq!(completed.len(), INCIDENTS, "{}", db.backend);
        assert_eq!(unique, all_ids, "{}", db.backend);
        assert!(
            *peak.lock().unwrap() > 1,
            "{}: the workers ran in parallel",
            db.backend
        );
        assert_eq!(slots_in_use(&queue).await, (0, vec![]), "{}", db.backend);
    }
}
