//! A guest's stderr: kept in a small in-memory ring (the last [`STDERR_TAIL_BYTES`]), never
//! inherited from the host, so a trap report can quote what the guest said last (a Rust panic
//! message, a Python traceback's last line).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::text::escape_bounded;

/// Bytes of a guest's stderr kept per instance; older output is dropped as new output arrives.
pub(crate) const STDERR_TAIL_BYTES: usize = 4096;
/// Characters of stderr quoted in a trap report.
const QUOTED_CHARS: usize = 400;
/// Most a single write is allowed to be; writes never block or fail (the ring drops old bytes).
const WRITE_PERMIT: usize = 64 * 1024;

/// The shared ring a guest's stderr writes into; clones share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct StderrTail(Arc<Mutex<VecDeque<u8>>>);

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut ring = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
        let keep = bytes.len().min(STDERR_TAIL_BYTES);
        ring.extend(&bytes[bytes.len() - keep..]);
        let excess = ring.len().saturating_sub(STDERR_TAIL_BYTES);
        ring.drain(..excess);
    }

    /// Forgets earlier output (a reused instance starts each call empty).
    pub(crate) fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
    }

    /// What the guest said last, escaped and bounded: its last two non-empty lines, leaving out
    /// trailing `note:` hints (Rust's "run with `RUST_BACKTRACE=1`"), so a Rust panic gives its
    /// location and message and a Python traceback its exception line.
    pub(crate) fn last_words(&self) -> Option<String> {
        let bytes: Vec<u8> = {
            let ring = self.0.lock().unwrap_or_else(|poison| poison.into_inner());
            ring.iter().copied().collect()
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        while lines.len() > 1 && lines.last().is_some_and(|line| line.starts_with("note:")) {
            lines.pop();
        }
        let start = lines.len().saturating_sub(2);
        let quoted = lines[start..].join(" ");
        if quoted.is_empty() {
            return None;
        }
        let chars = quoted.chars().count();
        let tail = if chars > QUOTED_CHARS {
            // the end of the output says most about the failure
            let skip = quoted
                .char_indices()
                .nth(chars - QUOTED_CHARS)
                .map_or(0, |(at, _)| at);
            format!("…{}", &quoted[skip..])
        } else {
            quoted
        };
        Some(escape_bounded(&tail, QUOTED_CHARS + 1).into_owned())
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rust_panic_gives_its_location_and_message() {
        let tail = StderrTail::default();
        tail.push(b"thread '<unnamed>' panicked at src/lib.rs:61:23:\nboom: \x1b[2Jbad input\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n");
        assert_eq!(
            tail.last_words().unwrap(),
            "thread '<unnamed>' panicked at src/lib.rs:61:23: boom: \\u{1b}[2Jbad input"
        );
    }

    #[test]
    fn only_the_tail_is_kept_and_quoted() {
        let tail = StderrTail::default();
        assert_eq!(tail.last_words(), None);
        for n in 0..10_000 {
            tail.push(format!("noise line {n}\n").as_bytes());
        }
        tail.push(&[b'x'; 1000]);
        tail.push(b"\nValueError: the last word\n");
        assert_eq!(tail.0.lock().unwrap().len(), STDERR_TAIL_BYTES);
        let words = tail.last_words().unwrap();
        assert!(words.ends_with("ValueError: the last word"), "{words}");
        assert!(
            words.starts_with('…') && words.chars().count() <= QUOTED_CHARS + 1,
            "{words}"
        );
        tail.clear();
        assert_eq!(tail.last_words(), None);
    }
}
