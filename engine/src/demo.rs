//! `nightcrier demo`: the whole job on one machine with Docker and no API key.
//!
//! It runs `serve` in this process on the embedded default (an SQLite file in the demo folder,
//! the bundled plugins), with one cluster whose kubernetes-mcp-server is simulated over real
//! HTTP ([`crate::mcp_sim`]): the faults reach nightcrier through the MCP feed and the
//! `kubernetes-mcp` source plugin exactly as real faults do. The agent profile runs a demo image
//! built locally from Debian's `busybox-static` (no registry): a shell script that reads
//! `incident.json` and the workspace files and writes a report labelled as a demo, not an AI.
//! On SIGINT/SIGTERM `serve` drains, and every container with this demo's
//! `nightcrier.instance` label is removed.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use tokio_util::sync::CancellationToken;

use crate::mcp_sim::{Fault, Fleet};

/// Options of `nightcrier demo`.
#[derive(Clone, Debug, clap::Args)]
pub struct DemoArgs {
    /// Folder for the demo's SQLite database, config, workspaces and reports (created; kept
    /// after the demo stops, delete it to start afresh).
    #[arg(long, default_value = "nightcrier-demo")]
    pub data: PathBuf,
    /// Address of the web UI and the API; loopback only, where no login is needed.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Folder of plugin components (built by `bash plugins/build.sh`).
    #[arg(long, default_value = "plugins/target/plugins")]
    pub plugins: PathBuf,
    /// Time between simulated faults after the first (which goes out as soon as the feed is
    /// subscribed).
    #[arg(long, default_value = "25s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

/// The simulated cluster's name.
pub const CLUSTER: &str = "demo-cluster";

/// Repository of the demo agent image (tag: a hash of the script).
pub const IMAGE_REPOSITORY: &str = "nightcrier-demo-agent";

/// The first line of every demo report.
pub const REPORT_TITLE: &str = "# Demo report (not an AI)";

/// The demo agent: a shell script, not a model. It follows the agent contract (reads
/// `/home/agent/incident.json`, `prompt.md` and `context/`, writes
/// `$OUTPUT_DIR/investigation.md`) and prints its steps, which the live log shows.
const AGENT_SCRIPT: &str = r###"#!/bin/sh
# nightcrier demo agent: NOT an AI. It reads the incident and the workspace files that
# nightcrier prepared and writes a templated report, so the whole job can be watched without a
# model or an API key.
set -u
cd "${AGENT_HOME:-/home/agent}"
field() { sed -n "s/^ *\"$1\": *\"\([^\"]*\)\".*/\1/p" incident.json | head -n 1; }
say() { echo "[demo agent] $*"; }

say "incident ${INCIDENT_ID:-?}: reading incident.json"
fault_type=$(field faultType)
severity=$(field severity)
cluster=$(field cluster)
namespace=$(field namespace)
kind=$(field kind)
name=$(field name)
context=$(field context)
seen=$(field timestamp)
# pauses, so the live log in the UI can be watched growing
sleep 2
say "fault: $fault_type ($severity) on $kind $namespace/$name in cluster $cluster"
say "reading the workspace: prompt.md, context/"
prompt_lines=$(wc -l < prompt.md 2>/dev/null || echo 0)
context_files=$(ls context 2>/dev/null)
sleep 2
case "$fault_type" in
  CrashLoop*)
    steps="- Read the previous container's log: \`kubectl logs -n $namespace $name --previous\`.
- Compare the exit code and the last reason with the last rollout: \`kubectl rollout history\`.
- Check the probes and the config the container reads at start (ConfigMaps, Secrets)." ;;
  OOMKilled*)
    steps="- Compare the container's memory limit with its usage before the kill: \`kubectl top pod -n $namespace $name\`.
- Look for a recent change in load or in the image.
- Raise the limit or fix the leak; a limit far below the request of its peers is a typo." ;;
  ImagePull*|ErrImagePull*)
    steps="- Check that the image tag exists in the registry and that the pull secret is valid.
- \`kubectl describe pod -n $namespace $name\` shows the registry's exact answer." ;;
  *)
    steps="- \`kubectl describe $kind -n $namespace $name\` and its recent events.
- What changed last: rollouts, config, nodes." ;;
esac
say "suggesting next steps for a $fault_type"
sleep 2
say "writing output/investigation.md"
mkdir -p "$OUTPUT_DIR"
{
  echo "# Demo report (not an AI)"
  echo
  echo "$fault_type on $kind $namespace/$name: a templated report by the demo agent, not an AI."
  echo
  echo "> **This is a demo.** nightcrier's demo agent, a shell script in a local busybox image,"
  echo "> wrote this report from the files nightcrier gave it. No AI model was called and"
  echo "> nothing in a cluster was inspected. Point \`serve\` at a real kubernetes-mcp-server and"
  echo "> an agent profile (see README.md) for real investigations."
  echo
  echo "## The fault"
  echo
  echo "- **Fault:** $fault_type, severity $severity"
  echo "- **Resource:** $kind \`$namespace/$name\` in cluster \`$cluster\`"
  echo "- **Reported at:** $seen"
  echo
  echo "What the kubernetes-mcp-server said:"
  echo
  echo "> $context"
  echo
  echo "## What a real agent would look at"
  echo
  echo "$steps"
  echo
  echo "## What the agent was given"
  echo
  echo "- \`incident.json\`: the incident above (id \`${INCIDENT_ID:-?}\`)"
  echo "- \`prompt.md\`: $prompt_lines lines (the system prompt and the incident)"
  if [ -n "$context_files" ]; then
    echo "- \`context/\` from the pre-triage plugins: $(echo $context_files | tr '\n' ' ')"
  else
    echo "- \`context/\`: no files from the pre-triage plugins"
  fi
  echo
  echo "---"
  echo "Written by the nightcrier demo agent at $(date -u +%Y-%m-%dT%H:%M:%SZ); model: none."
} > "$OUTPUT_DIR/investigation.md"
say "done"
"###;

/// The faults the simulated server reports, in turn (fault ids are made unique per run).
fn demo_faults() -> Vec<Fault> {
    let fault =
        |fault_type: &str, severity: &str, namespace: &str, name: &str, context: &str| Fault {
            fault_id: String::new(),
            fault_type: fault_type.into(),
            severity: severity.into(),
            kind: "Pod".into(),
            name: name.into(),
            namespace: namespace.into(),
            context: context.into(),
        };
    vec![
        fault(
            "CrashLoop",
            "critical",
            "shop",
            "checkout-api-7c9f8d6b5-x2klm",
            "Container entered CrashLoopBackOff state, restart count: 4, waiting message: back-off 1m20s restarting failed container=api, last exit code: 1, last reason: Error",
        ),
        fault(
            "OOMKilled",
            "critical",
            "payments",
            "ledger-worker-5d8c7b9f4-q8wzt",
            "Container ledger was OOMKilled (memory limit 512Mi), restart count: 2, last exit code: 137",
        ),
        fault(
            "ImagePullBackOff",
            "warning",
            "web",
            "frontend-6f7d9c8b7-m4kdn",
            "Back-off pulling image registry.example.com/web/frontend:v2.14.1: manifest unknown",
        ),
        fault(
            "CrashLoop",
            "warning",
            "search",
            "indexer-0",
            "Container entered CrashLoopBackOff state, restart count: 3, waiting message: back-off 40s restarting failed container=indexer, last exit code: 2, last reason: Error (readiness probe failed: HTTP 503)",
        ),
    ]
}

/// The `nightcrier.instance` label value of a demo in `data` (one serve per folder, so one
/// demo per value; stable across restarts, so a killed demo's containers are found again).
pub fn instance_id(data: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(data.as_os_str().as_encoded_bytes());
    let hex: String = digest[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    format!("nightcrier-demo-{hex}")
}

fn config_text(
    data: &Path,
    listen: SocketAddr,
    plugins: &Path,
    image: &str,
    instance: &str,
    mcp_url: &str,
) -> String {
    let data = data.display();
    format!(
        r#"# Written by `nightcrier demo` at each start (edits are overwritten): serve on SQLite with
# one simulated cluster and the demo agent. README.md shows a real set-up.
data_dir = "{data}/data"

[http]
listen = "{listen}"

[database]
url = "sqlite://{data}/nightcrier.db"
auto_migrate = true

[workers]
concurrency = 2
poll_interval = "500ms"
shutdown_grace = "1s"   # then the demo removes the agent containers still running

[agent]
workspace_root = "{data}/workspaces"
instance_id = "{instance}"
default_profile = "demo"

# A shell script in a local busybox image, not an AI.
[agent.profiles.demo]
image = "{image}"
command = ["/bin/sh", "/agent.sh"]
model = "none"
network = "none"
timeout = "60s"
stop_grace_secs = 1
memory = "64m"
pids_limit = 64

[reports]
store = "{data}/reports"

[plugins]
dir = "{plugins}"
# These two need a real endpoint (a Slack webhook, an Alertmanager); the demo leaves them out.
[plugins.plugin.slack]
disabled = true
[plugins.plugin.alertmanager-poll]
disabled = true

[[clusters]]
name = "{CLUSTER}"
mcp.url = "{mcp_url}"
"#,
        plugins = plugins.display(),
    )
}

/// Runs the demo until `shutdown` completes.
pub async fn run(
    args: &DemoArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen must be a loopback address (the demo's UI has no login), got {}",
            args.listen
        );
    }
    if !args.plugins.join("kubernetes-mcp.wasm").is_file() {
        bail!(
            "no kubernetes-mcp.wasm in the plugin folder {}: build the bundled plugins with \
             `bash plugins/build.sh` (or pass --plugins DIR)",
            args.plugins.display()
        );
    }
    // the port first: a clear message rather than serve's bind error after the image build
    drop(std::net::TcpListener::bind(args.listen).with_context(|| {
        format!(
            "cannot listen on {} (another program uses it?): pass --listen 127.0.0.1:PORT",
            args.listen
        )
    })?);
    bollard::Docker::connect_with_local_defaults()
        .context("failed to reach Docker")?
        .ping()
        .await
        .context("the demo needs a running Docker engine (is `docker info` working?)")?;
    let plugins = std::fs::canonicalize(&args.plugins)
        .with_context(|| format!("plugin folder {}", args.plugins.display()))?;
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("failed to create the demo folder {}", args.data.display()))?;
    let data = std::fs::canonicalize(&args.data)
        .with_context(|| format!("demo folder {}", args.data.display()))?;
    let instance = instance_id(&data);

    println!("nightcrier demo: building the demo agent image (busybox, locally, no registry)…");
    let image = tokio::task::spawn_blocking(|| {
        nightcrier_agent::test_support::build_busybox_image(IMAGE_REPOSITORY, AGENT_SCRIPT)
    })
    .await
    .context("building the demo agent image panicked")?
    .map_err(|error| anyhow::anyhow!("failed to build the demo agent image: {error}"))?;

    let fleet = Fleet::start_named(vec![CLUSTER.to_owned()]).await?;
    let (_, mcp_url) = fleet
        .endpoints()
        .into_iter()
        .next()
        .context("the simulated server did not start")?;
    let config_path = data.join("nightcrier.toml");
    std::fs::write(
        &config_path,
        config_text(&data, args.listen, &plugins, &image, &instance, &mcp_url),
    )
    .with_context(|| format!("failed to write {}", config_path.display()))?;
    let settings = crate::config::load(Some(&config_path), None)?;

    let stop = CancellationToken::new();
    let tasks = CancellationToken::new();
    let base = format!("http://{}", args.listen);
    // the first fault waits for the banner, so the terminal reads in order
    let shown = CancellationToken::new();
    let announce = tokio::spawn(announce(
        base.clone(),
        data.clone(),
        instance.clone(),
        shown.clone(),
        tasks.clone(),
    ));
    let faults = tokio::spawn(send_faults(
        fleet.clone(),
        args.interval,
        shown,
        tasks.clone(),
    ));
    let served = {
        let stopped = stop.clone();
        // boxed: serve's future is large
        let mut server = Box::pin(crate::server::run(settings, async move {
            stopped.cancelled().await
        }));
        tokio::select! {
            result = &mut server => result,
            () = shutdown => {
                println!("\nnightcrier demo: stopping…");
                stop.cancel();
                server.await
            }
        }
    };
    tasks.cancel();
    let _ = announce.await;
    let _ = faults.await;
    let removed = remove_containers(&instance).await;
    match &removed {
        Ok(0) => println!("nightcrier demo: stopped; no demo container left."),
        Ok(count) => println!("nightcrier demo: stopped; removed {count} demo container(s)."),
        Err(error) => eprintln!(
            "nightcrier demo: could not remove the demo's containers ({error:#}); remove them with \
             `docker rm -f $(docker ps -aq --filter label={}={instance})`",
            nightcrier_agent::runner::LABEL_INSTANCE
        ),
    }
    println!(
        "nightcrier demo: the data is kept in {} (delete it to start afresh).",
        data.display()
    );
    served?;
    removed.map(|_| ())
}

/// Waits for the UI, prints where to look, then a line for each report as it is ready.
async fn announce(
    base: String,
    data: PathBuf,
    instance: String,
    shown: CancellationToken,
    cancel: CancellationToken,
) {
    let client = reqwest::Client::new();
    let ready = async {
        loop {
            let up = client
                .get(format!("{base}/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if up {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = ready => {}
        () = cancel.cancelled() => return,
    }
    // incidents resolved by an earlier run in this folder are not news
    let mut seen: BTreeSet<String> = resolved(&client, &base).await.into_iter().collect();
    println!(
        "\n  nightcrier demo is running\n\n\
         \x20 Web UI:        {base}/   (open it: incidents appear within seconds)\n\
         \x20 API:           {base}/api/v1/incidents\n\
         \x20 Data folder:   {data}   (SQLite, config, workspaces, reports)\n\
         \x20 Cluster:       {CLUSTER}, a simulated kubernetes-mcp-server sending a fault now and then\n\
         \x20 Agent:         a demo shell script in a local busybox image — not an AI\n\
         \x20 Containers:    docker ps -a --filter label={label}={instance}\n\n\
         \x20 Stop with Ctrl-C: serve stops and every demo container is removed.\n",
        data = data.display(),
        label = nightcrier_agent::runner::LABEL_INSTANCE,
    );
    shown.cancel();
    loop {
        for id in resolved(&client, &base).await {
            if seen.insert(id.clone()) {
                println!("  report ready:  {base}/incidents/{id}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Ids of the newest resolved incidents (none when the API does not answer).
async fn resolved(client: &reqwest::Client, base: &str) -> Vec<String> {
    let Ok(response) = client
        .get(format!("{base}/api/v1/incidents?status=resolved&limit=20"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
    else {
        return Vec::new();
    };
    let Ok(page) = response.json::<serde_json::Value>().await else {
        return Vec::new();
    };
    page["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|incident| incident["id"].as_str().map(str::to_owned))
        .collect()
}

/// Sends the first fault as soon as the feed has subscribed, then one every `interval`.
async fn send_faults(
    fleet: Arc<Fleet>,
    interval: Duration,
    shown: CancellationToken,
    cancel: CancellationToken,
) {
    tokio::select! {
        () = shown.cancelled() => {}
        () = cancel.cancelled() => return,
    }
    let faults = demo_faults();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut n = 0usize;
    loop {
        // wait for an active subscription (at start, and after a reconnect)
        while fleet.active().await == 0 {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = cancel.cancelled() => return,
            }
        }
        let mut fault = faults[n % faults.len()].clone();
        fault.fault_id = format!("demo-{}-{n}", &run[..8]);
        if fleet.send_fault(0, &fault).await {
            println!(
                "  fault sent:    {} ({}) on {} {}/{}",
                fault.fault_type, fault.severity, fault.kind, fault.namespace, fault.name
            );
            n += 1;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = cancel.cancelled() => return,
            }
        } else {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                () = cancel.cancelled() => return,
            }
        }
    }
}

/// Removes every container labelled with this demo's instance id, and waits until none is left
/// (the runner may be removing one at the same time); returns how many this call removed.
pub async fn remove_containers(instance: &str) -> anyhow::Result<usize> {
    let docker =
        bollard::Docker::connect_with_local_defaults().context("failed to reach Docker")?;
    let label = format!("{}={instance}", nightcrier_agent::runner::LABEL_INSTANCE);
    let filters = HashMap::from([("label", vec![label.as_str()])]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut removed = 0;
    loop {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .context("failed to list the demo's containers")?;
        if containers.is_empty() {
            return Ok(removed);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} demo container(s) still there after 30 s",
                containers.len()
            );
        }
        for container in containers {
            let Some(id) = container.id else { continue };
            let options = RemoveContainerOptionsBuilder::default().force(true).build();
            match docker.remove_container(&id, Some(options)).await {
                Ok(()) => removed += 1,
                // gone, or being removed by the runner: the next listing tells
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404 | 409,
                    ..
                }) => {}
                Err(error) => return Err(error).context("failed to remove a demo container"),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_loads_with_its_profile_cluster_and_loopback_listener() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nightcrier.toml");
        let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        std::fs::write(
            &path,
            config_text(
                dir.path(),
                listen,
                Path::new("/srv/plugins"),
                "nightcrier-demo-agent:0123456789abcdef",
                &instance_id(dir.path()),
                "http://127.0.0.1:40000/mcp",
            ),
        )
        .unwrap();
        let settings = crate::config::load(Some(&path), None).unwrap();
        assert_eq!(settings.default_profile, "demo");
        let profile = &settings.profiles["demo"];
        assert_eq!(profile.image, "nightcrier-demo-agent:0123456789abcdef");
        assert_eq!(profile.command, ["/bin/sh", "/agent.sh"]);
        assert!(settings.clusters[CLUSTER].mcp.is_some());
        assert_eq!(settings.listen, listen);
        assert!(settings.instance_id_configured);
        assert_eq!(settings.runner.instance_id, instance_id(dir.path()));
        assert!(
            settings.store.url.ends_with("/nightcrier.db"),
            "{}",
            settings.store.url
        );
    }

    #[test]
    fn the_instance_id_depends_on_the_folder_only() {
        let a = instance_id(Path::new("/home/sre/nightcrier-demo"));
        assert_eq!(a, instance_id(Path::new("/home/sre/nightcrier-demo")));
        assert_ne!(a, instance_id(Path::new("/tmp/nightcrier-demo")));
        assert!(a.starts_with("nightcrier-demo-") && a.len() == "nightcrier-demo-".len() + 8);
    }
}
