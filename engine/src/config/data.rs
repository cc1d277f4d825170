//! The sections about what nightcrier keeps: `[reports]` (where report pages and their files are
//! stored, how failed uploads are retried). Raw shapes and their validation; every error names its key. Report store
//! credentials are never read from the file: they come from the provider's standard environment
//! variables.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::units;
use crate::report::{ReportsConfig, StoreLocation};

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
