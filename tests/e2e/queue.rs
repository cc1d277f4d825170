//! Queue operations on both backends: the life cycle, leases and fencing, and the status
//! machine.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use nightcrier::QueueError;
use nightcrier::queue::{JobOutcome, JobStatus, QueuePatch};

use crate::support::{backends, event, queue_all_pending};

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn an_event_goes_from_pending_to_resolved() {
    for db in backends().await {
        let queue = db.queue().await;
        let ids = queue.ingest(&event("prod", 1)).await.unwrap();
        let incident = queue.get(ids.incident_id).await.unwrap();
        assert_eq!(incident.status, JobStatus::Pending);
        assert_eq!(incident.fault_event_id, ids.event_id);
        assert_eq!(
            incident.labels,
            BTreeMap::from([("tier".into(), "gold".into())]),
            "{}: the event's labels seed the incident's",
            db.backend
        );
        let stored = queue
            .store()
            .fault_event(&ids.event_id.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.fault_id.as_deref(), Some("a817ebcffcb2cf13"));
        assert_eq!(stored.resource_name.as_deref(), Some("checkout-1"));
        let stored_labels = match &stored.labels {
            serde_json::Value::String(text) => serde_json::from_str(text).unwrap(),
            other => other.clone(),
        };
        assert_eq!(stored_labels, serde_json::json!({"tier": "gold"}));

        let now = Utc::now();
        let taken = queue.take_pending("pre", 10, LEASE, now).await.unwrap();
        assert_eq!(taken.len(), 1, "{}", db.backend);
        assert!(
            queue
                .take_pending("other", 10, LEASE, now)
                .await
                .unwrap()
                .is_empty(),
            "pre-triage lease is exclusive"
        );
        let patch = QueuePatch {
            labels: BTreeMap::from([("team".into(), "payments".into())]),
            priority: Some(5),
            agent_profile: Some("codex".into()),
            ..Default::default()
        };
        let wrong_owner = queue
            .mark_queued(&taken[0], "other", &patch, now)
            .await
            .unwrap_err();
        assert!(
            matches!(wrong_owner, QueueError::LeaseLost { .. }),
            "{}: {wrong_owner}",
            db.backend
        );
        queue
            .mark_queued(&taken[0], "pre", &patch, now)
            .await
            .unwrap();

        let (claimed, mut lease) = queue.claim("w1", LEASE, now).await.unwrap().unwrap();
        assert_eq!(claimed.id, ids.incident_id);
        assert_eq!(claimed.status, JobStatus::Investigating);
        assert_eq!(claimed.priority, 5);
        assert_eq!(
            claimed.labels,
            BTreeMap::from([
                ("team".into(), "payments".into()),
                ("tier".into(), "gold".into())
            ]),
            "a patch adds to the event's labels"
        );
        assert_eq!(claimed.agent_profile.as_deref(), Some("codex"));
        assert_eq!(lease.attempt, 1);
        queue
            .heartbeat(&mut lease, LEASE * 2, now + chrono::Duration::seconds(10))
            .await
            .unwrap();
        let renewed = queue.get(ids.incident_id).await.unwrap();
        assert_eq!(renewed.lease_expires_at, Some(lease.expires_at));
        queue.complete(&lease, 0, Utc::now()).await.unwrap();
        let done = queue.get(ids.incident_id).await.unwrap();
        assert_eq!(done.status, JobStatus::Resolved, "{}", db.backend);
        assert_eq!(done.exit_code, Some(0));
        assert!(done.completed_at.is_some() && done.lease_owner.is_none());
        assert!(queue.claim("w1", LEASE, now).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn duplicate_faults_are_separate_incidents() {
    for db in backends().await {
        let queue = db.queue().await;
        let a = queue.ingest(&event("prod", 1)).await.unwrap();
        let b = queue.ingest(&event("prod", 1)).await.unwrap();
        assert_ne!(a.incident_id, b.incident_id);
        assert_eq!(
            queue.counts().await.unwrap().get(&JobStatus::Pending),
            Some(&2)
        );
    }
}

#[tokio::test]
async fn a_batch_is_stored_all_or_nothing() {
    for db in backends().await {
        let queue = db.queue().await;
        let mut events: Vec<_> = (0..2500)
            .map(|n| event(&format!("c{}", n % 7), n))
            .collect();
        let ids = queue.ingest_batch(&events).await.unwrap();
        assert_eq!(ids.len(), 2500);
        assert_eq!(
            queue.counts().await.unwrap().get(&JobStatus::Pending),
            Some(&2500)
        );
        // an empty cluster violates a CHECK constraint in the last chunk: nothing is stored
        events.truncate(1500);
        events[1499].cluster = String::new();
        assert!(queue.ingest_batch(&events).await.is_err(), "{}", db.backend);
        assert_eq!(
            queue.counts().await.unwrap().get(&JobStatus::Pending),
            Some(&2500),
            "{}",
            db.backend
        );
    }
}

#[tokio::test]
async fn claim_takes_highest_priority_then_oldest_and_one_per_cluster() {
    for db in backends().await {
        let queue = db.queue().await;
        let now = Utc::now();
        let low_a = queue.ingest(&event("a", 1)).await.unwrap();
        let high_a = queue.ingest(&event("a", 2)).await.unwrap();
        let old_b = queue.ingest(&event("b", 3)).await.unwrap();
        for incident in queue.take_pending("pre", 10, LEASE, now).await.unwrap() {
            let priority = if incident.id == high_a.incident_id {
                10
            } else {
                0
            };
            let patch = QueuePatch {
                priority: Some(priority),
                ..Default::default()
            };
            queue
                .mark_queued(&incident, "pre", &patch, now)
                .await
                .unwrap();
        }
        let (first, _) = queue.claim("w", LEASE, now).await.unwrap().unwrap();
        assert_eq!(first.id, high_a.incident_id, "{}", db.backend);
        let (second, lease_b) = queue.claim("w", LEASE, now).await.unwrap().unwrap();
        assert_eq!(
            second.id, old_b.incident_id,
            "cluster a is busy, so b goes next"
        );
        assert!(
            queue.claim("w", LEASE, now).await.unwrap().is_none(),
            "a and b are both busy"
        );
        queue.complete(&lease_b, 0, now).await.unwrap();
        assert!(
            queue.claim("w", LEASE, now).await.unwrap().is_none(),
            "a is still busy"
        );
        let _ = low_a;
    }
}

#[tokio::test]
async fn expired_leases_are_requeued_and_the_old_holder_is_fenced_off() {
    for db in backends().await {
        let queue = db.queue().await;
        let ids = queue.ingest(&event("prod", 1)).await.unwrap();
        queue_all_pending(&queue).await;
        let t0 = Utc::now();
        let (_, mut old) = queue.claim("w-old", LEASE, t0).await.unwrap().unwrap();

        let early = queue
            .sweep_expired(3, t0 + chrono::Duration::seconds(29))
            .await
            .unwrap();
        assert!(
            early.requeued.is_empty(),
            "{}: lease still valid",
            db.backend
        );
        let t1 = t0 + chrono::Duration::seconds(31);
        let swept = queue.sweep_expired(3, t1).await.unwrap();
        assert_eq!(swept.requeued, vec![ids.incident_id], "{}", db.backend);
        let requeued = queue.get(ids.incident_id).await.unwrap();
        assert_eq!(requeued.status, JobStatus::Queued);
        assert_eq!(requeued.attempts, 1);
        assert!(requeued.failure_reason.unwrap().contains("lease expired"));

        let (_, new) = queue.claim("w-new", LEASE, t1).await.unwrap().unwrap();
        assert_eq!(new.attempt, 2);
        let heartbeat = queue.heartbeat(&mut old, LEASE, t1).await.unwrap_err();
        assert!(
            matches!(heartbeat, QueueError::LeaseLost { .. }),
            "{}: {heartbeat}",
            db.backend
        );
        let complete = queue.complete(&old, 0, t1).await.unwrap_err();
        assert!(matches!(complete, QueueError::LeaseLost { .. }));
        // the same owner name on a later attempt is still fenced off by the attempt number
        let mut stale_same_owner = new.clone();
        stale_same_owner.attempt = 1;
        assert!(queue.complete(&stale_same_owner, 0, t1).await.is_err());
        assert_eq!(
            queue
                .get(ids.incident_id)
                .await
                .unwrap()
                .lease_owner
                .as_deref(),
            Some("w-new")
        );
        queue.complete(&new, 0, t1).await.unwrap();
        assert_eq!(
            queue.get(ids.incident_id).await.unwrap().status,
            JobStatus::Resolved
        );
    }
}

#[tokio::test]
async fn an_incident_that_keeps_losing_its_lease_fails_after_max_attempts() {
    for db in backends().await {
        let queue = db.queue().await;
        let ids = queue.ingest(&event("prod", 1)).await.unwrap();
        queue_all_pending(&queue).await;
        let mut now = Utc::now();
        for attempt in 1..=3 {
            let (_, lease) = queue.claim("w", LEASE, now).await.unwrap().unwrap();
            assert_eq!(lease.attempt, attempt);
            now += chrono::Duration::seconds(60);
            queue.sweep_expired(3, now).await.unwrap();
        }
        let failed = queue.get(ids.incident_id).await.unwrap();
        assert_eq!(failed.status, JobStatus::Failed, "{}", db.backend);
        assert!(
            failed
                .failure_reason
                .as_deref()
                .unwrap()
                .contains("giving up"),
            "{:?}",
            failed.failure_reason
        );
        assert!(queue.claim("w", LEASE, now).await.unwrap().is_none());
        // an operator retries it: attempts start again
        queue.retry(ids.incident_id, now).await.unwrap();
        let retried = queue.get(ids.incident_id).await.unwrap();
        assert_eq!((retried.status, retried.attempts), (JobStatus::Queued, 0));
    }
}

#[tokio::test]
async fn outcomes_map_to_statuses_and_illegal_transitions_are_errors() {
    for db in backends().await {
        let queue = db.queue().await;
        let now = Utc::now();
        let ids: Vec<_> = (0..4).map(|n| event(&format!("c{n}"), n)).collect();
        let ids = queue.ingest_batch(&ids).await.unwrap();

        // retrying a pending incident is not an edge of the status machine
        let err = queue.retry(ids[0].incident_id, now).await.unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::IllegalTransition {
                    from: JobStatus::Pending,
                    to: JobStatus::Queued,
                    ..
                }
            ),
            "{}: {err}",
            db.backend
        );
        let missing = queue.retry(uuid::Uuid::new_v4(), now).await.unwrap_err();
        assert!(matches!(missing, QueueError::NotFound(_)));

        queue_all_pending(&queue).await;
        let mut statuses = Vec::new();
        let outcomes = [
            JobOutcome::Done { exit_code: 0 },
            JobOutcome::AgentFailed {
                reason: "investigation.md is 12 bytes".into(),
                exit_code: Some(0),
            },
            JobOutcome::Abort {
                reason: "image missing".into(),
            },
            JobOutcome::RetryAfter {
                delay: Duration::from_secs(300),
                reason: "docker unavailable".into(),
            },
        ];
        for outcome in &outcomes {
            let (_, lease) = queue.claim("w", LEASE, now).await.unwrap().unwrap();
            let status = queue.finish(&lease, outcome, now).await.unwrap();
            let stored = queue.get(lease.incident_id).await.unwrap();
            assert_eq!(stored.status, status);
            statuses.push((lease.incident_id, status));
        }
        assert_eq!(
            statuses.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [
                JobStatus::Resolved,
                JobStatus::AgentFailed,
                JobStatus::Failed,
                JobStatus::Queued
            ]
        );
        // retry-later is not claimable before its time, and is after
        assert!(
            queue.claim("w", LEASE, now).await.unwrap().is_none(),
            "{}",
            db.backend
        );
        let later = now + chrono::Duration::seconds(301);
        assert_eq!(
            queue.claim("w", LEASE, later).await.unwrap().unwrap().0.id,
            statuses[3].0
        );

        let resolved = statuses[0].0;
        let err = queue.retry(resolved, now).await.unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::IllegalTransition {
                    from: JobStatus::Resolved,
                    ..
                }
            ),
            "{err}"
        );
        queue.retry(statuses[1].0, now).await.unwrap();
        assert_eq!(
            queue.get(statuses[1].0).await.unwrap().status,
            JobStatus::Queued
        );
    }
}

#[tokio::test]
async fn pre_triage_can_skip_or_defer() {
    for db in backends().await {
        let queue = db.queue().await;
        let now = Utc::now();
        let ids = queue
            .ingest_batch(&[event("a", 1), event("b", 2)])
            .await
            .unwrap();
        let taken = queue.take_pending("pre", 10, LEASE, now).await.unwrap();
        assert_eq!(taken.len(), 2);
        queue
            .mark_skipped(ids[0].incident_id, "pre", "duplicate within 10m", now)
            .await
            .unwrap();
        queue
            .defer_pending(ids[1].incident_id, "pre", Duration::from_secs(120), now)
            .await
            .unwrap();
        let skipped = queue.get(ids[0].incident_id).await.unwrap();
        assert_eq!(skipped.status, JobStatus::Skipped);
        assert_eq!(skipped.skip_reason.as_deref(), Some("duplicate within 10m"));
        assert!(
            queue
                .take_pending("pre", 10, LEASE, now)
                .await
                .unwrap()
                .is_empty(),
            "{}: deferred",
            db.backend
        );
        let later = now + chrono::Duration::seconds(121);
        let again = queue.take_pending("pre", 10, LEASE, later).await.unwrap();
        assert_eq!(
            again.iter().map(|i| i.id).collect::<Vec<_>>(),
            vec![ids[1].incident_id]
        );
        // an abandoned pre-triage lease is released by the sweeper
        let swept = queue
            .sweep_expired(3, later + chrono::Duration::seconds(31))
            .await
            .unwrap();
        assert_eq!(swept.released_pending, 1, "{}", db.backend);
        let err = queue
            .mark_skipped(ids[0].incident_id, "pre", "again", now)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::IllegalTransition {
                    from: JobStatus::Skipped,
                    ..
                }
            ),
            "{err}"
        );
    }
}

/// A round of pre-triage decisions is recorded in one transaction; an incident whose lease the
/// recorder does not hold is reported and left alone, the others are recorded.
#[tokio::test]
async fn a_round_of_pre_triage_decisions_is_recorded_together() {
    use nightcrier::queue::{Decided, Decision};
    for db in backends().await {
        let queue = db.queue().await;
        let now = Utc::now();
        let ids = queue
            .ingest_batch(&[event("a", 1), event("b", 2), event("c", 3)])
            .await
            .unwrap();
        let mut taken = queue.take_pending("pre", 10, LEASE, now).await.unwrap();
        assert_eq!(taken.len(), 3);
        // a fourth incident, taken by another pre-triage
        let other = queue.ingest_batch(&[event("d", 4)]).await.unwrap();
        let mut theirs = queue.take_pending("other", 10, LEASE, now).await.unwrap();
        assert_eq!(theirs.len(), 1);
        let mut patch = QueuePatch::default();
        patch.labels.insert("team".into(), "payments".into());
        patch.priority = Some(7);
        let run = |outcome: &str| nightcrier::store::NewPluginRun {
            incident_id: None,
            stage: "pre_triage",
            plugin: "dedup".into(),
            plugin_version: Some("0.1.0".into()),
            outcome: outcome.into(),
            duration: Duration::from_millis(2),
            error: None,
        };
        let mut decided = vec![
            Decided {
                incident: taken.remove(0),
                decision: Decision::Proceed(patch),
                runs: vec![run("proceed")],
            },
            Decided {
                incident: taken.remove(0),
                decision: Decision::Skip("noise".into()),
                runs: Vec::new(),
            },
            Decided {
                incident: taken.remove(0),
                decision: Decision::Delay(Duration::from_secs(300)),
                runs: Vec::new(),
            },
            Decided {
                incident: theirs.remove(0),
                decision: Decision::Skip("not mine".into()),
                runs: vec![run("skip")],
            },
        ];
        for one in &mut decided {
            for run in &mut one.runs {
                run.incident_id = Some(one.incident.id);
            }
        }
        let outcomes = queue.record_decisions("pre", &decided, now).await;
        assert_eq!(outcomes.len(), 4);
        assert!(outcomes[..3].iter().all(Result::is_ok), "{outcomes:?}");
        assert!(
            matches!(outcomes[3], Err(QueueError::LeaseLost { .. })),
            "{}: {:?}",
            db.backend,
            outcomes[3]
        );
        let queued = queue.get(ids[0].incident_id).await.unwrap();
        assert_eq!(queued.status, JobStatus::Queued, "{}", db.backend);
        assert_eq!(queued.priority, 7);
        assert_eq!(
            queued.labels.get("team").map(String::as_str),
            Some("payments")
        );
        let skipped = queue.get(ids[1].incident_id).await.unwrap();
        assert_eq!(skipped.status, JobStatus::Skipped);
        assert_eq!(skipped.skip_reason.as_deref(), Some("noise"));
        let deferred = queue.get(ids[2].incident_id).await.unwrap();
        assert_eq!(deferred.status, JobStatus::Pending);
        assert!(deferred.lease_owner.is_none());
        // the other pre-triage's incident is untouched and still leased to it
        // the plugin calls are recorded with the decisions, the refused one's too
        let store = queue.store();
        let runs = store.plugin_runs(ids[0].incident_id).await.unwrap();
        assert_eq!(runs.len(), 1, "{}", db.backend);
        assert_eq!(runs[0].outcome, "proceed");
        assert!(
            store
                .plugin_runs(ids[1].incident_id)
                .await
                .unwrap()
                .is_empty()
        );
        let theirs_runs = store.plugin_runs(other[0].incident_id).await.unwrap();
        assert_eq!(theirs_runs.len(), 1);
        assert_eq!(theirs_runs[0].outcome, "skip");
        let untouched = queue.get(other[0].incident_id).await.unwrap();
        assert_eq!(untouched.status, JobStatus::Pending);
        assert_eq!(untouched.lease_owner.as_deref(), Some("other"));
        assert!(untouched.skip_reason.is_none());
    }
}
