//! Creates `circuit_breakers`: the persisted state of each agent-failure circuit breaker, so a
//! restart does not reset it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE TABLE circuit_breakers (
                scope      TEXT PRIMARY KEY CHECK (scope <> ''),
                state      {json} NOT NULL,
                updated_at {ts} NOT NULL
            )
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE circuit_breakers").await
    }
}
