//! `PluginHost`: one engine, loading (cache, world detection, grants), bounded calls and the stage chains.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

use crate::bindings::post_triage::{PostTriage, PostTriagePre};
use crate::bindings::post_triage_alerts::exports::nightcrier::plugin0_1_2::alert_handler::{
    Guest as AlertHandler, GuestIndices as AlertHandlerIndices,
};
use crate::bindings::pre_triage::{PreTriage, PreTriagePre};
use crate::bindings::source::nightcrier::plugin0_1_2::host as host_interface;
use crate::bindings::source::{Source, SourcePre};
use crate::config::{
    BIG_GUEST_BYTES, DEFAULT_RECYCLE_AFTER_CALLS, FailurePolicy, Limits, MAX_MEMORY_MIB,
    PluginConfig, PluginsConfig,
};
use crate::detect::{World, detect};
use crate::error::{CallError, LoadError, MissingGrant};
use crate::kv::{KvStore, PendingWrites};
use crate::run::LogTap;
use crate::size::OutputSize;
use crate::state::{HostPattern, PluginState, StateSeed};
use crate::trap::{Failure, classify};
use crate::types::{
    AgentResult, Alert, Decision, DecodeError, Envelope, FaultEvent, Feed, Incident, Outcome,
    PluginInfo,
};

/// Epoch tick length: the resolution of deadlines.
const TICK: Duration = Duration::from_millis(1);
/// Instances alive at once (in flight plus kept warm), across all plugins.
const MAX_INSTANCES: usize = 200;

/// Bytes of each pooled linear memory kept mapped when its slot is freed. With the Linux
/// `PAGEMAP_SCAN` ioctl (kernel ≥ 6.7) only the pages a call dirtied are reset, by copy, so the
/// next instance in the slot takes no page faults (fresh-instance decode 31.6 → 17.2 µs, see
/// docs/benchmarks.md). Used only where that ioctl exists. Covers a Rust guest's 1 MiB stack plus its data and first heap pages.
const KEEP_RESIDENT_BYTES: usize = 2 << 20;

/// Same as [`KEEP_RESIDENT_BYTES`] for tables.
const KEEP_RESIDENT_TABLE_BYTES: usize = 64 << 10;
/// Budget for `describe` at load: big guests pay their first instantiation here.
const DESCRIBE_DEADLINE: Duration = Duration::from_secs(5);

/// What `plugins list` and the engine show about a loaded plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginSummary {
    /// Id: the file name without `.wasm`; the key under `[plugins.plugin.<id>]` and the key-value scope.
    pub id: String,
    /// Name the plugin gives itself; the same as `id` but for letter case and `-`/`_`.
    pub name: String,
    /// Version the plugin gives itself.
    pub version: String,
    /// What it does.
    pub description: String,
    /// Detected world.
    pub world: World,
    /// A post-triage plugin that also exports `alert-handler` (contract 0.1.2 and later): it
    /// receives operational alerts. Always false for other worlds and older contracts.
    pub handles_alerts: bool,
    /// WIT version from its export names.
    pub wit_version: String,
    /// The component file.
    pub path: PathBuf,
    /// What the plugin asked for.
    pub requested: CapabilitySet,
    /// What the operator granted.
    pub granted: CapabilitySet,
    /// For sources, the feed the host must open for it.
    pub feed: Option<Feed>,
    /// Whether instances are reused across calls (big guests).
    pub reuses_instances: bool,
    /// Effective deadline per call.
    pub deadline_ms: u64,
    /// Effective memory cap.
    pub memory_mib: usize,
}

impl PluginSummary {
    /// `id@version`, the label used in errors and logs.
    pub fn label(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

/// A set of capabilities, requested or granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CapabilitySet {
    /// Outbound HTTP destinations.
    pub outbound_hosts: Vec<String>,
    /// Environment variable names.
    pub env_vars: Vec<String>,
    /// Read-only directories.
    pub read_only_dirs: Vec<String>,
}

impl CapabilitySet {
    /// Whether nothing is in the set.
    pub fn is_empty(&self) -> bool {
        self.outbound_hosts.is_empty() && self.env_vars.is_empty() && self.read_only_dirs.is_empty()
    }
}

impl std::fmt::Display for CapabilitySet {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        parts.extend(
            self.outbound_hosts
                .iter()
                .map(|host| format!("http:{host}")),
        );
        parts.extend(self.env_vars.iter().map(|name| format!("env:{name}")));
        parts.extend(self.read_only_dirs.iter().map(|dir| format!("dir:{dir}")));
        if parts.is_empty() {
            formatter.write_str("-")
        } else {
            formatter.write_str(&parts.join(","))
        }
    }
}

enum WorldPre {
    Source(SourcePre<PluginState>),
    PreTriage(PreTriagePre<PluginState>),
    /// The alert handler's export indices when the component exports `alert-handler`.
    PostTriage(PostTriagePre<PluginState>, Option<AlertHandlerIndices>),
}

enum WorldBindings {
    Source(Source),
    PreTriage(PreTriage),
    PostTriage(PostTriage, Option<AlertHandler>),
}

/// Why an instance could not be created.
struct InstantiateFailure {
    error: wasmtime::Error,
    memory_denied: bool,
    stderr: Option<String>,
}

struct Instance {
    store: Store<PluginState>,
    bindings: WorldBindings,
    calls: u32,
}

struct LoadedPlugin {
    summary: PluginSummary,
    label: Arc<str>,
    order: i32,
    limits: Limits,
    pre: WorldPre,
    seed: StateSeed,
    reuse: bool,
    warm: Mutex<Vec<Instance>>,
    stats: crate::stats::CallCounters,
}

/// Stops the epoch ticker thread when the host is dropped.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ticker {
    fn start(engine: Engine) -> anyhow::Result<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        // A thread, not a tokio task: a spinning guest must be interrupted even on a current-thread runtime.
        let thread = std::thread::Builder::new()
            .name("nightcrier-plugin-epoch".to_owned())
            .spawn(move || {
                while !thread_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .context("failed to start the plugin epoch ticker")?;
        Ok(Ticker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<PluginState>,
    config: PluginsConfig,
    kv: Arc<dyn KvStore>,
    plugins: BTreeMap<String, Arc<LoadedPlugin>>,
    permits: Semaphore,
    /// Where `host.log` lines also go (`plugins run` only).
    log_tap: Option<LogTap>,
    _ticker: Ticker,
}

/// The plugin host: one per process; cheap to clone.
#[derive(Clone)]
pub struct PluginHost {
    inner: Arc<Inner>,
}

/// Result of the pre-triage chain.
#[derive(Debug, Clone, PartialEq)]
pub enum PreTriageVerdict {
    /// Queue the incident (patched by every plugin that proceeded).
    Proceed {
        /// The incident with all patches applied.
        incident: Box<Incident>,
        /// Files to write into the agent's workspace, by relative path.
        context_files: Vec<(String, Vec<u8>)>,
        /// Plugins that failed under fail-open, with the error text.
        failures: Vec<(String, String)>,
    },
    /// Drop the incident.
    Skip {
        /// Plugin id that decided.
        plugin: String,
        /// Its reason.
        reason: String,
    },
    /// Look again later.
    Delay {
        /// Plugin id that decided.
        plugin: String,
        /// How long.
        delay: Duration,
    },
}

/// Result of the post-triage chain.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PostTriageVerdict {
    /// The report after every plugin (e.g. redacted).
    pub report_markdown: String,
    /// Structured fields, `(plugin id, key, value)`.
    pub fields: Vec<(String, String, String)>,
    /// Plugins that failed under fail-open, with the error and whether a retry makes sense.
    pub failures: Vec<(String, String, bool)>,
}

fn engine_config() -> anyhow::Result<wasmtime::Config> {
    let mut config = wasmtime::Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_INSTANCES as u32 + 56)
        .total_core_instances(4096)
        .total_memories(512)
        .total_tables(512)
        .total_stacks(MAX_INSTANCES as u32 + 56)
        .max_memory_size(MAX_MEMORY_MIB as usize * 1024 * 1024);
    // Without PAGEMAP_SCAN, keeping memory resident means a `memset` of all of it per freed slot,
    // which costs more than the page faults it saves; the default (`madvise`) is better there.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_TABLE_BYTES)
            .pagemap_scan(Enabled::Yes);
    }
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(config)
}

fn build_linker(engine: &Engine) -> anyhow::Result<Linker<PluginState>> {
    let mut linker = Linker::new(engine);
    let context = |what: &'static str| {
        move |error: wasmtime::Error| anyhow::anyhow!("failed to link {what}: {error:#}")
    };
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(context("WASI"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(context("wasi:http"))?;
    host_interface::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)
        .map_err(context("the host interface"))?;
    Ok(linker)
}

fn requested_set(info: &PluginInfo) -> CapabilitySet {
    CapabilitySet {
        outbound_hosts: info.capabilities.outbound_hosts.clone(),
        env_vars: info.capabilities.env_vars.clone(),
        read_only_dirs: info.capabilities.read_only_dirs.clone(),
    }
}

fn granted_set(config: &PluginConfig) -> CapabilitySet {
    CapabilitySet {
        outbound_hosts: config.allowed_hosts.clone(),
        env_vars: config.env.clone(),
        read_only_dirs: config
            .read_only_dirs
            .iter()
            .map(|dir| dir.display().to_string())
            .collect(),
    }
}

/// Refuse a plugin that asks for more than the operator granted, naming every missing grant.
fn check_grants(
    id: &str,
    label: &str,
    info: &PluginInfo,
    config: &PluginConfig,
) -> Result<(), LoadError> {
    let mut missing = Vec::new();
    let granted: Vec<HostPattern> = config
        .allowed_hosts
        .iter()
        .filter_map(|pattern| HostPattern::parse(pattern).ok())
        .collect();
    for requested in &info.capabilities.outbound_hosts {
        let covered = HostPattern::parse(requested)
            .is_ok_and(|wanted| granted.iter().any(|grant| grant.covers(&wanted)));
        if !covered {
            missing.push(MissingGrant {
                capability: format!("outbound host {requested}"),
                grant: "allowed_hosts",
            });
        }
    }
    for name in &info.capabilities.env_vars {
        if !config.env.contains(name) {
            missing.push(MissingGrant {
                capability: format!("environment variable {name}"),
                grant: "env",
            });
        }
    }
    for dir in &info.capabilities.read_only_dirs {
        if !config
            .read_only_dirs
            .iter()
            .any(|granted| granted == Path::new(dir))
        {
            missing.push(MissingGrant {
                capability: format!("read-only directory {dir}"),
                grant: "read_only_dirs",
            });
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(LoadError::MissingGrant {
        plugin: label.to_owned(),
        id: id.to_owned(),
        missing,
    })
}

fn new_store(engine: &Engine, state: PluginState) -> Store<PluginState> {
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_callback(|cx| {
        // The ticker only sets how often this runs; the deadline itself is wall-clock, so a slow or
        // overloaded ticker thread cannot stretch it.
        if wall_clock_now() >= cx.data().deadline {
            return Ok(UpdateDeadline::Interrupt);
        }
        // Yield so a long call does not starve the executor thread.
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// The identity a plugin name stands for: letter case and `-`/`_` aside, since cargo writes
/// `my_plugin.wasm` for the crate `my-plugin`. A plugin's file name (its id) and its `describe`
/// name must have the same identity, and no two files in a folder may.
pub(crate) fn plugin_identity(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Real time on purpose: a guest burns real CPU even when a test pauses tokio's clock, and a paused
/// clock would never interrupt a spinning guest (the yielding task keeps the runtime busy).
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_clock_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// The instant a call must stop.
fn call_deadline(budget: Duration) -> std::time::Instant {
    wall_clock_now() + budget
}

impl PluginHost {
    /// Build the engine and load every `*.wasm` in `config.dir`. Refused files are returned, not fatal.
    pub async fn load(
        config: PluginsConfig,
        kv: Arc<dyn KvStore>,
    ) -> anyhow::Result<(PluginHost, Vec<LoadError>)> {
        let mut files = Vec::new();
        let mut entries = tokio::fs::read_dir(&config.dir)
            .await
            .with_context(|| format!("failed to read plugins folder {}", config.dir.display()))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .context("failed to list the plugins folder")?
        {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "wasm")
            {
                files.push(path);
            }
        }
        files.sort();
        // only a whole folder tells: `load_files` is given some of its files on purpose
        for id in config.plugin.keys() {
            if !files
                .iter()
                .any(|file| file.file_stem().is_some_and(|stem| stem == id.as_str()))
            {
                tracing::warn!(plugin = %id, "configuration names a plugin that has no file");
            }
        }
        Self::load_files(config, kv, &files).await
    }

    /// Build the engine and load exactly `files` (used by `plugins check`).
    pub async fn load_files(
        config: PluginsConfig,
        kv: Arc<dyn KvStore>,
        files: &[PathBuf],
    ) -> anyhow::Result<(PluginHost, Vec<LoadError>)> {
        Self::load_files_tapped(config, kv, files, None).await
    }

    /// [`PluginHost::load_files`], also handing every `host.log` line to `log_tap` (`plugins run`).
    pub(crate) async fn load_files_tapped(
        config: PluginsConfig,
        kv: Arc<dyn KvStore>,
        files: &[PathBuf],
        log_tap: Option<LogTap>,
    ) -> anyhow::Result<(PluginHost, Vec<LoadError>)> {
        let engine = Engine::new(&engine_config()?)
            .map_err(|error| anyhow::anyhow!("failed to create the wasmtime engine: {error:#}"))?;
        let linker = build_linker(&engine)?;
        let ticker = Ticker::start(engine.clone())?;
        let mut host = Inner {
            engine,
            linker,
            config,
            kv,
            plugins: BTreeMap::new(),
            permits: Semaphore::new(MAX_INSTANCES),
            log_tap,
            _ticker: ticker,
        };
        let mut refused = Vec::new();
        let mut candidates: Vec<(String, &PathBuf, PluginConfig)> = Vec::new();
        for path in files {
            let id = path
                .file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default();
            let plugin_config = host.config.plugin.get(&id).cloned().unwrap_or_default();
            if plugin_config.disabled {
                tracing::info!(plugin = %id, "plugin disabled by configuration");
                continue;
            }
            candidates.push((id, path, plugin_config));
        }
        for (id, path, plugin_config) in &candidates {
            let others: Vec<PathBuf> = candidates
                .iter()
                .filter(|(other, other_path, _)| {
                    other_path != path && plugin_identity(other) == plugin_identity(id)
                })
                .map(|(_, other_path, _)| (*other_path).clone())
                .collect();
            if !others.is_empty() {
                refused.push(LoadError::DuplicateId {
                    path: (*path).clone(),
                    others,
                    id: plugin_identity(id),
                });
                continue;
            }
            match host.load_one(id, path, plugin_config).await {
                Ok(plugin) => {
                    tracing::info!(plugin = %plugin.label, world = %plugin.summary.world, "plugin loaded");
                    host.plugins.insert(id.clone(), Arc::new(plugin));
                }
                // returned to the caller, which reports it (the engine logs it, the CLI prints it)
                Err(error) => refused.push(error),
            }
        }
        Ok((
            PluginHost {
                inner: Arc::new(host),
            },
            refused,
        ))
    }

    /// The import and export names of a component file, compiled as loading does (for
    /// `plugins check` to say what a refused file asks for); `None` when it cannot be compiled.
    pub(crate) async fn component_names(&self, path: &Path) -> Option<(Vec<String>, Vec<String>)> {
        let bytes = tokio::fs::read(path).await.ok()?;
        let engine = &self.inner.engine;
        let component =
            crate::cache::load_component(engine, &self.inner.config.cache_dir(), path, bytes)
                .await
                .ok()?;
        let component_type = component.component_type();
        let imports = component_type
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports = component_type
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        Some((imports, exports))
    }

    /// Every loaded plugin, ordered by id.
    pub fn plugins(&self) -> Vec<PluginSummary> {
        self.inner
            .plugins
            .values()
            .map(|plugin| plugin.summary.clone())
            .collect()
    }

    /// Each loaded plugin's call statistics since load, by id.
    pub fn call_stats(&self) -> std::collections::BTreeMap<String, crate::stats::CallStats> {
        self.inner
            .plugins
            .iter()
            .map(|(id, plugin)| (id.clone(), plugin.stats.snapshot()))
            .collect()
    }

    /// The summary of one plugin.
    pub fn plugin(&self, id: &str) -> Option<PluginSummary> {
        self.inner
            .plugins
            .get(id)
            .map(|plugin| plugin.summary.clone())
    }

    /// Ids of the plugins of `world`, in chain order (`order`, then id).
    pub fn chain(&self, world: World) -> Vec<String> {
        let mut chain: Vec<(i32, String)> = self
            .inner
            .plugins
            .values()
            .filter(|plugin| plugin.summary.world == world)
            .map(|plugin| (plugin.order, plugin.summary.id.clone()))
            .collect();
        chain.sort();
        chain.into_iter().map(|(_, id)| id).collect()
    }

    /// The operator's failure policy for `world`.
    pub fn failure_policy(&self, world: World) -> FailurePolicy {
        self.inner.config.failure_policy(world)
    }

    /// Decode one envelope with source plugin `id`.
    pub async fn decode(
        &self,
        id: &str,
        envelope: &Envelope,
    ) -> Result<Vec<FaultEvent>, CallError> {
        let plugin = self.inner.find(id, World::Source)?;
        let result = self
            .inner
            .call(&plugin, |mut instance| async move {
                let WorldBindings::Source(bindings) = &instance.bindings else {
                    return (instance, Err(wrong_world_trap()));
                };
                let result = bindings
                    .nightcrier_plugin0_1_2_event_source()
                    .call_decode(&mut instance.store, envelope)
                    .await;
                (instance, result)
            })
            .await?;
        match result {
            Ok(events) => Ok(events),
            Err(DecodeError::Malformed(message)) => Err(CallError::Plugin {
                plugin: plugin.label.to_string(),
                message: format!("malformed message: {message}"),
                retryable: false,
            }),
            Err(DecodeError::Unsupported(message)) => Err(CallError::Plugin {
                plugin: plugin.label.to_string(),
                message: format!("unsupported message: {message}"),
                retryable: false,
            }),
        }
    }

    /// Run pre-triage plugin `id` on `incident`.
    pub async fn pre_triage(&self, id: &str, incident: &Incident) -> Result<Decision, CallError> {
        let plugin = self.inner.find(id, World::PreTriage)?;
        let result = self
            .inner
            .call(&plugin, |mut instance| async move {
                let WorldBindings::PreTriage(bindings) = &instance.bindings else {
                    return (instance, Err(wrong_world_trap()));
                };
                let result = bindings
                    .nightcrier_plugin0_1_2_pre_triage_processor()
                    .call_pre_triage(&mut instance.store, incident)
                    .await;
                (instance, result)
            })
            .await?;
        result.map_err(|error| CallError::Plugin {
            plugin: plugin.label.to_string(),
            message: error.message,
            retryable: error.retryable,
        })
    }

    /// Run post-triage plugin `id`.
    pub async fn post_triage(
        &self,
        id: &str,
        incident: &Incident,
        agent_result: &AgentResult,
    ) -> Result<Outcome, CallError> {
        let plugin = self.inner.find(id, World::PostTriage)?;
        let result = self
            .inner
            .call(&plugin, |mut instance| async move {
                let WorldBindings::PostTriage(bindings, _) = &instance.bindings else {
                    return (instance, Err(wrong_world_trap()));
                };
                let result = bindings
                    .nightcrier_plugin0_1_2_post_triage_processor()
                    .call_post_triage(&mut instance.store, incident, agent_result)
                    .await;
                (instance, result)
            })
            .await?;
        result.map_err(|error| CallError::Plugin {
            plugin: plugin.label.to_string(),
            message: error.message,
            retryable: error.retryable,
        })
    }

    /// Ids of the post-triage plugins that receive operational alerts (they export
    /// `alert-handler`), in chain order.
    pub fn alert_handlers(&self) -> Vec<String> {
        self.chain(World::PostTriage)
            .into_iter()
            .filter(|id| {
                self.inner
                    .plugins
                    .get(id)
                    .is_some_and(|plugin| plugin.summary.handles_alerts)
            })
            .collect()
    }

    /// Deliver one alert to plugin `id`, under the same deadline and limits as its post-triage
    /// calls. A plugin that does not export `alert-handler` (every 0.1.0 and 0.1.1 plugin) is
    /// never called: the answer is [`CallError::WrongWorld`].
    pub async fn on_alert(&self, id: &str, alert: &Alert) -> Result<(), CallError> {
        let plugin = self.inner.find(id, World::PostTriage)?;
        if !plugin.summary.handles_alerts {
            return Err(CallError::WrongWorld {
                plugin: plugin.label.to_string(),
                expected: "post-triage-alerts",
                actual: plugin.summary.world.as_str(),
            });
        }
        let result = self
            .inner
            .call_as(&plugin, "alert", |mut instance| async move {
                let WorldBindings::PostTriage(_, Some(handler)) = &instance.bindings else {
                    return (instance, Err(wrong_world_trap()));
                };
                let result = handler.call_on_alert(&mut instance.store, alert).await;
                (instance, result)
            })
            .await?;
        result.map_err(|error| CallError::Plugin {
            plugin: plugin.label.to_string(),
            message: error.message,
            retryable: error.retryable,
        })
    }

    /// Run every pre-triage plugin in order, applying patches; the first skip or delay wins.
    ///
    /// A failing plugin is skipped under fail-open (and listed in `failures`) or ends the chain with
    /// its error under fail-closed.
    pub async fn run_pre_triage(&self, incident: &Incident) -> Result<PreTriageVerdict, CallError> {
        let mut incident = incident.clone();
        let mut context_files = Vec::new();
        let mut failures = Vec::new();
        for id in self.chain(World::PreTriage) {
            match self.pre_triage(&id, &incident).await {
                Ok(Decision::Proceed(patch)) => {
                    upsert(&mut incident.labels, patch.labels);
                    upsert(&mut incident.annotations, patch.annotations);
                    if let Some(priority) = patch.priority {
                        incident.priority = priority;
                    }
                    if patch.agent_profile.is_some() {
                        incident.agent_profile = patch.agent_profile;
                    }
                    for file in patch.context_files {
                        if is_safe_relative_path(&file.path) {
                            context_files.push((file.path, file.content));
                        } else {
                            tracing::warn!(plugin = %id, path = %file.path, "context file path refused");
                        }
                    }
                }
                Ok(Decision::Skip(reason)) => {
                    return Ok(PreTriageVerdict::Skip { plugin: id, reason });
                }
                Ok(Decision::Delay(seconds)) => {
                    return Ok(PreTriageVerdict::Delay {
                        plugin: id,
                        delay: Duration::from_secs(u64::from(seconds)),
                    });
                }
                Err(error) => match self.failure_policy(World::PreTriage) {
                    FailurePolicy::FailOpen => {
                        tracing::warn!(plugin = %id, error = %error, "pre-triage plugin failed, continuing (fail-open)");
                        failures.push((id, error.to_string()));
                    }
                    FailurePolicy::FailClosed => return Err(error),
                },
            }
        }
        Ok(PreTriageVerdict::Proceed {
            incident: Box::new(incident),
            context_files,
            failures,
        })
    }

    /// Run every post-triage plugin in order; each sees the report as left by the previous one.
    pub async fn run_post_triage(
        &self,
        incident: &Incident,
        agent_result: &AgentResult,
    ) -> Result<PostTriageVerdict, CallError> {
        let mut current = agent_result.clone();
        let mut verdict = PostTriageVerdict::default();
        for id in self.chain(World::PostTriage) {
            match self.post_triage(&id, incident, &current).await {
                Ok(outcome) => {
                    if let Some(report) = outcome.report_markdown {
                        current.report_markdown = report;
                    }
                    verdict.fields.extend(
                        outcome
                            .fields
                            .into_iter()
                            .map(|(key, value)| (id.clone(), key, value)),
                    );
                }
                Err(error) => match self.failure_policy(World::PostTriage) {
                    FailurePolicy::FailOpen => {
                        tracing::warn!(plugin = %id, error = %error, "post-triage plugin failed, continuing (fail-open)");
                        let retryable = error.is_retryable();
                        verdict.failures.push((id, error.to_string(), retryable));
                    }
                    FailurePolicy::FailClosed => return Err(error),
                },
            }
        }
        verdict.report_markdown = current.report_markdown;
        Ok(verdict)
    }
}

/// Whether what a call returned is a success (a WIT `result` that is `ok`): only then are the
/// call's key-value writes applied.
trait Succeeded {
    fn succeeded(&self) -> bool {
        true
    }
}

impl<T, E> Succeeded for Result<T, E> {
    fn succeeded(&self) -> bool {
        self.is_ok()
    }
}

impl Succeeded for PluginInfo {}

impl Succeeded for crate::types::SourceInfo {}

fn wrong_world_trap() -> wasmtime::Error {
    wasmtime::Error::msg("internal error: instance of another world")
}

fn upsert(target: &mut Vec<(String, String)>, changes: Vec<(String, String)>) {
    for (key, value) in changes {
        match target.iter_mut().find(|(existing, _)| *existing == key) {
            Some(entry) => entry.1 = value,
            None => target.push((key, value)),
        }
    }
}

fn is_safe_relative_path(path: &str) -> bool {
    let path = Path::new(path);
    !path.as_os_str().is_empty()
        && path
            .components()
            .all(|component| matches!(component, std::path::Component::Normal(_)))
}

impl Inner {
    fn find(&self, id: &str, world: World) -> Result<Arc<LoadedPlugin>, CallError> {
        let plugin = self.plugins.get(id).ok_or_else(|| CallError::NotFound {
            plugin: id.to_owned(),
        })?;
        if plugin.summary.world != world {
            return Err(CallError::WrongWorld {
                plugin: plugin.label.to_string(),
                expected: world.as_str(),
                actual: plugin.summary.world.as_str(),
            });
        }
        Ok(plugin.clone())
    }

    async fn instantiate(
        &self,
        pre: &WorldPre,
        seed: &StateSeed,
        label: &Arc<str>,
        deadline: std::time::Instant,
    ) -> Result<Instance, InstantiateFailure> {
        let mut state = seed.build().map_err(|error| InstantiateFailure {
            error,
            memory_denied: false,
            stderr: None,
        })?;
        state.set_label(label.clone());
        state.deadline = deadline;
        let mut store = new_store(&self.engine, state);
        store.set_epoch_deadline(1);
        let bindings = match pre {
            WorldPre::Source(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(WorldBindings::Source),
            WorldPre::PreTriage(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(WorldBindings::PreTriage),
            WorldPre::PostTriage(pre, None) => pre
                .instantiate_async(&mut store)
                .await
                .map(|bindings| WorldBindings::PostTriage(bindings, None)),
            WorldPre::PostTriage(pre, Some(alert_indices)) => {
                // one instance, both exports looked up on it
                match pre.instance_pre().instantiate_async(&mut store).await {
                    Ok(instance) => PostTriage::new(&mut store, &instance).and_then(|bindings| {
                        let handler = alert_indices.load(&mut store, &instance)?;
                        Ok(WorldBindings::PostTriage(bindings, Some(handler)))
                    }),
                    Err(error) => Err(error),
                }
            }
        };
        match bindings {
            Ok(bindings) => Ok(Instance {
                store,
                bindings,
                calls: 0,
            }),
            Err(error) => Err(InstantiateFailure {
                error,
                memory_denied: store.data().limiter.memory_denied,
                stderr: store.data().stderr.last_words(),
            }),
        }
    }

    /// Run `body` on an instance under the plugin's deadline and limits, classify failures, recycle or keep the instance.
    async fn call<R, F, Fut>(&self, plugin: &LoadedPlugin, body: F) -> Result<R, CallError>
    where
        R: OutputSize + Succeeded,
        F: FnOnce(Instance) -> Fut,
        Fut: Future<Output = (Instance, wasmtime::Result<R>)>,
    {
        self.call_as(plugin, plugin.summary.world.as_str(), body)
            .await
    }

    /// [`Inner::call`], counted in the statistics under `stage` (`alert` for alert deliveries).
    async fn call_as<R, F, Fut>(
        &self,
        plugin: &LoadedPlugin,
        stage: &'static str,
        body: F,
    ) -> Result<R, CallError>
    where
        R: OutputSize + Succeeded,
        F: FnOnce(Instance) -> Fut,
        Fut: Future<Output = (Instance, wasmtime::Result<R>)>,
    {
        let started = tokio::time::Instant::now();
        let result = self.call_with(plugin, plugin.limits.deadline, body).await;
        let outcome = match &result {
            // the plugin answered with its own error value (a refused message, a plugin-error)
            Ok(value) if !value.succeeded() => "plugin_error",
            other => crate::stats::outcome_of(other),
        };
        plugin
            .stats
            .record(&plugin.summary.id, stage, outcome, started.elapsed());
        result
    }

    async fn call_with<R, F, Fut>(
        &self,
        plugin: &LoadedPlugin,
        deadline: Duration,
        body: F,
    ) -> Result<R, CallError>
    where
        R: OutputSize + Succeeded,
        F: FnOnce(Instance) -> Fut,
        Fut: Future<Output = (Instance, wasmtime::Result<R>)>,
    {
        let label = plugin.label.to_string();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| CallError::Instantiate {
                plugin: label.clone(),
                reason: "plugin host is shutting down".to_owned(),
            })?;
        let stop_at = call_deadline(deadline);
        let warm = if plugin.reuse {
            plugin
                .warm
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .pop()
        } else {
            None
        };
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        let memory_mib = plugin.limits.memory_bytes / (1024 * 1024);
        let run = async {
            let mut instance = match warm {
                Some(mut instance) => {
                    instance.store.data_mut().budget = Default::default();
                    instance.store.data_mut().deadline = stop_at;
                    instance.store.data_mut().limiter.memory_denied = false;
                    instance.store.data().stderr.clear();
                    instance.store.data_mut().pending = PendingWrites::default();
                    instance.store.set_epoch_deadline(1);
                    instance
                }
                None => match self
                    .instantiate(&plugin.pre, &plugin.seed, &plugin.label, stop_at)
                    .await
                {
                    Ok(instance) => instance,
                    Err(failure) => {
                        return Err(classify(Failure {
                            plugin: &label,
                            error: &failure.error,
                            memory_denied: failure.memory_denied,
                            stderr: failure.stderr,
                            deadline_ms,
                            memory_mib,
                            instantiating: true,
                        }));
                    }
                },
            };
            instance.calls += 1;
            let (instance, result) = body(instance).await;
            Ok((instance, result))
        };
        // Epoch interruption stops guest code; this outer bound also stops a call stuck in a host await.
        let hard_limit = deadline + deadline / 2 + Duration::from_millis(5);
        let (mut instance, result) = match tokio::time::timeout(hard_limit, run).await {
            Err(_) => {
                return Err(CallError::Timeout {
                    plugin: label,
                    deadline_ms,
                });
            }
            Ok(Err(error)) => return Err(error),
            Ok(Ok(pair)) => pair,
        };
        let dropped = instance.store.data().budget.logs_dropped;
        if dropped > 0 {
            tracing::warn!(plugin = %label, dropped, "plugin log lines over the per-call budget were dropped");
        }
        match result {
            Ok(value) => {
                let size = value.output_size();
                if size > plugin.limits.max_output_bytes {
                    return Err(CallError::OutputTooLarge {
                        plugin: label,
                        size,
                        limit: plugin.limits.max_output_bytes,
                    });
                }
                // a call's writes are applied together, and only when it succeeded
                let writes = instance.store.data_mut().pending.take();
                if value.succeeded() && !writes.is_empty() {
                    self.kv
                        .apply(&plugin.summary.id, writes)
                        .await
                        .map_err(|error| CallError::KvWrites {
                            plugin: label.clone(),
                            reason: error.to_string(),
                        })?;
                }
                if plugin.reuse && instance.calls < DEFAULT_RECYCLE_AFTER_CALLS {
                    plugin
                        .warm
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(instance);
                }
                Ok(value)
            }
            // The instance is dropped: after a trap its state is not trusted.
            Err(error) => Err(classify(Failure {
                plugin: &label,
                error: &error,
                memory_denied: instance.store.data().limiter.memory_denied,
                stderr: instance.store.data().stderr.last_words(),
                deadline_ms,
                memory_mib,
                instantiating: false,
            })),
        }
    }

    async fn load_one(
        &self,
        id: &str,
        path: &Path,
        config: &PluginConfig,
    ) -> Result<LoadedPlugin, LoadError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| LoadError::Read {
                path: path.to_owned(),
                source,
            })?;
        let file_bytes = bytes.len() as u64;
        let component: Component =
            crate::cache::load_component(&self.engine, &self.config.cache_dir(), path, bytes)
                .await?;
        let detected = detect(path, &self.engine, &component)?;
        let link_error = |error: wasmtime::Error| LoadError::Link {
            path: path.to_owned(),
            reason: format!("{error:#}"),
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let shape_error = |error: wasmtime::Error| LoadError::NoWorld {
            path: path.to_owned(),
            reason: format!(
                "its exports do not match world {}: {error:#}",
                detected.world
            ),
        };
        let pre = match detected.world {
            World::Source => WorldPre::Source(SourcePre::new(instance_pre).map_err(shape_error)?),
            World::PreTriage => {
                WorldPre::PreTriage(PreTriagePre::new(instance_pre).map_err(shape_error)?)
            }
            World::PostTriage => {
                let alert_indices = if detected.handles_alerts {
                    Some(AlertHandlerIndices::new(&instance_pre).map_err(shape_error)?)
                } else {
                    None
                };
                WorldPre::PostTriage(
                    PostTriagePre::new(instance_pre).map_err(shape_error)?,
                    alert_indices,
                )
            }
        };
        let limits = Limits::new(detected.world, config);
        let seed = StateSeed::new(id, config, &limits, self.kv.clone(), self.log_tap.clone())
            .map_err(|reason| LoadError::Link {
                path: path.to_owned(),
                reason: format!("invalid grants for plugin {id}: {reason}"),
            })?;
        let reuse = config
            .reuse_instances
            .unwrap_or(file_bytes > BIG_GUEST_BYTES);
        let mut plugin = LoadedPlugin {
            summary: PluginSummary {
                id: id.to_owned(),
                name: id.to_owned(),
                version: "unknown".to_owned(),
                description: String::new(),
                world: detected.world,
                handles_alerts: detected.handles_alerts,
                wit_version: detected.wit_version,
                path: path.to_owned(),
                requested: CapabilitySet::default(),
                granted: granted_set(config),
                feed: None,
                reuses_instances: reuse,
                deadline_ms: u64::try_from(limits.deadline.as_millis()).unwrap_or(u64::MAX),
                memory_mib: limits.memory_bytes / (1024 * 1024),
            },
            label: Arc::from(id),
            order: config.order,
            limits,
            pre,
            seed,
            reuse,
            warm: Mutex::new(Vec::new()),
            stats: Default::default(),
        };
        let describe_deadline = plugin.limits.deadline.max(DESCRIBE_DEADLINE);
        let (info, feed) = self
            .describe(&plugin, describe_deadline)
            .await
            .map_err(|source| LoadError::Describe {
                plugin: id.to_owned(),
                source: Box::new(source),
            })?;
        if plugin_identity(&info.name) != plugin_identity(id) {
            return Err(LoadError::NameMismatch {
                path: path.to_owned(),
                id: id.to_owned(),
                claimed: info.name,
            });
        }
        // the file's name, not the plugin's word, names it in every error and log
        let label = format!("{id}@{}", info.version);
        check_grants(id, &label, &info, config)?;
        plugin.summary.name = info.name.clone();
        plugin.summary.version = info.version.clone();
        plugin.summary.description = info.description.clone();
        plugin.summary.requested = requested_set(&info);
        plugin.summary.feed = feed;
        plugin.label = Arc::from(label.as_str());
        // An instance kept warm from `describe` must log under the final label.
        for instance in plugin
            .warm
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter_mut()
        {
            instance.store.data_mut().set_label(plugin.label.clone());
        }
        Ok(plugin)
    }

    async fn describe(
        &self,
        plugin: &LoadedPlugin,
        deadline: Duration,
    ) -> Result<(PluginInfo, Option<Feed>), CallError> {
        match &plugin.pre {
            WorldPre::Source(_) => {
                let info = self
                    .call_with(plugin, deadline, |mut instance| async move {
                        let WorldBindings::Source(bindings) = &instance.bindings else {
                            return (instance, Err(wrong_world_trap()));
                        };
                        let result = bindings
                            .nightcrier_plugin0_1_2_event_source()
                            .call_describe(&mut instance.store)
                            .await;
                        (instance, result)
                    })
                    .await?;
                Ok((info.info, Some(info.feed)))
            }
            WorldPre::PreTriage(_) => {
                let info = self
                    .call_with(plugin, deadline, |mut instance| async move {
                        let WorldBindings::PreTriage(bindings) = &instance.bindings else {
                            return (instance, Err(wrong_world_trap()));
                        };
                        let result = bindings
                            .nightcrier_plugin0_1_2_pre_triage_processor()
                            .call_describe(&mut instance.store)
                            .await;
                        (instance, result)
                    })
                    .await?;
                Ok((info, None))
            }
            WorldPre::PostTriage(..) => {
                let info = self
                    .call_with(plugin, deadline, |mut instance| async move {
                        let WorldBindings::PostTriage(bindings, _) = &instance.bindings else {
                            return (instance, Err(wrong_world_trap()));
                        };
                        let result = bindings
                            .nightcrier_plugin0_1_2_post_triage_processor()
                            .call_describe(&mut instance.store)
                            .await;
                        (instance, result)
                    })
                    .await?;
                Ok((info, None))
            }
        }
    }
}
