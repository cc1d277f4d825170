//! `serve`'s HTTP listener: one axum router that other modules add routes to — health, the
//! feeds' state (`nightcrier clusters` reads it), Prometheus metrics, and the webhook routes of
//! the intake crate.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use nightcrier_intake::FeedRegistry;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::ingest::Ingestor;

/// The address `serve` listens on unless `[http] listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// What the handlers read.
#[derive(Clone, Debug)]
pub struct HttpContext {
    /// The feeds' state.
    pub feeds: FeedRegistry,
    /// The ingest path (its counters).
    pub ingest: Ingestor,
}

/// The counters of the ingest path, as the API shows them.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct IngestView {
    /// Whether messages are committed as they come (false while spooling).
    pub accepting: bool,
    /// Messages handed in.
    pub received: u64,
    /// Fault events committed.
    pub events: u64,
    /// Dead letters committed.
    pub rejected: u64,
    /// Messages written to the spool.
    pub spooled: u64,
    /// Messages replayed from it.
    pub replayed: u64,
    /// Messages dropped.
    pub dropped: u64,
    /// Bytes in the spool.
    pub spool_bytes: u64,
}

/// `GET /api/v1/clusters`.
#[derive(Clone, Debug, Serialize)]
pub struct FeedsView {
    /// Every feed.
    pub feeds: Vec<nightcrier_intake::FeedState>,
    /// The ingest path.
    pub ingest: IngestView,
}

/// The router with every route of this module, plus `extra` (webhooks).
pub fn router(cx: HttpContext, extra: Router) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/clusters", get(clusters))
        .with_state(Arc::new(cx))
        .merge(extra)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}

async fn clusters(State(cx): State<Arc<HttpContext>>) -> impl IntoResponse {
    let stats = cx.ingest.stats();
    let view = FeedsView {
        feeds: cx.feeds.snapshot(),
        ingest: IngestView {
            accepting: cx.ingest.accepting(),
            received: stats.received.load(Ordering::Relaxed),
            events: stats.events.load(Ordering::Relaxed),
            rejected: stats.rejected.load(Ordering::Relaxed),
            spooled: stats.spooled.load(Ordering::Relaxed),
            replayed: stats.replayed.load(Ordering::Relaxed),
            dropped: stats.dropped.load(Ordering::Relaxed),
            spool_bytes: stats.spool_bytes.load(Ordering::Relaxed),
        },
    };
    (StatusCode::OK, axum::Json(view))
}

/// The process's Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("nightcrier_ingest_commit_latency_seconds".into()),
                &[
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
                ],
            )
            .expect("the bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // A second recorder in one process (tests) keeps its own handle; metrics go to the first.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// Binds `listen`; an address in use or not allowed stops start-up naming the setting.
pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {listen}"))
}

/// Serves `router` on `listener` until `shutdown`, then finishes the requests in flight.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, shutdown: CancellationToken) {
    let address = listener.local_addr().ok();
    tracing::info!(listen = ?address, "http listening");
    if let Err(error) = axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %error, "http listener failed");
    }
}
