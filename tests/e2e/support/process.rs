//! `nightcrier serve` and the other commands as processes: a running server whose log goes to a
//! file (a full pipe can never stall it), `kill -9` or SIGTERM, and polling until a condition
//! holds, with the server's log in the panic message when it does not.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// The `nightcrier` binary under test.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nightcrier-under-test")
}

/// Runs `nightcrier -c CONFIG ARGS…`.
pub(crate) fn nightcrier(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("-c")
        .arg(config)
        .args(args)
        .env_remove("NIGHTCRIER_DATABASE_URL")
        .output()
        .unwrap()
}

/// A port nobody listens on right now, and not handed out before by this test process (the
/// kernel may offer a port again as soon as it is released).
pub(crate) fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A running `nightcrier serve`.
pub(crate) struct Serve {
    child: Child,
    log: PathBuf,
}

impl Serve {
    /// Starts `serve` on `config`, logging at `info` to a file beside it.
    pub(crate) fn start(config: &Path) -> Self {
        Self::start_with(config, &[])
    }

    /// Same, with extra environment variables.
    pub(crate) fn start_with(config: &Path, env: &[(&str, &str)]) -> Self {
        let log = config.with_extension(format!("{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(bin())
            .arg("-c")
            .arg(config)
            .arg("serve")
            .env("NIGHTCRIER_LOG", "info")
            .env_remove("NIGHTCRIER_DATABASE_URL")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `check` until it holds; panics with the log if serve exits or `limit` passes.
    pub(crate) async fn wait_for<F, Fut>(&mut self, what: &str, limit: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "serve exited with {status} while waiting for {what}: {}",
                    self.log()
                );
            }
            if check().await {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("timed out waiting for {what}; serve log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `kill -9`.
    pub(crate) fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.log()
    }

    /// SIGTERM, then the clean exit; returns the log.
    pub(crate) fn stop(mut self) -> String {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().unwrap();
        let log = self.log();
        assert!(status.success(), "serve exited with {status}: {log}");
        log
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET http://ADDRESS/PATH` as JSON, or `None` if serve does not answer.
pub(crate) async fn get_json(address: &str, path: &str) -> Option<serde_json::Value> {
    let response = reqwest::Client::new()
        .get(format!("http://{address}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}
