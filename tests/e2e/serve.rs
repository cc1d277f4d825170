//! `nightcrier serve` end to end, as a process, on both backends and the real Docker engine:
//! events are ingested by the CLI, queued by pre-triage, investigated by an agent container,
//! validated, recorded and reported; and a `kill -9` of nightcrier mid-run followed by a restart
//! re-attaches to the running container and completes the incident.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::{backends, built_plugins};

/// The test agent: a good report for CrashLoop faults, a too-small one otherwise; `slow` in the
/// context makes it take a few seconds first.
const AGENT: &str = r##"#!/bin/sh
out=/home/agent/output/investigation.md
echo "agent starting for $INCIDENT_ID"
if grep -q 'slow' /home/agent/incident.json; then sleep 4; fi
if grep -q '"faultType": "CrashLoop"' /home/agent/incident.json; then
  {
    echo "# Investigation"
    echo
    echo "The checkout pod crash-loops because its config map is missing; restoring it fixes the rollout."
    echo "The pod spec shows password: hunter2 in plain text."
  } > "$out"
  echo "report written"
else
  echo "too small" > "$out"
  echo "giving up" >&2
fi
"##;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_nightcrier-under-test")
}

fn write_config(dir: &Path, url: &str, instance: &str) -> std::path::PathBuf {
    write_config_with(dir, url, instance, "")
}

fn write_config_with(dir: &Path, url: &str, instance: &str, extra: &str) -> std::path::PathBuf {
    let image = nightcrier_agent::test_support::busybox_image("nightcrier-e2e-agent", AGENT);
    let path = dir.join("nightcrier.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[database]
url = "{url}"

[workers]
concurrency = 2
lease_secs = 30
poll_interval_secs = 0.1
shutdown_grace_secs = 20

[agent]
workspace_root = "{root}"
instance_id = "{instance}"
default_profile = "e2e"

[agent.profiles.e2e]
image = "{image}"
command = ["/bin/sh", "/agent.sh"]
network = "none"
timeout_secs = 60
stop_grace_secs = 1
memory = "64m"
pids_limit = 64
{extra}
"#,
            root = dir.join("workspaces").display()
        ),
    )
    .unwrap();
    path
}

/// The bundled plugins, for `ingest --plugins`.
fn plugins() -> String {
    crate::support::built_plugins().display().to_string()
}

fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("-c")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// A running `nightcrier serve`, logging to a file so a full pipe can never stall it.
struct Server {
    child: Child,
    log: std::path::PathBuf,
}

impl Server {
    fn start(config: &Path) -> Self {
        let log = config.with_extension(format!("{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(bin())
            .arg("-c")
            .arg(config)
            .arg("serve")
            .env("NIGHTCRIER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `check` until it holds; panics with the server's log if the server exits or
    /// `limit` passes.
    async fn wait_for(&mut self, what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "serve exited with {status} while waiting for {what}: {}",
                    self.log()
                );
            }
            if check() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("timed out waiting for {what}; serve log: {}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the clean exit; returns the log.
    fn stop(mut self) -> String {
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

fn incidents(config: &Path) -> Vec<serde_json::Value> {
    let out = cli(config, &["incidents", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn containers_of(instance: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=nightcrier.instance={instance}"),
        ])
        .output()
        .expect("the docker CLI is needed for these tests");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn example(name: &str) -> String {
    format!("{}/../examples/events/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_investigates_ingested_events_in_containers() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let config = write_config(dir.path(), &db.url, &instance);
        let mut server = Server::start(&config);
        // serve applies the migrations itself; commands refuse the database until it has
        server
            .wait_for("the schema", Duration::from_secs(60), || {
                cli(&config, &["incidents", "list"]).status.success()
            })
            .await;
        let ingest = cli(
            &config,
            &[
                "ingest",
                "--plugins",
                &plugins(),
                "--source",
                "kubernetes-mcp",
                &example("crashloop.json"),
                &example("node-unhealthy.json"),
            ],
        );
        assert!(
            ingest.status.success(),
            "{}",
            String::from_utf8_lossy(&ingest.stderr)
        );
        server
            .wait_for("both incidents finished", Duration::from_secs(120), || {
                let all = incidents(&config);
                all.len() == 2
                    && all
                        .iter()
                        .all(|i| i["status"] == "resolved" || i["status"] == "agent_failed")
            })
            .await;
        let all = incidents(&config);
        let status_of = |fault: &str| -> (String, String) {
            let incident = all
                .iter()
                .find(|i| {
                    let show = cli(
                        &config,
                        &["incidents", "show", i["id"].as_str().unwrap(), "--json"],
                    );
                    let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
                    doc["faultEvent"]["fault_type"] == fault
                })
                .unwrap();
            (
                incident["status"].as_str().unwrap().to_owned(),
                incident["id"].as_str().unwrap().to_owned(),
            )
        };
        let (crash_status, crash_id) = status_of("CrashLoop");
        let (node_status, node_id) = status_of("NodeUnhealthy");
        assert_eq!(crash_status, "resolved", "{}", db.backend);
        assert_eq!(node_status, "agent_failed", "{}", db.backend);

        let show: serde_json::Value = serde_json::from_slice(
            &cli(&config, &["incidents", "show", &crash_id, "--json"]).stdout,
        )
        .unwrap();
        let executions = show["agentExecutions"].as_array().unwrap();
        assert_eq!(executions.len(), 1, "{}", db.backend);
        assert_eq!(executions[0]["exit_code"], 0);
        assert!(
            executions[0]["container_id"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
        let failed: serde_json::Value = serde_json::from_slice(
            &cli(&config, &["incidents", "show", &node_id, "--json"]).stdout,
        )
        .unwrap();
        assert!(
            failed["incident"]["failure_reason"]
                .as_str()
                .unwrap()
                .contains("bytes"),
            "{failed}"
        );

        let tail = cli(&config, &["tail", &crash_id]);
        assert!(
            String::from_utf8_lossy(&tail.stdout).contains("report written"),
            "{}",
            String::from_utf8_lossy(&tail.stderr)
        );
        let report = std::fs::read_to_string(
            dir.path()
                .join("workspaces")
                .join(&crash_id)
                .join("output/investigation.md"),
        )
        .unwrap();
        assert!(report.contains("config map is missing"));

        server.stop();
        assert!(
            containers_of(&instance).is_empty(),
            "{}: containers left behind",
            db.backend
        );
    }
}

/// An incident this instance held when it died, with no container left (it died between the claim
/// and the container start), goes back to the queue at restart instead of waiting out its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_held_without_a_container_is_released_at_restart() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let config = write_config(dir.path(), &db.url, &instance);
    assert!(cli(&config, &["migrate"]).status.success());
    assert!(
        cli(
            &config,
            &[
                "ingest",
                "--plugins",
                &plugins(),
                &example("crashloop.json")
            ]
        )
        .status
        .success()
    );
    // what the previous process left: claimed under this instance, a lease far in the future
    let queue = db.queue().await;
    crate::support::queue_all_pending(&queue).await;
    let (claimed, _lease) = queue
        .claim(&instance, Duration::from_secs(3600), chrono::Utc::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(incidents(&config)[0]["status"], "investigating");

    let mut server = Server::start(&config);
    server
        .wait_for("the incident resolved", Duration::from_secs(90), || {
            incidents(&config)[0]["status"] == "resolved"
        })
        .await;
    let log = server.stop();
    assert!(
        log.contains("released an incident whose agent container is gone"),
        "{log}"
    );
    let incident = &incidents(&config)[0];
    assert_eq!(incident["id"], claimed.id.to_string());
    assert_eq!(incident["attempts"], 2, "the lost attempt counts");
    assert!(containers_of(&instance).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nightcrier_reattaches_after_restart_and_completes() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let config = write_config(dir.path(), &db.url, &instance);
    assert!(cli(&config, &["migrate"]).status.success());
    let slow = dir.path().join("slow.json");
    let event = std::fs::read_to_string(example("crashloop.json"))
        .unwrap()
        .replace("restart count", "slow restart count");
    std::fs::write(&slow, event).unwrap();
    assert!(
        cli(
            &config,
            &["ingest", "--plugins", &plugins(), slow.to_str().unwrap()]
        )
        .status
        .success()
    );

    let mut first = Server::start(&config);
    first
        .wait_for("the agent container", Duration::from_secs(60), || {
            !containers_of(&instance).is_empty()
        })
        .await;
    first.kill();
    assert_eq!(incidents(&config)[0]["status"], "investigating");
    assert_eq!(
        containers_of(&instance).len(),
        1,
        "the container outlives the killed process"
    );

    let mut second = Server::start(&config);
    second
        .wait_for("the incident resolved", Duration::from_secs(90), || {
            incidents(&config)[0]["status"] == "resolved"
        })
        .await;
    let log = second.stop();
    assert!(log.contains("re-attached"), "{log}");
    let incident = &incidents(&config)[0];
    assert_eq!(
        incident["attempts"], 1,
        "completed by re-attaching, not by a second run"
    );
    assert!(
        containers_of(&instance).is_empty(),
        "containers left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_pre_and_post_triage_plugins() {
    let plugins = built_plugins();
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("plugins");
        std::fs::create_dir_all(&folder).unwrap();
        for name in ["kubernetes-mcp", "noise-filter", "dedup", "redact-secrets"] {
            std::fs::copy(
                plugins.join(format!("{name}.wasm")),
                folder.join(format!("{name}.wasm")),
            )
            .unwrap();
        }
        let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let extra = format!(
            r#"
[plugins]
dir = "{}"
[plugins.plugin.noise-filter.config]
min_severity = "critical"
[plugins.plugin.dedup.config]
window_seconds = 600
"#,
            folder.display()
        );
        let config = write_config_with(dir.path(), &db.url, &instance, &extra);
        assert!(cli(&config, &["migrate"]).status.success());
        // decoded by the kubernetes-mcp plugin; the same CrashLoop twice, and a warning
        let ingest = cli(
            &config,
            &[
                "ingest",
                "--plugins",
                &plugins.display().to_string(),
                "--source",
                "kubernetes-mcp",
                &example("crashloop.json"),
                &example("crashloop.json"),
                &example("node-unhealthy.json"),
            ],
        );
        assert!(
            ingest.status.success(),
            "{}",
            String::from_utf8_lossy(&ingest.stderr)
        );

        let mut server = Server::start(&config);
        server
            .wait_for(
                "every incident decided and finished",
                Duration::from_secs(120),
                || {
                    let all = incidents(&config);
                    all.len() == 3
                        && all.iter().all(|i| {
                            ["resolved", "skipped", "agent_failed", "failed"]
                                .contains(&i["status"].as_str().unwrap())
                        })
                },
            )
            .await;
        server.stop();
        let all = incidents(&config);
        let mut statuses: Vec<(String, String)> = all
            .iter()
            .map(|i| {
                (
                    i["status"].as_str().unwrap().to_owned(),
                    i["skip_reason"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        statuses.sort();
        assert_eq!(statuses[0].0, "resolved", "{}: {statuses:?}", db.backend);
        assert_eq!(statuses[1].0, "skipped");
        assert_eq!(statuses[2].0, "skipped");
        assert!(
            statuses
                .iter()
                .any(|(_, reason)| reason.starts_with("dedup")),
            "{statuses:?}"
        );
        assert!(
            statuses
                .iter()
                .any(|(_, reason)| reason.starts_with("noise-filter")),
            "{statuses:?}"
        );

        let resolved = all.iter().find(|i| i["status"] == "resolved").unwrap();
        let id = resolved["id"].as_str().unwrap();
        let show: serde_json::Value =
            serde_json::from_slice(&cli(&config, &["incidents", "show", id, "--json"]).stdout)
                .unwrap();
        assert_eq!(
            show["incident"]["labels"]["mcp.subscription-id"], "sub-3f2a9c1e",
            "{}: labels the source plugin decoded reach the incident: {show}",
            db.backend
        );
        let report = show["reports"][0]["report_markdown"].as_str().unwrap();
        assert!(report.contains("config map is missing"), "{report}");
        assert!(
            !report.contains("hunter2"),
            "{}: the stored report is redacted: {report}",
            db.backend
        );
        let stages: Vec<&str> = show["pluginRuns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["stage"].as_str().unwrap())
            .collect();
        assert!(
            stages.contains(&"pre_triage") && stages.contains(&"post_triage"),
            "{stages:?}"
        );
        assert!(containers_of(&instance).is_empty());
    }
}
