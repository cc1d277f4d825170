//! The sections about what nightcrier keeps and tells: `[reports]` (where report pages and their
//! files are stored, how failed uploads are retried), `[retention]` (how long ended incidents and
//! dead letters stay) and `[alerts]` (when a feed counts as down, how alert deliveries retry). Raw shapes and their validation; every error names its key. Report store
//! credentials are never read from the file: they come from the provider's standard environment
//! variables.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::units;
use crate::alert::AlertsConfig;
use crate::report::{ReportsConfig, StoreLocation};
use crate::retention::RetentionConfig;

/// `[reports]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReports {
    /// A folder, or an `s3://bucket/prefix`, `az://container/prefix` or `gs://bucket/prefix`
    /// URL (default `<data_dir>/reports`).
    pub store: Option<String>,
    /// Options of the store by `object_store` name (`aws_region`, `aws_endpoint`,
    /// `aws_allow_http`, `azure_storage_account_name`, …); never credentials.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Keep the workspace's prompt, logs and output files with the report (default true).
    pub artifacts: Option<bool>,
    /// The first wait after a failed upload, e.g. `"10s"` (default 10s).
    #[serde(default, with = "units::duration")]
    pub retry_initial: Option<Duration>,
    /// The longest wait between tries, e.g. `"10m"` (default 10m).
    #[serde(default, with = "units::duration")]
    pub retry_max: Option<Duration>,
}

/// `[retention]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    /// How long an ended incident (with its event, plugin runs, executions, reports, report
    /// files and workspace) is kept after it ended, e.g. `"30d"`; `0` keeps them forever
    /// (default 30d).
    #[serde(default, with = "units::duration")]
    pub incidents: Option<Duration>,
    /// How long dead letters (`rejected_events`) are kept; `0` keeps them forever (default 30d).
    #[serde(default, with = "units::duration")]
    pub rejected_events: Option<Duration>,
    /// How long operational alerts (with their deliveries) are kept; `0` keeps them forever
    /// (default 30d). Each cluster's newest feed alert stays.
    #[serde(default, with = "units::duration")]
    pub alerts: Option<Duration>,
    /// Rows deleted per transaction (default 200).
    pub batch_size: Option<u64>,
    /// The pause between two batches, e.g. `"100ms"` (default 100ms).
    #[serde(default, with = "units::duration")]
    pub batch_pause: Option<Duration>,
    /// How often a pass runs, e.g. `"1h"` (default 1h).
    #[serde(default, with = "units::duration")]
    pub interval: Option<Duration>,
}

/// `[alerts]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    /// How long a cluster's feed may be down before a `feed-down` alert, e.g. `"10m"`; `0`
    /// never raises it (default 10m).
    #[serde(default, with = "units::duration")]
    pub feed_down_after: Option<Duration>,
    /// Tries per plugin and alert, the first included (default 3, at most 10).
    pub delivery_attempts: Option<u32>,
    /// The pause after a failed try, doubled after each further one, e.g. `"2s"` (default 2s).
    #[serde(default, with = "units::duration")]
    pub retry_initial: Option<Duration>,
}

/// Validates `[alerts]`.
pub(crate) fn alerts(raw: &RawAlerts) -> anyhow::Result<AlertsConfig> {
    let defaults = AlertsConfig::default();
    let config = AlertsConfig {
        feed_down_after: match raw.feed_down_after {
            Some(after) if after.is_zero() => None,
            Some(after) => Some(after),
            None => defaults.feed_down_after,
        },
        delivery_attempts: raw.delivery_attempts.unwrap_or(defaults.delivery_attempts),
        retry_initial: raw.retry_initial.unwrap_or(defaults.retry_initial),
    };
    if let Some(after) = config.feed_down_after
        && after < Duration::from_secs(1)
    {
        bail!("alerts.feed_down_after must be 0 (off) or at least 1s (got {after:?})");
    }
    if !(1..=10).contains(&config.delivery_attempts) {
        bail!(
            "alerts.delivery_attempts must be between 1 and 10 (got {})",
            config.delivery_attempts
        );
    }
    if config.retry_initial < Duration::from_millis(10)
        || config.retry_initial > Duration::from_secs(60)
    {
        bail!(
            "alerts.retry_initial must be between 10ms and 60s (got {:?})",
            config.retry_initial
        );
    }
    Ok(config)
}

/// Validates `[reports]`.
pub(crate) fn reports(raw: &RawReports, data_dir: &Path) -> anyhow::Result<ReportsConfig> {
    let mut config = ReportsConfig::default_for(data_dir);
    if let Some(store) = &raw.store {
        config.store = StoreLocation::parse(store)?;
    }
    for key in raw.options.keys() {
        config.store.check_option(key)?;
    }
    config.options = raw.options.clone();
    config.artifacts = raw.artifacts.unwrap_or(config.artifacts);
    config.retry_initial = raw.retry_initial.unwrap_or(config.retry_initial);
    config.retry_max = raw.retry_max.unwrap_or(config.retry_max);
    if config.retry_initial < Duration::from_millis(100) {
        bail!(
            "reports.retry_initial must be at least 100ms (got {:?})",
            config.retry_initial
        );
    }
    if config.retry_max < config.retry_initial {
        bail!(
            "reports.retry_max ({:?}) must not be shorter than reports.retry_initial ({:?})",
            config.retry_max,
            config.retry_initial
        );
    }
    Ok(config)
}

/// Validates `[retention]`.
pub(crate) fn retention(raw: &RawRetention) -> anyhow::Result<RetentionConfig> {
    let defaults = RetentionConfig::default();
    let keep = |given: Option<Duration>, default: Option<Duration>| match given {
        Some(keep) if keep.is_zero() => None,
        Some(keep) => Some(keep),
        None => default,
    };
    let config = RetentionConfig {
        incidents: keep(raw.incidents, defaults.incidents),
        rejected_events: keep(raw.rejected_events, defaults.rejected_events),
        alerts: keep(raw.alerts, defaults.alerts),
        batch_size: raw.batch_size.unwrap_or(defaults.batch_size),
        batch_pause: raw.batch_pause.unwrap_or(defaults.batch_pause),
        interval: raw.interval.unwrap_or(defaults.interval),
    };
    if !(1..=10_000).contains(&config.batch_size) {
        bail!(
            "retention.batch_size must be between 1 and 10000 (got {})",
            config.batch_size
        );
    }
    if config.interval < Duration::from_secs(1) {
        bail!(
            "retention.interval must be at least 1s (got {:?})",
            config.interval
        );
    }
    Ok(config)
}
