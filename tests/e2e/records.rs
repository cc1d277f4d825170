//! The side tables on both backends: plugin key-value pairs with expiry, agent executions,
//! circuit-breaker state, plugin runs and reports.

use std::time::Duration;

use chrono::Utc;
use nightcrier::store::{NewExecution, NewPluginRun, NewReport};

use crate::support::{backends, event};

#[tokio::test]
async fn plugin_kv_is_scoped_and_expires() {
    for db in backends().await {
        let store = db.queue().await.store().clone();
        let now = Utc::now();
        store
            .kv_set(
                "dedup",
                "fault:a817",
                b"1".to_vec(),
                Some(now + chrono::Duration::seconds(600)),
                now,
            )
            .await
            .unwrap();
        store
            .kv_set("other", "fault:a817", b"2".to_vec(), None, now)
            .await
            .unwrap();
        assert_eq!(
            store.kv_get("dedup", "fault:a817", now).await.unwrap(),
            Some(b"1".to_vec()),
            "{}",
            db.backend
        );
        assert_eq!(
            store.kv_get("other", "fault:a817", now).await.unwrap(),
            Some(b"2".to_vec())
        );
        let later = now + chrono::Duration::seconds(601);
        assert_eq!(
            store.kv_get("dedup", "fault:a817", later).await.unwrap(),
            None,
            "{}: expired",
            db.backend
        );
        assert_eq!(store.kv_purge_expired(later).await.unwrap(), 1);
        store
            .kv_set("other", "fault:a817", b"3".to_vec(), None, now)
            .await
            .unwrap();
        assert_eq!(
            store.kv_get("other", "fault:a817", later).await.unwrap(),
            Some(b"3".to_vec()),
            "overwrite"
        );
        store.kv_delete("other", "fault:a817").await.unwrap();
        assert_eq!(
            store.kv_get("other", "fault:a817", now).await.unwrap(),
            None
        );
    }
}

#[tokio::test]
async fn executions_breakers_plugin_runs_and_reports_round_trip() {
    for db in backends().await {
        let queue = db.queue().await;
        let store = queue.store().clone();
        let ids = queue.ingest(&event("prod", 1)).await.unwrap();
        let now = Utc::now();
        let execution_id = store
            .insert_execution(&NewExecution {
                incident_id: ids.incident_id,
                attempt: 1,
                agent_profile: "claude".into(),
                image: "nightcrier-agent:latest".into(),
                container_id: "c0ffee".into(),
                started_at: now,
                log_paths: serde_json::json!({"agent-full.log": "/w/logs/agent-full.log"}),
            })
            .await
            .unwrap();
        let changed = store
            .finish_execution(ids.incident_id, "c0ffee", now, Some(0), None)
            .await
            .unwrap();
        assert_eq!(changed, 1, "{}", db.backend);
        let runs = store.agent_executions(ids.incident_id).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(
            (runs[0].exit_code, runs[0].container_id.as_deref()),
            (Some(0), Some("c0ffee"))
        );

        assert_eq!(store.load_breaker("prod").await.unwrap(), None);
        let state = serde_json::json!({"open": true, "consecutive_failures": 3});
        store
            .save_breaker("prod", state.clone(), now)
            .await
            .unwrap();
        store
            .save_breaker("prod", state.clone(), now)
            .await
            .unwrap();
        assert_eq!(
            store.load_breaker("prod").await.unwrap(),
            Some(state),
            "{}",
            db.backend
        );

        store
            .insert_plugin_run(
                &NewPluginRun {
                    incident_id: Some(ids.incident_id),
                    stage: "pre_triage",
                    plugin: "dedup".into(),
                    plugin_version: Some("0.1.0".into()),
                    outcome: "skip".into(),
                    duration: Duration::from_micros(42),
                    error: None,
                },
                now,
            )
            .await
            .unwrap();
        let plugin_runs = store.plugin_runs(ids.incident_id).await.unwrap();
        assert_eq!(
            (plugin_runs[0].plugin.as_str(), plugin_runs[0].duration_us),
            ("dedup", 42)
        );

        let report_id = store
            .insert_report(
                &NewReport {
                    incident_id: ids.incident_id,
                    execution_id: Some(execution_id),
                    markdown: "# Root cause\nOOMKilled".into(),
                    html: None,
                    structured: Some(serde_json::json!({"confidence": "high"})),
                    summary: Some("OOMKilled".into()),
                    artifact_uri: None,
                    storage_type: "database".into(),
                    store_uri: None,
                },
                now,
            )
            .await
            .unwrap();
        let reports = store.reports(ids.incident_id).await.unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].id, report_id.to_string());
        assert_eq!(
            reports[0].execution_id,
            Some(execution_id.to_string()),
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn circuit_breaker_state_survives_a_new_store() {
    use nightcrier_agent::{BreakerState, BreakerStateStore};
    for db in backends().await {
        let store = db.queue().await.store().clone();
        let breakers = nightcrier::agent::DbBreakerStore::new(store);
        assert_eq!(breakers.load("prod").await.unwrap(), None);
        let state = BreakerState {
            open: true,
            consecutive_failures: 3,
            first_failure_at: Some(Utc::now()),
            last_failure_at: Some(Utc::now()),
            alerted: true,
            recent_reasons: vec!["agent exited with code 3".into()],
        };
        breakers.save("prod", &state).await.unwrap();
        // a restarted nightcrier opens a new connection and finds the same state
        let reopened = nightcrier::agent::DbBreakerStore::new(db.store().await);
        let loaded = reopened.load("prod").await.unwrap().unwrap();
        assert!(loaded.open && loaded.alerted, "{}", db.backend);
        assert_eq!(loaded.consecutive_failures, 3);
        assert_eq!(loaded.recent_reasons, state.recent_reasons);
        assert_eq!(reopened.load("staging").await.unwrap(), None);
    }
}

/// Postgres text cannot hold U+0000; a NUL anywhere in untrusted text (a payload, a label, a
/// report, a plugin's error) must not fail the write or take a batch's good events with it.
#[tokio::test]
async fn text_with_nul_is_stored_on_both_backends() {
    for db in backends().await {
        let queue = db.queue().await;
        let store = queue.store();
        let mut hostile = event("prod", 1);
        hostile.context = "restart count: 3\0; rm -rf".into();
        hostile.labels.insert("team\0".into(), "pay\0ments".into());
        hostile.payload = serde_json::json!({"context": "a\u{0}b", "k\u{0}": 1});
        let good = event("prod", 2);
        let ids = queue.ingest_batch(&[hostile, good]).await.unwrap();
        assert_eq!(ids.len(), 2, "{}: the batch is stored whole", db.backend);
        let stored = store
            .fault_event(&ids[0].event_id.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.context, "restart count: 3\u{FFFD}; rm -rf",
            "{}",
            db.backend
        );
        let payload = match &stored.payload {
            serde_json::Value::String(text) => serde_json::from_str(text).unwrap(),
            other => other.clone(),
        };
        assert_eq!(
            payload,
            serde_json::json!({"context": "a\u{FFFD}b", "k\u{FFFD}": 1})
        );
        let incident = queue.get(ids[0].incident_id).await.unwrap();
        assert_eq!(
            incident.labels.get("team\u{FFFD}").map(String::as_str),
            Some("pay\u{FFFD}ments")
        );

        let now = Utc::now();
        store
            .insert_plugin_run(
                &NewPluginRun {
                    incident_id: Some(ids[0].incident_id),
                    stage: "post_triage",
                    plugin: "hostile".into(),
                    plugin_version: Some("0.1.0".into()),
                    outcome: "error".into(),
                    duration: Duration::from_micros(7),
                    error: Some("trapped\0here".into()),
                },
                now,
            )
            .await
            .unwrap();
        store
            .insert_report(
                &NewReport {
                    incident_id: ids[0].incident_id,
                    execution_id: None,
                    markdown: "# Root cause\n\0binary\0 output".into(),
                    html: None,
                    structured: Some(serde_json::json!({"cause": "x\u{0}"})),
                    summary: Some("\0".into()),
                    artifact_uri: None,
                    storage_type: "database".into(),
                    store_uri: None,
                },
                now,
            )
            .await
            .unwrap();
        let reports = store.reports(ids[0].incident_id).await.unwrap();
        assert_eq!(
            reports[0].report_markdown, "# Root cause\n\u{FFFD}binary\u{FFFD} output",
            "{}",
            db.backend
        );
        let runs = store.plugin_runs(ids[0].incident_id).await.unwrap();
        assert_eq!(runs[0].error.as_deref(), Some("trapped\u{FFFD}here"));
    }
}
