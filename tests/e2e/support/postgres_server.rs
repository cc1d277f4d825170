//! A Postgres server of a test's own (not the shared one), which the test can stop and start
//! again, to play a database outage. Uses `tests/pg.sh`.

use std::path::PathBuf;
use std::process::Command;

fn pg_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pg.sh")
}

/// A throwaway Postgres server, removed on drop.
pub(crate) struct OwnPostgres {
    /// Its URL.
    pub(crate) url: String,
    dir: String,
}

impl OwnPostgres {
    /// Starts a fresh server on a free port (fails loudly when PostgreSQL is not installed).
    pub(crate) fn start() -> Self {
        let port = super::process::free_port();
        let output = Command::new("bash")
            .arg(pg_sh())
            .arg("start")
            .env("NIGHTCRIER_TEST_PG_PORT", port.to_string())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tests/pg.sh start failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let value = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("export {name}=")))
                .unwrap_or_else(|| panic!("pg.sh printed no {name}: {text}"))
                .to_owned()
        };
        Self {
            url: value("NIGHTCRIER_TEST_PG_URL"),
            dir: value("NIGHTCRIER_TEST_PG_DIR"),
        }
    }

    fn run(&self, action: &str) {
        let output = Command::new("bash")
            .arg(pg_sh())
            .arg(action)
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "tests/pg.sh {action} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Stops the server (fast shutdown: connections are cut), keeping its data.
    pub(crate) fn halt(&self) {
        self.run("halt");
    }

    /// Starts it again on the same port.
    pub(crate) fn resume(&self) {
        self.run("resume");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(pg_sh())
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}
