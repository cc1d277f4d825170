//! Prometheus metrics: the process recorder (`metrics` + `metrics-exporter-prometheus`), with
//! buckets chosen per histogram, `GET /metrics`, and the gauges refreshed from state: the feeds'
//! at each scrape (in memory, cheap) and the incidents-by-status and circuit-breaker gauges by a
//! loop over the database (bounded work, whatever the scrape rate). Every metric is listed in
//! `docs/operations.md`. Label values are configured names (clusters, sources, plugins,
//! profiles) or fixed words, never ids.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use nightcrier_intake::FeedPhase;
use tokio_util::sync::CancellationToken;

use super::HttpContext;
use crate::queue::{JobStatus, Queue};

/// Histogram buckets, by metric: each spans what it measures.
const BUCKETS: [(&str, &[f64]); 5] = [
    // group commit: milliseconds when healthy, seconds while the database stalls
    (
        "nightcrier_ingest_commit_latency_seconds",
        &[
            0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
        ],
    ),
    // a plugin call: microseconds (small guests) to its deadline
    (
        "nightcrier_plugin_call_duration_seconds",
        &[
            0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
        ],
    ),
    // queued → claimed: instant with a free slot, up to hours behind a busy cluster
    (
        "nightcrier_queue_wait_seconds",
        &[
            0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
        ],
    ),
    // an agent run: tens of seconds to its timeout
    (
        "nightcrier_agent_run_duration_seconds",
        &[
            1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
        ],
    ),
    // queued → container create (dispatch)
    (
        "nightcrier_dispatch_latency_seconds",
        &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
    ),
];

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let mut builder = PrometheusBuilder::new();
        for (name, buckets) in BUCKETS {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                .expect("every bucket list is non-empty");
        }
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // A second recorder in one process (tests) keeps its own handle; metrics go to the first.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

pub(super) fn routes() -> Router<Arc<HttpContext>> {
    Router::new().route("/metrics", get(render))
}

async fn render(State(cx): State<Arc<HttpContext>>) -> impl IntoResponse {
    for feed in cx.feeds.snapshot() {
        let kind = feed.kind.as_str();
        metrics::gauge!("nightcrier_feed_up", "feed" => feed.name.clone(), "kind" => kind).set(
            if feed.phase == FeedPhase::Active {
                1.0
            } else {
                0.0
            },
        );
        for phase in [
            FeedPhase::Connecting,
            FeedPhase::Subscribing,
            FeedPhase::Active,
            FeedPhase::Backoff,
            FeedPhase::Standby,
            FeedPhase::Disabled,
            FeedPhase::Stopped,
        ] {
            metrics::gauge!("nightcrier_feed_state", "feed" => feed.name.clone(), "kind" => kind, "state" => phase.as_str())
                .set(if feed.phase == phase { 1.0 } else { 0.0 });
        }
        metrics::counter!("nightcrier_feed_sessions_total", "feed" => feed.name.clone(), "kind" => kind)
            .absolute(feed.sessions);
        metrics::counter!("nightcrier_feed_subscription_errors_total", "feed" => feed.name.clone(), "kind" => kind)
            .absolute(feed.subscription_errors);
    }
    metrics::gauge!("nightcrier_ingest_accepting").set(if cx.ingest.accepting() {
        1.0
    } else {
        0.0
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

/// Refreshes the gauges read from the database every `every` until `shutdown`: incidents by
/// status and circuit breakers by cluster.
pub async fn refresh_loop(queue: Queue, every: Duration, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match queue.counts().await {
            Ok(counts) => {
                for status in JobStatus::ALL {
                    let count = counts.get(&status).copied().unwrap_or(0);
                    metrics::gauge!("nightcrier_incidents", "status" => status.as_str())
                        .set(count as f64);
                }
            }
            Err(error) => tracing::debug!(error = %error, "counting incidents failed"),
        }
        match queue.store().breakers().await {
            Ok(breakers) => {
                for breaker in breakers {
                    let state: serde_json::Value = match &breaker.state {
                        serde_json::Value::String(text) => {
                            serde_json::from_str(text).unwrap_or_default()
                        }
                        other => other.clone(),
                    };
                    let open = state["open"].as_bool().unwrap_or(false);
                    metrics::gauge!("nightcrier_circuit_breaker_open", "cluster" => breaker.scope.clone())
                        .set(if open { 1.0 } else { 0.0 });
                }
            }
            Err(error) => tracing::debug!(error = %error, "reading circuit breakers failed"),
        }
    }
}
