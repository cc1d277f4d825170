//! Tracing set-up. Logs go to stderr (stdout is for command output); field names used across
//! the engine are `incident_id`, `cluster`, `plugin`, `worker` and `error`.
//!
//! Log lines carry text from plugins, feeds and agents (names, error messages, fault fields), so
//! the text format escapes control characters in every field value and message
//! ([`EscapingFields`]): no call site can forge a log line or send escape sequences to the
//! operator's terminal. The JSON format escapes them as JSON does.

use std::fmt;

use nightcrier_plugin_host::escape_untrusted;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;

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
    // A second init (in tests) is not an error worth reporting.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing::subscriber::set_global_default(subscriber(args, ansi, std::io::stderr));
}

/// The subscriber `init` installs, writing to `writer`: text with [`EscapingFields`] (colours
/// when `ansi`), or JSON.
pub fn subscriber<W>(
    args: &LogArgs,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = args
        .log_level
        .as_deref()
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    if args.log_json {
        Box::new(builder.json().finish())
    } else {
        Box::new(builder.fmt_fields(EscapingFields).finish())
    }
}

/// Formats event and span fields like tracing's default (`message key=value …`), with every
/// message and value passed through [`escape_untrusted`].
#[derive(Clone, Copy, Debug, Default)]
pub struct EscapingFields;

impl<'writer> MakeVisitor<Writer<'writer>> for EscapingFields {
    type Visitor = EscapingVisitor<'writer>;

    fn make_visitor(&self, target: Writer<'writer>) -> Self::Visitor {
        EscapingVisitor {
            writer: target,
            is_empty: true,
            result: Ok(()),
        }
    }
}

/// The visitor of [`EscapingFields`].
#[derive(Debug)]
pub struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    is_empty: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write_field(&mut self, field: &Field, text: &str) {
        if self.result.is_err() {
            return;
        }
        let name = field.name();
        let separator = if self.is_empty { "" } else { " " };
        self.is_empty = false;
        let text = escape_untrusted(text);
        self.result = match name {
            "message" => write!(self.writer, "{separator}{text}"),
            name => write!(
                self.writer,
                "{separator}{}={text}",
                name.strip_prefix("r#").unwrap_or(name)
            ),
        };
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write_field(field, value);
        } else {
            // quoted, as tracing's default shows strings
            self.write_field(field, &format!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let mut text = value.to_string();
        let mut source = value.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        self.write_field(field, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write_field(field, &format!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for EscapingVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for EscapingVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Collects what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const FORGED: &str =
        "x\n2026-01-01T00:00:00.000000Z ERROR nightcrier: forged\u{1b}[2J\r\u{202e}";

    fn log_everything(args: &LogArgs) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = subscriber(args, false, move || writer.clone());
        tracing::subscriber::with_default(subscriber, || {
            let error = std::io::Error::other(FORGED);
            let span = tracing::info_span!("feed", source = %FORGED);
            let _entered = span.enter();
            tracing::warn!(
                plugin = %FORGED,
                cluster = FORGED,
                detail = ?FORGED,
                error = &error as &(dyn std::error::Error + 'static),
                "decoded {FORGED}"
            );
        });
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    fn text_args() -> LogArgs {
        LogArgs {
            log_level: Some("info".to_owned()),
            log_json: false,
        }
    }

    #[test]
    fn text_logs_escape_every_field_and_the_message() {
        let text = log_everything(&text_args());
        assert_eq!(text.lines().count(), 1, "one event, one line: {text}");
        for bad in ['\u{1b}', '\r', '\u{202e}'] {
            assert!(!text.contains(bad), "{bad:?} reached the log: {text:?}");
        }
        assert!(
            text.contains("plugin=x\\n2026-01-01T00:00:00.000000Z ERROR"),
            "{text}"
        );
        assert!(text.contains("decoded x\\n2026"), "{text}");
        assert!(text.contains("source=x\\n2026"), "span fields too: {text}");
        assert!(text.contains("error=x\\n2026"), "{text}");
    }

    #[test]
    fn plain_fields_read_as_before() {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing::subscriber::with_default(
            subscriber(&text_args(), false, move || writer.clone()),
            || {
                tracing::info!(plugin = %"dedup@0.1.0", r#type = "x", n = 3, "plugin loaded");
            },
        );
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.trim_end()
                .ends_with("plugin loaded plugin=dedup@0.1.0 type=\"x\" n=3"),
            "{text}"
        );
    }

    #[test]
    fn json_logs_keep_one_event_per_line_and_the_text_as_received() {
        let text = log_everything(&LogArgs {
            log_level: Some("info".to_owned()),
            log_json: true,
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["fields"]["plugin"], FORGED);
        assert_eq!(line["fields"]["message"], format!("decoded {FORGED}"));
    }
}
