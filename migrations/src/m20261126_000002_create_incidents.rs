//! Creates `incidents`, which is also the job queue, with the one-agent-per-cluster index.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Invariant: 1 fault event = 1 incident (`fault_event_id` is UNIQUE).
        // Invariant: at most one `investigating` incident per cluster (partial unique index), so
        // it holds across processes and replicas, not only inside one.
        // The queue's hot indexes are partial: they hold only the rows a claim or a pre-triage
        // scan can take, so the bulk of finished incidents never costs them a write.
        // An investigating incident always has a lease, and only pending (pre-triage) and
        // investigating incidents may hold one.
        crate::sql(
            manager,
            r#"
            CREATE TABLE incidents (
                id               TEXT PRIMARY KEY,
                fault_event_id   TEXT NOT NULL UNIQUE REFERENCES fault_events (id) ON DELETE CASCADE,
                cluster          TEXT NOT NULL CHECK (cluster <> ''),
                status           TEXT NOT NULL CHECK (status IN
                                   ('pending', 'queued', 'skipped', 'investigating',
                                    'resolved', 'agent_failed', 'failed')),
                priority         INTEGER NOT NULL DEFAULT 0,
                labels           {json} NOT NULL,
                annotations      {json} NOT NULL,
                agent_profile    TEXT,
                created_at       {ts} NOT NULL,
                updated_at       {ts} NOT NULL,
                queued_at        {ts},
                started_at       {ts},
                completed_at     {ts},
                run_after        {ts},
                attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
                lease_owner      TEXT,
                lease_expires_at {ts},
                skip_reason      TEXT,
                failure_reason   TEXT,
                exit_code        INTEGER,
                CHECK (status <> 'investigating'
                       OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
                CHECK (status IN ('pending', 'investigating') OR lease_owner IS NULL)
            );
            CREATE UNIQUE INDEX uq_incidents_one_investigating_per_cluster
                ON incidents (cluster) WHERE status = 'investigating';
            CREATE INDEX idx_incidents_claim ON incidents (priority DESC, queued_at, id)
                WHERE status = 'queued';
            CREATE INDEX idx_incidents_pending ON incidents (created_at, id)
                WHERE status = 'pending';
            CREATE INDEX idx_incidents_lease ON incidents (lease_expires_at)
                WHERE lease_expires_at IS NOT NULL;
            CREATE INDEX idx_incidents_cluster ON incidents (cluster, created_at);
            CREATE INDEX idx_incidents_created_at ON incidents (created_at)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE incidents").await
    }
}
