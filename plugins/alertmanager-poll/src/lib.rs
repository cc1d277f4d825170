//! `alertmanager-poll`: polls Prometheus Alertmanager's `GET /api/v2/alerts` and turns each active
//! alert into one fault event, once: an alert already seen (same fingerprint, same start) is
//! remembered in the plugin's key-value store, so re-polling the same alerts adds nothing.
//!
//! Config (`[plugins.plugin.alertmanager-poll.config]`): `url` (default
//! `http://127.0.0.1:9093/api/v2/alerts`), `interval_seconds` (default 30), `remember_hours`
//! (how long a seen alert is remembered, default 24).

use std::collections::BTreeMap;

use alertmanager_alerts::{AlertParts, event_of};
use nightcrier_plugin_sdk::{
    DecodeError, Envelope, FaultEvent, Feed, PluginInfo, PollFeed, Source, SourceInfo,
    export_source, kv,
};
use serde::Deserialize;

/// Where Alertmanager is unless configured.
pub const DEFAULT_URL: &str = "http://127.0.0.1:9093/api/v2/alerts";

#[derive(Deserialize, Default)]
struct Config {
    url: Option<String>,
    interval_seconds: Option<u32>,
    remember_hours: Option<u32>,
}

/// One alert of `GET /api/v2/alerts` (`gettableAlert`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolledAlert {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    starts_at: String,
    #[serde(default)]
    fingerprint: String,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    state: String,
}

/// The key under which an alert occurrence is remembered.
fn seen_key(alert: &PolledAlert) -> String {
    format!("seen/{}/{}", alert.fingerprint, alert.starts_at)
}

/// The active alerts of a poll, each with its occurrence key.
pub fn active_alerts(
    body: &[u8],
    cluster: Option<&str>,
) -> Result<Vec<(String, FaultEvent)>, DecodeError> {
    let alerts: Vec<PolledAlert> = serde_json::from_slice(body).map_err(|error| {
        DecodeError::Malformed(format!("not an Alertmanager alert list: {error}"))
    })?;
    Ok(alerts
        .into_iter()
        // suppressed (silenced, inhibited) and unprocessed alerts are not faults yet
        .filter(|alert| alert.status.state == "active")
        .map(|alert| {
            let key = seen_key(&alert);
            let event = event_of(
                AlertParts {
                    labels: alert.labels,
                    annotations: alert.annotations,
                    starts_at: alert.starts_at,
                    fingerprint: alert.fingerprint,
                },
                cluster,
            );
            (key, event)
        })
        .collect())
}

struct AlertmanagerPoll;

impl Source for AlertmanagerPoll {
    fn describe() -> SourceInfo {
        let config: Config = nightcrier_plugin_sdk::config().unwrap_or_default();
        SourceInfo {
            info: PluginInfo::new(
                "alertmanager-poll",
                env!("CARGO_PKG_VERSION"),
                "Polls Prometheus Alertmanager's alert list; each active alert once",
            ),
            feed: Feed::Poll(PollFeed {
                url: config.url.unwrap_or_else(|| DEFAULT_URL.to_owned()),
                interval_seconds: config.interval_seconds.unwrap_or(30),
            }),
        }
    }

    fn decode(envelope: Envelope) -> Result<Vec<FaultEvent>, DecodeError> {
        let config: Config = nightcrier_plugin_sdk::config().unwrap_or_default();
        let remember = config.remember_hours.unwrap_or(24).saturating_mul(3600);
        let mut events = Vec::new();
        for (key, event) in active_alerts(&envelope.body, envelope.cluster.as_deref())? {
            let seen = kv::get(&key)
                .map_err(|error| DecodeError::Malformed(format!("key-value store: {error:?}")))?;
            if seen.is_some() {
                continue;
            }
            kv::set(&key, b"1", Some(remember))
                .map_err(|error| DecodeError::Malformed(format!("key-value store: {error:?}")))?;
            events.push(event);
        }
        Ok(events)
    }
}

export_source!(AlertmanagerPoll);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_alerts_become_events_and_suppressed_ones_do_not() {
        let body = br#"[
          {"labels":{"alertname":"KubePodCrashLooping","cluster":"prod","namespace":"shop","pod":"api-1","severity":"critical"},
           "annotations":{"description":"api-1 restarts"},"startsAt":"2025-12-20T14:07:31Z","fingerprint":"abc",
           "status":{"state":"active","silencedBy":[],"inhibitedBy":[]},"receivers":[{"name":"x"}],"updatedAt":"2025-12-20T14:08:00Z"},
          {"labels":{"alertname":"Silenced"},"annotations":{},"startsAt":"2025-12-20T14:00:00Z","fingerprint":"def",
           "status":{"state":"suppressed","silencedBy":["s1"],"inhibitedBy":[]}}]"#;
        let alerts = active_alerts(body, None).unwrap();
        assert_eq!(alerts.len(), 1);
        let (key, event) = &alerts[0];
        assert_eq!(key, "seen/abc/2025-12-20T14:07:31Z");
        assert_eq!(event.fault_type, "KubePodCrashLooping");
        assert_eq!(event.cluster, "prod");
        assert_eq!(event.resource.kind, "Pod");
        assert_eq!(event.fault_id, "abc");
        assert!(active_alerts(b"{\"not\":\"a list\"}", None).is_err());
    }
}
