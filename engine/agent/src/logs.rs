//! Captured agent output: the three capped log files, the live broadcast, and [`tail`].

use std::path::Path;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use tokio::fs::{File, OpenOptions};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

use crate::error::AgentError;
use crate::mask::{SecretMasker, StreamMasker};
use crate::workspace::{LogPaths, Workspace};

/// How often `tail` looks for new bytes while following.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    fn index(self) -> usize {
        match self {
            Self::Stdout => 0,
            Self::Stderr => 1,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Stdout => "STDOUT",
            Self::Stderr => "STDERR",
        }
    }
}

/// A piece of live output, as broadcast to in-process subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Source stream.
    pub stream: LogStream,
    /// Raw bytes.
    pub bytes: Vec<u8>,
}

struct CappedFile {
    file: File,
    written: u64,
    capped: bool,
}

impl CappedFile {
    async fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        let written = file.metadata().await?.len();
        Ok(Self {
            file,
            written,
            capped: false,
        })
    }

    /// Appends up to the cap, then one marker line; later bytes are dropped.
    async fn write(&mut self, bytes: &[u8], cap: u64) -> std::io::Result<()> {
        if self.capped {
            return Ok(());
        }
        let room = cap.saturating_sub(self.written);
        let take = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        self.file.write_all(&bytes[..take]).await?;
        self.written += take as u64;
        if take < bytes.len() {
            self.capped = true;
            let marker =
                format!("\n[nightcrier] log capped at {cap} bytes; further output dropped\n");
            self.file.write_all(marker.as_bytes()).await?;
        }
        Ok(())
    }
}

/// Writes agent output into `agent-stdout.log`, `agent-stderr.log` and `agent-full.log`, each
/// capped, and broadcasts it while under the cap.
pub(crate) struct LogSink {
    stdout: CappedFile,
    stderr: CappedFile,
    full: CappedFile,
    cap: u64,
    partial: [Vec<u8>; 2],
    /// Secrets handed to the agent are masked before any byte is written or broadcast.
    maskers: [StreamMasker; 2],
    sender: broadcast::Sender<LogChunk>,
}

impl LogSink {
    pub(crate) async fn open(
        paths: &LogPaths,
        cap: u64,
        masker: &SecretMasker,
        sender: broadcast::Sender<LogChunk>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            stdout: CappedFile::open(&paths.stdout).await?,
            stderr: CappedFile::open(&paths.stderr).await?,
            full: CappedFile::open(&paths.full).await?,
            cap,
            partial: [Vec::new(), Vec::new()],
            maskers: [masker.stream(), masker.stream()],
            sender,
        })
    }

    pub(crate) fn capped(&self) -> bool {
        self.stdout.capped || self.stderr.capped || self.full.capped
    }

    pub(crate) async fn write(&mut self, stream: LogStream, bytes: &[u8]) -> std::io::Result<()> {
        let masked = self.maskers[stream.index()].push(bytes);
        self.write_masked(stream, &masked).await
    }

    async fn write_masked(&mut self, stream: LogStream, bytes: &[u8]) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let cap = self.cap;
        let (raw, index) = match stream {
            LogStream::Stdout => (&mut self.stdout, 0),
            LogStream::Stderr => (&mut self.stderr, 1),
        };
        let under_cap = !raw.capped;
        raw.write(bytes, cap).await?;
        if under_cap {
            // No receivers is normal; nobody is tailing.
            let _ = self.sender.send(LogChunk {
                stream,
                bytes: bytes.to_vec(),
            });
        }
        if self.full.capped {
            return Ok(());
        }
        // Whole lines only, so a line split across chunks stays one line.
        let partial = &mut self.partial[index];
        partial.extend_from_slice(bytes);
        let Some(last_newline) = partial.iter().rposition(|byte| *byte == b'\n') else {
            if partial.len() as u64 > cap {
                partial.clear();
            }
            return Ok(());
        };
        let complete: Vec<u8> = partial.drain(..=last_newline).collect();
        let text = tag_lines(stream, &complete);
        self.full.write(text.as_bytes(), cap).await
    }

    /// Flushes half lines and syncs the files.
    pub(crate) async fn finish(&mut self) -> std::io::Result<()> {
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let held = self.maskers[stream.index()].finish();
            self.write_masked(stream, &held).await?;
        }
        for (index, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let rest = std::mem::take(&mut self.partial[index]);
            if !rest.is_empty() {
                let mut line = rest;
                line.push(b'\n');
                let text = tag_lines(stream, &line);
                self.full.write(text.as_bytes(), self.cap).await?;
            }
        }
        for file in [&mut self.stdout, &mut self.stderr, &mut self.full] {
            file.file.flush().await?;
        }
        Ok(())
    }
}

fn tag_lines(stream: LogStream, bytes: &[u8]) -> String {
    let timestamp = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|line| format!("{timestamp} [{}] {line}\n", stream.tag()))
        .collect()
}

/// Copies `logs/agent-full.log` of `incident_id` to `out`; with `follow`, keeps copying as the
/// file grows until the run is over (`incident.json` no longer says `investigating`).
pub async fn tail(
    workspace_root: &Path,
    incident_id: &str,
    follow: bool,
    out: &mut (impl AsyncWrite + Unpin),
) -> Result<(), AgentError> {
    let workspace = Workspace::open(workspace_root, incident_id)?;
    let path = workspace.log_paths().full;
    let tail_error = |source| AgentError::Tail {
        incident_id: incident_id.to_owned(),
        source,
    };
    let mut file = match File::open(&path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(AgentError::NoLogs {
                incident_id: incident_id.to_owned(),
                path,
            });
        }
        Err(error) => return Err(tail_error(error)),
    };
    let mut position = 0u64;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buffer).await.map_err(tail_error)?;
        if read > 0 {
            out.write_all(&buffer[..read]).await.map_err(tail_error)?;
            position += read as u64;
            continue;
        }
        out.flush().await.map_err(tail_error)?;
        if !follow || run_is_over(&workspace).await {
            // One last read: the run may have written its final bytes before finishing.
            let read = file.read(&mut buffer).await.map_err(tail_error)?;
            if read == 0 {
                return Ok(());
            }
            out.write_all(&buffer[..read]).await.map_err(tail_error)?;
            position += read as u64;
            continue;
        }
        tokio::time::sleep(FOLLOW_POLL).await;
        // The file may have been replaced; reopen when it shrank.
        if let Ok(metadata) = tokio::fs::metadata(&path).await
            && metadata.len() < position
        {
            file = File::open(&path).await.map_err(tail_error)?;
            position = 0;
            file.seek(std::io::SeekFrom::Start(0))
                .await
                .map_err(tail_error)?;
        }
    }
}

async fn run_is_over(workspace: &Workspace) -> bool {
    let Ok(text) = tokio::fs::read(workspace.incident_path()).await else {
        return true;
    };
    match serde_json::from_slice::<serde_json::Value>(&text) {
        Ok(document) => {
            document.get("status").and_then(|status| status.as_str()) != Some("investigating")
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(directory: &Path) -> LogPaths {
        LogPaths {
            stdout: directory.join("agent-stdout.log"),
            stderr: directory.join("agent-stderr.log"),
            full: directory.join("agent-full.log"),
        }
    }

    #[tokio::test]
    async fn sink_caps_files_and_keeps_lines_whole() {
        let directory = tempfile::tempdir().unwrap();
        let (sender, mut receiver) = broadcast::channel(16);
        let mut sink = LogSink::open(
            &paths(directory.path()),
            1000,
            &SecretMasker::default(),
            sender,
        )
        .await
        .unwrap();
        sink.write(LogStream::Stdout, b"hello wo").await.unwrap();
        sink.write(LogStream::Stdout, b"rld\n").await.unwrap();
        sink.write(LogStream::Stderr, b"oops\n").await.unwrap();
        assert_eq!(receiver.recv().await.unwrap().bytes, b"hello wo");
        for _ in 0..100 {
            sink.write(LogStream::Stdout, &[b'x'; 99]).await.unwrap();
        }
        sink.finish().await.unwrap();
        assert!(sink.capped());
        let stdout = std::fs::read_to_string(directory.path().join("agent-stdout.log")).unwrap();
        assert!(stdout.starts_with("hello world\n"));
        assert!(stdout.len() <= 1000 + 100, "{}", stdout.len());
        assert!(stdout.ends_with("further output dropped\n"));
        let full = std::fs::read_to_string(directory.path().join("agent-full.log")).unwrap();
        let lines: Vec<&str> = full.lines().collect();
        assert!(lines[0].ends_with("[STDOUT] hello world"), "{full}");
        assert!(lines[1].ends_with("[STDERR] oops"), "{full}");
        assert_eq!(
            std::fs::read_to_string(directory.path().join("agent-stderr.log")).unwrap(),
            "oops\n"
        );
    }

    #[tokio::test]
    async fn sink_masks_secrets_split_across_writes_in_files_and_broadcast() {
        let directory = tempfile::tempdir().unwrap();
        let (sender, mut receiver) = broadcast::channel(64);
        let masker = SecretMasker::new(&[crate::mask::NamedSecret {
            name: "API_KEY".into(),
            value: b"sk-live-0123456789abcdef".to_vec(),
        }]);
        let mut sink = LogSink::open(&paths(directory.path()), 1 << 20, &masker, sender)
            .await
            .unwrap();
        sink.write(LogStream::Stdout, b"API_KEY=sk-live-0123")
            .await
            .unwrap();
        sink.write(LogStream::Stdout, b"456789abcdef\nnext ")
            .await
            .unwrap();
        sink.write(LogStream::Stderr, b"err sk-live-0123456789abc")
            .await
            .unwrap();
        sink.finish().await.unwrap();
        let mut broadcast = Vec::new();
        while let Ok(chunk) = receiver.try_recv() {
            broadcast.extend(chunk.bytes);
        }
        let broadcast = String::from_utf8(broadcast).unwrap();
        assert!(
            !broadcast.contains("sk-live-0123456789abcdef"),
            "{broadcast}"
        );
        assert!(
            broadcast.contains("API_KEY=[REDACTED:API_KEY]"),
            "{broadcast}"
        );
        let stdout = std::fs::read_to_string(directory.path().join("agent-stdout.log")).unwrap();
        assert_eq!(stdout, "API_KEY=[REDACTED:API_KEY]\nnext ");
        let stderr = std::fs::read_to_string(directory.path().join("agent-stderr.log")).unwrap();
        assert_eq!(
            stderr, "err sk-live-0123456789abc",
            "not a secret: a prefix of one"
        );
        let full = std::fs::read_to_string(directory.path().join("agent-full.log")).unwrap();
        assert!(
            full.contains("[STDOUT] API_KEY=[REDACTED:API_KEY]"),
            "{full}"
        );
        assert!(full.contains("[STDOUT] next"), "{full}");
        assert!(!full.contains("sk-live-0123456789abcdef"), "{full}");
    }

    #[tokio::test]
    async fn tail_follows_until_the_run_is_over() {
        let root = tempfile::tempdir().unwrap();
        let workspace = Workspace::open(root.path(), "inc-7").unwrap();
        std::fs::create_dir_all(workspace.logs_dir()).unwrap();
        std::fs::write(workspace.incident_path(), r#"{"status": "investigating"}"#).unwrap();
        std::fs::write(workspace.log_paths().full, "line 1\n").unwrap();

        let (mut reader, mut writer) = tokio::io::duplex(1 << 16);
        let root_path = root.path().to_owned();
        let follower =
            tokio::spawn(async move { tail(&root_path, "inc-7", true, &mut writer).await });
        let mut seen = Vec::new();
        let mut buffer = [0u8; 1024];
        while !String::from_utf8_lossy(&seen).contains("line 1\n") {
            let read = reader.read(&mut buffer).await.unwrap();
            seen.extend_from_slice(&buffer[..read]);
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(workspace.log_paths().full)
            .await
            .unwrap();
        file.write_all(b"line 2\n").await.unwrap();
        file.flush().await.unwrap();
        while !String::from_utf8_lossy(&seen).contains("line 2\n") {
            let read = reader.read(&mut buffer).await.unwrap();
            seen.extend_from_slice(&buffer[..read]);
        }
        assert!(!follower.is_finished());
        file.write_all(b"line 3\n").await.unwrap();
        file.flush().await.unwrap();
        std::fs::write(workspace.incident_path(), r#"{"status": "resolved"}"#).unwrap();
        follower.await.unwrap().unwrap();
        reader.read_to_end(&mut seen).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&seen), "line 1\nline 2\nline 3\n");
    }

    #[tokio::test]
    async fn tail_of_an_unknown_incident_names_it() {
        let root = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let error = tail(root.path(), "nope", false, &mut out)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no agent logs for incident nope"),
            "{error}"
        );
    }
}
