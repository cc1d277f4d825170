//! Poll feeds: `GET` a URL every interval (at least [`MIN_INTERVAL`]) with
//! `If-None-Match`, and hand a changed body to [`Deliver::offer`]. Failures back off like MCP
//! feeds; while the engine cannot commit (`Deliver::accepting` is false) the fetch is skipped,
//! since what it would fetch is still at the source afterwards.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use tokio_util::sync::CancellationToken;

use crate::backoff::{Backoff, BackoffConfig};
use crate::mcp::AuthHeader;
use crate::state::{FeedHandle, FeedState};
use crate::{Deliver, FeedKind, Message, Stopped};

/// The shortest interval between polls.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Default body limit.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// One poll feed.
#[derive(Clone, Debug)]
pub struct PollFeedConfig {
    /// The source plugin that decodes the bodies.
    pub source: String,
    /// What to fetch.
    pub url: reqwest::Url,
    /// Between fetches (raised to [`MIN_INTERVAL`]).
    pub interval: Duration,
    /// Per fetch.
    pub timeout: Duration,
    /// A header sent with every fetch.
    pub auth: Option<AuthHeader>,
    /// The cluster its events are about, when the feed is tied to one.
    pub cluster: Option<String>,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// Backoff after failed fetches.
    pub backoff: BackoffConfig,
}

impl PollFeedConfig {
    /// The state entry of this feed.
    pub fn state(&self) -> FeedState {
        FeedState::new(
            &self.source,
            FeedKind::Poll,
            &self.source,
            self.cluster.clone(),
            crate::mcp::display_url_of(&self.url),
        )
    }
}

/// Runs one poll feed until `shutdown`.
pub async fn run_feed(
    config: PollFeedConfig,
    http: reqwest::Client,
    deliver: Arc<dyn Deliver>,
    state: FeedHandle,
    shutdown: CancellationToken,
) -> Stopped {
    let interval = config.interval.max(MIN_INTERVAL);
    let mut backoff = Backoff::new(config.backoff.clone());
    let mut etag: Option<HeaderValue> = None;
    let source: Arc<str> = Arc::from(config.source.as_str());
    let cluster: Option<Arc<str>> = config.cluster.as_deref().map(Arc::from);
    loop {
        let wait = if !deliver.accepting() {
            interval
        } else {
            // a fetch in flight is dropped on stop: a poll holds nothing at the source
            let fetched = tokio::select! {
                _ = shutdown.cancelled() => break,
                fetched = fetch(&config, &http, etag.as_ref()) => fetched,
            };
            match fetched {
                Ok(Fetched::Unchanged) => {
                    backoff.reset();
                    state.healthy();
                    interval
                }
                Ok(Fetched::Changed {
                    body,
                    new_etag,
                    content_type,
                }) => {
                    backoff.reset();
                    state.healthy();
                    etag = new_etag;
                    let received_at = Utc::now();
                    state.received(1, received_at);
                    let headers = content_type
                        .map(|value| vec![("content-type".to_owned(), value)])
                        .unwrap_or_default();
                    deliver.offer(Message {
                        source: source.clone(),
                        cluster: cluster.clone(),
                        kind: FeedKind::Poll,
                        logger: None,
                        headers,
                        body,
                        received_at,
                        unreadable: None,
                    });
                    interval
                }
                Err(error) => {
                    let delay = backoff.next_delay().max(interval);
                    tracing::warn!(source = %config.source, error = %error, retry_in = ?delay, "poll failed");
                    state.backoff(&error, delay, backoff.failures());
                    delay
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    state.stopped();
    Stopped::Clean
}

enum Fetched {
    Unchanged,
    Changed {
        body: Bytes,
        new_etag: Option<HeaderValue>,
        content_type: Option<String>,
    },
}

async fn fetch(
    config: &PollFeedConfig,
    http: &reqwest::Client,
    etag: Option<&HeaderValue>,
) -> Result<Fetched, String> {
    let mut request = http
        .get(config.url.clone())
        .header(ACCEPT, "application/json")
        .timeout(config.timeout);
    if let Some(etag) = etag {
        request = request.header(IF_NONE_MATCH, etag.clone());
    }
    if let Some(auth) = &config.auth
        && let Ok(mut value) = HeaderValue::from_str(auth.value.expose())
    {
        value.set_sensitive(true);
        request = request.header(auth.name.clone(), value);
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("fetch failed: {}", e.without_url()))?;
    match response.status() {
        StatusCode::NOT_MODIFIED => return Ok(Fetched::Unchanged),
        status if !status.is_success() => return Err(format!("fetch answered HTTP {status}")),
        _ => {}
    }
    let new_etag = response.headers().get(ETAG).cloned();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading the body failed: {}", e.without_url()))?;
        if body.len() + chunk.len() > config.max_body_bytes {
            return Err(format!(
                "body is over the {}-byte limit",
                config.max_body_bytes
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched::Changed {
        body: Bytes::from(body),
        new_etag,
        content_type,
    })
}
