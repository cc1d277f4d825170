//! The sections that configure intake: `data_dir`, `[http]`, `[intake]` (with
//! `[intake.mcp]`, `[intake.webhook.<plugin>]`, `[intake.poll.<plugin>]`) and each cluster's
//! `mcp` table (`mcp.url = …` or `[clusters.mcp]`). Raw shapes and their validation; every error
//! names its key. Credentials come from an environment variable or a file, never from the file
//! itself, and are held as [`Secret`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nightcrier_intake::mcp::{AuthHeader, McpTiming};
use nightcrier_intake::{BackoffConfig, Secret};
use serde::Deserialize;

use crate::feed::{IntakeSettings, McpSettings, PollSettings, WebhookSettings};
use crate::ingest::{IngestConfig, SpoolConfig};

/// `[http]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    /// `host:port` to listen on (default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Environment variable holding the API read token.
    pub read_token_env: Option<String>,
    /// File holding it.
    pub read_token_file: Option<PathBuf>,
    /// Environment variable holding the API admin token (reading and `retry`).
    pub admin_token_env: Option<String>,
    /// File holding it.
    pub admin_token_file: Option<PathBuf>,
    /// Failed authentications (any `401`) a client address may make in a minute before it is
    /// answered `429` for the rest of it (default 10; 0 turns this off).
    pub auth_failures_per_minute: Option<u32>,
}

/// `[replica]`: how replicas on one Postgres share the feeds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReplica {
    /// Between heartbeats and lease renewals (default `"2s"`).
    pub heartbeat: Option<String>,
    /// A replica silent this long is no longer live (default `"10s"`).
    pub ttl: Option<String>,
    /// A feed lease lasts this long after its last renewal (default `"15s"`).
    pub lease: Option<String>,
    /// Feeds stop this long before their lease could expire (default `"5s"`).
    pub stop_margin: Option<String>,
    /// A replica alone keeps its feeds this much longer through a database outage; a replica
    /// started meanwhile waits as long to take them (default `"5m"`).
    pub lone_hold: Option<String>,
}

/// Validates `[replica]`.
pub(crate) fn replica(raw: &RawReplica) -> anyhow::Result<crate::replica::ReplicaConfig> {
    let defaults = crate::replica::ReplicaConfig::default();
    let config = crate::replica::ReplicaConfig {
        heartbeat: duration(
            "replica.heartbeat",
            raw.heartbeat.as_deref(),
            defaults.heartbeat,
        )?,
        ttl: duration("replica.ttl", raw.ttl.as_deref(), defaults.ttl)?,
        lease: duration("replica.lease", raw.lease.as_deref(), defaults.lease)?,
        stop_margin: duration(
            "replica.stop_margin",
            raw.stop_margin.as_deref(),
            defaults.stop_margin,
        )?,
        lone_hold: duration(
            "replica.lone_hold",
            raw.lone_hold.as_deref(),
            defaults.lone_hold,
        )?,
    };
    if config.heartbeat * 2 > config.ttl {
        bail!("replica.ttl must be at least twice replica.heartbeat");
    }
    if config.stop_margin < config.heartbeat || config.stop_margin >= config.lease {
        bail!("replica.stop_margin must be at least replica.heartbeat and below replica.lease");
    }
    if config.heartbeat * 2 > config.lease - config.stop_margin {
        bail!("replica.lease minus replica.stop_margin must leave at least two heartbeats");
    }
    Ok(config)
}

/// `[intake]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntake {
    /// Most messages per commit (default 1000).
    pub batch_max: Option<usize>,
    /// Wait for more messages after the first of a batch while the previous commit runs (default `"5ms"`).
    pub linger: Option<String>,
    /// Messages buffered in memory (default 20000).
    pub buffer: Option<usize>,
    /// Spool folder (default `<data_dir>/spool`).
    pub spool_dir: Option<PathBuf>,
    /// Spool cap (default `"1GiB"`).
    pub spool_max: Option<String>,
    /// MCP sessions opened at once across the fleet (default 64).
    pub max_handshakes: Option<usize>,
    /// TCP connect timeout of every feed (default `"10s"`).
    pub connect_timeout: Option<String>,
    /// Defaults of every cluster's MCP feed.
    #[serde(default)]
    pub mcp: RawMcpTiming,
    /// Webhook sources by plugin id.
    #[serde(default)]
    pub webhook: BTreeMap<String, RawWebhook>,
    /// Poll sources by plugin id.
    #[serde(default)]
    pub poll: BTreeMap<String, RawPoll>,
}

/// `[intake.mcp]`: timings of MCP feeds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpTiming {
    /// Between liveness probes (default `"30s"`).
    pub probe_interval: Option<String>,
    /// For each request (default `"30s"`).
    pub request_timeout: Option<String>,
    /// For the subscribe call (default `"120s"`).
    pub subscribe_timeout: Option<String>,
    /// First reconnection wait (default `"1s"`).
    pub backoff_initial: Option<String>,
    /// Longest reconnection wait (default `"60s"`).
    pub backoff_max: Option<String>,
    /// Spread of each wait, 0–1 (default 0.2).
    pub backoff_jitter: Option<f64>,
    /// A session up this long resets the backoff (default `"60s"`).
    pub healthy_after: Option<String>,
    /// The whole of a feed's stop: unsubscribe, session `DELETE`, reading what was already
    /// sent (default `"2s"`; below `replica.stop_margin`).
    pub stop_timeout: Option<String>,
}

/// A cluster's `mcp` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    /// The server's `/mcp` URL.
    pub url: String,
    /// Environment variable holding a bearer token.
    pub token_env: Option<String>,
    /// File holding a bearer token.
    pub token_file: Option<PathBuf>,
    /// Header the token goes in (default `Authorization`, as `Bearer <token>`; any other
    /// header gets the token as is).
    pub auth_header: Option<String>,
    /// The source plugin (default: the one whose feed is MCP).
    pub source: Option<String>,
    /// Merged into the subscribe tool's arguments.
    pub filters: Option<toml::Table>,
    /// Overrides `[intake.mcp] probe_interval`.
    pub probe_interval: Option<String>,
    /// Overrides `[intake.mcp] request_timeout`.
    pub request_timeout: Option<String>,
    /// Overrides `[intake.mcp] subscribe_timeout`.
    pub subscribe_timeout: Option<String>,
}

/// `[intake.webhook.<plugin>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// Environment variable holding the bearer token senders must present.
    pub token_env: Option<String>,
    /// File holding it.
    pub token_file: Option<PathBuf>,
    /// Largest body (default `"1MiB"`).
    pub max_body: Option<String>,
    /// The cluster its events are about.
    pub cluster: Option<String>,
    /// Accepted media types (default `["application/json"]`).
    pub content_types: Option<Vec<String>>,
}

/// `[intake.poll.<plugin>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoll {
    /// Overrides the plugin's URL.
    pub url: Option<String>,
    /// Overrides the plugin's interval (at least `"5s"`).
    pub interval: Option<String>,
    /// Per fetch (default `"10s"`).
    pub timeout: Option<String>,
    /// Environment variable holding a bearer token.
    pub token_env: Option<String>,
    /// File holding it.
    pub token_file: Option<PathBuf>,
    /// Header the token goes in (default `Authorization`).
    pub auth_header: Option<String>,
    /// The cluster its events are about.
    pub cluster: Option<String>,
}

/// `"90s"` → 90 s, the error naming `key`.
pub(crate) fn duration(
    key: &str,
    text: Option<&str>,
    default: Duration,
) -> anyhow::Result<Duration> {
    match text {
        None => Ok(default),
        Some(text) => {
            super::units::parse_duration(text).map_err(|error| anyhow::anyhow!("{key}: {error}"))
        }
    }
}

/// `"1MiB"` → bytes, the error naming `key`.
pub(crate) fn size(key: &str, text: Option<&str>, default: u64) -> anyhow::Result<u64> {
    match text {
        None => Ok(default),
        Some(text) => {
            super::units::parse_size(text).map_err(|error| anyhow::anyhow!("{key}: {error}"))
        }
    }
}

/// A credential from an environment variable or a file (exactly one may be given):
/// `<key>.token_env` or `<key>.token_file`.
pub(crate) fn secret(
    key: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Option<Secret>> {
    credential(
        key,
        &format!("{key}.token_env"),
        &format!("{key}.token_file"),
        env,
        file,
    )
}

/// A credential from `<key>_env` or `<key>_file`.
fn secret_pair(
    key: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Option<Secret>> {
    credential(
        key,
        &format!("{key}_env"),
        &format!("{key}_file"),
        env,
        file,
    )
}

/// The credential named by the environment variable of the setting `env_key` or read from the
/// file of the setting `file_key`; errors name the setting.
fn credential(
    key: &str,
    env_key: &str,
    file_key: &str,
    env: Option<&str>,
    file: Option<&Path>,
) -> anyhow::Result<Option<Secret>> {
    let value = match (env, file) {
        (Some(_), Some(_)) => bail!("give {env_key} or {file_key}, not both"),
        (Some(name), None) => std::env::var(name)
            .with_context(|| format!("{env_key}: environment variable {name} is not set"))?,
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("{file_key}: cannot read {}", path.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if value.trim().is_empty() {
        bail!("{key}: the token is empty");
    }
    Ok(Some(Secret::new(value)))
}

fn auth_header(
    key: &str,
    header: Option<&str>,
    token: Option<Secret>,
) -> anyhow::Result<Option<AuthHeader>> {
    let Some(token) = token else {
        if header.is_some() {
            bail!("{key}.auth_header is set but no token_env or token_file");
        }
        return Ok(None);
    };
    let name = header.unwrap_or("Authorization");
    let header_name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .with_context(|| format!("{key}.auth_header: {name:?} is not a header name"))?;
    let value = if header_name == reqwest::header::AUTHORIZATION {
        Secret::new(format!("Bearer {}", token.expose()))
    } else {
        token
    };
    if reqwest::header::HeaderValue::from_str(value.expose()).is_err() {
        bail!("{key}: the token holds characters a header cannot carry");
    }
    Ok(Some(AuthHeader {
        name: header_name,
        value,
    }))
}

fn url(key: &str, text: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(text).with_context(|| format!("{key}: {text:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("{key}: {text:?} is not an http(s) URL");
    }
    Ok(url)
}

/// Timings from `raw` over `base`.
fn timing(key: &str, raw: &RawMcpTiming, base: &McpTiming) -> anyhow::Result<McpTiming> {
    let backoff = &base.backoff;
    let jitter = raw.backoff_jitter.unwrap_or(backoff.jitter);
    if !(0.0..=1.0).contains(&jitter) {
        bail!("{key}.backoff_jitter must be between 0 and 1 (got {jitter})");
    }
    let timing = McpTiming {
        probe_interval: duration(
            &format!("{key}.probe_interval"),
            raw.probe_interval.as_deref(),
            base.probe_interval,
        )?,
        request_timeout: duration(
            &format!("{key}.request_timeout"),
            raw.request_timeout.as_deref(),
            base.request_timeout,
        )?,
        subscribe_timeout: duration(
            &format!("{key}.subscribe_timeout"),
            raw.subscribe_timeout.as_deref(),
            base.subscribe_timeout,
        )?,
        backoff: BackoffConfig {
            initial: duration(
                &format!("{key}.backoff_initial"),
                raw.backoff_initial.as_deref(),
                backoff.initial,
            )?,
            max: duration(
                &format!("{key}.backoff_max"),
                raw.backoff_max.as_deref(),
                backoff.max,
            )?,
            jitter,
            reset_after: duration(
                &format!("{key}.healthy_after"),
                raw.healthy_after.as_deref(),
                backoff.reset_after,
            )?,
        },
        stop_timeout: duration(
            &format!("{key}.stop_timeout"),
            raw.stop_timeout.as_deref(),
            base.stop_timeout,
        )?,
    };
    if timing.probe_interval < Duration::from_secs(1) {
        bail!("{key}.probe_interval must be at least 1s");
    }
    if timing.stop_timeout < Duration::from_millis(100) {
        bail!("{key}.stop_timeout must be at least 100ms");
    }
    if timing.backoff.initial.is_zero() || timing.backoff.max < timing.backoff.initial {
        bail!("{key}: backoff_initial must be more than 0 and at most backoff_max");
    }
    Ok(timing)
}

/// Validated intake settings.
#[derive(Debug)]
pub(crate) struct Intake {
    pub(crate) listen: SocketAddr,
    pub(crate) tokens: crate::http::ApiTokens,
    pub(crate) ingest: IngestConfig,
    pub(crate) settings: IntakeSettings,
}

/// Validates `[http]` and `[intake]`; `data_dir` holds the spool unless `intake.spool_dir` says
/// otherwise.
pub(crate) fn intake(http: &RawHttp, raw: &RawIntake, data_dir: &Path) -> anyhow::Result<Intake> {
    let listen_text = http
        .listen
        .as_deref()
        .unwrap_or(crate::http::DEFAULT_LISTEN);
    let listen: SocketAddr = listen_text.parse().with_context(|| {
        format!("http.listen: {listen_text:?} is not an address such as \"127.0.0.1:8080\"")
    })?;
    let defaults = IngestConfig::default();
    let batch_max = raw.batch_max.unwrap_or(defaults.batch_max);
    if !(1..=10_000).contains(&batch_max) {
        bail!("intake.batch_max must be between 1 and 10000 (got {batch_max})");
    }
    let linger = duration("intake.linger", raw.linger.as_deref(), defaults.linger)?;
    if linger > Duration::from_secs(1) {
        bail!("intake.linger must be at most 1s (got {linger:?})");
    }
    let buffer = raw.buffer.unwrap_or(defaults.buffer);
    if buffer < batch_max {
        bail!("intake.buffer must be at least intake.batch_max ({batch_max})");
    }
    let spool = SpoolConfig {
        dir: raw
            .spool_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("spool")),
        max_bytes: size("intake.spool_max", raw.spool_max.as_deref(), 1 << 30)?,
    };
    let mcp = timing("intake.mcp", &raw.mcp, &McpTiming::default())?;
    let mut webhooks = BTreeMap::new();
    for (id, webhook) in &raw.webhook {
        let key = format!("intake.webhook.{id}");
        let defaults = WebhookSettings::default();
        let max_body = size(
            &format!("{key}.max_body"),
            webhook.max_body.as_deref(),
            defaults.max_body_bytes as u64,
        )?;
        let cluster = cluster_key(&format!("{key}.cluster"), webhook.cluster.as_deref())?;
        webhooks.insert(
            id.clone(),
            WebhookSettings {
                token: secret(
                    &key,
                    webhook.token_env.as_deref(),
                    webhook.token_file.as_deref(),
                )?,
                max_body_bytes: usize::try_from(max_body).unwrap_or(usize::MAX),
                cluster,
                content_types: webhook
                    .content_types
                    .clone()
                    .map(|types| {
                        types
                            .iter()
                            .map(|t| t.trim().to_ascii_lowercase())
                            .collect()
                    })
                    .unwrap_or(defaults.content_types),
            },
        );
    }
    let mut polls = BTreeMap::new();
    for (id, poll) in &raw.poll {
        let key = format!("intake.poll.{id}");
        let defaults = PollSettings::default();
        let interval = match poll.interval.as_deref() {
            Some(text) => {
                let interval = duration(&format!("{key}.interval"), Some(text), Duration::ZERO)?;
                if interval < nightcrier_intake::poll::MIN_INTERVAL {
                    bail!("{key}.interval must be at least 5s (got {interval:?})");
                }
                Some(interval)
            }
            None => None,
        };
        let token = secret(&key, poll.token_env.as_deref(), poll.token_file.as_deref())?;
        polls.insert(
            id.clone(),
            PollSettings {
                url: poll
                    .url
                    .as_deref()
                    .map(|text| url(&format!("{key}.url"), text))
                    .transpose()?,
                interval,
                timeout: duration(
                    &format!("{key}.timeout"),
                    poll.timeout.as_deref(),
                    defaults.timeout,
                )?,
                auth: auth_header(&key, poll.auth_header.as_deref(), token)?,
                cluster: cluster_key(&format!("{key}.cluster"), poll.cluster.as_deref())?,
            },
        );
    }
    let tokens = crate::http::ApiTokens {
        read: secret_pair(
            "http.read_token",
            http.read_token_env.as_deref(),
            http.read_token_file.as_deref(),
        )?,
        admin: secret_pair(
            "http.admin_token",
            http.admin_token_env.as_deref(),
            http.admin_token_file.as_deref(),
        )?,
        failures_per_minute: http
            .auth_failures_per_minute
            .unwrap_or(crate::http::AUTH_FAILURES_PER_MINUTE),
    };
    Ok(Intake {
        listen,
        tokens,
        ingest: IngestConfig {
            batch_max,
            linger,
            buffer,
            spool: Some(spool),
            ..defaults
        },
        settings: IntakeSettings {
            max_handshakes: raw.max_handshakes.unwrap_or(64).max(1),
            connect_timeout: duration(
                "intake.connect_timeout",
                raw.connect_timeout.as_deref(),
                Duration::from_secs(10),
            )?,
            mcp,
            webhooks,
            polls,
        },
    })
}

fn cluster_key(key: &str, cluster: Option<&str>) -> anyhow::Result<Option<String>> {
    match cluster {
        Some(name) if !crate::ingest::validate::is_cluster_name(name) => {
            bail!("{key}: {name:?} is not a valid cluster name")
        }
        other => Ok(other.map(str::to_owned)),
    }
}

/// Validates a cluster's `mcp` table.
pub(crate) fn mcp(key: &str, raw: &RawMcp, base: &McpTiming) -> anyhow::Result<McpSettings> {
    let token = secret(key, raw.token_env.as_deref(), raw.token_file.as_deref())?;
    let filters = match &raw.filters {
        Some(table) => match serde_json::to_value(table)
            .with_context(|| format!("{key}.filters cannot be turned into JSON"))?
        {
            serde_json::Value::Object(map) => map,
            _ => bail!("{key}.filters must be a table"),
        },
        None => serde_json::Map::new(),
    };
    let overrides = RawMcpTiming {
        probe_interval: raw.probe_interval.clone(),
        request_timeout: raw.request_timeout.clone(),
        subscribe_timeout: raw.subscribe_timeout.clone(),
        ..RawMcpTiming::default()
    };
    Ok(McpSettings {
        url: url(&format!("{key}.url"), &raw.url)?,
        auth: auth_header(key, raw.auth_header.as_deref(), token)?,
        source: raw.source.clone(),
        filters,
        timing: timing(key, &overrides, base)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_sizes_and_secrets_name_their_keys() {
        assert_eq!(
            duration("k", Some("250ms"), Duration::ZERO).unwrap(),
            Duration::from_millis(250)
        );
        assert!(
            format!(
                "{:#}",
                duration("intake.linger", Some("soon"), Duration::ZERO).unwrap_err()
            )
            .contains("intake.linger")
        );
        assert_eq!(size("k", Some("1MiB"), 0).unwrap(), 1 << 20);
        assert!(
            format!("{:#}", size("x.max_body", Some("big"), 0).unwrap_err()).contains("x.max_body")
        );
        let error = format!(
            "{:#}",
            secret(
                "clusters[0].mcp",
                Some("NIGHTCRIER_TEST_SURELY_UNSET"),
                None
            )
            .unwrap_err()
        );
        assert!(error.contains("clusters[0].mcp.token_env"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\n").unwrap();
        let token = secret("k", None, Some(&file)).unwrap().unwrap();
        assert_eq!(token.expose(), "s3cret");
        let header = auth_header("k", None, Some(token)).unwrap().unwrap();
        assert_eq!(header.value.expose(), "Bearer s3cret");
        assert!(!format!("{header:?}").contains("s3cret"));
    }

    #[test]
    fn a_cluster_mcp_table_is_understood() {
        let raw: RawMcp = toml::from_str(
            "url = \"http://kms:8080/mcp\"\nfilters = { namespaces = [\"shop\"] }\nprobe_interval = \"10s\"",
        )
        .unwrap();
        let settings = mcp("clusters[0].mcp", &raw, &McpTiming::default()).unwrap();
        assert_eq!(settings.timing.probe_interval, Duration::from_secs(10));
        assert_eq!(settings.filters["namespaces"][0], "shop");
        let bad: RawMcp = toml::from_str("url = \"ftp://x\"").unwrap();
        assert!(
            format!(
                "{:#}",
                mcp("clusters[0].mcp", &bad, &McpTiming::default()).unwrap_err()
            )
            .contains("clusters[0].mcp.url")
        );
    }
}
