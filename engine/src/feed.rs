//! Glue between `serve` and the intake crate: which feeds run (an MCP subscription per cluster
//! with an `mcp` table, a webhook route per webhook source plugin, a poll loop per poll source
//! plugin), built from the settings and the loaded plugins, handing their messages to the
//! [`Ingestor`] through [`EngineDeliver`]. A feed whose source plugin was refused at load is
//! registered as disabled, with the reason, and not started; one failing feed never blocks
//! another or start-up.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use nightcrier_intake::mcp::{AuthHeader, Endpoint, McpFeedConfig, McpFleet, McpTiming};
use nightcrier_intake::poll::PollFeedConfig;
use nightcrier_intake::webhook::WebhookRoute;
use nightcrier_intake::{
    BackoffConfig, Deliver, FeedKind, FeedRegistry, FeedState, Message, Secret, Submitted,
};
use nightcrier_plugin_host::types::Feed;
use nightcrier_plugin_host::{PluginHost, World};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod supervisor;

pub use supervisor::{WATCHDOG_TICK, supervise};

use crate::ingest::{IngestError, Ingestor};
use crate::plugin::RefusedPlugin;

/// How long a webhook waits for its commit before answering `503`.
const WEBHOOK_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Intake settings (`[intake]` and each cluster's `mcp` table).
#[derive(Clone, Debug)]
pub struct IntakeSettings {
    /// Sessions opened at once across the fleet.
    pub max_handshakes: usize,
    /// TCP connect timeout of every feed.
    pub connect_timeout: Duration,
    /// Default timings of MCP feeds.
    pub mcp: McpTiming,
    /// Webhook sources by plugin id.
    pub webhooks: BTreeMap<String, WebhookSettings>,
    /// Poll sources by plugin id.
    pub polls: BTreeMap<String, PollSettings>,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        Self {
            max_handshakes: 64,
            connect_timeout: Duration::from_secs(10),
            mcp: McpTiming::default(),
            webhooks: BTreeMap::new(),
            polls: BTreeMap::new(),
        }
    }
}

/// A cluster's MCP feed.
#[derive(Clone, Debug)]
pub struct McpSettings {
    /// The server's `/mcp` URL.
    pub url: reqwest::Url,
    /// Sent with every request.
    pub auth: Option<AuthHeader>,
    /// The source plugin; `None` picks the one source plugin whose feed is MCP.
    pub source: Option<String>,
    /// Merged into the subscribe tool's arguments (e.g. `namespaces`).
    pub filters: serde_json::Map<String, serde_json::Value>,
    /// Timings of this feed.
    pub timing: McpTiming,
}

/// A webhook source (`[intake.webhook.<plugin>]`).
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// The bearer token senders must present.
    pub token: Option<Secret>,
    /// Largest body.
    pub max_body_bytes: usize,
    /// The cluster its events are about, when it has one.
    pub cluster: Option<String>,
    /// Accepted media types.
    pub content_types: Vec<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            token: None,
            max_body_bytes: nightcrier_intake::webhook::DEFAULT_MAX_BODY_BYTES,
            cluster: None,
            content_types: vec!["application/json".into()],
        }
    }
}

/// A poll source (`[intake.poll.<plugin>]`).
#[derive(Clone, Debug)]
pub struct PollSettings {
    /// Overrides the plugin's URL.
    pub url: Option<reqwest::Url>,
    /// Overrides the plugin's interval.
    pub interval: Option<Duration>,
    /// Per fetch.
    pub timeout: Duration,
    /// Sent with every fetch.
    pub auth: Option<AuthHeader>,
    /// The cluster its events are about, when it has one.
    pub cluster: Option<String>,
}

impl Default for PollSettings {
    fn default() -> Self {
        Self {
            url: None,
            interval: None,
            timeout: Duration::from_secs(10),
            auth: None,
            cluster: None,
        }
    }
}

/// The engine side of intake: feeds hand messages to the ingest path here.
#[derive(Clone, Debug)]
pub struct EngineDeliver {
    ingestor: Ingestor,
}

impl EngineDeliver {
    /// Delivers into `ingestor`.
    pub fn new(ingestor: Ingestor) -> Self {
        Self { ingestor }
    }
}

impl Deliver for EngineDeliver {
    fn offer(&self, message: Message) {
        self.ingestor.offer(message);
    }

    fn submit(&self, message: Message) -> BoxFuture<'static, Submitted> {
        let ingestor = self.ingestor.clone();
        Box::pin(async move {
            let unavailable = |reason: String| Submitted::Unavailable {
                retry_after: Duration::from_secs(30),
                reason,
            };
            match tokio::time::timeout(WEBHOOK_COMMIT_TIMEOUT, ingestor.submit(message)).await {
                Err(_) => unavailable("the database did not commit in time".into()),
                Ok(Err(IngestError::Unavailable(reason))) => unavailable(reason),
                Ok(Err(IngestError::Stopped)) => unavailable("nightcrier is shutting down".into()),
                Ok(Ok(outcome)) if outcome.incidents.is_empty() && !outcome.rejected.is_empty() => {
                    Submitted::Refused {
                        reason: outcome.rejected.join("; "),
                    }
                }
                Ok(Ok(outcome)) => Submitted::Committed {
                    events: outcome.incidents.len(),
                    rejected: outcome.rejected,
                },
            }
        })
    }

    fn accepting(&self) -> bool {
        self.ingestor.accepting()
    }
}

/// What [`start`] set up.
pub struct StartedFeeds {
    /// Every feed's state.
    pub registry: FeedRegistry,
    /// The webhook routes, for the HTTP listener.
    pub webhooks: axum::Router,
    /// The stream feeds (MCP, poll), ready to run: all at once on a single instance, or each on
    /// the replica that holds its lease (`feed/supervisor.rs`).
    pub streams: Vec<StreamFeed>,
}

/// Starts a feed's task; it runs until the token is cancelled and says whether its source
/// confirmed the stop.
pub type StartFeed = Arc<
    dyn Fn(CancellationToken) -> futures::future::BoxFuture<'static, nightcrier_intake::Stopped>
        + Send
        + Sync,
>;

/// A stream feed: its lease key (`mcp:<cluster>`, `poll:<plugin>`), its state and its start.
pub struct StreamFeed {
    /// The key of its lease.
    pub key: String,
    /// Its state entry.
    pub state: nightcrier_intake::FeedHandle,
    /// Starts it.
    pub start: StartFeed,
}

impl StreamFeed {
    /// Runs every feed of `streams` here, until `shutdown`.
    pub fn run_all(
        streams: Vec<StreamFeed>,
        shutdown: &CancellationToken,
        tasks: &mut JoinSet<()>,
    ) {
        for feed in streams {
            let run = (feed.start)(shutdown.child_token());
            tasks.spawn(async move {
                run.await;
            });
        }
    }
}

/// Why a cluster's MCP feed cannot run, or which plugin decodes it.
fn mcp_source(
    mcp: &McpSettings,
    host: Option<&PluginHost>,
    refused: &[RefusedPlugin],
) -> Result<String, String> {
    let Some(host) = host else {
        return Err("no plugins are loaded (set plugins.dir or pass --plugins)".into());
    };
    let id = match &mcp.source {
        Some(id) => id.clone(),
        None => {
            let candidates: Vec<String> = host
                .chain(World::Source)
                .into_iter()
                .filter(|id| matches!(host.plugin(id).and_then(|p| p.feed), Some(Feed::Mcp(_))))
                .collect();
            match candidates.as_slice() {
                [one] => one.clone(),
                [] if refused.is_empty() => {
                    return Err("no source plugin with an MCP feed is loaded".into());
                }
                [] => {
                    let refusals: Vec<String> = refused
                        .iter()
                        .map(|r| format!("{} ({})", r.id, r.reason))
                        .collect();
                    return Err(format!(
                        "no source plugin with an MCP feed is loaded; refused at load: {}",
                        refusals.join("; ")
                    ));
                }
                many => {
                    return Err(format!(
                        "several source plugins have an MCP feed ({}); name one in mcp.source",
                        many.join(", ")
                    ));
                }
            }
        }
    };
    if let Some(refusal) = refused.iter().find(|r| r.id == id) {
        return Err(format!(
            "source plugin `{id}` was refused at load: {}",
            refusal.reason
        ));
    }
    match host.plugin(&id) {
        Some(plugin) if plugin.world == World::Source => match plugin.feed {
            Some(Feed::Mcp(_)) => Ok(id),
            _ => Err(format!("source plugin `{id}` has no MCP feed")),
        },
        Some(plugin) => Err(format!(
            "plugin `{id}` is a {} plugin, not a source",
            plugin.world.as_str()
        )),
        None => Err(format!("no source plugin `{id}` is loaded")),
    }
}

/// The webhook source plugins that have no token configured.
pub fn webhooks_without_token(settings: &IntakeSettings, host: Option<&PluginHost>) -> Vec<String> {
    let Some(host) = host else {
        return Vec::new();
    };
    host.chain(World::Source)
        .into_iter()
        .filter(|id| matches!(host.plugin(id).and_then(|p| p.feed), Some(Feed::Webhook(_))))
        .filter(|id| {
            settings
                .webhooks
                .get(id)
                .is_none_or(|webhook| webhook.token.is_none())
        })
        .collect()
}

/// Builds every feed: the stream feeds (MCP, poll) ready to run, and the webhook routes for the
/// HTTP listener.
pub fn start(
    clusters: &BTreeMap<String, crate::config::ClusterSettings>,
    settings: &IntakeSettings,
    host: Option<&PluginHost>,
    refused: &[RefusedPlugin],
    ingestor: &Ingestor,
) -> anyhow::Result<StartedFeeds> {
    let registry = FeedRegistry::new();
    let mut streams = Vec::new();
    let deliver: Arc<dyn Deliver> = Arc::new(EngineDeliver::new(ingestor.clone()));
    let fleet = McpFleet::new(settings.max_handshakes, settings.connect_timeout)?;
    for (cluster, cluster_settings) in clusters {
        let Some(mcp) = &cluster_settings.mcp else {
            continue;
        };
        let source = mcp_source(mcp, host, refused);
        let feed_host = host.filter(|_| source.is_ok());
        let (tool, arguments, logger) = match feed_host
            .zip(source.as_ref().ok())
            .and_then(|(host, id)| host.plugin(id))
            .and_then(|plugin| plugin.feed)
        {
            Some(Feed::Mcp(feed)) => {
                let mut arguments: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&feed.arguments).unwrap_or_default();
                arguments.extend(mcp.filters.clone());
                (feed.tool, arguments, feed.logger)
            }
            _ => Default::default(),
        };
        let (probe_tool, unsubscribe_tool) = nightcrier_intake::mcp::companion_tools(&tool);
        let config = McpFeedConfig {
            cluster: cluster.clone(),
            source: source.clone().unwrap_or_default(),
            endpoint: Endpoint {
                url: mcp.url.clone(),
                auth: mcp.auth.clone(),
            },
            tool,
            arguments,
            logger,
            probe_tool,
            unsubscribe_tool,
            timing: mcp.timing.clone(),
        };
        let state = registry.register(config.state());
        match source {
            Ok(_) => {
                let (fleet, deliver, handle) = (fleet.clone(), deliver.clone(), state.clone());
                let config = Arc::new(config);
                streams.push(StreamFeed {
                    key: format!("mcp:{cluster}"),
                    state,
                    start: Arc::new(move |stop| {
                        Box::pin(nightcrier_intake::mcp::run_feed(
                            (*config).clone(),
                            fleet.clone(),
                            deliver.clone(),
                            handle.clone(),
                            stop,
                        ))
                    }),
                });
            }
            Err(reason) => {
                tracing::error!(cluster = %cluster, error = %reason, "mcp feed not started");
                state.disabled(&reason);
            }
        }
    }

    let mut routes = Vec::new();
    let poll_client = reqwest::Client::builder()
        .user_agent(concat!("nightcrier/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(settings.connect_timeout)
        .build()?;
    if let Some(host) = host {
        for id in host.chain(World::Source) {
            let Some(plugin) = host.plugin(&id) else {
                continue;
            };
            match plugin.feed {
                Some(Feed::Webhook(feed)) => {
                    let configured = settings.webhooks.get(&id).cloned().unwrap_or_default();
                    routes.push(WebhookRoute {
                        source: id.clone(),
                        path: feed.path.trim_matches('/').to_owned(),
                        token: configured.token,
                        max_body_bytes: configured.max_body_bytes,
                        cluster: configured.cluster,
                        content_types: configured.content_types,
                    });
                }
                Some(Feed::Poll(feed)) => {
                    let configured = settings.polls.get(&id).cloned().unwrap_or_default();
                    let url = match configured.url.clone() {
                        Some(url) => Ok(url),
                        None => reqwest::Url::parse(&feed.url)
                            .map_err(|e| format!("its URL {:?} is not a URL: {e}", feed.url)),
                    };
                    let interval = configured
                        .interval
                        .unwrap_or(Duration::from_secs(u64::from(feed.interval_seconds)));
                    match url {
                        Ok(url) => {
                            let config = PollFeedConfig {
                                source: id.clone(),
                                url,
                                interval,
                                timeout: configured.timeout,
                                auth: configured.auth,
                                cluster: configured.cluster,
                                max_body_bytes: nightcrier_intake::poll::DEFAULT_MAX_BODY_BYTES,
                                backoff: BackoffConfig::default(),
                            };
                            let state = registry.register(config.state());
                            let (client, deliver, handle) =
                                (poll_client.clone(), deliver.clone(), state.clone());
                            let config = Arc::new(config);
                            streams.push(StreamFeed {
                                key: format!("poll:{id}"),
                                state,
                                start: Arc::new(move |stop| {
                                    Box::pin(nightcrier_intake::poll::run_feed(
                                        (*config).clone(),
                                        client.clone(),
                                        deliver.clone(),
                                        handle.clone(),
                                        stop,
                                    ))
                                }),
                            });
                        }
                        Err(reason) => {
                            let state = registry.register(FeedState::new(
                                &id,
                                FeedKind::Poll,
                                &id,
                                None,
                                feed.url.clone(),
                            ));
                            tracing::error!(plugin = %id, error = %reason, "poll feed not started");
                            state.disabled(&reason);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    for id in settings.webhooks.keys().chain(settings.polls.keys()) {
        if let Some(refusal) = refused.iter().find(|r| &r.id == id) {
            let kind = if settings.webhooks.contains_key(id) {
                FeedKind::Webhook
            } else {
                FeedKind::Poll
            };
            let state = registry.register(FeedState::new(id, kind, id, None, ""));
            let reason = format!(
                "source plugin `{id}` was refused at load: {}",
                refusal.reason
            );
            tracing::error!(plugin = %id, error = %reason, "feed not started");
            state.disabled(&reason);
        }
    }
    let webhooks = nightcrier_intake::webhook::router(routes, deliver, &registry);
    Ok(StartedFeeds {
        registry,
        webhooks,
        streams,
    })
}
