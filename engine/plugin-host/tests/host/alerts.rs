//! Operational alerts through the plugin contract (0.1.2 `alert-handler`): post-triage
//! components built against 0.1.0 and 0.1.1 still load and run and get no alerts, a 0.1.2 one
//! that exports the handler gets them, the slack plugin posts them, and a hostile handler is
//! contained like any other call.

use std::sync::Arc;
use std::time::Duration;

use nightcrier_plugin_host::types::{Alert, Severity};
use nightcrier_plugin_host::{CallError, KvStore, MemoryKvStore, PluginHost, PluginsConfig, World};

use crate::hostile::hostile_as;
use crate::slack::Listener;
use crate::support::{agent_result, artefact, incident, load, plugins_source, shared_cache};

fn alert(kind: &str) -> Alert {
    Alert {
        id: "0190f0e0-0000-7000-8000-000000000001".to_owned(),
        kind: kind.to_owned(),
        severity: Severity::Critical,
        cluster: Some("prod".to_owned()),
        summary: "triage is degraded on cluster prod: 3 agent runs failed in a row".to_owned(),
        detail: "agent exited with code 1".to_owned(),
        fields: vec![("consecutive-failures".to_owned(), "3".to_owned())],
        raised_at_ms: 1_766_239_651_000,
    }
}

#[tokio::test]
async fn post_triage_plugins_of_every_contract_version_run_and_only_0_1_2_handlers_get_alerts() {
    let dir = tempfile::tempdir().unwrap();
    for (source, name) in [
        (
            plugins_source().join("contract-0.1.0/frozen-post-triage.wasm"),
            "frozen-post-triage.wasm",
        ),
        (
            plugins_source().join("contract-0.1.1/frozen-post-triage-0-1-1.wasm"),
            "frozen-post-triage-0-1-1.wasm",
        ),
        (artefact("fixtures/hostile.wasm"), "receiver.wasm"),
        (
            artefact("plugins/redact-secrets.wasm"),
            "redact-secrets.wasm",
        ),
    ] {
        assert!(source.is_file(), "{} is missing", source.display());
        std::fs::copy(&source, dir.path().join(name)).unwrap();
    }
    let config = PluginsConfig::from_toml(&format!(
        "dir = {:?}\ncache_dir = {:?}\n{}",
        dir.path(),
        shared_cache(),
        hostile_as("receiver", "[plugin.receiver.config]\nattack = \"none\"")
    ))
    .unwrap();
    let kv = Arc::new(MemoryKvStore::new());
    let (host, refused) = PluginHost::load(config, kv.clone()).await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let seen: Vec<(String, World, String, bool)> = host
        .plugins()
        .into_iter()
        .map(|plugin| {
            (
                plugin.id,
                plugin.world,
                plugin.wit_version,
                plugin.handles_alerts,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "frozen-post-triage".to_owned(),
                World::PostTriage,
                "0.1.0".to_owned(),
                false
            ),
            (
                "frozen-post-triage-0-1-1".to_owned(),
                World::PostTriage,
                "0.1.1".to_owned(),
                false
            ),
            (
                "receiver".to_owned(),
                World::PostTriage,
                "0.1.2".to_owned(),
                true
            ),
            (
                "redact-secrets".to_owned(),
                World::PostTriage,
                "0.1.2".to_owned(),
                false
            ),
        ]
    );
    assert_eq!(host.alert_handlers(), ["receiver"]);

    // every version still runs its post-triage call
    let subject = incident(Some("shop"), Severity::Critical);
    for id in ["frozen-post-triage", "frozen-post-triage-0-1-1"] {
        let outcome = host
            .post_triage(id, &subject, &agent_result("# Report"))
            .await
            .unwrap();
        assert_eq!(
            outcome.report_markdown.as_deref(),
            Some("# Report\n\nchecked for inc-1"),
            "{id}"
        );
    }
    let outcome = host
        .post_triage("receiver", &subject, &agent_result("# Report"))
        .await
        .unwrap();
    assert_eq!(outcome.fields, [("behaved".to_owned(), "yes".to_owned())]);

    // only the 0.1.2 handler receives alerts; the others are never called for one
    for id in [
        "frozen-post-triage",
        "frozen-post-triage-0-1-1",
        "redact-secrets",
    ] {
        let error = host.on_alert(id, &alert("feed-down")).await.unwrap_err();
        assert!(
            matches!(error, CallError::WrongWorld { .. }),
            "{id}: {error}"
        );
    }
    host.on_alert("receiver", &alert("breaker-degraded"))
        .await
        .unwrap();
    host.on_alert("receiver", &alert("breaker-recovered"))
        .await
        .unwrap();
    assert_eq!(
        kv.get("receiver", "alerts").await.unwrap().as_deref(),
        Some(&b"breaker-degraded,breaker-recovered"[..])
    );
    let stats = host.call_stats();
    assert_eq!(stats["receiver"].outcomes.get("ok"), Some(&3));
    assert_eq!(
        stats["frozen-post-triage"].calls, 1,
        "its post-triage call only: no alert reached it"
    );
}

#[tokio::test]
async fn a_hostile_alert_handler_is_contained() {
    let config = format!(
        "{}{}{}",
        hostile_as(
            "spinner",
            "deadline_ms = 200\n[plugin.spinner.config]\nattack = \"loop\""
        ),
        hostile_as(
            "trapper",
            "deadline_ms = 1000\n[plugin.trapper.config]\nattack = \"trap\""
        ),
        hostile_as(
            "hoarder",
            "deadline_ms = 5000\nmemory_mib = 16\n[plugin.hoarder.config]\nattack = \"memory\""
        ),
    );
    let config = format!(
        "{config}{}",
        hostile_as(
            "benign",
            "deadline_ms = 1000\n[plugin.benign.config]\nattack = \"none\""
        )
    );
    let (host, refused, _folder, kv) = load(
        &[
            ("fixtures/hostile.wasm", "spinner.wasm"),
            ("fixtures/hostile.wasm", "trapper.wasm"),
            ("fixtures/hostile.wasm", "hoarder.wasm"),
            ("fixtures/hostile.wasm", "benign.wasm"),
        ],
        &config,
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    assert_eq!(
        host.alert_handlers(),
        ["benign", "hoarder", "spinner", "trapper"]
    );

    let started = tokio::time::Instant::now();
    let error = host
        .on_alert("spinner", &alert("feed-down"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, CallError::Timeout { .. }),
        "an endless loop ends as a timeout: {error}"
    );
    assert!(error.to_string().contains("spinner@"), "{error}");
    assert!(error.is_retryable(), "a timeout may be retried");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "stopped within twice its deadline: {:?}",
        started.elapsed()
    );

    let error = host
        .on_alert("trapper", &alert("feed-down"))
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::Trap { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("hostile plugin panics on purpose"),
        "{error}"
    );
    assert!(!error.is_retryable());

    let error = host
        .on_alert("hoarder", &alert("feed-down"))
        .await
        .unwrap_err();
    assert!(matches!(error, CallError::MemoryLimit { .. }), "{error}");

    // the host goes on serving alerts, and the attackers' own next calls are handled too
    host.on_alert("benign", &alert("feed-up")).await.unwrap();
    assert_eq!(
        kv.get("benign", "alerts").await.unwrap().as_deref(),
        Some(&b"feed-up"[..])
    );
    assert!(host.on_alert("trapper", &alert("feed-up")).await.is_err());
    let stats = host.call_stats();
    assert_eq!(stats["spinner"].outcomes.get("timeout"), Some(&1));
    assert_eq!(stats["trapper"].outcomes.get("trap"), Some(&2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_posts_alerts_to_the_same_webhook() {
    let server = Listener::start(200).await;
    let (host, refused, _folder, _kv) = load(
        &[("plugins/slack.wasm", "slack.wasm")],
        &format!(
            "[plugin.slack]\nallowed_hosts = [\"{}\"]\n[plugin.slack.config]\nwebhook_url = \"{}\"\n",
            server.origin(),
            server.url("/services/T/B/x")
        ),
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let summary = host.plugin("slack").unwrap();
    assert!(summary.handles_alerts);
    assert_eq!(host.alert_handlers(), ["slack"]);
    host.on_alert("slack", &alert("breaker-degraded"))
        .await
        .unwrap();
    let mut up = alert("feed-up");
    up.severity = Severity::Info;
    up.summary = "the event feed of cluster prod is back up".to_owned();
    host.on_alert("slack", &up).await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let payloads: Vec<serde_json::Value> = requests
        .iter()
        .map(|(head, body)| {
            assert!(head.starts_with("POST /services/T/B/x HTTP/1.1"), "{head}");
            serde_json::from_slice(body).unwrap()
        })
        .collect();
    assert_eq!(
        payloads[0]["blocks"][0]["text"]["text"],
        "Triage degraded on prod :rotating_light:"
    );
    assert_eq!(payloads[0]["attachments"][0]["color"], "danger");
    assert_eq!(
        payloads[0]["blocks"][1]["text"]["text"],
        "triage is degraded on cluster prod: 3 agent runs failed in a row"
    );
    assert_eq!(
        payloads[1]["blocks"][0]["text"]["text"],
        "Event feed back up on prod :white_check_mark:"
    );
    assert_eq!(payloads[1]["attachments"][0]["color"], "good");

    // a 503 is a retryable failure the engine may try again
    let failing = Listener::start(503).await;
    let (host, refused, _folder, _kv) = load(
        &[("plugins/slack.wasm", "slack.wasm")],
        &format!(
            "[plugin.slack]\nallowed_hosts = [\"{}\"]\n[plugin.slack.config]\nwebhook_url = \"{}\"\n",
            failing.origin(),
            failing.url("/x")
        ),
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let error = host
        .on_alert("slack", &alert("feed-down"))
        .await
        .unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert!(error.to_string().contains("503"), "{error}");
}
