//! The web UI that `serve` serves next to the API: server-rendered pages (templates in
//! [`pages`], compiled in with maud) for the incident list, one incident (with its live agent log),
//! the clusters' feeds and breakers, the plugins and the rejected events; a login form when the
//! listener needs tokens ([`session`]); and the two assets, CSS and a small script, compiled into
//! the binary. Every page works without JavaScript; the script only adds live updates.
//!
//! Reads go through the same queue and store functions as the API (the list filter is the API's
//! own [`super::api::list_filter`]); the live log is the API's server-sent-event stream. Every
//! response carries a CSP that allows scripts from this origin only, so text from events, plugins
//! and agents (escaped by the templates, or sanitised by the report renderer) cannot run.

mod pages;
mod session;

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::Utc;
use maud::Markup;
use serde::Deserialize;
use uuid::Uuid;

use self::session::{Grant, Sessions, Viewer};
use super::HttpContext;
use super::api::{self, ListQuery};

/// Incidents on one page of the list.
const PAGE: u64 = 50;
/// Rejected events on one page.
const REJECTED_PAGE: u64 = 50;
/// The last part of a log shown in a page.
const LOG_TAIL_BYTES: usize = 64 * 1024;

const CSS: &str = include_str!("ui/assets/app.css");
const JS: &str = include_str!("ui/assets/app.js");

/// What every UI response says about itself: scripts and styles from this origin only (none
/// inline), no framing, no sniffing, no referrer.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn routes(cx: Arc<HttpContext>) -> Router<Arc<HttpContext>> {
    let sessions = Sessions::new(cx.queue.store().clone());
    let guarded = Router::new()
        .route("/", get(incidents))
        .route("/incidents/{id}", get(incident))
        .route("/incidents/{id}/live", get(live_log))
        .route("/incidents/{id}/retry", post(retry))
        .route("/clusters", get(clusters))
        .route("/plugins", get(plugins))
        .route("/rejected", get(rejected))
        .route("/logout", post(logout))
        .layer(axum::middleware::from_fn_with_state(
            (cx, sessions.clone()),
            require_viewer,
        ));
    Router::new()
        .merge(guarded)
        .route("/login", get(login_form).post(login))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .layer(Extension(sessions))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Finds the viewer: everyone (as admin) when no token is configured, which only loopback
/// allows, as for the API; otherwise the holder of a live session, and anyone else is sent to
/// the login form.
async fn require_viewer(
    State((cx, sessions)): State<(Arc<HttpContext>, Sessions)>,
    mut request: Request,
    next: Next,
) -> Response {
    let viewer = if cx.tokens.is_empty() {
        Some(sessions.open_viewer())
    } else {
        let id = request
            .headers()
            .get(header::COOKIE)
            .and_then(|value| value.to_str().ok())
            .and_then(session::session_cookie)
            .map(str::to_owned);
        match id {
            Some(id) => sessions.viewer(&id, Utc::now()).await,
            None => None,
        }
    };
    match viewer {
        Some(viewer) => {
            request.extensions_mut().insert(viewer);
            next.run(request).await
        }
        None if request.method() == Method::GET => {
            let wanted = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let target = format!("/login?next={}", url_encode(wanted));
            Redirect::to(&target).into_response()
        }
        None => page_error(
            StatusCode::UNAUTHORIZED,
            None,
            "Not logged in",
            "log in first (the session may have expired)",
        ),
    }
}

fn url_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

fn page_error(status: StatusCode, viewer: Option<&Viewer>, title: &str, detail: &str) -> Response {
    html(status, pages::error(viewer, title, detail))
}

impl api::ApiError {
    fn into_page(self, viewer: &Viewer) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        page_error(self.status, Some(viewer), &title, &self.reason)
    }
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// The list form: the API's filters, with a time window instead of raw times.
#[derive(Debug, Default, Deserialize)]
struct ListForm {
    status: Option<String>,
    cluster: Option<String>,
    severity: Option<String>,
    fault_type: Option<String>,
    window: Option<String>,
    cursor: Option<String>,
}

/// The time windows the list offers, as (form value, label, length).
const WINDOWS: &[(&str, &str, i64)] = &[
    ("1h", "last hour", 3600),
    ("6h", "last 6 hours", 6 * 3600),
    ("24h", "last 24 hours", 24 * 3600),
    ("7d", "last 7 days", 7 * 86400),
    ("30d", "last 30 days", 30 * 86400),
];

impl ListForm {
    /// The form's values as a query string, without the cursor, for links.
    fn query_string(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("status", &self.status),
            ("cluster", &self.cluster),
            ("severity", &self.severity),
            ("fault_type", &self.fault_type),
            ("window", &self.window),
        ] {
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }
}

async fn incidents(
    State(cx): State<Arc<HttpContext>>,
    Extension(viewer): Extension<Viewer>,
    form: Result<Query<ListForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let form = form.map(|Query(form)| form).unwrap_or_default();
    let now = Utc::now();
    let since = match form.window.as_deref().filter(|w| !w.is_empty()) {
        None => None,
        Some(window) => match WINDOWS.iter().find(|(value, _, _)| *value == window) {
            Some((_, _, seconds)) => Some(
                (now - chrono::Duration::seconds(*seconds))
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            None => {
                return api::ApiError::bad_request(format!("unknown time window {window:?}"))
                    .into_page(&viewer);
            }
        },
    };
    let query = ListQuery {
        status: form.status.clone(),
        cluster: form.cluster.clone().map(|c| c.trim().to_owned()),
        fault_type: form.fault_type.clone().map(|f| f.trim().to_owned()),
        severity: form.severity.clone().map(|s| s.trim().to_owned()),
        since,
        until: None,
        limit: Some(PAGE),
        cursor: form.cursor.clone(),
    };
    let filter = match api::list_filter(query) {
        Ok(filter) => filter,
        Err(error) => return error.into_page(&viewer),
    };
    let rows = match cx.queue.list(&filter).await {
        Ok(rows) => rows,
        Err(error) => return api::ApiError::from(error).into_page(&viewer),
    };
    let next = api::next_cursor(&rows, filter.limit);
    // the page's events in one query (a row whose event cannot be read shows without it)
    let event_ids: Vec<String> = rows
        .iter()
        .map(|incident| incident.fault_event_id.to_string())
        .collect();
    let mut events = cx
        .queue
        .store()
        .fault_events(&event_ids)
        .await
        .unwrap_or_else(|error| {
            tracing::warn!(error = %error, "reading the fault events of an incident page failed");
            Default::default()
        });
    let items: Vec<pages::ListItem> = rows
        .into_iter()
        .map(|incident| {
            let event = events.remove(&incident.fault_event_id.to_string());
            pages::ListItem { incident, event }
        })
        .collect();
    html(
        StatusCode::OK,
        pages::incidents(&pages::IncidentsView {
            viewer: &viewer,
            items: &items,
            status: form.status.as_deref().unwrap_or_default(),
            cluster: form.cluster.as_deref().unwrap_or_default(),
            severity: form.severity.as_deref().unwrap_or_default(),
            fault_type: form.fault_type.as_deref().unwrap_or_default(),
            window: form.window.as_deref().unwrap_or_default(),
            windows: WINDOWS,
            filtered: !form.query_string().is_empty(),
            paged: form.cursor.as_deref().is_some_and(|c| !c.is_empty()),
            next_link: next.map(|cursor| {
                let filters = form.query_string();
                if filters.is_empty() {
                    format!("/?cursor={cursor}")
                } else {
                    format!("/?{filters}&cursor={cursor}")
                }
            }),
            first_link: format!("/?{}", form.query_string()),
            now,
        }),
    )
}

#[derive(Debug, Default, Deserialize)]
struct IncidentQuery {
    notice: Option<String>,
}

async fn incident(
    State(cx): State<Arc<HttpContext>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    query: Result<Query<IncidentQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let notice = query
        .ok()
        .and_then(|Query(query)| query.notice)
        .and_then(|notice| match notice.as_str() {
            "retried" => Some("Queued again: an agent will pick it up shortly."),
            _ => None,
        });
    let id = match api::parse_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_page(&viewer),
    };
    let incident = match cx.queue.get(id).await {
        Ok(incident) => incident,
        Err(error) => return api::ApiError::from(error).into_page(&viewer),
    };
    let store = cx.queue.store();
    let event_id = incident.fault_event_id.to_string();
    let loaded = tokio::try_join!(
        store.fault_event(&event_id),
        store.plugin_runs(id),
        store.agent_executions(id),
        store.reports(id),
    );
    let (event, runs, executions, reports) = match loaded {
        Ok(loaded) => loaded,
        Err(error) => return api::ApiError::from(error).into_page(&viewer),
    };
    let log = log_tail(&cx, id).await;
    let report_html = reports
        .last()
        .map(|report| crate::report::render::fragment(&report.report_markdown));
    html(
        StatusCode::OK,
        pages::incident(&pages::IncidentView {
            viewer: &viewer,
            incident: &incident,
            event: event.as_ref(),
            runs: &runs,
            executions: &executions,
            report: reports.last(),
            report_html: report_html.as_deref(),
            log: log.as_deref(),
            notice,
            now: Utc::now(),
        }),
    )
}

/// The end of the agent log as it is now, when there is one.
async fn log_tail(cx: &HttpContext, id: Uuid) -> Option<String> {
    let mut bytes: Vec<u8> = Vec::new();
    nightcrier_agent::tail(&cx.workspace_root, &id.to_string(), false, &mut bytes)
        .await
        .ok()?;
    let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes[start..]);
    // a cut line at the start is dropped
    let text = if start > 0 {
        text.split_once('\n')
            .map(|(_, rest)| rest.to_owned())
            .unwrap_or_default()
    } else {
        text.into_owned()
    };
    Some(text)
}

async fn live_log(State(cx): State<Arc<HttpContext>>, Path(id): Path<String>) -> Response {
    match api::log(State(cx), Path(id)).await {
        Ok(stream) => stream.into_response(),
        Err(error) => error.into_response(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ActionForm {
    csrf: Option<String>,
}

/// Statuses a retry accepts (the queue's `RETRY` transition): the button is shown only there.
async fn retry(
    State(cx): State<Arc<HttpContext>>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    if viewer.grant < Grant::Admin {
        return page_error(
            StatusCode::FORBIDDEN,
            Some(&viewer),
            "Admins only",
            "retrying needs a login with the admin token",
        );
    }
    if let Some(refused) = refuse_forged(
        &viewer,
        &form,
        ": reload the incident page and press retry again",
    ) {
        return refused;
    }
    let id = match api::parse_id(&id) {
        Ok(id) => id,
        Err(error) => return error.into_page(&viewer),
    };
    match cx.queue.retry(id, Utc::now()).await {
        Ok(()) => {
            tracing::info!(incident_id = %id, "incident queued again through the web ui");
            Redirect::to(&format!("/incidents/{id}?notice=retried")).into_response()
        }
        Err(error) => api::ApiError::from(error).into_page(&viewer),
    }
}

async fn clusters(
    State(cx): State<Arc<HttpContext>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    // the breakers need the database, which may be what is down while someone looks here
    let breakers = match tokio::time::timeout(
        std::time::Duration::from_secs(1),
        cx.queue.store().breakers(),
    )
    .await
    {
        Ok(Ok(rows)) => Some(rows),
        _ => None,
    };
    html(
        StatusCode::OK,
        pages::clusters(&pages::ClustersView {
            viewer: &viewer,
            feeds: &cx.feeds.snapshot(),
            breakers: breakers.as_deref(),
            accepting: cx.ingest.accepting(),
            stats: cx.ingest.stats(),
            now: Utc::now(),
        }),
    )
}

async fn plugins(
    State(cx): State<Arc<HttpContext>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let (plugins, stats) = match &cx.plugins {
        Some(host) => (host.plugins(), host.call_stats()),
        None => (Vec::new(), Default::default()),
    };
    html(
        StatusCode::OK,
        pages::plugins(&pages::PluginsView {
            viewer: &viewer,
            configured: cx.plugins.is_some(),
            plugins: &plugins,
            stats: &stats,
            refused: &cx.refused,
        }),
    )
}

#[derive(Debug, Default, Deserialize)]
struct RejectedForm {
    cursor: Option<String>,
}

async fn rejected(
    State(cx): State<Arc<HttpContext>>,
    Extension(viewer): Extension<Viewer>,
    form: Result<Query<RejectedForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let form = form.map(|Query(form)| form).unwrap_or_default();
    let api::RejectedPage {
        rows,
        next_cursor: next,
    } = match api::rejected_page(&cx, form.cursor.as_deref(), REJECTED_PAGE).await {
        Ok(page) => page,
        Err(error) => return error.into_page(&viewer),
    };
    html(
        StatusCode::OK,
        pages::rejected(&pages::RejectedView {
            viewer: &viewer,
            rows: &rows,
            next_link: next.map(|cursor| format!("/rejected?cursor={cursor}")),
            paged: form.cursor.is_some(),
            now: Utc::now(),
        }),
    )
}

#[derive(Debug, Default, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct LoginForm {
    token: Option<String>,
    next: Option<String>,
}

/// Where to go after logging in: a path on this site only.
fn local_target(next: Option<&str>) -> String {
    match next {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.starts_with("/login") =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

async fn login_form(
    State(cx): State<Arc<HttpContext>>,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if cx.tokens.is_empty() {
        return Redirect::to("/").into_response();
    }
    let next = query.ok().and_then(|Query(query)| query.next);
    html(
        StatusCode::OK,
        pages::login(&local_target(next.as_deref()), None),
    )
}

async fn login(
    State(cx): State<Arc<HttpContext>>,
    Extension(sessions): Extension<Sessions>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if cx.tokens.is_empty() {
        return Redirect::to("/").into_response();
    }
    let form = form.map(|Form(form)| form).unwrap_or_default();
    let target = local_target(form.next.as_deref());
    let presented = form.token.as_deref().unwrap_or_default().trim().as_bytes();
    let grant = match super::auth::grant_of(&cx.tokens, Some(presented)) {
        super::auth::Grant::Admin => Grant::Admin,
        super::auth::Grant::Read => Grant::Read,
        super::auth::Grant::None => {
            tracing::info!("web ui login refused: wrong token");
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(&target, Some("That token is not the read or admin token.")),
            );
        }
    };
    let id = match sessions.start(grant, Utc::now()).await {
        Ok(id) => id,
        Err(error) => {
            tracing::warn!(error = %error, "recording a web UI login failed");
            return page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "Login failed",
                "the database did not record the login; try again",
            );
        }
    };
    let mut response = Redirect::to(&target).into_response();
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session::COOKIE,
        session::SESSION_TTL.num_seconds(),
        if behind_https(&headers) {
            "; Secure"
        } else {
            ""
        }
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// Whether the request came through a proxy that terminated HTTPS (`X-Forwarded-Proto: https`):
/// the cookie is then marked `Secure`. A client faking the header only makes its own cookie
/// stricter.
fn behind_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
}

/// The refusal of a form whose CSRF token is missing or not the viewer's (`hint` follows the
/// reason), or `None` when it is theirs.
fn refuse_forged(
    viewer: &Viewer,
    form: &Result<Form<ActionForm>, FormRejection>,
    hint: &str,
) -> Option<Response> {
    let csrf = form
        .as_ref()
        .ok()
        .and_then(|Form(form)| form.csrf.as_deref());
    (!viewer.csrf_matches(csrf)).then(|| {
        page_error(
            StatusCode::FORBIDDEN,
            Some(viewer),
            "Refused",
            &format!("the form's CSRF token is missing or wrong{hint}"),
        )
    })
}

async fn logout(
    Extension(sessions): Extension<Sessions>,
    Extension(viewer): Extension<Viewer>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    if let Some(refused) = refuse_forged(&viewer, &form, "") {
        return refused;
    }
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(session::session_cookie)
        && let Err(error) = sessions.end(id).await
    {
        tracing::warn!(error = %error, "ending a web UI session failed");
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "nightcrier_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_only_sends_people_to_this_site() {
        assert_eq!(local_target(Some("/incidents/x?a=b")), "/incidents/x?a=b");
        assert_eq!(local_target(Some("//evil.example/")), "/");
        assert_eq!(local_target(Some("https://evil.example/")), "/");
        assert_eq!(local_target(Some("/\\evil.example")), "/");
        assert_eq!(local_target(Some("/login?next=/")), "/");
        assert_eq!(local_target(None), "/");
    }
}
