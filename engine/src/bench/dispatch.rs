//! `nightcrier bench dispatch`: what nightcrier adds between an incident and its agent.
//!
//! (a) Dispatch latency: incidents are queued one at a time while worker slots (with the
//! default 1 s poll interval, so only a wake-up makes it fast) sit idle; for each, the time from
//! just before the `queued` commit to the slot's claim, to the runner's container `create` call
//! (`AgentOutcome::create_called_at`: everything nightcrier does first — claim, workspace,
//! `incident.json`, secrets — the goal's figure), and to the container's `create` as the
//! Docker engine reports it (its event stream, `timeNano`; the engine emits it when the create
//! call has been handled, so the figure includes Docker's own create time, measured separately
//! in (b) as "bare create"). On Postgres the incidents are queued through a second connection
//! pool with its own wake-ups, as another replica would, so the slot is woken by
//! `LISTEN/NOTIFY`; on SQLite by the in-process wake-up.
//!
//! (b) Runner overhead: the same tiny container run through [`DockerRunner::run`] (workspace,
//! attach, log capture, output validation, removal) and through bare bollard calls (create,
//! start, wait, remove), alternately.
//!
//! The agent image is a busybox root filesystem built locally (no registry needed) unless
//! `--image` names one that runs `/agent.sh`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, EventsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use nightcrier_agent::{
    AgentProfile, AgentProfileConfig, AgentRequest, DockerRunner, InMemoryBreakerStore,
    InMemoryRecorder, IncidentInput, PermissionsSource, RunnerConfig,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Figure, sample_event};
use crate::queue::{Incident, Investigate, JobOutcome, Lease, Queue, WorkerConfig};
use crate::store::{Store, StoreConfig};

/// Options of `nightcrier bench dispatch`.
#[derive(Clone, Debug, clap::Args)]
pub struct DispatchBenchArgs {
    /// Incidents dispatched one at a time, for the latency figures.
    #[arg(long, default_value_t = 100)]
    pub incidents: usize,
    /// Runs of the container through the runner, and as many bare, for the overhead figure.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Agent image to use (it must run `/agent.sh`); by default a busybox image is built
    /// locally.
    #[arg(long)]
    pub image: Option<String>,
}

/// The agent: writes a short report and exits.
const AGENT_SCRIPT: &str = r###"#!/bin/sh
mkdir -p "$OUTPUT_DIR"
{
  echo "# Investigation"
  echo
  echo "The pod checkout-1 restarts because its liveness probe times out after the"
  echo "database connection pool is exhausted; the last deploy lowered the pool size."
  echo
  echo "## Recommendation"
  echo
  echo "Roll back the pool size change or raise the probe timeout."
} > "$OUTPUT_DIR/investigation.md"
"###;

const INSTANCE_PREFIX: &str = "nightcrier-bench-dispatch";

fn profile(image: &str) -> anyhow::Result<AgentProfile> {
    let text = format!(
        r#"{{"image": "{image}", "command": ["/bin/sh", "/agent.sh"], "model": "bench",
            "network": "none", "timeout_secs": 60, "stop_grace_secs": 1,
            "memory": "64m", "cpus": 0.5, "pids_limit": 64}}"#
    );
    Ok(AgentProfileConfig::from_json("bench", &text)?.build("bench")?)
}

fn request(incident_id: &str, cluster: &str, profile: &AgentProfile) -> AgentRequest {
    AgentRequest {
        incident: IncidentInput {
            incident_id: incident_id.to_owned(),
            fault_id: format!("fault-{incident_id}"),
            created_at: Utc::now().fixed_offset(),
            cluster: cluster.to_owned(),
            namespace: "shop".into(),
            resource: serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": "checkout-1"}),
            fault_type: "CrashLoop".into(),
            severity: "critical".into(),
            context: "back-off restarting failed container".into(),
            timestamp: "2026-11-30T10:00:00Z".into(),
        },
        permissions: PermissionsSource::Unknown,
        kubeconfig: None,
        context_files: Vec::new(),
        system_prompt: "You are an SRE triage agent.".into(),
        additional_prompt: None,
        profile: profile.clone(),
    }
}

/// Runs each claimed incident through the real runner and tells the bench when it was claimed.
struct BenchAgent {
    runner: DockerRunner,
    profile: AgentProfile,
    claimed: mpsc::UnboundedSender<(Uuid, DateTime<Utc>)>,
    /// When the runner made the container's `create` call, once the run is over.
    create_called: mpsc::UnboundedSender<(Uuid, Option<DateTime<Utc>>)>,
}

impl Investigate for BenchAgent {
    async fn investigate(
        &self,
        incident: Incident,
        _lease: Lease,
        _cancel: CancellationToken,
    ) -> JobOutcome {
        let _ = self.claimed.send((incident.id, Utc::now()));
        let request = request(&incident.id.to_string(), &incident.cluster, &self.profile);
        match self.runner.run(request).await {
            Ok(outcome) => {
                let _ = self
                    .create_called
                    .send((incident.id, outcome.create_called_at));
                JobOutcome::Done { exit_code: 0 }
            }
            Err(error) => {
                let _ = self.create_called.send((incident.id, None));
                JobOutcome::Abort {
                    reason: error.to_string(),
                }
            }
        }
    }
}

/// Percentile `q` of `samples` (sorted here), in milliseconds.
fn percentile_ms(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples
        .get(index)
        .map(|d| d.as_secs_f64() * 1e3)
        .unwrap_or(0.0)
}

fn mean_ms(samples: &[Duration]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(Duration::as_secs_f64).sum::<f64>() * 1e3 / samples.len() as f64
}

/// Runs the dispatch benchmark on `url` (a database; its queue must hold no queued incidents)
/// or on a fresh SQLite file.
pub async fn run(args: &DispatchBenchArgs, url: Option<&str>) -> anyhow::Result<Vec<Figure>> {
    let scratch = tempfile::tempdir().context("failed to create a scratch folder")?;
    let url = match url {
        Some(url) => url.to_owned(),
        None => format!("sqlite://{}/bench.db", scratch.path().display()),
    };
    let image = match &args.image {
        Some(image) => image.clone(),
        None => tokio::task::spawn_blocking(|| {
            nightcrier_agent::test_support::busybox_image("nightcrier-bench-agent", AGENT_SCRIPT)
        })
        .await
        .context("building the bench image failed")?,
    };
    let profile = profile(&image)?;
    let instance_id = format!("{INSTANCE_PREFIX}-{}", Uuid::new_v4().simple());
    let runner = DockerRunner::connect(
        RunnerConfig::new(scratch.path().join("workspaces"), instance_id.clone()),
        Arc::new(InMemoryRecorder::default()),
        Arc::new(InMemoryBreakerStore::default()),
    )
    .await
    .context("failed to reach the Docker engine")?;
    runner.ensure_image(&image).await?;

    let store = Store::connect(&StoreConfig::new(&url)).await?;
    store.migrate_up().await?;
    let backend = format!("{:?}", store.backend()).to_lowercase();
    let queue = Queue::new(store.clone());
    let mut figures = dispatch_latency(
        args,
        &url,
        &queue,
        &runner,
        &profile,
        &instance_id,
        &backend,
    )
    .await?;
    store.close().await?;
    figures.extend(runner_overhead(args, &runner, &profile).await?);
    for figure in &figures {
        println!("{:<60} {:>10.2} {}", figure.name, figure.value, figure.unit);
    }
    Ok(figures)
}

async fn dispatch_latency(
    args: &DispatchBenchArgs,
    url: &str,
    queue: &Queue,
    runner: &DockerRunner,
    profile: &AgentProfile,
    instance_id: &str,
    backend: &str,
) -> anyhow::Result<Vec<Figure>> {
    // Create events of this run's containers, by incident.
    let created: Arc<Mutex<HashMap<String, DateTime<Utc>>>> = Arc::default();
    let (events_ready, mut events_started) = mpsc::channel::<()>(1);
    let events =
        {
            let docker = runner.docker().clone();
            let created = created.clone();
            let label = format!("{}={instance_id}", nightcrier_agent::runner::LABEL_INSTANCE);
            tokio::spawn(async move {
                let filters = HashMap::from([
                    ("type", vec!["container"]),
                    ("event", vec!["create"]),
                    ("label", vec![label.as_str()]),
                ]);
                let options = EventsOptionsBuilder::default().filters(&filters).build();
                let mut stream = docker.events(Some(options));
                let _ = events_ready.send(()).await;
                while let Some(Ok(event)) = stream.next().await {
                    let incident = event.actor.and_then(|actor| actor.attributes).and_then(
                        |mut attributes| {
                            attributes.remove(nightcrier_agent::runner::LABEL_INCIDENT)
                        },
                    );
                    if let (Some(incident), Some(nanos)) = (incident, event.time_nano) {
                        created
                            .lock()
                            .expect("lock is never poisoned")
                            .insert(incident, DateTime::from_timestamp_nanos(nanos));
                    }
                }
            })
        };
    // the events request is sent when the stream is first polled; give it a moment to register
    let _ = events_started.recv().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (claimed_tx, mut claimed_rx) = mpsc::unbounded_channel();
    let (create_called_tx, mut create_called_rx) = mpsc::unbounded_channel();
    let agent = Arc::new(BenchAgent {
        runner: runner.clone(),
        profile: profile.clone(),
        claimed: claimed_tx,
        create_called: create_called_tx,
    });
    let shutdown = CancellationToken::new();
    let config = WorkerConfig {
        owner: instance_id.to_owned(),
        ..WorkerConfig::default()
    };
    let workers = tokio::spawn(crate::queue::run_workers(
        queue.clone(),
        config,
        agent,
        Vec::new(),
        shutdown.clone(),
    ));
    // On Postgres, queue through another pool with its own wake-ups (another replica).
    let (producer, path) = if queue.store().backend() == sea_orm::DbBackend::Postgres {
        let other = Store::connect(&StoreConfig::new(url)).await?;
        (Queue::new(other), "LISTEN/NOTIFY")
    } else {
        (queue.clone(), "in-process")
    };
    // let the listener connect before the first incident
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut to_claim = Vec::with_capacity(args.incidents);
    let mut to_create = Vec::with_capacity(args.incidents);
    let mut to_create_call = Vec::with_capacity(args.incidents);
    let owner = "bench-pre-triage";
    for n in 0..args.incidents {
        // a cluster of its own, so no lock holds it back
        let event = sample_event(n, usize::MAX);
        let ids = producer.ingest(&event).await?;
        let pending = producer
            .take_pending(owner, 1_000, Duration::from_secs(60), Utc::now())
            .await?;
        let incident = pending
            .into_iter()
            .find(|incident| incident.id == ids.incident_id)
            .context("the bench incident was not pending")?;
        // Idle slots wait for a wake-up (or the 1 s poll) before this point.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let queued_at = Utc::now();
        producer
            .mark_queued(&incident, owner, &Default::default(), Utc::now())
            .await?;
        let claimed_at = loop {
            let (id, at) = claimed_rx.recv().await.context("the workers stopped")?;
            if id == incident.id {
                break at;
            }
        };
        to_claim.push((claimed_at - queued_at).to_std().unwrap_or_default());
        let key = incident.id.to_string();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let created_at = loop {
            if let Some(at) = created.lock().expect("lock is never poisoned").get(&key) {
                break *at;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no create event for incident {key} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        to_create.push((created_at - queued_at).to_std().unwrap_or_default());
        // wait until the run is over, so the next incident finds a free, idle slot
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while queue.get(incident.id).await?.status == crate::queue::JobStatus::Investigating {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "incident {key} still investigating after 60 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let create_called_at = loop {
            let (id, at) = create_called_rx
                .recv()
                .await
                .context("the workers stopped")?;
            if id == incident.id {
                break at
                    .with_context(|| format!("incident {key}: the run made no create call"))?;
            }
        };
        to_create_call.push((create_called_at - queued_at).to_std().unwrap_or_default());
    }
    shutdown.cancel();
    workers.await.context("the workers panicked")?;
    events.abort();
    Ok(vec![
        Figure {
            name: format!("{backend} ({path}): queued → claimed p50"),
            value: percentile_ms(&mut to_claim, 0.50),
            unit: "ms",
        },
        Figure {
            name: format!("{backend} ({path}): queued → claimed p99"),
            value: percentile_ms(&mut to_claim, 0.99),
            unit: "ms",
        },
        Figure {
            name: format!("{backend} ({path}): queued → create call p50"),
            value: percentile_ms(&mut to_create_call, 0.50),
            unit: "ms",
        },
        Figure {
            name: format!("{backend} ({path}): queued → create call p99"),
            value: percentile_ms(&mut to_create_call, 0.99),
            unit: "ms",
        },
        Figure {
            name: format!("{backend} ({path}): queued → container created p50"),
            value: percentile_ms(&mut to_create, 0.50),
            unit: "ms",
        },
        Figure {
            name: format!("{backend} ({path}): queued → container created p99"),
            value: percentile_ms(&mut to_create, 0.99),
            unit: "ms",
        },
    ])
}

/// The container `DockerRunner` would create for `profile`, without the workspace mounts.
fn bare_body(profile: &AgentProfile) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(profile.image.clone()),
        cmd: Some(profile.command.clone()),
        env: Some(vec![
            "HOME=/tmp".to_owned(),
            "OUTPUT_DIR=/tmp/output".to_owned(),
        ]),
        user: Some(format!("{}:{}", profile.uid, profile.gid)),
        tty: Some(false),
        open_stdin: Some(false),
        host_config: Some(HostConfig {
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                format!("rw,nosuid,nodev,size={},mode=1777", profile.scratch_bytes),
            )])),
            memory: Some(profile.limits.memory_bytes),
            memory_swap: Some(profile.limits.memory_bytes),
            nano_cpus: Some(profile.limits.nano_cpus),
            pids_limit: Some(profile.limits.pids),
            network_mode: Some(profile.network.as_docker().to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One bare run: create, start, wait, remove. Returns the whole time and the create call's.
async fn bare_run(
    docker: &bollard::Docker,
    profile: &AgentProfile,
) -> anyhow::Result<(Duration, Duration)> {
    let started = tokio::time::Instant::now();
    let name = format!("{INSTANCE_PREFIX}-bare-{}", Uuid::new_v4().simple());
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = docker
        .create_container(Some(options), bare_body(profile))
        .await?;
    let create_took = started.elapsed();
    docker.start_container(&created.id, None).await?;
    let mut wait = docker.wait_container(&created.id, None);
    while let Some(result) = wait.next().await {
        result?;
    }
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    docker.remove_container(&created.id, Some(options)).await?;
    Ok((started.elapsed(), create_took))
}

async fn runner_overhead(
    args: &DispatchBenchArgs,
    runner: &DockerRunner,
    profile: &AgentProfile,
) -> anyhow::Result<Vec<Figure>> {
    let runs = args.runs.max(1);
    let mut through_runner = Vec::with_capacity(runs);
    let mut bare = Vec::with_capacity(runs);
    let mut bare_create = Vec::with_capacity(runs);
    // one of each first, unmeasured: image and page caches
    bare_run(runner.docker(), profile).await?;
    runner
        .run(request(&Uuid::new_v4().to_string(), "warm-up", profile))
        .await?;
    for _ in 0..runs {
        let started = tokio::time::Instant::now();
        runner
            .run(request(&Uuid::new_v4().to_string(), "bench", profile))
            .await?;
        through_runner.push(started.elapsed());
        let (took, create_took) = bare_run(runner.docker(), profile).await?;
        bare.push(took);
        bare_create.push(create_took);
    }
    let runner_mean = mean_ms(&through_runner);
    let bare_mean = mean_ms(&bare);
    let runner_p50 = percentile_ms(&mut through_runner, 0.5);
    let bare_p50 = percentile_ms(&mut bare, 0.5);
    Ok(vec![
        Figure {
            name: "DockerRunner::run p50".into(),
            value: runner_p50,
            unit: "ms",
        },
        Figure {
            name: "bare create+start+wait+remove p50".into(),
            value: bare_p50,
            unit: "ms",
        },
        Figure {
            name: "bare create call p50".into(),
            value: percentile_ms(&mut bare_create, 0.5),
            unit: "ms",
        },
        Figure {
            name: "bare create call p99".into(),
            value: percentile_ms(&mut bare_create, 0.99),
            unit: "ms",
        },
        Figure {
            name: "runner overhead over bare (p50)".into(),
            value: (runner_p50 / bare_p50 - 1.0) * 100.0,
            unit: "%",
        },
        Figure {
            name: "runner overhead over bare (mean)".into(),
            value: (runner_mean / bare_mean - 1.0) * 100.0,
            unit: "%",
        },
    ])
}
