//! Each replica records its `[workers] fleet_max_agents` in `nightcrier_replicas`, so replicas
//! can tell when they do not agree on the fleet-wide agent cap (a replica without the key claims
//! without a slot and is not counted). NULL: no cap configured.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            "ALTER TABLE nightcrier_replicas ADD COLUMN fleet_max_agents INTEGER",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            "ALTER TABLE nightcrier_replicas DROP COLUMN fleet_max_agents",
        )
        .await
    }
}
