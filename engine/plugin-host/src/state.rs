//! Per-store state: the WASI context built from the operator's grants, the `host` interface, limits and the HTTP allow-list.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Result as WasmResult};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::bindings::source::nightcrier::plugin0_1_2::{host, types};
use crate::config::{Limits, PluginConfig};
use crate::kv::{
    KvQuota, KvStore, KvStoreError, MAX_KEY_BYTES, MAX_VALUE_BYTES, PendingWrites, Refusal,
};
use crate::run::{LogTap, LoggedLine};
use crate::stderr::StderrTail;
use crate::text::escape_bounded;

/// Memory and table limits of one store; remembers whether a limit was hit so the error can say so.
pub(crate) struct CallLimiter {
    pub(crate) memory_bytes: usize,
    pub(crate) memory_denied: bool,
}

const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        if desired > self.memory_bytes {
            self.memory_denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> WasmResult<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        1000
    }

    fn tables(&self) -> usize {
        1000
    }

    fn memories(&self) -> usize {
        100
    }
}

/// A `scheme://host:port` grant. `*` in the host matches one or more labels (`*.slack.com`) or any host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    pub(crate) fn parse(text: &str) -> Result<HostPattern, String> {
        let (scheme, rest) = text.split_once("://").ok_or_else(|| {
            format!("outbound host `{text}` is not of the form scheme://host:port")
        })?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!("outbound host `{text}` must use http or https"));
        }
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, "*")) => (host, None),
            Some((host, port)) => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("outbound host `{text}` has an invalid port"))?;
                (host, Some(port))
            }
            None => (rest, Some(if scheme == "https" { 443 } else { 80 })),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("outbound host `{text}` has an invalid host"));
        }
        Ok(HostPattern {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    fn host_matches(pattern: &str, host: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        match pattern.strip_prefix("*.") {
            Some(suffix) => {
                host.len() > suffix.len() + 1
                    && host.ends_with(suffix)
                    && host[..host.len() - suffix.len()].ends_with('.')
            }
            None => pattern == host,
        }
    }

    pub(crate) fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.scheme == scheme
            && Self::host_matches(&self.host, &host.to_ascii_lowercase())
            && self.port.is_none_or(|allowed| allowed == port)
    }

    /// Whether every destination `other` allows is also allowed by `self`.
    pub(crate) fn covers(&self, other: &HostPattern) -> bool {
        self.scheme == other.scheme
            && (self.host == other.host
                || (!other.host.contains('*') && Self::host_matches(&self.host, &other.host))
                || self.host == "*")
            && match (self.port, other.port) {
                (None, _) => true,
                (Some(mine), Some(theirs)) => mine == theirs,
                (Some(_), None) => false,
            }
    }
}

/// The outbound-HTTP allow-list, enforced in `send_request` before any connection is made.
pub(crate) struct OutboundPolicy {
    allowed: Arc<[HostPattern]>,
    plugin: Arc<str>,
}

impl WasiHttpHooks for OutboundPolicy {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        let uri = request.uri();
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "http" { 80 } else { 443 });
        let allowed = self
            .allowed
            .iter()
            .any(|pattern| pattern.matches(&scheme, &host, port));
        if !allowed {
            tracing::warn!(plugin = %self.plugin, destination = %format!("{scheme}://{host}:{port}"), "outbound request denied");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let forward = wasmtime_wasi_http::default_hooks().send_request(request, options, fut);
        Box::new(async move { Box::into_pin(forward).await })
    }
}

/// Host log lines a plugin may emit per call; the rest are dropped and counted.
pub const LOG_LINES_PER_CALL: u32 = 100;
/// Characters kept of one log message; of one field key; of one field value.
const LOG_MESSAGE_CHARS: usize = 4096;
const LOG_KEY_CHARS: usize = 64;
const LOG_VALUE_CHARS: usize = 1024;
/// Fields kept per log line.
const LOG_FIELDS: usize = 32;
/// Key-value operations a plugin may make per call.
pub const KV_OPS_PER_CALL: u32 = 256;
/// Value bytes a plugin may write to its key-value store per call.
pub const KV_WRITE_BYTES_PER_CALL: usize = 1 << 20;
/// Host resources (streams, pollables, HTTP fields and requests…) one instance may hold at once.
pub const MAX_RESOURCES: usize = 10_000;

/// What one call has spent of its per-call budgets (reset before every call).
#[derive(Debug, Default)]
pub(crate) struct CallBudget {
    log_lines: u32,
    /// Log lines dropped over [`LOG_LINES_PER_CALL`]; reported once after the call.
    pub(crate) logs_dropped: u32,
    kv_ops: u32,
    kv_written: usize,
}

/// Everything a store holds for one plugin instance.
pub(crate) struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundPolicy,
    table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    /// When the current call is interrupted (checked on every epoch tick).
    pub(crate) deadline: std::time::Instant,
    kv: Arc<dyn KvStore>,
    /// Plugin id: the key-value scope.
    id: Arc<str>,
    /// `id@version`, for logs.
    label: Arc<str>,
    config_json: Arc<str>,
    pub(crate) budget: CallBudget,
    /// The last of what the guest wrote to stderr, for trap reports.
    pub(crate) stderr: StderrTail,
    /// Key-value writes of the call in progress, applied only if it succeeds.
    pub(crate) pending: PendingWrites,
    kv_quota: KvQuota,
    log_tap: Option<LogTap>,
}

/// What a store needs from the loaded plugin; shared by all its stores.
#[derive(Clone)]
pub(crate) struct StateSeed {
    pub(crate) id: Arc<str>,
    pub(crate) label: Arc<str>,
    pub(crate) config_json: Arc<str>,
    pub(crate) allowed_hosts: Arc<[HostPattern]>,
    pub(crate) env: Arc<[(String, String)]>,
    pub(crate) read_only_dirs: Arc<[std::path::PathBuf]>,
    pub(crate) memory_bytes: usize,
    pub(crate) kv_quota: KvQuota,
    pub(crate) kv: Arc<dyn KvStore>,
    pub(crate) log_tap: Option<LogTap>,
}

impl StateSeed {
    pub(crate) fn new(
        id: &str,
        config: &PluginConfig,
        limits: &Limits,
        kv: Arc<dyn KvStore>,
        log_tap: Option<LogTap>,
    ) -> Result<StateSeed, String> {
        let config_json = serde_json::to_string(&config.config)
            .map_err(|error| format!("plugin config cannot be encoded: {error}"))?;
        let allowed_hosts = config
            .allowed_hosts
            .iter()
            .map(|pattern| HostPattern::parse(pattern))
            .collect::<Result<Vec<_>, _>>()?;
        // Only variables the operator named are read from the host environment, once, at load.
        let env = config
            .env
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value)))
            .collect::<Vec<_>>();
        Ok(StateSeed {
            id: Arc::from(id),
            label: Arc::from(id),
            config_json: Arc::from(config_json),
            allowed_hosts: Arc::from(allowed_hosts),
            env: Arc::from(env),
            read_only_dirs: Arc::from(config.read_only_dirs.clone()),
            memory_bytes: limits.memory_bytes,
            kv_quota: limits.kv_quota,
            kv,
            log_tap,
        })
    }

    pub(crate) fn build(&self) -> WasmResult<PluginState> {
        // Deny by default: no args, no inherited env or stdio, no sockets, no preopens. Stderr
        // goes to a small ring only, for trap reports.
        let stderr = StderrTail::default();
        let mut builder = WasiCtxBuilder::new();
        builder
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (name, value) in self.env.iter() {
            builder.env(name, value);
        }
        for dir in self.read_only_dirs.iter() {
            let guest_path = dir.to_string_lossy();
            builder.preopened_dir(Path::new(dir), guest_path.as_ref(), FsPerms::ReadOnly)?;
        }
        Ok(PluginState {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            hooks: OutboundPolicy {
                allowed: self.allowed_hosts.clone(),
                plugin: self.label.clone(),
            },
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limiter: CallLimiter {
                memory_bytes: self.memory_bytes,
                memory_denied: false,
            },
            deadline: crate::runtime::wall_clock_now(),
            kv: self.kv.clone(),
            id: self.id.clone(),
            label: self.label.clone(),
            config_json: self.config_json.clone(),
            budget: CallBudget::default(),
            stderr,
            pending: PendingWrites::default(),
            kv_quota: self.kv_quota,
            log_tap: self.log_tap.clone(),
        })
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl types::Host for PluginState {}

fn kv_error(error: KvStoreError) -> host::KvError {
    match error {
        KvStoreError::Unavailable(message) => host::KvError::Unavailable(message),
        KvStoreError::Invalid(message) => host::KvError::Invalid(message),
    }
}

fn check_key(key: &str) -> Result<(), host::KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(host::KvError::Invalid(format!(
            "keys must be 1 to {MAX_KEY_BYTES} bytes"
        )));
    }
    // Postgres text cannot hold NUL; refusing it keeps keys identical on every backend.
    if key.contains('\0') {
        return Err(host::KvError::Invalid(
            "keys must not contain NUL".to_owned(),
        ));
    }
    Ok(())
}

impl host::Host for PluginState {
    async fn log(
        &mut self,
        level: host::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> WasmResult<()> {
        if self.budget.log_lines >= LOG_LINES_PER_CALL {
            self.budget.logs_dropped = self.budget.logs_dropped.saturating_add(1);
            return Ok(());
        }
        self.budget.log_lines += 1;
        if let Some(tap) = &self.log_tap {
            tap.push(LoggedLine {
                level: match level {
                    host::Level::Trace => "trace",
                    host::Level::Debug => "debug",
                    host::Level::Info => "info",
                    host::Level::Warn => "warn",
                    host::Level::Error => "error",
                },
                message: message.chars().take(LOG_MESSAGE_CHARS).collect(),
                fields: fields
                    .iter()
                    .take(LOG_FIELDS)
                    .map(|(key, value)| {
                        (
                            key.chars().take(LOG_KEY_CHARS).collect(),
                            value.chars().take(LOG_VALUE_CHARS).collect(),
                        )
                    })
                    .collect(),
            });
        }
        let message = escape_bounded(&message, LOG_MESSAGE_CHARS);
        let fields = fields
            .iter()
            .take(LOG_FIELDS)
            .map(|(key, value)| {
                // quoted so a value cannot pose as further fields
                format!(
                    "{}=\"{}\"",
                    escape_bounded(key, LOG_KEY_CHARS),
                    escape_bounded(value, LOG_VALUE_CHARS).replace('"', "\\\"")
                )
            })
            .collect::<Vec<_>>()
            .join(" ");
        let plugin = &*self.label;
        match level {
            host::Level::Trace => tracing::trace!(plugin, fields, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, fields, "{message}"),
            host::Level::Info => tracing::info!(plugin, fields, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, fields, "{message}"),
            host::Level::Error => tracing::error!(plugin, fields, "{message}"),
        }
        Ok(())
    }

    async fn get_config(&mut self) -> WasmResult<String> {
        Ok(self.config_json.to_string())
    }

    async fn now_ms(&mut self) -> WasmResult<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(u64::try_from(now.as_millis()).unwrap_or(u64::MAX))
    }

    async fn kv_get(&mut self, key: String) -> WasmResult<Result<Option<Vec<u8>>, host::KvError>> {
        if let Err(error) = check_key(&key).and_then(|()| self.spend_kv(0)) {
            return Ok(Err(error));
        }
        // the call reads its own writes, which reach the store only if it succeeds
        if let Some(written) = self.pending.read(&key) {
            return Ok(Ok(written));
        }
        Ok(self.kv.get(&self.id, &key).await.map_err(kv_error))
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_seconds: Option<u32>,
    ) -> WasmResult<Result<(), host::KvError>> {
        if let Err(error) = check_key(&key) {
            return Ok(Err(error));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Ok(Err(host::KvError::Invalid(format!(
                "values must be at most {MAX_VALUE_BYTES} bytes"
            ))));
        }
        if let Err(error) = self.spend_kv(value.len()) {
            return Ok(Err(error));
        }
        let ttl = ttl_seconds.map(|seconds| Duration::from_secs(u64::from(seconds)));
        Ok(self.buffer_write(&key, Some((value, ttl))).await)
    }

    async fn kv_delete(&mut self, key: String) -> WasmResult<Result<(), host::KvError>> {
        if let Err(error) = check_key(&key).and_then(|()| self.spend_kv(0)) {
            return Ok(Err(error));
        }
        Ok(self.buffer_write(&key, None).await)
    }
}

impl PluginState {
    /// Holds a set (`Some`) or delete (`None`) back until the call succeeds, within the quota.
    async fn buffer_write(
        &mut self,
        key: &str,
        value: Option<(Vec<u8>, Option<Duration>)>,
    ) -> Result<(), host::KvError> {
        self.pending
            .write(self.kv.as_ref(), &self.id, key, value, self.kv_quota)
            .await
            .map_err(|refusal| match refusal {
                Refusal::Store(error) => kv_error(error),
                Refusal::Quota(reason) => host::KvError::Invalid(reason),
            })
    }

    /// Counts one key-value operation writing `written` value bytes against the call's budget.
    fn spend_kv(&mut self, written: usize) -> Result<(), host::KvError> {
        if self.budget.kv_ops >= KV_OPS_PER_CALL {
            return Err(host::KvError::Invalid(format!(
                "over the budget of {KV_OPS_PER_CALL} key-value operations per call"
            )));
        }
        if self.budget.kv_written.saturating_add(written) > KV_WRITE_BYTES_PER_CALL {
            return Err(host::KvError::Invalid(format!(
                "over the budget of {KV_WRITE_BYTES_PER_CALL} value bytes written per call"
            )));
        }
        self.budget.kv_ops += 1;
        self.budget.kv_written += written;
        Ok(())
    }

    pub(crate) fn set_label(&mut self, label: Arc<str>) {
        self.label = label.clone();
        self.hooks.plugin = label;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns_match_scheme_host_and_port() {
        let slack = HostPattern::parse("https://hooks.slack.com:443").unwrap();
        assert!(slack.matches("https", "hooks.slack.com", 443));
        assert!(!slack.matches("http", "hooks.slack.com", 443));
        assert!(!slack.matches("https", "evil.com", 443));
        assert!(!slack.matches("https", "hooks.slack.com", 8443));
        let wildcard = HostPattern::parse("https://*.example.com").unwrap();
        assert!(wildcard.matches("https", "a.example.com", 443));
        assert!(!wildcard.matches("https", "example.com", 443));
        assert!(!wildcard.matches("https", "aexample.com", 443));
        let any_port = HostPattern::parse("http://127.0.0.1:*").unwrap();
        assert!(any_port.matches("http", "127.0.0.1", 1234));
        assert!(HostPattern::parse("ftp://x:1").is_err());
        assert!(HostPattern::parse("hooks.slack.com").is_err());
    }

    #[test]
    fn grants_cover_requests() {
        let grant = HostPattern::parse("https://*.slack.com:443").unwrap();
        assert!(grant.covers(&HostPattern::parse("https://hooks.slack.com:443").unwrap()));
        assert!(!grant.covers(&HostPattern::parse("https://hooks.slack.com:8443").unwrap()));
        let exact = HostPattern::parse("http://127.0.0.1:8080").unwrap();
        assert!(!exact.covers(&HostPattern::parse("http://127.0.0.1:*").unwrap()));
    }
}
