//! `nightcrier serve` end to end, as a process, on both backends and the real Docker engine:
//! events are ingested by the CLI, queued by pre-triage, investigated by an agent container,
//! validated, recorded and reported; a `kill -9` of nightcrier mid-run followed by a restart
//! re-attaches to the running container and completes the incident through the same path
//! (report, post-triage, lease renewal that stops the agent when the lease is lost); the API key
//! nightcrier hands an agent never reaches its logs, `tail` or the database; a profile missing a
//! secret or its image stops start-up, and one that loses its secret later keeps incidents
//! queued.

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
if grep -q 'gated' /home/agent/incident.json; then
  echo "waiting for the go file"
  while [ ! -e /home/agent/output/go ]; do sleep 0.2; done
fi
# what a prompt-injected agent does with the key it was given
if [ -n "$ANTHROPIC_API_KEY" ]; then echo "environment:"; env; fi
if grep -q '"faultType": "CrashLoop"' /home/agent/incident.json; then
  {
    echo "# Investigation"
    echo
    echo "The checkout pod crash-loops because its config map is missing; restoring it fixes the rollout."
    echo "The pod spec shows password: hunter2 in plain text."
    if [ -n "$ANTHROPIC_API_KEY" ]; then
      env
      echo "Authorization: Basic $(printf 'user:%s' "$ANTHROPIC_API_KEY" | base64 -w 0)"
    fi
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
data_dir = "{data}"

[database]
url = "{url}"

[http]
listen = "127.0.0.1:{port}"

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
            root = dir.join("workspaces").display(),
            data = dir.join("data").display(),
            port = crate::support::process::free_port(),
        ),
    )
    .unwrap();
    path
}

/// The bundled plugins, for `ingest --plugins`.
fn plugins() -> String {
    built_plugins().display().to_string()
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
        Self::start_with(config, &[])
    }

    fn start_with(config: &Path, env: &[(&str, &str)]) -> Self {
        let log = config.with_extension(format!("{}.log", uuid::Uuid::new_v4().simple()));
        let child = Command::new(bin())
            .arg("-c")
            .arg(config)
            .arg("serve")
            .envs(env.iter().copied())
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

    /// Waits for the process to end on its own; `None` if it still runs after `limit`.
    async fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        None
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

        // the report store, a local folder by default: the page, the report, the incident and
        // the workspace's files, by the original's names
        let kept = dir.path().join("data/reports").join(&crash_id);
        let page = std::fs::read_to_string(kept.join("investigation.html")).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
        assert!(page.contains("config map is missing") && page.contains("CrashLoop"));
        assert!(
            !page.contains("<script") && !page.contains("src="),
            "{page}"
        );
        assert!(
            std::fs::read_to_string(kept.join("investigation.md"))
                .unwrap()
                .contains("config map is missing")
        );
        let document: serde_json::Value =
            serde_json::from_slice(&std::fs::read(kept.join("incident.json")).unwrap()).unwrap();
        assert_eq!(document["incidentId"], crash_id.as_str());
        assert!(kept.join("artifacts/prompt-sent.md").is_file());
        assert!(
            !kept.join("artifacts/output/investigation.md").exists(),
            "the report is kept once, as post-triage left it"
        );
        let show: serde_json::Value = serde_json::from_slice(
            &cli(&config, &["incidents", "show", &crash_id, "--json"]).stdout,
        )
        .unwrap();
        let kept_row = &show["reports"][0];
        assert_eq!(kept_row["storage_type"], "filesystem", "{show}");
        assert!(
            kept_row["store_uri"].as_str().is_some_and(
                |uri| uri.starts_with("file:///") && uri.ends_with(&format!("{crash_id}/"))
            ),
            "{show}"
        );
        assert!(!kept_row["uploaded_at"].is_null(), "{show}");

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

/// Copies the named example plugins into a folder under `dir` and returns the `[plugins]`
/// section that loads them.
fn plugins_section(dir: &Path, names: &[&str]) -> String {
    let plugin_dir = built_plugins();
    let folder = dir.join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    for name in names {
        std::fs::copy(
            plugin_dir.join(format!("{name}.wasm")),
            folder.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    format!("\n[plugins]\ndir = \"{}\"\n", folder.display())
}

/// Writes a copy of the CrashLoop example whose context holds `word` (the test agent reads it).
fn event_with(dir: &Path, word: &str) -> String {
    let path = dir.join(format!("{word}.json"));
    let event = std::fs::read_to_string(example("crashloop.json"))
        .unwrap()
        .replace("restart count", &format!("{word} restart count"));
    std::fs::write(&path, event).unwrap();
    path.display().to_string()
}

fn show(config: &Path, id: &str) -> serde_json::Value {
    let out = cli(config, &["incidents", "show", id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A run re-attached after `kill -9` is finished like any other: validated, post-triaged (the
/// redact-secrets plugin runs) and its report stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nightcrier_reattaches_after_restart_and_completes() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let extra = plugins_section(dir.path(), &["redact-secrets"]);
        let config = write_config_with(dir.path(), &db.url, &instance, &extra);
        assert!(cli(&config, &["migrate"]).status.success());
        let slow = event_with(dir.path(), "slow");
        assert!(
            cli(&config, &["ingest", "--plugins", &plugins(), &slow])
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
            "{}: completed by re-attaching, not by a second run",
            db.backend
        );
        let shown = show(&config, incident["id"].as_str().unwrap());
        let reports = shown["reports"].as_array().unwrap();
        assert_eq!(
            reports.len(),
            1,
            "{}: the report is stored: {shown}",
            db.backend
        );
        let report = reports[0]["report_markdown"].as_str().unwrap();
        assert!(report.contains("config map is missing"), "{report}");
        assert!(
            !report.contains("hunter2"),
            "post-triage redacted it: {report}"
        );
        // and the report stage kept it in the store, as for a fresh run
        assert!(!reports[0]["uploaded_at"].is_null(), "{shown}");
        let page = dir
            .path()
            .join("data/reports")
            .join(incident["id"].as_str().unwrap())
            .join("investigation.html");
        assert!(
            std::fs::read_to_string(&page).is_ok_and(|page| page.contains("config map is missing")),
            "{}: {}",
            db.backend,
            page.display()
        );
        let stages: Vec<&str> = shown["pluginRuns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["stage"].as_str().unwrap())
            .collect();
        assert!(
            stages.contains(&"post_triage"),
            "{}: {stages:?}",
            db.backend
        );
        assert!(
            containers_of(&instance).is_empty(),
            "containers left behind"
        );
    }
}

/// A re-attached run whose lease is lost (swept and claimed by another replica while this one
/// was down or slow) is stopped and its container removed, as a fresh run's would be: never two
/// agents on one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reattached_run_that_loses_its_lease_is_stopped() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        // one slot, busy with the resumed run, so this process claims nothing meanwhile
        let config = write_config(dir.path(), &db.url, &instance);
        let text = std::fs::read_to_string(&config)
            .unwrap()
            .replace("concurrency = 2", "concurrency = 1")
            .replace("lease_secs = 30", "lease_secs = 6");
        std::fs::write(&config, text).unwrap();
        assert!(cli(&config, &["migrate"]).status.success());
        let gated = event_with(dir.path(), "gated");
        assert!(
            cli(&config, &["ingest", "--plugins", &plugins(), &gated])
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
        let mut second = Server::start(&config);
        second
            .wait_for("the re-attached run", Duration::from_secs(60), || {
                server_log(&config).contains("re-attached to a running agent")
            })
            .await;
        assert_eq!(containers_of(&instance).len(), 1);

        // another replica takes the incident over: what the sweep and a claim do together
        use chrono::SubsecRound as _;
        use sea_orm::ConnectionTrait as _;
        let store = db.store().await;
        let id = incidents(&config)[0]["id"].as_str().unwrap().to_owned();
        let taken = store
            .connection()
            .execute_raw(sea_orm::Statement::from_sql_and_values(
                store.connection().get_database_backend(),
                "UPDATE incidents SET lease_owner = 'other-replica', attempts = attempts + 1, \
                 lease_expires_at = $2 WHERE id = $1",
                [
                    id.clone().into(),
                    (chrono::Utc::now() + chrono::Duration::hours(1))
                        .trunc_subsecs(6)
                        .into(),
                ],
            ))
            .await
            .unwrap();
        assert_eq!(taken.rows_affected(), 1);

        second
            .wait_for(
                "the re-attached agent stopped and removed",
                Duration::from_secs(20),
                || containers_of(&instance).is_empty(),
            )
            .await;
        let log = second.stop();
        assert!(log.contains("lease lost"), "{}: {log}", db.backend);
        let incident = &incidents(&config)[0];
        assert_eq!(incident["status"], "investigating", "{}", db.backend);
        assert_eq!(incident["lease_owner"], "other-replica", "{}", db.backend);
        assert!(
            show(&config, &id)["reports"].as_array().unwrap().is_empty(),
            "{}: the abandoned run's outcome is dropped",
            db.backend
        );
    }
}

/// The key nightcrier gives the agent, printed by the agent into its output and its report (as a
/// prompt-injected agent does), is in no log file, no `tail`, no stored report and no database
/// file, whatever the plugins: nightcrier masks the values it handed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_api_key_never_reaches_logs_tail_or_the_database() {
    use base64::Engine as _;
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let key = format!("sk-ant-api03-{}", uuid::Uuid::new_v4().simple());
        let config = write_config_with(
            dir.path(),
            &db.url,
            &instance,
            "secret_env = [{ name = \"ANTHROPIC_API_KEY\" }]\n",
        );
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
        let mut server = Server::start_with(&config, &[("ANTHROPIC_API_KEY", &key)]);
        server
            .wait_for("the incident resolved", Duration::from_secs(90), || {
                incidents(&config)[0]["status"] == "resolved"
            })
            .await;
        let log = server.stop();
        let id = incidents(&config)[0]["id"].as_str().unwrap().to_owned();
        let shown = show(&config, &id);
        let report = shown["reports"][0]["report_markdown"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            report.contains("ANTHROPIC_API_KEY=[REDACTED:ANTHROPIC_API_KEY]"),
            "{}: {report}",
            db.backend
        );
        let tail = cli(&config, &["tail", &id]);
        let mut places = vec![
            ("serve log", log),
            ("incidents show", shown.to_string()),
            ("tail", String::from_utf8_lossy(&tail.stdout).into_owned()),
        ];
        // the workspace, and the report store's copy of the report and its files
        let kept = dir.path().join("data/reports").join(&id);
        assert!(kept.join("investigation.html").is_file(), "{}", db.backend);
        let mut pending = vec![dir.path().join("workspaces").join(&id), kept];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(&folder).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                    places.push(("file", format!("{}: {text}", path.display())));
                }
            }
        }
        if let Some(file) = db.url.strip_prefix("sqlite://") {
            for suffix in ["", "-wal"] {
                if let Ok(bytes) = std::fs::read(format!("{file}{suffix}")) {
                    places.push((
                        "database file",
                        String::from_utf8_lossy(&bytes).into_owned(),
                    ));
                }
            }
        }
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("user:{key}"));
        for (place, text) in &places {
            assert!(
                !text.contains(&key),
                "{}: {place} holds the key: {text}",
                db.backend
            );
            assert!(
                !text.contains(&basic),
                "{}: {place} holds it in base64",
                db.backend
            );
        }
        assert!(
            places[2].1.contains("[REDACTED:ANTHROPIC_API_KEY]"),
            "tail shows the agent's output, masked: {}",
            places[2].1
        );
    }
}

/// A profile that can be used but lacks a secret or its image is a configuration error: serve
/// refuses to start and names each missing thing, instead of failing every incident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_when_a_profile_lacks_a_secret_or_its_image() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let extra = r#"secret_env = [{ name = "API_KEY", from_env = "NIGHTCRIER_E2E_SURELY_UNSET" }]

[agent.profiles.other]
image = "nightcrier-e2e-missing:nope"
command = ["/bin/true"]

[[clusters]]
name = "kind-dev"
agent_profile = "other"
"#;
    let config = write_config_with(dir.path(), &db.url, &instance, extra);
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
    let mut server = Server::start(&config);
    let status = server.exit_within(Duration::from_secs(60)).await;
    let log = server.log();
    if status.is_none() {
        server.kill();
        panic!("serve started without the secret and the image: {log}");
    }
    assert!(!status.unwrap().success(), "{log}");
    assert!(log.contains("refusing to serve"), "{log}");
    assert!(
        log.contains("agent profile e2e: secret API_KEY")
            && log.contains("NIGHTCRIER_E2E_SURELY_UNSET")
            && log.contains("agent.default_profile"),
        "{log}"
    );
    assert!(
        log.contains("agent profile other: image nightcrier-e2e-missing:nope")
            && log.contains("the profile of cluster kind-dev"),
        "{log}"
    );
    assert_eq!(
        incidents(&config)[0]["status"],
        "pending",
        "nothing was touched"
    );
}

/// A secret that goes missing after start-up (its file deleted) keeps incidents queued, with
/// an error in the log, until it is back; then they are investigated. None is failed for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_lost_while_serving_keeps_incidents_queued_until_it_is_back() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
    let key_file = dir.path().join("api-key");
    std::fs::write(&key_file, "k3y-0123456789\n").unwrap();
    let extra = format!(
        "secret_env = [{{ name = \"API_KEY\", from_file = \"{}\" }}]\n",
        key_file.display()
    );
    let config = write_config_with(dir.path(), &db.url, &instance, &extra);
    assert!(cli(&config, &["migrate"]).status.success());
    let mut server = Server::start(&config);
    server
        .wait_for("serving", Duration::from_secs(60), || {
            server_log(&config).contains("nightcrier serving")
        })
        .await;
    std::fs::remove_file(&key_file).unwrap();
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
    server
        .wait_for("the incident claimed once", Duration::from_secs(60), || {
            incidents(&config)[0]["attempts"].as_i64() >= Some(1)
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let incident = &incidents(&config)[0];
    assert_eq!(
        incident["status"], "queued",
        "a missing secret must not fail the incident: {incident}"
    );
    assert_eq!(incident["attempts"], 1, "claims are held: {incident}");
    assert!(
        server_log(&config).contains("agent profile is not ready"),
        "{}",
        server_log(&config)
    );
    assert!(
        incident["failure_reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("secret API_KEY")),
        "{incident}"
    );
    assert!(containers_of(&instance).is_empty());

    std::fs::write(&key_file, "k3y-0123456789\n").unwrap();
    server
        .wait_for("the incident resolved", Duration::from_secs(60), || {
            incidents(&config)[0]["status"] == "resolved"
        })
        .await;
    let log = server.stop();
    assert!(log.contains("agent profile is ready again"), "{log}");
}

/// Every serve log next to `config`, concatenated.
fn server_log(config: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(config.parent().unwrap())
        .unwrap()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("nightcrier.") && name.ends_with(".log") {
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_pre_and_post_triage_plugins() {
    let plugin_dir = built_plugins();
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("plugins");
        std::fs::create_dir_all(&folder).unwrap();
        for name in ["kubernetes-mcp", "noise-filter", "dedup", "redact-secrets"] {
            std::fs::copy(
                plugin_dir.join(format!("{name}.wasm")),
                folder.join(format!("{name}.wasm")),
            )
            .unwrap();
        }
        let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let extra = format!(
            r#"
[plugins]
dir = "{}"
# deadlines for a busy test machine: the decisions are the point here, not the limits
[plugins.plugin.noise-filter]
deadline_ms = 5000
[plugins.plugin.dedup]
deadline_ms = 5000
[plugins.plugin.redact-secrets]
deadline_ms = 5000
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
                &plugins(),
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
        // the report store holds the redacted report and page, not the agent's own file
        let kept = dir.path().join("data/reports").join(id);
        for name in ["investigation.md", "investigation.html"] {
            let text = std::fs::read_to_string(kept.join(name)).unwrap();
            assert!(text.contains("config map is missing"), "{name}: {text}");
            assert!(
                !text.contains("hunter2"),
                "{}: {name} is redacted",
                db.backend
            );
        }
        assert!(!kept.join("artifacts/output/investigation.md").exists());
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
