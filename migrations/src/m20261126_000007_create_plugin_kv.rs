//! Creates `plugin_kv`: the key-value store each plugin sees, scoped by plugin name.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(
            manager,
            r#"
            CREATE TABLE plugin_kv (
                plugin     TEXT NOT NULL CHECK (plugin <> ''),
                key        TEXT NOT NULL,
                value      {bytes} NOT NULL,
                expires_at {ts},
                updated_at {ts} NOT NULL,
                PRIMARY KEY (plugin, key)
            );
            CREATE INDEX idx_plugin_kv_expires_at ON plugin_kv (expires_at)
            "#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::sql(manager, "DROP TABLE plugin_kv").await
    }
}
