//! Creates `triage_reports`: the report an agent produced for an incident, in its forms.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE TABLE triage_reports (
                id              TEXT PRIMARY KEY,
                incident_id     TEXT NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
                execution_id    TEXT REFERENCES agent_executions (id) ON DELETE SET NULL,
                generated_at    {ts} NOT NULL,
                report_markdown TEXT NOT NULL,
                report_html     TEXT,
                structured      {json},
                summary         TEXT,
                artifact_uri    TEXT,
                storage_type    TEXT NOT NULL CHECK (storage_type <> '')
            );
            CREATE INDEX idx_triage_reports_incident_id ON triage_reports (incident_id);
            CREATE INDEX idx_triage_reports_generated_at ON triage_reports (generated_at)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE triage_reports").await
    }
}
