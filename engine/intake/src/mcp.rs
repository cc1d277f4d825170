//! MCP feeds: one task per cluster holding a subscription to a kubernetes-mcp-server.
//!
//! Per session: `initialize` → `notifications/initialized` → open the GET stream (the server
//! drops notifications, and cancels the subscription, when no stream is attached) →
//! `logging/setLevel info` (the server sends nothing before it) → the subscribe tool the source
//! plugin names. Then `notifications/message` whose logger matches go to [`Deliver::offer`];
//! `kubernetes/subscription_error` is recorded on the feed's state.
//!
//! The server sends nothing while all is well, so a probe runs on an interval
//! (`events_list_subscriptions`, which also shows a subscription the server cancelled silently;
//! `ping` for other tools). On any failure — `404 session not found`, the stream ending, a failed
//! probe, the subscription gone — the session is torn down and a fresh one started after a
//! jittered backoff. One feed's failures never touch another's.

mod session;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use session::{AuthHeader, Endpoint, McpError};

/// A URL as shown in state and logs: without user info, query or fragment.
pub fn display_url_of(url: &reqwest::Url) -> String {
    session::display_url(url)
}

use crate::backoff::{Backoff, BackoffConfig};
use crate::sse::{SseItem, SseParser};
use crate::state::{FeedHandle, FeedState};
use crate::{Deliver, FeedKind, Message, Stopped};

/// The logger of subscription failures.
pub const SUBSCRIPTION_ERROR_LOGGER: &str = "kubernetes/subscription_error";
/// Largest notification accepted (a fault is about 1 KiB; log-enriched context up to ~60 KiB).
pub const MAX_NOTIFICATION_BYTES: usize = 1024 * 1024;

/// One cluster's MCP feed.
#[derive(Clone, Debug)]
pub struct McpFeedConfig {
    /// The configured cluster name (it wins over the payload's).
    pub cluster: String,
    /// The source plugin that decodes the notifications.
    pub source: String,
    /// The server.
    pub endpoint: Endpoint,
    /// The tool to call to subscribe (`events_subscribe`).
    pub tool: String,
    /// Its arguments: the plugin's, merged with the operator's filters.
    pub arguments: serde_json::Map<String, Value>,
    /// Only notifications on this logger are delivered (`kubernetes/faults`).
    pub logger: String,
    /// The probe: a tool listing the session's subscriptions, or `None` for `ping`.
    pub probe_tool: Option<String>,
    /// The tool that cancels a subscription on shutdown, if there is one.
    pub unsubscribe_tool: Option<String>,
    /// Timings.
    pub timing: McpTiming,
}

impl McpFeedConfig {
    /// The state entry of this feed.
    pub fn state(&self) -> FeedState {
        FeedState::new(
            &self.cluster,
            FeedKind::Mcp,
            &self.source,
            Some(self.cluster.clone()),
            session::display_url(&self.endpoint.url),
        )
    }
}

/// The companion tools of a subscribe tool: kubernetes-mcp-server's `events_subscribe` has
/// `events_list_subscriptions` (probe) and `events_unsubscribe`; other tools are probed with
/// `ping` and are not cancelled.
pub fn companion_tools(tool: &str) -> (Option<String>, Option<String>) {
    match tool.strip_suffix("_subscribe") {
        Some("events") => (
            Some("events_list_subscriptions".into()),
            Some("events_unsubscribe".into()),
        ),
        _ => (None, None),
    }
}

/// Timings of an MCP feed.
#[derive(Clone, Debug, PartialEq)]
pub struct McpTiming {
    /// Between liveness probes.
    pub probe_interval: Duration,
    /// For initialize, setLevel, probes and opening the stream.
    pub request_timeout: Duration,
    /// For the subscribe call (the server syncs its informers before answering).
    pub subscribe_timeout: Duration,
    /// Reconnection backoff.
    pub backoff: BackoffConfig,
    /// The whole of a stop: unsubscribe, `DELETE` of the session and reading to the end what
    /// the server had already written. A replica's feeds must be gone from their servers within
    /// its stop margin, so this bounds every step together, not each one.
    pub stop_timeout: Duration,
}

impl Default for McpTiming {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            subscribe_timeout: Duration::from_secs(120),
            backoff: BackoffConfig::default(),
            stop_timeout: Duration::from_secs(2),
        }
    }
}

/// What every MCP feed of a process shares: one HTTP client (one connection pool) and a cap
/// on handshakes in flight, so that a fleet reconnecting at once is paced.
#[derive(Clone, Debug)]
pub struct McpFleet {
    http: reqwest::Client,
    handshakes: Arc<Semaphore>,
}

impl McpFleet {
    /// A fleet whose feeds run at most `max_handshakes` session openings at once.
    pub fn new(max_handshakes: usize, connect_timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("nightcrier/", env!("CARGO_PKG_VERSION")))
            // No total timeout: it would cut the event stream. Requests set their own.
            .connect_timeout(connect_timeout)
            .tcp_keepalive(Duration::from_secs(30))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(2)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            handshakes: Arc::new(Semaphore::new(max_handshakes.max(1))),
        })
    }
}

/// Runs one cluster's feed until `shutdown`; says whether the server confirmed the end of its
/// session (see [`Stopped`]).
pub async fn run_feed(
    config: McpFeedConfig,
    fleet: McpFleet,
    deliver: Arc<dyn Deliver>,
    state: FeedHandle,
    shutdown: CancellationToken,
) -> Stopped {
    let mut backoff = Backoff::new(config.timing.backoff.clone());
    let context = FeedContext {
        config: &config,
        deliver: deliver.as_ref(),
        state: &state,
        source: Arc::from(config.source.as_str()),
        cluster: Arc::from(config.cluster.as_str()),
    };
    let stopped = loop {
        state.connecting();
        let end = run_session(&context, &fleet, &shutdown).await;
        let (error, active_for) = match end {
            SessionEnd::Shutdown(stopped) => break stopped,
            SessionEnd::Failed { error, active_for } => (error, active_for),
        };
        if active_for.is_some_and(|up| up >= backoff.config().reset_after) {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        let error_text = error.to_string();
        if backoff.failures() <= 1 || backoff.failures().is_power_of_two() {
            tracing::warn!(cluster = %config.cluster, error = %error_text, retry_in = ?delay, failures = backoff.failures(), "mcp feed interrupted");
        } else {
            tracing::debug!(cluster = %config.cluster, error = %error_text, retry_in = ?delay, "mcp feed still failing");
        }
        state.backoff(&error_text, delay, backoff.failures());
        tokio::select! {
            _ = shutdown.cancelled() => break Stopped::Clean,
            _ = tokio::time::sleep(delay) => {}
        }
    };
    if stopped == Stopped::Unconfirmed {
        tracing::warn!(cluster = %config.cluster, "mcp feed stopped without the server confirming its session closed");
    }
    state.stopped();
    stopped
}

struct FeedContext<'a> {
    config: &'a McpFeedConfig,
    deliver: &'a dyn Deliver,
    state: &'a FeedHandle,
    source: Arc<str>,
    cluster: Arc<str>,
}

enum SessionEnd {
    /// Told to stop; whether the server confirmed.
    Shutdown(Stopped),
    Failed {
        error: McpError,
        active_for: Option<Duration>,
    },
}

fn failed(error: McpError) -> SessionEnd {
    SessionEnd::Failed {
        error,
        active_for: None,
    }
}

async fn run_session(
    cx: &FeedContext<'_>,
    fleet: &McpFleet,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let timing = &cx.config.timing;
    let opened = {
        let open = async {
            let _permit = fleet.handshakes.acquire().await;
            let session =
                session::Session::open(&fleet.http, &cx.config.endpoint, timing.request_timeout)
                    .await?;
            // The stream must be attached before subscribing: a notification the server cannot
            // deliver cancels the subscription.
            let stream = match session.open_stream(timing.request_timeout).await {
                Ok(stream) => stream,
                Err(error) => {
                    session.close(timing.stop_timeout).await;
                    return Err(error);
                }
            };
            if let Err(error) = session
                .request(
                    "logging/setLevel",
                    serde_json::json!({"level": "info"}),
                    timing.request_timeout,
                )
                .await
            {
                session.close(timing.stop_timeout).await;
                return Err(error);
            }
            Ok((session, stream))
        };
        // Stopped while opening: no subscription was asked for yet, and dropping the half-open
        // session drops its stream, so nothing of this feed can deliver anywhere.
        tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown(Stopped::Clean),
            opened = open => opened,
        }
    };
    let (session, stream) = match opened {
        Ok(opened) => opened,
        Err(error) => return failed(error),
    };
    cx.state.subscribing();
    let end = drive(cx, &session, stream, shutdown).await;
    if let SessionEnd::Failed { .. } = end {
        // best effort: the session failed, so the server may not know it any more
        session.close(timing.stop_timeout).await;
    }
    end
}

/// Subscribes, then reads the stream and probes until something fails or shutdown.
async fn drive(
    cx: &FeedContext<'_>,
    session: &session::Session,
    stream: reqwest::Response,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let timing = &cx.config.timing;
    let mut bytes = stream.bytes_stream();
    let mut parser = SseParser::new(MAX_NOTIFICATION_BYTES);
    let mut items = Vec::new();
    let subscribe = session.call_tool(
        &cx.config.tool,
        &cx.config.arguments,
        timing.subscribe_timeout,
    );
    tokio::pin!(subscribe);
    let mut subscription: Option<Subscription> = None;
    let mut probe = tokio::time::interval_at(
        tokio::time::Instant::now() + timing.probe_interval,
        timing.probe_interval,
    );
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = |error: McpError, subscription: &Option<Subscription>| SessionEnd::Failed {
        error,
        active_for: subscription.as_ref().map(|s| s.since.elapsed()),
    };
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => {
                let deadline = tokio::time::Instant::now() + timing.stop_timeout;
                if let (Some(tool), Some(Subscription { id: Some(id), .. })) =
                    (&cx.config.unsubscribe_tool, &subscription)
                {
                    let mut arguments = serde_json::Map::new();
                    arguments.insert("subscriptionId".into(), Value::String(id.clone()));
                    // at most half the stop: the server serialises subscribe, unsubscribe and
                    // list behind one lock, and the DELETE that ends the stream matters more
                    let _ = session.call_tool(tool, &arguments, timing.stop_timeout / 2).await;
                }
                // Ending the session ends the stream cleanly after what the server already
                // wrote into it: read that to the end, so nothing sent is lost on the way out.
                // Unconfirmed, the stream is dropped at once: the closed connection is the
                // quickest way left to tell the server.
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if !session.close(left).await {
                    return SessionEnd::Shutdown(Stopped::Unconfirmed);
                }
                let drained = async {
                    while let Some(Ok(chunk)) = bytes.next().await {
                        parser.push(&chunk, &mut items);
                        let received_at = Utc::now();
                        for item in items.drain(..) {
                            let _ = on_item(cx, item, received_at);
                        }
                    }
                };
                // the session is gone at the server even if its last bytes are not all read
                let _ = tokio::time::timeout_at(deadline, drained).await;
                return SessionEnd::Shutdown(Stopped::Clean);
            }
            chunk = bytes.next() => {
                let chunk = match chunk {
                    Some(Ok(chunk)) => chunk,
                    Some(Err(error)) => {
                        return ended(McpError::Transport(format!("the event stream failed: {}", error.without_url())), &subscription);
                    }
                    None => return ended(McpError::Transport("the event stream ended".into()), &subscription),
                };
                parser.push(&chunk, &mut items);
                let received_at = Utc::now();
                for item in items.drain(..) {
                    if let Err(error) = on_item(cx, item, received_at) {
                        return ended(error, &subscription);
                    }
                }
            }
            answered = &mut subscribe, if subscription.is_none() => {
                match answered {
                    Ok(text) => {
                        let id = subscription_id(&text);
                        tracing::info!(cluster = %cx.config.cluster, subscription_id = id.as_deref().unwrap_or("?"), "mcp feed subscribed");
                        cx.state.active(id.clone());
                        subscription = Some(Subscription { id, since: tokio::time::Instant::now() });
                        probe.reset();
                    }
                    Err(error) => return failed(error),
                }
            }
            _ = probe.tick(), if subscription.is_some() => {
                // a stop does not wait for a probe in flight: the next turn takes the stop arm
                let probed = tokio::select! {
                    _ = shutdown.cancelled() => continue,
                    probed = probe_session(cx, session, subscription.as_ref()) => probed,
                };
                if let Err(error) = probed {
                    return ended(error, &subscription);
                }
            }
        }
    }
}

struct Subscription {
    id: Option<String>,
    since: tokio::time::Instant,
}

/// Checks that the session is alive and, when the probe lists subscriptions, that ours is there.
async fn probe_session(
    cx: &FeedContext<'_>,
    session: &session::Session,
    subscription: Option<&Subscription>,
) -> Result<(), McpError> {
    let timeout = cx.config.timing.request_timeout;
    let Some(tool) = &cx.config.probe_tool else {
        session
            .request("ping", Value::Object(Default::default()), timeout)
            .await?;
        return Ok(());
    };
    let text = session
        .call_tool(tool, &serde_json::Map::new(), timeout)
        .await?;
    let Some(ours) = subscription.and_then(|s| s.id.as_deref()) else {
        return Ok(());
    };
    match listed_subscriptions(&text) {
        Some(ids) if !ids.iter().any(|id| id == ours) => Err(McpError::Protocol(format!(
            "subscription {ours} is gone (the server cancelled it)"
        ))),
        _ => Ok(()),
    }
}

#[derive(Deserialize)]
struct Notification<'a> {
    method: Option<String>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LogParams<'a> {
    #[serde(default)]
    logger: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct SubscriptionErrorData {
    #[serde(default, rename = "subscriptionId")]
    subscription_id: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    degraded: bool,
}

/// Handles one SSE item of the stream; an error ends the session.
fn on_item(
    cx: &FeedContext<'_>,
    item: SseItem,
    received_at: chrono::DateTime<Utc>,
) -> Result<(), McpError> {
    let data = match item {
        SseItem::Event { data, .. } => data,
        SseItem::Oversized { head, size } => {
            unreadable(
                cx,
                head,
                format!(
                    "notification of {size} bytes is over the {MAX_NOTIFICATION_BYTES}-byte limit"
                ),
                received_at,
            );
            return Ok(());
        }
    };
    let notification: Notification<'_> = match serde_json::from_slice(&data) {
        Ok(notification) => notification,
        Err(error) => {
            unreadable(
                cx,
                data.clone(),
                format!("stream event is not a JSON-RPC message: {error}"),
                received_at,
            );
            return Ok(());
        }
    };
    match notification.method.as_deref() {
        Some("notifications/message") => {}
        Some(
            method @ ("notifications/tools/list_changed" | "notifications/prompts/list_changed"),
        ) => {
            tracing::info!(cluster = %cx.config.cluster, method, "mcp server changed its tools or prompts");
            return Ok(());
        }
        _ => return Ok(()),
    }
    let params: LogParams<'_> = match notification.params.map(|p| serde_json::from_str(p.get())) {
        Some(Ok(params)) => params,
        Some(Err(error)) => {
            unreadable(
                cx,
                data.clone(),
                format!("notifications/message has unusable params: {error}"),
                received_at,
            );
            return Ok(());
        }
        None => {
            unreadable(
                cx,
                data.clone(),
                "notifications/message without params".into(),
                received_at,
            );
            return Ok(());
        }
    };
    let logger = params.logger.unwrap_or_default();
    if logger == cx.config.logger {
        cx.state.received(1, received_at);
        cx.deliver.offer(Message {
            source: cx.source.clone(),
            cluster: Some(cx.cluster.clone()),
            kind: FeedKind::Mcp,
            logger: Some(logger),
            headers: Vec::new(),
            body: Bytes::copy_from_slice(params.data.get().as_bytes()),
            received_at,
            unreadable: None,
        });
    } else if logger == SUBSCRIPTION_ERROR_LOGGER {
        let text = params.data.get().to_owned();
        cx.state.subscription_error(&text);
        let parsed: Option<SubscriptionErrorData> = serde_json::from_str(&text).ok();
        tracing::warn!(cluster = %cx.config.cluster, data = %text, "mcp server reported a subscription error");
        if let Some(error) = parsed.filter(|error| error.degraded) {
            // The server stopped delivering on that subscription: start over.
            return Err(McpError::Protocol(format!(
                "subscription {} degraded: {}",
                error.subscription_id, error.error
            )));
        }
    }
    Ok(())
}

fn unreadable(
    cx: &FeedContext<'_>,
    body: Vec<u8>,
    reason: String,
    received_at: chrono::DateTime<Utc>,
) {
    cx.state.received(1, received_at);
    cx.deliver.offer(Message {
        source: cx.source.clone(),
        cluster: Some(cx.cluster.clone()),
        kind: FeedKind::Mcp,
        logger: None,
        headers: Vec::new(),
        body: Bytes::from(body),
        received_at,
        unreadable: Some(reason),
    });
}

/// The JSON object of a tool's text result: from the first `{` to the last `}` (the server
/// wraps it in a Markdown heading and a sentence).
fn embedded_json(text: &str) -> Option<Value> {
    let start = text.find('{')?;
    let end = text.rfind('}')?;
    serde_json::from_str(text.get(start..=end)?).ok()
}

/// The `subscriptionId` of an `events_subscribe` result.
fn subscription_id(text: &str) -> Option<String> {
    embedded_json(text)?
        .get("subscriptionId")?
        .as_str()
        .map(str::to_owned)
}

/// The subscription ids of an `events_list_subscriptions` result, or `None` if it cannot be read
/// (then the probe only proves the session is alive).
fn listed_subscriptions(text: &str) -> Option<Vec<String>> {
    let value = embedded_json(text)?;
    let list = value.get("subscriptions")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|entry| entry.get("subscriptionId")?.as_str().map(str::to_owned))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_ids_are_read_from_the_result_texts() {
        let created = "# Event Subscription Created\n\n{\n  \"cluster\": \"kind-dev\",\n  \"createdAt\": \"2025-12-20T14:02:55Z\",\n  \"filters\": {},\n  \"mode\": \"faults\",\n  \"status\": \"active\",\n  \"subscriptionId\": \"sub-3f2a9c1e\"\n}\n\nYou will receive event notifications via the logging/message protocol.";
        assert_eq!(subscription_id(created).as_deref(), Some("sub-3f2a9c1e"));
        let listed = "# Active Subscriptions\n\n{\n  \"subscriptions\": [\n    {\n      \"cluster\": \"kind-dev\",\n      \"degraded\": false,\n      \"filters\": {},\n      \"mode\": \"faults\",\n      \"subscriptionId\": \"sub-3f2a9c1e\"\n    }\n  ],\n  \"total\": 1\n}";
        assert_eq!(
            listed_subscriptions(listed),
            Some(vec!["sub-3f2a9c1e".to_owned()])
        );
        let empty = "# Active Subscriptions\n\n{\n  \"subscriptions\": [],\n  \"total\": 0\n}";
        assert_eq!(listed_subscriptions(empty), Some(vec![]));
        assert_eq!(listed_subscriptions("no json here"), None);
    }

    #[test]
    fn companion_tools_follow_the_subscribe_tool() {
        assert_eq!(
            companion_tools("events_subscribe"),
            (
                Some("events_list_subscriptions".into()),
                Some("events_unsubscribe".into())
            )
        );
        assert_eq!(companion_tools("watch"), (None, None));
    }
}
