//! nightcrier's configuration file: the raw TOML shape (`RawConfig`, every table
//! `deny_unknown_fields`, so a typo names its key) and the validated [`Settings`] the server runs
//! on.
//!
//! TOML through serde rather than a layered loader: there is one file plus two flags
//! (`--database-url`, `--plugins`), and serde's errors already carry the key path and line.
//! Durations and sizes go through the helpers of [`units`].

pub mod units;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use nightcrier_agent::{
    AgentProfile, AgentProfileConfig, BUILT_IN_CLIS, BreakerConfig, RunnerConfig,
};
use nightcrier_plugin_host::PluginsConfig;
use serde::Deserialize;

mod data;
mod feeds;

use crate::queue::WorkerConfig;
use crate::store::{DEFAULT_DATABASE_URL, StoreConfig};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Folder for the spool and other state of this instance (default `./data`).
    pub data_dir: Option<PathBuf>,
    /// `[http]`: the listener for webhooks, health, metrics and the API.
    #[serde(default)]
    pub http: feeds::RawHttp,
    /// `[intake]`: batching, the spool, MCP timings, webhook and poll sources.
    #[serde(default)]
    pub intake: feeds::RawIntake,
    /// `[replica]`: how replicas on one Postgres share the feeds.
    #[serde(default)]
    pub replica: feeds::RawReplica,
    /// `[database]`
    #[serde(default)]
    pub database: RawDatabase,
    /// `[workers]`
    #[serde(default)]
    pub workers: RawWorkers,
    /// `[agent]`
    #[serde(default)]
    pub agent: RawAgent,
    /// `[[clusters]]`
    #[serde(default)]
    pub clusters: Vec<RawCluster>,
    /// `[plugins]`: the plugin folder, stage policies and per-plugin grants.
    pub plugins: Option<PluginsConfig>,
    /// `[reports]`: the report store and upload retries.
    #[serde(default)]
    pub reports: data::RawReports,
    /// `[retention]`: how long ended incidents and dead letters are kept.
    #[serde(default)]
    pub retention: data::RawRetention,
    /// `[alerts]`: when a feed counts as down, how alert deliveries are retried.
    #[serde(default)]
    pub alerts: data::RawAlerts,
}

/// `[database]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDatabase {
    /// `sqlite://PATH` or `postgres://…`.
    #[serde(default = "default_database_url")]
    pub url: String,
    /// Apply pending migrations when `serve` starts.
    #[serde(default = "yes")]
    pub auto_migrate: bool,
    /// Connection pool size.
    pub max_connections: Option<u32>,
}

impl Default for RawDatabase {
    fn default() -> Self {
        Self {
            url: default_database_url(),
            auto_migrate: true,
            max_connections: None,
        }
    }
}

fn default_database_url() -> String {
    DEFAULT_DATABASE_URL.to_owned()
}

fn yes() -> bool {
    true
}

/// `[workers]`; defaults are `WorkerConfig::default()`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkers {
    /// Investigations at once in this process (default 2); 0 runs no agents (an instance that
    /// only receives and pre-triages).
    pub concurrency: Option<usize>,
    /// Lease length, e.g. `"90s"` (default 60s).
    #[serde(default, with = "units::duration")]
    pub lease: Option<Duration>,
    /// Lease length in seconds (the older spelling of `lease`).
    pub lease_secs: Option<u64>,
    /// Claims before an incident whose lease keeps expiring fails (default 3).
    pub max_attempts: Option<i32>,
    /// How long in-flight investigations get to finish on shutdown, e.g. `"30s"`.
    #[serde(default, with = "units::duration")]
    pub shutdown_grace: Option<Duration>,
    /// Seconds in-flight investigations get to finish on shutdown (older spelling).
    pub shutdown_grace_secs: Option<u64>,
    /// Pause between looks at an empty queue, e.g. `"1s"` or `"200ms"`.
    #[serde(default, with = "units::duration")]
    pub poll_interval: Option<Duration>,
    /// Seconds between looks at an empty queue (older spelling).
    pub poll_interval_secs: Option<f64>,
    /// Investigations running at once across every replica on the database, enforced by the
    /// database (default: no cap). Set the same value on every replica.
    pub fleet_max_agents: Option<u32>,
}

/// `[agent]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    /// Where incident workspaces are created (default `./workspaces`).
    pub workspace_root: Option<PathBuf>,
    /// Label of this nightcrier's containers; stable across restarts (default `nightcrier`).
    pub instance_id: Option<String>,
    /// Profile used when neither the incident nor its cluster names one (default `claude`).
    pub default_profile: Option<String>,
    /// File with the system prompt given to every agent.
    pub system_prompt_file: Option<PathBuf>,
    /// Circuit breaker over consecutive agent failures.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// How long an image pull may take, e.g. `"5m"` (default 5m).
    #[serde(default, with = "units::duration")]
    pub pull_timeout: Option<Duration>,
    /// Seconds an image pull may take (older spelling).
    pub pull_timeout_secs: Option<u64>,
    /// How long an ended incident's workspace (logs, output) is kept, e.g. `"7d"`; `"0s"` keeps
    /// them forever (default 7d). Reports stay in the database either way.
    #[serde(default, with = "units::duration")]
    pub workspace_retention: Option<Duration>,
    /// Hours an ended incident's workspace is kept; 0 keeps them forever (older spelling).
    pub workspace_retention_hours: Option<u64>,
    /// Agent profiles by name; the built-in claude, codex, gemini and goose always exist.
    #[serde(default)]
    pub profiles: BTreeMap<String, AgentProfileConfig>,
}

/// `[[clusters]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    /// The cluster's name, as events name it.
    pub name: String,
    /// Kubeconfig the agent gets (read-only).
    pub kubeconfig: Option<PathBuf>,
    /// Profile for this cluster's incidents.
    pub agent_profile: Option<String>,
    /// Whether the agent may read secrets (helm) in this cluster.
    #[serde(default)]
    pub secrets_access_allowed: bool,
    /// The cluster's kubernetes-mcp-server (`mcp.url = …` or `[clusters.mcp]`).
    pub mcp: Option<feeds::RawMcp>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The database.
    pub store: StoreConfig,
    /// Apply migrations at start.
    pub auto_migrate: bool,
    /// Worker slots.
    pub workers: WorkerConfig,
    /// The agent runtime.
    pub runner: RunnerConfig,
    /// Profiles by name, built and checked.
    pub profiles: BTreeMap<String, AgentProfile>,
    /// The default profile's name.
    pub default_profile: String,
    /// The system prompt.
    pub system_prompt: String,
    /// Per-cluster settings by name.
    pub clusters: BTreeMap<String, ClusterSettings>,
    /// Plugins, when a folder is configured.
    pub plugins: Option<PluginsConfig>,
    /// How long ended incidents' workspaces are kept; `None` keeps them forever.
    pub workspace_retention: Option<Duration>,
    /// Where the spool and other instance state live.
    pub data_dir: PathBuf,
    /// The HTTP listener's address.
    pub listen: std::net::SocketAddr,
    /// The API's tokens.
    pub api_tokens: crate::http::ApiTokens,
    /// How replicas share the feeds.
    pub replica: crate::replica::ReplicaConfig,
    /// Whether `agent.instance_id` was set; otherwise `serve` uses the one kept in `data_dir`.
    pub instance_id_configured: bool,
    /// Batching and spooling of the ingest path.
    pub ingest: crate::ingest::IngestConfig,
    /// Feeds: MCP timings, webhook and poll sources.
    pub intake: crate::feed::IntakeSettings,
    /// Names of the profiles written under `[agent.profiles]`.
    pub configured_profiles: Vec<String>,
    /// The report store and upload retries.
    pub reports: crate::report::ReportsConfig,
    /// How long ended incidents and dead letters are kept.
    pub retention: crate::retention::RetentionConfig,
    /// Operational alerts: feed-down threshold, delivery retries.
    pub alerts: crate::alert::AlertsConfig,
}

impl Settings {
    /// Makes `id` this instance's identity: its lease owner name and its containers' label.
    pub fn set_instance_id(&mut self, id: String) {
        self.workers.owner.clone_from(&id);
        self.runner.instance_id = id;
    }

    /// The profiles an incident can be investigated with and why: the default profile, each
    /// cluster's, and each one configured under `[agent.profiles]`. `serve` checks their secrets
    /// and images before it starts. (A built-in profile nothing names is only used if a
    /// pre-triage plugin routes an incident to it; a problem is then found at that run.)
    pub fn profiles_in_use(&self) -> BTreeMap<String, Vec<String>> {
        let mut uses: BTreeMap<String, Vec<String>> = BTreeMap::new();
        uses.entry(self.default_profile.clone())
            .or_default()
            .push("agent.default_profile".to_owned());
        for (name, cluster) in &self.clusters {
            if let Some(profile) = &cluster.agent_profile {
                uses.entry(profile.clone())
                    .or_default()
                    .push(format!("the profile of cluster {name}"));
            }
        }
        for name in &self.configured_profiles {
            uses.entry(name.clone())
                .or_default()
                .push(format!("agent.profiles.{name}"));
        }
        uses
    }
}

/// Per-cluster settings.
#[derive(Debug, Clone, Default)]
pub struct ClusterSettings {
    /// Kubeconfig for the agent.
    pub kubeconfig: Option<PathBuf>,
    /// Profile override.
    pub agent_profile: Option<String>,
    /// Whether secrets may be read.
    pub secrets_access_allowed: bool,
    /// The cluster's MCP feed.
    pub mcp: Option<crate::feed::McpSettings>,
}

/// The profile used when neither the incident nor its cluster names one.
const DEFAULT_PROFILE: &str = "claude";
/// Where workspaces go when `agent.workspace_root` is not set.
const DEFAULT_WORKSPACE_ROOT: &str = "workspaces";
/// How long ended incidents' workspaces are kept by default: a week.
const DEFAULT_WORKSPACE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The shortest lease: it is renewed every third of its length.
const MIN_LEASE: Duration = Duration::from_secs(3);

/// Reads `path` (or uses the defaults when `path` is `None`), applies `database_url` if
/// given, and validates everything. Errors name the file and the key.
pub fn load(path: Option<&Path>, database_url: Option<&str>) -> anyhow::Result<Settings> {
    let raw = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("failed to read config file {}", path.display()))?;
            parse(&text).with_context(|| format!("invalid config file {}", path.display()))?
        }
        None => RawConfig::default(),
    };
    validate(raw, database_url)
}

/// Parses TOML text into the raw shape.
pub fn parse(text: &str) -> anyhow::Result<RawConfig> {
    Ok(toml::from_str(text)?)
}

/// Turns the raw shape into settings.
pub fn validate(raw: RawConfig, database_url: Option<&str>) -> anyhow::Result<Settings> {
    let mut store = StoreConfig::new(database_url.unwrap_or(&raw.database.url));
    store.max_connections = raw.database.max_connections;

    let defaults = WorkerConfig::default();
    let concurrency = raw.workers.concurrency.unwrap_or(defaults.concurrency);
    let lease = units::either(
        "workers.lease",
        raw.workers.lease,
        "workers.lease_secs",
        raw.workers.lease_secs.map(Duration::from_secs),
    )?
    .unwrap_or(defaults.lease);
    if lease < MIN_LEASE {
        bail!("workers.lease must be at least 3s (got {lease:?})");
    }
    let max_attempts = raw.workers.max_attempts.unwrap_or(defaults.max_attempts);
    if max_attempts < 1 {
        bail!("workers.max_attempts must be at least 1 (got {max_attempts})");
    }
    let poll_secs = match raw.workers.poll_interval_secs {
        Some(secs) if !(0.01..=3600.0).contains(&secs) => {
            bail!("workers.poll_interval_secs must be between 0.01 and 3600 (got {secs})")
        }
        secs => secs.map(Duration::from_secs_f64),
    };
    let poll_interval = units::either(
        "workers.poll_interval",
        raw.workers.poll_interval,
        "workers.poll_interval_secs",
        poll_secs,
    )?
    .unwrap_or(defaults.poll_interval);
    if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&poll_interval) {
        bail!("workers.poll_interval must be between 10ms and 1h (got {poll_interval:?})");
    }
    let fleet_max_agents = raw.workers.fleet_max_agents;
    if fleet_max_agents == Some(0) {
        bail!(
            "workers.fleet_max_agents must be at least 1 (leave it out for no cap; use workers.concurrency = 0 for an instance that runs no agents)"
        );
    }
    let shutdown_grace = units::either(
        "workers.shutdown_grace",
        raw.workers.shutdown_grace,
        "workers.shutdown_grace_secs",
        raw.workers.shutdown_grace_secs.map(Duration::from_secs),
    )?
    .unwrap_or(defaults.shutdown_grace);
    let instance_id_configured = raw.agent.instance_id.is_some();
    let instance_id = raw.agent.instance_id.unwrap_or(defaults.owner);
    if instance_id.is_empty()
        || !instance_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        bail!(
            "agent.instance_id must be non-empty letters, digits, '-', '_' or '.' (got `{instance_id}`)"
        );
    }
    let workers = WorkerConfig {
        owner: instance_id.clone(),
        concurrency,
        lease,
        poll_interval,
        fleet_max_agents,
        max_attempts,
        sweep_interval: crate::queue::sweep_interval(lease),
        shutdown_grace,
    };

    let mut runner = RunnerConfig::new(
        raw.agent
            .workspace_root
            .unwrap_or_else(|| PathBuf::from(DEFAULT_WORKSPACE_ROOT)),
        instance_id,
    );
    runner.breaker = raw.agent.breaker;
    if let Some(timeout) = units::either(
        "agent.pull_timeout",
        raw.agent.pull_timeout,
        "agent.pull_timeout_secs",
        raw.agent.pull_timeout_secs.map(Duration::from_secs),
    )? {
        runner.pull_timeout_secs = timeout.as_secs().max(1);
    }
    let workspace_retention = match units::either(
        "agent.workspace_retention",
        raw.agent.workspace_retention,
        "agent.workspace_retention_hours",
        raw.agent
            .workspace_retention_hours
            .map(|hours| Duration::from_secs(hours.saturating_mul(3600))),
    )? {
        Some(keep) if keep.is_zero() => None,
        Some(keep) => Some(keep),
        None => Some(DEFAULT_WORKSPACE_RETENTION),
    };

    let mut profiles = BTreeMap::new();
    for name in BUILT_IN_CLIS {
        profiles.insert(name.to_owned(), AgentProfile::built_in(name)?);
    }
    for (name, profile) in &raw.agent.profiles {
        let built = profile
            .build(name)
            .with_context(|| format!("invalid agent.profiles.{name}"))?;
        profiles.insert(name.clone(), built);
    }
    let default_profile = raw
        .agent
        .default_profile
        .unwrap_or_else(|| DEFAULT_PROFILE.to_owned());
    if !profiles.contains_key(&default_profile) {
        bail!("agent.default_profile names `{default_profile}`, which is not a profile");
    }
    let system_prompt = match &raw.agent.system_prompt_file {
        Some(path) => std::fs::read_to_string(path).with_context(|| {
            format!(
                "agent.system_prompt_file: failed to read {}",
                path.display()
            )
        })?,
        None => DEFAULT_SYSTEM_PROMPT.to_owned(),
    };

    let data_dir = raw.data_dir.unwrap_or_else(|| PathBuf::from("data"));
    let intake = feeds::intake(&raw.http, &raw.intake, &data_dir)?;
    let reports = data::reports(&raw.reports, &data_dir)?;
    let retention = data::retention(&raw.retention)?;
    let alerts = data::alerts(&raw.alerts)?;

    let mut clusters = BTreeMap::new();
    for (index, cluster) in raw.clusters.into_iter().enumerate() {
        if !crate::ingest::validate::is_cluster_name(&cluster.name) {
            bail!(
                "clusters[{index}].name {:?} is not a valid cluster name (letters, digits, '.', '_', ':', '@', '-'; up to 253)",
                cluster.name
            );
        }
        if let Some(profile) = &cluster.agent_profile
            && !profiles.contains_key(profile)
        {
            bail!("clusters[{index}].agent_profile names `{profile}`, which is not a profile");
        }
        if let Some(path) = &cluster.kubeconfig
            && !path.is_file()
        {
            bail!(
                "clusters[{index}].kubeconfig: {} is not a file",
                path.display()
            );
        }
        let mcp = match &cluster.mcp {
            Some(mcp) => Some(feeds::mcp(
                &format!("clusters[{index}].mcp"),
                mcp,
                &intake.settings.mcp,
            )?),
            None => None,
        };
        let settings = ClusterSettings {
            kubeconfig: cluster.kubeconfig,
            agent_profile: cluster.agent_profile,
            secrets_access_allowed: cluster.secrets_access_allowed,
            mcp,
        };
        if clusters.insert(cluster.name.clone(), settings).is_some() {
            bail!("clusters[{index}].name `{}` appears twice", cluster.name);
        }
    }

    // A replica that cannot renew its leases stops its feeds `stop_margin` before they could
    // expire; each feed must be gone from its server within that (the watchdog checks every
    // tick, so up to one tick of the margin is spent before the stop begins).
    let replica = feeds::replica(&raw.replica)?;
    if intake.settings.mcp.stop_timeout + crate::feed::WATCHDOG_TICK >= replica.stop_margin {
        bail!(
            "intake.mcp.stop_timeout ({:?}) must be at least 250ms below replica.stop_margin ({:?}): a replica cut from the database must be gone from its servers before its leases expire",
            intake.settings.mcp.stop_timeout,
            replica.stop_margin
        );
    }
    Ok(Settings {
        store,
        auto_migrate: raw.database.auto_migrate,
        workers,
        runner,
        profiles,
        default_profile,
        system_prompt,
        clusters,
        plugins: raw.plugins,
        workspace_retention,
        data_dir,
        listen: intake.listen,
        api_tokens: intake.tokens,
        replica,
        instance_id_configured,
        ingest: intake.ingest,
        intake: intake.settings,
        configured_profiles: raw.agent.profiles.keys().cloned().collect(),
        reports,
        retention,
        alerts,
    })
}

/// The system prompt used when none is configured.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are an SRE triaging a Kubernetes incident. \
Investigate read-only with kubectl using the kubeconfig you were given, find the most likely \
root cause, and write your findings to output/investigation.md: a summary, the root cause with \
evidence, and recommended next steps. Never change the cluster.";

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(text: &str) -> String {
        let raw = match parse(text) {
            Ok(raw) => raw,
            Err(error) => return format!("{error:#}"),
        };
        format!("{:#}", validate(raw, None).unwrap_err())
    }

    #[test]
    fn defaults_are_valid() {
        let settings = validate(RawConfig::default(), None).unwrap();
        assert_eq!(settings.store.url, DEFAULT_DATABASE_URL);
        assert_eq!(settings.default_profile, "claude");
        assert!(settings.profiles.contains_key("goose"));
        assert_eq!(settings.workers.concurrency, 2);
        assert_eq!(
            settings.workspace_retention,
            Some(Duration::from_secs(7 * 24 * 3600))
        );
    }

    #[test]
    fn a_full_file_is_understood() {
        let raw = parse(
            r#"
            [database]
            url = "postgres://nc@db/nc"
            [workers]
            concurrency = 8
            lease_secs = 120
            [agent]
            instance_id = "nc-eu-1"
            default_profile = "fast"
            workspace_retention_hours = 0
            [agent.profiles.fast]
            cli = "codex"
            model = "gpt-5"
            timeout_secs = 600
            [[clusters]]
            name = "prod"
            agent_profile = "fast"
            "#,
        )
        .unwrap();
        let settings = validate(raw, Some("sqlite://override.db")).unwrap();
        assert_eq!(settings.store.url, "sqlite://override.db");
        assert_eq!(settings.workers.lease, Duration::from_secs(120));
        assert_eq!(settings.runner.instance_id, "nc-eu-1");
        assert_eq!(
            settings.workspace_retention, None,
            "0 keeps workspaces forever"
        );
        assert_eq!(
            settings.clusters["prod"].agent_profile.as_deref(),
            Some("fast")
        );
    }

    #[test]
    fn fleet_max_agents_is_optional_and_at_least_one() {
        let settings = validate(parse("").unwrap(), None).unwrap();
        assert_eq!(settings.workers.fleet_max_agents, None);
        let settings = validate(parse("[workers]\nfleet_max_agents = 6").unwrap(), None).unwrap();
        assert_eq!(settings.workers.fleet_max_agents, Some(6));
        let error = validate(parse("[workers]\nfleet_max_agents = 0").unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("workers.fleet_max_agents"), "{error}");
    }

    #[test]
    fn durations_take_units_and_the_old_keys_keep_working() {
        let settings = validate(
            parse(
                r#"
                [workers]
                lease = "90s"
                shutdown_grace = "1m"
                poll_interval = "250ms"
                [agent]
                pull_timeout = "2m"
                workspace_retention = "3d"
                "#,
            )
            .unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(settings.workers.lease, Duration::from_secs(90));
        assert_eq!(
            settings.workers.sweep_interval,
            Duration::from_millis(22_500)
        );
        assert_eq!(settings.workers.shutdown_grace, Duration::from_secs(60));
        assert_eq!(settings.workers.poll_interval, Duration::from_millis(250));
        assert_eq!(settings.runner.pull_timeout_secs, 120);
        assert_eq!(
            settings.workspace_retention,
            Some(Duration::from_secs(3 * 86400))
        );
        let settings = validate(
            parse(
                "[workers]\nlease_secs = 60\nshutdown_grace_secs = 5\npoll_interval_secs = 0.5\n[agent]\nworkspace_retention_hours = 2\npull_timeout_secs = 30",
            )
            .unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(settings.workers.lease, Duration::from_secs(60));
        assert_eq!(settings.workers.shutdown_grace, Duration::from_secs(5));
        assert_eq!(settings.workers.poll_interval, Duration::from_millis(500));
        assert_eq!(
            settings.workspace_retention,
            Some(Duration::from_secs(7200))
        );
        assert_eq!(settings.runner.pull_timeout_secs, 30);
        let settings = validate(
            parse("[agent]\nworkspace_retention = \"0s\"").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(
            settings.workspace_retention, None,
            "0 keeps workspaces forever"
        );
    }

    #[test]
    fn a_feed_stop_longer_than_the_replica_stop_margin_is_refused() {
        let error =
            error_of("[replica]\nstop_margin = \"2s\"\nheartbeat = \"500ms\"\nlease = \"6s\"");
        assert!(
            error.contains("intake.mcp.stop_timeout") && error.contains("replica.stop_margin"),
            "{error}"
        );
        let ok = parse("[replica]\nstop_margin = \"2s\"\nheartbeat = \"500ms\"\nlease = \"6s\"\n[intake.mcp]\nstop_timeout = \"1s\"").unwrap();
        let settings = validate(ok, None).unwrap();
        assert_eq!(settings.intake.mcp.stop_timeout, Duration::from_secs(1));
    }

    #[test]
    fn one_setting_given_twice_names_both_keys() {
        for (text, keys) in [
            (
                "[workers]\nlease = \"90s\"\nlease_secs = 90",
                ["workers.lease", "workers.lease_secs"],
            ),
            (
                "[workers]\nshutdown_grace = \"9s\"\nshutdown_grace_secs = 9",
                ["workers.shutdown_grace", "workers.shutdown_grace_secs"],
            ),
            (
                "[agent]\nworkspace_retention = \"1d\"\nworkspace_retention_hours = 24",
                [
                    "agent.workspace_retention",
                    "agent.workspace_retention_hours",
                ],
            ),
        ] {
            let error = error_of(text);
            assert!(
                keys.iter().all(|key| error.contains(key)),
                "{text}: {error}"
            );
        }
        let error = error_of("[workers]\nlease = 90");
        assert!(
            error.contains("lease") && error.contains("\"90s\""),
            "{error}"
        );
        let error =
            error_of("[agent.profiles.x]\ncli = \"claude\"\ntimeout = \"1m\"\ntimeout_secs = 60");
        assert!(
            error.contains("timeout_secs") && error.contains("agent.profiles.x"),
            "{error}"
        );
    }

    #[test]
    fn defaults_come_from_one_place() {
        let settings = validate(RawConfig::default(), None).unwrap();
        let workers = WorkerConfig::default();
        assert_eq!(settings.workers.lease, workers.lease);
        assert_eq!(settings.workers.concurrency, workers.concurrency);
        assert_eq!(settings.workers.poll_interval, workers.poll_interval);
        assert_eq!(settings.workers.shutdown_grace, workers.shutdown_grace);
        assert_eq!(settings.workers.sweep_interval, workers.sweep_interval);
        assert_eq!(settings.runner.instance_id, workers.owner);
        for cli in BUILT_IN_CLIS {
            assert!(settings.profiles.contains_key(cli), "{cli}");
        }
    }

    #[test]
    fn profiles_in_use_are_the_default_the_clusters_and_the_configured_ones() {
        let settings = validate(
            parse(
                r#"
                [agent]
                default_profile = "codex"
                [agent.profiles.fast]
                cli = "claude"
                [[clusters]]
                name = "prod"
                agent_profile = "gemini"
                "#,
            )
            .unwrap(),
            None,
        )
        .unwrap();
        let in_use = settings.profiles_in_use();
        let names: Vec<&str> = in_use.keys().map(String::as_str).collect();
        assert_eq!(names, ["codex", "fast", "gemini"]);
        assert_eq!(in_use["gemini"], ["the profile of cluster prod"]);
    }

    #[test]
    fn a_cluster_mcp_table_may_be_dotted_or_a_table() {
        let dotted =
            parse("[[clusters]]\nname = \"a\"\nmcp.url = \"http://kms-a:8080/mcp\"\n").unwrap();
        let table = parse(
            "[[clusters]]\nname = \"b\"\n[clusters.mcp]\nurl = \"http://kms-b:8080/mcp\"\nprobe_interval = \"10s\"\n",
        )
        .unwrap();
        let dotted = validate(dotted, None).unwrap();
        let table = validate(table, None).unwrap();
        assert_eq!(
            dotted.clusters["a"].mcp.as_ref().unwrap().url.as_str(),
            "http://kms-a:8080/mcp"
        );
        let b = table.clusters["b"].mcp.as_ref().unwrap();
        assert_eq!(b.timing.probe_interval, Duration::from_secs(10));
        assert!(error_of("[[clusters]]\nname = \"c\"\nmcp.ur = \"x\"").contains("ur"));
        assert!(
            error_of("[[clusters]]\nname = \"../x\"").contains("clusters[0].name"),
            "cluster names are checked"
        );
        assert!(error_of("[http]\nlisten = \"nowhere\"").contains("http.listen"));
    }

    #[test]
    fn reports_and_retention_have_defaults_and_name_their_mistakes() {
        let settings = validate(RawConfig::default(), None).unwrap();
        assert_eq!(
            settings.reports.store,
            crate::report::StoreLocation::Local(PathBuf::from("data/reports"))
        );
        assert_eq!(
            settings.retention.incidents,
            Some(Duration::from_secs(30 * 86400))
        );
        assert_eq!(
            settings.retention.rejected_events,
            Some(Duration::from_secs(30 * 86400))
        );
        let settings = validate(
            parse(
                r#"
                [reports]
                store = "s3://reports/nightcrier"
                options = { aws_region = "eu-west-1", aws_endpoint = "http://127.0.0.1:9000" }
                retry_initial = "1s"
                retry_max = "1m"
                artifacts = false
                [retention]
                incidents = 0
                rejected_events = "7d"
                batch_size = 50
                batch_pause = "10ms"
                "#,
            )
            .unwrap(),
            None,
        )
        .unwrap();
        assert!(matches!(
            settings.reports.store,
            crate::report::StoreLocation::Url(_)
        ));
        assert!(!settings.reports.artifacts);
        assert_eq!(settings.retention.incidents, None, "0 keeps forever");
        assert_eq!(
            settings.retention.rejected_events,
            Some(Duration::from_secs(7 * 86400))
        );
        assert_eq!(settings.retention.batch_size, 50);
        assert!(error_of("[reports]\nstor = \"x\"").contains("stor"));
        assert!(error_of("[reports]\nstore = \"ftp://x/y\"").contains("reports.store"));
        assert!(
            error_of("[reports]\nstore = \"s3://b\"\noptions = { aws_secret_access_key = \"x\" }")
                .contains("reports.options.aws_secret_access_key")
        );
        assert!(
            error_of("[reports]\nstore = \"s3://b\"\noptions = { aws_regoin = \"x\" }")
                .contains("reports.options.aws_regoin")
        );
        assert!(
            error_of("[reports]\nretry_initial = \"1m\"\nretry_max = \"1s\"")
                .contains("reports.retry_max")
        );
        assert!(error_of("[retention]\nincidents = 30").contains("\"30s\""));
        assert!(error_of("[retention]\nbatch_size = 0").contains("retention.batch_size"));
        assert!(error_of("[retention]\nkeep = \"1d\"").contains("keep"));
    }

    #[test]
    fn mistakes_name_their_key() {
        assert!(error_of("[workers]\nconcurency = 2").contains("concurency"));
        assert!(error_of("[agent]\ndefault_profile = \"nope\"").contains("agent.default_profile"));
        assert!(
            error_of("[[clusters]]\nname = \"a\"\nagent_profile = \"x\"")
                .contains("clusters[0].agent_profile")
        );
        assert!(
            error_of("[[clusters]]\nname = \"a\"\n[[clusters]]\nname = \"a\"")
                .contains("appears twice")
        );
        assert!(error_of("[agent.profiles.x]\nmemroy = \"1g\"").contains("memroy"));
        assert!(error_of("[databse]\nurl = \"x\"").contains("databse"));
    }

    #[test]
    fn alerts_have_defaults_an_off_switch_and_named_errors() {
        let settings = validate(RawConfig::default(), None).unwrap();
        assert_eq!(settings.alerts, crate::alert::AlertsConfig::default());
        assert_eq!(
            settings.alerts.feed_down_after,
            Some(Duration::from_secs(600))
        );
        let off = validate(
            parse("[alerts]\nfeed_down_after = \"0s\"\ndelivery_attempts = 5").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(off.alerts.feed_down_after, None);
        assert_eq!(off.alerts.delivery_attempts, 5);
        let quick = validate(
            parse("[alerts]\nfeed_down_after = \"3s\"\nretry_initial = \"100ms\"").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(quick.alerts.feed_down_after, Some(Duration::from_secs(3)));
        assert!(
            error_of("[alerts]\ndelivery_attempts = 0").contains("alerts.delivery_attempts"),
            "{}",
            error_of("[alerts]\ndelivery_attempts = 0")
        );
        assert!(
            error_of("[alerts]\nfeed_down_after = \"10ms\"").contains("alerts.feed_down_after")
        );
        assert!(error_of("[alerts]\nretry_initial = \"1h\"").contains("alerts.retry_initial"));
        assert!(error_of("[alerts]\nfeed_down = \"1m\"").contains("feed_down"));
    }
}
