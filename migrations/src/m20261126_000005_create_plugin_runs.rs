//! Creates `plugin_runs`: the recorded outcome of every plugin call made for an incident.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE TABLE plugin_runs (
                id             TEXT PRIMARY KEY,
                incident_id    TEXT REFERENCES incidents (id) ON DELETE CASCADE,
                stage          TEXT NOT NULL CHECK (stage IN ('source', 'pre_triage', 'post_triage')),
                plugin         TEXT NOT NULL CHECK (plugin <> ''),
                plugin_version TEXT,
                outcome        TEXT NOT NULL CHECK (outcome <> ''),
                duration_us    {bigint} NOT NULL CHECK (duration_us >= 0),
                error          TEXT,
                created_at     {ts} NOT NULL
            );
            CREATE INDEX idx_plugin_runs_incident_id ON plugin_runs (incident_id);
            CREATE INDEX idx_plugin_runs_plugin ON plugin_runs (plugin, created_at)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE plugin_runs").await
    }
}
