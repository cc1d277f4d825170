//! Glue between the engine and the WebAssembly plugin host (`nightcrier-plugin-host`): loading
//! the plugin folder, the database-backed key-value store plugins see, conversions between
//! queue rows and WIT records, and loading a single source plugin for `ingest`. The pre- and
//! post-triage stages that call plugins live in `triage`, decoding lives in `ingest`; every
//! plugin call is recorded in `plugin_runs`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use nightcrier_plugin_host::types;
use nightcrier_plugin_host::{
    KvFuture, KvStore, KvStoreError, KvUsage, KvWrite, PluginHost, PluginsConfig, World,
};

use crate::queue::Incident;
use crate::store::entity::fault_events;
use crate::store::{KvChange, Store};

/// Annotation prefix under which pre-triage context files travel to the agent's workspace.
pub const CONTEXT_FILE_ANNOTATION: &str = "context-file/";

/// The plugin key-value store, backed by `plugin_kv`.
#[derive(Clone, Debug)]
pub struct DbKv {
    store: Store,
}

impl DbKv {
    /// A key-value store over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

fn unavailable(error: impl std::fmt::Display) -> KvStoreError {
    KvStoreError::Unavailable(error.to_string())
}

impl KvStore for DbKv {
    fn get<'a>(&'a self, plugin: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move {
            self.store
                .kv_get(plugin, key, Utc::now())
                .await
                .map_err(unavailable)
        })
    }

    fn usage<'a>(&'a self, plugin: &'a str) -> KvFuture<'a, KvUsage> {
        Box::pin(async move {
            let totals = self
                .store
                .kv_totals(plugin, Utc::now())
                .await
                .map_err(unavailable)?;
            Ok(KvUsage {
                keys: totals.keys,
                bytes: totals.bytes,
            })
        })
    }

    fn apply<'a>(&'a self, plugin: &'a str, writes: Vec<KvWrite>) -> KvFuture<'a, ()> {
        Box::pin(async move {
            let now = Utc::now();
            let changes = writes
                .into_iter()
                .map(|write| match write {
                    KvWrite::Set { key, value, ttl } => {
                        let expires_at = match ttl {
                            Some(ttl) => Some(
                                now + chrono::Duration::from_std(ttl)
                                    .map_err(|_| KvStoreError::Invalid("ttl is too long".into()))?,
                            ),
                            None => None,
                        };
                        Ok(KvChange::Set {
                            key,
                            value,
                            expires_at,
                        })
                    }
                    KvWrite::Delete { key } => Ok(KvChange::Delete { key }),
                })
                .collect::<Result<Vec<_>, KvStoreError>>()?;
            self.store
                .kv_apply(plugin, changes, now)
                .await
                .map_err(unavailable)
        })
    }
}

/// A plugin file that was refused at load, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedPlugin {
    /// Its id (file name without `.wasm`).
    pub id: String,
    /// Why.
    pub reason: String,
}

/// Loaded plugins and the ones refused.
pub struct LoadedPlugins {
    /// The host with every plugin that loaded.
    pub host: PluginHost,
    /// The files refused.
    pub refused: Vec<RefusedPlugin>,
}

/// Loads the plugins of `config`, logging each refused file; the engine keeps serving with the
/// others (a feed whose source plugin was refused is reported and not started).
pub async fn load(config: PluginsConfig, store: &Store) -> anyhow::Result<LoadedPlugins> {
    let dir = config.dir.clone();
    let (host, refused) = PluginHost::load(config, Arc::new(DbKv::new(store.clone()))).await?;
    for error in &refused {
        match error {
            // The operator did not grant what the plugin asks for: a choice, not a fault.
            nightcrier_plugin_host::LoadError::MissingGrant { id, .. } => {
                tracing::warn!(plugin = %id, reason = %error, "plugin disabled");
            }
            _ => tracing::error!(plugin = %error.plugin_id(), error = %error, "plugin refused"),
        }
    }
    for plugin in host.plugins() {
        tracing::info!(plugin = %plugin.label(), world = ?plugin.world, "plugin loaded");
    }
    tracing::info!(dir = %dir.display(), loaded = host.plugins().len(), refused = refused.len(), "plugins ready");
    Ok(LoadedPlugins {
        host,
        refused: refused
            .iter()
            .map(|error| RefusedPlugin {
                id: error.plugin_id(),
                reason: error.to_string(),
            })
            .collect(),
    })
}

/// A host with no plugins, for an engine run without a plugin folder.
pub async fn no_plugins(store: &Store) -> anyhow::Result<PluginHost> {
    let (host, _) = PluginHost::load_files(
        PluginsConfig::new(std::path::PathBuf::new()),
        Arc::new(DbKv::new(store.clone())),
        &[],
    )
    .await?;
    Ok(host)
}

/// Loads the one source plugin `id` from the folder of `config`: that plugin, or an error that
/// says why not (missing file, refused at load, not a source). Never a stand-in decoder.
pub async fn load_source(
    config: PluginsConfig,
    store: &Store,
    id: &str,
) -> anyhow::Result<PluginHost> {
    let file = config.dir.join(format!("{id}.wasm"));
    if !file.is_file() {
        anyhow::bail!("no source plugin `{id}`: {} does not exist", file.display());
    }
    let (host, refused) =
        PluginHost::load_files(config, Arc::new(DbKv::new(store.clone())), &[file]).await?;
    if let Some(error) = refused.into_iter().next() {
        return Err(anyhow::Error::new(error).context(format!("source plugin `{id}` was refused")));
    }
    match host.plugin(id) {
        Some(plugin) if plugin.world == World::Source => Ok(host),
        Some(plugin) => anyhow::bail!(
            "plugin `{id}` is a {} plugin, not a source",
            plugin.world.as_str()
        ),
        None => anyhow::bail!("plugin `{id}` did not load"),
    }
}

fn severity(text: &str) -> types::Severity {
    match text.to_ascii_lowercase().as_str() {
        "critical" | "error" | "fatal" | "emergency" | "alert" => types::Severity::Critical,
        "warning" | "warn" => types::Severity::Warning,
        _ => types::Severity::Info,
    }
}

fn pairs(map: &BTreeMap<String, String>) -> Vec<(String, String)> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The WIT view of an incident and its fault event.
pub fn wit_incident(incident: &Incident, event: &fault_events::Model) -> types::Incident {
    types::Incident {
        id: incident.id.to_string(),
        cluster: incident.cluster.clone(),
        event: types::FaultEvent {
            fault_id: event.fault_id.clone().unwrap_or_default(),
            cluster: event.cluster.clone(),
            resource: types::ResourceRef {
                api_version: event.resource_api_version.clone().unwrap_or_default(),
                kind: event.resource_kind.clone().unwrap_or_default(),
                name: event.resource_name.clone().unwrap_or_default(),
                namespace: event.resource_namespace.clone(),
                uid: event.resource_uid.clone(),
            },
            fault_type: event.fault_type.clone(),
            severity: severity(&event.severity),
            context: event.context.clone(),
            timestamp: event.timestamp.clone().unwrap_or_default(),
            labels: pairs(&crate::queue::string_map(&event.labels).unwrap_or_default()),
        },
        labels: pairs(&incident.labels),
        annotations: pairs(
            &incident
                .annotations
                .iter()
                .filter(|(key, _)| !key.starts_with(CONTEXT_FILE_ANNOTATION))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        priority: u8::try_from(incident.priority.clamp(0, 255)).unwrap_or(u8::MAX),
        agent_profile: incident.agent_profile.clone(),
    }
}
