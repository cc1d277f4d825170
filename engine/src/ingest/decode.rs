//! One message → fault events, through the source plugin that its feed names: the envelope is
//! built, the plugin's `decode` is called (sandboxed and bounded by the plugin host), and every
//! event it returns is validated. The result is rows to write: events, dead letters (the
//! message's bytes as received, with the reason) and, when the plugin trapped, timed out or hit
//! a limit, a `plugin_runs` row. Ids are derived from the message's id, so decoding and
//! committing the same message twice stores it once.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nightcrier_intake::{FeedKind, Message};
use nightcrier_plugin_host::types::{self, Envelope};
use nightcrier_plugin_host::{CallError, PluginHost, World};
use uuid::Uuid;

use super::validate::{self, EventContext};
use crate::queue::{KeyedEvent, KeyedPluginRun, NewRejected};
use crate::store::NewPluginRun;

/// A message with the id nightcrier gave it on receipt.
#[derive(Clone, Debug)]
pub struct Received {
    /// Time-ordered, unique; the rows made from the message derive their ids from it.
    pub id: Uuid,
    /// The message.
    pub message: Message,
}

impl Received {
    /// Stamps `message` with a fresh id.
    pub fn new(message: Message) -> Self {
        Self {
            id: Uuid::now_v7(),
            message,
        }
    }
}

/// What one message became.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Events to store.
    pub events: Vec<KeyedEvent>,
    /// Dead letters.
    pub rejected: Vec<NewRejected>,
    /// The plugin's failure, when it trapped, timed out or hit a limit.
    pub plugin_run: Option<KeyedPluginRun>,
}

/// Which row kind an id is derived for; part of the derivation so that kinds never collide.
#[derive(Clone, Copy)]
enum RowKind {
    Event = 0,
    Rejected = 1,
    PluginRun = 2,
}

/// The id of the `index`th row of `kind` made from message `message`: the message's UUIDv7
/// with its random low bits mixed with the kind and index (version and variant bits untouched,
/// the time prefix kept, so the ids stay time-ordered). Index 0 of events is the message id.
fn derived_id(message: Uuid, kind: RowKind, index: usize) -> Uuid {
    let mix = ((kind as u128) << 40) | (index as u128 & 0xFF_FFFF_FFFF);
    Uuid::from_u128(message.as_u128() ^ mix)
}

/// The id of the dead letter kept for a message the database refused to store.
pub(super) fn dead_letter_id(message: Uuid) -> Uuid {
    derived_id(message, RowKind::Rejected, 0xFF_FFFF_FFFF)
}

/// Decodes messages through the loaded source plugins.
#[derive(Clone)]
pub struct Decoder {
    host: PluginHost,
    known_clusters: Arc<BTreeSet<String>>,
}

impl Decoder {
    /// A decoder over `host`; events naming one of `known_clusters` always pass the cluster check.
    pub fn new(host: PluginHost, known_clusters: BTreeSet<String>) -> Self {
        Self {
            host,
            known_clusters: Arc::new(known_clusters),
        }
    }

    /// The plugin host.
    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// Decodes one message.
    pub async fn decode(&self, received: &Received) -> Decoded {
        let message = &received.message;
        let mut decoded = Decoded::default();
        let reject = |decoded: &mut Decoded, reason: String| {
            let index = decoded.rejected.len();
            decoded.rejected.push(NewRejected {
                id: derived_id(received.id, RowKind::Rejected, index),
                source: message.source.to_string(),
                cluster: message.cluster.as_deref().map(str::to_owned),
                raw_payload: message.body.to_vec(),
                reason,
                received_at: message.received_at,
            });
        };
        if let Some(reason) = &message.unreadable {
            reject(&mut decoded, reason.clone());
            return decoded;
        }
        let envelope = Envelope {
            kind: match message.kind {
                FeedKind::Mcp => types::FeedKind::Mcp,
                FeedKind::Webhook => types::FeedKind::Webhook,
                FeedKind::Poll => types::FeedKind::Poll,
            },
            cluster: message.cluster.as_deref().map(str::to_owned),
            headers: message.headers.clone(),
            body: message.body.to_vec(),
            logger: message.logger.clone(),
            received_at_ms: u64::try_from(message.received_at.timestamp_millis())
                .unwrap_or_default(),
        };
        let started = tokio::time::Instant::now();
        let mut result = self.host.decode(&message.source, &envelope).await;
        if matches!(result, Err(CallError::Timeout { .. })) {
            // A deadline can pass while a starved machine does not schedule the call: try once
            // more before keeping the message as a dead letter (a plugin that really loops
            // costs two deadlines).
            result = self.host.decode(&message.source, &envelope).await;
        }
        let took = started.elapsed();
        let events = match result {
            Ok(events) => events,
            Err(error) => {
                if let Some(outcome) = failure_outcome(&error) {
                    decoded.plugin_run = Some(KeyedPluginRun {
                        id: derived_id(received.id, RowKind::PluginRun, 0),
                        run: NewPluginRun {
                            incident_id: None,
                            stage: "source",
                            plugin: message.source.to_string(),
                            plugin_version: self.host.plugin(&message.source).map(|p| p.version),
                            outcome: outcome.to_owned(),
                            duration: took,
                            error: Some(error.to_string()),
                        },
                        at: Utc::now(),
                    });
                }
                reject(&mut decoded, error.to_string());
                return decoded;
            }
        };
        if events.is_empty() {
            return decoded;
        }
        let payload = payload_of(&message.body);
        let cx = EventContext {
            source: &message.source,
            feed_cluster: message.cluster.as_deref(),
            known_clusters: &self.known_clusters,
            received_at: message.received_at,
        };
        let count = events.len();
        for (index, event) in events.into_iter().enumerate() {
            match validate::event(&cx, event, &payload) {
                Ok(event) => decoded.events.push(KeyedEvent {
                    id: derived_id(received.id, RowKind::Event, index),
                    event,
                }),
                Err(reason) => {
                    let position = if count > 1 {
                        format!(" (event {} of {count})", index + 1)
                    } else {
                        String::new()
                    };
                    reject(
                        &mut decoded,
                        format!(
                            "{} decoded an invalid event{position}: {reason}",
                            message.source
                        ),
                    );
                }
            }
        }
        decoded
    }

    /// Whether `id` is a loaded source plugin.
    pub fn has_source(&self, id: &str) -> bool {
        self.host
            .plugin(id)
            .is_some_and(|plugin| plugin.world == World::Source)
    }
}

/// The `plugin_runs` outcome of a failed decode, or `None` when the plugin merely refused the
/// message (that is a dead letter, not a plugin failure).
fn failure_outcome(error: &CallError) -> Option<&'static str> {
    match error {
        CallError::Plugin { .. } => None,
        CallError::Timeout { .. } => Some("timeout"),
        CallError::MemoryLimit { .. } => Some("memory_limit"),
        CallError::OutputTooLarge { .. } => Some("output_too_large"),
        CallError::Trap { .. } => Some("trap"),
        CallError::KvWrites { .. } => Some("kv_error"),
        CallError::Instantiate { .. }
        | CallError::NotFound { .. }
        | CallError::WrongWorld { .. } => Some("error"),
    }
}

/// The message body as stored with its events: JSON when it is JSON, else its text.
fn payload_of(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()))
}

/// A message built for `ingest`: the envelope a feed of the plugin's own kind would give.
pub fn message_for(
    host: &PluginHost,
    source: &str,
    cluster: Option<&str>,
    body: Vec<u8>,
    received_at: DateTime<Utc>,
) -> Message {
    let (kind, logger) = match host.plugin(source).and_then(|p| p.feed) {
        Some(types::Feed::Mcp(feed)) => (FeedKind::Mcp, Some(feed.logger)),
        Some(types::Feed::Poll(_)) => (FeedKind::Poll, None),
        _ => (FeedKind::Webhook, None),
    };
    let headers = match kind {
        FeedKind::Mcp => Vec::new(),
        _ => vec![("content-type".to_owned(), "application/json".to_owned())],
    };
    Message {
        source: Arc::from(source),
        cluster: cluster.map(Arc::from),
        kind,
        logger,
        headers,
        body: body.into(),
        received_at,
        unreadable: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_distinct_and_keep_version_and_time() {
        let message = Uuid::now_v7();
        assert_eq!(derived_id(message, RowKind::Event, 0), message);
        let mut seen = std::collections::HashSet::new();
        for kind in [RowKind::Event, RowKind::Rejected, RowKind::PluginRun] {
            for index in 0..100 {
                let id = derived_id(message, kind, index);
                assert_eq!(id.get_version_num(), 7);
                assert_eq!(id.as_bytes()[..6], message.as_bytes()[..6]);
                assert!(seen.insert(id));
            }
        }
    }
}
