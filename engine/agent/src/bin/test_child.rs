//! Test helper for the docker restart test, not part of the engine: starts one run of the
//! `gated` test agent and prints `started <incident id>` once the container runs, so the test
//! can SIGKILL this process.

use std::sync::Arc;

use nightcrier_agent::{
    AgentProfileConfig, AgentRequest, DockerRunner, ExecutionRecorder, ExecutionStart,
    InMemoryBreakerStore, IncidentInput, PermissionsSource, RunnerConfig, StoreError,
};

/// Prints a line when the start is recorded (i.e. the container is running).
struct AnnouncingRecorder;

impl ExecutionRecorder for AnnouncingRecorder {
    fn record_start<'a>(
        &'a self,
        start: &'a ExecutionStart,
    ) -> futures::future::BoxFuture<'a, Result<(), StoreError>> {
        println!("started {}", start.incident_id);
        Box::pin(async { Ok(()) })
    }

    fn record_finish<'a>(
        &'a self,
        _finish: &'a nightcrier_agent::ExecutionFinish,
    ) -> futures::future::BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let [root, instance_id, incident_id, image] = &arguments[..] else {
        return Err("usage: nightcrier-agent-test-child ROOT INSTANCE_ID INCIDENT_ID IMAGE".into());
    };
    let runner = DockerRunner::connect(
        RunnerConfig::new(root, instance_id.clone()),
        Arc::new(AnnouncingRecorder),
        Arc::new(InMemoryBreakerStore::default()),
    )
    .await?;
    let profile = AgentProfileConfig::from_json(
        "test",
        &format!(
            r#"{{"image": "{image}", "command": ["/bin/sh", "/agent.sh", "gated"], "network": "none",
                "timeout_secs": 120, "stop_grace_secs": 1, "memory": "64m"}}"#
        ),
    )?
    .build("test")?;
    let outcome = runner
        .run(AgentRequest {
            incident: IncidentInput {
                incident_id: incident_id.clone(),
                fault_id: "fault-restart".into(),
                created_at: chrono::Utc::now().fixed_offset(),
                cluster: "test-cluster".into(),
                namespace: "default".into(),
                resource: serde_json::Value::Null,
                fault_type: "CrashLoop".into(),
                severity: "critical".into(),
                context: String::new(),
                timestamp: String::new(),
            },
            permissions: PermissionsSource::Unknown,
            kubeconfig: None,
            context_files: Vec::new(),
            system_prompt: "triage".into(),
            additional_prompt: None,
            profile,
        })
        .await?;
    println!("finished {:?}", outcome.status);
    Ok(())
}
