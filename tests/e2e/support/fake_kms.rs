//! The fake kubernetes-mcp-server (`tests/fake-kms/fake_kms.py`, on the official Python MCP SDK)
//! as a process: start it with one listener per cluster, drive its `/test/` control API, kill and
//! restart it on the same ports.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Value, json};

/// The fixture's Python, set up once per test process by `tests/fake-kms/setup.sh` (which fails
/// loudly when python3 or PyPI is missing).
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = repo().join("tests/fake-kms/setup.sh");
            let output = Command::new("bash")
                .arg(&script)
                .output()
                .expect("bash must be installed");
            assert!(
                output.status.success(),
                "tests/fake-kms/setup.sh failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        })
        .clone()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One fake server process playing `listeners` (port, cluster name in payloads).
pub(crate) struct FakeKms {
    child: Child,
    /// (port, cluster) of each listener.
    pub(crate) listeners: Vec<(u16, String)>,
    http: reqwest::Client,
}

impl FakeKms {
    /// Starts one process with a listener per `(port, cluster)` and waits for `ready`.
    pub(crate) fn start(listeners: &[(u16, &str)]) -> Self {
        Self::start_args(listeners, &[])
    }

    /// Same, with extra arguments.
    pub(crate) fn start_args(listeners: &[(u16, &str)], extra: &[&str]) -> Self {
        let mut command = Command::new(python());
        command.arg(repo().join("tests/fake-kms/fake_kms.py"));
        for (port, cluster) in listeners {
            command.arg("--listen").arg(format!("{port}:{cluster}"));
        }
        command.args(extra);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the fake kubernetes-mcp-server starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the fake server did not start");
        Self {
            child,
            listeners: listeners
                .iter()
                .map(|(port, cluster)| (*port, (*cluster).to_owned()))
                .collect(),
            http: reqwest::Client::new(),
        }
    }

    /// The `/mcp` URL of listener `index`.
    pub(crate) fn url(&self, index: usize) -> String {
        format!("http://127.0.0.1:{}/mcp", self.listeners[index].0)
    }

    /// `POST /test/PATH` on listener `index`.
    pub(crate) async fn post(&self, index: usize, path: &str, body: Value) -> Value {
        let url = format!("http://127.0.0.1:{}/test/{path}", self.listeners[index].0);
        self.http
            .post(&url)
            .json(&body)
            .timeout(Duration::from_secs(600))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .json()
            .await
            .unwrap()
    }

    /// Emits `count` faults on listener `index` (as fast as possible when `rate` is 0) and
    /// returns the fault ids written to a stream.
    pub(crate) async fn emit(&self, index: usize, count: usize, rate: f64) -> Vec<String> {
        let answer = self
            .post(
                index,
                "emit",
                json!({"count": count, "rate": rate, "wait": true}),
            )
            .await;
        let sent = answer["sent"].as_u64().unwrap() as usize;
        let ids: Vec<String> = answer["faultIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(sent, ids.len().min(sent), "{answer}");
        ids.into_iter().take(sent).collect()
    }

    /// Sends malformed notifications of `kind`.
    pub(crate) async fn malformed(&self, index: usize, kind: &str, count: usize) -> Value {
        self.post(index, "malformed", json!({"kind": kind, "count": count}))
            .await
    }

    /// Drops every subscription of listener `index` silently.
    pub(crate) async fn cancel(&self, index: usize) {
        self.post(index, "cancel", json!({})).await;
    }

    /// The listener's counters.
    pub(crate) async fn state(&self, index: usize) -> Value {
        let url = format!("http://127.0.0.1:{}/test/state", self.listeners[index].0);
        match self
            .http
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    /// Every fault id written to a stream by listener `index`.
    pub(crate) async fn sent(&self, index: usize) -> Vec<String> {
        let url = format!("http://127.0.0.1:{}/test/sent", self.listeners[index].0);
        let sent: Value = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let list = sent
            .as_array()
            .or_else(|| sent["sent"].as_array())
            .cloned()
            .unwrap_or_default();
        list.iter()
            .map(|entry| entry["faultId"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `kill -9` of the whole process: every session is gone.
    pub(crate) fn kill(mut self) -> Vec<(u16, String)> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::take(&mut self.listeners)
    }
}

impl Drop for FakeKms {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
