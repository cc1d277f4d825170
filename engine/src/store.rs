//! The database: connecting to SQLite or Postgres, running migrations, and the non-queue tables.
//!
//! The hot path of the queue is raw SQL in `queue/sql.rs`; this module owns the connection, the
//! schema checks every command makes before touching data, and plain CRUD through SeaORM.

mod alerts;
pub mod entity;
mod records;
pub(crate) mod text;
mod ui_sessions;

pub use alerts::StoredAlert;
pub(crate) use records::plugin_run_row;
pub use records::{KvChange, KvTotals, NewExecution, NewPluginRun, NewReport};

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use nightcrier_migrations::{MigrationStatus, Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, Database, DatabaseConnection, DbBackend,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

/// Key of the Postgres advisory lock held while migrating ("nightcrr" in ASCII).
const MIGRATION_LOCK: i64 = 0x6e69_6768_7463_7272;

/// The database nightcrier uses when none is given: an SQLite file next to the process.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://nightcrier.db";

/// Errors of the store boundary. Messages never contain a database password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is not one nightcrier can use.
    #[error("invalid database url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL with any password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database could not be reached or opened.
    #[error("cannot connect to database `{url}`: {source}")]
    Connect {
        /// The URL with any password masked.
        url: String,
        /// The driver's error.
        source: sea_orm::DbErr,
    },
    /// The schema is older than this build of nightcrier.
    #[error(
        "database `{url}` has {count} pending migration(s) (first: {first}); run `nightcrier migrate up`"
    )]
    PendingMigrations {
        /// The URL with any password masked.
        url: String,
        /// How many migrations are not applied.
        count: usize,
        /// The name of the first one.
        first: String,
    },
    /// The schema is newer than this build of nightcrier.
    #[error(
        "database `{url}` has a migration this nightcrier does not know ({name}); upgrade nightcrier"
    )]
    UnknownMigration {
        /// The URL with any password masked.
        url: String,
        /// The unknown migration.
        name: String,
    },
    /// A row holds a value nightcrier cannot interpret.
    #[error("corrupt row in `{table}` (id {id}): {reason}")]
    CorruptRow {
        /// The table.
        table: &'static str,
        /// The row's primary key.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other database error.
    #[error(transparent)]
    Db(#[from] sea_orm::DbErr),
}

/// Whether `error` is about reaching the database (connection lost or refused, pool timed out,
/// server shutting down or restarting, disk full, locked) rather than about what was written:
/// such a write is worth trying again unchanged. Data errors (a constraint, a bad value) are not.
pub fn is_transient(error: &sea_orm::DbErr) -> bool {
    use sea_orm::{DbErr, RuntimeErr};
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(error)) | DbErr::Query(RuntimeErr::SqlxError(error)) => {
            sqlx_transient(error)
        }
        _ => false,
    }
}

fn sqlx_transient(error: &sea_orm::sqlx::Error) -> bool {
    use sea_orm::sqlx::Error;
    match error {
        Error::Io(_)
        | Error::Tls(_)
        | Error::Protocol(_)
        | Error::PoolTimedOut
        | Error::PoolClosed
        | Error::WorkerCrashed
        | Error::BeginFailed => true,
        Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            if let Ok(sqlite) = code.parse::<i32>() {
                // SQLITE_BUSY, LOCKED, IOERR, FULL, CANTOPEN, PROTOCOL (extended codes keep the
                // primary code in their low byte)
                return matches!(sqlite & 0xff, 5 | 6 | 10 | 13 | 14 | 15);
            }
            // Postgres classes: 08 connection, 53 insufficient resources (disk full), 57
            // operator intervention (shutdown), 58 system error; serialisation and deadlock.
            matches!(code.get(..2), Some("08" | "53" | "57" | "58"))
                || matches!(code.as_ref(), "40001" | "40P01" | "55P03")
        }
        _ => false,
    }
}

/// How to open the database.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://…`.
    pub url: String,
    /// Connection pool size. SQLite uses 1 unless set: it has a single writer, and one
    /// connection per process avoids busy-waiting between connections of the same process.
    pub max_connections: Option<u32>,
    /// How long SQLite waits for another process's write lock before failing.
    pub busy_timeout: Duration,
    /// SQLite: commit ingested events with `synchronous=FULL`, so an acknowledged event
    /// survives power loss. Queue-state changes always commit with `NORMAL` (they survive a
    /// crash of nightcrier; after a power loss the last ones may roll back, which the leases
    /// and fencing already handle). `false` makes ingest `NORMAL` too.
    pub sqlite_synchronous_full: bool,
}

impl StoreConfig {
    /// A config for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: None,
            busy_timeout: Duration::from_secs(10),
            sqlite_synchronous_full: true,
        }
    }
}

/// A connected database.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Where events and dead letters are committed, durably: on SQLite a second connection
    /// with `synchronous=FULL`, on Postgres a pool with the server's `synchronous_commit`.
    ingest_db: DatabaseConnection,
    url_for_display: String,
}

/// The status of one migration, for `nightcrier migrate status`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MigrationState {
    /// The migration's name.
    pub name: String,
    /// Whether it is applied.
    pub applied: bool,
}

impl Store {
    /// Opens the database at `config.url`, creating an SQLite file (and its folder) if needed.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let url_for_display = redact_url(&config.url);
        let backend = backend_of(&config.url).ok_or_else(|| StoreError::InvalidUrl {
            url: url_for_display.clone(),
            reason: "expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DB".into(),
        })?;
        let busy_timeout = config.busy_timeout;
        let connect = |options: ConnectOptions| {
            let url = url_for_display.clone();
            async move {
                // Two processes opening a new SQLite file at once (`serve` and a command run
                // beside it) both turn on WAL, which takes the file's exclusive lock; SQLite
                // answers one of them "database is locked" at once rather than wait (its busy
                // handler would deadlock there). That one tries again, up to `busy_timeout`.
                let deadline = tokio::time::Instant::now() + busy_timeout;
                loop {
                    match Database::connect(options.clone()).await {
                        Ok(db) => return Ok(db),
                        Err(source)
                            if backend == DbBackend::Sqlite
                                && source.to_string().contains("database is locked")
                                && tokio::time::Instant::now() < deadline =>
                        {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(source) => return Err(StoreError::Connect { url, source }),
                    }
                }
            }
        };
        match backend {
            DbBackend::Sqlite => {
                let in_memory = match sqlite_path(&config.url) {
                    Some(path) => {
                        create_parent_dir(path, &url_for_display)?;
                        false
                    }
                    None => true,
                };
                let busy_timeout = config.busy_timeout;
                let db = connect(sqlite_options(config, SqliteSynchronous::Normal)).await?;
                let ingest_db = if in_memory {
                    // a second connection would open a second, empty database
                    db.clone()
                } else {
                    let synchronous = if config.sqlite_synchronous_full {
                        SqliteSynchronous::Full
                    } else {
                        SqliteSynchronous::Normal
                    };
                    let mut options = sqlite_options(config, synchronous);
                    // Checkpoints run on the other connection (see `checkpoint`), so an ingest
                    // commit never pays for copying the WAL into the database file.
                    options.map_sqlx_sqlite_opts(move |opts| {
                        sqlite_pragmas(opts, synchronous, busy_timeout)
                            .pragma("wal_autocheckpoint", "0")
                    });
                    connect(options).await?
                };
                Ok(Self {
                    db,
                    ingest_db,
                    url_for_display,
                })
            }
            _ => {
                // The pool reports only "timed out" when it cannot connect; one direct
                // connection first surfaces the real cause (refused, auth, missing database).
                probe_postgres(&config.url, &url_for_display).await?;
                let pool_size = config.max_connections.unwrap_or(10);
                // Queue-state changes commit without waiting for the WAL flush (a crash of the
                // database server may undo the last ones; leases and fencing handle that).
                // Ingest keeps the server's durable default: an acknowledged event is on disk.
                let mut options = base_options(&config.url);
                options.max_connections(pool_size);
                options
                    .map_sqlx_postgres_opts(|opts| opts.options([("synchronous_commit", "off")]));
                let db = connect(options).await?;
                let mut options = base_options(&config.url);
                options.max_connections(pool_size.div_ceil(2));
                // Ingest notices an outage within seconds and spools, instead of holding
                // messages while a connection attempt waits out the default 30 s.
                options.connect_timeout(Duration::from_secs(5));
                options.acquire_timeout(Duration::from_secs(5));
                let ingest_db = connect(options).await?;
                Ok(Self {
                    ingest_db,
                    db,
                    url_for_display,
                })
            }
        }
    }

    /// Whether the database answers on the connection events are committed on.
    pub async fn ping(&self) -> Result<(), StoreError> {
        use sea_orm::ConnectionTrait;
        self.ingest_db.execute_unprepared("SELECT 1").await?;
        Ok(())
    }

    /// The connection events are committed on.
    pub(crate) fn ingest_connection(&self) -> &DatabaseConnection {
        &self.ingest_db
    }

    /// The connection, for the queue and for tests.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The backend in use.
    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// The URL with any password masked.
    pub fn display_url(&self) -> &str {
        &self.url_for_display
    }

    /// Applies every pending migration, in one transaction that holds a lock, so replicas that
    /// start together migrate once: Postgres takes an advisory lock, SQLite `BEGIN IMMEDIATE`.
    pub async fn migrate_up(&self) -> Result<usize, StoreError> {
        use sea_orm::{ConnectionTrait, TransactionOptions, TransactionTrait};
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        if self.backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
                .await?;
        }
        let pending = Migrator::get_pending_migrations(&txn).await?.len();
        Migrator::up(&txn, None).await?;
        txn.commit().await?;
        Ok(pending)
    }

    /// Rolls back the last `steps` migrations (all of them with `None`).
    pub async fn migrate_down(&self, steps: Option<u32>) -> Result<(), StoreError> {
        Migrator::down(&self.db, steps).await?;
        Ok(())
    }

    /// Every known migration with whether it is applied. Reads only: it never creates the
    /// bookkeeping table, so it cannot race a concurrent `migrate_up`.
    pub async fn migration_status(&self) -> Result<Vec<MigrationState>, StoreError> {
        if !self.has_migration_table().await? {
            return Ok(Migrator::migrations()
                .iter()
                .map(|m| MigrationState {
                    name: m.name().to_owned(),
                    applied: false,
                })
                .collect());
        }
        // The table exists, so this does not need to create it.
        let states = Migrator::get_migration_with_status(&self.db)
            .await
            .map_err(|error| self.unknown_migration(error))?;
        Ok(states
            .iter()
            .map(|m| MigrationState {
                name: m.name().to_owned(),
                applied: m.status() == MigrationStatus::Applied,
            })
            .collect())
    }

    /// Fails unless the schema is exactly the one this build expects.
    pub async fn ensure_migrated(&self) -> Result<(), StoreError> {
        let pending: Vec<MigrationState> = self
            .migration_status()
            .await?
            .into_iter()
            .filter(|m| !m.applied)
            .collect();
        if let Some(first) = pending.first() {
            return Err(StoreError::PendingMigrations {
                url: self.url_for_display.clone(),
                count: pending.len(),
                first: first.name.clone(),
            });
        }
        Ok(())
    }

    async fn has_migration_table(&self) -> Result<bool, StoreError> {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = match self.backend() {
            DbBackend::Postgres => {
                "SELECT COUNT(*) AS n FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_name = $1"
            }
            _ => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1",
        };
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.backend(),
                sql,
                [Migrator::migration_table_name().to_string().into()],
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64>("", "n")? > 0,
            None => false,
        })
    }

    /// sea-orm-migration reports an applied migration this build does not know as a custom
    /// error ("… file is missing …"); give it its own variant.
    fn unknown_migration(&self, error: sea_orm::DbErr) -> StoreError {
        match &error {
            sea_orm::DbErr::Custom(message) if message.contains("missing") => {
                StoreError::UnknownMigration {
                    url: self.url_for_display.clone(),
                    name: message.clone(),
                }
            }
            _ => StoreError::Db(error),
        }
    }

    /// Records input that could not become a fault event, keeping its bytes as received.
    pub async fn reject_event(
        &self,
        source: &str,
        cluster: Option<&str>,
        raw_payload: &[u8],
        reason: &str,
        received_at: DateTime<Utc>,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        entity::rejected_events::ActiveModel {
            id: Set(id.to_string()),
            source: Set(text::storable_owned(non_empty_or(source, "unknown"))),
            cluster: Set(cluster.map(|cluster| text::storable(cluster).into_owned())),
            raw_payload: Set(raw_payload.to_vec()),
            reason: Set(text::storable_owned(non_empty_or(reason, "unspecified"))),
            received_at: Set(crate::queue::db_time(received_at)),
        }
        .insert(&self.ingest_db)
        .await?;
        Ok(id)
    }

    /// The most recent dead letters, newest first.
    pub async fn rejected_events(
        &self,
        limit: u64,
    ) -> Result<Vec<entity::rejected_events::Model>, StoreError> {
        Ok(entity::rejected_events::Entity::find()
            .order_by_desc(entity::rejected_events::Column::ReceivedAt)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Dead letters, newest first, after `after` (the `(received_at, id)` of the last one of the
    /// previous page).
    pub async fn rejected_page(
        &self,
        limit: u64,
        after: Option<(DateTime<Utc>, String)>,
    ) -> Result<Vec<entity::rejected_events::Model>, StoreError> {
        use entity::rejected_events::Column;
        let mut query = entity::rejected_events::Entity::find();
        if let Some((at, id)) = after {
            let at = crate::queue::db_time(at);
            query = query.filter(Column::ReceivedAt.lte(at)).filter(
                sea_orm::Condition::any()
                    .add(Column::ReceivedAt.lt(at))
                    .add(Column::Id.lt(id)),
            );
        }
        Ok(query
            .order_by_desc(Column::ReceivedAt)
            .order_by_desc(Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// One dead letter.
    pub async fn rejected_event(
        &self,
        id: &str,
    ) -> Result<Option<entity::rejected_events::Model>, StoreError> {
        Ok(entity::rejected_events::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// Every circuit breaker's state, by scope (cluster).
    pub async fn breakers(&self) -> Result<Vec<entity::circuit_breakers::Model>, StoreError> {
        Ok(entity::circuit_breakers::Entity::find()
            .order_by_asc(entity::circuit_breakers::Column::Scope)
            .all(&self.db)
            .await?)
    }

    /// The fault event with this id.
    pub async fn fault_event(
        &self,
        id: &str,
    ) -> Result<Option<entity::fault_events::Model>, StoreError> {
        Ok(entity::fault_events::Entity::find_by_id(id.to_owned())
            .one(&self.db)
            .await?)
    }

    /// The fault events of `ids` (one query, for a page of incidents), by id.
    pub async fn fault_events(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, entity::fault_events::Model>, StoreError> {
        if ids.is_empty() {
            return Ok(Default::default());
        }
        Ok(entity::fault_events::Entity::find()
            .filter(entity::fault_events::Column::Id.is_in(ids.iter().cloned()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|event| (event.id.clone(), event))
            .collect())
    }

    /// Agent executions of an incident, oldest first.
    pub async fn agent_executions(
        &self,
        incident_id: Uuid,
    ) -> Result<Vec<entity::agent_executions::Model>, StoreError> {
        Ok(entity::agent_executions::Entity::find()
            .filter(entity::agent_executions::Column::IncidentId.eq(incident_id.to_string()))
            .order_by_asc(entity::agent_executions::Column::StartedAt)
            .all(&self.db)
            .await?)
    }

    /// Plugin runs recorded for an incident, oldest first.
    pub async fn plugin_runs(
        &self,
        incident_id: Uuid,
    ) -> Result<Vec<entity::plugin_runs::Model>, StoreError> {
        Ok(entity::plugin_runs::Entity::find()
            .filter(entity::plugin_runs::Column::IncidentId.eq(incident_id.to_string()))
            .order_by_asc(entity::plugin_runs::Column::CreatedAt)
            .all(&self.db)
            .await?)
    }

    /// SQLite: copies the write-ahead log into the database file without blocking writers
    /// (`PRAGMA wal_checkpoint(PASSIVE)`), on the queue connection. The ingest connection never
    /// checkpoints by itself, so the service calls this periodically. No-op on Postgres.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if self.backend() == DbBackend::Sqlite {
            use sea_orm::ConnectionTrait;
            self.db
                .execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)")
                .await?;
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(self) -> Result<(), StoreError> {
        self.ingest_db.close_by_ref().await?;
        self.db.close().await?;
        Ok(())
    }
}

fn base_options(url: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false);
    options.connect_timeout(Duration::from_secs(10));
    options.acquire_timeout(Duration::from_secs(30));
    options
}

/// One connection per pool: SQLite has a single writer, and more connections in one process
/// would only wait on each other's locks.
fn sqlite_options(config: &StoreConfig, synchronous: SqliteSynchronous) -> ConnectOptions {
    let mut options = base_options(&config.url);
    options.max_connections(config.max_connections.unwrap_or(1));
    let busy_timeout = config.busy_timeout;
    options.map_sqlx_sqlite_opts(move |opts| sqlite_pragmas(opts, synchronous, busy_timeout));
    options
}

fn sqlite_pragmas(
    opts: sea_orm::sqlx::sqlite::SqliteConnectOptions,
    synchronous: SqliteSynchronous,
    busy_timeout: Duration,
) -> sea_orm::sqlx::sqlite::SqliteConnectOptions {
    opts.create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(synchronous)
        .busy_timeout(busy_timeout)
        .foreign_keys(true)
        // 64 MiB of page cache keeps the indexes' upper levels in memory under ingest load
        .pragma("cache_size", "-65536")
}

async fn probe_postgres(url: &str, url_for_display: &str) -> Result<(), StoreError> {
    use sea_orm::sqlx::{ConnectOptions as _, Connection as _};
    let connect_error = |error: sea_orm::sqlx::Error| StoreError::Connect {
        url: url_for_display.to_owned(),
        source: sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(error.to_string())),
    };
    let options: sea_orm::sqlx::postgres::PgConnectOptions =
        url.parse()
            .map_err(|error: sea_orm::sqlx::Error| StoreError::InvalidUrl {
                url: url_for_display.to_owned(),
                reason: error.to_string(),
            })?;
    let connection = tokio::time::timeout(Duration::from_secs(10), options.connect())
        .await
        .map_err(|_| StoreError::Connect {
            url: url_for_display.to_owned(),
            source: sea_orm::DbErr::Conn(sea_orm::RuntimeErr::Internal(
                "no answer within 10s".into(),
            )),
        })?
        .map_err(connect_error)?;
    connection.close().await.map_err(connect_error)
}

fn non_empty_or(value: &str, fallback: &str) -> String {
    if value.is_empty() {
        fallback.to_owned()
    } else {
        value.to_owned()
    }
}

/// The backend a URL names, if nightcrier supports it.
fn backend_of(url: &str) -> Option<DbBackend> {
    if url.starts_with("sqlite:") {
        Some(DbBackend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(DbBackend::Postgres)
    } else {
        None
    }
}

/// The file behind an SQLite URL, or `None` for an in-memory database.
/// The SQLite file of `url`, or `None` for Postgres and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<&Path> {
    sqlite_path(url)
}

fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || rest.contains("mode=memory") {
        None
    } else {
        Some(Path::new(path))
    }
}

fn create_parent_dir(path: &Path, url: &str) -> Result<(), StoreError> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.exists() => {
            std::fs::create_dir_all(parent).map_err(|error| StoreError::InvalidUrl {
                url: url.to_owned(),
                reason: format!("cannot create folder {}: {error}", parent.display()),
            })
        }
        _ => Ok(()),
    }
}

/// `url` with the password, if any, replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    /// Processes opening a new SQLite file at the same moment (`serve` starting while a command
    /// polls it) all get in: the one SQLite turns away while another switches the file to WAL
    /// tries again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_opening_a_new_sqlite_file_at_once_all_connect() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..20 {
            let url = format!("sqlite://{}/race-{round}.db", dir.path().display());
            let opening: Vec<_> = (0..4)
                .map(|_| {
                    let config = super::StoreConfig::new(url.clone());
                    tokio::spawn(async move { super::Store::connect(&config).await })
                })
                .collect();
            for opened in opening {
                opened.await.unwrap().unwrap();
            }
        }
    }

    #[test]
    fn connection_trouble_is_transient_and_data_trouble_is_not() {
        use std::sync::Arc;

        use sea_orm::{DbErr, RuntimeErr};

        let io = DbErr::Exec(RuntimeErr::SqlxError(Arc::new(sea_orm::sqlx::Error::Io(
            std::io::Error::other("connection reset"),
        ))));
        assert!(is_transient(&io));
        let timeout = DbErr::Query(RuntimeErr::SqlxError(Arc::new(
            sea_orm::sqlx::Error::PoolTimedOut,
        )));
        assert!(is_transient(&timeout));
        assert!(!is_transient(&DbErr::Custom("bad value".into())));
        assert!(!is_transient(&DbErr::Exec(RuntimeErr::SqlxError(
            Arc::new(sea_orm::sqlx::Error::RowNotFound)
        ))));
    }

    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/nc?sslmode=require"),
            "postgres://app:***@db:5432/nc?sslmode=require"
        );
        assert_eq!(redact_url("postgres://app@db/nc"), "postgres://app@db/nc");
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }

    #[test]
    fn sqlite_paths_are_found() {
        assert_eq!(
            sqlite_path("sqlite://data/nc.db?mode=rwc"),
            Some(Path::new("data/nc.db"))
        );
        assert_eq!(sqlite_path("sqlite:nc.db"), Some(Path::new("nc.db")));
        assert_eq!(sqlite_path("sqlite::memory:"), None);
        assert_eq!(sqlite_path("sqlite://x?mode=memory"), None);
    }

    #[tokio::test]
    async fn unsupported_scheme_is_named() {
        let err = Store::connect(&StoreConfig::new("mysql://root:pw@localhost/x"))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("invalid database url `mysql://root:***@localhost/x`"),
            "{message}"
        );
        assert!(!message.contains("pw"), "{message}");
    }

    #[tokio::test]
    async fn pending_migrations_are_reported_then_applied() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/sub/nc.db", dir.path().display());
        let store = Store::connect(&StoreConfig::new(&url)).await.unwrap();
        let err = store.ensure_migrated().await.unwrap_err().to_string();
        assert!(err.contains("pending migration"), "{err}");
        assert!(err.contains("nightcrier migrate up"), "{err}");
        let applied = store.migrate_up().await.unwrap();
        assert_eq!(applied, Migrator::migrations().len());
        store.ensure_migrated().await.unwrap();
        assert!(
            store
                .migration_status()
                .await
                .unwrap()
                .iter()
                .all(|m| m.applied)
        );
    }
}
