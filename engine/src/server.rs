//! `nightcrier serve`: builds the store, the agent runtime and the stages from [`Settings`],
//! refuses to start when a usable agent profile lacks a secret or its image, re-attaches to agent
//! containers left by a previous run (resuming them through the workers like any other run), and
//! runs pre-triage, the workers and the sweeper until shutdown, then drains.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use nightcrier_agent::DockerRunner;
use nightcrier_plugin_host::PluginHost;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::{AgentInvestigator, DbBreakerStore, DbRecorder, InvestigatorSettings};
use crate::config::Settings;
use crate::ingest::{Decoder, Ingestor};
use crate::plugin::RefusedPlugin;
use crate::queue::{JobOutcome, JobStatus, Lease, ListFilter, Queue, Resumed, run_workers};
use crate::store::Store;
use crate::triage::{PluginPreTriage, PostTriage, PreTriage};

/// An exclusive lock on `path`, held while the returned file lives; `what` says what a second
/// holder would be.
fn lock_exclusively(path: &std::path::Path, what: &str) -> anyhow::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            anyhow::bail!(
                "another nightcrier serve is running with {what} ({} is locked)",
                path.display()
            )
        }
        Err(std::fs::TryLockError::Error(error)) => {
            Err(error).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Runs the service until `shutdown` completes.
pub async fn run(mut settings: Settings, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // One serve per data folder (its spool and instance id), and one per SQLite file: SQLite
    // is single-process; replicas share a Postgres.
    let _data_lock = lock_exclusively(
        &settings.data_dir.join("serve.lock"),
        &format!("data_dir {}", settings.data_dir.display()),
    )?;
    let _sqlite_lock = match crate::store::sqlite_file(&settings.store.url) {
        Some(path) => Some(lock_exclusively(
            &path.with_extension("serve-lock"),
            &format!("the SQLite database {}", path.display()),
        )?),
        None => None,
    };
    if !settings.instance_id_configured {
        let id = crate::replica::stored_instance_id(&settings.data_dir)?;
        settings.set_instance_id(id);
    }
    let store = Store::connect(&settings.store).await?;
    if settings.auto_migrate {
        store
            .migrate_up()
            .await
            .context("failed to apply migrations")?;
    } else {
        store.ensure_migrated().await?;
    }
    let (plugins, refused) = match settings.plugins.clone() {
        Some(config) => {
            let loaded = crate::plugin::load(config, &store).await?;
            (Some(loaded.host), loaded.refused)
        }
        None => (None, Vec::new()),
    };
    let pre_triage = PluginPreTriage::new(plugins.clone(), store.clone());
    serve(settings, store, plugins, refused, pre_triage, shutdown).await
}

async fn serve<P: PreTriage>(
    settings: Settings,
    store: Store,
    plugins: Option<PluginHost>,
    refused: Vec<RefusedPlugin>,
    pre_triage: P,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let queue = Queue::new(store.clone());
    // the report store is opened first: a bucket that cannot be used stops start-up
    let report_store = crate::report::ReportStore::open(
        &settings.reports.store,
        &settings.reports.options,
        std::env::vars(),
    )?;
    let reports = crate::report::Reports::new(
        queue.clone(),
        report_store,
        settings.reports.clone(),
        settings.runner.workspace_root.clone(),
    );
    // Checked and bound first: an exposed listener without tokens, or an address in use, stops
    // start-up before anything runs.
    crate::http::check_exposure(
        settings.listen,
        &settings.api_tokens,
        &crate::feed::webhooks_without_token(&settings.intake, plugins.as_ref()),
    )?;
    let listener = crate::http::bind(settings.listen).await?;
    // An instance with no worker slots only receives and pre-triages: it needs no Docker.
    let runner = if settings.workers.concurrency > 0 {
        let runner = DockerRunner::connect(
            settings.runner.clone(),
            Arc::new(DbRecorder::new(store.clone())),
            Arc::new(DbBreakerStore::new(store.clone())),
        )
        .await
        .context("failed to reach the Docker engine")?;
        check_profiles(&runner, &settings).await?;
        Some(runner)
    } else {
        tracing::info!("workers.concurrency is 0: this instance runs no agents");
        None
    };
    tracing::info!(database = store.display_url(), instance = %settings.runner.instance_id, "nightcrier serving");

    // Intake: the ingest path (replaying a spool left by a crash first), the feeds and the
    // HTTP listener. Stopped first at shutdown, so every message received is committed or
    // spooled before the process ends.
    let decoder_host = match &plugins {
        Some(host) => host.clone(),
        None => crate::plugin::no_plugins(&store).await?,
    };
    let decoder = Decoder::new(decoder_host, settings.clusters.keys().cloned().collect());
    let ingest_stop = CancellationToken::new();
    let (ingestor, ingest_task) = Ingestor::start(
        queue.clone(),
        decoder,
        settings.ingest.clone(),
        ingest_stop.clone(),
    )?;
    let intake_stop = CancellationToken::new();
    let mut intake_tasks = JoinSet::new();
    let feeds = crate::feed::start(
        &settings.clusters,
        &settings.intake,
        plugins.as_ref(),
        &refused,
        &ingestor,
    )?;
    if store.backend() == sea_orm::DbBackend::Postgres {
        // Replicas may share this database: each stream feed runs on the one holding its lease.
        let replica = crate::replica::Replica::new(
            &store,
            &settings.runner.instance_id,
            settings.replica.clone(),
        )
        .with_fleet_cap(settings.workers.fleet_max_agents);
        replica
            .register(
                &crate::replica::home(&settings.data_dir),
                chrono::Utc::now(),
            )
            .await?;
        intake_tasks.spawn(crate::feed::supervise(
            feeds.streams,
            replica,
            intake_stop.clone(),
        ));
    } else {
        crate::feed::StreamFeed::run_all(feeds.streams, &intake_stop, &mut intake_tasks);
    }
    // Alerts: recorded here, delivered by their own task, which outlives the workers and the
    // feeds so that what they raise while stopping still goes out.
    let (alerts, alert_delivery) = crate::alert::Alerts::new(
        store.clone(),
        plugins.clone(),
        settings.alerts.clone(),
        settings.runner.instance_id.clone(),
    );
    let alert_stop = CancellationToken::new();
    let mut alert_tasks = JoinSet::new();
    alert_tasks.spawn(alert_delivery.run(alert_stop.clone()));
    if let Some(down_after) = settings.alerts.feed_down_after {
        intake_tasks.spawn(crate::alert::watch_feeds(
            feeds.registry.clone(),
            alerts.clone(),
            down_after,
            intake_stop.clone(),
        ));
    }
    let router = crate::http::router(
        crate::http::HttpContext {
            feeds: feeds.registry,
            ingest: ingestor.clone(),
            queue: queue.clone(),
            plugins: plugins.clone(),
            refused: refused.clone(),
            docker: runner.clone(),
            workspace_root: settings.runner.workspace_root.clone(),
            tokens: settings.api_tokens.clone(),
        },
        feeds.webhooks,
    );
    let _ = crate::http::metrics_handle();
    intake_tasks.spawn(crate::http::serve(listener, router, intake_stop.clone()));
    intake_tasks.spawn(crate::http::refresh_loop(
        queue.clone(),
        std::time::Duration::from_secs(15),
        intake_stop.clone(),
    ));

    let token = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(crate::triage::run(
        queue.clone(),
        settings.workers.owner.clone(),
        pre_triage,
        settings.workers.poll_interval,
        token.clone(),
    ));
    if let Some(runner) = runner {
        let investigator = AgentInvestigator::new(
            runner.clone(),
            store.clone(),
            InvestigatorSettings {
                profiles: settings.profiles.clone(),
                default_profile: settings.default_profile.clone(),
                system_prompt: settings.system_prompt.clone(),
                clusters: settings.clusters.clone(),
            },
            PostTriage::new(store.clone(), plugins, reports.clone()),
        )
        .with_alerts(alerts.clone());
        let resumed = recover(&queue, &runner, &settings, &investigator).await?;
        tasks.spawn(run_workers(
            queue.clone(),
            settings.workers.clone(),
            Arc::new(investigator),
            resumed,
            token.clone(),
        ));
    }
    tasks.spawn(reports.clone().upload_loop(token.clone()));
    tasks.spawn(
        crate::retention::Retention {
            queue: queue.clone(),
            config: settings.retention.clone(),
            reports: Some(reports.objects().clone()),
            workspace_root: settings.runner.workspace_root.clone(),
            workspace_retention: settings.workspace_retention,
            compile_cache: settings.plugins.as_ref().map(|plugins| plugins.cache_dir()),
        }
        .run(token.clone()),
    );

    shutdown.await;
    tracing::info!("shutting down: feeds stop, received messages are committed or spooled");
    intake_stop.cancel();
    while intake_tasks.join_next().await.is_some() {}
    ingest_stop.cancel();
    if let Err(error) = ingest_task.await {
        tracing::error!(error = %error, "the ingest writer failed");
    }
    tracing::info!("no new claims; waiting for running investigations");
    token.cancel();
    while tasks.join_next().await.is_some() {}
    alert_stop.cancel();
    while alert_tasks.join_next().await.is_some() {}
    store.close().await?;
    Ok(())
}

/// Refuses to serve when an agent profile that can be used (the default, a cluster's, one
/// configured under `[agent.profiles]`) lacks a secret or its image, naming everything missing:
/// a configuration error must not turn every queued incident into a failure.
async fn check_profiles(runner: &DockerRunner, settings: &Settings) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (name, uses) in settings.profiles_in_use() {
        let Some(profile) = settings.profiles.get(&name) else {
            continue;
        };
        for problem in runner.check_profile(profile, true).await {
            missing.push(format!("{problem} (used as {})", uses.join(", ")));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to serve: {}; set what is missing or change the profile, then start again",
        missing.join("; ")
    )
}

/// Whether `owner` (a worker slot's `lease_owner`, `<instance>/<slot>`) belongs to this instance.
fn owned_by(owner: Option<&str>, instance: &str) -> bool {
    owner.is_some_and(|owner| {
        owner == instance
            || owner
                .strip_prefix(instance)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Re-attaches to this instance's containers whose incident is still investigating and hands
/// each run to `investigator`; the returned incidents are resumed by the workers under the lease
/// the previous process held, so they get the same lease renewal (cancelled when it is lost),
/// validation, post-triage and report as any run. Removes the other containers. Incidents this
/// instance held without a container left (it died between claim and start, or the container
/// vanished) go back to the queue now rather than when their lease runs out.
async fn recover(
    queue: &Queue,
    runner: &DockerRunner,
    settings: &Settings,
    investigator: &AgentInvestigator,
) -> anyhow::Result<Vec<Resumed>> {
    let investigating = queue
        .list(&ListFilter {
            status: Some(JobStatus::Investigating),
            cluster: None,
            limit: 100_000,
            ..ListFilter::default()
        })
        .await?;
    let ids: HashSet<String> = investigating.iter().map(|i| i.id.to_string()).collect();
    let report = runner
        .recover(|incident_id| ids.contains(incident_id))
        .await
        .context("failed to look for agent containers of a previous run")?;
    if !report.removed.is_empty() {
        tracing::warn!(removed = ?report.removed, "removed orphaned agent containers");
    }
    let reattached: HashSet<&str> = report
        .reattached
        .iter()
        .map(|pending| pending.incident_id.as_str())
        .collect();
    let instance = settings.workers.owner.as_str();
    for incident in &investigating {
        let ours = owned_by(incident.lease_owner.as_deref(), instance);
        if !ours || reattached.contains(incident.id.to_string().as_str()) {
            continue;
        }
        let Some(lease) = Lease::recorded_on(incident) else {
            continue;
        };
        let reason = format!(
            "no agent container was left after a restart (attempt {})",
            incident.attempts
        );
        let outcome = if incident.attempts >= settings.workers.max_attempts {
            JobOutcome::Abort {
                reason: format!("{reason}; giving up"),
            }
        } else {
            JobOutcome::RetryAfter {
                delay: std::time::Duration::ZERO,
                reason,
            }
        };
        match queue.finish(&lease, &outcome, Utc::now()).await {
            Ok(_) => {
                tracing::warn!(incident_id = %incident.id, cluster = %incident.cluster, "released an incident whose agent container is gone")
            }
            Err(error) => {
                tracing::warn!(incident_id = %incident.id, error = %error, "could not release an incident whose agent container is gone")
            }
        }
    }
    let mut resumed = Vec::new();
    let mut runs = Vec::new();
    for pending in report.reattached {
        let Some(incident) = investigating
            .iter()
            .find(|i| i.id.to_string() == pending.incident_id)
            .cloned()
        else {
            continue;
        };
        let Some(lease) = Lease::recorded_on(&incident) else {
            continue;
        };
        tracing::info!(incident_id = %incident.id, cluster = %incident.cluster, "re-attached to a running agent");
        runs.push((incident.id, pending));
        resumed.push(Resumed { incident, lease });
    }
    investigator.adopt(runs);
    Ok(resumed)
}

/// Resolves when SIGINT or SIGTERM arrives.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::error!(error = %error, "cannot listen for SIGTERM");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
