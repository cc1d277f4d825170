//! Adds `fault_events.labels`: the labels a source plugin decoded with the event (a JSON object of
//! strings). Existing rows get `{}`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            "ALTER TABLE fault_events ADD COLUMN labels {json} NOT NULL DEFAULT '{}'",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "ALTER TABLE fault_events DROP COLUMN labels").await
    }
}
