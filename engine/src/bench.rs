//! `nightcrier bench store`: measures ingest throughput, single-event commit latency and
//! claim+complete throughput on a real database, and prints the figures. `bench api` (in
//! `bench/api.rs`) times the HTTP API on a million incidents; `bench intake` (in `bench/intake.rs`)
//! drives a real `serve` from a simulated fleet of kubernetes-mcp-servers; `bench dispatch` (in
//! `bench/dispatch.rs`) times queued → agent container and the runner's overhead over bare Docker.

pub mod api;
pub mod dispatch;
pub mod fleet;
pub mod intake;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use sea_orm::{ConnectionTrait, Statement};
use tokio::time::Instant;

use crate::queue::{NewFaultEvent, Queue, ResourceRef};
use crate::store::{Store, StoreConfig};

/// Options of `nightcrier bench store`.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreBenchArgs {
    /// Events ingested in batches.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 1_000)]
    pub batch: usize,
    /// Events ingested one per transaction, for the latency figures.
    #[arg(long, default_value_t = 2_000)]
    pub single: usize,
    /// Incidents claimed and completed.
    #[arg(long, default_value_t = 10_000)]
    pub claims: usize,
    /// Concurrent workers claiming.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Distinct clusters the events are spread over.
    #[arg(long, default_value_t = 500)]
    pub clusters: usize,
    /// SQLite only: use synchronous=NORMAL instead of FULL.
    #[arg(long)]
    pub sqlite_sync_normal: bool,
}

/// One line of results.
#[derive(Debug, serde::Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
}

pub(crate) fn sample_event(n: usize, clusters: usize) -> NewFaultEvent {
    let cluster = format!("cluster-{:04}", n % clusters.max(1));
    let payload = serde_json::json!({
        "subscriptionId": "sub-3f2a9c1e",
        "cluster": cluster,
        "faultId": format!("{n:016x}"),
        "faultType": "CrashLoop",
        "severity": "critical",
        "resource": {"apiVersion": "v1", "kind": "Pod", "name": format!("checkout-{n}"),
                     "namespace": "shop", "uid": "6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f"},
        "context": "Container entered CrashLoopBackOff state, restart count: 3, waiting message: back-off 40s restarting failed container=api, last exit code: 1, last reason: Error",
        "timestamp": "2025-12-20T14:07:31Z"
    });
    NewFaultEvent {
        source: "bench".into(),
        cluster,
        fault_id: Some(format!("{n:016x}")),
        subscription_id: Some("sub-3f2a9c1e".into()),
        resource: Some(ResourceRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: format!("checkout-{n}"),
            namespace: Some("shop".into()),
            uid: Some("6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f".into()),
        }),
        fault_type: "CrashLoop".into(),
        severity: "critical".into(),
        context: "Container entered CrashLoopBackOff state, restart count: 3".into(),
        timestamp: Some("2025-12-20T14:07:31Z".into()),
        payload,
        received_at: Utc::now(),
        labels: [("mcp.subscription-id".to_owned(), "sub-3f2a9c1e".to_owned())].into(),
    }
}

/// Runs the store benchmark on `url` (an empty database) or on a fresh SQLite file.
pub async fn store(args: &StoreBenchArgs, url: Option<&str>) -> anyhow::Result<Vec<Figure>> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let url = match url {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/bench.db", scratch.path().display()),
    };
    let mut config = StoreConfig::new(&url);
    config.sqlite_synchronous_full = !args.sqlite_sync_normal;
    let store = Store::connect(&config).await?;
    store.migrate_up().await?;
    let db = store.connection();
    let existing = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM fault_events",
        ))
        .await?
        .map(|row| row.try_get::<i64>("", "n"))
        .transpose()?
        .unwrap_or(0);
    if existing > 0 {
        bail!(
            "bench store needs an empty database, and {} holds {existing} fault events",
            store.display_url()
        );
    }
    let backend = format!("{:?}", store.backend()).to_lowercase();
    let queue = Queue::new(store.clone());
    let mut figures = Vec::new();

    // Batched ingest.
    let events: Vec<NewFaultEvent> = (0..args.events)
        .map(|n| sample_event(n, args.clusters))
        .collect();
    let started = Instant::now();
    for batch in events.chunks(args.batch.max(1)) {
        queue.ingest_batch(batch).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    figures.push(Figure {
        name: format!("{backend}: batched ingest ({} per batch)", args.batch),
        value: args.events as f64 / elapsed,
        unit: "events/s",
    });

    // The service checkpoints periodically on the queue connection; do the same between phases.
    store.checkpoint().await?;

    // Single-event commits.
    let mut latencies = Vec::with_capacity(args.single);
    for n in 0..args.single {
        let event = sample_event(args.events + n, args.clusters);
        let started = Instant::now();
        queue.ingest(&event).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let pick = |q: f64| -> f64 {
        let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies
            .get(index)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    };
    figures.push(Figure {
        name: format!("{backend}: single-event commit p50"),
        value: pick(0.50),
        unit: "ms",
    });
    figures.push(Figure {
        name: format!("{backend}: single-event commit p99"),
        value: pick(0.99),
        unit: "ms",
    });

    // Claim + complete.
    db.execute_unprepared(
        "UPDATE incidents SET status = 'queued', queued_at = created_at WHERE status = 'pending'",
    )
    .await?;
    let remaining = Arc::new(std::sync::atomic::AtomicUsize::new(args.claims));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..args.workers.max(1) {
        let queue = queue.clone();
        let remaining = remaining.clone();
        workers.spawn(async move {
            let owner = format!("bench-{worker}");
            let mut done = 0usize;
            while remaining
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok()
            {
                match queue
                    .claim(&owner, Duration::from_secs(60), Utc::now())
                    .await?
                {
                    Some((_, lease)) => {
                        queue.complete(&lease, 0, Utc::now()).await?;
                        done += 1;
                    }
                    None => break,
                }
            }
            anyhow::Ok(done)
        });
    }
    let mut claimed = 0usize;
    while let Some(result) = workers.join_next().await {
        claimed += result.context("bench worker panicked")??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    figures.push(Figure {
        name: format!("{backend}: claim+complete ({} workers)", args.workers),
        value: claimed as f64 / elapsed,
        unit: "jobs/s",
    });

    // Leave a Postgres database as empty as it was given.
    db.execute_unprepared("DELETE FROM incidents").await?;
    db.execute_unprepared("DELETE FROM fault_events").await?;
    store.close().await?;

    for figure in &figures {
        println!("{:<52} {:>12.2} {}", figure.name, figure.value, figure.unit);
    }
    Ok(figures)
}
