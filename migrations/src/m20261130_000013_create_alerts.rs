//! Operational alerts (`alerts`): the circuit breaker's degraded and recovered alerts and a
//! cluster's feed down or back up, one row each, newest found by `(raised_at, id)`; and
//! `alert_deliveries`: what became of each alert at each post-triage plugin that handles
//! alerts (delivered or failed, after how many attempts, the last error). A feed alert is also
//! found by `(cluster, kind, raised_at)`, so a replica that takes a feed over knows whether the
//! last word on it was "down".

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE TABLE alerts (
                id         TEXT PRIMARY KEY NOT NULL,
                kind       TEXT NOT NULL,
                severity   TEXT NOT NULL,
                cluster    TEXT,
                summary    TEXT NOT NULL,
                detail     TEXT NOT NULL,
                fields     {json} NOT NULL,
                raised_by  TEXT NOT NULL,
                raised_at  {ts} NOT NULL
            );
            CREATE INDEX idx_alerts_raised_at ON alerts (raised_at, id);
            CREATE INDEX idx_alerts_cluster_kind ON alerts (cluster, kind, raised_at);
            CREATE TABLE alert_deliveries (
                alert_id       TEXT NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
                plugin         TEXT NOT NULL,
                plugin_version TEXT,
                outcome        TEXT NOT NULL CHECK (outcome IN ('delivered', 'failed')),
                attempts       INTEGER NOT NULL,
                error          TEXT,
                finished_at    {ts} NOT NULL,
                PRIMARY KEY (alert_id, plugin)
            )
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE alert_deliveries; DROP TABLE alerts").await
    }
}
