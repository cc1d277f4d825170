//! Creates `rejected_events`, the dead letter table for input that could not become an event.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The payload is kept as bytes: malformed input may not even be UTF-8, and it must be
        // kept exactly as received.
        crate::sql(
            manager,
            r#"
            CREATE TABLE rejected_events (
                id          TEXT PRIMARY KEY,
                source      TEXT NOT NULL CHECK (source <> ''),
                cluster     TEXT,
                raw_payload {bytes} NOT NULL,
                reason      TEXT NOT NULL CHECK (reason <> ''),
                received_at {ts} NOT NULL
            );
            CREATE INDEX idx_rejected_events_received_at ON rejected_events (received_at)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE rejected_events").await
    }
}
