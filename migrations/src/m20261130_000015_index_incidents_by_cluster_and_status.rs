//! Lets the incident list filtered by cluster *and* an ended status (an on-call engineer's "what
//! was resolved on this cluster this week") answer from one index seek, even for a cluster with no
//! incident in that status, where `idx_incidents_cluster (cluster, created_at)` had to read every
//! incident of the cluster in the time range to find none:
//!
//! - `idx_incidents_cluster_ended (cluster, status, created_at, id) WHERE status IN (ended)`,
//!   ordered like the list (newest first, then id), so no sort step either. Partial like
//!   `idx_incidents_ended`, so that claims (queued → investigating) do not write it.
//!
//! SQLite uses a partial index only when the query's `WHERE` repeats the index's condition
//! word for word; the incident list adds that term (`queue::ENDED_STATUSES_SQL`) whenever it
//! filters on an ended status. Postgres proves the implication itself.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE INDEX idx_incidents_cluster_ended ON incidents (cluster, status, created_at, id)
                WHERE status IN ('resolved', 'agent_failed', 'failed', 'skipped')
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP INDEX idx_incidents_cluster_ended").await
    }
}
