//! Adds to `triage_reports` where the report's objects are kept and the state of their upload:
//! `store_uri` (the report's folder in the report store, e.g. `s3://bucket/prefix/<incident-id>/`),
//! `uploaded_at` (null while the upload is pending), `upload_attempts`, `next_upload_at` and
//! `upload_error` (the last failure, for operators). Existing rows have no `store_uri` and are
//! never uploaded. A partial index finds the pending uploads.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            ALTER TABLE triage_reports ADD COLUMN store_uri TEXT;
            ALTER TABLE triage_reports ADD COLUMN uploaded_at {ts};
            ALTER TABLE triage_reports ADD COLUMN upload_attempts INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE triage_reports ADD COLUMN next_upload_at {ts};
            ALTER TABLE triage_reports ADD COLUMN upload_error TEXT;
            CREATE INDEX idx_triage_reports_upload_pending ON triage_reports (next_upload_at)
                WHERE store_uri IS NOT NULL AND uploaded_at IS NULL
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            DROP INDEX idx_triage_reports_upload_pending;
            ALTER TABLE triage_reports DROP COLUMN upload_error;
            ALTER TABLE triage_reports DROP COLUMN next_upload_at;
            ALTER TABLE triage_reports DROP COLUMN upload_attempts;
            ALTER TABLE triage_reports DROP COLUMN uploaded_at;
            ALTER TABLE triage_reports DROP COLUMN store_uri
            "#,
        )
        .await
    }
}
