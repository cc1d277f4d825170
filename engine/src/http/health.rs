//! `/healthz` (the process answers) and `/readyz` (it can do its job: the database answers and
//! its schema is current, plugins are loaded, Docker answers when this instance runs agents, and
//! the ingest path commits). Both are open: load balancers and Kubernetes probes call them.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;

use super::HttpContext;

pub(super) fn routes() -> Router<Arc<HttpContext>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

async fn healthz() -> &'static str {
    "ok\n"
}

#[derive(Serialize)]
struct Check {
    ok: bool,
    detail: String,
}

fn check(ok: bool, detail: impl Into<String>) -> Check {
    Check {
        ok,
        detail: detail.into(),
    }
}

async fn readyz(State(cx): State<Arc<HttpContext>>) -> impl IntoResponse {
    let store = cx.queue.store();
    let database = match store.ensure_migrated().await {
        Ok(()) => check(true, "reachable, schema current"),
        Err(error) => check(false, error.to_string()),
    };
    let plugins = match &cx.plugins {
        Some(host) => check(
            true,
            format!(
                "{} loaded, {} refused",
                host.plugins().len(),
                cx.refused.len()
            ),
        ),
        None => check(true, "no plugin folder configured"),
    };
    let docker = match &cx.docker {
        Some(runner) => match runner.docker().ping().await {
            Ok(_) => check(true, "reachable"),
            Err(error) => check(false, format!("unreachable: {error}")),
        },
        None => check(true, "not used (workers.concurrency = 0)"),
    };
    let ingest = if cx.ingest.accepting() {
        check(true, "committing")
    } else {
        check(false, "the database cannot be written; spooling")
    };
    let ready = database.ok && plugins.ok && docker.ok && ingest.ok;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({
            "ready": ready,
            "checks": {
                "database": database,
                "plugins": plugins,
                "docker": docker,
                "ingest": ingest,
            },
        })),
    )
}
