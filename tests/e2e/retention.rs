//! Retention, on both backends: ended incidents' workspaces go after the workspace retention
//! period; ended incidents themselves (with their rows, report files and workspace) and dead
//! letters go after theirs, in batches; open incidents and folders that are not incident
//! workspaces stay.

use std::time::Duration;

use chrono::Utc;
use std::collections::BTreeMap;

use nightcrier::alert::{AlertKind, DeliveryOutcome, NewAlert, RaisedAlert};
use nightcrier::queue::QueueError;
use nightcrier::report::{ReportStore, StoreLocation};
use nightcrier::retention::{PurgeReport, Retention, RetentionConfig, prune_workspaces};
use nightcrier::store::{NewExecution, NewPluginRun, NewReport};
use sea_orm::{ConnectionTrait, Statement};

use crate::support::{backends, event, queue_all_pending};

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test]
async fn ended_incidents_lose_their_workspace_after_the_retention_period() {
    for db in backends().await {
        let queue = db.queue().await;
        let root = tempfile::tempdir().unwrap();
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(
                queue
                    .ingest(&event(&format!("c{n}"), n))
                    .await
                    .unwrap()
                    .incident_id,
            );
        }
        queue_all_pending(&queue).await;
        // ids[0] resolved long ago, ids[1] resolved just now, ids[2] still investigating
        let now = Utc::now();
        for _ in 0..3 {
            let (incident, lease) = queue
                .claim("w", Duration::from_secs(600), now)
                .await
                .unwrap()
                .unwrap();
            if incident.id != ids[2] {
                queue.complete(&lease, 0, now).await.unwrap();
            }
        }
        let backend = queue.store().backend();
        let old = chrono::SubsecRound::trunc_subsecs(now - chrono::Duration::days(30), 6);
        queue
            .store()
            .connection()
            .execute_raw(Statement::from_sql_and_values(
                backend,
                "UPDATE incidents SET completed_at = $1, updated_at = $1 WHERE id = $2",
                vec![old.into(), ids[0].to_string().into()],
            ))
            .await
            .unwrap();
        for id in &ids {
            std::fs::create_dir_all(root.path().join(id.to_string()).join("output")).unwrap();
        }
        // a workspace whose incident is gone, left a month ago; and a folder of the operator's
        let gone = uuid::Uuid::new_v4();
        let gone_dir = root.path().join(gone.to_string());
        std::fs::create_dir(&gone_dir).unwrap();
        std::fs::File::open(&gone_dir)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - 30 * DAY)
            .unwrap();
        std::fs::create_dir(root.path().join("notes")).unwrap();

        let report = prune_workspaces(&queue, root.path(), 7 * DAY, Utc::now())
            .await
            .unwrap();
        let mut expected = vec![ids[0], gone];
        expected.sort();
        assert_eq!(report.removed, expected, "{}", db.backend);
        assert_eq!(report.kept, 2);
        assert!(!root.path().join(ids[0].to_string()).exists());
        assert!(root.path().join(ids[1].to_string()).exists());
        assert!(
            root.path().join(ids[2].to_string()).exists(),
            "open incident"
        );
        assert!(root.path().join("notes").exists());
    }
}

/// Ended incidents older than `retention.incidents` go with everything about them (event,
/// executions, plugin runs, reports, report files, workspace), in batches; dead letters older
/// than `retention.rejected_events` go too; open and recent incidents stay; `0` keeps forever.
#[tokio::test]
async fn ended_incidents_and_dead_letters_are_deleted_in_batches_after_their_age() {
    for db in backends().await {
        let queue = db.queue().await;
        let store = queue.store().clone();
        let dir = tempfile::tempdir().unwrap();
        let objects = ReportStore::open(
            &StoreLocation::Local(dir.path().join("reports")),
            &BTreeMap::new(),
            Vec::new(),
        )
        .unwrap();
        let workspaces = dir.path().join("workspaces");
        let mut ids = Vec::new();
        for n in 0..5 {
            ids.push(
                queue
                    .ingest(&event(&format!("r{n}"), n))
                    .await
                    .unwrap()
                    .incident_id,
            );
        }
        queue_all_pending(&queue).await;
        let now = Utc::now();
        let mut open = None;
        for _ in 0..5 {
            let (incident, lease) = queue
                .claim("w", Duration::from_secs(600), now)
                .await
                .unwrap()
                .unwrap();
            if incident.id == ids[4] {
                open = Some(lease);
            } else {
                queue.complete(&lease, 0, now).await.unwrap();
            }
        }
        assert!(open.is_some());
        // ids[0..3] ended 40 days ago; ids[3] just now; ids[4] is open but was created long ago
        let old = chrono::SubsecRound::trunc_subsecs(now - chrono::Duration::days(40), 6);
        for id in &ids {
            let ended_long_ago = ids[..3].contains(id);
            store
                .connection()
                .execute_raw(Statement::from_sql_and_values(
                    store.backend(),
                    if ended_long_ago {
                        "UPDATE incidents SET created_at = $1, completed_at = $1, updated_at = $1 WHERE id = $2"
                    } else {
                        "UPDATE incidents SET created_at = $1 WHERE id = $2"
                    },
                    vec![old.into(), id.to_string().into()],
                ))
                .await
                .unwrap();
            store
                .insert_execution(&NewExecution {
                    incident_id: *id,
                    attempt: 1,
                    agent_profile: "claude".into(),
                    image: "agent:1".into(),
                    container_id: format!("c-{id}"),
                    started_at: now,
                    log_paths: serde_json::Value::Null,
                })
                .await
                .unwrap();
            store
                .insert_plugin_run(
                    &NewPluginRun {
                        incident_id: Some(*id),
                        stage: "post_triage",
                        plugin: "slack".into(),
                        plugin_version: None,
                        outcome: "done".into(),
                        duration: Duration::from_millis(3),
                        error: None,
                    },
                    now,
                )
                .await
                .unwrap();
            store
                .insert_report(
                    &NewReport {
                        incident_id: *id,
                        execution_id: None,
                        markdown: "# Investigation".into(),
                        html: None,
                        structured: None,
                        summary: None,
                        artifact_uri: None,
                        storage_type: objects.kind().into(),
                        store_uri: Some(objects.folder_uri(*id)),
                    },
                    now,
                )
                .await
                .unwrap();
            objects
                .put(*id, "investigation.md", "# Investigation".into())
                .await
                .unwrap();
            std::fs::create_dir_all(workspaces.join(id.to_string()).join("logs")).unwrap();
        }
        let old_letter = store
            .reject_event("webhook", None, b"{", "not json", old)
            .await
            .unwrap();
        let new_letter = store
            .reject_event("webhook", None, b"{", "not json", now)
            .await
            .unwrap();
        // alerts: an old one (with its delivery) goes; of cluster c1's old feed alerts the
        // newest (down) stays, it is the last word on that feed; a recent one stays
        let alert = |kind: AlertKind, cluster: &str, at| RaisedAlert {
            id: uuid::Uuid::now_v7(),
            alert: NewAlert {
                kind,
                cluster: Some(cluster.into()),
                summary: format!("{} on {cluster}", kind.as_str()),
                detail: String::new(),
                fields: Vec::new(),
            },
            raised_at: at,
        };
        let old_breaker = alert(AlertKind::BreakerDegraded, "a", old);
        let old_up = alert(AlertKind::FeedUp, "c1", old - chrono::Duration::days(1));
        let last_down = alert(AlertKind::FeedDown, "c1", old);
        let recent = alert(AlertKind::BreakerRecovered, "a", now);
        for raised in [&old_breaker, &old_up, &last_down, &recent] {
            store.insert_alert(raised, "e2e").await.unwrap();
        }
        store
            .record_alert_delivery(
                old_breaker.id,
                &DeliveryOutcome {
                    plugin: "slack".into(),
                    plugin_version: None,
                    delivered: true,
                    attempts: 1,
                    error: None,
                },
                old,
            )
            .await
            .unwrap();

        let config = RetentionConfig {
            incidents: Some(30 * DAY),
            rejected_events: Some(30 * DAY),
            alerts: Some(30 * DAY),
            batch_size: 2,
            batch_pause: Duration::from_millis(1),
            interval: Duration::from_secs(3600),
        };
        let retention = Retention {
            queue: queue.clone(),
            config: RetentionConfig {
                incidents: None,
                rejected_events: None,
                alerts: None,
                ..config.clone()
            },
            reports: Some(objects.clone()),
            workspace_root: workspaces.clone(),
            workspace_retention: None,
            compile_cache: None,
        };
        assert_eq!(
            retention.purge(Utc::now()).await.unwrap(),
            PurgeReport::default(),
            "0 keeps forever"
        );
        let retention = Retention {
            config,
            ..retention
        };
        let report = retention.purge(Utc::now()).await.unwrap();
        assert_eq!(
            report,
            PurgeReport {
                incidents: 3,
                rejected_events: 1,
                alerts: 2,
                report_objects: 3,
                workspaces: 3,
                // two batches of at most two incidents, one of dead letters, one of alerts
                batches: 4,
            },
            "{}",
            db.backend
        );
        for (n, id) in ids.iter().enumerate() {
            let gone = n < 3;
            assert_eq!(
                matches!(queue.get(*id).await, Err(QueueError::NotFound(_))),
                gone,
                "{} incident {n}",
                db.backend
            );
            assert_eq!(store.reports(*id).await.unwrap().is_empty(), gone);
            assert_eq!(store.agent_executions(*id).await.unwrap().is_empty(), gone);
            assert_eq!(store.plugin_runs(*id).await.unwrap().is_empty(), gone);
            assert_eq!(objects.get(*id, "investigation.md").await.is_err(), gone);
            assert_eq!(!workspaces.join(id.to_string()).exists(), gone);
        }
        let events: Vec<(String,)> = {
            let rows = store
                .connection()
                .query_all_raw(Statement::from_string(
                    store.backend(),
                    "SELECT id FROM fault_events",
                ))
                .await
                .unwrap();
            rows.iter()
                .map(|row| (row.try_get::<String>("", "id").unwrap(),))
                .collect()
        };
        assert_eq!(events.len(), 2, "only the kept incidents' events stay");
        assert!(
            store
                .rejected_event(&old_letter.to_string())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .rejected_event(&new_letter.to_string())
                .await
                .unwrap()
                .is_some()
        );
        let kept: Vec<String> = store
            .alerts(100, None, None)
            .await
            .unwrap()
            .into_iter()
            .map(|stored| stored.alert.id)
            .collect();
        assert_eq!(
            kept,
            vec![recent.id.to_string(), last_down.id.to_string()],
            "{}",
            db.backend
        );
        let deliveries: Vec<(i64,)> = {
            let rows = store
                .connection()
                .query_all_raw(Statement::from_string(
                    store.backend(),
                    "SELECT COUNT(*) AS n FROM alert_deliveries",
                ))
                .await
                .unwrap();
            rows.iter()
                .map(|row| (row.try_get::<i64>("", "n").unwrap(),))
                .collect()
        };
        assert_eq!(
            deliveries,
            vec![(0,)],
            "the deleted alert's delivery went with it"
        );
        assert_eq!(
            retention.purge(Utc::now()).await.unwrap(),
            PurgeReport::default(),
            "nothing left to delete"
        );
    }
}

/// Ingest goes on while retention deletes: each batch is a short transaction, so an event
/// committed during a long purge waits at most for one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_is_not_held_up_while_retention_deletes() {
    for db in backends().await {
        let queue = db.queue().await;
        let store = queue.store().clone();
        let events: Vec<_> = (0..400)
            .map(|n| event(&format!("old{}", n % 7), n))
            .collect();
        for chunk in events.chunks(100) {
            queue.ingest_batch(chunk).await.unwrap();
        }
        let old = chrono::SubsecRound::trunc_subsecs(Utc::now() - chrono::Duration::days(60), 6);
        store
            .connection()
            .execute_raw(Statement::from_sql_and_values(
                store.backend(),
                "UPDATE incidents SET status = 'resolved', completed_at = $1, updated_at = $1",
                vec![old.into()],
            ))
            .await
            .unwrap();
        let retention = Retention {
            queue: queue.clone(),
            config: RetentionConfig {
                batch_size: 20,
                batch_pause: Duration::from_millis(20),
                ..RetentionConfig::default()
            },
            reports: None,
            workspace_root: tempfile::tempdir().unwrap().path().to_owned(),
            workspace_retention: None,
            compile_cache: None,
        };
        let purge = tokio::spawn(async move { retention.purge(Utc::now()).await.unwrap() });
        let mut slowest = Duration::ZERO;
        let mut new = Vec::new();
        for n in 0..20 {
            let started = tokio::time::Instant::now();
            new.push(
                queue
                    .ingest(&event("fresh", 1000 + n))
                    .await
                    .unwrap()
                    .incident_id,
            );
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let report = purge.await.unwrap();
        assert_eq!(report.incidents, 400, "{}", db.backend);
        assert!(report.batches >= 20, "{report:?}");
        assert!(
            slowest < Duration::from_secs(2),
            "{}: an ingest waited {slowest:?} behind retention",
            db.backend
        );
        for id in new {
            assert_eq!(
                queue.get(id).await.unwrap().status.as_str(),
                "pending",
                "{}: what arrived during the purge stays",
                db.backend
            );
        }
    }
}
