//! Library side of `nightcrier plugins run`: one call of a plugin's entry point on a JSON input, through
//! the same loading, sandbox, limits and grants as `serve`, reporting the result, log lines, key-value
//! writes and time taken.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::config::PluginsConfig;
use crate::detect::World;
use crate::kv::{KvFuture, KvStore, KvUsage, KvWrite, MemoryKvStore};
use crate::runtime::PluginHost;
use crate::types::{AgentResult, Envelope, FeedKind, Incident};

/// Arguments of `plugins run FILE --input FILE [--plugin-config JSON] [--kv FILE]`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The component.
    pub path: PathBuf,
    /// The input as JSON text: an envelope (source), an incident (pre-triage) or
    /// `{"incident": …, "agent_result": …}` (post-triage).
    pub input: String,
    /// The plugin's own configuration (what `get-config` returns) as a JSON object; replaces
    /// `[plugins.plugin.<id>.config]` of the operator's configuration when given.
    pub plugin_config: Option<String>,
    /// The plugin's key-value store before the call, as a JSON object of key to string value.
    pub kv: Option<String>,
    /// Grants, limits and settings, as `serve` reads them.
    pub config: PluginsConfig,
}

/// One `host.log` line of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoggedLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message as the plugin gave it (cut to the host's length limit).
    pub message: String,
    /// Its fields.
    pub fields: Vec<(String, String)>,
}

/// One key-value write the call made (applied: the call succeeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum KvChange {
    /// A key set, with the value as text (lossy for non-UTF-8) and its time to live.
    Set {
        /// The key.
        key: String,
        /// The value, as UTF-8 text (invalid bytes replaced).
        value: String,
        /// Seconds to live, if any.
        ttl_seconds: Option<u64>,
    },
    /// A key removed.
    Delete {
        /// The key.
        key: String,
    },
}

/// What one `plugins run` call did. `error` is set (and the exit status non-zero) on a trap, a
/// limit, a refused load or an error the plugin returned.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// `id@version` (the file name until `describe` answered).
    pub plugin: String,
    /// The plugin's world, once loaded.
    pub world: Option<World>,
    /// What the entry point returned, as JSON, when it succeeded.
    pub result: Option<serde_json::Value>,
    /// Why the call failed.
    pub error: Option<String>,
    /// The plugin's log lines (through `host.log`), in order.
    pub logs: Vec<LoggedLine>,
    /// The key-value writes applied (none when the call failed: they are applied only on success).
    pub kv_writes: Vec<KvChange>,
    /// Wall-clock time of the call (instantiation included), milliseconds.
    pub duration_ms: f64,
}

impl RunReport {
    /// Whether the call succeeded.
    pub fn succeeded(&self) -> bool {
        self.error.is_none()
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        // every field is plain data: encoding cannot fail
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|error| format!("{{\"error\":\"{error}\"}}"))
    }
}

/// Collects a call's `host.log` lines for `plugins run`.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogTap(Arc<Mutex<Vec<LoggedLine>>>);

impl LogTap {
    pub(crate) fn push(&self, line: LoggedLine) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(line);
    }

    fn take(&self) -> Vec<LoggedLine> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// An in-memory store that remembers what was applied.
#[derive(Default)]
struct RecordingKv {
    store: MemoryKvStore,
    applied: Mutex<Vec<KvWrite>>,
}

impl KvStore for RecordingKv {
    fn get<'a>(&'a self, plugin: &'a str, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        self.store.get(plugin, key)
    }

    fn usage<'a>(&'a self, plugin: &'a str) -> KvFuture<'a, KvUsage> {
        self.store.usage(plugin)
    }

    fn apply<'a>(&'a self, plugin: &'a str, writes: Vec<KvWrite>) -> KvFuture<'a, ()> {
        self.applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(writes.iter().cloned());
        self.store.apply(plugin, writes)
    }
}

/// `{"incident": …, "agent_result": …}`, the post-triage input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PostTriageInput {
    incident: Incident,
    agent_result: AgentResult,
}

/// An envelope as authors write it: `kind` in lower case, `body` as text or as any JSON value
/// (sent as its JSON text).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvelopeInput {
    kind: KindInput,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
    body: serde_json::Value,
    #[serde(default)]
    logger: Option<String>,
    #[serde(default)]
    received_at_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum KindInput {
    Mcp,
    Webhook,
    Poll,
}

impl EnvelopeInput {
    fn into_envelope(self) -> Envelope {
        let body = match self.body {
            serde_json::Value::String(text) => text.into_bytes(),
            other => other.to_string().into_bytes(),
        };
        let received_at_ms = self.received_at_ms.unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
        });
        Envelope {
            kind: match self.kind {
                KindInput::Mcp => FeedKind::Mcp,
                KindInput::Webhook => FeedKind::Webhook,
                KindInput::Poll => FeedKind::Poll,
            },
            cluster: self.cluster,
            headers: self.headers,
            body,
            logger: self.logger,
            received_at_ms,
        }
    }
}

/// The input parsed for the plugin's world.
enum Input {
    Source(Envelope),
    PreTriage(Box<Incident>),
    PostTriage(Box<PostTriageInput>),
}

fn parse_input(world: World, text: &str) -> Result<Input, String> {
    let what = match world {
        World::Source => "an envelope",
        World::PreTriage => "an incident",
        World::PostTriage => "{\"incident\": …, \"agent_result\": …}",
    };
    let failed = |error: serde_json::Error| {
        format!(
            "the input is not {what} for a {world} plugin: {error} (see examples/plugin-inputs/)"
        )
    };
    Ok(match world {
        World::Source => Input::Source(
            serde_json::from_str::<EnvelopeInput>(text)
                .map_err(failed)?
                .into_envelope(),
        ),
        World::PreTriage => Input::PreTriage(serde_json::from_str(text).map_err(failed)?),
        World::PostTriage => Input::PostTriage(serde_json::from_str(text).map_err(failed)?),
    })
}

/// The initial key-value contents: a JSON object of key to string value.
fn parse_kv(text: &str) -> Result<Vec<KvWrite>, String> {
    let entries: std::collections::BTreeMap<String, String> = serde_json::from_str(text)
        .map_err(|error| format!("the key-value file is not a JSON object of strings: {error}"))?;
    Ok(entries
        .into_iter()
        .map(|(key, value)| KvWrite::Set {
            key,
            value: value.into_bytes(),
            ttl: None,
        })
        .collect())
}

fn plugin_config_table(text: &str) -> Result<toml::Table, String> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|error| format!("the plugin config is not JSON: {error}"))?;
    if !value.is_object() {
        return Err("the plugin config must be a JSON object".to_owned());
    }
    serde_json::from_value(value).map_err(|error| {
        format!("the plugin config cannot be a plugin's configuration (null values are not allowed): {error}")
    })
}

fn change(write: KvWrite) -> KvChange {
    match write {
        KvWrite::Set { key, value, ttl } => KvChange::Set {
            key,
            value: String::from_utf8_lossy(&value).into_owned(),
            ttl_seconds: ttl.map(|ttl| ttl.as_secs()),
        },
        KvWrite::Delete { key } => KvChange::Delete { key },
    }
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, String> {
    serde_json::to_value(value)
        .map_err(|error| format!("the result cannot be shown as JSON: {error}"))
}

/// `nightcrier plugins run`: load `options.path` as `serve` would (its grants and limits from
/// `options.config`) and call its entry point once on the input. The report's `error` is set on
/// any failure, which the CLI turns into a non-zero exit.
pub async fn run_plugin(options: &RunOptions) -> RunReport {
    let id = options
        .path
        .file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut report = RunReport {
        plugin: id.clone(),
        world: None,
        result: None,
        error: None,
        logs: Vec::new(),
        kv_writes: Vec::new(),
        duration_ms: 0.0,
    };
    if let Err(error) = run_into(options, &id, &mut report).await {
        report.error = Some(error);
    }
    report
}

async fn run_into(options: &RunOptions, id: &str, report: &mut RunReport) -> Result<(), String> {
    if options
        .path
        .extension()
        .is_none_or(|extension| extension != "wasm")
    {
        return Err(format!(
            "{}: plugin files must end in .wasm",
            options.path.display()
        ));
    }
    let mut config = options.config.clone();
    if let Some(text) = &options.plugin_config {
        config.plugin.entry(id.to_owned()).or_default().config = plugin_config_table(text)?;
    }
    let kv = Arc::new(RecordingKv::default());
    if let Some(text) = &options.kv {
        kv.store
            .apply(id, parse_kv(text)?)
            .await
            .map_err(|error| error.to_string())?;
    }
    let tap = LogTap::default();
    let (host, refused) = PluginHost::load_files_tapped(
        config,
        kv.clone(),
        std::slice::from_ref(&options.path),
        Some(tap.clone()),
    )
    .await
    .map_err(|error| format!("{error:#}"))?;
    if !refused.is_empty() {
        return Err(refused
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "));
    }
    let summary = host.plugin(id).ok_or_else(|| {
        format!(
            "{} was not loaded (is it disabled in the configuration?)",
            options.path.display()
        )
    })?;
    report.plugin = summary.label();
    report.world = Some(summary.world);
    let input = parse_input(summary.world, &options.input)?;
    // what `describe` logged at load is not part of the call
    tap.take();
    let started = tokio::time::Instant::now();
    let result = match &input {
        Input::Source(envelope) => host
            .decode(id, envelope)
            .await
            .map_err(|error| error.to_string())
            .and_then(|events| to_json(&events)),
        Input::PreTriage(incident) => host
            .pre_triage(id, incident)
            .await
            .map_err(|error| error.to_string())
            .and_then(|decision| to_json(&decision)),
        Input::PostTriage(input) => host
            .post_triage(id, &input.incident, &input.agent_result)
            .await
            .map_err(|error| error.to_string())
            .and_then(|outcome| to_json(&outcome)),
    };
    report.duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    report.logs = tap.take();
    report.kv_writes = std::mem::take(
        &mut *kv
            .applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
    .into_iter()
    .map(change)
    .collect();
    report.result = Some(result?);
    Ok(())
}

/// The folder `plugins run` and `plugins check` use when no configuration names one: the file's own.
pub fn default_config_for(path: &Path) -> PluginsConfig {
    PluginsConfig::new(path.parent().map(PathBuf::from).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_input_takes_text_or_json_bodies() {
        let Input::Source(envelope) = parse_input(
            World::Source,
            r#"{"kind":"webhook","body":{"a":1},"headers":[["x","y"]],"received_at_ms":5}"#,
        )
        .unwrap() else {
            panic!("expected an envelope")
        };
        assert_eq!(envelope.body, br#"{"a":1}"#);
        assert_eq!(envelope.kind, FeedKind::Webhook);
        assert_eq!(envelope.received_at_ms, 5);
        let Input::Source(envelope) = parse_input(
            World::Source,
            r#"{"kind":"mcp","body":"text","logger":"l"}"#,
        )
        .unwrap() else {
            panic!("expected an envelope")
        };
        assert_eq!(envelope.body, b"text");
        let error = parse_input(World::PreTriage, "{}").err().unwrap();
        assert!(
            error.contains("not an incident for a pre-triage plugin"),
            "{error}"
        );
    }

    #[test]
    fn plugin_config_and_kv_files_are_checked() {
        assert_eq!(
            plugin_config_table(r#"{"hours":[1,2],"name":"x"}"#).unwrap()["name"].as_str(),
            Some("x")
        );
        assert!(plugin_config_table("[1]").is_err());
        assert!(plugin_config_table(r#"{"a":null}"#).is_err());
        assert_eq!(parse_kv(r#"{"k":"v"}"#).unwrap().len(), 1);
        assert!(parse_kv(r#"{"k":1}"#).is_err());
    }
}
