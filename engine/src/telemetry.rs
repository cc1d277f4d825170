//! Tracing set-up. Logs go to stderr (stdout is for command output); field names used across
//! the engine are `incident_id`, `cluster`, `plugin`, `worker` and `error`.

use tracing_subscriber::EnvFilter;

/// Logging options shared by every command.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter, e.g. `info` or `nightcrier=debug` (overrides RUST_LOG).
    #[arg(long, global = true, env = "NIGHTCRIER_LOG")]
    pub log_level: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    pub log_json: bool,
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(args: &LogArgs) {
    let filter = args
        .log_level
        .as_deref()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (in tests) is not an error worth reporting.
    let _ = if args.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
