//! Plain CRUD on the side tables: plugin key-value pairs, agent executions, circuit-breaker
//! state, plugin runs and triage reports.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set, Statement,
    TransactionOptions, TransactionTrait,
};
use uuid::Uuid;

use super::entity::{agent_executions, circuit_breakers, plugin_kv, plugin_runs, triage_reports};
use super::text::{storable, storable_json, storable_owned};
use super::{Store, StoreError};
use crate::queue::db_time;

/// One change to a plugin's keys, applied with others by [`Store::kv_apply`].
#[derive(Clone, Debug, PartialEq)]
pub enum KvChange {
    /// Insert or replace `key`, expiring at `expires_at` if given.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
        /// When it expires.
        expires_at: Option<DateTime<Utc>>,
    },
    /// Remove `key` (a missing key is not an error).
    Delete {
        /// The key.
        key: String,
    },
}

/// A plugin's live (unexpired) keys and the bytes of their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvTotals {
    /// Live keys.
    pub keys: u64,
    /// Bytes of their values.
    pub bytes: u64,
}

/// A new row of `agent_executions`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewExecution {
    /// The incident.
    pub incident_id: Uuid,
    /// The claim attempt this run belongs to.
    pub attempt: i32,
    /// The agent profile.
    pub agent_profile: String,
    /// The image.
    pub image: String,
    /// The container.
    pub container_id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// File name → path of the log files.
    pub log_paths: serde_json::Value,
}

/// A new row of `plugin_runs`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewPluginRun {
    /// The incident, when the call was about one.
    pub incident_id: Option<Uuid>,
    /// `source`, `pre_triage` or `post_triage`.
    pub stage: &'static str,
    /// Plugin name.
    pub plugin: String,
    /// Plugin version.
    pub plugin_version: Option<String>,
    /// e.g. `proceed`, `skip`, `trap`, `timeout`.
    pub outcome: String,
    /// How long the call took.
    pub duration: std::time::Duration,
    /// The error, if any.
    pub error: Option<String>,
}

/// A new row of `triage_reports`.
#[derive(Clone, Debug, PartialEq)]
pub struct NewReport {
    /// The incident.
    pub incident_id: Uuid,
    /// The agent execution that produced it.
    pub execution_id: Option<Uuid>,
    /// The report.
    pub markdown: String,
    /// Rendered HTML.
    pub html: Option<String>,
    /// Fields added by post-triage plugins.
    pub structured: Option<serde_json::Value>,
    /// One-line summary.
    pub summary: Option<String>,
    /// Where the artefacts are.
    pub artifact_uri: Option<String>,
    /// `filesystem`, `s3`, `azure`, `gcs`, …
    pub storage_type: String,
    /// The report's folder in the report store, when it is to be uploaded there.
    pub store_uri: Option<String>,
}

async fn kv_upsert(
    db: &impl ConnectionTrait,
    plugin: &str,
    key: &str,
    value: Vec<u8>,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let row = plugin_kv::ActiveModel {
        plugin: Set(plugin.to_owned()),
        key: Set(key.to_owned()),
        value: Set(value),
        expires_at: Set(expires_at.map(db_time)),
        updated_at: Set(db_time(now)),
    };
    plugin_kv::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([plugin_kv::Column::Plugin, plugin_kv::Column::Key])
                .update_columns([
                    plugin_kv::Column::Value,
                    plugin_kv::Column::ExpiresAt,
                    plugin_kv::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

async fn kv_remove(db: &impl ConnectionTrait, plugin: &str, key: &str) -> Result<(), StoreError> {
    plugin_kv::Entity::delete_by_id((plugin.to_owned(), key.to_owned()))
        .exec(db)
        .await?;
    Ok(())
}

impl Store {
    /// The value of `key` for `plugin`, unless it has expired.
    pub async fn kv_get(
        &self,
        plugin: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let row = plugin_kv::Entity::find_by_id((plugin.to_owned(), key.to_owned()))
            .one(&self.db)
            .await?;
        Ok(row
            .filter(|row| row.expires_at.is_none_or(|at| at > db_time(now)))
            .map(|row| row.value))
    }

    /// Sets `key` for `plugin`, expiring at `expires_at` if given.
    pub async fn kv_set(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        kv_upsert(&self.db, plugin, key, value, expires_at, now).await
    }

    /// Removes `key` for `plugin`.
    pub async fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), StoreError> {
        kv_remove(&self.db, plugin, key).await
    }

    /// Applies every change of one plugin call, in one transaction: all of them or none.
    pub async fn kv_apply(
        &self,
        plugin: &str,
        changes: Vec<KvChange>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let txn = self
            .db
            .begin_with_options(TransactionOptions {
                // take the write lock up front, as the queue's writes do
                sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await?;
        for change in changes {
            match change {
                KvChange::Set {
                    key,
                    value,
                    expires_at,
                } => kv_upsert(&txn, plugin, &key, value, expires_at, now).await?,
                KvChange::Delete { key } => kv_remove(&txn, plugin, &key).await?,
            }
        }
        txn.commit().await?;
        Ok(())
    }

    /// The live keys of `plugin` at `now` and the bytes of their values (for its quota).
    pub async fn kv_totals(
        &self,
        plugin: &str,
        now: DateTime<Utc>,
    ) -> Result<KvTotals, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(value)), 0) AS bytes FROM plugin_kv \
                 WHERE plugin = $1 AND (expires_at IS NULL OR expires_at > $2)",
                [plugin.into(), db_time(now).into()],
            ))
            .await?;
        let (keys, bytes) = match row {
            Some(row) => (
                row.try_get::<i64>("", "n")?,
                row.try_get::<i64>("", "bytes")?,
            ),
            None => (0, 0),
        };
        Ok(KvTotals {
            keys: u64::try_from(keys).unwrap_or_default(),
            bytes: u64::try_from(bytes).unwrap_or_default(),
        })
    }

    /// Deletes expired pairs; returns how many.
    pub async fn kv_purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let result = self
            .db
            .execute_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "DELETE FROM plugin_kv WHERE expires_at IS NOT NULL AND expires_at <= $1",
                [db_time(now).into()],
            ))
            .await?;
        Ok(result.rows_affected())
    }

    /// Records the start of an agent run; returns its id.
    pub async fn insert_execution(&self, run: &NewExecution) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        agent_executions::ActiveModel {
            id: Set(id.to_string()),
            incident_id: Set(run.incident_id.to_string()),
            attempt: Set(run.attempt),
            agent_profile: Set(Some(run.agent_profile.clone())),
            image: Set(Some(run.image.clone())),
            container_id: Set(Some(run.container_id.clone())),
            started_at: Set(db_time(run.started_at)),
            completed_at: Set(None),
            exit_code: Set(None),
            error_message: Set(None),
            log_paths: Set(Some(run.log_paths.clone())),
        }
        .insert(&self.db)
        .await?;
        Ok(id)
    }

    /// Records the end of the agent run in `container_id` for `incident_id`.
    pub async fn finish_execution(
        &self,
        incident_id: Uuid,
        container_id: &str,
        completed_at: DateTime<Utc>,
        exit_code: Option<i64>,
        error_message: Option<String>,
    ) -> Result<u64, StoreError> {
        let exit_code = exit_code.map(|code| i32::try_from(code).unwrap_or(i32::MIN));
        let result = agent_executions::Entity::update_many()
            .col_expr(
                agent_executions::Column::CompletedAt,
                db_time(completed_at).into(),
            )
            .col_expr(agent_executions::Column::ExitCode, exit_code.into())
            .col_expr(
                agent_executions::Column::ErrorMessage,
                error_message.map(storable_owned).into(),
            )
            .filter(agent_executions::Column::IncidentId.eq(incident_id.to_string()))
            .filter(agent_executions::Column::ContainerId.eq(container_id))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected)
    }

    /// The saved state of the circuit breaker for `scope`.
    pub async fn load_breaker(&self, scope: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let row = circuit_breakers::Entity::find_by_id(scope.to_owned())
            .one(&self.db)
            .await?;
        Ok(row.map(|row| match row.state {
            // SQLite hands JSON back as the document's text.
            serde_json::Value::String(text) => {
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
            }
            other => other,
        }))
    }

    /// Saves the state of the circuit breaker for `scope`.
    pub async fn save_breaker(
        &self,
        scope: &str,
        state: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let row = circuit_breakers::ActiveModel {
            scope: Set(scope.to_owned()),
            state: Set(state),
            updated_at: Set(db_time(now)),
        };
        circuit_breakers::Entity::insert(row)
            .on_conflict(
                OnConflict::column(circuit_breakers::Column::Scope)
                    .update_columns([
                        circuit_breakers::Column::State,
                        circuit_breakers::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Records one plugin call.
    pub async fn insert_plugin_run(
        &self,
        run: &NewPluginRun,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        plugin_run_row(run, now).insert(&self.db).await?;
        Ok(())
    }

    /// Stores a triage report; returns its id.
    pub async fn insert_report(
        &self,
        report: &NewReport,
        now: DateTime<Utc>,
    ) -> Result<Uuid, StoreError> {
        let id = Uuid::new_v4();
        triage_reports::ActiveModel {
            id: Set(id.to_string()),
            incident_id: Set(report.incident_id.to_string()),
            execution_id: Set(report.execution_id.map(|id| id.to_string())),
            generated_at: Set(db_time(now)),
            report_markdown: Set(storable(&report.markdown).into_owned()),
            report_html: Set(report
                .html
                .as_deref()
                .map(|html| storable(html).into_owned())),
            structured: Set(report.structured.clone().map(|mut document| {
                storable_json(&mut document);
                document
            })),
            summary: Set(report
                .summary
                .as_deref()
                .map(|summary| storable(summary).into_owned())),
            artifact_uri: Set(report.artifact_uri.clone()),
            storage_type: Set(report.storage_type.clone()),
            store_uri: Set(report.store_uri.clone()),
            uploaded_at: Set(None),
            upload_attempts: Set(0),
            next_upload_at: Set(report.store_uri.as_ref().map(|_| db_time(now))),
            upload_error: Set(None),
        }
        .insert(&self.db)
        .await?;
        Ok(id)
    }

    /// Reports of an incident, oldest first.
    pub async fn reports(
        &self,
        incident_id: Uuid,
    ) -> Result<Vec<triage_reports::Model>, StoreError> {
        use sea_orm::QueryOrder;
        Ok(triage_reports::Entity::find()
            .filter(triage_reports::Column::IncidentId.eq(incident_id.to_string()))
            .order_by_asc(triage_reports::Column::GeneratedAt)
            .all(&self.db)
            .await?)
    }

    /// One report by id.
    pub async fn report(&self, id: Uuid) -> Result<Option<triage_reports::Model>, StoreError> {
        Ok(triage_reports::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?)
    }

    /// Reports whose upload to the report store is pending and due at `now`, oldest due first,
    /// at most `limit`.
    pub async fn due_uploads(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<triage_reports::Model>, StoreError> {
        use sea_orm::{QueryOrder, QuerySelect};
        Ok(triage_reports::Entity::find()
            .filter(triage_reports::Column::StoreUri.is_not_null())
            .filter(triage_reports::Column::UploadedAt.is_null())
            .filter(triage_reports::Column::NextUploadAt.lte(db_time(now)))
            .order_by_asc(triage_reports::Column::NextUploadAt)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Records that report `id` is in the report store.
    pub async fn report_uploaded(&self, id: Uuid, now: DateTime<Utc>) -> Result<(), StoreError> {
        triage_reports::ActiveModel {
            id: Set(id.to_string()),
            uploaded_at: Set(Some(db_time(now))),
            next_upload_at: Set(None),
            upload_error: Set(None),
            ..Default::default()
        }
        .update(&self.db)
        .await?;
        Ok(())
    }

    /// Records a failed upload of report `id`: its `attempts` so far, when to try again, and the
    /// error (which never holds a credential: the store's errors name the object, not the key).
    pub async fn report_upload_failed(
        &self,
        id: Uuid,
        attempts: i32,
        next_at: DateTime<Utc>,
        error: &str,
    ) -> Result<(), StoreError> {
        triage_reports::ActiveModel {
            id: Set(id.to_string()),
            upload_attempts: Set(attempts),
            next_upload_at: Set(Some(db_time(next_at))),
            upload_error: Set(Some(storable(error).into_owned())),
            ..Default::default()
        }
        .update(&self.db)
        .await?;
        Ok(())
    }
}

/// The `plugin_runs` row of `run`, recorded at `now`.
pub(crate) fn plugin_run_row(run: &NewPluginRun, now: DateTime<Utc>) -> plugin_runs::ActiveModel {
    plugin_runs::ActiveModel {
        id: Set(Uuid::new_v4().to_string()),
        incident_id: Set(run.incident_id.map(|id| id.to_string())),
        stage: Set(run.stage.to_owned()),
        plugin: Set(storable(&run.plugin).into_owned()),
        plugin_version: Set(run
            .plugin_version
            .as_deref()
            .map(|version| storable(version).into_owned())),
        outcome: Set(storable(&run.outcome).into_owned()),
        duration_us: Set(i64::try_from(run.duration.as_micros()).unwrap_or(i64::MAX)),
        error: Set(run
            .error
            .as_deref()
            .map(|error| storable(error).into_owned())),
        created_at: Set(db_time(now)),
    }
}
