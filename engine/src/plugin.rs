//! Glue between the engine and the WebAssembly plugin host (`nightcrier-plugin-host`): the
//! database-backed key-value store plugins see, conversions between queue rows and WIT records,
//! the plugin pre-triage stage, post-triage of agent results, and decoding input through source
//! plugins. Every plugin call is recorded in `plugin_runs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nightcrier_plugin_host::types::{self, Envelope, FeedKind};
use nightcrier_plugin_host::{
    KvFuture, KvStore, KvStoreError, KvUsage, KvWrite, PluginHost, PluginsConfig,
    PostTriageVerdict, PreTriageVerdict, World,
};
use uuid::Uuid;

use crate::queue::{Incident, NewFaultEvent, QueuePatch, ResourceRef};
use crate::store::entity::fault_events;
use crate::store::{KvChange, NewPluginRun, Store};
use crate::triage::{Decision, PreTriage};

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

/// Loads the plugins of `config`, logging each refused file; the engine keeps serving with the
/// others.
pub async fn load(config: PluginsConfig, store: &Store) -> anyhow::Result<PluginHost> {
    let dir = config.dir.clone();
    let loaded = PluginHost::load(config, Arc::new(DbKv::new(store.clone()))).await?;
    report(loaded, &dir)
}

/// Loads exactly `files` with the grants of `config`.
pub async fn load_files(
    config: PluginsConfig,
    store: &Store,
    files: &[std::path::PathBuf],
) -> anyhow::Result<PluginHost> {
    let dir = config.dir.clone();
    let loaded = PluginHost::load_files(config, Arc::new(DbKv::new(store.clone())), files).await?;
    report(loaded, &dir)
}

fn report(
    (host, refused): (PluginHost, Vec<nightcrier_plugin_host::LoadError>),
    dir: &std::path::Path,
) -> anyhow::Result<PluginHost> {
    for error in &refused {
        tracing::error!(error = %error, "plugin refused");
    }
    for plugin in host.plugins() {
        tracing::info!(plugin = %plugin.label(), world = ?plugin.world, "plugin loaded");
    }
    tracing::info!(dir = %dir.display(), loaded = host.plugins().len(), refused = refused.len(), "plugins ready");
    Ok(host)
}

fn severity(text: &str) -> types::Severity {
    match text.to_ascii_lowercase().as_str() {
        "critical" | "error" | "fatal" | "emergency" | "alert" => types::Severity::Critical,
        "warning" | "warn" => types::Severity::Warning,
        _ => types::Severity::Info,
    }
}

fn severity_text(severity: types::Severity) -> &'static str {
    match severity {
        types::Severity::Info => "info",
        types::Severity::Warning => "warning",
        types::Severity::Critical => "critical",
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

/// Pre-triage through the loaded pre-triage plugins, in their configured order; without a
/// plugin host, every incident proceeds unchanged.
#[derive(Clone)]
pub struct PluginPreTriage {
    host: Option<PluginHost>,
    store: Store,
}

impl PluginPreTriage {
    /// A pre-triage stage over `host`.
    pub fn new(host: Option<PluginHost>, store: Store) -> Self {
        Self { host, store }
    }

    async fn record(
        &self,
        incident_id: Uuid,
        plugin: &str,
        outcome: &str,
        took: Duration,
        error: Option<String>,
    ) {
        let version = self
            .host
            .as_ref()
            .and_then(|host| host.plugin(plugin))
            .map(|p| p.version);
        let run = NewPluginRun {
            incident_id: Some(incident_id),
            stage: "pre_triage",
            plugin: plugin.to_owned(),
            plugin_version: version,
            outcome: outcome.to_owned(),
            duration: took,
            error,
        };
        if let Err(error) = self.store.insert_plugin_run(&run, Utc::now()).await {
            tracing::error!(incident_id = %incident_id, error = %error, "recording a plugin run failed");
        }
    }
}

impl PreTriage for PluginPreTriage {
    async fn decide(&self, incident: &Incident) -> Decision {
        let Some(host) = &self.host else {
            return Decision::Proceed(QueuePatch::default());
        };
        let chain = host.chain(World::PreTriage);
        if chain.is_empty() {
            return Decision::Proceed(QueuePatch::default());
        }
        let event = match self
            .store
            .fault_event(&incident.fault_event_id.to_string())
            .await
        {
            Ok(Some(event)) => event,
            Ok(None) => {
                return Decision::Skip(format!(
                    "fault event {} is missing",
                    incident.fault_event_id
                ));
            }
            Err(error) => {
                tracing::error!(incident_id = %incident.id, error = %error, "cannot read the fault event");
                return Decision::Delay(Duration::from_secs(30));
            }
        };
        let started = tokio::time::Instant::now();
        let verdict = host.run_pre_triage(&wit_incident(incident, &event)).await;
        let took = started.elapsed();
        let chain_name = chain.join(",");
        match verdict {
            Ok(PreTriageVerdict::Proceed {
                incident: patched,
                context_files,
                failures,
            }) => {
                for (plugin, error) in &failures {
                    self.record(
                        incident.id,
                        plugin,
                        "failed-open",
                        took,
                        Some(error.clone()),
                    )
                    .await;
                }
                self.record(incident.id, &chain_name, "proceed", took, None)
                    .await;
                let mut annotations: BTreeMap<String, String> =
                    patched.annotations.into_iter().collect();
                for (path, content) in context_files {
                    annotations.insert(
                        format!("{CONTEXT_FILE_ANNOTATION}{path}"),
                        String::from_utf8_lossy(&content).into_owned(),
                    );
                }
                Decision::Proceed(QueuePatch {
                    labels: patched.labels.into_iter().collect(),
                    annotations,
                    priority: Some(i32::from(patched.priority)),
                    agent_profile: patched.agent_profile,
                })
            }
            Ok(PreTriageVerdict::Skip { plugin, reason }) => {
                self.record(incident.id, &plugin, "skip", took, None).await;
                Decision::Skip(format!("{plugin}: {reason}"))
            }
            Ok(PreTriageVerdict::Delay { plugin, delay }) => {
                self.record(incident.id, &plugin, "delay", took, None).await;
                Decision::Delay(delay)
            }
            Err(error) => {
                // fail-closed: a retryable failure waits, any other keeps the incident out of
                // the queue with the reason, for an operator to retry
                self.record(
                    incident.id,
                    &chain_name,
                    "error",
                    took,
                    Some(error.to_string()),
                )
                .await;
                if error.is_retryable() {
                    Decision::Delay(Duration::from_secs(60))
                } else {
                    Decision::Skip(format!("pre-triage failed (fail-closed): {error}"))
                }
            }
        }
    }
}

/// Runs the post-triage chain on an agent's result; returns the (possibly redacted) report and
/// the structured fields, or `None` when no post-triage plugin is loaded.
pub async fn post_triage(
    host: &PluginHost,
    store: &Store,
    incident: &Incident,
    event: &fault_events::Model,
    result: types::AgentResult,
) -> Option<PostTriageVerdict> {
    let chain = host.chain(World::PostTriage);
    if chain.is_empty() {
        return None;
    }
    let started = tokio::time::Instant::now();
    let verdict = host
        .run_post_triage(&wit_incident(incident, event), &result)
        .await;
    let took = started.elapsed();
    let (outcome, error, verdict) = match verdict {
        Ok(verdict) => {
            // each plugin that failed under fail-open gets its own row, as in pre-triage
            for (plugin, error, _) in &verdict.failures {
                tracing::warn!(incident_id = %incident.id, plugin = %plugin, error = %error, "post-triage plugin failed (fail-open)");
                let run = NewPluginRun {
                    incident_id: Some(incident.id),
                    stage: "post_triage",
                    plugin: plugin.clone(),
                    plugin_version: host.plugin(plugin).map(|summary| summary.version),
                    outcome: "failed-open".to_owned(),
                    duration: took,
                    error: Some(error.clone()),
                };
                if let Err(error) = store.insert_plugin_run(&run, Utc::now()).await {
                    tracing::error!(incident_id = %incident.id, error = %error, "recording a plugin run failed");
                }
            }
            ("done", None, Some(verdict))
        }
        Err(error) => {
            tracing::error!(incident_id = %incident.id, error = %error, "post-triage failed");
            ("error", Some(error.to_string()), None)
        }
    };
    let run = NewPluginRun {
        incident_id: Some(incident.id),
        stage: "post_triage",
        plugin: chain.join(","),
        plugin_version: None,
        outcome: outcome.to_owned(),
        duration: took,
        error,
    };
    if let Err(error) = store.insert_plugin_run(&run, Utc::now()).await {
        tracing::error!(incident_id = %incident.id, error = %error, "recording a plugin run failed");
    }
    verdict
}

/// Decodes `body` through the source plugin `id` into events ready to store; the error is the
/// reason for the dead letter table.
pub async fn decode(
    host: &PluginHost,
    id: &str,
    cluster: Option<&str>,
    body: &[u8],
) -> Result<Vec<NewFaultEvent>, String> {
    let summary = host
        .plugin(id)
        .filter(|p| p.world == World::Source)
        .ok_or_else(|| format!("no source plugin `{id}` is loaded"))?;
    let (kind, logger) = match &summary.feed {
        Some(types::Feed::Mcp(feed)) => (FeedKind::Mcp, Some(feed.logger.clone())),
        Some(types::Feed::Poll(_)) => (FeedKind::Poll, None),
        _ => (FeedKind::Webhook, None),
    };
    let received_at = Utc::now();
    let envelope = Envelope {
        kind,
        cluster: cluster.map(str::to_owned),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_vec(),
        logger,
        received_at_ms: u64::try_from(received_at.timestamp_millis()).unwrap_or_default(),
    };
    let events = host
        .decode(id, &envelope)
        .await
        .map_err(|error| error.to_string())?;
    let payload = serde_json::from_slice(body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()));
    events
        .into_iter()
        .map(|event| {
            let cluster = cluster
                .map(str::to_owned)
                .or(Some(event.cluster.clone()))
                .filter(|c| !c.trim().is_empty())
                .ok_or_else(|| {
                    format!("{id} decoded an event without a cluster (pass --cluster)")
                })?;
            if event.fault_type.trim().is_empty() {
                return Err(format!("{id} decoded an event without a fault type"));
            }
            let resource = (!event.resource.kind.is_empty() || !event.resource.name.is_empty())
                .then(|| ResourceRef {
                    api_version: event.resource.api_version.clone(),
                    kind: event.resource.kind.clone(),
                    name: event.resource.name.clone(),
                    namespace: event.resource.namespace.clone(),
                    uid: event.resource.uid.clone(),
                });
            Ok(NewFaultEvent {
                source: id.to_owned(),
                cluster,
                fault_id: Some(event.fault_id.clone()).filter(|f| !f.is_empty()),
                subscription_id: event
                    .labels
                    .iter()
                    .find(|(k, _)| k == "mcp.subscription-id")
                    .map(|(_, v)| v.clone()),
                resource,
                fault_type: event.fault_type.clone(),
                severity: severity_text(event.severity).to_owned(),
                context: event.context.clone(),
                timestamp: Some(event.timestamp.clone()).filter(|t| !t.is_empty()),
                payload: payload.clone(),
                received_at,
                labels: event.labels.iter().cloned().collect(),
            })
        })
        .collect()
}
