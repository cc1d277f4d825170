//! The `nightcrier` command line (clap derive) and what each command does.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use crate::queue::{Incident, JobStatus, ListFilter, Queue};
use crate::store::{Store, StoreConfig};
use crate::telemetry::LogArgs;

/// AI-powered incident triage for Kubernetes fleets.
#[derive(Debug, Parser)]
#[command(name = "nightcrier", version, about)]
pub struct Cli {
    /// Database URL: sqlite://PATH (created on first use) or postgres://USER:PASSWORD@HOST/DB
    /// [default: sqlite://nightcrier.db]
    #[arg(
        long,
        global = true,
        env = "NIGHTCRIER_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Config file (TOML) [default: ./nightcrier.toml when it exists].
    #[arg(long, short = 'c', global = true, env = "NIGHTCRIER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Logging options.
    #[command(flatten)]
    pub log: LogArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: pre-triage, agent workers and lease sweeping, until SIGINT/SIGTERM.
    /// Applies pending migrations first (unless `database.auto_migrate = false`) and re-attaches
    /// to agent containers a previous run left behind.
    Serve,
    /// Print an incident's agent log; with --follow, keep printing until the run ends.
    Tail {
        /// The incident id.
        id: Uuid,
        /// Keep following the log while the agent runs.
        #[arg(long, short)]
        follow: bool,
    },
    /// Apply, roll back or show database migrations.
    Migrate {
        /// `up` (default), `down` or `status`.
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Inspect and manage incidents.
    Incidents {
        /// What to do with incidents.
        #[command(subcommand)]
        action: IncidentsAction,
    },
    /// Store fault events from files (a JSON object, an array, or one object per line; `-`
    /// reads stdin). Each becomes one pending incident; malformed input goes to the dead
    /// letter table with the reason.
    Ingest {
        /// The source name recorded with each event.
        #[arg(long, default_value = "cli")]
        source: String,
        /// Cluster name to record, overriding the payload's.
        #[arg(long)]
        cluster: Option<String>,
        /// Files to read.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show the most recent dead letters (input that could not become an event).
    Rejected {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measure the store and queue and print figures.
    Bench {
        /// What to measure.
        #[command(subcommand)]
        target: BenchTarget,
    },
}

/// `nightcrier migrate …`
#[derive(Debug, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Roll back migrations.
    Down {
        /// How many to roll back (default 1).
        #[arg(long, default_value_t = 1)]
        steps: u32,
        /// Roll back all of them.
        #[arg(long, conflicts_with = "steps")]
        all: bool,
    },
    /// List migrations and whether each is applied.
    Status,
}

/// `nightcrier incidents …`
#[derive(Debug, Subcommand)]
pub enum IncidentsAction {
    /// List incidents, newest first.
    List {
        /// Only this status.
        #[arg(long)]
        status: Option<JobStatus>,
        /// Only this cluster.
        #[arg(long)]
        cluster: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one incident with its event, agent runs and plugin runs.
    Show {
        /// The incident id.
        id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Queue a skipped or failed incident again.
    Retry {
        /// The incident id.
        id: Uuid,
    },
}

/// `nightcrier bench …`
#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// Ingest and claim throughput and commit latency. Uses a fresh SQLite file unless
    /// --database-url names an empty database.
    Store(crate::bench::StoreBenchArgs),
}

impl clap::ValueEnum for JobStatus {
    fn value_variants<'a>() -> &'a [Self] {
        &JobStatus::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()))
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Bench {
        target: BenchTarget::Store(args),
    } = &cli.command
    {
        crate::bench::store(args, cli.database_url.as_deref()).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let config_path = cli.config.clone().or_else(|| {
        let default = PathBuf::from("nightcrier.toml");
        default.is_file().then_some(default)
    });
    let settings = crate::config::load(config_path.as_deref(), cli.database_url.as_deref())?;
    let store_config = settings.store.clone();
    match cli.command {
        Command::Serve => {
            crate::server::run(settings, crate::server::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Tail { id, follow } => {
            let mut out = tokio::io::stdout();
            nightcrier_agent::tail(
                &settings.runner.workspace_root,
                &id.to_string(),
                follow,
                &mut out,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { action } => {
            migrate(&store_config, action.unwrap_or(MigrateAction::Up)).await
        }
        Command::Incidents { action } => {
            let queue = open_queue(&store_config).await?;
            incidents(&queue, action).await
        }
        Command::Ingest {
            source,
            cluster,
            files,
        } => {
            let queue = open_queue(&store_config).await?;
            ingest(&queue, &source, cluster.as_deref(), &files).await
        }
        Command::Rejected { limit, json } => {
            let queue = open_queue(&store_config).await?;
            let rows = queue.store().rejected_events(limit).await?;
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                writeln!(
                    out,
                    "{:<36}  {:<20}  {:<16}  REASON",
                    "ID", "RECEIVED", "SOURCE"
                )?;
                for row in rows {
                    writeln!(
                        out,
                        "{:<36}  {:<20}  {:<16}  {}",
                        row.id,
                        row.received_at.format("%Y-%m-%d %H:%M:%S"),
                        row.source,
                        row.reason
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { .. } => Ok(ExitCode::SUCCESS),
    }
}

async fn open_queue(config: &StoreConfig) -> anyhow::Result<Queue> {
    let store = Store::connect(config).await?;
    store.ensure_migrated().await?;
    Ok(Queue::new(store))
}

async fn migrate(config: &StoreConfig, action: MigrateAction) -> anyhow::Result<ExitCode> {
    let store = Store::connect(config).await?;
    let mut out = std::io::stdout().lock();
    match action {
        MigrateAction::Up => {
            let applied = store
                .migrate_up()
                .await
                .context("failed to apply migrations")?;
            writeln!(
                out,
                "applied {applied} migration(s) to {}",
                store.display_url()
            )?;
        }
        MigrateAction::Down { steps, all } => {
            store
                .migrate_down(if all { None } else { Some(steps) })
                .await
                .context("failed to roll back migrations")?;
            let remaining = store
                .migration_status()
                .await?
                .iter()
                .filter(|m| m.applied)
                .count();
            writeln!(out, "rolled back; {remaining} migration(s) remain applied")?;
        }
        MigrateAction::Status => {
            for state in store.migration_status().await? {
                let mark = if state.applied { "applied" } else { "pending" };
                writeln!(out, "{mark:<8} {}", state.name)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn incidents(queue: &Queue, action: IncidentsAction) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match action {
        IncidentsAction::List {
            status,
            cluster,
            limit,
            json,
        } => {
            let rows = queue
                .list(&ListFilter {
                    status,
                    cluster,
                    limit,
                })
                .await?;
            if json {
                serde_json::to_writer_pretty(&mut out, &rows)?;
                writeln!(out)?;
            } else {
                print_table(&mut out, &rows)?;
            }
        }
        IncidentsAction::Show { id, json } => {
            let incident = queue.get(id).await?;
            let store = queue.store();
            let event = store
                .fault_event(&incident.fault_event_id.to_string())
                .await?;
            let executions = store.agent_executions(id).await?;
            let plugin_runs = store.plugin_runs(id).await?;
            if json {
                let doc = serde_json::json!({
                    "incident": incident,
                    "faultEvent": event,
                    "agentExecutions": executions,
                    "pluginRuns": plugin_runs,
                });
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                let pretty = serde_json::to_string_pretty(&incident)?;
                writeln!(out, "{pretty}")?;
                if let Some(event) = event {
                    writeln!(
                        out,
                        "\nfault event {} from {}: {} {} on {}",
                        event.id,
                        event.source,
                        event.severity,
                        event.fault_type,
                        [
                            event.resource_kind,
                            event.resource_namespace,
                            event.resource_name
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join("/")
                    )?;
                    writeln!(out, "  {}", event.context)?;
                }
                writeln!(
                    out,
                    "\n{} agent execution(s), {} plugin run(s)",
                    executions.len(),
                    plugin_runs.len()
                )?;
                for run in plugin_runs {
                    writeln!(
                        out,
                        "  {} {} -> {} ({} us){}",
                        run.stage,
                        run.plugin,
                        run.outcome,
                        run.duration_us,
                        run.error.map(|e| format!(": {e}")).unwrap_or_default()
                    )?;
                }
            }
        }
        IncidentsAction::Retry { id } => {
            queue.retry(id, Utc::now()).await?;
            writeln!(out, "incident {id} queued again")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(out: &mut impl Write, rows: &[Incident]) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<36}  {:<13}  {:<20}  {:>4}  {:>3}  {:<20}  REASON",
        "ID", "STATUS", "CLUSTER", "PRIO", "TRY", "CREATED"
    )?;
    for incident in rows {
        let reason = incident
            .failure_reason
            .as_deref()
            .or(incident.skip_reason.as_deref())
            .unwrap_or("");
        writeln!(
            out,
            "{:<36}  {:<13}  {:<20}  {:>4}  {:>3}  {:<20}  {}",
            incident.id,
            incident.status.as_str(),
            incident.cluster,
            incident.priority,
            incident.attempts,
            incident.created_at.format("%Y-%m-%d %H:%M:%S"),
            reason
        )?;
    }
    Ok(())
}

async fn ingest(
    queue: &Queue,
    source: &str,
    cluster: Option<&str>,
    files: &[PathBuf],
) -> anyhow::Result<ExitCode> {
    let mut accepted = Vec::new();
    let mut rejected = 0usize;
    for file in files {
        let bytes = if file.as_os_str() == "-" {
            let mut buffer = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buffer)
                .context("failed to read stdin")?;
            buffer
        } else {
            tokio::fs::read(file)
                .await
                .with_context(|| format!("failed to read {}", file.display()))?
        };
        for (raw, parsed) in crate::event::split_payloads(&bytes) {
            let received_at = Utc::now();
            let result = parsed.and_then(|payload| {
                crate::event::parse_fault(source, cluster, &payload, received_at)
            });
            match result {
                Ok(event) => accepted.push(event),
                Err(reason) => {
                    let id = queue
                        .store()
                        .reject_event(source, cluster, &raw, &reason, received_at)
                        .await?;
                    tracing::warn!(rejected_id = %id, file = %file.display(), reason = %reason, "rejected event");
                    eprintln!("rejected ({}): {reason}", file.display());
                    rejected += 1;
                }
            }
        }
    }
    let ingested = queue.ingest_batch(&accepted).await?;
    let mut out = std::io::stdout().lock();
    for ids in &ingested {
        writeln!(out, "incident {} (event {})", ids.incident_id, ids.event_id)?;
    }
    writeln!(
        out,
        "ingested {} event(s), rejected {rejected}",
        ingested.len()
    )?;
    Ok(if rejected > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}
