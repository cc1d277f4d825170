//! Lets the incident list answer in milliseconds at a million incidents, for the API and the UI:
//! the fault type and severity are copied onto `incidents` (they never change after ingest), and
//! each filter gets an index ordered like the list (newest first, then id):
//!
//! - `idx_incidents_list (created_at, id)` — the unfiltered list and the cursor; replaces
//!   `idx_incidents_created_at (created_at)`.
//! - `idx_incidents_fault_type`, `idx_incidents_severity` — written once, at ingest.
//! - `idx_incidents_ended (status, created_at) WHERE status IN (ended)` — a status filter on an
//!   ended incident. Partial, so that claims (queued → investigating) do not write it; the
//!   pending, queued and investigating filters use the queue's partial indexes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            ALTER TABLE incidents ADD COLUMN fault_type TEXT;
            ALTER TABLE incidents ADD COLUMN severity TEXT;
            UPDATE incidents SET
                fault_type = (SELECT fault_type FROM fault_events WHERE fault_events.id = incidents.fault_event_id),
                severity = (SELECT severity FROM fault_events WHERE fault_events.id = incidents.fault_event_id);
            DROP INDEX idx_incidents_created_at;
            CREATE INDEX idx_incidents_list ON incidents (created_at, id);
            CREATE INDEX idx_incidents_fault_type ON incidents (fault_type, created_at);
            CREATE INDEX idx_incidents_severity ON incidents (severity, created_at);
            CREATE INDEX idx_incidents_ended ON incidents (status, created_at)
                WHERE status IN ('resolved', 'agent_failed', 'failed', 'skipped')
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            DROP INDEX idx_incidents_ended;
            DROP INDEX idx_incidents_severity;
            DROP INDEX idx_incidents_fault_type;
            DROP INDEX idx_incidents_list;
            CREATE INDEX idx_incidents_created_at ON incidents (created_at);
            ALTER TABLE incidents DROP COLUMN severity;
            ALTER TABLE incidents DROP COLUMN fault_type
            "#,
        )
        .await
    }
}
