//! The JSON API under `/api/v1`: incidents (filtered, newest first, cursor-paginated), one
//! incident with its event, plugin runs, agent executions and report metadata, its report, its
//! live agent log as server-sent events, retry; the feeds with their state; the plugins with
//! their grants and call statistics; the dead letters; the operational alerts with their
//! deliveries.
//!
//! Everything returned is JSON-escaped data as stored; text from plugins, feeds and agents is
//! never interpreted.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

use super::HttpContext;
use crate::queue::{JobStatus, ListCursor, ListFilter, QueueError};
use crate::store::StoreError;

/// Most items on one page.
const MAX_PAGE: u64 = 500;
/// Items on a page unless `limit` says otherwise.
const DEFAULT_PAGE: u64 = 50;
/// How much of a dead letter's bytes a listing shows.
const PAYLOAD_PREVIEW_BYTES: usize = 2048;

pub(super) fn routes() -> Router<Arc<HttpContext>> {
    Router::new()
        .route("/api/v1/incidents", get(list_incidents))
        .route("/api/v1/incidents/{id}", get(incident))
        .route("/api/v1/incidents/{id}/report", get(report))
        .route("/api/v1/incidents/{id}/log", get(log))
        .route("/api/v1/incidents/{id}/retry", post(retry))
        .route("/api/v1/clusters", get(clusters))
        .route("/api/v1/plugins", get(plugins))
        .route("/api/v1/rejected", get(rejected))
        .route("/api/v1/rejected/{id}/payload", get(rejected_payload))
        .route("/api/v1/alerts", get(alerts))
}

/// An error answer: a status and a one-line reason.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) reason: String,
}

impl ApiError {
    pub(super) fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
        }
    }

    fn not_found(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "error": self.reason })),
        )
            .into_response()
    }
}

impl From<QueueError> for ApiError {
    fn from(error: QueueError) -> Self {
        let status = match &error {
            QueueError::NotFound(_) => StatusCode::NOT_FOUND,
            QueueError::IllegalTransition { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %error, "api request failed");
        }
        Self {
            status,
            reason: error.to_string(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        QueueError::Store(error).into()
    }
}

pub(super) type ApiResult<T> = Result<T, ApiError>;

pub(super) fn parse_id(text: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(text).map_err(|_| ApiError::bad_request(format!("{text:?} is not an id")))
}

/// A JSON column as a document: SQLite hands JSON back as text.
pub(super) fn document(value: &Value) -> Value {
    match value {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| value.clone()),
        other => other.clone(),
    }
}

/// The incident list's query, shared with the web UI's filter form.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    pub(super) status: Option<String>,
    pub(super) cluster: Option<String>,
    pub(super) fault_type: Option<String>,
    pub(super) severity: Option<String>,
    pub(super) since: Option<String>,
    pub(super) until: Option<String>,
    pub(super) limit: Option<u64>,
    pub(super) cursor: Option<String>,
}

fn time_param(name: &str, text: Option<&str>) -> ApiResult<Option<DateTime<Utc>>> {
    text.map(|text| {
        DateTime::parse_from_rfc3339(text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| ApiError::bad_request(format!("{name} must be an RFC 3339 time")))
    })
    .transpose()
}

#[derive(Serialize)]
struct IncidentPage {
    incidents: Vec<crate::queue::Incident>,
    next_cursor: Option<String>,
}

async fn list_incidents(
    State(cx): State<Arc<HttpContext>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<IncidentPage>> {
    let Query(query) = query.map_err(|error| ApiError::bad_request(error.body_text()))?;
    let filter = list_filter(query)?;
    let incidents = cx.queue.list(&filter).await?;
    let next_cursor = next_cursor(&incidents, filter.limit);
    Ok(axum::Json(IncidentPage {
        incidents,
        next_cursor,
    }))
}

/// The list filter a query asks for (empty values mean no filter).
pub(super) fn list_filter(query: ListQuery) -> ApiResult<ListFilter> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<JobStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let after = query
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|text| ListCursor::decode(text).ok_or_else(|| ApiError::bad_request("bad cursor")))
        .transpose()?;
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    let filter = ListFilter {
        status,
        cluster: non_empty(query.cluster),
        fault_type: non_empty(query.fault_type),
        severity: non_empty(query.severity),
        since: time_param("since", query.since.as_deref().filter(|s| !s.is_empty()))?,
        until: time_param("until", query.until.as_deref().filter(|s| !s.is_empty()))?,
        after,
        limit,
    };
    Ok(filter)
}

/// The cursor of the page after `incidents`, if it was full.
pub(super) fn next_cursor(incidents: &[crate::queue::Incident], limit: u64) -> Option<String> {
    (incidents.len() as u64 == limit)
        .then(|| {
            incidents
                .last()
                .map(|last| ListCursor::after(last).encode())
        })
        .flatten()
}

#[derive(Serialize)]
struct ReportMeta {
    id: String,
    execution_id: Option<String>,
    generated_at: DateTime<Utc>,
    summary: Option<String>,
    structured: Option<Value>,
    storage_type: String,
    artifact_uri: Option<String>,
    markdown_bytes: usize,
    has_html: bool,
    store_uri: Option<String>,
    uploaded_at: Option<DateTime<Utc>>,
    upload_pending: bool,
    upload_attempts: i32,
    upload_error: Option<String>,
}

async fn incident(
    State(cx): State<Arc<HttpContext>>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = parse_id(&id)?;
    let incident = cx.queue.get(id).await?;
    let store = cx.queue.store();
    let event_id = incident.fault_event_id.to_string();
    let (event, runs, executions, reports) = tokio::try_join!(
        store.fault_event(&event_id),
        store.plugin_runs(id),
        store.agent_executions(id),
        store.reports(id),
    )?;
    let event = event.map(|event| {
        let mut value = serde_json::to_value(&event).unwrap_or_default();
        value["payload"] = document(&event.payload);
        value["labels"] = document(&event.labels);
        value
    });
    let executions: Vec<Value> = executions
        .iter()
        .map(|run| {
            let mut value = serde_json::to_value(run).unwrap_or_default();
            if let Some(paths) = value.get("log_paths").cloned() {
                value["log_paths"] = document(&paths);
            }
            value
        })
        .collect();
    let reports: Vec<ReportMeta> = reports
        .into_iter()
        .map(|report| ReportMeta {
            markdown_bytes: report.report_markdown.len(),
            has_html: report.report_html.is_some(),
            structured: report.structured.as_ref().map(document),
            id: report.id,
            execution_id: report.execution_id,
            generated_at: report.generated_at,
            summary: report.summary,
            storage_type: report.storage_type,
            artifact_uri: report.artifact_uri,
            upload_pending: report.store_uri.is_some() && report.uploaded_at.is_none(),
            store_uri: report.store_uri,
            uploaded_at: report.uploaded_at,
            upload_attempts: report.upload_attempts,
            upload_error: report.upload_error,
        })
        .collect();
    Ok(axum::Json(serde_json::json!({
        "incident": incident,
        "event": event,
        "plugin_runs": runs,
        "agent_executions": executions,
        "reports": reports,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    format: Option<String>,
}

async fn report(
    State(cx): State<Arc<HttpContext>>,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let reports = cx.queue.store().reports(id).await?;
    let Some(report) = reports.into_iter().last() else {
        return Err(ApiError::not_found(format!("incident {id} has no report")));
    };
    match query.format.as_deref().unwrap_or("markdown") {
        "markdown" | "md" => Ok((
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            report.report_markdown,
        )
            .into_response()),
        "html" => {
            // a report kept before pages were rendered gets its page now
            let html = match report.report_html {
                Some(html) => html,
                None => {
                    let incident = cx.queue.get(id).await?;
                    let event = cx
                        .queue
                        .store()
                        .fault_event(&incident.fault_event_id.to_string())
                        .await?;
                    crate::report::render::page(
                        &crate::report::summary_of(&incident, event.as_ref(), report.generated_at),
                        &report.report_markdown,
                    )
                }
            };
            Ok((
                [
                    (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                    // the page is self-contained: it may load nothing and run nothing
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'none'; style-src 'unsafe-inline'; img-src data:",
                    ),
                ],
                html,
            )
                .into_response())
        }
        other => Err(ApiError::bad_request(format!(
            "format {other:?} is not markdown or html"
        ))),
    }
}

/// The agent log as server-sent events: one `log` event per line, as `tail --follow` prints
/// them, then `end` when the run is over (or `error`).
pub(super) async fn log(
    State(cx): State<Arc<HttpContext>>,
    Path(id): Path<String>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let id = parse_id(&id)?;
    cx.queue.get(id).await?;
    let (mut writer, reader) = tokio::io::duplex(64 * 1024);
    let root = cx.workspace_root.clone();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Option<String>>();
    tokio::spawn(async move {
        let result = nightcrier_agent::tail(&root, &id.to_string(), true, &mut writer).await;
        drop(writer);
        let _ = done_tx.send(result.err().map(|error| error.to_string()));
    });
    let lines = tokio::io::BufReader::new(reader).lines();
    let stream = futures::stream::unfold((lines, Some(done_rx)), |(mut lines, done)| async move {
        match lines.next_line().await {
            Ok(Some(line)) => Some((Ok(Event::default().event("log").data(line)), (lines, done))),
            _ => {
                let done = done?;
                let event = match done.await.ok().flatten() {
                    Some(error) => Event::default().event("error").data(error),
                    None => Event::default().event("end").data("the run is over"),
                };
                Some((Ok(event), (lines, None)))
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn retry(
    State(cx): State<Arc<HttpContext>>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Value>> {
    let id = parse_id(&id)?;
    cx.queue.retry(id, Utc::now()).await?;
    tracing::info!(incident_id = %id, "incident queued again through the api");
    Ok(axum::Json(
        serde_json::json!({ "id": id, "status": "queued" }),
    ))
}

async fn clusters(State(cx): State<Arc<HttpContext>>) -> ApiResult<axum::Json<Value>> {
    let stats = cx.ingest.stats();
    // The feeds are in memory; the breakers need the database, which may be the thing that is
    // down while an operator looks here: they are shown only when it answers quickly.
    let breakers = match tokio::time::timeout(
        std::time::Duration::from_secs(1),
        cx.queue.store().breakers(),
    )
    .await
    {
        Ok(Ok(rows)) => Value::Array(
            rows.into_iter()
                .map(|breaker| {
                    serde_json::json!({
                        "cluster": breaker.scope,
                        "state": document(&breaker.state),
                        "updated_at": breaker.updated_at,
                    })
                })
                .collect(),
        ),
        _ => Value::Null,
    };
    Ok(axum::Json(serde_json::json!({
        "feeds": cx.feeds.snapshot(),
        "ingest": {
            "accepting": cx.ingest.accepting(),
            "received": stats.received.load(Ordering::Relaxed),
            "events": stats.events.load(Ordering::Relaxed),
            "rejected": stats.rejected.load(Ordering::Relaxed),
            "spooled": stats.spooled.load(Ordering::Relaxed),
            "replayed": stats.replayed.load(Ordering::Relaxed),
            "dropped": stats.dropped.load(Ordering::Relaxed),
            "spool_bytes": stats.spool_bytes.load(Ordering::Relaxed),
        },
        "breakers": breakers,
    })))
}

async fn plugins(State(cx): State<Arc<HttpContext>>) -> axum::Json<Value> {
    let Some(host) = &cx.plugins else {
        return axum::Json(serde_json::json!({ "plugins": [], "refused": cx.refused_view() }));
    };
    let stats = host.call_stats();
    let plugins: Vec<Value> = host
        .plugins()
        .into_iter()
        .map(|plugin| {
            serde_json::json!({
                "id": plugin.id,
                "name": plugin.name,
                "version": plugin.version,
                "description": plugin.description,
                "world": plugin.world.as_str(),
                "wit_version": plugin.wit_version,
                "handles_alerts": plugin.handles_alerts,
                "requested": plugin.requested,
                "granted": plugin.granted,
                "deadline_ms": plugin.deadline_ms,
                "reuses_instances": plugin.reuses_instances,
                "calls": stats.get(&plugin.id),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "plugins": plugins, "refused": cx.refused_view() }))
}

impl HttpContext {
    fn refused_view(&self) -> Vec<Value> {
        self.refused
            .iter()
            .map(|refused| serde_json::json!({ "id": refused.id, "reason": refused.reason }))
            .collect()
    }
}

/// One page of dead letters, newest first, and the cursor of the next page when there may be one.
pub(super) struct RejectedPage {
    pub(super) rows: Vec<crate::store::entity::rejected_events::Model>,
    pub(super) next_cursor: Option<String>,
}

/// The page of at most `limit` dead letters after `cursor` (a previous page's `next_cursor`;
/// empty or absent: the newest), for the API and the web UI.
pub(super) async fn rejected_page(
    cx: &HttpContext,
    cursor: Option<&str>,
    limit: u64,
) -> ApiResult<RejectedPage> {
    let after = match cursor.filter(|c| !c.is_empty()) {
        Some(text) => {
            let cursor =
                ListCursor::decode(text).ok_or_else(|| ApiError::bad_request("bad cursor"))?;
            Some((cursor.created_at, cursor.id.to_string()))
        }
        None => None,
    };
    let rows = cx.queue.store().rejected_page(limit, after).await?;
    let next_cursor = (rows.len() as u64 == limit)
        .then(|| rows.last())
        .flatten()
        .and_then(|last| {
            Some(
                ListCursor {
                    created_at: last.received_at,
                    id: Uuid::parse_str(&last.id).ok()?,
                }
                .encode(),
            )
        });
    Ok(RejectedPage { rows, next_cursor })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectedQuery {
    limit: Option<u64>,
    cursor: Option<String>,
}

async fn rejected(
    State(cx): State<Arc<HttpContext>>,
    query: Result<Query<RejectedQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<Value>> {
    let Query(query) = query.map_err(|error| ApiError::bad_request(error.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let RejectedPage { rows, next_cursor } =
        rejected_page(&cx, query.cursor.as_deref(), limit).await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            let preview = &row.raw_payload[..row.raw_payload.len().min(PAYLOAD_PREVIEW_BYTES)];
            serde_json::json!({
                "id": row.id,
                "source": row.source,
                "cluster": row.cluster,
                "reason": row.reason,
                "received_at": row.received_at,
                "payload_bytes": row.raw_payload.len(),
                "payload_preview": String::from_utf8_lossy(preview),
            })
        })
        .collect();
    Ok(axum::Json(
        serde_json::json!({ "rejected": items, "next_cursor": next_cursor }),
    ))
}

async fn rejected_payload(
    State(cx): State<Arc<HttpContext>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let row = cx
        .queue
        .store()
        .rejected_event(&id.to_string())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no dead letter {id}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CONTENT_DISPOSITION, "attachment"),
        ],
        row.raw_payload,
    )
        .into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    limit: Option<u64>,
    kind: Option<String>,
    cluster: Option<String>,
}

/// `GET /api/v1/alerts?limit=&kind=&cluster=`: the newest alerts first, each with what every
/// alert-handling plugin made of it.
async fn alerts(
    State(cx): State<Arc<HttpContext>>,
    query: Result<Query<AlertsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<Value>> {
    let Query(query) = query.map_err(|error| ApiError::bad_request(error.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let kind = query.kind.as_deref().filter(|kind| !kind.is_empty());
    let cluster = query
        .cluster
        .as_deref()
        .filter(|cluster| !cluster.is_empty());
    let rows = cx.queue.store().alerts(limit, kind, cluster).await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|stored| {
            let alert = stored.alert;
            serde_json::json!({
                "id": alert.id,
                "kind": alert.kind,
                "severity": alert.severity,
                "cluster": alert.cluster,
                "summary": alert.summary,
                "detail": alert.detail,
                "fields": document(&alert.fields),
                "raised_by": alert.raised_by,
                "raised_at": alert.raised_at,
                "deliveries": stored.deliveries.iter().map(|delivery| serde_json::json!({
                    "plugin": delivery.plugin,
                    "plugin_version": delivery.plugin_version,
                    "outcome": delivery.outcome,
                    "attempts": delivery.attempts,
                    "error": delivery.error,
                    "finished_at": delivery.finished_at,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "alerts": items })))
}
