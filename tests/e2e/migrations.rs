//! Migrations go up, down and up again on both backends, and the schema enforces the domain
//! invariants by itself.

use crate::support::{backends, event};
use chrono::Utc;
use sea_orm::{ConnectionTrait, Statement};

const TABLES: [&str; 11] = [
    "circuit_breakers",
    "fault_events",
    "incidents",
    "agent_executions",
    "triage_reports",
    "plugin_runs",
    "rejected_events",
    "plugin_kv",
    "alerts",
    "alert_deliveries",
    "ui_sessions",
];

async fn table_exists(store: &nightcrier::Store, table: &str) -> bool {
    let db = store.connection();
    let sql = match db.get_database_backend() {
        sea_orm::DbBackend::Postgres => {
            "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = 'public' AND table_name = $1"
        }
        _ => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1",
    };
    let row = db
        .query_one_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            sql,
            [table.into()],
        ))
        .await
        .unwrap()
        .unwrap();
    row.try_get::<i64>("", "n").unwrap() == 1
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again() {
    for db in backends().await {
        let store = db.store().await;
        assert!(store.ensure_migrated().await.is_err(), "{}", db.backend);
        store.migrate_up().await.unwrap();
        for table in TABLES {
            assert!(
                table_exists(&store, table).await,
                "{}: {table} missing after up",
                db.backend
            );
        }
        store.migrate_down(None).await.unwrap();
        for table in TABLES {
            assert!(
                !table_exists(&store, table).await,
                "{}: {table} left after down",
                db.backend
            );
        }
        store.migrate_up().await.unwrap();
        store.ensure_migrated().await.unwrap();
        assert!(table_exists(&store, "incidents").await);
    }
}

#[tokio::test]
async fn schema_enforces_one_investigating_incident_per_cluster() {
    for db in backends().await {
        let queue = db.queue().await;
        let ids = queue
            .ingest_batch(&[event("c1", 1), event("c1", 2)])
            .await
            .unwrap();
        let conn = queue.store().connection();
        let backend = conn.get_database_backend();
        let set = "UPDATE incidents SET status = 'investigating', lease_owner = 'w', lease_expires_at = $2 WHERE id = $1";
        let first = Statement::from_sql_and_values(
            backend,
            set,
            [ids[0].incident_id.to_string().into(), Utc::now().into()],
        );
        conn.execute_raw(first).await.unwrap();
        let second = Statement::from_sql_and_values(
            backend,
            set,
            [ids[1].incident_id.to_string().into(), Utc::now().into()],
        );
        let err = conn.execute_raw(second).await.unwrap_err();
        assert!(
            matches!(
                err.sql_err(),
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
            ),
            "{}: {err}",
            db.backend
        );
    }
}

#[tokio::test]
async fn schema_enforces_one_incident_per_event_and_known_statuses() {
    for db in backends().await {
        let queue = db.queue().await;
        let ids = queue.ingest(&event("c1", 1)).await.unwrap();
        let conn = queue.store().connection();
        let backend = conn.get_database_backend();
        let second_incident = Statement::from_sql_and_values(
            backend,
            "INSERT INTO incidents (id, fault_event_id, cluster, status, labels, annotations, created_at, updated_at) \
             VALUES ($1, $2, 'c1', 'pending', '{}', '{}', $3, $3)",
            [
                uuid::Uuid::new_v4().to_string().into(),
                ids.event_id.to_string().into(),
                Utc::now().into(),
            ],
        );
        assert!(
            conn.execute_raw(second_incident).await.is_err(),
            "{}",
            db.backend
        );
        let bogus = Statement::from_sql_and_values(
            backend,
            "UPDATE incidents SET status = 'running' WHERE id = $1",
            [ids.incident_id.to_string().into()],
        );
        assert!(conn.execute_raw(bogus).await.is_err(), "{}", db.backend);
        let leaseless = Statement::from_sql_and_values(
            backend,
            "UPDATE incidents SET status = 'investigating' WHERE id = $1",
            [ids.incident_id.to_string().into()],
        );
        assert!(conn.execute_raw(leaseless).await.is_err(), "{}", db.backend);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_migrate_once_and_readers_never_race_them() {
    for db in backends().await {
        let (a, b, reader) = (db.store().await, db.store().await, db.store().await);
        let reads = async {
            // read-only status checks while migrations run must never fail or create tables
            for _ in 0..20 {
                let _ = reader.ensure_migrated().await;
                reader.migration_status().await.unwrap();
            }
        };
        let (first, second, ()) = tokio::join!(a.migrate_up(), b.migrate_up(), reads);
        let (first, second) = (first.unwrap(), second.unwrap());
        let total = reader.migration_status().await.unwrap().len();
        assert!(
            total > TABLES.len(),
            "one migration per table, and more since"
        );
        assert_eq!(
            first + second,
            total,
            "{}: each migration applied once",
            db.backend
        );
        a.ensure_migrated().await.unwrap();
    }
}

#[tokio::test]
async fn a_schema_newer_than_this_build_is_refused() {
    for db in backends().await {
        let store = db.store().await;
        store.migrate_up().await.unwrap();
        let conn = store.connection();
        conn.execute_raw(Statement::from_sql_and_values(
            conn.get_database_backend(),
            "INSERT INTO nightcrier_migrations (version, applied_at) VALUES ($1, 0)",
            ["m20991231_000001_from_the_future".into()],
        ))
        .await
        .unwrap();
        let error = store.ensure_migrated().await.unwrap_err().to_string();
        assert!(
            error.contains("does not know") && error.contains("upgrade nightcrier"),
            "{}: {error}",
            db.backend
        );
    }
}
