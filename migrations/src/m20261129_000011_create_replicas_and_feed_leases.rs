//! Coordination between `serve` replicas on one Postgres (SQLite stays single-process):
//!
//! - `nightcrier_replicas`: each running replica's id, the random token of its process, where it
//!   runs and its last heartbeat. A second process claiming a live id is refused.
//! - `feed_leases`: which replica holds each MCP or poll feed, with a fencing token that grows
//!   with every acquisition and an expiry renewed by heartbeat. A feed runs only on its holder.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE TABLE nightcrier_replicas (
                id           TEXT PRIMARY KEY NOT NULL,
                process      TEXT NOT NULL,
                host         TEXT NOT NULL,
                pid          {bigint} NOT NULL,
                started_at   {ts} NOT NULL,
                heartbeat_at {ts} NOT NULL
            );
            CREATE TABLE feed_leases (
                feed       TEXT PRIMARY KEY NOT NULL,
                owner      TEXT,
                token      {bigint} NOT NULL,
                expires_at {ts} NOT NULL
            );
            CREATE INDEX idx_feed_leases_owner ON feed_leases (owner)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            "DROP TABLE feed_leases; DROP TABLE nightcrier_replicas",
        )
        .await
    }
}
