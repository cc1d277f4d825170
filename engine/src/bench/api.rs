//! `nightcrier bench api`: fills a database with a million incidents (a realistic mix of
//! clusters, fault types, severities and statuses), serves the API on loopback in-process, and
//! times what the web UI asks most: a list page (unfiltered, filtered, deep in the cursor) and an
//! incident page. Prints p50 and p99 per case.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use sea_orm::{ConnectionTrait, Statement};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Figure;
use crate::queue::{IngestBatch, KeyedEvent, Queue};
use crate::store::{Store, StoreConfig};

/// Options of `nightcrier bench api`.
#[derive(Clone, Debug, clap::Args)]
pub struct ApiBenchArgs {
    /// Incidents in the database.
    #[arg(long, default_value_t = 1_000_000)]
    pub incidents: usize,
    /// Requests timed per case.
    #[arg(long, default_value_t = 300)]
    pub requests: usize,
    /// Distinct clusters.
    #[arg(long, default_value_t = 200)]
    pub clusters: usize,
}

const FAULT_TYPES: [&str; 5] = [
    "CrashLoop",
    "PodCrash",
    "NodeUnhealthy",
    "DeploymentFailure",
    "JobFailure",
];
const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

/// Runs the benchmark on `url` (an empty database) or on a fresh SQLite file.
pub async fn run(args: &ApiBenchArgs, url: Option<&str>) -> anyhow::Result<Vec<Figure>> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let url = match url {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/bench.db", scratch.path().display()),
    };
    let store = Store::connect(&StoreConfig::new(&url)).await?;
    store.migrate_up().await?;
    let backend = format!("{:?}", store.backend()).to_lowercase();
    let queue = Queue::new(store.clone());
    eprintln!("bench api: {backend}: filling {} incidents", args.incidents);
    let filled = Instant::now();
    let start = Utc::now() - chrono::Duration::days(30);
    let step =
        chrono::Duration::days(30) / i32::try_from(args.incidents.max(1)).unwrap_or(i32::MAX);
    let mut n = 0usize;
    while n < args.incidents {
        let mut batch = IngestBatch::default();
        for _ in 0..1000.min(args.incidents - n) {
            let mut event = super::sample_event(n, args.clusters);
            event.fault_type = FAULT_TYPES[n % FAULT_TYPES.len()].into();
            event.severity = SEVERITIES[(n / 7) % SEVERITIES.len()].into();
            event.received_at = start + step * i32::try_from(n).unwrap_or(i32::MAX);
            batch.events.push(KeyedEvent {
                id: uuid::Uuid::now_v7(),
                event,
            });
            n += 1;
        }
        queue.commit_batch(&batch).await?;
    }
    // Most incidents have ended, as in a fleet a month in: 85 % resolved, then agent_failed,
    // failed, skipped, a few queued; the rest stay pending.
    let db = store.connection();
    let backend_kind = db.get_database_backend();
    for (status, fault_type) in [
        ("resolved", "CrashLoop"),
        ("resolved", "PodCrash"),
        ("resolved", "NodeUnhealthy"),
        ("agent_failed", "DeploymentFailure"),
    ] {
        db.execute_raw(Statement::from_string(
            backend_kind,
            format!(
                "UPDATE incidents SET status = '{status}', completed_at = created_at \
                 WHERE fault_type = '{fault_type}'"
            ),
        ))
        .await?;
    }
    db.execute_raw(Statement::from_string(
        backend_kind,
        "UPDATE incidents SET status = 'failed', completed_at = created_at \
         WHERE fault_type = 'JobFailure' AND severity = 'critical'",
    ))
    .await?;
    db.execute_raw(Statement::from_string(
        backend_kind,
        "UPDATE incidents SET status = 'skipped', completed_at = created_at \
         WHERE fault_type = 'JobFailure' AND severity = 'warning'",
    ))
    .await?;
    db.execute_unprepared("ANALYZE").await?;
    eprintln!(
        "bench api: {backend}: filled in {:.0} s",
        filled.elapsed().as_secs_f64()
    );

    let stop = CancellationToken::new();
    let host = crate::plugin::no_plugins(&store).await?;
    let decoder = crate::ingest::Decoder::new(host, Default::default());
    let (ingestor, writer) = crate::ingest::Ingestor::start(
        queue.clone(),
        decoder,
        crate::ingest::IngestConfig::default(),
        stop.clone(),
    )?;
    let router = crate::http::router(
        crate::http::HttpContext {
            feeds: nightcrier_intake::FeedRegistry::new(),
            ingest: ingestor,
            queue: queue.clone(),
            plugins: None,
            refused: Vec::new(),
            docker: None,
            workspace_root: scratch.path().join("workspaces"),
            tokens: crate::http::ApiTokens::default(),
        },
        axum::Router::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let server = tokio::spawn(crate::http::serve(listener, router, stop.clone()));
    let http = reqwest::Client::new();
    let base = format!("http://{address}/api/v1");

    let sample = queue
        .list(&crate::queue::ListFilter {
            limit: 500,
            ..Default::default()
        })
        .await?;
    let deep_cursor = {
        let mut cursor = None;
        for _ in 0..20 {
            let page = fetch(&http, &page_url(&base, "limit=50", cursor.as_deref())).await?;
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        cursor.context("fewer than 20 pages")?
    };
    let cases: Vec<Case> = vec![
        Case::new(
            "list: first page, no filter",
            Box::new({
                let base = base.clone();
                move |_| format!("{base}/incidents?limit=50")
            }),
        ),
        Case::new(
            "list: cluster",
            Box::new({
                let base = base.clone();
                let clusters = args.clusters;
                move |i| {
                    format!(
                        "{base}/incidents?limit=50&cluster=cluster-{:04}",
                        i % clusters
                    )
                }
            }),
        ),
        Case::new(
            "list: status failed",
            Box::new({
                let base = base.clone();
                move |_| format!("{base}/incidents?limit=50&status=failed")
            }),
        ),
        Case::new(
            "list: fault type + severity",
            Box::new({
                let base = base.clone();
                move |i| {
                    format!(
                        "{base}/incidents?limit=50&fault_type={}&severity={}",
                        FAULT_TYPES[i % FAULT_TYPES.len()],
                        SEVERITIES[i % SEVERITIES.len()]
                    )
                }
            }),
        ),
        Case::new(
            "list: cluster + status resolved + last week",
            Box::new({
                let base = base.clone();
                let clusters = args.clusters;
                let since = (Utc::now() - chrono::Duration::days(7))
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                move |i| {
                    format!(
                        "{base}/incidents?limit=50&status=resolved&cluster=cluster-{:04}&since={since}",
                        i % clusters
                    )
                }
            }),
        ),
        Case::new(
            "list: page 21 (cursor)",
            Box::new({
                let base = base.clone();
                move |_| page_url(&base, "limit=50", Some(&deep_cursor))
            }),
        ),
        Case::new(
            "incident page",
            Box::new({
                let base = base.clone();
                let ids: Vec<String> = sample.iter().map(|i| i.id.to_string()).collect();
                move |i| format!("{base}/incidents/{}", ids[i % ids.len()])
            }),
        ),
    ];
    let mut figures = Vec::new();
    for Case { name, url_of } in &cases {
        for i in 0..10 {
            fetch(&http, &url_of(i)).await?;
        }
        let mut times = Vec::with_capacity(args.requests);
        for i in 0..args.requests {
            let started = Instant::now();
            fetch(&http, &url_of(i)).await?;
            times.push(started.elapsed());
        }
        times.sort();
        let p50 = times[times.len() / 2];
        let p99 = times[(times.len() * 99 / 100).min(times.len() - 1)];
        for (quantile, value) in [("p50", p50), ("p99", p99)] {
            figures.push(Figure {
                name: format!("{backend}: {name} {quantile}"),
                value: value.as_secs_f64() * 1000.0,
                unit: "ms",
            });
        }
    }
    stop.cancel();
    let _ = server.await;
    let _ = writer.await;
    Ok(figures)
}

/// One timed request kind: its name and the URL of its `i`th request.
struct Case {
    name: &'static str,
    url_of: Box<dyn Fn(usize) -> String>,
}

impl Case {
    fn new(name: &'static str, url_of: Box<dyn Fn(usize) -> String>) -> Self {
        Self { name, url_of }
    }
}

fn page_url(base: &str, query: &str, cursor: Option<&str>) -> String {
    match cursor {
        Some(cursor) => format!("{base}/incidents?{query}&cursor={cursor}"),
        None => format!("{base}/incidents?{query}"),
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<serde_json::Value> {
    let response = http
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await?;
    if !status.is_success() {
        anyhow::bail!("GET {url} answered {status}: {body}");
    }
    Ok(body)
}
