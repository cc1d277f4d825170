//! nightcrier's intake: the transports that bring fault messages in, with no database handle.
//!
//! - [`mcp`]: one long-lived MCP (Streamable HTTP) subscription per cluster to a
//!   kubernetes-mcp-server, with liveness probes, teardown on any failure and jittered backoff.
//! - [`webhook`]: an axum route fragment that accepts `POST`s for webhook source plugins.
//! - [`poll`]: a loop that fetches a URL on an interval with `ETag`/`If-None-Match`.
//!
//! Every transport hands what it received, undecoded, to a [`Deliver`] that the engine
//! implements (decode through the source plugin, validate, commit or dead-letter). Feeds report
//! their state into a [`FeedRegistry`] that the engine shows over HTTP.

pub mod backoff;
pub mod mcp;
pub mod poll;
mod secret;
mod sse;
mod state;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use backoff::{Backoff, BackoffConfig};
pub use secret::Secret;
pub use state::{FeedHandle, FeedPhase, FeedRegistry, FeedState};

/// Which kind of feed a message came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// An MCP subscription (`notifications/message` on the standalone GET stream).
    Mcp,
    /// An HTTP `POST` to the webhook listener.
    Webhook,
    /// A periodic `GET`.
    Poll,
}

impl FeedKind {
    /// The lower-case name used in logs, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Mcp => "mcp",
            FeedKind::Webhook => "webhook",
            FeedKind::Poll => "poll",
        }
    }
}

/// How a stream feed ended when it was told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Nothing of it is left at the source: the server confirmed the session closed (or there
    /// was none). Another process may subscribe at once.
    Clean,
    /// The source did not confirm in time: it may still hold this feed's subscription until it
    /// notices the dropped connection. Whoever takes the feed over should wait for its lease to
    /// expire rather than be handed it.
    Unconfirmed,
}

/// One message received from a feed, handed to the engine undecoded.
#[derive(Clone, Debug)]
pub struct Message {
    /// The source plugin that decodes it (its id).
    pub source: Arc<str>,
    /// The configured cluster the feed is attached to, when there is one.
    pub cluster: Option<Arc<str>>,
    /// The transport.
    pub kind: FeedKind,
    /// For MCP, the notification's logger name.
    pub logger: Option<String>,
    /// HTTP headers (webhook, poll), without credentials; empty for MCP.
    pub headers: Vec<(String, String)>,
    /// For MCP the JSON text of `params.data`; otherwise the HTTP body.
    pub body: Bytes,
    /// When nightcrier received it.
    pub received_at: DateTime<Utc>,
    /// Set when the transport could not make a message of what it read (for example an SSE
    /// event that is not JSON-RPC): the engine keeps `body` as a dead letter with this reason
    /// instead of decoding it.
    pub unreadable: Option<String>,
}

/// What became of a webhook request the engine was asked to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// Committed: `events` fault events stored; `rejected` holds the reasons of the parts that
    /// were dead-lettered.
    Committed {
        /// Events stored.
        events: usize,
        /// Why each refused part was refused.
        rejected: Vec<String>,
    },
    /// Nothing in the body could be used; it was kept as a dead letter with this reason.
    Refused {
        /// Why.
        reason: String,
    },
    /// Nothing was committed because the database cannot be written now; the sender should
    /// retry after `retry_after`.
    Unavailable {
        /// Suggested wait.
        retry_after: Duration,
        /// Why.
        reason: String,
    },
}

/// The engine side of intake: where feeds hand their messages.
pub trait Deliver: Send + Sync + 'static {
    /// Hands over a message from a stream (MCP, poll). Returns at once: the engine buffers the
    /// message, or spools it to disk while the database cannot be written. Never blocks a reader.
    fn offer(&self, message: Message);

    /// Hands over a webhook request and resolves when it is committed or refused.
    fn submit(&self, message: Message) -> BoxFuture<'static, Submitted>;

    /// Whether messages are being committed right now (false while the database is out and the
    /// engine spools). Poll feeds skip their fetch while this is false: what they would fetch is
    /// still at the source afterwards.
    fn accepting(&self) -> bool;
}
