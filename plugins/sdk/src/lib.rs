//! The nightcrier plugin SDK: generated bindings for the three worlds, idiomatic helpers and export macros.
//!
//! A plugin is a type implementing one of [`Source`], [`PreTriage`] or [`PostTriage`], exported with
//! [`export_source!`], [`export_pre_triage!`] or [`export_post_triage!`]. A post-triage plugin
//! that also implements [`AlertHandler`] and is exported with [`export_post_triage_with_alerts!`]
//! receives operational alerts (circuit breaker, feeds) as well. Host functions are wrapped in
//! [`log`], [`config`], [`now_ms`], [`kv`] and (post-triage only) [`http`].

// The runtime and bindings paths below are absolute so that the export macros work from plugin crates.
extern crate self as nightcrier_plugin_sdk;

#[doc(hidden)]
pub mod generated {
    //! Bindings generated from `wit/`; the worlds share `types` and `host`.
    #![allow(missing_docs, unsafe_code, clippy::all)]

    pub mod source {
        wit_bindgen::generate!({
            world: "source",
            path: "../../wit",
            pub_export_macro: true,
            export_macro_name: "__export_source_world",
            default_bindings_module: "::nightcrier_plugin_sdk::generated::source",
            runtime_path: "::nightcrier_plugin_sdk::__rt",
        });
    }
    pub mod pre_triage {
        wit_bindgen::generate!({
            world: "pre-triage",
            path: "../../wit",
            pub_export_macro: true,
            export_macro_name: "__export_pre_triage_world",
            default_bindings_module: "::nightcrier_plugin_sdk::generated::pre_triage",
            runtime_path: "::nightcrier_plugin_sdk::__rt",
            with: {
                "nightcrier:plugin/types@0.1.2": crate::generated::source::nightcrier::plugin0_1_2::types,
                "nightcrier:plugin/host@0.1.2": crate::generated::source::nightcrier::plugin0_1_2::host,
            },
        });
    }
    pub mod post_triage {
        wit_bindgen::generate!({
            world: "post-triage",
            path: "../../wit",
            pub_export_macro: true,
            export_macro_name: "__export_post_triage_world",
            default_bindings_module: "::nightcrier_plugin_sdk::generated::post_triage",
            runtime_path: "::nightcrier_plugin_sdk::__rt",
            with: {
                "nightcrier:plugin/types@0.1.2": crate::generated::source::nightcrier::plugin0_1_2::types,
                "nightcrier:plugin/host@0.1.2": crate::generated::source::nightcrier::plugin0_1_2::host,
            },
            generate_all,
        });
    }
    pub mod alerts {
        wit_bindgen::generate!({
            world: "alerts",
            path: "../../wit",
            pub_export_macro: true,
            export_macro_name: "__export_alerts_world",
            default_bindings_module: "::nightcrier_plugin_sdk::generated::alerts",
            runtime_path: "::nightcrier_plugin_sdk::__rt",
            with: {
                "nightcrier:plugin/types@0.1.2": crate::generated::source::nightcrier::plugin0_1_2::types,
                "nightcrier:plugin/host@0.1.2": crate::generated::source::nightcrier::plugin0_1_2::host,
            },
        });
    }
}

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

pub use generated::alerts::exports::nightcrier::plugin0_1_2::alert_handler::{
    Alert, Guest as AlertHandler,
};
pub use generated::post_triage::exports::nightcrier::plugin0_1_2::post_triage_processor::{
    Guest as PostTriage, Outcome,
};
pub use generated::pre_triage::exports::nightcrier::plugin0_1_2::pre_triage_processor::{
    ContextFile, Decision, Guest as PreTriage, Patch,
};
pub use generated::source::exports::nightcrier::plugin0_1_2::event_source::{
    DecodeError, Envelope, Feed, FeedKind, Guest as Source, McpFeed, PollFeed, SourceInfo,
    WebhookFeed,
};
pub use generated::source::nightcrier::plugin0_1_2::host::{KvError, Level};
pub use generated::source::nightcrier::plugin0_1_2::types::{
    AgentResult, Capabilities, FaultEvent, Incident, Pair, PluginError, PluginInfo, ResourceRef,
    Severity,
};

use generated::source::nightcrier::plugin0_1_2::host as raw_host;

impl PluginInfo {
    /// Describe a plugin that requests no capabilities.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PluginInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            capabilities: Capabilities::default(),
        }
    }

    /// Request outbound HTTP to `scheme://host:port` patterns.
    pub fn with_outbound_hosts(mut self, hosts: &[&str]) -> Self {
        self.capabilities.outbound_hosts = hosts.iter().map(|host| (*host).to_owned()).collect();
        self
    }

    /// Request environment variables by name.
    pub fn with_env_vars(mut self, names: &[&str]) -> Self {
        self.capabilities.env_vars = names.iter().map(|name| (*name).to_owned()).collect();
        self
    }

    /// Request read-only directories.
    pub fn with_read_only_dirs(mut self, dirs: &[&str]) -> Self {
        self.capabilities.read_only_dirs = dirs.iter().map(|dir| (*dir).to_owned()).collect();
        self
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            outbound_hosts: Vec::new(),
            env_vars: Vec::new(),
            read_only_dirs: Vec::new(),
        }
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Patch {
    fn default() -> Self {
        Patch {
            labels: Vec::new(),
            annotations: Vec::new(),
            priority: None,
            agent_profile: None,
            context_files: Vec::new(),
        }
    }
}

impl PluginError {
    /// An error that calling again will not fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        PluginError {
            message: message.into(),
            retryable: false,
        }
    }

    /// An error that may go away when the host retries later.
    pub fn retryable(message: impl Into<String>) -> Self {
        PluginError {
            message: message.into(),
            retryable: true,
        }
    }
}

impl Severity {
    /// Parse the lower-case name used by kubernetes-mcp-server and Alertmanager labels.
    pub fn parse(text: &str) -> Option<Severity> {
        match text.to_ascii_lowercase().as_str() {
            "info" | "none" => Some(Severity::Info),
            "warning" | "warn" => Some(Severity::Warning),
            "critical" | "error" | "page" => Some(Severity::Critical),
            _ => None,
        }
    }

    /// The lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl Alert {
    /// The value of field `key`, if the alert carries it.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

/// Structured logging through the host.
pub mod log {
    use super::{Level, raw_host};

    /// Log with fields.
    pub fn with_fields(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        raw_host::log(level, message, &fields);
    }

    /// Log at debug level.
    pub fn debug(message: &str) {
        raw_host::log(Level::Debug, message, &[]);
    }

    /// Log at info level.
    pub fn info(message: &str) {
        raw_host::log(Level::Info, message, &[]);
    }

    /// Log at warn level.
    pub fn warn(message: &str) {
        raw_host::log(Level::Warn, message, &[]);
    }
}

/// The operator's configuration for this plugin, deserialised into `T`.
///
/// A plugin with no configuration gets an empty object, so `T` with `#[serde(default)]` works.
pub fn config<T: serde::de::DeserializeOwned>() -> Result<T, String> {
    let text = raw_host::get_config();
    serde_json::from_str(&text).map_err(|error| format!("invalid plugin config: {error}"))
}

/// Wall-clock time, milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    raw_host::now_ms()
}

/// This plugin's own key-value namespace, kept by the host (in nightcrier's database).
pub mod kv {
    use super::{KvError, raw_host};

    /// Read a key.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
        raw_host::kv_get(key)
    }

    /// Write a key, optionally expiring after `ttl_seconds`.
    pub fn set(key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        raw_host::kv_set(key, value, ttl_seconds)
    }

    /// Remove a key.
    pub fn delete(key: &str) -> Result<(), KvError> {
        raw_host::kv_delete(key)
    }
}

/// Outbound HTTP over `wasi:http` (post-triage plugins only; the operator must grant the host).
pub mod http {
    use crate::generated::post_triage::wasi::http::outgoing_handler;
    use crate::generated::post_triage::wasi::http::types::{
        Fields, Method, OutgoingBody, OutgoingRequest, Scheme,
    };
    use crate::generated::post_triage::wasi::io::streams::StreamError;

    /// A completed response.
    #[derive(Debug)]
    pub struct Response {
        /// HTTP status code.
        pub status: u16,
        /// Response body.
        pub body: Vec<u8>,
    }

    /// POST `body` to `url` (`http://` or `https://`), with `headers`.
    pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Response, String> {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else {
            return Err(format!("unsupported url scheme in {url}"));
        };
        let (authority, path) = match rest.find('/') {
            Some(index) => (&rest[..index], &rest[index..]),
            None => (rest, "/"),
        };
        let fields = Fields::new();
        // A known length avoids chunked encoding, which some webhook receivers refuse.
        fields
            .append("content-length", &body.len().to_string().into_bytes())
            .map_err(|error| format!("invalid content-length: {error:?}"))?;
        for (name, value) in headers {
            fields
                .append(name, value.as_bytes())
                .map_err(|error| format!("invalid header {name}: {error:?}"))?;
        }
        let request = OutgoingRequest::new(fields);
        request
            .set_method(&Method::Post)
            .map_err(|()| "invalid method".to_owned())?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| "invalid scheme".to_owned())?;
        request
            .set_authority(Some(authority))
            .map_err(|()| format!("invalid authority {authority}"))?;
        request
            .set_path_with_query(Some(path))
            .map_err(|()| format!("invalid path {path}"))?;
        let outgoing_body = request
            .body()
            .map_err(|()| "request body already taken".to_owned())?;
        {
            let stream = outgoing_body
                .write()
                .map_err(|()| "request body stream already taken".to_owned())?;
            for chunk in body.chunks(4096) {
                stream
                    .blocking_write_and_flush(chunk)
                    .map_err(|error| format!("writing request body failed: {error:?}"))?;
            }
        }
        let future = outgoing_handler::handle(request, None)
            .map_err(|error| format!("request refused: {error:?}"))?;
        OutgoingBody::finish(outgoing_body, None)
            .map_err(|error| format!("finishing request body failed: {error:?}"))?;
        future.subscribe().block();
        let response = future
            .get()
            .ok_or_else(|| "response not ready".to_owned())?
            .map_err(|()| "response already taken".to_owned())?
            .map_err(|error| format!("request failed: {error:?}"))?;
        let status = response.status();
        let incoming = response
            .consume()
            .map_err(|()| "response body already taken".to_owned())?;
        let stream = incoming
            .stream()
            .map_err(|()| "response stream already taken".to_owned())?;
        let mut body = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(error) => return Err(format!("reading response failed: {error:?}")),
            }
        }
        Ok(Response { status, body })
    }
}

/// Export a type implementing [`Source`] as this component's `source` world.
#[macro_export]
macro_rules! export_source {
    ($plugin:ident) => {
        // Exports only exist in the component; native builds (unit tests) just keep the type alive.
        #[cfg(target_arch = "wasm32")]
        $crate::generated::source::__export_source_world!($plugin with_types_in $crate::generated::source);
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() -> $plugin = || $plugin;
    };
}

/// Export a type implementing [`PreTriage`] as this component's `pre-triage` world.
#[macro_export]
macro_rules! export_pre_triage {
    ($plugin:ident) => {
        // Exports only exist in the component; native builds (unit tests) just keep the type alive.
        #[cfg(target_arch = "wasm32")]
        $crate::generated::pre_triage::__export_pre_triage_world!($plugin with_types_in $crate::generated::pre_triage);
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() -> $plugin = || $plugin;
    };
}

/// Export a type implementing [`PostTriage`] and [`AlertHandler`] as this component's
/// `post-triage-alerts` world (contract 0.1.2): a post-triage plugin that also receives
/// operational alerts (`on_alert`). Hosts older than 0.1.2 do not know the `alert-handler`
/// export and still call the post-triage half.
#[macro_export]
macro_rules! export_post_triage_with_alerts {
    ($plugin:ident) => {
        // Exports only exist in the component; native builds (unit tests) just keep the type alive.
        #[cfg(target_arch = "wasm32")]
        $crate::generated::post_triage::__export_post_triage_world!($plugin with_types_in $crate::generated::post_triage);
        #[cfg(target_arch = "wasm32")]
        $crate::generated::alerts::__export_alerts_world!($plugin with_types_in $crate::generated::alerts);
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() -> $plugin = || $plugin;
    };
}

/// Export a type implementing [`PostTriage`] as this component's `post-triage` world.
#[macro_export]
macro_rules! export_post_triage {
    ($plugin:ident) => {
        // Exports only exist in the component; native builds (unit tests) just keep the type alive.
        #[cfg(target_arch = "wasm32")]
        $crate::generated::post_triage::__export_post_triage_world!($plugin with_types_in $crate::generated::post_triage);
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() -> $plugin = || $plugin;
    };
}
