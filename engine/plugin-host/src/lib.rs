//! nightcrier's sandboxed wasmtime plugin host: loads WebAssembly components from a folder, detects their world
//! from their exports, and runs every call bounded (deadline, memory, output size) and deny-by-default.
//!
//! # Entry points for the engine
//!
//! ```text
//! // Configuration: the `[plugins]` table of nightcrier's TOML (deny_unknown_fields).
//! PluginsConfig { dir, cache_dir: Option<PathBuf>, stages: StagesConfig { source, pre_triage, post_triage: StageConfig { failure_policy } },
//!                 plugin: BTreeMap<id, PluginConfig { config: toml::Table, deadline_ms, memory_mib, max_output_kib,
//!                                                    kv_max_keys, kv_max_mib, allowed_hosts, env, read_only_dirs,
//!                                                    reuse_instances, order, disabled }> }
//! PluginsConfig::from_toml(&str) -> Result<PluginsConfig, toml::de::Error>
//!
//! // Key-value capability: implemented by the engine over `plugin_kv` (plugin, key, value, expires_at).
//! // A call's writes are buffered and applied in one `apply` only when the call succeeds.
//! trait KvStore: Send + Sync + 'static {
//!     fn get(&self, plugin, key) -> KvFuture<Option<Vec<u8>>>;
//!     fn usage(&self, plugin) -> KvFuture<KvUsage { keys, bytes }>;           // live keys only
//!     fn apply(&self, plugin, Vec<KvWrite::{Set { key, value, ttl }, Delete { key }}>) -> KvFuture<()>;  // all or none
//! }
//! MemoryKvStore::new()                                       // in-memory implementation
//!
//! // The host (one per process; Clone is cheap).
//! PluginHost::load(PluginsConfig, Arc<dyn KvStore>).await -> anyhow::Result<(PluginHost, Vec<LoadError>)>
//! host.plugins() -> Vec<PluginSummary>; host.plugin(id) -> Option<PluginSummary>   // summary.feed for sources
//! host.chain(World) -> Vec<String>                            // ids in stage order
//! host.decode(id, &Envelope).await -> Result<Vec<FaultEvent>, CallError>
//! host.pre_triage(id, &Incident).await -> Result<Decision, CallError>
//! host.post_triage(id, &Incident, &AgentResult).await -> Result<Outcome, CallError>
//! host.run_pre_triage(&Incident).await -> Result<PreTriageVerdict, CallError>         // whole chain + failure policy
//! host.run_post_triage(&Incident, &AgentResult).await -> Result<PostTriageVerdict, CallError>
//! host.alert_handlers() -> Vec<String>          // post-triage plugins exporting alert-handler (0.1.2+)
//! host.on_alert(id, &Alert).await -> Result<(), CallError>   // one delivery, bounded like any call
//!
//! // CLI (`nightcrier plugins ...`), plain functions:
//! list_plugins(&PluginsConfig).await -> anyhow::Result<PluginList>        // .to_table() / .to_json()
//! check_plugin(&Path, &PluginsConfig).await -> Result<PluginSummary, CheckFailure>   // Err => non-zero exit
//!                                                      // (a refused file: what it imports/exports that the host lacks, accepted versions)
//! run_plugin(&RunOptions { path, input, plugin_config, kv, config }).await -> RunReport  // one call, as serve makes it
//!                                                      // report.error set => non-zero exit; .to_json()
//! new_plugin(&NewPluginOptions { name, kind: World, lang: PluginLang, parent_dir }) -> anyhow::Result<NewPlugin>
//! // `World` and `PluginLang` implement FromStr ("source" | "pre-triage" | "post-triage", "rust" | "python" | "c").
//!
//! // Showing plugin- or feed-supplied text in a log line or on a terminal:
//! escape_untrusted(&str) -> Cow<str>   // controls, separators, bidi escaped; plain text borrowed
//! ```
//!
//! Ids are file names without `.wasm`; `describe` must give the same name (letter case and `-`/`_`
//! aside) and no two files may share one; errors and logs name plugins as `id@version`.

mod bindings;
mod cache;
mod cli;
mod config;
mod detect;
mod error;
mod kv;
mod run;
mod runtime;
mod scaffold;
mod size;
mod state;
mod stats;
mod stderr;
mod text;
mod trap;
pub use state::{KV_OPS_PER_CALL, KV_WRITE_BYTES_PER_CALL, LOG_LINES_PER_CALL, MAX_RESOURCES};

pub use cache::prune_compile_cache;
pub use cli::{CheckFailure, PluginList, RefusedPlugin, check_plugin, list_plugins};
pub use config::{
    BIG_GUEST_BYTES, DEFAULT_KV_MAX_KEYS, DEFAULT_KV_MAX_MIB, DEFAULT_MAX_OUTPUT_KIB,
    DEFAULT_MEMORY_MIB, DEFAULT_RECYCLE_AFTER_CALLS, FailurePolicy, MAX_MEMORY_MIB, PluginConfig,
    PluginsConfig, StageConfig, StagesConfig,
};
pub use detect::{
    ALERT_INTERFACE, FROZEN_WIT_VERSIONS, SUPPORTED_WIT_VERSIONS, WIT_PACKAGE, WIT_VERSION, World,
    accepted_contract, version_supported,
};
pub use error::{CallError, LoadError, MissingGrant};
pub use kv::{
    KvFuture, KvStore, KvStoreError, KvUsage, KvWrite, MAX_KEY_BYTES, MAX_VALUE_BYTES,
    MemoryKvStore,
};
pub use run::{KvChange, LoggedLine, RunOptions, RunReport, default_config_for, run_plugin};
pub use runtime::{CapabilitySet, PluginHost, PluginSummary, PostTriageVerdict, PreTriageVerdict};
pub use scaffold::{NewPlugin, NewPluginOptions, PluginLang, new_plugin};
pub use stats::CallStats;
pub use text::escape_untrusted;

/// The WIT records as Rust types (generated from `wit/`).
pub mod types {
    pub use crate::bindings::post_triage::exports::nightcrier::plugin0_1_2::post_triage_processor::Outcome;
    pub use crate::bindings::post_triage_alerts::exports::nightcrier::plugin0_1_2::alert_handler::Alert;
    pub use crate::bindings::pre_triage::exports::nightcrier::plugin0_1_2::pre_triage_processor::{
        ContextFile, Decision, Patch,
    };
    pub use crate::bindings::source::exports::nightcrier::plugin0_1_2::event_source::{
        DecodeError, Envelope, Feed, FeedKind, McpFeed, PollFeed, SourceInfo, WebhookFeed,
    };
    pub use crate::bindings::source::nightcrier::plugin0_1_2::types::{
        AgentResult, Capabilities, FaultEvent, Incident, PluginError, PluginInfo, ResourceRef,
        Severity,
    };
}
