//! Creates `agent_executions`: one row per agent container run of an incident.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE TABLE agent_executions (
                id            TEXT PRIMARY KEY,
                incident_id   TEXT NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
                attempt       INTEGER NOT NULL,
                agent_profile TEXT,
                image         TEXT,
                container_id  TEXT,
                started_at    {ts} NOT NULL,
                completed_at  {ts},
                exit_code     INTEGER,
                error_message TEXT,
                log_paths     {json}
            );
            CREATE INDEX idx_agent_executions_incident_id ON agent_executions (incident_id);
            CREATE INDEX idx_agent_executions_started_at ON agent_executions (started_at)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE agent_executions").await
    }
}
