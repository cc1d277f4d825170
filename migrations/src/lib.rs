//! Schema migrations of the nightcrier store, for SQLite and Postgres.
//!
//! Migrations are append-only: a file that has shipped is never edited or reordered. Each one is a
//! single logical change with both `up` and `down`. They never import entity types; the SQL is
//! written out with a few dialect placeholders (see [`sql`]) so that the same text means the same
//! thing on both backends.

pub use sea_orm_migration::migrator::MigrationStatus;
pub use sea_orm_migration::prelude::*;

mod m20261126_000001_create_fault_events;
mod m20261126_000002_create_incidents;
mod m20261126_000003_create_agent_executions;
mod m20261126_000004_create_triage_reports;
mod m20261126_000005_create_plugin_runs;
mod m20261126_000006_create_rejected_events;
mod m20261126_000007_create_plugin_kv;
mod m20261126_000008_create_circuit_breakers;
mod m20261127_000009_add_fault_event_labels;
mod m20261129_000010_index_incidents_for_listing;
mod m20261129_000011_create_replicas_and_feed_leases;
mod m20261129_000012_add_report_storage;
mod m20261130_000013_create_alerts;
mod m20261130_000014_add_queue_wakeups_and_fleet_cap;
mod m20261130_000015_index_incidents_by_cluster_and_status;
mod m20261130_000016_create_ui_sessions;
mod m20261130_000017_add_replica_fleet_cap;

/// The ordered list of nightcrier migrations.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_create_fault_events::Migration),
            Box::new(m20261126_000002_create_incidents::Migration),
            Box::new(m20261126_000003_create_agent_executions::Migration),
            Box::new(m20261126_000004_create_triage_reports::Migration),
            Box::new(m20261126_000005_create_plugin_runs::Migration),
            Box::new(m20261126_000006_create_rejected_events::Migration),
            Box::new(m20261126_000007_create_plugin_kv::Migration),
            Box::new(m20261126_000008_create_circuit_breakers::Migration),
            Box::new(m20261127_000009_add_fault_event_labels::Migration),
            Box::new(m20261129_000010_index_incidents_for_listing::Migration),
            Box::new(m20261129_000011_create_replicas_and_feed_leases::Migration),
            Box::new(m20261129_000012_add_report_storage::Migration),
            Box::new(m20261130_000013_create_alerts::Migration),
            Box::new(m20261130_000014_add_queue_wakeups_and_fleet_cap::Migration),
            Box::new(m20261130_000015_index_incidents_by_cluster_and_status::Migration),
            Box::new(m20261130_000016_create_ui_sessions::Migration),
            Box::new(m20261130_000017_add_replica_fleet_cap::Migration),
        ]
    }

    fn migration_table_name() -> DynIden {
        "nightcrier_migrations".into_iden()
    }
}

/// Runs each `;`-separated statement of `template` after replacing the dialect placeholders:
/// `{ts}` (a UTC timestamp), `{json}`, `{bytes}` and `{bigint}`.
///
/// SQLite stores timestamps as RFC 3339 text in UTC, which sorts and compares correctly as text.
pub(crate) async fn sql(manager: &SchemaManager<'_>, template: &str) -> Result<(), DbErr> {
    let backend = manager.get_database_backend();
    let text = dialect(backend, template);
    for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        manager
            .get_connection()
            .execute_unprepared(statement)
            .await?;
    }
    Ok(())
}

fn dialect(backend: sea_orm::DbBackend, template: &str) -> String {
    let (ts, json, bytes, bigint) = match backend {
        sea_orm::DbBackend::Postgres => ("TIMESTAMPTZ", "JSONB", "BYTEA", "BIGINT"),
        _ => ("TEXT", "TEXT", "BLOB", "INTEGER"),
    };
    template
        .replace("{ts}", ts)
        .replace("{json}", json)
        .replace("{bytes}", bytes)
        .replace("{bigint}", bigint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        let pg = dialect(
            sea_orm::DbBackend::Postgres,
            "a {ts} b {json} c {bytes} d {bigint}",
        );
        assert_eq!(pg, "a TIMESTAMPTZ b JSONB c BYTEA d BIGINT");
        let lite = dialect(
            sea_orm::DbBackend::Sqlite,
            "a {ts} b {json} c {bytes} d {bigint}",
        );
        assert_eq!(lite, "a TEXT b TEXT c BLOB d INTEGER");
    }

    #[test]
    fn migration_names_are_ordered_and_unique() {
        let names: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }
}
