//! moto in server mode (from PyPI, set up by `tests/moto/setup.sh`) as a process: an
//! S3-compatible server on a port of the test's choosing, which a test can stop and start again
//! on the same port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The venv's Python, set up once per test process. Missing moto (or python3, or PyPI) fails
/// the test that needs it, loudly: it is never skipped.
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("moto/setup.sh");
            let output = Command::new("bash")
                .arg(&script)
                .output()
                .expect("bash must be installed");
            assert!(
                output.status.success(),
                "tests/moto/setup.sh failed (the S3 tests need moto[server] from PyPI): {}",
                String::from_utf8_lossy(&output.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
        })
        .clone()
}

/// A running moto server.
pub(crate) struct Moto {
    child: Child,
    /// Its port.
    pub(crate) port: u16,
}

impl Moto {
    /// Starts moto on `port` and waits until it answers.
    pub(crate) async fn start(port: u16) -> Self {
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto starts");
        let mut moto = Self { child, port };
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto exited with {status} before it answered");
            }
            if http.get(moto.endpoint()).send().await.is_ok() {
                return moto;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto did not answer on port {port} within a minute"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` (moto keeps everything in memory: a restarted server has none).
    pub(crate) async fn create_bucket(&self, bucket: &str) {
        let answer = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "create bucket: {answer:?}");
    }

    /// Stops the server (its port is then closed: connections are refused).
    pub(crate) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
