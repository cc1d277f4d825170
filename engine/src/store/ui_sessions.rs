//! The `ui_sessions` table: web UI logins, shared by every replica and kept across restarts.
//! Rows are keyed by the SHA-256 of the session id, never the id itself.

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Statement};

use super::{Store, StoreError};
use crate::queue::db_time;

impl Store {
    /// Records a login: the session whose id hashes to `id_sha256` may do `grant_level`
    /// (`read` or `admin`) until `expires_at`. Expired logins are deleted on the way.
    pub async fn insert_ui_session(
        &self,
        id_sha256: &str,
        grant_level: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                "DELETE FROM ui_sessions WHERE expires_at <= $1",
                [db_time(now).into()],
            ))
            .await?;
        self.db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                "INSERT INTO ui_sessions (id_sha256, grant_level, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4)",
                [
                    id_sha256.into(),
                    grant_level.into(),
                    db_time(now).into(),
                    db_time(expires_at).into(),
                ],
            ))
            .await?;
        Ok(())
    }

    /// What the live login whose id hashes to `id_sha256` may do, if there is one at `now`.
    pub async fn ui_session(
        &self,
        id_sha256: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                self.backend(),
                "SELECT grant_level FROM ui_sessions WHERE id_sha256 = $1 AND expires_at > $2",
                [id_sha256.into(), db_time(now).into()],
            ))
            .await?;
        Ok(row.and_then(|row| row.try_get::<String>("", "grant_level").ok()))
    }

    /// Ends the login whose id hashes to `id_sha256`.
    pub async fn delete_ui_session(&self, id_sha256: &str) -> Result<(), StoreError> {
        self.db
            .execute_raw(Statement::from_sql_and_values(
                self.backend(),
                "DELETE FROM ui_sessions WHERE id_sha256 = $1",
                [id_sha256.into()],
            ))
            .await?;
        Ok(())
    }
}
