//! Workspace retention: ended incidents' folders go after the retention period; open incidents'
//! folders and folders that are not incident workspaces stay.

use std::time::Duration;

use chrono::Utc;
use nightcrier::retention::prune_workspaces;
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
