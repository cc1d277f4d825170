//! Restart recovery: a nightcrier killed with SIGKILL mid-run, then `recover` in a new runner.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::CreateContainerOptionsBuilder;
use nightcrier_agent::{InMemoryBreakerStore, IncidentStatus};

use crate::support::{TestRunner, test_image, wait_until};

fn child_binary() -> std::path::PathBuf {
    env!("CARGO_BIN_EXE_nightcrier-agent-test-child").into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_kill_9_of_nightcrier_and_is_completed_after_recover() {
    let root = tempfile::tempdir().unwrap();
    let instance_id = format!("test-{}", uuid::Uuid::new_v4());
    let incident_id = uuid::Uuid::new_v4().to_string();
    let mut child = Command::new(child_binary())
        .args([
            root.path().to_str().unwrap(),
            &instance_id,
            &incident_id,
            test_image(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let started = tokio::task::spawn_blocking(move || lines.next().unwrap().unwrap())
        .await
        .unwrap();
    assert!(started.starts_with("started "), "{started}");
    let workspace = root.path().join(&incident_id);
    let full_log = workspace.join("logs/agent-full.log");
    wait_until(Duration::from_secs(30), "the agent to be waiting", || {
        let full_log = full_log.clone();
        async move {
            tokio::fs::read_to_string(&full_log)
                .await
                .is_ok_and(|text| text.contains("waiting for the go file"))
        }
    })
    .await;

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let test = TestRunner::with(root, instance_id, Arc::new(InMemoryBreakerStore::default())).await;
    assert_eq!(
        test.containers().await.len(),
        1,
        "the container outlives the killed process"
    );
    let investigating = incident_id.clone();
    let report = test.runner.recover(|id| id == investigating).await.unwrap();
    assert!(report.removed.is_empty(), "{report:?}");
    assert_eq!(report.reattached.len(), 1);
    let pending = report.reattached.into_iter().next().unwrap();
    assert_eq!(pending.incident_id, incident_id);
    let run = tokio::spawn(pending.run);

    std::fs::write(workspace.join("output/go"), b"").unwrap();
    let outcome = run.await.unwrap();
    assert!(outcome.recovered);
    assert_eq!(outcome.failure, None, "{outcome:?}");
    assert_eq!(outcome.status, IncidentStatus::Resolved);
    assert_eq!(outcome.exit_code, Some(0));
    let finishes = test.recorder.finishes();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0].incident_id, incident_id);
    assert_eq!(finishes[0].exit_code, Some(0));
    let full = std::fs::read_to_string(&full_log).unwrap();
    assert!(full.contains("waiting for the go file"), "{full}");
    assert!(full.contains("go seen, writing report"), "{full}");
    let document = std::fs::read_to_string(workspace.join("incident.json")).unwrap();
    assert!(document.contains("\"status\": \"resolved\""), "{document}");
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_removes_containers_of_incidents_no_longer_investigating() {
    let test = TestRunner::new().await;
    let docker = test.runner.docker();
    let labels = std::collections::HashMap::from([
        ("nightcrier.instance".to_owned(), test.instance_id.clone()),
        ("nightcrier.incident".to_owned(), "orphan-1".to_owned()),
    ]);
    let created = docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&format!("nightcrier-agent-orphan-{}", test.instance_id))
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(test_image().to_owned()),
                cmd: Some(vec!["/bin/sh".into(), "/agent.sh".into(), "hang".into()]),
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    docker.start_container(&created.id, None).await.unwrap();
    // A container of another instance must be left alone.
    let other = TestRunner::new().await;
    assert!(
        other
            .runner
            .recover(|_| false)
            .await
            .unwrap()
            .removed
            .is_empty()
    );

    let report = test.runner.recover(|_| false).await.unwrap();
    assert!(report.reattached.is_empty());
    assert_eq!(report.removed, ["orphan-1"]);
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_detach_leaves_the_container_for_the_next_process() {
    let first = TestRunner::new().await;
    let request = crate::support::request(crate::support::profile("gated", 60, ""));
    let incident_id = request.incident.incident_id.clone();
    let runner = first.runner.clone();
    let run = tokio::spawn(async move { runner.run(request).await });
    let full_log = first.workspace(&incident_id).join("logs/agent-full.log");
    wait_until(Duration::from_secs(30), "the agent to be waiting", || {
        let full_log = full_log.clone();
        async move {
            tokio::fs::read_to_string(&full_log)
                .await
                .is_ok_and(|text| text.contains("waiting for the go file"))
        }
    })
    .await;
    first.runner.detach_all();
    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    assert_eq!(
        first.containers().await.len(),
        1,
        "detached container keeps running"
    );

    let TestRunner {
        root, instance_id, ..
    } = first;
    let second =
        TestRunner::with(root, instance_id, Arc::new(InMemoryBreakerStore::default())).await;
    let report = second.runner.recover(|_| true).await.unwrap();
    assert_eq!(report.reattached.len(), 1);
    let run = tokio::spawn(report.reattached.into_iter().next().unwrap().run);
    std::fs::write(second.workspace(&incident_id).join("output/go"), b"").unwrap();
    let outcome = run.await.unwrap();
    assert_eq!(outcome.status, IncidentStatus::Resolved, "{outcome:?}");
    assert!(outcome.recovered);
    second.assert_no_containers().await;
}
