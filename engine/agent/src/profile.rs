//! Agent profiles: config structs (`AgentProfileConfig`), built-in defaults for claude, codex,
//! gemini and goose, and the validated `AgentProfile` the runner uses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::mask::NamedSecret;
use crate::secret::Secret;

/// Image used by the built-in profiles (built from `examples/agent-image`).
pub const DEFAULT_IMAGE: &str = "nightcrier-agent:latest";

/// The four agent CLIs with built-in defaults; each is also a profile of the same name.
pub const BUILT_IN_CLIS: [&str; 4] = ["claude", "codex", "gemini", "goose"];

/// The defaults of a profile's limits, in one place: [`AgentProfileConfig::build`] applies them,
/// and a container re-attached after a restart whose labels lack a value falls back to them.
pub mod defaults {
    use std::time::Duration;

    /// Run timeout.
    pub const TIMEOUT: Duration = Duration::from_secs(300);
    /// Grace period between stop (SIGTERM) and kill.
    pub const STOP_GRACE: Duration = Duration::from_secs(10);
    /// Memory limit.
    pub const MEMORY: &str = "2g";
    /// CPU limit in cores.
    pub const CPUS: f64 = 2.0;
    /// Most processes.
    pub const PIDS: i64 = 512;
    /// Size of each tmpfs.
    pub const SCRATCH_SIZE: &str = "256m";
    /// Cap per captured log file.
    pub const LOG_CAP: &str = "10m";
    /// Smallest valid report, in bytes.
    pub const MIN_REPORT_BYTES: u64 = 100;
    /// Cap on what the agent may write under `output/`.
    pub const OUTPUT_CAP: &str = "100m";
    /// Container uid and gid.
    pub const UID: u32 = 1000;
    /// Container gid.
    pub const GID: u32 = 1000;
    /// Tool list.
    pub const ALLOWED_TOOLS: &str = "Read,Write,Grep,Glob,Bash,Skill";
}

/// Placeholders allowed in `command`; secrets are deliberately not among them.
const PLACEHOLDERS: [&str; 6] = [
    "model",
    "allowed_tools",
    "prompt_file",
    "incident_id",
    "output_dir",
    "cli",
];

/// One agent profile as written in the config file. Every field is optional; omitted fields come
/// from the built-in default named by `cli` (or by the profile name when it is a built-in CLI).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentProfileConfig {
    /// Built-in CLI whose defaults this profile starts from: claude, codex, gemini or goose.
    pub cli: Option<String>,
    /// Container image.
    pub image: Option<String>,
    /// argv template; `{model}`, `{allowed_tools}`, `{prompt_file}`, `{incident_id}`,
    /// `{output_dir}`, `{cli}` are substituted.
    pub command: Option<Vec<String>>,
    /// Model name passed as `LLM_MODEL` and `{model}`.
    pub model: Option<String>,
    /// Tool list passed as `AGENT_ALLOWED_TOOLS` and `{allowed_tools}`.
    pub allowed_tools: Option<String>,
    /// Plain (non-secret) environment for the container.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secrets passed as container environment (never on a command line, never logged).
    pub secret_env: Option<Vec<SecretEnvConfig>>,
    /// Host files mounted read-only at `/run/secrets/<name>`.
    #[serde(default)]
    pub secret_files: Vec<SecretFileConfig>,
    /// Run timeout in seconds (default 300); `timeout` takes a duration such as `"10m"`.
    pub timeout_secs: Option<u64>,
    /// Run timeout, e.g. `"10m"` or `"90s"` (default 5m); give this or `timeout_secs`.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Grace period between stop (SIGTERM) and kill, in seconds (default 10).
    pub stop_grace_secs: Option<u64>,
    /// Grace period between stop and kill, e.g. `"10s"`; give this or `stop_grace_secs`.
    #[serde(default, with = "humantime_serde")]
    pub stop_grace: Option<Duration>,
    /// Memory limit, e.g. `2g`, `512m`, `1.5GiB` or a byte count (default 2g; k, m, g are
    /// binary units, as in Docker).
    pub memory: Option<String>,
    /// CPU limit in cores, e.g. 1.5 (default 2).
    pub cpus: Option<f64>,
    /// Maximum number of processes (default 512).
    pub pids_limit: Option<i64>,
    /// `bridge` (default), `none`, `host` (only when set explicitly) or a network name.
    pub network: Option<String>,
    /// uid of the non-root container user (default 1000).
    pub uid: Option<u32>,
    /// gid of the container user (default 1000).
    pub gid: Option<u32>,
    /// Writable tmpfs mounts (default `["/tmp"]`); the root filesystem is read-only.
    pub scratch: Option<Vec<String>>,
    /// Size of each tmpfs, e.g. `256m` (default 256m).
    pub scratch_size: Option<String>,
    /// Maximum bytes kept per captured log file (default 10m).
    pub log_cap: Option<String>,
    /// Minimum size of `output/investigation.md` (default 100).
    pub min_report_bytes: Option<u64>,
    /// Most bytes the agent may write under `output/`, e.g. `100m` (default 100m). Checked twice a
    /// second; past it the agent is killed, the run fails and `output/` is emptied.
    pub output_cap: Option<String>,
}

/// A secret environment variable: `name` in the container, read from `from_env` in nightcrier's
/// environment (default: the same name) or from the file `from_file`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretEnvConfig {
    /// Variable name inside the container.
    pub name: String,
    /// Variable in nightcrier's environment to read.
    pub from_env: Option<String>,
    /// File to read (trailing newline trimmed).
    pub from_file: Option<PathBuf>,
    /// When true a missing source is skipped instead of failing the run.
    #[serde(default)]
    pub optional: bool,
}

/// A secret file mounted read-only into the container.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretFileConfig {
    /// File on the host.
    pub host_path: PathBuf,
    /// Name under `/run/secrets/` in the container.
    pub name: String,
}

/// Where a secret's value comes from; resolved at each run so rotated files are picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// nightcrier's environment variable.
    Env(String),
    /// A file on the host.
    File(PathBuf),
}

/// A validated secret environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretEnv {
    /// Variable name inside the container.
    pub name: String,
    /// Source of the value.
    pub source: SecretSource,
    /// Whether a missing source is tolerated.
    pub optional: bool,
}

impl SecretEnv {
    /// Reads the value; `Ok(None)` when optional and absent. The error text never holds the value.
    pub async fn resolve(&self) -> Result<Option<Secret>, String> {
        let value = match &self.source {
            SecretSource::Env(variable) => std::env::var(variable).ok(),
            SecretSource::File(path) => match tokio::fs::read_to_string(path).await {
                Ok(text) => Some(text.trim_end_matches(['\n', '\r']).to_owned()),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
                Err(error) => return Err(format!("cannot read {}: {error}", path.display())),
            },
        };
        match value {
            Some(value) if !value.is_empty() => Ok(Some(Secret::new(value))),
            _ if self.optional => Ok(None),
            _ => Err(match &self.source {
                SecretSource::Env(variable) => {
                    format!("environment variable {variable} is not set")
                }
                SecretSource::File(path) => format!("file {} is missing or empty", path.display()),
            }),
        }
    }
}

/// Container network mode. `host` is never a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// The default bridge network.
    Bridge,
    /// No network at all.
    None,
    /// The host's network namespace (explicit opt-in only).
    Host,
    /// A user-defined network.
    Named(String),
}

impl NetworkMode {
    /// The value for Docker's `NetworkMode`.
    pub fn as_docker(&self) -> &str {
        match self {
            Self::Bridge => "bridge",
            Self::None => "none",
            Self::Host => "host",
            Self::Named(name) => name,
        }
    }
}

/// Resource limits applied to the container.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceLimits {
    /// Memory (and memory+swap) limit in bytes.
    pub memory_bytes: i64,
    /// CPU limit in units of 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Maximum number of processes.
    pub pids: i64,
}

/// A validated agent profile.
#[derive(Debug, Clone)]
pub struct AgentProfile {
    /// Profile name (the config key).
    pub name: String,
    /// The CLI it is based on (`claude`, ...), or `custom`.
    pub cli: String,
    /// Container image.
    pub image: String,
    /// argv template.
    pub command: Vec<String>,
    /// Model.
    pub model: String,
    /// Allowed tools.
    pub allowed_tools: String,
    /// Plain environment.
    pub env: BTreeMap<String, String>,
    /// Secret environment.
    pub secret_env: Vec<SecretEnv>,
    /// Secret files.
    pub secret_files: Vec<SecretFileConfig>,
    /// Run timeout.
    pub timeout: Duration,
    /// Stop grace period.
    pub stop_grace: Duration,
    /// Limits.
    pub limits: ResourceLimits,
    /// Network mode.
    pub network: NetworkMode,
    /// Container uid.
    pub uid: u32,
    /// Container gid.
    pub gid: u32,
    /// tmpfs mount points.
    pub scratch: Vec<String>,
    /// tmpfs size in bytes.
    pub scratch_bytes: u64,
    /// Cap per captured log file, in bytes.
    pub log_cap_bytes: u64,
    /// Minimum report size.
    pub min_report_bytes: u64,
    /// Cap on what the agent may write under `output/`, in bytes.
    pub output_cap_bytes: u64,
}

/// A profile that cannot be built; names the profile and the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid agent profile {profile}: key `{key}`: {reason}")]
pub struct ProfileError {
    /// Profile name.
    pub profile: String,
    /// Config key at fault.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

/// Something a profile needs that is not there, so no agent can run with it: a secret whose
/// source is missing, or an image the Docker engine does not have. A configuration problem, not
/// a fault of the incident that found it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileProblem {
    /// A secret environment variable or secret file cannot be read.
    #[error("agent profile {profile}: secret {name}: {reason}")]
    Secret {
        /// Profile name.
        profile: String,
        /// The secret's name in the container.
        name: String,
        /// What is missing (never the value).
        reason: String,
    },
    /// The image is not present and could not be pulled.
    #[error("agent profile {profile}: image {image} is missing: {reason}")]
    Image {
        /// Profile name.
        profile: String,
        /// Image reference.
        image: String,
        /// Why it could not be had.
        reason: String,
    },
}

/// A profile's secrets read for one run: what the container gets, and every value to mask.
pub(crate) struct ResolvedSecrets {
    /// `NAME=value` pairs for the container environment.
    pub(crate) env: Vec<(String, Secret)>,
    /// Every value handed out (environment and files), for the masker.
    pub(crate) handed_out: Vec<NamedSecret>,
}

/// Secret files larger than this are mounted but not masked (they are bundles, not keys).
const MAX_MASKED_FILE_BYTES: u64 = 64 * 1024;

impl AgentProfile {
    /// Reads every secret of the profile now, so a rotated file is picked up. The first problem
    /// found is returned; [`AgentProfile::check_secrets`] lists them all.
    pub(crate) async fn resolve_secrets(&self) -> Result<ResolvedSecrets, ProfileProblem> {
        let mut resolved = ResolvedSecrets {
            env: Vec::new(),
            handed_out: Vec::new(),
        };
        let problem = |name: &str, reason: String| ProfileProblem::Secret {
            profile: self.name.clone(),
            name: name.to_owned(),
            reason,
        };
        for secret in &self.secret_env {
            match secret.resolve().await {
                Ok(Some(value)) => {
                    resolved.handed_out.push(NamedSecret {
                        name: secret.name.clone(),
                        value: value.expose().as_bytes().to_vec(),
                    });
                    resolved.env.push((secret.name.clone(), value));
                }
                Ok(None) => {}
                Err(reason) => return Err(problem(&secret.name, reason)),
            }
        }
        for file in &self.secret_files {
            let metadata = tokio::fs::metadata(&file.host_path)
                .await
                .map_err(|error| {
                    problem(
                        &file.name,
                        format!("cannot read {}: {error}", file.host_path.display()),
                    )
                })?;
            if !metadata.is_file() {
                return Err(problem(
                    &file.name,
                    format!("{} is not a file", file.host_path.display()),
                ));
            }
            if metadata.len() > MAX_MASKED_FILE_BYTES {
                continue;
            }
            let bytes = tokio::fs::read(&file.host_path).await.map_err(|error| {
                problem(
                    &file.name,
                    format!("cannot read {}: {error}", file.host_path.display()),
                )
            })?;
            resolved.handed_out.push(NamedSecret {
                name: file.name.clone(),
                value: trim_ascii_newlines(&bytes).to_vec(),
            });
        }
        Ok(resolved)
    }

    /// Every secret this profile cannot read now, each named (empty when all are there).
    pub async fn check_secrets(&self) -> Vec<ProfileProblem> {
        let mut problems = Vec::new();
        for secret in &self.secret_env {
            if let Err(reason) = secret.resolve().await {
                problems.push(ProfileProblem::Secret {
                    profile: self.name.clone(),
                    name: secret.name.clone(),
                    reason,
                });
            }
        }
        for file in &self.secret_files {
            let readable = tokio::fs::File::open(&file.host_path).await;
            let is_file = tokio::fs::metadata(&file.host_path)
                .await
                .is_ok_and(|metadata| metadata.is_file());
            if let Err(error) = readable {
                problems.push(ProfileProblem::Secret {
                    profile: self.name.clone(),
                    name: file.name.clone(),
                    reason: format!("cannot read {}: {error}", file.host_path.display()),
                });
            } else if !is_file {
                problems.push(ProfileProblem::Secret {
                    profile: self.name.clone(),
                    name: file.name.clone(),
                    reason: format!("{} is not a file", file.host_path.display()),
                });
            }
        }
        problems
    }
}

fn trim_ascii_newlines(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|byte| !matches!(byte, b'\n' | b'\r'))
        .map_or(0, |last| last + 1);
    &bytes[..end]
}

impl AgentProfileConfig {
    /// Parses one profile from JSON text (the engine normally deserialises `AgentProfileConfig`
    /// from its own config file); unknown keys are rejected with their name.
    pub fn from_json(profile: &str, text: &str) -> Result<Self, ProfileError> {
        serde_json::from_str(text).map_err(|error| ProfileError {
            profile: profile.to_owned(),
            key: "(document)".to_owned(),
            reason: error.to_string(),
        })
    }

    /// Validates the profile named `name`, filling omitted fields from the built-in default.
    pub fn build(&self, name: &str) -> Result<AgentProfile, ProfileError> {
        let invalid = |key: &str, reason: String| ProfileError {
            profile: name.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let cli = match &self.cli {
            Some(cli) if BUILT_IN_CLIS.contains(&cli.as_str()) => Some(cli.clone()),
            Some(cli) => {
                return Err(invalid(
                    "cli",
                    format!("unknown cli {cli:?}, expected one of claude, codex, gemini, goose"),
                ));
            }
            None if BUILT_IN_CLIS.contains(&name) => Some(name.to_owned()),
            None => None,
        };
        let defaults = cli.as_deref().map(built_in);
        let command = match (&self.command, &defaults) {
            (Some(command), _) => command.clone(),
            (None, Some(defaults)) => defaults.command.clone(),
            (None, None) => {
                return Err(invalid(
                    "command",
                    "required for a profile without `cli`".into(),
                ));
            }
        };
        if command.is_empty() {
            return Err(invalid("command", "must not be empty".into()));
        }
        for argument in &command {
            check_placeholders(argument).map_err(|reason| invalid("command", reason))?;
        }
        let image = match (&self.image, &defaults) {
            (Some(image), _) if !image.trim().is_empty() => image.clone(),
            (Some(_), _) => return Err(invalid("image", "must not be empty".into())),
            (None, Some(_)) => DEFAULT_IMAGE.to_owned(),
            (None, None) => {
                return Err(invalid(
                    "image",
                    "required for a profile without `cli`".into(),
                ));
            }
        };
        let model = self
            .model
            .clone()
            .or_else(|| defaults.as_ref().map(|defaults| defaults.model.to_owned()))
            .unwrap_or_default();
        let allowed_tools = self
            .allowed_tools
            .clone()
            .unwrap_or_else(|| defaults::ALLOWED_TOOLS.to_owned());

        for key in self.env.keys() {
            check_env_name(key).map_err(|reason| invalid("env", reason))?;
        }
        let secret_env = match (&self.secret_env, &defaults) {
            (Some(configs), _) => configs
                .iter()
                .map(|config| secret_env(config).map_err(|reason| invalid("secret_env", reason)))
                .collect::<Result<Vec<_>, _>>()?,
            (None, Some(defaults)) => defaults.secret_env.clone(),
            (None, None) => Vec::new(),
        };
        for secret in &secret_env {
            if self.env.contains_key(&secret.name) {
                return Err(invalid(
                    "env",
                    format!(
                        "{} is also a secret; secrets belong in secret_env only",
                        secret.name
                    ),
                ));
            }
        }
        for file in &self.secret_files {
            let valid = !file.name.is_empty()
                && file
                    .name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
                && file.name != "."
                && file.name != "..";
            if !valid {
                return Err(invalid(
                    "secret_files",
                    format!("name {:?} must be a plain file name", file.name),
                ));
            }
        }

        let timeout = match (self.timeout, self.timeout_secs) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "timeout",
                    "give either `timeout` or `timeout_secs`, not both".into(),
                ));
            }
            (Some(timeout), None) => timeout,
            (None, Some(secs)) => Duration::from_secs(secs),
            (None, None) => defaults::TIMEOUT,
        };
        if timeout < Duration::from_secs(1) {
            let key = if self.timeout.is_some() {
                "timeout"
            } else {
                "timeout_secs"
            };
            return Err(invalid(key, "must be at least 1 second".into()));
        }
        let stop_grace = match (self.stop_grace, self.stop_grace_secs) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "stop_grace",
                    "give either `stop_grace` or `stop_grace_secs`, not both".into(),
                ));
            }
            (Some(grace), None) => grace,
            (None, Some(secs)) => Duration::from_secs(secs),
            (None, None) => defaults::STOP_GRACE,
        };
        let memory_bytes = parse_size(self.memory.as_deref().unwrap_or(defaults::MEMORY))
            .map_err(|reason| invalid("memory", reason))?;
        if memory_bytes < 6 * 1024 * 1024 {
            return Err(invalid(
                "memory",
                "must be at least 6m (docker minimum)".into(),
            ));
        }
        let cpus = self.cpus.unwrap_or(defaults::CPUS);
        if !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0) {
            return Err(invalid(
                "cpus",
                format!("{cpus} is not a positive core count"),
            ));
        }
        let pids = self.pids_limit.unwrap_or(defaults::PIDS);
        if pids < 8 {
            return Err(invalid("pids_limit", "must be at least 8".into()));
        }
        let network = match self.network.as_deref().unwrap_or("bridge") {
            "bridge" | "default" => NetworkMode::Bridge,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            other if other.starts_with("container:") => {
                return Err(invalid(
                    "network",
                    "sharing another container's network is not allowed".into(),
                ));
            }
            other if !other.is_empty() => NetworkMode::Named(other.to_owned()),
            _ => return Err(invalid("network", "must not be empty".into())),
        };
        let uid = self.uid.unwrap_or(defaults::UID);
        if uid == 0 {
            return Err(invalid("uid", "the agent never runs as root".into()));
        }
        let scratch = self
            .scratch
            .clone()
            .unwrap_or_else(|| vec!["/tmp".to_owned()]);
        for mount in &scratch {
            if !mount.starts_with('/') || mount.contains(':') || mount.contains(',') {
                return Err(invalid(
                    "scratch",
                    format!("{mount:?} is not an absolute path"),
                ));
            }
        }
        let scratch_bytes = parse_size(
            self.scratch_size
                .as_deref()
                .unwrap_or(defaults::SCRATCH_SIZE),
        )
        .map_err(|reason| invalid("scratch_size", reason))?;
        let log_cap_bytes = parse_size(self.log_cap.as_deref().unwrap_or(defaults::LOG_CAP))
            .map_err(|reason| invalid("log_cap", reason))?;
        let min_report_bytes = self.min_report_bytes.unwrap_or(defaults::MIN_REPORT_BYTES);
        let output_cap_bytes =
            parse_size(self.output_cap.as_deref().unwrap_or(defaults::OUTPUT_CAP))
                .map_err(|reason| invalid("output_cap", reason))?;
        if output_cap_bytes < min_report_bytes.max(4096) {
            return Err(invalid(
                "output_cap",
                format!(
                    "{output_cap_bytes} bytes leaves no room for a report of at least {min_report_bytes} bytes (minimum 4k)"
                ),
            ));
        }

        Ok(AgentProfile {
            name: name.to_owned(),
            cli: cli.unwrap_or_else(|| "custom".to_owned()),
            image,
            command,
            model,
            allowed_tools,
            env: self.env.clone(),
            secret_env,
            secret_files: self.secret_files.clone(),
            timeout,
            stop_grace,
            limits: ResourceLimits {
                memory_bytes: i64::try_from(memory_bytes)
                    .map_err(|_| invalid("memory", "too large".into()))?,
                nano_cpus: (cpus * 1e9) as i64,
                pids,
            },
            network,
            uid,
            gid: self.gid.unwrap_or(defaults::GID),
            scratch,
            scratch_bytes,
            log_cap_bytes,
            min_report_bytes,
            output_cap_bytes,
        })
    }
}

impl AgentProfile {
    /// The built-in profile for `cli` (claude, codex, gemini, goose).
    pub fn built_in(cli: &str) -> Result<Self, ProfileError> {
        AgentProfileConfig {
            cli: Some(cli.to_owned()),
            ..AgentProfileConfig::default()
        }
        .build(cli)
    }

    /// The argv with placeholders substituted.
    pub(crate) fn render_command(&self, values: &[(&str, &str)]) -> Vec<String> {
        self.command
            .iter()
            .map(|argument| {
                let mut rendered = argument.clone();
                for (key, value) in values {
                    rendered = rendered.replace(&format!("{{{key}}}"), value);
                }
                rendered
            })
            .collect()
    }
}

struct BuiltIn {
    command: Vec<String>,
    model: &'static str,
    secret_env: Vec<SecretEnv>,
}

/// Defaults following the original per-agent command lines: each CLI is started by its runner
/// script from `examples/agent-image`, which reads the §4.3 env contract (`LLM_MODEL`,
/// `AGENT_ALLOWED_TOOLS`, ...) plus `PROMPT_FILE`.
fn built_in(cli: &str) -> BuiltIn {
    let secret = |name: &str, optional: bool| SecretEnv {
        name: name.to_owned(),
        source: SecretSource::Env(name.to_owned()),
        optional,
    };
    let (model, secret_env) = match cli {
        "claude" => ("sonnet", vec![secret("ANTHROPIC_API_KEY", false)]),
        "codex" => ("gpt-5-codex", vec![secret("OPENAI_API_KEY", false)]),
        "gemini" => (
            "gemini-3-flash-preview",
            vec![
                secret("GEMINI_API_KEY", true),
                secret("GOOGLE_API_KEY", true),
            ],
        ),
        _ => (
            "gpt-4.1",
            vec![
                secret("OPENAI_API_KEY", true),
                secret("ANTHROPIC_API_KEY", true),
                secret("GEMINI_API_KEY", true),
            ],
        ),
    };
    BuiltIn {
        command: vec![format!("/opt/nightcrier/runners/{cli}.sh")],
        model,
        secret_env,
    }
}

fn secret_env(config: &SecretEnvConfig) -> Result<SecretEnv, String> {
    check_env_name(&config.name)?;
    let source = match (&config.from_env, &config.from_file) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "{}: set only one of from_env and from_file",
                config.name
            ));
        }
        (Some(variable), None) => SecretSource::Env(variable.clone()),
        (None, Some(path)) => SecretSource::File(path.clone()),
        (None, None) => SecretSource::Env(config.name.clone()),
    };
    Ok(SecretEnv {
        name: config.name.clone(),
        source,
        optional: config.optional,
    })
}

fn check_env_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.as_bytes()[0].is_ascii_digit()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid environment variable name"))
    }
}

fn check_placeholders(argument: &str) -> Result<(), String> {
    let mut rest = argument;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed placeholder in {argument:?}"));
        };
        let key = &after[..end];
        if !PLACEHOLDERS.contains(&key) {
            return Err(format!(
                "unknown placeholder {{{key}}}; allowed: {}",
                PLACEHOLDERS.join(", ")
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}

/// Parses a size such as `512`, `64k`, `256m`, `2g`, `1.5GiB` into bytes, through `bytesize`.
/// Single-letter units (and `kb`, `mb`, `gb`, `tb`) are binary, as in Docker's `--memory 2g`;
/// `KiB`, `MiB`, `GiB`, `TiB` say so explicitly. Zero is refused.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let unit = unit.trim();
    // Docker's convention: `k`/`kb` mean KiB and so on.
    let unit = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => "B",
        "k" | "kb" | "ki" | "kib" => "KiB",
        "m" | "mb" | "mi" | "mib" => "MiB",
        "g" | "gb" | "gi" | "gib" => "GiB",
        "t" | "tb" | "ti" | "tib" => "TiB",
        _ => {
            return Err(format!(
                "cannot parse {text:?} as a size such as 512m or 2g"
            ));
        }
    };
    format!("{number} {unit}")
        .parse::<bytesize::ByteSize>()
        .ok()
        .map(|size| size.as_u64())
        .filter(|bytes| *bytes > 0 && !number.is_empty())
        .ok_or_else(|| format!("cannot parse {text:?} as a size such as 512m or 2g"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_are_hardened_by_default() {
        for cli in BUILT_IN_CLIS {
            let profile = AgentProfile::built_in(cli).unwrap();
            assert_eq!(profile.image, DEFAULT_IMAGE);
            assert_eq!(
                profile.command,
                vec![format!("/opt/nightcrier/runners/{cli}.sh")]
            );
            assert_eq!(profile.network, NetworkMode::Bridge);
            assert_eq!((profile.uid, profile.gid), (1000, 1000));
            assert_eq!(profile.timeout, Duration::from_secs(300));
            assert_eq!(profile.limits.memory_bytes, 2 << 30);
            assert_eq!(profile.min_report_bytes, 100);
            assert_eq!(profile.output_cap_bytes, 100 << 20);
        }
        let claude = AgentProfile::built_in("claude").unwrap();
        assert_eq!(claude.model, "sonnet");
        assert_eq!(claude.secret_env[0].name, "ANTHROPIC_API_KEY");
        assert!(!claude.secret_env[0].optional);
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let error = AgentProfileConfig::from_json("claude", r#"{"imagee": "x"}"#).unwrap_err();
        assert!(error.to_string().contains("`imagee`"), "{error}");
        let error = AgentProfileConfig::from_json(
            "c",
            r#"{"secret_env": [{"name": "K", "form_env": "X"}]}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("`form_env`"), "{error}");
    }

    #[test]
    fn invalid_values_name_profile_and_key() {
        let cases = [
            (r#"{"cli": "claude", "memory": "2x"}"#, "`memory`"),
            (r#"{"cli": "claude", "uid": 0}"#, "`uid`"),
            (
                r#"{"cli": "claude", "command": ["run", "{api_key}"]}"#,
                "`command`",
            ),
            (r#"{"image": "x"}"#, "`command`"),
            (r#"{"command": ["x"]}"#, "`image`"),
            (r#"{"cli": "cursor"}"#, "`cli`"),
            (
                r#"{"cli": "claude", "network": "container:abc"}"#,
                "`network`",
            ),
            (
                r#"{"cli": "claude", "env": {"ANTHROPIC_API_KEY": "x"}}"#,
                "`env`",
            ),
            (r#"{"cli": "claude", "timeout_secs": 0}"#, "`timeout_secs`"),
            (r#"{"cli": "claude", "timeout": "0s"}"#, "`timeout`"),
            (
                r#"{"cli": "claude", "timeout": "10m", "timeout_secs": 600}"#,
                "`timeout`",
            ),
            (
                r#"{"cli": "claude", "stop_grace": "5s", "stop_grace_secs": 5}"#,
                "`stop_grace`",
            ),
            (r#"{"cli": "claude", "output_cap": "lots"}"#, "`output_cap`"),
            (r#"{"cli": "claude", "output_cap": "1k"}"#, "`output_cap`"),
        ];
        for (text, key) in cases {
            let error = AgentProfileConfig::from_json("mine", text)
                .unwrap()
                .build("mine")
                .unwrap_err();
            let message = error.to_string();
            assert!(
                message.contains("invalid agent profile mine") && message.contains(key),
                "{message}"
            );
        }
    }

    #[test]
    fn custom_profile_keeps_its_settings() {
        let config = AgentProfileConfig::from_json(
            "probe",
            r#"{"image": "example/agent:1", "command": ["/agent", "--model", "{model}", "{prompt_file}"],
                "model": "m1", "network": "host", "memory": "512m", "cpus": 0.5, "pids_limit": 64,
                "secret_env": [{"name": "API_KEY", "from_file": "/etc/key"}]}"#,
        )
        .unwrap();
        let profile = config.build("probe").unwrap();
        assert_eq!(profile.cli, "custom");
        assert_eq!(profile.network, NetworkMode::Host);
        assert_eq!(profile.limits.memory_bytes, 512 << 20);
        assert_eq!(profile.limits.nano_cpus, 500_000_000);
        assert_eq!(
            profile.secret_env[0].source,
            SecretSource::File("/etc/key".into())
        );
        let argv = profile.render_command(&[("model", "m1"), ("prompt_file", "/p.md")]);
        assert_eq!(argv, ["/agent", "--model", "m1", "/p.md"]);
    }

    #[test]
    fn durations_take_units_and_the_old_keys_still_work() {
        let profile = AgentProfileConfig::from_json(
            "p",
            r#"{"cli": "claude", "timeout": "10m", "stop_grace": "2s"}"#,
        )
        .unwrap()
        .build("p")
        .unwrap();
        assert_eq!(profile.timeout, Duration::from_secs(600));
        assert_eq!(profile.stop_grace, Duration::from_secs(2));
        let profile = AgentProfileConfig::from_json(
            "p",
            r#"{"cli": "claude", "timeout_secs": 90, "stop_grace_secs": 3}"#,
        )
        .unwrap()
        .build("p")
        .unwrap();
        assert_eq!(profile.timeout, Duration::from_secs(90));
        assert_eq!(profile.stop_grace, Duration::from_secs(3));
        let error = AgentProfileConfig::from_json("p", r#"{"timeout": "soon"}"#).unwrap_err();
        assert!(error.to_string().contains("soon"), "{error}");
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("10MB").unwrap(), 10 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("256 MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("m").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[tokio::test]
    async fn secrets_resolve_from_env_and_file_without_leaking_in_errors() {
        // Cargo sets CARGO_PKG_NAME for test processes.
        let from_env = SecretEnv {
            name: "X".into(),
            source: SecretSource::Env("CARGO_PKG_NAME".into()),
            optional: false,
        };
        assert_eq!(
            from_env.resolve().await.unwrap().unwrap().expose(),
            "nightcrier-agent"
        );
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("key");
        std::fs::write(&path, "s3cr3t\n").unwrap();
        let from_file = SecretEnv {
            name: "X".into(),
            source: SecretSource::File(path.clone()),
            optional: false,
        };
        assert_eq!(
            from_file.resolve().await.unwrap().unwrap().expose(),
            "s3cr3t"
        );
        let missing = SecretEnv {
            name: "X".into(),
            source: SecretSource::Env("NIGHTCRIER_SURELY_UNSET_VARIABLE".into()),
            optional: false,
        };
        assert!(missing.resolve().await.unwrap_err().contains("is not set"));
        let optional = SecretEnv {
            optional: true,
            ..missing
        };
        assert!(optional.resolve().await.unwrap().is_none());
    }
}
