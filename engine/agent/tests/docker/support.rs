//! Shared helpers: the locally built test image, profiles, requests, runners, leak checks.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptionsBuilder;
use nightcrier_agent::{
    AgentProfile, AgentProfileConfig, AgentRequest, DockerRunner, InMemoryBreakerStore,
    InMemoryRecorder, IncidentInput, PermissionsSource, RunnerConfig,
};

/// The agent script; variants are selected by `$1`.
const AGENT_SCRIPT: &str = include_str!("agent.sh");

/// Builds (once per process) the test image and returns its reference.
pub(crate) fn test_image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(build_test_image)
}

fn build_test_image() -> String {
    nightcrier_agent::test_support::busybox_image("nightcrier-test-agent", AGENT_SCRIPT)
}

/// A profile running `/agent.sh <variant>` in the test image.
pub(crate) fn profile(variant: &str, timeout_secs: u64, extra: &str) -> AgentProfile {
    let text = format!(
        r#"{{"image": "{}", "command": ["/bin/sh", "/agent.sh", "{variant}"], "model": "test-model",
            "network": "none", "timeout_secs": {timeout_secs}, "stop_grace_secs": 1,
            "memory": "64m", "cpus": 0.5, "pids_limit": 64 {extra}}}"#,
        test_image()
    );
    AgentProfileConfig::from_json("test", &text)
        .unwrap()
        .build("test")
        .unwrap()
}

/// A request for a fresh incident.
pub(crate) fn request(profile: AgentProfile) -> AgentRequest {
    let incident_id = uuid::Uuid::new_v4().to_string();
    AgentRequest {
        incident: IncidentInput {
            incident_id: incident_id.clone(),
            fault_id: format!("fault-{incident_id}"),
            created_at: chrono::Utc::now().fixed_offset(),
            cluster: "test-cluster".into(),
            namespace: "default".into(),
            resource: serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": "web-1"}),
            fault_type: "CrashLoop".into(),
            severity: "critical".into(),
            context: "back-off restarting failed container".into(),
            timestamp: "2026-11-26T10:00:00Z".into(),
        },
        permissions: PermissionsSource::Unknown,
        kubeconfig: None,
        context_files: vec![(
            "pre-triage.txt".into(),
            b"seen 3 times in 10 minutes".to_vec(),
        )],
        system_prompt: "You are an SRE triage agent.".into(),
        additional_prompt: None,
        profile,
    }
}

/// A runner with in-memory persistence and its own instance id.
pub(crate) struct TestRunner {
    pub(crate) runner: DockerRunner,
    pub(crate) recorder: Arc<InMemoryRecorder>,
    pub(crate) root: tempfile::TempDir,
    pub(crate) instance_id: String,
}

impl TestRunner {
    pub(crate) async fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let instance_id = format!("test-{}", uuid::Uuid::new_v4());
        Self::with(root, instance_id, Arc::new(InMemoryBreakerStore::default())).await
    }

    pub(crate) async fn with(
        root: tempfile::TempDir,
        instance_id: String,
        breakers: Arc<InMemoryBreakerStore>,
    ) -> Self {
        let recorder = Arc::new(InMemoryRecorder::default());
        let runner = DockerRunner::connect(
            RunnerConfig::new(root.path(), instance_id.clone()),
            recorder.clone(),
            breakers,
        )
        .await
        .expect("a Docker engine must be running for these tests");
        Self {
            runner,
            recorder,
            root,
            instance_id,
        }
    }

    pub(crate) fn workspace(&self, incident_id: &str) -> PathBuf {
        self.root.path().join(incident_id)
    }

    /// Containers of this instance, running or not.
    pub(crate) async fn containers(&self) -> Vec<String> {
        containers_of(self.runner.docker(), &self.instance_id).await
    }

    pub(crate) async fn assert_no_containers(&self) {
        let left = self.containers().await;
        assert!(left.is_empty(), "containers left behind: {left:?}");
    }
}

pub(crate) async fn containers_of(docker: &Docker, instance_id: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("nightcrier.instance={instance_id}")])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|summary| summary.id)
        .collect()
}

/// Polls `condition` every 50 ms until it holds or `limit` passes.
pub(crate) async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads every file under `logs/`.
pub(crate) fn all_logs(workspace: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(workspace.join("logs")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    text
}
