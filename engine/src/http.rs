//! `serve`'s HTTP listener: one axum router that the other modules add routes to — health and
//! readiness ([`health`]), Prometheus metrics ([`metrics`]), the JSON API under `/api/v1`
//! ([`api`]), the web UI ([`ui`], with its own login form and cookie), and the webhook routes of
//! the intake crate — behind one access rule ([`auth`]).
//!
//! Bound to 127.0.0.1 by default. On any other address `serve` refuses to start without an API
//! token, and then every route but `/healthz` and `/readyz` needs one (webhooks need their own).

mod api;
mod auth;
mod health;
mod metrics;
mod throttle;
mod ui;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use nightcrier_agent::DockerRunner;
use nightcrier_intake::FeedRegistry;
use nightcrier_plugin_host::PluginHost;
use tokio_util::sync::CancellationToken;

pub use auth::{AUTH_FAILURES_PER_MINUTE, ApiTokens};
pub use metrics::{metrics_handle, refresh_loop};

use crate::ingest::Ingestor;
use crate::plugin::RefusedPlugin;
use crate::queue::Queue;

/// The address `serve` listens on unless `[http] listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// What the handlers read.
#[derive(Clone)]
pub struct HttpContext {
    /// The feeds' state.
    pub feeds: FeedRegistry,
    /// The ingest path (its counters and whether it commits).
    pub ingest: Ingestor,
    /// The queue and the store under it.
    pub queue: Queue,
    /// The loaded plugins, if a folder is configured.
    pub plugins: Option<PluginHost>,
    /// The plugin files refused at load.
    pub refused: Vec<RefusedPlugin>,
    /// The agent runtime, when this instance runs agents (for readiness).
    pub docker: Option<DockerRunner>,
    /// Where incident workspaces (and their agent logs) live.
    pub workspace_root: PathBuf,
    /// Who may read and who may act.
    pub tokens: ApiTokens,
}

/// The router with every route of this module, plus `extra` (webhooks, which check their own
/// tokens).
pub fn router(cx: HttpContext, extra: Router) -> Router {
    let throttle = Arc::new(throttle::AuthThrottle::new(cx.tokens.failures_per_minute));
    let cx = Arc::new(cx);
    let guarded = Router::new()
        .merge(api::routes())
        .merge(metrics::routes())
        .layer(axum::middleware::from_fn_with_state(
            cx.clone(),
            auth::require_token,
        ));
    // health answers whatever the throttle thinks of the address (a load balancer's checks
    // share the address of the clients it forwards)
    let health = health::routes().with_state(cx.clone());
    Router::new()
        .merge(guarded)
        .merge(ui::routes(cx.clone()))
        .with_state(cx)
        .merge(extra)
        .layer(axum::middleware::from_fn_with_state(
            throttle,
            throttle::throttle,
        ))
        .merge(health)
}

/// Whether `listen` only accepts connections from this machine.
pub fn is_loopback(listen: SocketAddr) -> bool {
    listen.ip().is_loopback()
}

/// Checks the access rule before anything starts: off loopback, the API needs a token and every
/// webhook its own.
pub fn check_exposure(
    listen: SocketAddr,
    tokens: &ApiTokens,
    webhooks_without_token: &[String],
) -> anyhow::Result<()> {
    if is_loopback(listen) {
        return Ok(());
    }
    if tokens.is_empty() {
        anyhow::bail!(
            "http.listen is {listen}, which is reachable from other machines: set an API token \
             (http.read_token_env or http.read_token_file, and http.admin_token_env or \
             http.admin_token_file), or listen on 127.0.0.1"
        );
    }
    if let Some(id) = webhooks_without_token.first() {
        anyhow::bail!(
            "http.listen is {listen}, which is reachable from other machines: the webhook of \
             source plugin `{id}` needs a token (intake.webhook.{id}.token_env or token_file)"
        );
    }
    Ok(())
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
    // the client address is what failed authentications are counted by (`throttle`)
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(error) = axum::serve(listener, service)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %error, "http listener failed");
    }
}
