//! `DockerRunner`: the whole container life cycle through bollard (ensure image, create hardened,
//! start, stream logs, wait with timeout, stop, kill, always remove) and restart recovery.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use tokio::sync::broadcast;

use crate::breaker::{BreakerConfig, CircuitBreaker};
use crate::error::{AgentError, check_incident_id};
use crate::incident::{IncidentInput, PermissionsSource, UnknownPermissions};
use crate::logs::{LogChunk, LogSink, LogStream};
use crate::mask::{NamedSecret, SecretMasker};
use crate::outcome::{self, AgentOutcome, FailureReason, IncidentStatus};
use crate::permissions::{ProbedPermissions, probe_cluster_permissions};
use crate::profile::{AgentProfile, ProfileProblem, ResolvedSecrets, defaults, parse_size};
use crate::record::{BreakerStateStore, ExecutionFinish, ExecutionRecorder, ExecutionStart};
use crate::workspace::{AGENT_HOME, Workspace, WorkspaceContents};

/// Label naming the nightcrier instance that owns a container.
pub const LABEL_INSTANCE: &str = "nightcrier.instance";
/// Label naming the incident.
pub const LABEL_INCIDENT: &str = "nightcrier.incident";
const LABEL_CLUSTER: &str = "nightcrier.cluster";
const LABEL_PROFILE: &str = "nightcrier.profile";
const LABEL_TIMEOUT: &str = "nightcrier.timeout-secs";
const LABEL_GRACE: &str = "nightcrier.stop-grace-secs";
const LABEL_MIN_REPORT: &str = "nightcrier.min-report-bytes";
const LABEL_LOG_CAP: &str = "nightcrier.log-cap-bytes";
const LABEL_OUTPUT_CAP: &str = "nightcrier.output-cap-bytes";
/// Names (never values) of the secret variables the container got, so a process re-attaching
/// after a restart knows which values of the container's environment to mask.
const LABEL_SECRET_ENV: &str = "nightcrier.secret-env";

/// Keys in a kubeconfig whose values are credentials, masked like the profile's secrets.
const KUBECONFIG_SECRET_KEYS: [&str; 7] = [
    "token",
    "client-key-data",
    "password",
    "id-token",
    "refresh-token",
    "access-token",
    "client-secret",
];

/// How often the size of `output/` is checked against the profile's cap.
const OUTPUT_CHECK_EVERY: Duration = Duration::from_millis(500);

/// Each file or directory under `output/` counts at least this much, so a flood of empty files
/// hits the cap too (and a check walks at most cap / 4 KiB entries).
const OUTPUT_MIN_ENTRY_BYTES: u64 = 4096;

/// How long the log pump may keep draining after the container stopped.
const LOG_DRAIN: Duration = Duration::from_secs(5);

/// Runner settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Directory holding one workspace per incident.
    pub workspace_root: PathBuf,
    /// Identifies this nightcrier instance on shared Docker hosts (container label).
    pub instance_id: String,
    /// Circuit breaker settings.
    #[serde(default)]
    pub breaker: BreakerConfig,
    /// How long an image pull may take, in seconds (default 300).
    #[serde(default = "default_pull_timeout")]
    pub pull_timeout_secs: u64,
}

fn default_pull_timeout() -> u64 {
    300
}

impl RunnerConfig {
    /// Settings with defaults for everything but the root and the instance id.
    pub fn new(workspace_root: impl Into<PathBuf>, instance_id: impl Into<String>) -> Self {
        Self {
            workspace_root: workspace_root.into(),
            instance_id: instance_id.into(),
            breaker: BreakerConfig::default(),
            pull_timeout_secs: default_pull_timeout(),
        }
    }
}

/// One triage run to perform.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// The incident.
    pub incident: IncidentInput,
    /// Cluster permissions (known, to probe, or unknown).
    pub permissions: PermissionsSource,
    /// Kubeconfig mounted read-only as `/home/agent/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Files from pre-triage plugins: (relative name, bytes), mounted under `context/`.
    pub context_files: Vec<(String, Vec<u8>)>,
    /// System prompt text.
    pub system_prompt: String,
    /// Extra prompt text.
    pub additional_prompt: Option<String>,
    /// The agent profile.
    pub profile: AgentProfile,
}

/// A re-attached run; the caller drives `run` (e.g. in its `JoinSet`).
pub struct PendingRun {
    /// Incident.
    pub incident_id: String,
    /// Completes when the container is done and removed.
    pub run: BoxFuture<'static, AgentOutcome>,
}

impl std::fmt::Debug for PendingRun {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PendingRun")
            .field("incident_id", &self.incident_id)
            .finish_non_exhaustive()
    }
}

/// What `recover` found.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Runs still investigating, re-attached.
    pub reattached: Vec<PendingRun>,
    /// Containers stopped and removed (incident id, or container id if unlabelled).
    pub removed: Vec<String>,
}

/// Runs agents in Docker. Cheap to clone.
#[derive(Clone)]
pub struct DockerRunner {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    /// Set by [`DockerRunner::detach_all`]: dropped runs leave their containers for `recover`.
    detached: Arc<AtomicBool>,
    config: RunnerConfig,
    recorder: Arc<dyn ExecutionRecorder>,
    breaker: CircuitBreaker,
    live: Mutex<HashMap<String, broadcast::Sender<LogChunk>>>,
}

impl std::fmt::Debug for DockerRunner {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DockerRunner")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Everything needed to supervise a started container, for fresh and re-attached runs alike.
struct Supervision {
    incident_id: String,
    cluster: String,
    profile: String,
    container_id: String,
    image: String,
    workspace: Workspace,
    started_at: DateTime<Utc>,
    /// When the container's `create` call was made (`None` when re-attached).
    create_called_at: Option<DateTime<Utc>>,
    timeout: Duration,
    stop_grace: Duration,
    min_report_bytes: u64,
    log_cap_bytes: u64,
    output_cap_bytes: u64,
    output: OutputStream,
    /// Every secret value the container was given.
    masker: SecretMasker,
    recovered: bool,
}

/// The container's output: attached before start for fresh runs (nothing is lost, whatever
/// Docker's log driver rotates away), or Docker's log since the last capture when re-attaching.
type OutputStream = futures::stream::BoxStream<'static, Result<LogOutput, bollard::errors::Error>>;

impl DockerRunner {
    /// Connects to the local Docker engine (negotiating the API version) and checks it answers.
    pub async fn connect(
        config: RunnerConfig,
        recorder: Arc<dyn ExecutionRecorder>,
        breaker_store: Arc<dyn BreakerStateStore>,
    ) -> Result<Self, AgentError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|source| AgentError::DockerUnavailable { source })?
            .negotiate_version()
            .await
            .map_err(|source| AgentError::DockerUnavailable { source })?;
        docker
            .ping()
            .await
            .map_err(|source| AgentError::DockerUnavailable { source })?;
        Ok(Self {
            inner: Arc::new(Inner {
                docker,
                breaker: CircuitBreaker::new(config.breaker, breaker_store),
                config,
                recorder,
                live: Mutex::new(HashMap::new()),
                detached: Arc::new(AtomicBool::new(false)),
            }),
        })
    }

    /// For a graceful shutdown that will be followed by a restart: from now on, runs that are
    /// dropped (cancelled) leave their containers running instead of removing them, so the next
    /// process's [`DockerRunner::recover`] re-attaches to them. Timeouts still apply there.
    pub fn detach_all(&self) {
        self.inner.detached.store(true, Ordering::SeqCst);
    }

    fn guard(&self, id: String, workspace: Option<Workspace>) -> ContainerGuard {
        ContainerGuard {
            docker: self.inner.docker.clone(),
            id,
            workspace,
            removed: false,
            detached: self.inner.detached.clone(),
        }
    }

    /// Registers the live broadcast of `incident_id` until the returned entry is dropped.
    fn go_live(&self, incident_id: &str) -> (LiveEntry, broadcast::Sender<LogChunk>) {
        let (sender, _) = broadcast::channel(1024);
        self.live().insert(incident_id.to_owned(), sender.clone());
        let entry = LiveEntry {
            runner: self.clone(),
            incident_id: incident_id.to_owned(),
        };
        (entry, sender)
    }

    /// The bollard client (shared).
    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    /// The circuit breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.inner.breaker
    }

    /// Live output of a running incident, if it is running in this process.
    pub fn subscribe(&self, incident_id: &str) -> Option<broadcast::Receiver<LogChunk>> {
        self.live()
            .get(incident_id)
            .map(broadcast::Sender::subscribe)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<LogChunk>>> {
        self.inner
            .live
            .lock()
            .expect("live map lock is never poisoned")
    }

    /// Makes sure `image` exists locally, pulling it if a registry is reachable.
    pub async fn ensure_image(&self, image: &str) -> Result<(), AgentError> {
        let docker = &self.inner.docker;
        if docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (name, tag) = split_image(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let pull = async {
            let mut progress = docker.create_image(Some(options), None, None);
            while let Some(item) = progress.next().await {
                item.map_err(|error| error.to_string())?;
            }
            Ok::<(), String>(())
        };
        let timeout = Duration::from_secs(self.inner.config.pull_timeout_secs);
        let unavailable = |reason: String| AgentError::ImageUnavailable {
            image: image.to_owned(),
            reason,
        };
        match tokio::time::timeout(timeout, pull).await {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Err(unavailable(reason)),
            Err(_) => {
                return Err(unavailable(format!(
                    "pull timed out after {}s",
                    timeout.as_secs()
                )));
            }
        }
        docker
            .inspect_image(image)
            .await
            .map(|_| ())
            .map_err(|error| unavailable(error.to_string()))
    }

    /// Runs the agent for one incident and returns the validated outcome. The container is
    /// always removed. Errors only when the workspace cannot be prepared; every later problem is
    /// an `AgentFailed` outcome with a [`FailureReason`].
    pub async fn run(&self, request: AgentRequest) -> Result<AgentOutcome, AgentError> {
        let incident_id = request.incident.incident_id.clone();
        check_incident_id(&incident_id)?;
        let cluster = request.incident.cluster.clone();
        let workspace = Workspace::open(&self.inner.config.workspace_root, &incident_id)?;
        let permissions_json = permissions_json(&request).await;
        let started_at = Utc::now();
        {
            let workspace = workspace.clone();
            let request = request.clone();
            tokio::task::spawn_blocking(move || {
                workspace.create(&WorkspaceContents {
                    incident: &request.incident,
                    permissions_json,
                    context_files: &request.context_files,
                    system_prompt: &request.system_prompt,
                    additional_prompt: request.additional_prompt.as_deref(),
                    profile: &request.profile,
                    started_at,
                })
            })
            .await
            .expect("workspace creation does not panic")?;
        }
        tracing::info!(incident_id = %incident_id, cluster = %cluster, profile = %request.profile.name, "starting agent");

        let (_live, sender) = self.go_live(&incident_id);
        let prepared = match request.profile.resolve_secrets().await {
            Ok(secrets) => {
                let mut handed_out = secrets.handed_out.clone();
                if let Some(kubeconfig) = &request.kubeconfig {
                    handed_out.extend(kubeconfig_secrets(&read_small(kubeconfig).await));
                }
                let masker = SecretMasker::new(&handed_out);
                let started = self
                    .start(&request, &workspace, started_at, &secrets, masker.clone())
                    .await;
                started.map_err(|error| (not_ready(&request.profile, error, &masker), masker))
            }
            Err(problem) => Err((FailureReason::NotReady(problem), SecretMasker::default())),
        };
        let outcome = match prepared {
            Ok((supervision, guard)) => self.supervise(supervision, guard, sender).await,
            Err((failure, masker)) => {
                tracing::error!(incident_id = %incident_id, cluster = %cluster, error = %failure, "agent did not start");
                self.finish(Finished {
                    incident_id: incident_id.clone(),
                    cluster,
                    profile: request.profile.name.clone(),
                    container_id: String::new(),
                    image: request.profile.image.clone(),
                    workspace,
                    started_at,
                    create_called_at: None,
                    exit_code: None,
                    failure: Some(failure),
                    logs_capped: false,
                    recovered: false,
                    masker,
                    report: None,
                })
                .await
            }
        };
        Ok(outcome)
    }

    /// What is wrong with `profile` now, each problem named: secrets that cannot be read and, when
    /// `pull` is false, an image the engine does not have (when true, a missing image is pulled
    /// first, for up to the pull timeout).
    pub async fn check_profile(&self, profile: &AgentProfile, pull: bool) -> Vec<ProfileProblem> {
        let mut problems = profile.check_secrets().await;
        let image = if pull {
            self.ensure_image(&profile.image)
                .await
                .map_err(|error| match error {
                    AgentError::ImageUnavailable { reason, .. } => {
                        format!("not present locally and could not be pulled: {reason}")
                    }
                    other => other.to_string(),
                })
        } else {
            self.inner
                .docker
                .inspect_image(&profile.image)
                .await
                .map(|_| ())
                .map_err(|error| format!("not present locally: {error}"))
        };
        if let Err(reason) = image {
            problems.push(ProfileProblem::Image {
                profile: profile.name.clone(),
                image: profile.image.clone(),
                reason,
            });
        }
        problems
    }

    /// Ensures the image, resolves secrets, creates and starts the container.
    async fn start(
        &self,
        request: &AgentRequest,
        workspace: &Workspace,
        started_at: DateTime<Utc>,
        secrets: &ResolvedSecrets,
        masker: SecretMasker,
    ) -> Result<(Supervision, ContainerGuard), AgentError> {
        let profile = &request.profile;
        let incident_id = &request.incident.incident_id;
        let cluster = &request.incident.cluster;
        let mut env = vec![
            format!("AGENT_CLI={}", profile.cli),
            format!("AGENT_HOME={AGENT_HOME}"),
            "HOME=/tmp".to_owned(),
            format!("LLM_MODEL={}", profile.model),
            format!("AGENT_ALLOWED_TOOLS={}", profile.allowed_tools),
            format!("INCIDENT_ID={incident_id}"),
            format!("PROMPT_FILE={AGENT_HOME}/prompt.md"),
            format!("OUTPUT_DIR={AGENT_HOME}/output"),
            "OUTPUT_FORMAT=text".to_owned(),
        ];
        if request.kubeconfig.is_some() {
            env.push(format!("KUBECONFIG={AGENT_HOME}/.kube/config"));
        }
        env.extend(
            profile
                .env
                .iter()
                .map(|(key, value)| format!("{key}={value}")),
        );
        for (name, value) in &secrets.env {
            env.push(format!("{name}={}", value.expose()));
        }

        self.ensure_image(&profile.image).await?;

        let container_name = format!("nightcrier-agent-{incident_id}");
        let argv = profile.render_command(&[
            ("model", &profile.model),
            ("allowed_tools", &profile.allowed_tools),
            ("prompt_file", &format!("{AGENT_HOME}/prompt.md")),
            ("incident_id", incident_id),
            ("output_dir", &format!("{AGENT_HOME}/output")),
            ("cli", &profile.cli),
        ]);
        let mut binds = workspace.binds();
        {
            let workspace = workspace.clone();
            let kubeconfig = request.kubeconfig.clone();
            let secret_files = profile.secret_files.clone();
            let staged = tokio::task::spawn_blocking(move || {
                workspace.stage_credentials(kubeconfig.as_deref(), &secret_files)
            })
            .await
            .expect("staging credentials does not panic")?;
            binds.extend(staged);
        }
        let labels = HashMap::from([
            (
                LABEL_INSTANCE.to_owned(),
                self.inner.config.instance_id.clone(),
            ),
            (LABEL_INCIDENT.to_owned(), incident_id.clone()),
            (LABEL_CLUSTER.to_owned(), cluster.clone()),
            (LABEL_PROFILE.to_owned(), profile.name.clone()),
            (
                LABEL_TIMEOUT.to_owned(),
                profile.timeout.as_secs().to_string(),
            ),
            (
                LABEL_GRACE.to_owned(),
                profile.stop_grace.as_secs().to_string(),
            ),
            (
                LABEL_MIN_REPORT.to_owned(),
                profile.min_report_bytes.to_string(),
            ),
            (LABEL_LOG_CAP.to_owned(), profile.log_cap_bytes.to_string()),
            (
                LABEL_OUTPUT_CAP.to_owned(),
                profile.output_cap_bytes.to_string(),
            ),
            (
                LABEL_SECRET_ENV.to_owned(),
                secrets
                    .env
                    .iter()
                    .map(|(name, _)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ]);
        let tmpfs = profile
            .scratch
            .iter()
            .map(|path| {
                (
                    path.clone(),
                    format!("rw,nosuid,nodev,size={},mode=1777", profile.scratch_bytes),
                )
            })
            .collect();
        if profile.network == crate::profile::NetworkMode::Host {
            tracing::warn!(incident_id = %incident_id, cluster = %cluster, "agent profile uses host networking");
        }
        let body = ContainerCreateBody {
            image: Some(profile.image.clone()),
            cmd: Some(argv),
            env: Some(env),
            user: Some(format!("{}:{}", profile.uid, profile.gid)),
            working_dir: Some(AGENT_HOME.to_owned()),
            labels: Some(labels),
            tty: Some(false),
            open_stdin: Some(false),
            host_config: Some(HostConfig {
                binds: Some(binds),
                cap_drop: Some(vec!["ALL".to_owned()]),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                readonly_rootfs: Some(true),
                tmpfs: Some(tmpfs),
                memory: Some(profile.limits.memory_bytes),
                memory_swap: Some(profile.limits.memory_bytes),
                nano_cpus: Some(profile.limits.nano_cpus),
                pids_limit: Some(profile.limits.pids),
                network_mode: Some(profile.network.as_docker().to_owned()),
                privileged: Some(false),
                auto_remove: Some(false),
                log_config: Some(HostConfigLogConfig {
                    typ: Some("json-file".to_owned()),
                    config: Some(HashMap::from([
                        ("max-size".to_owned(), profile.log_cap_bytes.to_string()),
                        ("max-file".to_owned(), "1".to_owned()),
                    ])),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let docker = &self.inner.docker;
        let docker_error = |operation: &'static str, container: &str| {
            let incident_id = incident_id.clone();
            let container = container.to_owned();
            move |source| AgentError::Docker {
                operation,
                incident_id,
                container,
                source,
            }
        };
        let options = CreateContainerOptionsBuilder::default()
            .name(&container_name)
            .build();
        let create_called_at = Utc::now();
        let created = docker
            .create_container(Some(options), body)
            .await
            .map_err(docker_error("create", &container_name))?;
        let mut guard = self.guard(created.id.clone(), Some(workspace.clone()));
        // Attached before start, so output is captured exactly once from the first byte
        // (`logs=true` would replay the log file and duplicate early lines).
        let attach = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(false)
            .build();
        let started = async {
            let attached = docker
                .attach_container(&created.id, Some(attach))
                .await
                .map_err(docker_error("attach", &created.id))?;
            docker
                .start_container(&created.id, None)
                .await
                .map_err(docker_error("start", &created.id))?;
            Ok::<_, AgentError>(attached)
        };
        let attached = match started.await {
            Ok(attached) => attached,
            Err(error) => {
                if let Err(remove_error) = guard.remove().await {
                    tracing::error!(incident_id = %incident_id, cluster = %cluster, container = %created.id, error = %remove_error, "failed to remove agent container that did not start");
                }
                return Err(error);
            }
        };
        let start = ExecutionStart {
            incident_id: incident_id.clone(),
            cluster: cluster.clone(),
            container_id: created.id.clone(),
            container_name,
            image: profile.image.clone(),
            profile: profile.name.clone(),
            started_at,
            log_paths: workspace.log_paths(),
        };
        if let Err(error) = self.inner.recorder.record_start(&start).await {
            tracing::error!(incident_id = %incident_id, cluster = %cluster, container = %created.id, error = %error, "failed to record agent start");
        }
        tracing::info!(incident_id = %incident_id, cluster = %cluster, container = %created.id, image = %profile.image, "agent container started");
        Ok((
            Supervision {
                incident_id: incident_id.clone(),
                cluster: cluster.clone(),
                profile: profile.name.clone(),
                container_id: created.id,
                image: profile.image.clone(),
                workspace: workspace.clone(),
                started_at,
                create_called_at: Some(create_called_at),
                timeout: profile.timeout,
                stop_grace: profile.stop_grace,
                min_report_bytes: profile.min_report_bytes,
                log_cap_bytes: profile.log_cap_bytes,
                output_cap_bytes: profile.output_cap_bytes,
                output: attached.output,
                masker,
                recovered: false,
            },
            guard,
        ))
    }

    /// Streams logs while waiting with the timeout; stops, kills and removes; then finishes.
    async fn supervise(
        &self,
        supervision: Supervision,
        mut guard: ContainerGuard,
        sender: broadcast::Sender<LogChunk>,
    ) -> AgentOutcome {
        let docker = self.inner.docker.clone();
        let id = supervision.container_id.clone();
        let incident_id = supervision.incident_id.clone();
        let cluster = supervision.cluster.clone();
        let log_paths = supervision.workspace.log_paths();
        let masker = supervision.masker.clone();
        let pump = pump_logs(
            supervision.output,
            log_paths,
            supervision.log_cap_bytes,
            &masker,
            sender,
        );
        tokio::pin!(pump);
        let mut pumped = None;
        let mut overflow = None;
        let waited = {
            let waiting =
                wait_with_timeout(&docker, &id, supervision.timeout, supervision.stop_grace);
            tokio::pin!(waiting);
            let over_cap = output_over_cap(
                supervision.workspace.output_dir(),
                supervision.output_cap_bytes,
            );
            tokio::pin!(over_cap);
            loop {
                tokio::select! {
                    waited = &mut waiting => break waited,
                    result = &mut pump, if pumped.is_none() => pumped = Some(result),
                    size = &mut over_cap, if overflow.is_none() => {
                        tracing::warn!(incident_id = %incident_id, cluster = %cluster, container = %id, size, limit = supervision.output_cap_bytes, "agent output over its cap; killing the agent");
                        overflow = Some(size);
                        stop(&docker, &id, Duration::ZERO).await;
                    }
                }
            }
        };
        if pumped.is_none() {
            pumped = tokio::time::timeout(LOG_DRAIN, &mut pump).await.ok();
        }
        let logs_capped = match pumped {
            Some(Ok(capped)) => capped,
            Some(Err(error)) => {
                tracing::warn!(incident_id = %incident_id, cluster = %cluster, container = %id, error = %error, "agent log capture failed");
                false
            }
            None => {
                tracing::warn!(incident_id = %incident_id, cluster = %cluster, container = %id, "agent log stream did not end after the container stopped");
                false
            }
        };
        let (exit_code, harness_failure) = match waited {
            Ok(Waited::Exited(code)) => (Some(code), None),
            Ok(Waited::TimedOut(code)) => {
                tracing::warn!(incident_id = %incident_id, cluster = %cluster, container = %id, "agent timed out; stopped");
                (
                    code,
                    Some(FailureReason::TimedOut {
                        timeout: supervision.timeout,
                    }),
                )
            }
            Ok(Waited::Gone) => (None, Some(FailureReason::ContainerLost)),
            Err(error) => (None, Some(FailureReason::Harness(error.to_string()))),
        };
        let harness_failure = match overflow {
            Some(size) => Some(FailureReason::OutputTooLarge {
                size,
                limit: supervision.output_cap_bytes,
            }),
            None => harness_failure,
        };
        if let Err(error) = guard.remove().await {
            tracing::error!(incident_id = %incident_id, cluster = %cluster, container = %id, error = %error, "failed to remove agent container");
        }
        if overflow.is_some() {
            let output = supervision.workspace.output_dir();
            let emptied = tokio::task::spawn_blocking(move || empty_dir(&output)).await;
            if !matches!(emptied, Ok(Ok(()))) {
                tracing::error!(incident_id = %incident_id, cluster = %cluster, "could not empty the oversized output/ folder");
            }
        }
        // The container is gone, so nothing writes here any more: mask what the agent left
        // before anyone reads it.
        if !supervision.masker.is_empty() {
            let masker = supervision.masker.clone();
            let workspace = supervision.workspace.clone();
            let masked = tokio::task::spawn_blocking(move || mask_agent_files(&workspace, &masker))
                .await
                .expect("masking files does not panic");
            if masked.failed > 0 {
                tracing::error!(incident_id = %incident_id, cluster = %cluster, files = masked.failed, "could not mask secrets in some agent files");
            }
            if masked.masked > 0 {
                tracing::warn!(incident_id = %incident_id, cluster = %cluster, files = masked.masked, "agent output held secrets nightcrier gave it; they were masked");
            }
        }
        let failure = outcome::judge(
            harness_failure,
            exit_code,
            &supervision.workspace.report_path(),
            supervision.min_report_bytes,
        )
        .await;
        let report = read_report(&supervision.workspace.report_path(), &supervision.masker).await;
        self.finish(Finished {
            incident_id,
            cluster,
            profile: supervision.profile,
            container_id: id,
            image: supervision.image,
            workspace: supervision.workspace,
            started_at: supervision.started_at,
            create_called_at: supervision.create_called_at,
            exit_code,
            failure,
            logs_capped,
            recovered: supervision.recovered,
            masker: supervision.masker,
            report,
        })
        .await
    }

    /// Breaker bookkeeping, execution record and the final `incident.json`.
    async fn finish(&self, finished: Finished) -> AgentOutcome {
        let completed_at = Utc::now();
        let Finished {
            incident_id,
            cluster,
            profile,
            container_id,
            image,
            workspace,
            started_at,
            create_called_at,
            exit_code,
            failure,
            logs_capped,
            recovered,
            masker,
            report,
        } = finished;
        let failure = failure.map(|failure| failure.masked(&masker));
        let breaker_event = match &failure {
            // The profile cannot run at all: a configuration problem, not the cluster's.
            Some(reason @ FailureReason::NotReady(_)) => {
                tracing::error!(incident_id = %incident_id, cluster = %cluster, error = %reason, "agent profile is not ready");
                None
            }
            Some(reason) => {
                tracing::warn!(incident_id = %incident_id, cluster = %cluster, container = %container_id, error = %reason, "agent failed");
                self.inner
                    .breaker
                    .record_failure(&cluster, &reason.to_string())
                    .await
            }
            None => {
                tracing::info!(incident_id = %incident_id, cluster = %cluster, container = %container_id, "agent produced a valid report");
                self.inner.breaker.record_success(&cluster).await
            }
        };
        let record = ExecutionFinish {
            incident_id: incident_id.clone(),
            profile,
            image: image.clone(),
            started_at,
            container_id: container_id.clone(),
            exit_code,
            completed_at,
            failure: failure.clone(),
            logs_capped,
        };
        if let Err(error) = self.inner.recorder.record_finish(&record).await {
            tracing::error!(incident_id = %incident_id, cluster = %cluster, container = %container_id, error = %error, "failed to record agent finish");
        }
        let status = if failure.is_some() {
            IncidentStatus::AgentFailed
        } else {
            IncidentStatus::Resolved
        };
        let log_paths = workspace.log_paths();
        {
            let workspace = workspace.clone();
            let removed = tokio::task::spawn_blocking(move || workspace.remove_credentials())
                .await
                .expect("removing credentials does not panic");
            if let Err(error) = removed {
                tracing::error!(incident_id = %incident_id, cluster = %cluster, error = %error, "failed to remove staged credentials");
            }
        }
        {
            let workspace = workspace.clone();
            let failure_text = failure.as_ref().map(ToString::to_string);
            let log_map = log_paths.as_map();
            let written = tokio::task::spawn_blocking(move || {
                let mut document = workspace.read_document()?;
                document.status = status.as_str().to_owned();
                document.completed_at = Some(completed_at);
                document.exit_code = exit_code;
                document.failure_reason = failure_text;
                document.log_paths = Some(log_map);
                workspace.write_final(&document)
            })
            .await
            .expect("incident.json rewrite does not panic");
            if let Err(error) = written {
                tracing::error!(incident_id = %incident_id, cluster = %cluster, error = %error, "failed to rewrite incident.json");
            }
        }
        AgentOutcome {
            incident_id,
            cluster,
            container_id,
            image,
            exit_code,
            started_at,
            create_called_at,
            completed_at,
            status,
            failure,
            log_paths,
            logs_capped,
            breaker_event,
            recovered,
            report,
        }
    }

    /// After a restart: re-attaches to this instance's containers whose incident is still
    /// investigating (with the remaining timeout) and stops and removes all others.
    pub async fn recover(
        &self,
        is_investigating: impl Fn(&str) -> bool,
    ) -> Result<RecoveryReport, AgentError> {
        let instance_id = &self.inner.config.instance_id;
        let filters = HashMap::from([("label", vec![format!("{LABEL_INSTANCE}={instance_id}")])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = self
            .inner
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| AgentError::List {
                instance_id: instance_id.clone(),
                source,
            })?;
        let mut report = RecoveryReport::default();
        for summary in containers {
            let Some(container_id) = summary.id else {
                continue;
            };
            let labels = summary.labels.unwrap_or_default();
            let incident_id = labels.get(LABEL_INCIDENT).cloned().unwrap_or_default();
            let keep = check_incident_id(&incident_id).is_ok() && is_investigating(&incident_id);
            if keep {
                match self.reattach(&container_id, &incident_id, &labels).await {
                    Ok(pending) => {
                        tracing::info!(incident_id = %incident_id, container = %container_id, "re-attached to agent container");
                        report.reattached.push(pending);
                        continue;
                    }
                    Err(error) => {
                        tracing::error!(incident_id = %incident_id, container = %container_id, error = %error, "cannot re-attach; removing container");
                    }
                }
            }
            let grace =
                label_number(&labels, LABEL_GRACE).unwrap_or(defaults::STOP_GRACE.as_secs());
            let workspace = Workspace::open(&self.inner.config.workspace_root, &incident_id).ok();
            let mut guard = self.guard(container_id.clone(), workspace.clone());
            stop(
                &self.inner.docker,
                &container_id,
                Duration::from_secs(grace),
            )
            .await;
            if let Err(error) = guard.remove().await {
                tracing::error!(incident_id = %incident_id, container = %container_id, error = %error, "failed to remove orphaned agent container");
            }
            if let Some(workspace) = workspace {
                let removed = tokio::task::spawn_blocking(move || workspace.remove_credentials())
                    .await
                    .expect("removing credentials does not panic");
                if let Err(error) = removed {
                    tracing::error!(incident_id = %incident_id, error = %error, "failed to remove staged credentials");
                }
            }
            tracing::info!(incident_id = %incident_id, container = %container_id, "removed orphaned agent container");
            report.removed.push(if incident_id.is_empty() {
                container_id
            } else {
                incident_id
            });
        }
        Ok(report)
    }

    async fn reattach(
        &self,
        container_id: &str,
        incident_id: &str,
        labels: &HashMap<String, String>,
    ) -> Result<PendingRun, AgentError> {
        let inspected = self
            .inner
            .docker
            .inspect_container(container_id, None)
            .await
            .map_err(|source| AgentError::Docker {
                operation: "inspect",
                incident_id: incident_id.to_owned(),
                container: container_id.to_owned(),
                source,
            })?;
        let started_at = inspected
            .state
            .as_ref()
            .and_then(|state| state.started_at.as_deref())
            .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.to_utc())
            .unwrap_or_else(Utc::now);
        let timeout = label_number(labels, LABEL_TIMEOUT)
            .map(Duration::from_secs)
            .unwrap_or(defaults::TIMEOUT);
        let elapsed = (Utc::now() - started_at).to_std().unwrap_or_default();
        let workspace = Workspace::open(&self.inner.config.workspace_root, incident_id)?;
        let masker = handed_out_to(&inspected, labels, &workspace).await;
        // Re-read from the last captured write; a second of output may be duplicated.
        let logs_since = tokio::fs::metadata(workspace.log_paths().full)
            .await
            .ok()
            .and_then(|metadata| metadata.modified().ok())
            .map(DateTime::<Utc>::from)
            .unwrap_or(started_at)
            .timestamp();
        let supervision = Supervision {
            incident_id: incident_id.to_owned(),
            cluster: labels.get(LABEL_CLUSTER).cloned().unwrap_or_default(),
            profile: labels.get(LABEL_PROFILE).cloned().unwrap_or_default(),
            container_id: container_id.to_owned(),
            image: inspected
                .config
                .and_then(|config| config.image)
                .unwrap_or_default(),
            workspace,
            started_at,
            create_called_at: None,
            // The original timeout counts from the container's start, not from now.
            timeout: timeout.saturating_sub(elapsed),
            stop_grace: label_number(labels, LABEL_GRACE)
                .map(Duration::from_secs)
                .unwrap_or(defaults::STOP_GRACE),
            min_report_bytes: label_number(labels, LABEL_MIN_REPORT)
                .unwrap_or(defaults::MIN_REPORT_BYTES),
            log_cap_bytes: label_number(labels, LABEL_LOG_CAP)
                .unwrap_or_else(|| default_size(defaults::LOG_CAP)),
            output_cap_bytes: label_number(labels, LABEL_OUTPUT_CAP)
                .unwrap_or_else(|| default_size(defaults::OUTPUT_CAP)),
            output: self
                .inner
                .docker
                .logs(
                    container_id,
                    Some(
                        LogsOptionsBuilder::default()
                            .follow(true)
                            .stdout(true)
                            .stderr(true)
                            .since(i32::try_from(logs_since).unwrap_or(0))
                            .build(),
                    ),
                )
                .boxed(),
            masker,
            recovered: true,
        };
        let runner = self.clone();
        let guard = self.guard(container_id.to_owned(), Some(supervision.workspace.clone()));
        let incident = incident_id.to_owned();
        Ok(PendingRun {
            incident_id: incident_id.to_owned(),
            run: Box::pin(async move {
                let (_live, sender) = runner.go_live(&incident);
                runner.supervise(supervision, guard, sender).await
            }),
        })
    }
}

struct Finished {
    incident_id: String,
    cluster: String,
    profile: String,
    container_id: String,
    image: String,
    workspace: Workspace,
    started_at: DateTime<Utc>,
    create_called_at: Option<DateTime<Utc>>,
    exit_code: Option<i64>,
    failure: Option<FailureReason>,
    logs_capped: bool,
    recovered: bool,
    masker: SecretMasker,
    report: Option<String>,
}

enum Waited {
    Exited(i64),
    TimedOut(Option<i64>),
    Gone,
}

async fn wait_with_timeout(
    docker: &Docker,
    id: &str,
    timeout: Duration,
    grace: Duration,
) -> Result<Waited, bollard::errors::Error> {
    match tokio::time::timeout(timeout, wait_exit(docker, id)).await {
        Ok(result) => result,
        Err(_) => {
            stop(docker, id, grace).await;
            let code =
                match tokio::time::timeout(grace + Duration::from_secs(10), wait_exit(docker, id))
                    .await
                {
                    Ok(Ok(Waited::Exited(code))) => Some(code),
                    _ => None,
                };
            Ok(Waited::TimedOut(code))
        }
    }
}

async fn wait_exit(docker: &Docker, id: &str) -> Result<Waited, bollard::errors::Error> {
    let mut stream = docker.wait_container(id, None);
    match stream.next().await {
        Some(Ok(response)) => Ok(Waited::Exited(response.status_code)),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            Ok(Waited::Exited(code))
        }
        Some(Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        })) => Ok(Waited::Gone),
        Some(Err(error)) => Err(error),
        None => Ok(Waited::Gone),
    }
}

/// Resolves, with the size found, once what lies under `dir` exceeds `cap` bytes.
async fn output_over_cap(dir: PathBuf, cap: u64) -> u64 {
    let mut ticker = tokio::time::interval(OUTPUT_CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let walked = dir.clone();
        let size = tokio::task::spawn_blocking(move || disk_usage(&walked, cap))
            .await
            .unwrap_or(0);
        if size > cap {
            return size;
        }
    }
}

/// Bytes under `dir`: per entry the larger of its length and its allocated blocks, at least
/// [`OUTPUT_MIN_ENTRY_BYTES`]. Symlinks are not followed. Stops counting once past `cap`.
fn disk_usage(dir: &Path, cap: u64) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            // `DirEntry::metadata` does not follow symlinks
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(entry.path());
            }
            let bytes = metadata
                .len()
                .max(metadata.blocks().saturating_mul(512))
                .max(OUTPUT_MIN_ENTRY_BYTES);
            total = total.saturating_add(bytes);
            if total > cap {
                return total;
            }
        }
    }
    total
}

/// Removes everything inside `dir`, keeping `dir` itself (its mode and owner are the contract).
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// SIGTERM, the grace period, then SIGKILL (Docker's stop does both); an explicit kill covers a
/// daemon that did not finish the stop.
async fn stop(docker: &Docker, id: &str, grace: Duration) {
    let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
    let options = StopContainerOptionsBuilder::default().t(seconds).build();
    if let Err(error) = docker.stop_container(id, Some(options)).await {
        tracing::debug!(container = %id, error = %error, "stop failed");
    }
    let still_running = docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|inspected| inspected.state)
        .and_then(|state| state.running)
        .unwrap_or(false);
    if still_running {
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        if let Err(error) = docker.kill_container(id, Some(options)).await {
            tracing::warn!(container = %id, error = %error, "kill failed");
        }
    }
}

/// Follows the container's output into the capped files; returns whether a cap was hit.
async fn pump_logs(
    mut stream: OutputStream,
    paths: crate::workspace::LogPaths,
    cap: u64,
    masker: &SecretMasker,
    sender: broadcast::Sender<LogChunk>,
) -> std::io::Result<bool> {
    let mut sink = LogSink::open(&paths, cap, masker, sender).await?;
    while let Some(item) = stream.next().await {
        match item {
            Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                sink.write(LogStream::Stdout, &message).await?;
            }
            Ok(LogOutput::StdErr { message }) => sink.write(LogStream::Stderr, &message).await?,
            Ok(LogOutput::StdIn { .. }) => {}
            Err(error) => {
                sink.finish().await?;
                return Err(std::io::Error::other(error));
            }
        }
    }
    sink.finish().await?;
    Ok(sink.capped())
}

/// Removes the container when dropped unless `remove` already did, so cancellation and error
/// paths never leave a container behind.
struct ContainerGuard {
    docker: Docker,
    id: String,
    /// Whose staged credentials to delete after a cancelled run.
    workspace: Option<Workspace>,
    removed: bool,
    detached: Arc<AtomicBool>,
}

impl ContainerGuard {
    async fn remove(&mut self) -> Result<(), bollard::errors::Error> {
        let result = remove_container(&self.docker, &self.id).await;
        self.removed = true;
        result
    }
}

async fn remove_container(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => Ok(()),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(()),
        Err(error) => Err(error),
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if self.removed || self.detached.load(Ordering::SeqCst) {
            return;
        }
        // Drop cannot await: hand the removal to the runtime. This is the one detached task,
        // bounded by a single API call, and only on cancellation paths.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let id = std::mem::take(&mut self.id);
            let workspace = self.workspace.take();
            handle.spawn(async move {
                if let Err(error) = remove_container(&docker, &id).await {
                    tracing::error!(container = %id, error = %error, "failed to remove agent container after cancellation");
                }
                if let Some(workspace) = workspace {
                    let removed =
                        tokio::task::spawn_blocking(move || workspace.remove_credentials()).await;
                    if let Ok(Err(error)) = removed {
                        tracing::error!(container = %id, error = %error, "failed to remove staged credentials after cancellation");
                    }
                }
            });
        }
    }
}

/// Removes an incident's live broadcast when its run ends or is dropped.
struct LiveEntry {
    runner: DockerRunner,
    incident_id: String,
}

impl Drop for LiveEntry {
    fn drop(&mut self) {
        self.runner.live().remove(&self.incident_id);
    }
}

async fn permissions_json(request: &AgentRequest) -> String {
    let cluster = &request.incident.cluster;
    let unknown = |warning: &str| UnknownPermissions {
        cluster_name: cluster.clone(),
        status: "unknown".to_owned(),
        validated_at: Utc::now(),
        warnings: vec![warning.to_owned()],
    };
    let text = match &request.permissions {
        PermissionsSource::Known(permissions) => serde_json::to_string_pretty(permissions),
        PermissionsSource::Unknown => {
            serde_json::to_string_pretty(&unknown("cluster permissions were not checked"))
        }
        PermissionsSource::Probe {
            kubeconfig,
            secrets_access_allowed,
        } => match probe_cluster_permissions(cluster, kubeconfig, *secrets_access_allowed).await {
            ProbedPermissions::Known(permissions) => serde_json::to_string_pretty(&permissions),
            ProbedPermissions::Unknown(unknown) => serde_json::to_string_pretty(&unknown),
        },
    };
    text.expect("permissions documents always serialise")
}

/// The failure of a run that did not start: a missing image is the profile's problem (the
/// incident stays queued), anything else the harness's; error texts are masked.
fn not_ready(profile: &AgentProfile, error: AgentError, masker: &SecretMasker) -> FailureReason {
    match error {
        AgentError::ImageUnavailable { image, reason } => {
            FailureReason::NotReady(ProfileProblem::Image {
                profile: profile.name.clone(),
                image,
                reason: format!(
                    "not present locally and could not be pulled: {}",
                    masker.mask_str(&reason)
                ),
            })
        }
        other => FailureReason::Harness(masker.mask_str(&other.to_string()).into_owned()),
    }
}

/// A default size constant in bytes (they are valid by construction, checked by a unit test).
fn default_size(text: &str) -> u64 {
    parse_size(text).unwrap_or_default()
}

/// Reads a small credential file for masking; empty when unreadable or large.
async fn read_small(path: &Path) -> Vec<u8> {
    match tokio::fs::metadata(path).await {
        Ok(metadata) if metadata.is_file() && metadata.len() <= 1 << 20 => {
            tokio::fs::read(path).await.unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Credential values of a kubeconfig (`token: …`, `client-key-data: …`), to be masked.
fn kubeconfig_secrets(text: &[u8]) -> Vec<NamedSecret> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().trim_start_matches("- ").split_once(':')?;
            let value = value.trim().trim_matches(['"', '\'']);
            (KUBECONFIG_SECRET_KEYS.contains(&key.trim()) && value.len() >= 8).then(|| {
                NamedSecret {
                    name: "kubeconfig".to_owned(),
                    value: value.as_bytes().to_vec(),
                }
            })
        })
        .collect()
}

/// The secret values a running container was given, read back after a restart: the values of
/// its labelled secret variables from its own environment, and the staged secret files and
/// kubeconfig still in the workspace.
async fn handed_out_to(
    inspected: &bollard::models::ContainerInspectResponse,
    labels: &HashMap<String, String>,
    workspace: &Workspace,
) -> SecretMasker {
    let names: Vec<&str> = labels
        .get(LABEL_SECRET_ENV)
        .map(|names| names.split(',').filter(|name| !name.is_empty()).collect())
        .unwrap_or_default();
    let mut handed_out: Vec<NamedSecret> = inspected
        .config
        .as_ref()
        .and_then(|config| config.env.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let (name, value) = entry.split_once('=')?;
            names.contains(&name).then(|| NamedSecret {
                name: name.to_owned(),
                value: value.as_bytes().to_vec(),
            })
        })
        .collect();
    let staged = workspace.credentials_dir();
    if let Ok(mut entries) = tokio::fs::read_dir(staged.join("secrets")).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            let bytes = read_small(&entry.path()).await;
            let end = bytes
                .iter()
                .rposition(|byte| !matches!(byte, b'\n' | b'\r'))
                .map_or(0, |last| last + 1);
            handed_out.push(NamedSecret {
                name: entry.file_name().to_string_lossy().into_owned(),
                value: bytes[..end].to_vec(),
            });
        }
    }
    handed_out.extend(kubeconfig_secrets(
        &read_small(&staged.join("kubeconfig")).await,
    ));
    SecretMasker::new(&handed_out)
}

/// What [`mask_agent_files`] did.
#[derive(Debug, Default)]
struct MaskedFiles {
    /// Files rewritten with secrets masked.
    masked: usize,
    /// Files that could not be checked or rewritten.
    failed: usize,
}

/// Rewrites, with secrets masked, every regular file the agent could write (`output/`, and its
/// own files in `logs/`; the captured logs were masked as they were written). Symlinks are
/// never followed: the agent made them. Blocking; call after the container is gone.
fn mask_agent_files(workspace: &Workspace, masker: &SecretMasker) -> MaskedFiles {
    let mut result = MaskedFiles::default();
    let captured = workspace.log_paths();
    let mut pending = vec![workspace.output_dir(), workspace.logs_dir()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(metadata) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if metadata.is_dir() {
                pending.push(path);
            } else if metadata.is_file()
                && ![&captured.stdout, &captured.stderr, &captured.full].contains(&&path)
            {
                match mask_file(&path, masker) {
                    Ok(true) => result.masked += 1,
                    Ok(false) => {}
                    Err(_) => result.failed += 1,
                }
            }
        }
    }
    result
}

/// Masks one file in place (through a temporary file and a rename); whether it held a secret.
fn mask_file(path: &Path, masker: &SecretMasker) -> std::io::Result<bool> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::PermissionsExt as _;
    let mut source = std::fs::File::open(path)?;
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stream = masker.stream();
    let mut found = false;
    // First pass: most files hold no secret and are left untouched.
    loop {
        let read = source.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        let _ = stream.push(&chunk[..read]);
        if stream.masked() > 0 {
            found = true;
            break;
        }
    }
    let _ = stream.finish();
    if !found && stream.masked() == 0 {
        return Ok(false);
    }
    let mode = source.metadata()?.permissions().mode();
    let mut source = std::fs::File::open(path)?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.nightcrier-masked"));
    let mut target = std::fs::File::create(&temporary)?;
    let mut stream = masker.stream();
    loop {
        let read = source.read(&mut chunk)?;
        if read == 0 {
            break;
        }
        target.write_all(&stream.push(&chunk[..read]))?;
    }
    target.write_all(&stream.finish())?;
    target.sync_all()?;
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&temporary, path)?;
    Ok(true)
}

/// The report as the engine will see it, masked (`None` when there is none).
async fn read_report(path: &Path, masker: &SecretMasker) -> Option<String> {
    let metadata = tokio::fs::symlink_metadata(path).await.ok()?;
    if !metadata.is_file() {
        return None;
    }
    let bytes = tokio::fs::read(path).await.ok()?;
    let text = String::from_utf8_lossy(&bytes);
    Some(masker.mask_str(&text).into_owned())
}

fn label_number<T: std::str::FromStr>(labels: &HashMap<String, String>, key: &str) -> Option<T> {
    labels.get(key).and_then(|value| value.parse().ok())
}

/// `registry/name:tag` → (`registry/name`, `tag`), defaulting the tag to `latest`.
fn split_image(image: &str) -> (&str, &str) {
    let last_slash = image.rfind('/').unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(colon) if !image.contains('@') => {
            let at = last_slash + colon;
            (&image[..at], &image[at + 1..])
        }
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_are_valid() {
        for text in [
            defaults::LOG_CAP,
            defaults::OUTPUT_CAP,
            defaults::MEMORY,
            defaults::SCRATCH_SIZE,
        ] {
            assert!(parse_size(text).is_ok(), "{text}");
        }
        assert_eq!(default_size(defaults::LOG_CAP), 10 << 20);
    }

    #[test]
    fn kubeconfig_credentials_are_found() {
        let kubeconfig = b"users:\n- name: admin\n  user:\n    token: eyJhbGciOiJSUzI1NiJ9.payload\n    client-key-data: 'LS0tLS1CRUdJTiBSU0E='\n    username: admin\n";
        let found: Vec<Vec<u8>> = kubeconfig_secrets(kubeconfig)
            .into_iter()
            .map(|secret| secret.value)
            .collect();
        assert_eq!(
            found,
            [
                b"eyJhbGciOiJSUzI1NiJ9.payload".to_vec(),
                b"LS0tLS1CRUdJTiBSU0E=".to_vec()
            ]
        );
    }

    #[test]
    fn agent_files_are_masked_in_place_and_symlinks_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(root.path(), "inc-1").unwrap();
        std::fs::create_dir_all(workspace.output_dir().join("deep")).unwrap();
        std::fs::create_dir_all(workspace.logs_dir()).unwrap();
        let outside = root.path().join("outside.txt");
        std::fs::write(&outside, "key sk-outside-0123456789").unwrap();
        std::fs::write(
            workspace.report_path(),
            "# Report\nANTHROPIC_API_KEY=sk-ant-0123456789\n",
        )
        .unwrap();
        std::fs::write(workspace.output_dir().join("deep/clean.txt"), "nothing").unwrap();
        std::fs::write(workspace.logs_dir().join("notes.log"), "sk-ant-0123456789").unwrap();
        std::os::unix::fs::symlink(&outside, workspace.output_dir().join("link")).unwrap();
        let masker = SecretMasker::new(&[
            NamedSecret {
                name: "ANTHROPIC_API_KEY".into(),
                value: b"sk-ant-0123456789".to_vec(),
            },
            NamedSecret {
                name: "OTHER".into(),
                value: b"sk-outside-0123456789".to_vec(),
            },
        ]);
        let result = mask_agent_files(&workspace, &masker);
        assert_eq!((result.masked, result.failed), (2, 0));
        assert_eq!(
            std::fs::read_to_string(workspace.report_path()).unwrap(),
            "# Report\nANTHROPIC_API_KEY=[REDACTED:ANTHROPIC_API_KEY]\n"
        );
        assert_eq!(
            std::fs::read_to_string(workspace.logs_dir().join("notes.log")).unwrap(),
            "[REDACTED:ANTHROPIC_API_KEY]"
        );
        assert_eq!(
            std::fs::read_to_string(&outside).unwrap(),
            "key sk-outside-0123456789",
            "a symlink's target is not the agent's file"
        );
    }

    #[test]
    fn image_references_split_into_name_and_tag() {
        assert_eq!(
            split_image("nightcrier-agent:latest"),
            ("nightcrier-agent", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/agent"),
            ("localhost:5000/agent", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/agent:v1"),
            ("localhost:5000/agent", "v1")
        );
        assert_eq!(split_image("agent"), ("agent", "latest"));
    }
}
