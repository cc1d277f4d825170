//! Creates `fault_events`: every fault event as received, with its raw payload.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // `fault_id` is the upstream id and is deliberately not unique: a re-emitted fault is a
        // new event (1 fault event = 1 incident); deduplication is a plugin's policy.
        crate::sql(
            manager,
            r#"
            CREATE TABLE fault_events (
                id                   TEXT PRIMARY KEY,
                fault_id             TEXT,
                subscription_id      TEXT,
                source               TEXT NOT NULL CHECK (source <> ''),
                cluster              TEXT NOT NULL CHECK (cluster <> ''),
                received_at          {ts} NOT NULL,
                resource_api_version TEXT,
                resource_kind        TEXT,
                resource_name        TEXT,
                resource_namespace   TEXT,
                resource_uid         TEXT,
                fault_type           TEXT NOT NULL CHECK (fault_type <> ''),
                severity             TEXT NOT NULL,
                context              TEXT NOT NULL,
                timestamp            TEXT,
                payload              {json} NOT NULL
            );
            CREATE INDEX idx_fault_events_fault_id ON fault_events (fault_id);
            CREATE INDEX idx_fault_events_cluster ON fault_events (cluster);
            CREATE INDEX idx_fault_events_received_at ON fault_events (received_at)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE fault_events").await
    }
}
