//! The `nightcrier` command line (clap derive) and what each command does.
//!
//! Text from plugins, feeds and agents (names, versions, reasons, fault-event fields) is stored
//! as received and passed through `escape_untrusted` wherever a table or a line shows it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use uuid::Uuid;

use nightcrier_plugin_host::escape_untrusted;

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
    /// See the whole job in a minute, with Docker and no API key: `serve` on SQLite in a demo
    /// folder with the web UI, a simulated kubernetes-mcp-server sending faults through the
    /// normal feed, and a demo agent image (a shell script, not an AI) built locally. Ctrl-C
    /// stops it and removes every container it started. Ignores the config file.
    Demo(crate::demo::DemoArgs),
    /// Run the service: pre-triage, agent workers and lease sweeping, until SIGINT/SIGTERM.
    /// Applies pending migrations first (unless `database.auto_migrate = false`) and re-attaches
    /// to agent containers a previous run left behind.
    Serve {
        /// Folder of plugin components (`*.wasm`); overrides `plugins.dir` of the config.
        #[arg(long)]
        plugins: Option<PathBuf>,
    },
    /// Show every feed of the running `serve` (MCP subscriptions per cluster, webhook and poll
    /// sources): phase, since when, events received, the last error; and the ingest counters.
    Clusters {
        /// The `serve` to ask [default: the `[http] listen` address of the config].
        #[arg(long)]
        url: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect, check and create plugins.
    Plugins {
        /// What to do.
        #[command(subcommand)]
        action: PluginsAction,
    },
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
    /// Store fault events from files through a source plugin (a JSON object, an array of them,
    /// or one message per line, of any size; `-` reads stdin). Each event becomes one pending
    /// incident; input the plugin refuses goes to the dead letter table with the reason.
    Ingest {
        /// The source plugin that decodes the input (its id: the file name without `.wasm`).
        #[arg(long, default_value = "kubernetes-mcp")]
        source: String,
        /// Cluster name to record, overriding the payload's.
        #[arg(long)]
        cluster: Option<String>,
        /// Folder of plugin components holding the source plugin (default: `plugins.dir` of the
        /// config).
        #[arg(long)]
        plugins: Option<PathBuf>,
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

/// `nightcrier plugins …`
#[derive(Debug, Subcommand)]
pub enum PluginsAction {
    /// List the plugins of a folder: name, world, version, WIT version, capabilities.
    List {
        /// The folder [default: `plugins.dir` of the config].
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load one component as the engine would and report every problem (non-zero exit if any).
    Check {
        /// The `.wasm` file.
        path: PathBuf,
    },
    /// Call a plugin's entry point once, as `serve` would (same sandbox and limits, the grants
    /// of the config file), on a JSON input: an envelope (source), an incident (pre-triage) or
    /// `{"incident": …, "agent_result": …}` (post-triage); samples in examples/plugin-inputs/.
    /// Prints the result, the plugin's log lines, its key-value writes and the time taken as
    /// JSON; exits non-zero on a trap, a limit or an error, with the reason.
    Run {
        /// The `.wasm` file.
        path: PathBuf,
        /// The input, a JSON file.
        #[arg(long, value_name = "FILE")]
        input: PathBuf,
        /// The plugin's own configuration (what `get-config` returns) as a JSON object; replaces
        /// `[plugins.plugin.<id>.config]` of the config file. (`--config` names the config file.)
        #[arg(long, value_name = "JSON")]
        plugin_config: Option<String>,
        /// The plugin's key-value store before the call: a JSON file of key to string value.
        #[arg(long, value_name = "FILE")]
        kv: Option<PathBuf>,
    },
    /// Create a plugin project that builds as generated and passes `plugins check`.
    New {
        /// Plugin name: lower-case letters, digits and dashes.
        name: String,
        /// `source`, `pre-triage` or `post-triage`.
        #[arg(long)]
        kind: nightcrier_plugin_host::World,
        /// `rust`, `python` or `c`.
        #[arg(long, default_value = "rust")]
        lang: nightcrier_plugin_host::PluginLang,
        /// Folder in which the project folder is created.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
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
    /// List and incident pages of the HTTP API on a database of a million incidents. Uses a
    /// fresh SQLite file unless --database-url names an empty database.
    Api(crate::bench::api::ApiBenchArgs),
    /// How the feed assignment spreads clusters over replicas, and what moves when one joins
    /// or leaves (computed with the assignment code replicas run; no database).
    Fleet(crate::bench::fleet::FleetBenchArgs),
    /// A real `serve` fed by a simulated fleet of kubernetes-mcp-servers: RSS, events per second
    /// to committed rows, receipt → commit latency, recovery from a fleet-wide restart. Uses a
    /// fresh SQLite file unless --database-url names a database.
    Intake(crate::bench::intake::IntakeBenchArgs),
    /// Queued → agent container latency with idle worker slots (woken in process on SQLite, by
    /// LISTEN/NOTIFY from another pool on Postgres), and `DockerRunner::run` against bare
    /// create+start+wait+remove of the same container. Needs Docker; uses a fresh SQLite file
    /// unless --database-url names a database.
    Dispatch(crate::bench::dispatch::DispatchBenchArgs),
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
    // the demo writes its own config; a broken ./nightcrier.toml must not stop it
    if let Command::Demo(args) = &cli.command {
        return demo(args).await;
    }
    let config_path = cli.config.clone().or_else(|| {
        let default = PathBuf::from("nightcrier.toml");
        default.is_file().then_some(default)
    });
    let mut settings = crate::config::load(config_path.as_deref(), cli.database_url.as_deref())?;
    let store_config = settings.store.clone();
    match cli.command {
        Command::Demo(args) => demo(&args).await,
        Command::Serve { plugins } => {
            settings.plugins = plugins_config(settings.plugins.take(), plugins);
            crate::server::run(settings, crate::server::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Clusters { url, json } => clusters(url, settings.listen, json).await,
        Command::Plugins { action } => plugins(action, settings.plugins.take()).await,
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
            plugins,
            files,
        } => {
            let queue = open_queue(&store_config).await?;
            let config = plugins_config(settings.plugins.take(), plugins).context(
                "ingest decodes through a source plugin: pass --plugins DIR (the bundled plugins \
                 are built into plugins/target/plugins by plugins/build.sh) or set plugins.dir",
            )?;
            // Only the named plugin is loaded; it is that plugin or an error, never a stand-in.
            let host = crate::plugin::load_source(config, queue.store(), &source).await?;
            let known_clusters = settings.clusters.keys().cloned().collect();
            ingest(
                &queue,
                crate::ingest::Decoder::new(host, known_clusters),
                &source,
                cluster.as_deref(),
                files,
            )
            .await
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
                        escape_untrusted(&row.source),
                        escape_untrusted(&row.reason)
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            target: BenchTarget::Store(args),
        } => {
            crate::bench::store(&args, cli.database_url.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            target: BenchTarget::Fleet(args),
        } => {
            let mut out = std::io::stdout().lock();
            for figure in crate::bench::fleet::run(&args) {
                writeln!(
                    out,
                    "{:<60} {:>10.1} {}",
                    figure.name, figure.value, figure.unit
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            target: BenchTarget::Intake(args),
        } => {
            let figures = crate::bench::intake::run(&args, cli.database_url.as_deref()).await?;
            let mut out = std::io::stdout().lock();
            for figure in figures {
                writeln!(
                    out,
                    "{:<72} {:>10.1} {}",
                    figure.name, figure.value, figure.unit
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            target: BenchTarget::Dispatch(args),
        } => {
            crate::bench::dispatch::run(&args, cli.database_url.as_deref()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            target: BenchTarget::Api(args),
        } => {
            let figures = crate::bench::api::run(&args, cli.database_url.as_deref()).await?;
            let mut out = std::io::stdout().lock();
            for figure in figures {
                writeln!(
                    out,
                    "{:<60} {:>10.2} {}",
                    figure.name, figure.value, figure.unit
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn demo(args: &crate::demo::DemoArgs) -> anyhow::Result<ExitCode> {
    crate::demo::run(args, crate::server::shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// The config's `[plugins]`, with `--plugins DIR` as the folder when given.
fn plugins_config(
    configured: Option<nightcrier_plugin_host::PluginsConfig>,
    dir: Option<PathBuf>,
) -> Option<nightcrier_plugin_host::PluginsConfig> {
    match (configured, dir) {
        (Some(mut config), Some(dir)) => {
            config.dir = dir;
            Some(config)
        }
        (None, Some(dir)) => Some(nightcrier_plugin_host::PluginsConfig::new(dir)),
        (configured, None) => configured,
    }
}

async fn plugins(
    action: PluginsAction,
    configured: Option<nightcrier_plugin_host::PluginsConfig>,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match action {
        PluginsAction::List { plugins, json } => {
            let config = plugins_config(configured, plugins)
                .context("no plugin folder: pass --plugins DIR or set plugins.dir in the config")?;
            let list = nightcrier_plugin_host::list_plugins(&config).await?;
            if json {
                writeln!(out, "{}", list.to_json()?)?;
            } else {
                write!(out, "{}", list.to_table())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginsAction::Check { path } => {
            let config = configured.unwrap_or_else(|| {
                nightcrier_plugin_host::PluginsConfig::new(
                    path.parent().map(PathBuf::from).unwrap_or_default(),
                )
            });
            match nightcrier_plugin_host::check_plugin(&path, &config).await {
                Ok(summary) => {
                    writeln!(
                        out,
                        "ok: {} ({:?}, WIT {}{})",
                        escape_untrusted(&summary.label()),
                        summary.world,
                        escape_untrusted(&summary.wit_version),
                        if summary.handles_alerts {
                            ", receives alerts"
                        } else {
                            ""
                        }
                    )?;
                    Ok(ExitCode::SUCCESS)
                }
                Err(failure) => {
                    for reason in &failure.reasons {
                        eprintln!(
                            "{}",
                            escape_untrusted(&format!("{}: {reason}", failure.path.display()))
                        );
                    }
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        PluginsAction::Run {
            path,
            input,
            plugin_config,
            kv,
        } => {
            let input = tokio::fs::read_to_string(&input)
                .await
                .with_context(|| format!("failed to read the input {}", input.display()))?;
            let kv = match kv {
                Some(file) => Some(tokio::fs::read_to_string(&file).await.with_context(|| {
                    format!("failed to read the key-value file {}", file.display())
                })?),
                None => None,
            };
            let config =
                configured.unwrap_or_else(|| nightcrier_plugin_host::default_config_for(&path));
            let report = nightcrier_plugin_host::run_plugin(&nightcrier_plugin_host::RunOptions {
                path,
                input,
                plugin_config,
                kv,
                config,
            })
            .await;
            writeln!(out, "{}", report.to_json())?;
            match &report.error {
                None => Ok(ExitCode::SUCCESS),
                Some(reason) => {
                    eprintln!("error: {}", escape_untrusted(reason));
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        PluginsAction::New {
            name,
            kind,
            lang,
            dir,
        } => {
            let created =
                nightcrier_plugin_host::new_plugin(&nightcrier_plugin_host::NewPluginOptions {
                    name,
                    kind,
                    lang,
                    parent_dir: dir,
                })?;
            writeln!(out, "created {}", created.dir.display())?;
            writeln!(out, "build it with: {}", created.build_command)?;
            writeln!(
                out,
                "then check it: nightcrier plugins check {}",
                created.output.display()
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn clusters(
    url: Option<String>,
    listen: std::net::SocketAddr,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let base = url.unwrap_or_else(|| {
        // A wildcard listen address is reached on loopback.
        let mut address = listen;
        if address.ip().is_unspecified() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{address}")
    });
    let endpoint = format!("{}/api/v1/clusters", base.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .get(&endpoint)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach serve at {base} (is it running?)"))?;
    if !response.status().is_success() {
        anyhow::bail!("{endpoint} answered HTTP {}", response.status());
    }
    let view: serde_json::Value = response.json().await.context("unreadable answer")?;
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &view)?;
        writeln!(out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = |value: &serde_json::Value| -> String {
        let shown = match value {
            serde_json::Value::String(text) => text.clone(),
            serde_json::Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        nightcrier_plugin_host::escape_untrusted(&shown).into_owned()
    };
    let time = |value: &serde_json::Value| -> String {
        value
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| {
                t.with_timezone(&Utc)
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string()
            })
            .unwrap_or_else(|| "-".to_owned())
    };
    writeln!(
        out,
        "{:<24}  {:<7}  {:<16}  {:<11}  {:<19}  {:>8}  {:<19}  LAST ERROR",
        "NAME", "KIND", "SOURCE", "PHASE", "SINCE", "EVENTS", "LAST EVENT"
    )?;
    for feed in view["feeds"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<24}  {:<7}  {:<16}  {:<11}  {:<19}  {:>8}  {:<19}  {}",
            text(&feed["name"]),
            text(&feed["kind"]),
            text(&feed["source"]),
            text(&feed["phase"]),
            time(&feed["phase_since"]),
            text(&feed["events_received"]),
            time(&feed["last_event_at"]),
            text(&feed["last_error"]),
        )?;
    }
    let ingest = &view["ingest"];
    writeln!(
        out,
        "\ningest: {} received, {} events, {} rejected, {} spooled, {} replayed, {} dropped, spool {} bytes{}",
        text(&ingest["received"]),
        text(&ingest["events"]),
        text(&ingest["rejected"]),
        text(&ingest["spooled"]),
        text(&ingest["replayed"]),
        text(&ingest["dropped"]),
        text(&ingest["spool_bytes"]),
        if ingest["accepting"] == false {
            " (database unreachable: spooling)"
        } else {
            ""
        }
    )?;
    Ok(ExitCode::SUCCESS)
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
                    ..ListFilter::default()
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
            let reports = store.reports(id).await?;
            if json {
                let doc = serde_json::json!({
                    "incident": incident,
                    "faultEvent": event,
                    "agentExecutions": executions,
                    "pluginRuns": plugin_runs,
                    "reports": reports,
                });
                serde_json::to_writer_pretty(&mut out, &doc)?;
                writeln!(out)?;
            } else {
                // JSON escapes C0 controls in strings; each line is escaped for the rest (C1,
                // DEL, bidi), and the structural line breaks stay
                let pretty = serde_json::to_string_pretty(&incident)?;
                for line in pretty.lines() {
                    writeln!(out, "{}", escape_untrusted(line))?;
                }
                if let Some(event) = event {
                    let resource = [
                        event.resource_kind,
                        event.resource_namespace,
                        event.resource_name,
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("/");
                    writeln!(
                        out,
                        "\nfault event {} from {}: {} {} on {}",
                        event.id,
                        escape_untrusted(&event.source),
                        escape_untrusted(&event.severity),
                        escape_untrusted(&event.fault_type),
                        escape_untrusted(&resource)
                    )?;
                    writeln!(out, "  {}", escape_untrusted(&event.context))?;
                }
                writeln!(
                    out,
                    "\n{} agent execution(s), {} plugin run(s), {} report(s)",
                    executions.len(),
                    plugin_runs.len(),
                    reports.len()
                )?;
                for run in plugin_runs {
                    let line = format!(
                        "  {} {} -> {} ({} us){}",
                        run.stage,
                        run.plugin,
                        run.outcome,
                        run.duration_us,
                        run.error.map(|e| format!(": {e}")).unwrap_or_default()
                    );
                    writeln!(out, "{}", escape_untrusted(&line))?;
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
            escape_untrusted(&incident.cluster),
            incident.priority,
            incident.attempts,
            incident.created_at.format("%Y-%m-%d %H:%M:%S"),
            escape_untrusted(reason)
        )?;
    }
    Ok(())
}

/// Rejections `ingest` prints one by one before it only counts them.
const REJECTIONS_SHOWN: usize = 10;
/// Messages in flight between reading and committing.
const INGEST_IN_FLIGHT: usize = 4096;

async fn ingest(
    queue: &Queue,
    decoder: crate::ingest::Decoder,
    source: &str,
    cluster: Option<&str>,
    files: Vec<PathBuf>,
) -> anyhow::Result<ExitCode> {
    use crate::ingest::{
        IngestConfig, Ingestor, InputItem, MAX_MESSAGE_BYTES, message_for, read_input,
    };
    let host = decoder.host().clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let (ingestor, writer) = Ingestor::start(
        queue.clone(),
        decoder,
        IngestConfig {
            spool: None,
            log_rejections: false,
            ..IngestConfig::default()
        },
        stop.clone(),
    )?;
    let (items, mut incoming) = tokio::sync::mpsc::channel::<InputItem>(1024);
    let reader = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut read = 0;
        for file in &files {
            read += read_input(file, MAX_MESSAGE_BYTES, &items).map_err(anyhow::Error::msg)?;
        }
        Ok(read)
    });
    let mut out = std::io::stdout().lock();
    let mut totals = IngestTotals::default();
    let mut in_flight = std::collections::VecDeque::new();
    while let Some(item) = incoming.recv().await {
        let mut message = message_for(&host, source, cluster, item.body, Utc::now());
        message.unreadable = item.problem;
        let reply = ingestor.send(message).await?;
        in_flight.push_back((item.position, reply));
        while in_flight.len() >= INGEST_IN_FLIGHT {
            if let Some((position, reply)) = in_flight.pop_front() {
                totals.report(&mut out, &position, reply.await)?;
            }
        }
    }
    for (position, reply) in in_flight {
        totals.report(&mut out, &position, reply.await)?;
    }
    let read = reader.await??;
    stop.cancel();
    writer.await?;
    if totals.rejected > REJECTIONS_SHOWN as u64 {
        eprintln!(
            "… {} more rejected; see `nightcrier rejected`",
            totals.rejected - REJECTIONS_SHOWN as u64
        );
    }
    writeln!(
        out,
        "ingested {} event(s), rejected {} (from {read} message(s))",
        totals.events, totals.rejected
    )?;
    Ok(if totals.rejected > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

#[derive(Default)]
struct IngestTotals {
    events: u64,
    rejected: u64,
}

impl IngestTotals {
    fn report(
        &mut self,
        out: &mut impl Write,
        position: &str,
        reply: Result<
            Result<crate::ingest::MessageOutcome, crate::ingest::IngestError>,
            tokio::sync::oneshot::error::RecvError,
        >,
    ) -> anyhow::Result<()> {
        let outcome = reply
            .map_err(|_| crate::ingest::IngestError::Stopped)
            .and_then(|outcome| outcome)
            .context("failed to store the input")?;
        for ids in &outcome.incidents {
            writeln!(out, "incident {} (event {})", ids.incident_id, ids.event_id)?;
        }
        self.events += outcome.incidents.len() as u64;
        for reason in &outcome.rejected {
            self.rejected += 1;
            if self.rejected <= REJECTIONS_SHOWN as u64 {
                eprintln!(
                    "rejected ({}): {}",
                    nightcrier_plugin_host::escape_untrusted(position),
                    nightcrier_plugin_host::escape_untrusted(reason)
                );
            }
        }
        Ok(())
    }
}
