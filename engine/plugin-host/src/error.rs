//! Typed errors at the crate boundary: refusing a plugin file (`LoadError`) and a failed call (`CallError`).

use std::path::PathBuf;

use crate::text::escape_untrusted;

/// Why a plugin file was refused at load. Every message names the file or the plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("cannot read plugin file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid WebAssembly component.
    #[error("{} is not a valid WebAssembly component: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the compiler said.
        reason: String,
    },
    /// The component exports no (or more than one) nightcrier world.
    #[error("{} fits no plugin world: {reason}", path.display())]
    NoWorld {
        /// The file.
        path: PathBuf,
        /// Which exports were found.
        reason: String,
    },
    /// The component was built against a WIT version this engine does not support.
    #[error("{} was built for nightcrier:plugin@{found}, but this engine supports {supported}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the component's export names.
        found: String,
        /// The supported range.
        supported: &'static str,
    },
    /// The component imports something the host does not provide, or its exports have the wrong shape.
    #[error("{} cannot be linked: {reason}", path.display())]
    Link {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        reason: String,
    },
    /// The plugin asked for capabilities the operator did not grant; every missing grant is listed.
    #[error(
        "plugin {plugin} is disabled: it requests {}, which [plugins.plugin.{id}] does not grant; grant it there, or set `disabled = true` there to leave the plugin out",
        describe_missing(missing)
    )]
    MissingGrant {
        /// `id@version`.
        plugin: String,
        /// Plugin id (file name without `.wasm`).
        id: String,
        /// Each missing capability and the config key that grants it.
        missing: Vec<MissingGrant>,
    },
    /// `describe` failed.
    #[error("plugin {plugin} failed to describe itself: {source}")]
    Describe {
        /// The file name.
        plugin: String,
        /// The call error.
        source: Box<CallError>,
    },
    /// `describe` gives another name than the file's: the file name is the plugin's identity.
    #[error(
        "{} claims to be plugin `{}`, but its file name makes it `{id}`: a plugin's describe name must match its file name",
        path.display(),
        escape_untrusted(claimed)
    )]
    NameMismatch {
        /// The file.
        path: PathBuf,
        /// Plugin id (file name without `.wasm`).
        id: String,
        /// The name `describe` gave, as received.
        claimed: String,
    },
    /// Two or more files name one plugin (their names differ only in case or `-`/`_`); none of them is loaded.
    #[error(
        "{} and {} are the same plugin `{id}` (file names that differ only in case or `-`/`_` name one plugin); neither is loaded: remove or rename one",
        path.display(),
        others.iter().map(|other| other.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    DuplicateId {
        /// The file refused.
        path: PathBuf,
        /// The other files with the same identity.
        others: Vec<PathBuf>,
        /// The shared identity.
        id: String,
    },
    /// The precompiled-artefact cache could not be used.
    #[error("cannot use the plugin cache for {}: {reason}", path.display())]
    Cache {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl LoadError {
    /// The id of the refused plugin (its file name without `.wasm`).
    pub fn plugin_id(&self) -> String {
        let stem = |path: &PathBuf| {
            path.file_stem()
                .map(|stem| stem.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        match self {
            LoadError::Read { path, .. }
            | LoadError::Corrupt { path, .. }
            | LoadError::NoWorld { path, .. }
            | LoadError::UnsupportedVersion { path, .. }
            | LoadError::Link { path, .. }
            | LoadError::Cache { path, .. } => stem(path),
            LoadError::MissingGrant { id, .. }
            | LoadError::NameMismatch { id, .. }
            | LoadError::DuplicateId { id, .. } => id.clone(),
            LoadError::Describe { plugin, .. } => plugin.trim_end_matches(".wasm").to_owned(),
        }
    }
}

/// A capability a plugin requested and the config key (`allowed_hosts`, `env`, `read_only_dirs`) that grants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingGrant {
    /// E.g. `outbound host https://hooks.slack.com:443`.
    pub capability: String,
    /// The key under `[plugins.plugin.<id>]`.
    pub grant: &'static str,
}

fn describe_missing(missing: &[MissingGrant]) -> String {
    missing
        .iter()
        .map(|item| format!("{} (add it to `{}`)", item.capability, item.grant))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why a plugin call failed. `plugin` is `id@version`.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No loaded plugin has this id.
    #[error("no plugin named {plugin} is loaded")]
    NotFound {
        /// The id asked for.
        plugin: String,
    },
    /// The plugin exists but implements another world.
    #[error("plugin {plugin} is a {actual} plugin, not {expected}")]
    WrongWorld {
        /// `id@version`.
        plugin: String,
        /// The world called.
        expected: &'static str,
        /// The world it has.
        actual: &'static str,
    },
    /// The call ran past its deadline.
    #[error("plugin {plugin} exceeded its deadline of {deadline_ms} ms")]
    Timeout {
        /// `id@version`.
        plugin: String,
        /// The deadline.
        deadline_ms: u64,
    },
    /// The plugin tried to grow memory past its cap.
    #[error("plugin {plugin} exceeded its memory cap of {limit_mib} MiB")]
    MemoryLimit {
        /// `id@version`.
        plugin: String,
        /// The cap.
        limit_mib: usize,
    },
    /// The plugin returned more data than allowed.
    #[error("plugin {plugin} returned about {size} bytes, over the cap of {limit} bytes")]
    OutputTooLarge {
        /// `id@version`.
        plugin: String,
        /// Approximate size returned.
        size: usize,
        /// The cap.
        limit: usize,
    },
    /// The plugin trapped (panic, abort, unreachable, stack overflow...).
    #[error("plugin {plugin} trapped: {reason}")]
    Trap {
        /// `id@version`.
        plugin: String,
        /// `<kind>[; guest stderr: <last words>][; backtrace: <frames>]`, escaped and bounded,
        /// e.g. `unreachable; guest stderr: … panicked at src/lib.rs:9:5: bad input; backtrace: …`.
        reason: String,
    },
    /// The instance could not be created.
    #[error("plugin {plugin} could not be instantiated: {reason}")]
    Instantiate {
        /// `id@version`.
        plugin: String,
        /// What wasmtime said.
        reason: String,
    },
    /// The call succeeded, but its key-value writes could not be applied (none was).
    #[error("plugin {plugin} succeeded, but its key-value writes could not be saved: {reason}")]
    KvWrites {
        /// `id@version`.
        plugin: String,
        /// What the store said.
        reason: String,
    },
    /// The plugin returned an error value.
    #[error("plugin {plugin} failed: {message}")]
    Plugin {
        /// `id@version`.
        plugin: String,
        /// The plugin's message.
        message: String,
        /// Whether the plugin says retrying may help.
        retryable: bool,
    },
}

impl CallError {
    /// Whether the host may retry the call later.
    pub fn is_retryable(&self) -> bool {
        match self {
            CallError::Plugin { retryable, .. } => *retryable,
            CallError::Timeout { .. }
            | CallError::Instantiate { .. }
            | CallError::KvWrites { .. } => true,
            _ => false,
        }
    }
}
