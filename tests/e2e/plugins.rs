//! The plugin host over a real database on both backends, driven by the hostile fixture: a
//! call's key-value writes are applied in one transaction only when it succeeds, each plugin's
//! total is held to its quota, and a trap's cause reaches `plugin_runs`.

use chrono::Utc;
use nightcrier::store::{KvChange, KvTotals};
use nightcrier_plugin_host::types::{AgentResult, FaultEvent, Incident, ResourceRef, Severity};
use nightcrier_plugin_host::{CallError, PluginsConfig};

use crate::support::{backends, built_plugins};

/// The hostile fixture as `hostile.wasm` in a fresh folder, with `settings` and `attack`.
fn hostile_folder(settings: &str, attack: &str) -> (tempfile::TempDir, PluginsConfig) {
    let dir = tempfile::tempdir().unwrap();
    let fixture = built_plugins().join("../fixtures/hostile.wasm");
    std::fs::copy(&fixture, dir.path().join("hostile.wasm"))
        .unwrap_or_else(|error| panic!("{}: {error}", fixture.display()));
    let config = PluginsConfig::from_toml(&format!(
        "dir = {:?}\n[plugin.hostile]\n{settings}\n[plugin.hostile.config]\nattack = \"{attack}\"\n",
        dir.path()
    ))
    .unwrap();
    (dir, config)
}

fn incident() -> Incident {
    Incident {
        id: "inc-1".into(),
        cluster: "prod".into(),
        event: FaultEvent {
            fault_id: "f1".into(),
            cluster: "prod".into(),
            resource: ResourceRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "checkout".into(),
                namespace: Some("shop".into()),
                uid: None,
            },
            fault_type: "CrashLoop".into(),
            severity: Severity::Critical,
            context: "restarting".into(),
            timestamp: "2025-12-20T14:07:31Z".into(),
            labels: Vec::new(),
        },
        labels: Vec::new(),
        annotations: Vec::new(),
        priority: 0,
        agent_profile: None,
    }
}

fn result() -> AgentResult {
    AgentResult {
        exit_code: 0,
        duration_ms: 1,
        failure_reason: None,
        report_markdown: "report".into(),
        artifact_names: Vec::new(),
    }
}

async fn run(
    store: &nightcrier::Store,
    settings: &str,
    attack: &str,
) -> Result<Vec<(String, String)>, CallError> {
    let (_dir, config) = hostile_folder(settings, attack);
    let host = nightcrier::plugin::load(config, store).await.unwrap();
    assert_eq!(host.host.plugins().len(), 1, "the fixture must load");
    host.host
        .post_triage("hostile", &incident(), &result())
        .await
        .map(|outcome| outcome.fields)
}

#[tokio::test]
async fn a_call_that_fails_after_writing_a_megabyte_leaves_nothing() {
    for db in backends().await {
        let store = db.queue().await.store().clone();
        let error = run(&store, "deadline_ms = 300", "kvwrite-loop")
            .await
            .unwrap_err();
        assert!(
            matches!(error, CallError::Timeout { .. }),
            "{}: {error}",
            db.backend
        );
        let error = run(&store, "deadline_ms = 2000", "kvwrite-trap")
            .await
            .unwrap_err();
        assert!(matches!(error, CallError::Trap { .. }), "{error}");
        let now = Utc::now();
        assert_eq!(
            store.kv_totals("hostile", now).await.unwrap(),
            KvTotals::default(),
            "{}: a failed call's writes persisted",
            db.backend
        );

        run(&store, "deadline_ms = 2000", "kvwrite").await.unwrap();
        assert_eq!(
            store.kv_totals("hostile", now).await.unwrap(),
            KvTotals {
                keys: 16,
                bytes: 1 << 20
            },
            "{}: a successful call keeps all its writes",
            db.backend
        );
        assert_eq!(
            store.kv_get("hostile", "bulk-15", now).await.unwrap(),
            Some(vec![7u8; 64 * 1024])
        );
    }
}

#[tokio::test]
async fn the_quota_is_counted_from_the_database() {
    for db in backends().await {
        let store = db.queue().await.store().clone();
        let fields = run(&store, "deadline_ms = 5000\nkv_max_keys = 5", "kvflood")
            .await
            .unwrap();
        let stored = fields.iter().find(|(key, _)| key == "stored").unwrap();
        assert_eq!(stored.1, "5", "{}: {fields:?}", db.backend);
        let refusal = fields.iter().find(|(key, _)| key == "refusal").unwrap();
        assert!(
            refusal.1.contains("Invalid(") && refusal.1.contains("quota of 5 keys"),
            "{fields:?}"
        );
        assert_eq!(
            store.kv_totals("hostile", Utc::now()).await.unwrap().keys,
            5,
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn applied_changes_are_totalled_without_expired_keys() {
    for db in backends().await {
        let store = db.queue().await.store().clone();
        let now = Utc::now();
        store
            .kv_apply(
                "p",
                vec![
                    KvChange::Set {
                        key: "a".into(),
                        value: vec![1; 10],
                        expires_at: None,
                    },
                    KvChange::Set {
                        key: "b".into(),
                        value: vec![2; 20],
                        expires_at: Some(now + chrono::Duration::seconds(60)),
                    },
                    KvChange::Delete { key: "none".into() },
                ],
                now,
            )
            .await
            .unwrap();
        assert_eq!(
            store.kv_totals("p", now).await.unwrap(),
            KvTotals { keys: 2, bytes: 30 },
            "{}",
            db.backend
        );
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(
            store.kv_totals("p", later).await.unwrap(),
            KvTotals { keys: 1, bytes: 10 },
            "{}: expired keys do not count",
            db.backend
        );
    }
}

/// A guest panic or stack overflow under fail-open is a `plugin_runs` row of its own whose error
/// leads with the trap kind and, for a panic, quotes the panic message.
#[tokio::test]
async fn a_trap_lands_in_plugin_runs_with_its_cause() {
    for db in backends().await {
        let queue = db.queue().await;
        let store = queue.store().clone();
        for (attack, expected) in [
            ("trap", "trapped: unreachable; guest stderr: "),
            ("stackoverflow", "trapped: stack overflow"),
        ] {
            let ids = queue
                .ingest(&crate::support::event("prod", 1))
                .await
                .unwrap();
            let incident = queue.get(ids.incident_id).await.unwrap();
            let event = store
                .fault_event(&ids.event_id.to_string())
                .await
                .unwrap()
                .unwrap();
            let (_dir, config) = hostile_folder("deadline_ms = 2000", attack);
            let host = nightcrier::plugin::load(config, &store).await.unwrap();
            let verdict = nightcrier::triage::run_post_triage_chain(
                &host.host,
                &store,
                &incident,
                &event,
                result(),
            )
            .await
            .unwrap();
            assert_eq!(verdict.failures.len(), 1, "{}: fail-open", db.backend);
            let runs = store.plugin_runs(incident.id).await.unwrap();
            let failed = runs
                .iter()
                .find(|run| run.outcome == "failed-open")
                .unwrap_or_else(|| panic!("{}: no failed-open row in {runs:?}", db.backend));
            assert_eq!(
                (failed.plugin.as_str(), failed.plugin_version.as_deref()),
                ("hostile", Some("0.1.0"))
            );
            let error = failed.error.as_deref().unwrap();
            assert!(error.contains(expected), "{}: {error}", db.backend);
            if attack == "trap" {
                assert!(
                    error.contains("hostile plugin panics on purpose"),
                    "{}: {error}",
                    db.backend
                );
            }
        }
    }
}
