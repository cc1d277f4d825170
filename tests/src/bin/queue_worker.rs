//! A queue worker process for the multi-process tests: claims and completes incidents until the
//! queue is empty, checking after every claim that its cluster has exactly one investigating
//! incident (and, with a fleet cap, that no more than the cap are investigating anywhere), and
//! prints each claimed incident id on stdout.

use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use nightcrier::queue::JobStatus;
use nightcrier::{Queue, Store, StoreConfig};
use sea_orm::{ConnectionTrait, Statement};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: nightcrier-queue-worker URL OWNER TASKS [FLEET_MAX_AGENTS]")?;
    let owner = args.next().context("missing OWNER")?;
    let tasks: usize = args.next().context("missing TASKS")?.parse()?;
    let cap: Option<u32> = args.next().map(|text| text.parse()).transpose()?;
    let store = Store::connect(&StoreConfig::new(&url)).await?;
    store.ensure_migrated().await?;
    let queue = Queue::new(store).with_fleet_max_agents(cap);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let queue = queue.clone();
        let owner = format!("{owner}-{task}");
        handles.push(tokio::spawn(async move { work(&queue, &owner).await }));
    }
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

async fn work(queue: &Queue, owner: &str) -> anyhow::Result<()> {
    loop {
        match queue
            .claim(owner, Duration::from_secs(120), Utc::now())
            .await?
        {
            Some((incident, lease)) => {
                let busy = investigating_in(queue, &incident.cluster).await?;
                if busy != 1 {
                    bail!(
                        "cluster {} has {busy} investigating incidents",
                        incident.cluster
                    );
                }
                if let Some(cap) = queue.fleet_max_agents() {
                    let running = investigating_everywhere(queue).await?;
                    if running > i64::from(cap) {
                        bail!("{running} incidents investigating over a fleet cap of {cap}");
                    }
                    // hold the slot a moment, so the other process meets a full fleet
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                println!("{}", incident.id);
                queue.complete(&lease, 0, Utc::now()).await?;
            }
            None => {
                let counts = queue.counts().await?;
                let open = counts.get(&JobStatus::Queued).copied().unwrap_or(0)
                    + counts.get(&JobStatus::Investigating).copied().unwrap_or(0);
                if open == 0 {
                    return Ok(());
                }
                tokio::task::yield_now().await;
            }
        }
    }
}

async fn investigating_in(queue: &Queue, cluster: &str) -> anyhow::Result<i64> {
    let db = queue.store().connection();
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM incidents WHERE cluster = $1 AND status = 'investigating'",
            [cluster.into()],
        ))
        .await?
        .context("count returned no row")?;
    Ok(row.try_get("", "n")?)
}

async fn investigating_everywhere(queue: &Queue) -> anyhow::Result<i64> {
    let db = queue.store().connection();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM incidents WHERE status = 'investigating'",
        ))
        .await?
        .context("count returned no row")?;
    Ok(row.try_get("", "n")?)
}
