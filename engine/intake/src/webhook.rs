//! Webhook feeds: an axum route fragment serving `POST /webhooks/<path>` for each webhook source
//! plugin. A request is checked (bearer token in constant time, content type, body size), handed
//! to [`Deliver::submit`], and answered `202` only once its events are committed; `401`, `413`,
//! `415` and `422` carry a one-line reason, and `503` with `Retry-After` tells the sender to come
//! back when the database cannot be written (Alertmanager and most senders retry on 5xx).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use chrono::Utc;

use crate::state::{FeedHandle, FeedRegistry, FeedState};
use crate::{Deliver, FeedKind, Message, Secret, Submitted};

/// The prefix under which webhook paths are served.
pub const PREFIX: &str = "/webhooks";
/// Default body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Headers never handed to a plugin: they carry credentials.
const PRIVATE_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
];
/// At most this many headers reach the plugin.
const MAX_HEADERS: usize = 64;

/// One webhook source.
#[derive(Clone, Debug)]
pub struct WebhookRoute {
    /// The source plugin that decodes the bodies.
    pub source: String,
    /// Its path under [`PREFIX`], without a leading slash (e.g. `alertmanager`).
    pub path: String,
    /// The bearer token senders must present, if any.
    pub token: Option<Secret>,
    /// Largest body accepted; larger gets `413`.
    pub max_body_bytes: usize,
    /// The cluster its events are about, when the feed is tied to one.
    pub cluster: Option<String>,
    /// Accepted media types (lower case), e.g. `application/json`.
    pub content_types: Vec<String>,
}

impl WebhookRoute {
    /// The full path served.
    pub fn full_path(&self) -> String {
        format!("{PREFIX}/{}", self.path.trim_start_matches('/'))
    }

    /// The state entry of this feed.
    pub fn state(&self) -> FeedState {
        FeedState::new(
            &self.source,
            FeedKind::Webhook,
            &self.source,
            self.cluster.clone(),
            self.full_path(),
        )
    }
}

struct RouteContext {
    route: WebhookRoute,
    source: Arc<str>,
    cluster: Option<Arc<str>>,
    deliver: Arc<dyn Deliver>,
    state: FeedHandle,
}

/// A router with one `POST` route per webhook source; each feed is registered in `registry`.
pub fn router(
    routes: Vec<WebhookRoute>,
    deliver: Arc<dyn Deliver>,
    registry: &FeedRegistry,
) -> Router {
    let mut router = Router::new();
    for route in routes {
        let state = registry.register(route.state());
        state.healthy();
        let path = route.full_path();
        let context = Arc::new(RouteContext {
            source: Arc::from(route.source.as_str()),
            cluster: route.cluster.as_deref().map(Arc::from),
            route,
            deliver: deliver.clone(),
            state,
        });
        router = router.route(&path, post(accept).with_state(context));
    }
    router
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": reason.into()});
    (status, axum::Json(body)).into_response()
}

async fn accept(State(cx): State<Arc<RouteContext>>, headers: HeaderMap, body: Body) -> Response {
    if let Some(token) = &cx.route.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
        if !presented.is_some_and(|presented| token.matches(presented)) {
            let mut response = refuse(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (send Authorization: Bearer <token>)",
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    if !cx.route.content_types.contains(&media_type) {
        return refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content type {:?} is not accepted here (send {})",
                media_type,
                cx.route.content_types.join(" or ")
            ),
        );
    }
    let limit = cx.route.max_body_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return too_large(limit);
    }
    let body: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => return too_large(limit),
    };
    let received_at = Utc::now();
    let forwarded = headers
        .iter()
        .filter(|(name, _)| !PRIVATE_HEADERS.contains(&name.as_str()))
        .take(MAX_HEADERS)
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    cx.state.received(1, received_at);
    let message = Message {
        source: cx.source.clone(),
        cluster: cx.cluster.clone(),
        kind: FeedKind::Webhook,
        logger: None,
        headers: forwarded,
        body,
        received_at,
        unreadable: None,
    };
    match cx.deliver.submit(message).await {
        Submitted::Committed { events, rejected } => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({"events": events, "rejected": rejected})),
        )
            .into_response(),
        Submitted::Refused { reason } => {
            cx.state.error(&reason);
            refuse(StatusCode::UNPROCESSABLE_ENTITY, reason)
        }
        Submitted::Unavailable {
            retry_after,
            reason,
        } => {
            cx.state.error(&reason);
            let mut response = refuse(StatusCode::SERVICE_UNAVAILABLE, reason);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            response
        }
    }
}

fn too_large(limit: usize) -> Response {
    refuse(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("body is over the {limit}-byte limit of this webhook"),
    )
}
