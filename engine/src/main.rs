//! The `nightcrier` binary: parses the command line, sets up tracing and delegates to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nightcrier::cli::Cli::parse();
    nightcrier::telemetry::init(&cli.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: failed to start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(nightcrier::cli::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            // errors can quote plugin- or feed-supplied text
            eprintln!(
                "error: {}",
                nightcrier_plugin_host::escape_untrusted(&error_chain(&error))
            );
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, leaving out causes whose text the previous message already holds
/// (driver errors often repeat their cause in their own message).
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let message = cause.to_string();
        if !text.contains(&message) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&message);
        }
    }
    text
}
