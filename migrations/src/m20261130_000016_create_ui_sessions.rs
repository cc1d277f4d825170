//! Web UI logins (`ui_sessions`), kept in the database so that every replica behind a load
//! balancer knows them and a restart does not log everyone out. A row is keyed by the SHA-256 of
//! the session id (the id itself is only in the browser's `HttpOnly` cookie), says what the
//! login may do, and when it ends; logging out deletes it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE TABLE ui_sessions (
                id_sha256   TEXT PRIMARY KEY NOT NULL,
                grant_level TEXT NOT NULL CHECK (grant_level IN ('read', 'admin')),
                created_at  {ts} NOT NULL,
                expires_at  {ts} NOT NULL
            );
            CREATE INDEX idx_ui_sessions_expires_at ON ui_sessions (expires_at)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE ui_sessions").await
    }
}
