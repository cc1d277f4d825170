//! The frozen contract: components built against `nightcrier:plugin@0.1.0` (checked in under
//! `plugins/contract-0.1.0/`, sources beside them) load and run through the current host.

use std::sync::Arc;

use nightcrier_plugin_host::types::{Decision, Envelope, FeedKind};
use nightcrier_plugin_host::{KvStore, MemoryKvStore, PluginHost, PluginsConfig, World};

use crate::support::{agent_result, incident, shared_cache};
use nightcrier_plugin_host::types::Severity;

/// The checked-in fixtures; they are never rebuilt by the tests, so they stay what 0.1.0 plugins are.
fn frozen_folder() -> (tempfile::TempDir, PluginsConfig) {
    let fixtures = crate::support::plugins_source().join("contract-0.1.0");
    let dir = tempfile::tempdir().unwrap();
    for name in ["frozen-source", "frozen-pre-triage", "frozen-post-triage"] {
        let file = fixtures.join(format!("{name}.wasm"));
        assert!(file.is_file(), "{} is missing", file.display());
        std::fs::copy(&file, dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    let config = PluginsConfig::from_toml(&format!(
        "dir = {:?}\ncache_dir = {:?}\n[plugin.frozen-pre-triage.config]\nwindow = \"night\"\n",
        dir.path(),
        shared_cache()
    ))
    .unwrap();
    (dir, config)
}

#[tokio::test]
async fn components_built_against_the_frozen_0_1_0_load_and_run() {
    let (_dir, config) = frozen_folder();
    let kv = Arc::new(MemoryKvStore::new());
    let (host, refused) = PluginHost::load(config, kv.clone()).await.unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let worlds: Vec<(String, World, String)> = host
        .plugins()
        .into_iter()
        .map(|plugin| (plugin.id, plugin.world, plugin.wit_version))
        .collect();
    assert_eq!(
        worlds,
        [
            (
                "frozen-post-triage".to_owned(),
                World::PostTriage,
                "0.1.0".to_owned()
            ),
            (
                "frozen-pre-triage".to_owned(),
                World::PreTriage,
                "0.1.0".to_owned()
            ),
            (
                "frozen-source".to_owned(),
                World::Source,
                "0.1.0".to_owned()
            ),
        ]
    );

    let envelope = Envelope {
        kind: FeedKind::Webhook,
        cluster: Some("kind-dev".to_owned()),
        headers: Vec::new(),
        body: b"fault-1".to_vec(),
        logger: None,
        received_at_ms: 1_766_239_651_000,
    };
    let events = host.decode("frozen-source", &envelope).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(
        (
            events[0].fault_id.as_str(),
            events[0].cluster.as_str(),
            events[0].severity
        ),
        ("fault-1", "kind-dev", Severity::Critical)
    );
    assert_eq!(
        kv.get("frozen-source", "last").await.unwrap().as_deref(),
        Some(&b"fault-1"[..])
    );
    let empty = Envelope {
        body: Vec::new(),
        ..envelope
    };
    let error = host.decode("frozen-source", &empty).await.unwrap_err();
    assert!(error.to_string().contains("empty body"), "{error}");

    let mut subject = incident(Some("shop"), Severity::Critical);
    subject.priority = 7;
    for expected_calls in ["1", "2"] {
        let Decision::Proceed(patch) = host
            .pre_triage("frozen-pre-triage", &subject)
            .await
            .unwrap()
        else {
            panic!("expected proceed");
        };
        assert_eq!(
            patch.labels,
            [(
                "frozen-config".to_owned(),
                r#"{"window":"night"}"#.to_owned()
            )]
        );
        assert_eq!(patch.priority, Some(8));
        assert_eq!(
            kv.get("frozen-pre-triage", "calls")
                .await
                .unwrap()
                .as_deref(),
            Some(expected_calls.as_bytes())
        );
    }
    subject.cluster = "skip-me".to_owned();
    assert_eq!(
        host.pre_triage("frozen-pre-triage", &subject)
            .await
            .unwrap(),
        Decision::Skip("cluster skip-me".to_owned())
    );

    let outcome = host
        .post_triage("frozen-post-triage", &subject, &agent_result("# Report"))
        .await
        .unwrap();
    assert_eq!(
        outcome.report_markdown.as_deref(),
        Some("# Report\n\nchecked for inc-1")
    );
    assert_eq!(
        outcome.fields,
        [
            ("exit-code".to_owned(), "0".to_owned()),
            ("clock".to_owned(), "true".to_owned())
        ]
    );
}
