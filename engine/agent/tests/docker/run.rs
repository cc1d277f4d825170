//! One run per agent behaviour: outcome, files, logs, records, and no container left behind.

use std::time::Duration;

use nightcrier_agent::{BreakerEvent, FailureReason, IncidentStatus};

use crate::support::{TestRunner, all_logs, profile, request, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_report_resolves_in_a_hardened_container() {
    let test = TestRunner::new().await;
    // Owner-only originals: the agent (uid 1000) must still read them, through private copies.
    let credentials = tempfile::tempdir().unwrap();
    let kubeconfig = credentials.path().join("prod.yaml");
    std::fs::write(&kubeconfig, "apiVersion: v1\nkind: Config\n").unwrap();
    let token = credentials.path().join("token");
    std::fs::write(&token, "t0ken-value").unwrap();
    for path in [&kubeconfig, &token] {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let extra = format!(
        r#", "secret_files": [{{"host_path": "{}", "name": "token"}}]"#,
        token.display()
    );
    let mut request = request(profile("good", 60, &extra));
    request.kubeconfig = Some(kubeconfig);
    let incident_id = request.incident.incident_id.clone();
    let outcome = test.runner.run(request).await.unwrap();

    assert_eq!(outcome.failure, None, "{outcome:?}");
    assert_eq!(outcome.status, IncidentStatus::Resolved);
    assert_eq!(outcome.exit_code, Some(0));
    let workspace = test.workspace(&incident_id);
    let report = std::fs::read_to_string(workspace.join("output/investigation.md")).unwrap();
    assert!(report.contains("uid: 1000 gid: 1000"), "{report}");
    assert!(report.contains("CapEff:\t0000000000000000"), "{report}");
    assert!(report.contains("NoNewPrivs:\t1"), "{report}");
    assert!(report.contains("prompt has context: 1"), "{report}");
    assert!(
        report.contains("context file: seen 3 times in 10 minutes"),
        "{report}"
    );
    assert!(
        report.contains(&format!("model: test-model incident: {incident_id}")),
        "{report}"
    );

    assert!(
        report.contains("kubeconfig: apiVersion: v1 via /home/agent/.kube/config"),
        "{report}"
    );
    assert!(report.contains("token file: 11 bytes"), "{report}");
    assert!(
        !workspace.join(".credentials").exists(),
        "staged credentials are removed"
    );

    let stdout = std::fs::read_to_string(&outcome.log_paths.stdout).unwrap();
    assert!(
        stdout.contains("reading the incident\nincident is investigating\n"),
        "{stdout}"
    );
    let stderr = std::fs::read_to_string(&outcome.log_paths.stderr).unwrap();
    assert_eq!(stderr, "working on stderr\n");
    let full = std::fs::read_to_string(&outcome.log_paths.full).unwrap();
    assert!(full.contains("[STDERR] working on stderr"), "{full}");
    assert!(full.contains("[STDOUT] done"), "{full}");

    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(workspace.join("incident.json")).unwrap()).unwrap();
    assert_eq!(document["status"], "resolved");
    assert_eq!(document["exitCode"], 0);
    assert!(document["completedAt"].is_string());
    assert!(
        document["logPaths"]["agent-full.log"]
            .as_str()
            .unwrap()
            .ends_with("logs/agent-full.log")
    );

    let starts = test.recorder.starts();
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].container_id, outcome.container_id);
    assert_eq!(
        starts[0].container_name,
        format!("nightcrier-agent-{incident_id}")
    );
    let finishes = test.recorder.finishes();
    assert_eq!(finishes.len(), 1);
    assert_eq!(
        (finishes[0].exit_code, &finishes[0].failure),
        (Some(0), &None)
    );
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exits_fail_and_three_in_a_row_degrade_once_then_recover() {
    let test = TestRunner::new().await;
    let mut events = Vec::new();
    for _ in 0..4 {
        let outcome = test
            .runner
            .run(request(profile("nonzero", 60, "")))
            .await
            .unwrap();
        assert_eq!(outcome.status, IncidentStatus::AgentFailed);
        assert_eq!(outcome.failure, Some(FailureReason::NonZeroExit(3)));
        assert_eq!(outcome.exit_code, Some(3));
        let stderr = std::fs::read_to_string(&outcome.log_paths.stderr).unwrap();
        assert_eq!(stderr, "cannot reach the cluster\n");
        events.push(outcome.breaker_event);
    }
    assert!(
        events[0].is_none() && events[1].is_none() && events[3].is_none(),
        "{events:?}"
    );
    assert!(
        matches!(&events[2], Some(BreakerEvent::Degraded { consecutive_failures: 3, scope, .. }) if scope == "test-cluster"),
        "{events:?}"
    );
    let recovered = test
        .runner
        .run(request(profile("good", 60, "")))
        .await
        .unwrap();
    assert!(
        matches!(
            recovered.breaker_event,
            Some(BreakerEvent::Recovered { failures: 4, .. })
        ),
        "{recovered:?}"
    );
    let document: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            test.workspace(&test.recorder.finishes()[0].incident_id)
                .join("incident.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(document["status"], "agent_failed");
    assert_eq!(
        document["failureReason"],
        "agent exited with non-zero code: 3"
    );
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_too_small_report_fails_validation() {
    let test = TestRunner::new().await;
    let outcome = test
        .runner
        .run(request(profile("small", 60, "")))
        .await
        .unwrap();
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(
        outcome.failure,
        Some(FailureReason::ReportTooSmall { size: 5, min: 100 })
    );
    let outcome = test
        .runner
        .run(request(profile("noop", 60, "")))
        .await
        .unwrap();
    assert_eq!(outcome.failure, Some(FailureReason::ReportMissing));
    test.assert_no_containers().await;
}

/// An agent that fills `output/` (with bytes, or with empty files) is killed soon after it
/// passes the cap, fails with a typed reason, and leaves an empty `output/` behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_filling_its_output_folder_is_killed_at_the_cap() {
    let test = TestRunner::new().await;
    for variant in ["fill", "files"] {
        let request = request(profile(variant, 60, r#", "output_cap": "8m""#));
        let began = tokio::time::Instant::now();
        let outcome = test.runner.run(request).await.unwrap();
        let took = began.elapsed();
        let Some(FailureReason::OutputTooLarge { size, limit }) = outcome.failure.clone() else {
            panic!("{variant}: {:?}", outcome.failure);
        };
        assert_eq!(limit, 8 << 20, "{variant}");
        assert!(size > limit, "{variant}: {size}");
        assert_eq!(outcome.status, IncidentStatus::AgentFailed);
        assert!(took < Duration::from_secs(30), "{variant}: took {took:?}");
        let output = outcome
            .log_paths
            .stdout
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("output");
        let left: Vec<_> = std::fs::read_dir(&output).unwrap().collect();
        assert!(left.is_empty(), "{variant}: output/ still holds {left:?}");
        assert!(
            outcome
                .failure
                .unwrap()
                .to_string()
                .contains("over the cap of 8388608 bytes"),
            "{variant}"
        );
    }
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_agent_is_stopped_killed_and_removed_at_its_timeout() {
    let test = TestRunner::new().await;
    let request = request(profile("hang", 2, ""));
    let began = tokio::time::Instant::now();
    let outcome = test.runner.run(request).await.unwrap();
    let took = began.elapsed();
    assert_eq!(
        outcome.failure,
        Some(FailureReason::TimedOut {
            timeout: Duration::from_secs(2)
        })
    );
    assert_eq!(outcome.status, IncidentStatus::AgentFailed);
    // sh as PID 1 ignores SIGTERM, so this is the kill after the 1 s grace period.
    assert_eq!(outcome.exit_code, Some(137));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    let stdout = std::fs::read_to_string(&outcome.log_paths.stdout).unwrap();
    assert_eq!(stdout, "hanging forever\n");
    assert_eq!(
        test.recorder.finishes()[0].failure,
        Some(FailureReason::TimedOut {
            timeout: Duration::from_secs(2)
        })
    );
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_agent_is_capped() {
    let test = TestRunner::new().await;
    let outcome = test
        .runner
        .run(request(profile("flood", 120, r#", "log_cap": "64k""#)))
        .await
        .unwrap();
    assert!(outcome.logs_capped, "{outcome:?}");
    assert_eq!(outcome.failure, None, "{outcome:?}");
    for path in [
        &outcome.log_paths.stdout,
        &outcome.log_paths.stderr,
        &outcome.log_paths.full,
    ] {
        let size = std::fs::metadata(path).unwrap().len();
        assert!(
            size <= 64 * 1024 + 128,
            "{} is {size} bytes",
            path.display()
        );
    }
    let stdout = std::fs::read_to_string(&outcome.log_paths.stdout).unwrap();
    assert!(stdout.starts_with("flooding the log"));
    assert!(stdout.ends_with("log capped at 65536 bytes; further output dropped\n"));
    assert!(test.recorder.finishes()[0].logs_capped);
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_outside_output_and_logs_are_denied() {
    let test = TestRunner::new().await;
    let request = request(profile("escape", 60, ""));
    let incident_id = request.incident.incident_id.clone();
    let outcome = test.runner.run(request).await.unwrap();
    assert_eq!(outcome.failure, None, "{outcome:?}");
    let workspace = test.workspace(&incident_id);
    let report = std::fs::read_to_string(workspace.join("output/investigation.md")).unwrap();
    for target in [
        "incident",
        "prompt",
        "permissions",
        "context",
        "home",
        "etc",
        "rootfs",
        "agent-log-append",
        "agent-log-remove",
    ] {
        assert!(
            report.contains(&format!("DENIED {target}\n")),
            "{target}: {report}"
        );
    }
    assert!(report.contains("ALLOWED scratch\n"), "{report}");
    assert!(report.contains("ALLOWED own-log\n"), "{report}");
    assert!(workspace.join("logs/agent-full.log").exists());
    assert!(!workspace.join("context/evil").exists());
    let document = std::fs::read_to_string(workspace.join("incident.json")).unwrap();
    assert!(document.contains("\"status\": \"resolved\""), "{document}");
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_given_env_reaches_the_agent_and_secrets_stay_out_of_logs_and_records() {
    let secret_value = format!("sk-test-{}", uuid::Uuid::new_v4());
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("key");
    std::fs::write(&secret_file, format!("{secret_value}\n")).unwrap();
    assert!(
        std::env::var("CARGO_PKG_NAME").is_ok(),
        "cargo sets CARGO_PKG_NAME for tests"
    );

    let test = TestRunner::new().await;
    let extra = format!(
        r#", "secret_env": [{{"name": "NC_TEST_SECRET", "from_file": "{}"}}]"#,
        secret_file.display()
    );
    let request = request(profile("env", 60, &extra));
    let incident_id = request.incident.incident_id.clone();
    let outcome = test.runner.run(request).await.unwrap();
    assert_eq!(outcome.failure, None, "{outcome:?}");

    let workspace = test.workspace(&incident_id);
    let report = std::fs::read_to_string(workspace.join("output/investigation.md")).unwrap();
    assert!(report.contains("absent CARGO_PKG_NAME"), "{report}");
    assert!(report.contains("secret present"), "{report}");
    let seen_hash = std::fs::read_to_string(workspace.join("output/secret.sha256")).unwrap();
    let expected = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("printf %s '{secret_value}' | sha256sum"))
        .output()
        .unwrap();
    assert_eq!(seen_hash, String::from_utf8(expected.stdout).unwrap());

    let logs = all_logs(&workspace);
    assert!(logs.contains("variables"), "{logs}");
    assert!(!logs.contains(&secret_value));
    for file in [
        "incident.json",
        "prompt-sent.md",
        "incident_cluster_permissions.json",
    ] {
        let text = std::fs::read_to_string(workspace.join(file)).unwrap();
        assert!(!text.contains(&secret_value), "{file}");
    }
    let records = format!(
        "{:?} {:?} {outcome:?}",
        test.recorder.starts(),
        test.recorder.finishes()
    );
    assert!(!records.contains(&secret_value));
    test.assert_no_containers().await;
}

/// An agent that prints its environment (as a prompt-injected one will) puts the key nightcrier
/// gave it into no log file, no live output, no `tail`, no report and no record: the exact
/// value, a value split across output chunks, and its base64 forms are masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_handed_to_an_agent_that_prints_them_are_masked_everywhere() {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let secret_value = format!("sk-ant-api03-{}", uuid::Uuid::new_v4().simple());
    let token_value = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("key");
    std::fs::write(&secret_file, format!("{secret_value}\n")).unwrap();
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, &token_value).unwrap();

    let test = TestRunner::new().await;
    let extra = format!(
        r#", "secret_env": [{{"name": "NC_TEST_SECRET", "from_file": "{}"}}],
            "secret_files": [{{"host_path": "{}", "name": "token"}}]"#,
        secret_file.display(),
        token_file.display()
    );
    let request = request(profile("leak", 60, &extra));
    let incident_id = request.incident.incident_id.clone();
    let runner = test.runner.clone();
    let run = tokio::spawn(async move { runner.run(request).await });
    let mut live = None;
    wait_until(Duration::from_secs(30), "the run to be live", || {
        live = test.runner.subscribe(&incident_id);
        let subscribed = live.is_some();
        async move { subscribed }
    })
    .await;
    let mut live = live.unwrap();
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(outcome.failure, None, "{outcome:?}");
    let mut streamed = Vec::new();
    while let Ok(chunk) = live.try_recv() {
        streamed.extend(chunk.bytes);
    }

    let forms = [
        secret_value.clone(),
        token_value.clone(),
        STANDARD.encode(&secret_value),
        STANDARD.encode(format!("u:{secret_value}")),
        URL_SAFE.encode(format!("ab{secret_value}")),
    ];
    let workspace = test.workspace(&incident_id);
    let mut tailed = Vec::new();
    nightcrier_agent::tail(test.root.path(), &incident_id, false, &mut tailed)
        .await
        .unwrap();
    let places = [
        ("logs/", all_logs(&workspace)),
        ("tail", String::from_utf8_lossy(&tailed).into_owned()),
        (
            "live output",
            String::from_utf8_lossy(&streamed).into_owned(),
        ),
        (
            "output/investigation.md",
            std::fs::read_to_string(workspace.join("output/investigation.md")).unwrap(),
        ),
        (
            "output/notes.txt",
            std::fs::read_to_string(workspace.join("output/notes.txt")).unwrap(),
        ),
        ("outcome", format!("{outcome:?}")),
        (
            "records",
            format!(
                "{:?} {:?}",
                test.recorder.starts(),
                test.recorder.finishes()
            ),
        ),
    ];
    for (place, text) in &places {
        for form in &forms {
            assert!(
                !text.contains(form.as_str()),
                "{place} holds {form}: {text}"
            );
        }
    }
    let logs = &places[0].1;
    assert!(
        logs.contains("NC_TEST_SECRET=[REDACTED:NC_TEST_SECRET]"),
        "{logs}"
    );
    assert!(
        logs.contains("split: [REDACTED:NC_TEST_SECRET] done"),
        "{logs}"
    );
    assert!(
        logs.contains("stderr too: [REDACTED:NC_TEST_SECRET]"),
        "{logs}"
    );
    let report = outcome.report.as_deref().unwrap();
    assert!(report.contains("The pod web-1 crash-loops"), "{report}");
    assert!(report.contains("token file: [REDACTED:token]"), "{report}");
    assert!(
        places[2].1.contains("[REDACTED:NC_TEST_SECRET]"),
        "the live stream is masked, not empty: {}",
        places[2].1
    );
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_secret_or_image_fails_with_a_named_reason() {
    let test = TestRunner::new().await;
    let extra =
        r#", "secret_env": [{"name": "API_KEY", "from_env": "NIGHTCRIER_TEST_SURELY_UNSET"}]"#;
    let outcome = test
        .runner
        .run(request(profile("good", 60, extra)))
        .await
        .unwrap();
    let Some(FailureReason::NotReady(problem)) = &outcome.failure else {
        panic!("{outcome:?}");
    };
    let text = problem.to_string();
    assert!(
        text.contains("secret API_KEY") && text.contains("NIGHTCRIER_TEST_SURELY_UNSET"),
        "{text}"
    );
    assert_eq!(outcome.breaker_event, None);
    let problems = test
        .runner
        .check_profile(&profile("good", 60, extra), false)
        .await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        test.runner
            .check_profile(&profile("good", 60, ""), false)
            .await
            .is_empty()
    );

    let error = test
        .runner
        .ensure_image("nightcrier-test-missing:nope")
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("image nightcrier-test-missing:nope"),
        "{error}"
    );
    let mut missing = profile("good", 60, "");
    missing.image = "nightcrier-test-missing:nope".into();
    let problems = test.runner.check_profile(&missing, false).await;
    assert!(
        matches!(&problems[..], [nightcrier_agent::ProfileProblem::Image { image, .. }] if image == "nightcrier-test-missing:nope"),
        "{problems:?}"
    );
    let outcome = test.runner.run(request(missing)).await.unwrap();
    assert_eq!(outcome.status, IncidentStatus::AgentFailed);
    assert!(
        matches!(outcome.failure, Some(FailureReason::NotReady(_))),
        "{outcome:?}"
    );
    assert!(
        outcome
            .failure
            .unwrap()
            .to_string()
            .contains("nightcrier-test-missing:nope")
    );
    test.assert_no_containers().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_still_removes_its_container_and_tail_sees_live_output() {
    let test = TestRunner::new().await;
    let request = request(profile("gated", 60, ""));
    let incident_id = request.incident.incident_id.clone();
    let runner = test.runner.clone();
    let run = tokio::spawn(async move { runner.run(request).await });
    let log = test.workspace(&incident_id).join("logs/agent-full.log");
    wait_until(Duration::from_secs(30), "live output", || {
        let log = log.clone();
        async move {
            tokio::fs::read_to_string(&log)
                .await
                .is_ok_and(|text| text.contains("waiting for the go file"))
        }
    })
    .await;
    let mut tailed = Vec::new();
    nightcrier_agent::tail(test.root.path(), &incident_id, false, &mut tailed)
        .await
        .unwrap();
    assert!(
        String::from_utf8(tailed)
            .unwrap()
            .contains("[STDOUT] waiting for the go file")
    );
    let containers = test.containers().await;
    assert_eq!(containers.len(), 1);
    let inspected = test
        .runner
        .docker()
        .inspect_container(&containers[0], None)
        .await
        .unwrap();
    let host = inspected.host_config.unwrap();
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges:true".to_owned()])
    );
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(64));
    assert_eq!(host.network_mode.as_deref(), Some("none"));
    assert_eq!(host.privileged, Some(false));
    let config = inspected.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        config.labels.unwrap().get("nightcrier.incident"),
        Some(&incident_id)
    );
    assert_eq!(
        inspected.name.as_deref(),
        Some(format!("/nightcrier-agent-{incident_id}").as_str())
    );

    let credentials = test.workspace(&incident_id).join(".credentials");
    assert!(credentials.exists());

    run.abort();
    assert!(run.await.unwrap_err().is_cancelled());
    assert!(test.runner.subscribe(&incident_id).is_none());
    wait_until(Duration::from_secs(30), "container removal", || async {
        test.containers().await.is_empty()
    })
    .await;
    wait_until(Duration::from_secs(30), "credentials removal", || {
        let credentials = credentials.clone();
        async move { !credentials.exists() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_output_is_broadcast_to_subscribers() {
    let test = TestRunner::new().await;
    let request = request(profile("gated", 60, ""));
    let incident_id = request.incident.incident_id.clone();
    let runner = test.runner.clone();
    let run = tokio::spawn(async move { runner.run(request).await });
    let mut receiver = None;
    wait_until(Duration::from_secs(30), "the run to be live", || {
        receiver = test.runner.subscribe(&incident_id);
        let live = receiver.is_some();
        async move { live }
    })
    .await;
    let mut receiver = receiver.unwrap();
    let output = test.workspace(&incident_id).join("output");
    wait_until(Duration::from_secs(30), "the output directory", || {
        let output = output.clone();
        async move { output.exists() }
    })
    .await;
    std::fs::write(output.join("go"), b"").unwrap();
    let mut seen = String::new();
    while !seen.contains("go seen, writing report") {
        let chunk = receiver.recv().await.unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk.bytes));
    }
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(outcome.status, IncidentStatus::Resolved);
    assert!(test.runner.subscribe(&incident_id).is_none());
    test.assert_no_containers().await;
}
