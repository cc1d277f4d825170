//! Operator configuration for plugins (`[plugins]` in nightcrier's TOML) and the per-plugin settings derived from it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::World;
use crate::kv::KvQuota;

/// Default memory cap of one plugin instance.
pub const DEFAULT_MEMORY_MIB: u32 = 64;
/// Largest memory cap an operator may configure (the pooling allocator reserves this much per slot).
pub const MAX_MEMORY_MIB: u32 = 1024;
/// Default cap on the data a plugin call may return.
pub const DEFAULT_MAX_OUTPUT_KIB: u32 = 1024;
/// Default number of calls after which a reused instance is recycled.
pub const DEFAULT_RECYCLE_AFTER_CALLS: u32 = 1000;
/// Default most keys one plugin may hold in its key-value store.
pub const DEFAULT_KV_MAX_KEYS: u64 = 10_000;
/// Default most value bytes (MiB) one plugin may hold in its key-value store.
pub const DEFAULT_KV_MAX_MIB: u32 = 64;
/// Components larger than this are treated as "big guests" (interpreters) and reuse instances.
pub const BIG_GUEST_BYTES: u64 = 4 * 1024 * 1024;

/// The `[plugins]` section of nightcrier's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Folder scanned for `*.wasm` components.
    pub dir: PathBuf,
    /// Where precompiled artefacts are kept; defaults to `<dir>/.cache`.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// Per-stage behaviour.
    #[serde(default)]
    pub stages: StagesConfig,
    /// Per-plugin settings and grants, keyed by plugin id (the file name without `.wasm`).
    #[serde(default)]
    pub plugin: BTreeMap<String, PluginConfig>,
}

impl PluginsConfig {
    /// A configuration for `dir` with every default and no grants.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PluginsConfig {
            dir: dir.into(),
            cache_dir: None,
            stages: StagesConfig::default(),
            plugin: BTreeMap::new(),
        }
    }

    /// Parse the `[plugins]` table from TOML text (the table's own contents, not the whole file).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// The effective cache folder.
    pub fn cache_dir(&self) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| self.dir.join(".cache"))
    }

    /// The failure policy of a stage.
    pub fn failure_policy(&self, world: World) -> FailurePolicy {
        match world {
            World::Source => self.stages.source.failure_policy,
            World::PreTriage => self.stages.pre_triage.failure_policy,
            World::PostTriage => self.stages.post_triage.failure_policy,
        }
    }
}

/// Behaviour of each plugin stage.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StagesConfig {
    /// Event-source decoding.
    #[serde(default)]
    pub source: StageConfig,
    /// Processors run before an incident is queued.
    #[serde(default)]
    pub pre_triage: StageConfig,
    /// Processors run after the agent finished.
    #[serde(default)]
    pub post_triage: StageConfig,
}

/// Settings of one stage.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    /// What a failing plugin means for the stage.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
}

/// What happens to the incident when a plugin fails (trap, timeout, limit, returned error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Log the failure and carry on as if the plugin were absent.
    #[default]
    FailOpen,
    /// Stop: the event or incident fails with the plugin's error.
    FailClosed,
}

/// Settings and grants of one plugin, `[plugins.plugin.<id>]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Passed to the plugin as JSON through `host.get-config`.
    #[serde(default)]
    pub config: toml::Table,
    /// Wall-clock budget of one call; defaults to 100 ms (source, pre-triage) or 10 s (post-triage).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// Linear-memory cap of one instance.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Cap on the data one call may return.
    #[serde(default)]
    pub max_output_kib: Option<u32>,
    /// Outbound HTTP grants, `scheme://host:port` patterns; `*` matches any host label sequence.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Environment variables passed through, by name.
    #[serde(default)]
    pub env: Vec<String>,
    /// Host directories mounted read-only at the same path.
    #[serde(default)]
    pub read_only_dirs: Vec<PathBuf>,
    /// Most keys the plugin may hold in its key-value store (default 10,000).
    #[serde(default)]
    pub kv_max_keys: Option<u64>,
    /// Most value bytes, in MiB, the plugin may hold in its key-value store (default 64).
    #[serde(default)]
    pub kv_max_mib: Option<u32>,
    /// Force (true) or forbid (false) reusing instances; by default big guests reuse them.
    #[serde(default)]
    pub reuse_instances: Option<bool>,
    /// Order within the stage chain (lower first, ties by id).
    #[serde(default)]
    pub order: i32,
    /// Leave the plugin out without deleting the file.
    #[serde(default)]
    pub disabled: bool,
}

/// The effective limits of one plugin after applying defaults.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) deadline: Duration,
    pub(crate) memory_bytes: usize,
    pub(crate) max_output_bytes: usize,
    pub(crate) kv_quota: KvQuota,
}

impl Limits {
    pub(crate) fn new(world: World, config: &PluginConfig) -> Limits {
        let default_deadline_ms = match world {
            World::Source | World::PreTriage => 100,
            World::PostTriage => 10_000,
        };
        let memory_mib = config
            .memory_mib
            .unwrap_or(DEFAULT_MEMORY_MIB)
            .clamp(1, MAX_MEMORY_MIB);
        Limits {
            deadline: Duration::from_millis(
                config.deadline_ms.unwrap_or(default_deadline_ms).max(1),
            ),
            memory_bytes: memory_mib as usize * 1024 * 1024,
            max_output_bytes: config.max_output_kib.unwrap_or(DEFAULT_MAX_OUTPUT_KIB) as usize
                * 1024,
            kv_quota: KvQuota {
                keys: config.kv_max_keys.unwrap_or(DEFAULT_KV_MAX_KEYS),
                bytes: u64::from(config.kv_max_mib.unwrap_or(DEFAULT_KV_MAX_MIB)) * 1024 * 1024,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_section() {
        let config = PluginsConfig::from_toml(
            r#"
            dir = "plugins"
            cache_dir = "/var/cache/nightcrier"
            [stages.pre_triage]
            failure_policy = "fail-closed"
            [plugin.slack]
            deadline_ms = 5000
            allowed_hosts = ["https://hooks.slack.com:443"]
            env = ["SLACK_TOKEN"]
            [plugin.slack.config]
            webhook_url = "https://hooks.slack.com/services/x"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.failure_policy(World::PreTriage),
            FailurePolicy::FailClosed
        );
        assert_eq!(
            config.failure_policy(World::PostTriage),
            FailurePolicy::FailOpen
        );
        let slack = &config.plugin["slack"];
        assert_eq!(slack.deadline_ms, Some(5000));
        assert_eq!(
            slack.config["webhook_url"].as_str(),
            Some("https://hooks.slack.com/services/x")
        );
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let error = PluginsConfig::from_toml("dir = \"p\"\n[plugin.slack]\nallowed_host = []\n")
            .unwrap_err();
        assert!(error.to_string().contains("allowed_host"), "{error}");
        let error = PluginsConfig::from_toml("dir = \"p\"\nstage = {}\n").unwrap_err();
        assert!(error.to_string().contains("stage"), "{error}");
    }

    #[test]
    fn limits_take_stage_defaults() {
        let limits = Limits::new(World::PostTriage, &PluginConfig::default());
        assert_eq!(limits.deadline, Duration::from_secs(10));
        assert_eq!(limits.memory_bytes, 64 * 1024 * 1024);
        assert_eq!(
            limits.kv_quota,
            KvQuota {
                keys: 10_000,
                bytes: 64 << 20
            }
        );
        let limits = Limits::new(
            World::Source,
            &PluginConfig {
                deadline_ms: Some(7),
                ..PluginConfig::default()
            },
        );
        assert_eq!(limits.deadline, Duration::from_millis(7));
    }
}
