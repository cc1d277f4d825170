//! Operational alerts: what nightcrier tells people about itself, beside the incident reports.
//!
//! Raised here: the agent circuit breaker's `breaker-degraded` and `breaker-recovered`
//! ([`Alerts::breaker`]), and `feed-down` when a cluster's MCP feed running on this replica has
//! not been active for `[alerts] feed_down_after`, then `feed-up` once it is again
//! ([`watch_feeds`]). Every alert is a row of `alerts` first, then goes through a bounded queue to
//! [`AlertDelivery::run`], which hands it to every post-triage plugin that exports
//! `alert-handler` (contract 0.1.2), retrying a retryable failure a few times with doubling
//! pauses, and records each plugin's outcome in `alert_deliveries`. Plugin calls are bounded like
//! every other (deadline, memory, output), so a hanging or trapping handler costs at most its
//! attempts' deadlines and is recorded as a failed delivery.
//!
//! Alerts carry no secrets: the breaker's reasons are the masked failure reasons the agent
//! runtime gives, a feed's endpoint is stored without credentials and its error text is cut short.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nightcrier_agent::BreakerEvent;
use nightcrier_intake::{FeedKind, FeedPhase, FeedRegistry};
use nightcrier_plugin_host::PluginHost;
use nightcrier_plugin_host::types::{Alert, Severity};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::Store;

/// Alerts waiting for delivery; past this, new alerts are recorded and delivered later, from the
/// database (see [`AlertDelivery::run`]).
const QUEUE_CAPACITY: usize = 256;
/// How far back delivery looks for alerts of this instance that no plugin has seen yet (left by
/// a crash, or by a full queue).
const REDELIVER_WITHIN: chrono::Duration = chrono::Duration::hours(24);
/// How often it looks, while the queue is empty.
const REDELIVER_EVERY: Duration = Duration::from_secs(60);
/// The most text of a feed error or failure reason an alert carries.
const MAX_DETAIL_CHARS: usize = 1000;

/// What an alert is about. Plugins see the kebab-case name (an open set on their side).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// The circuit breaker opened: triage on a cluster keeps failing.
    BreakerDegraded,
    /// The first success after `BreakerDegraded`.
    BreakerRecovered,
    /// A cluster's feed has not been active for `alerts.feed_down_after`.
    FeedDown,
    /// The feed is active again after `FeedDown`.
    FeedUp,
}

impl AlertKind {
    /// The kebab-case name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BreakerDegraded => "breaker-degraded",
            AlertKind::BreakerRecovered => "breaker-recovered",
            AlertKind::FeedDown => "feed-down",
            AlertKind::FeedUp => "feed-up",
        }
    }

    /// The kind named `text` (as [`AlertKind::as_str`] writes it).
    pub fn parse(text: &str) -> Option<Self> {
        [
            AlertKind::BreakerDegraded,
            AlertKind::BreakerRecovered,
            AlertKind::FeedDown,
            AlertKind::FeedUp,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }

    fn severity(self) -> Severity {
        match self {
            AlertKind::BreakerDegraded | AlertKind::FeedDown => Severity::Critical,
            AlertKind::BreakerRecovered | AlertKind::FeedUp => Severity::Info,
        }
    }
}

/// The lower-case name of a severity.
pub fn severity_name(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// `[alerts]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertsConfig {
    /// How long a cluster's feed may be down before `feed-down` is raised; `None` never raises it.
    pub feed_down_after: Option<Duration>,
    /// Tries per plugin and alert (the first included).
    pub delivery_attempts: u32,
    /// The pause after the first failed try; doubled after each further one.
    pub retry_initial: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            feed_down_after: Some(Duration::from_secs(10 * 60)),
            delivery_attempts: 3,
            retry_initial: Duration::from_secs(2),
        }
    }
}

/// An alert to raise.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAlert {
    /// What happened.
    pub kind: AlertKind,
    /// The cluster concerned.
    pub cluster: Option<String>,
    /// One line for people.
    pub summary: String,
    /// More text; may be empty.
    pub detail: String,
    /// Structured facts.
    pub fields: Vec<(String, String)>,
}

/// A raised alert as stored and delivered.
#[derive(Clone, Debug, PartialEq)]
pub struct RaisedAlert {
    /// Its id (UUIDv7).
    pub id: Uuid,
    /// What was raised.
    pub alert: NewAlert,
    /// When.
    pub raised_at: DateTime<Utc>,
}

impl RaisedAlert {
    /// The WIT record handed to plugins.
    pub fn to_wit(&self) -> Alert {
        Alert {
            id: self.id.to_string(),
            kind: self.alert.kind.as_str().to_owned(),
            severity: self.alert.kind.severity(),
            cluster: self.alert.cluster.clone(),
            summary: self.alert.summary.clone(),
            detail: self.alert.detail.clone(),
            fields: self.alert.fields.clone(),
            raised_at_ms: u64::try_from(self.raised_at.timestamp_millis()).unwrap_or(0),
        }
    }
}

/// Raises alerts: records them and queues them for delivery. Cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    store: Store,
    instance: String,
    queue: mpsc::Sender<RaisedAlert>,
}

/// Hands queued alerts to the plugins; run once by `serve`.
pub struct AlertDelivery {
    store: Store,
    instance: String,
    plugins: Option<PluginHost>,
    config: AlertsConfig,
    queue: mpsc::Receiver<RaisedAlert>,
}

impl Alerts {
    /// Alerts recorded in `store` (raised by `instance`) and delivered to `plugins`' alert
    /// handlers by the returned [`AlertDelivery`].
    pub fn new(
        store: Store,
        plugins: Option<PluginHost>,
        config: AlertsConfig,
        instance: impl Into<String>,
    ) -> (Alerts, AlertDelivery) {
        let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
        let instance = instance.into();
        (
            Alerts {
                store: store.clone(),
                instance: instance.clone(),
                queue: sender,
            },
            AlertDelivery {
                store,
                instance,
                plugins,
                config,
                queue: receiver,
            },
        )
    }

    /// Logs, counts, records and queues one alert for delivery. A database error is logged and
    /// the alert still delivered: alerts matter most when things fail.
    pub async fn raise(&self, alert: NewAlert) -> RaisedAlert {
        let raised = RaisedAlert {
            id: Uuid::now_v7(),
            alert,
            raised_at: crate::queue::db_time(Utc::now()),
        };
        let kind = raised.alert.kind.as_str();
        metrics::counter!("nightcrier_alerts_total", "kind" => kind).increment(1);
        let cluster = raised.alert.cluster.as_deref().unwrap_or("");
        match raised.alert.kind.severity() {
            Severity::Critical => {
                tracing::error!(alert_id = %raised.id, kind, cluster, summary = %raised.alert.summary, "alert raised")
            }
            _ => {
                tracing::warn!(alert_id = %raised.id, kind, cluster, summary = %raised.alert.summary, "alert raised")
            }
        }
        if let Err(error) = self.store.insert_alert(&raised, &self.instance).await {
            tracing::error!(alert_id = %raised.id, kind, error = %error, "failed to record an alert");
        }
        if let Err(error) = self.queue.try_send(raised.clone()) {
            metrics::counter!("nightcrier_alert_delivery_failures_total", "plugin" => "", "reason" => "queue_full").increment(1);
            tracing::warn!(alert_id = %raised.id, kind, error = %error, "alert delivery deferred: the delivery queue is full or closed (it goes out from the database later)");
        }
        raised
    }

    /// Raises the alert a circuit-breaker change calls for.
    pub async fn breaker(&self, event: &BreakerEvent) -> RaisedAlert {
        self.raise(breaker_alert(event)).await
    }
}

/// The alert of a circuit-breaker change.
pub fn breaker_alert(event: &BreakerEvent) -> NewAlert {
    match event {
        BreakerEvent::Degraded {
            scope,
            consecutive_failures,
            first_failure_at,
            last_failure_at,
            recent_reasons,
        } => NewAlert {
            kind: AlertKind::BreakerDegraded,
            cluster: Some(scope.clone()),
            summary: format!(
                "triage is degraded on cluster {scope}: {consecutive_failures} agent runs failed in a row"
            ),
            detail: clip(&recent_reasons.join("\n")),
            fields: vec![
                (
                    "consecutive-failures".to_owned(),
                    consecutive_failures.to_string(),
                ),
                ("first-failure-at".to_owned(), first_failure_at.to_rfc3339()),
                ("last-failure-at".to_owned(), last_failure_at.to_rfc3339()),
            ],
        },
        BreakerEvent::Recovered {
            scope,
            failures,
            down_since,
            recovered_at,
        } => NewAlert {
            kind: AlertKind::BreakerRecovered,
            cluster: Some(scope.clone()),
            summary: format!(
                "triage recovered on cluster {scope} after {failures} failed agent runs"
            ),
            detail: String::new(),
            fields: vec![
                ("failures".to_owned(), failures.to_string()),
                ("down-since".to_owned(), down_since.to_rfc3339()),
                ("recovered-at".to_owned(), recovered_at.to_rfc3339()),
                (
                    "degraded-for".to_owned(),
                    humantime::format_duration(
                        (*recovered_at - *down_since)
                            .to_std()
                            .map(|took| Duration::from_secs(took.as_secs()))
                            .unwrap_or_default(),
                    )
                    .to_string(),
                ),
            ],
        },
    }
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_DETAIL_CHARS {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(MAX_DETAIL_CHARS).collect();
    clipped.push('…');
    clipped
}

/// What became of one alert at one plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryOutcome {
    /// The plugin id.
    pub plugin: String,
    /// Its version.
    pub plugin_version: Option<String>,
    /// Whether it took the alert.
    pub delivered: bool,
    /// Tries made.
    pub attempts: u32,
    /// The last error, when not delivered.
    pub error: Option<String>,
}

impl AlertDelivery {
    /// Delivers queued alerts until `stop`, then those already queued, and returns. At start,
    /// and every minute while nothing is queued, it also delivers the alerts this instance
    /// raised in the last day that no plugin has seen: left undelivered by a crash or a restart,
    /// or recorded while the queue was full. (An alert delivered just before a crash, with its
    /// outcome not yet recorded, may so go out twice: alerts are delivered at least once.)
    pub async fn run(mut self, stop: CancellationToken) {
        self.redeliver().await;
        let mut rescan = tokio::time::interval_at(
            tokio::time::Instant::now() + REDELIVER_EVERY,
            REDELIVER_EVERY,
        );
        rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = tokio::select! {
                next = self.queue.recv() => next,
                _ = rescan.tick() => {
                    // nothing is in flight here, and with the queue empty nothing is waiting:
                    // an alert without a delivery record was missed
                    if self.queue.is_empty() {
                        self.redeliver().await;
                    }
                    continue;
                }
                () = stop.cancelled() => break,
            };
            let Some(alert) = next else { return };
            self.deliver(&alert).await;
        }
        // what was raised before shutdown still goes out (each call bounded by its deadline)
        self.queue.close();
        while let Some(alert) = self.queue.recv().await {
            self.deliver(&alert).await;
        }
    }

    /// Delivers this instance's recent alerts that have no delivery record.
    async fn redeliver(&self) {
        if self
            .plugins
            .as_ref()
            .is_none_or(|plugins| plugins.alert_handlers().is_empty())
        {
            return;
        }
        // An alert raised in the last seconds may be on its way through the queue right now
        // (recorded, not yet queued when the queue was seen empty): the next scan has it.
        let now = Utc::now();
        let until = now - chrono::Duration::seconds(5);
        let missed = match self
            .store
            .undelivered_alerts(&self.instance, now - REDELIVER_WITHIN, until)
            .await
        {
            Ok(missed) => missed,
            Err(error) => {
                tracing::warn!(error = %error, "cannot read undelivered alerts");
                return;
            }
        };
        if !missed.is_empty() {
            tracing::info!(
                count = missed.len(),
                "delivering alerts raised earlier that no plugin has seen"
            );
        }
        for alert in &missed {
            self.deliver(alert).await;
        }
    }

    /// Hands `alert` to every alert handler and records each outcome.
    pub async fn deliver(&self, alert: &RaisedAlert) -> Vec<DeliveryOutcome> {
        let Some(plugins) = &self.plugins else {
            return Vec::new();
        };
        let record = alert.to_wit();
        let mut outcomes = Vec::new();
        for id in plugins.alert_handlers() {
            let outcome = self.deliver_to(plugins, &id, &record).await;
            let label = if outcome.delivered {
                "delivered"
            } else {
                "failed"
            };
            metrics::counter!("nightcrier_alert_deliveries_total", "plugin" => id.clone(), "outcome" => label).increment(1);
            if outcome.delivered {
                tracing::info!(alert_id = %alert.id, plugin = %id, attempts = outcome.attempts, "alert delivered");
            } else {
                metrics::counter!("nightcrier_alert_delivery_failures_total", "plugin" => id.clone(), "reason" => "plugin").increment(1);
                tracing::warn!(alert_id = %alert.id, plugin = %id, attempts = outcome.attempts, error = outcome.error.as_deref().unwrap_or(""), "alert delivery failed");
            }
            if let Err(error) = self
                .store
                .record_alert_delivery(alert.id, &outcome, crate::queue::db_time(Utc::now()))
                .await
            {
                tracing::error!(alert_id = %alert.id, plugin = %id, error = %error, "failed to record an alert delivery");
            }
            outcomes.push(outcome);
        }
        outcomes
    }

    async fn deliver_to(&self, plugins: &PluginHost, id: &str, alert: &Alert) -> DeliveryOutcome {
        let attempts = self.config.delivery_attempts.max(1);
        let mut pause = self.config.retry_initial;
        let mut outcome = DeliveryOutcome {
            plugin: id.to_owned(),
            plugin_version: plugins.plugin(id).map(|summary| summary.version),
            delivered: false,
            attempts: 0,
            error: None,
        };
        while outcome.attempts < attempts {
            outcome.attempts += 1;
            match plugins.on_alert(id, alert).await {
                Ok(()) => {
                    outcome.delivered = true;
                    outcome.error = None;
                    return outcome;
                }
                Err(error) => {
                    let retry = error.is_retryable() && outcome.attempts < attempts;
                    outcome.error = Some(crate::store::text::storable_owned(error.to_string()));
                    if !retry {
                        return outcome;
                    }
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                }
            }
        }
        outcome
    }
}

/// Raises `feed-down` for each cluster whose MCP feed, running on this replica, has not been
/// active for `down_after`, and `feed-up` when it is again (also after a restart or a handover:
/// the last feed alert of the cluster in the database decides whether it was reported down).
/// A feed held by another replica (`standby`), disabled or stopped is not this replica's to report.
pub async fn watch_feeds(
    registry: FeedRegistry,
    alerts: Alerts,
    down_after: Duration,
    stop: CancellationToken,
) {
    let every = (down_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    // the outage (by its `down_since`) each cluster's `feed-down` was raised for here
    let mut alerted: HashMap<String, DateTime<Utc>> = HashMap::new();
    // clusters whose last feed alert says "down", as far as this replica knows
    let mut reported_down: HashSet<String> = match alerts.store.clusters_with_feed_down().await {
        Ok(clusters) => clusters.into_iter().collect(),
        Err(error) => {
            tracing::warn!(error = %error, "cannot read the last feed alerts; assuming every feed was up");
            HashSet::new()
        }
    };
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.cancelled() => return,
        }
        let now = Utc::now();
        for feed in registry.snapshot() {
            if feed.kind != FeedKind::Mcp {
                continue;
            }
            let Some(cluster) = feed.cluster.clone() else {
                continue;
            };
            match feed.phase {
                FeedPhase::Connecting | FeedPhase::Subscribing | FeedPhase::Backoff => {
                    let down_since = feed.down_since.unwrap_or(feed.phase_since).min(now);
                    let down_for = (now - down_since).to_std().unwrap_or_default();
                    if alerted.get(&cluster) == Some(&down_since) || down_for < down_after {
                        continue;
                    }
                    alerted.insert(cluster.clone(), down_since);
                    if reported_down.contains(&cluster) {
                        continue;
                    }
                    reported_down.insert(cluster.clone());
                    alerts
                        .raise(feed_down_alert(&feed, down_since, down_for))
                        .await;
                }
                FeedPhase::Active => {
                    let outage = alerted.remove(&cluster);
                    if !reported_down.remove(&cluster) {
                        continue;
                    }
                    // another replica may have reported it up since this one last looked
                    let still_down = match alerts.store.last_feed_alert(&cluster).await {
                        Ok(last) => last.as_deref() == Some(AlertKind::FeedDown.as_str()),
                        Err(error) => {
                            tracing::warn!(cluster = %cluster, error = %error, "cannot read the cluster's last feed alert");
                            true
                        }
                    };
                    if still_down {
                        alerts.raise(feed_up_alert(&feed, outage, now)).await;
                    }
                }
                FeedPhase::Standby | FeedPhase::Disabled | FeedPhase::Stopped => {
                    alerted.remove(&cluster);
                }
            }
        }
    }
}

fn feed_down_alert(
    feed: &nightcrier_intake::FeedState,
    down_since: DateTime<Utc>,
    down_for: Duration,
) -> NewAlert {
    let down_for = humantime::format_duration(Duration::from_secs(down_for.as_secs())).to_string();
    let cluster = feed.cluster.clone().unwrap_or_default();
    let mut fields = vec![
        ("feed".to_owned(), feed.name.clone()),
        ("endpoint".to_owned(), feed.endpoint.clone()),
        ("phase".to_owned(), feed.phase.as_str().to_owned()),
        ("down-since".to_owned(), down_since.to_rfc3339()),
        ("down-for".to_owned(), down_for.clone()),
        ("failures".to_owned(), feed.failures.to_string()),
    ];
    if let Some(owner) = &feed.owner {
        fields.push(("replica".to_owned(), owner.clone()));
    }
    NewAlert {
        kind: AlertKind::FeedDown,
        cluster: Some(cluster.clone()),
        summary: format!(
            "the event feed of cluster {cluster} has been down for {down_for}: no new faults arrive from it"
        ),
        detail: feed.last_error.as_deref().map(clip).unwrap_or_default(),
        fields,
    }
}

fn feed_up_alert(
    feed: &nightcrier_intake::FeedState,
    down_since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> NewAlert {
    let cluster = feed.cluster.clone().unwrap_or_default();
    let mut fields = vec![
        ("feed".to_owned(), feed.name.clone()),
        ("endpoint".to_owned(), feed.endpoint.clone()),
        (
            "up-since".to_owned(),
            feed.phase_since.min(now).to_rfc3339(),
        ),
    ];
    if let Some(down_since) = down_since {
        fields.push(("down-since".to_owned(), down_since.to_rfc3339()));
    }
    NewAlert {
        kind: AlertKind::FeedUp,
        cluster: Some(cluster.clone()),
        summary: format!("the event feed of cluster {cluster} is back up"),
        detail: String::new(),
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_events_become_alerts() {
        let first = "2026-11-30T01:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let last = "2026-11-30T01:05:00Z".parse::<DateTime<Utc>>().unwrap();
        let degraded = breaker_alert(&BreakerEvent::Degraded {
            scope: "prod".into(),
            consecutive_failures: 3,
            first_failure_at: first,
            last_failure_at: last,
            recent_reasons: vec!["agent exited with code 1".into(), "x".repeat(5000)],
        });
        assert_eq!(degraded.kind, AlertKind::BreakerDegraded);
        assert_eq!(degraded.cluster.as_deref(), Some("prod"));
        assert!(
            degraded.summary.contains("3 agent runs failed"),
            "{}",
            degraded.summary
        );
        assert!(degraded.detail.starts_with("agent exited with code 1"));
        assert!(degraded.detail.chars().count() <= MAX_DETAIL_CHARS + 1);
        let recovered = breaker_alert(&BreakerEvent::Recovered {
            scope: "prod".into(),
            failures: 3,
            down_since: first,
            recovered_at: last,
        });
        assert_eq!(recovered.kind.as_str(), "breaker-recovered");
        assert!(
            recovered
                .fields
                .contains(&("degraded-for".to_owned(), "5m".to_owned())),
            "{:?}",
            recovered.fields
        );
        let raised = RaisedAlert {
            id: Uuid::now_v7(),
            alert: recovered,
            raised_at: last,
        };
        let wit = raised.to_wit();
        assert_eq!(
            (wit.kind.as_str(), wit.severity, wit.raised_at_ms),
            (
                "breaker-recovered",
                Severity::Info,
                u64::try_from(last.timestamp_millis()).unwrap()
            )
        );
    }
}
