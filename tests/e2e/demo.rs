//! `nightcrier demo` as a newcomer runs it: the real binary, real Docker, the bundled plugins and
//! the simulated kubernetes-mcp-server over HTTP. A fault becomes a resolved incident whose
//! report is the demo agent's, shown by the web UI; Ctrl-C (SIGINT) ends the process cleanly,
//! even while an agent container runs, and leaves no container with the demo's label.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::built_plugins;
use crate::support::process::{bin, free_port, get_json};

/// Panics (the test fails) when Docker is not there: the demo needs it.
fn require_docker() {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .expect("the docker CLI must be installed for the demo test");
    assert!(
        info.status.success(),
        "the Docker engine must be running for the demo test: {}",
        String::from_utf8_lossy(&info.stderr)
    );
}

/// Ids of the containers (running or not) labelled with `instance`.
fn containers(instance: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=nightcrier.instance={instance}"),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "docker ps failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn running_containers(instance: &str) -> usize {
    let output = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=nightcrier.instance={instance}"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).lines().count()
}

/// Kills the demo if the test ends early, so no process outlives it.
struct Demo {
    child: Child,
    out: std::path::PathBuf,
}

impl Demo {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn assert_running(&mut self, what: &str) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "the demo exited with {status} while waiting for {what}:\n{}",
                self.output()
            );
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, data: &Path, listen: &str) -> Demo {
    let out = dir.join("demo.out");
    let stdout = std::fs::File::create(&out).unwrap();
    let stderr = stdout.try_clone().unwrap();
    let child = Command::new(bin())
        .arg("demo")
        .arg("--data")
        .arg(data)
        .args(["--listen", listen, "--interval", "4s"])
        .arg("--plugins")
        .arg(built_plugins())
        .current_dir(dir)
        .env_remove("NIGHTCRIER_DATABASE_URL")
        .env_remove("NIGHTCRIER_CONFIG")
        .env("NIGHTCRIER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    Demo { child, out }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_resolves_a_fault_into_its_report_and_ctrl_c_leaves_no_container() {
    require_docker();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nightcrier-demo");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut demo = start(dir.path(), &data, &listen);

    // a resolved incident with a report, through the API
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    let incident = loop {
        demo.assert_running("a resolved incident");
        let resolved = get_json(&listen, "/api/v1/incidents?status=resolved").await;
        if let Some(first) = resolved
            .as_ref()
            .and_then(|page| page["incidents"].as_array())
            .and_then(|incidents| incidents.last())
        {
            break first.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no resolved incident within 180 s:\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(incident["cluster"], "demo-cluster", "{incident}");
    assert_eq!(incident["fault_type"], "CrashLoop", "{incident}");
    assert_eq!(incident["exit_code"], 0, "{incident}");
    let id = incident["id"].as_str().unwrap().to_owned();

    let client = reqwest::Client::new();
    let report = client
        .get(format!("http://{listen}/api/v1/incidents/{id}/report"))
        .send()
        .await
        .unwrap();
    assert!(report.status().is_success(), "report: {}", report.status());
    let report = report.text().await.unwrap();
    assert!(
        report.starts_with(nightcrier::demo::REPORT_TITLE),
        "not the demo's report:\n{report}"
    );
    assert!(report.contains("No AI model was called"), "{report}");
    // written from incident.json and the workspace files
    assert!(
        report.contains("Pod `shop/checkout-api-7c9f8d6b5-x2klm` in cluster `demo-cluster`"),
        "{report}"
    );
    assert!(report.contains(&format!("(id `{id}`)")), "{report}");
    assert!(report.contains("`prompt.md`: "), "{report}");

    // the web UI renders it
    let page = client
        .get(format!("http://{listen}/incidents/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Demo report (not an AI)"), "{page}");

    // the terminal says where to look, and announces the report (it polls once a second)
    let output = demo.output();
    assert!(
        output.contains(&format!("Web UI:        http://{listen}/")),
        "{output}"
    );
    assert!(output.contains("Stop with Ctrl-C"), "{output}");
    let announced = format!("report ready:  http://{listen}/incidents/{id}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !demo.output().contains(&announced) {
        demo.assert_running("the report's announcement");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the report was not announced within 30 s:\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Ctrl-C while an agent runs: the next fault comes 4 s after the last
    let instance = nightcrier::demo::instance_id(&std::fs::canonicalize(&data).unwrap());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while running_containers(&instance) == 0 {
        demo.assert_running("a running agent container");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no agent container ran within 120 s:\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let interrupt = Command::new("kill")
        .arg("-INT")
        .arg(demo.child.id().to_string())
        .status()
        .unwrap();
    assert!(interrupt.success());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = demo.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo did not stop within 60 s of SIGINT:\n{}",
            demo.output()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = demo.output();
    assert!(status.success(), "the demo exited with {status}:\n{output}");
    assert!(output.contains("nightcrier demo: stopped"), "{output}");
    assert_eq!(
        containers(&instance),
        Vec::<String>::new(),
        "containers left behind:\n{output}"
    );
}
