//! The queue's SQL: one function per operation, each one statement or one transaction.
//!
//! The text is shared by both backends (sqlx binds `$N` on SQLite too); where the dialects
//! differ the two variants stand side by side. SQLite serialises writers, so a single
//! `UPDATE … RETURNING` is atomic there; multi-statement writes use `BEGIN IMMEDIATE` so that a
//! transaction never has to upgrade a read lock. Postgres takes rows with
//! `FOR UPDATE SKIP LOCKED`, and the partial unique index settles the rare race of two workers
//! picking incidents of the same cluster (the loser retries).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, FromQueryResult, SqlErr, Statement,
    TransactionOptions, TransactionTrait, Value,
};
use uuid::Uuid;

use super::{
    IngestBatch, Ingested, JobOutcome, JobStatus, KeyedEvent, KeyedPluginRun, Lease, NewRejected,
    SweepReport, Transition,
};
use crate::store::entity::incidents;

pub(super) const INGEST: Transition = Transition {
    from: &[],
    to: JobStatus::Pending,
};
pub(super) const MARK_QUEUED: Transition = Transition {
    from: &[JobStatus::Pending],
    to: JobStatus::Queued,
};
pub(super) const MARK_SKIPPED: Transition = Transition {
    from: &[JobStatus::Pending],
    to: JobStatus::Skipped,
};
pub(super) const CLAIM: Transition = Transition {
    from: &[JobStatus::Queued],
    to: JobStatus::Investigating,
};
pub(super) const FINISH_DONE: Transition = Transition {
    from: &[JobStatus::Investigating],
    to: JobStatus::Resolved,
};
pub(super) const FINISH_AGENT_FAILED: Transition = Transition {
    from: &[JobStatus::Investigating],
    to: JobStatus::AgentFailed,
};
pub(super) const FINISH_RETRY: Transition = Transition {
    from: &[JobStatus::Investigating],
    to: JobStatus::Queued,
};
pub(super) const FINISH_ABORT: Transition = Transition {
    from: &[JobStatus::Investigating],
    to: JobStatus::Failed,
};
pub(super) const SWEEP_REQUEUE: Transition = FINISH_RETRY;
pub(super) const SWEEP_GIVE_UP: Transition = FINISH_ABORT;
pub(super) const RETRY: Transition = Transition {
    from: &[
        JobStatus::Skipped,
        JobStatus::AgentFailed,
        JobStatus::Failed,
    ],
    to: JobStatus::Queued,
};

#[cfg(test)]
pub(super) const ALL_TRANSITIONS: [Transition; 11] = [
    INGEST,
    MARK_QUEUED,
    MARK_SKIPPED,
    CLAIM,
    FINISH_DONE,
    FINISH_AGENT_FAILED,
    FINISH_RETRY,
    FINISH_ABORT,
    SWEEP_REQUEUE,
    SWEEP_GIVE_UP,
    RETRY,
];

/// Rows per multi-row INSERT: at 17 parameters a row it stays under SQLite's 32,766 limit.
const INGEST_CHUNK: usize = 1000;

/// How often a Postgres claim that lost a same-cluster race tries again before reporting
/// "nothing claimable right now".
const CLAIM_RACE_RETRIES: usize = 8;

/// A statement with its bind values made [storable](crate::store::text) (no NUL in text).
fn stmt(db: &impl ConnectionTrait, sql: &str, values: Vec<Value>) -> Statement {
    let values = values
        .into_iter()
        .map(crate::store::text::storable_value)
        .collect::<Vec<_>>();
    Statement::from_sql_and_values(db.get_database_backend(), sql, values)
}

fn uuid_value(id: Uuid) -> Value {
    id.to_string().into()
}

fn json_map(map: &BTreeMap<String, String>) -> Value {
    serde_json::to_value(map)
        .unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
        .into()
}

/// Begins a write transaction: `BEGIN IMMEDIATE` on SQLite, a plain one on Postgres.
async fn begin_write(db: &DatabaseConnection) -> Result<sea_orm::DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
        ..Default::default()
    })
    .await
}

/// Writes one ingest batch in one transaction: fault events and their pending incidents, dead
/// letters and source-stage plugin runs. Rows are keyed by the ids the caller chose (derived from
/// the message they came from), and a row whose id exists is left alone, so committing the same
/// batch twice (a replayed spool, a retried commit whose first answer was lost) stores it once.
/// Returns the incidents created, in event order.
pub(super) async fn commit_batch(
    db: &DatabaseConnection,
    batch: &IngestBatch,
) -> Result<Vec<Ingested>, DbErr> {
    let backend = db.get_database_backend();
    let txn = begin_write(db).await?;
    let mut created = Vec::with_capacity(batch.events.len());
    for chunk in statement_chunks(&batch.events) {
        insert_events(&txn, backend, chunk).await?;
        created.extend(insert_incidents(&txn, backend, chunk).await?);
    }
    for chunk in statement_chunks(&batch.rejected) {
        insert_rejected(&txn, backend, chunk).await?;
    }
    for chunk in statement_chunks(&batch.plugin_runs) {
        insert_plugin_runs(&txn, backend, chunk).await?;
    }
    txn.commit().await?;
    Ok(created)
}

/// Splits `rows` into multi-row statements of at most [`INGEST_CHUNK`] rows whose sizes are
/// powers of two (plus the full chunk): the driver keeps each distinct statement text prepared,
/// so a batch of any size reuses about a dozen statements instead of growing the cache by one
/// large statement per size seen.
fn statement_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if rows.is_empty() {
            return None;
        }
        let size = if rows.len() >= INGEST_CHUNK {
            INGEST_CHUNK
        } else {
            1 << rows.len().ilog2()
        };
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// `INSERT INTO table (columns) VALUES (…), (…) <suffix>` for `rows` rows of `columns.len()`
/// placeholders.
fn multi_row_insert(
    backend: DbBackend,
    table: &str,
    columns: &[&str],
    rows: usize,
    suffix: &str,
) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 1..=columns.len() {
            if column > 1 {
                sql.push_str(", ");
            }
            sql.push_str(&placeholder(backend, row * columns.len() + column));
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(suffix);
    sql
}

const EVENT_COLUMNS: [&str; 17] = [
    "id",
    "fault_id",
    "subscription_id",
    "source",
    "cluster",
    "received_at",
    "resource_api_version",
    "resource_kind",
    "resource_name",
    "resource_namespace",
    "resource_uid",
    "fault_type",
    "severity",
    "context",
    "timestamp",
    "payload",
    "labels",
];

async fn insert_events(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    chunk: &[KeyedEvent],
) -> Result<(), DbErr> {
    let sql = multi_row_insert(
        backend,
        "fault_events",
        &EVENT_COLUMNS,
        chunk.len(),
        "ON CONFLICT (id) DO NOTHING",
    );
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * EVENT_COLUMNS.len());
    for KeyedEvent { id, event } in chunk {
        let resource = event.resource.as_ref();
        values.extend([
            uuid_value(*id),
            event.fault_id.clone().into(),
            event.subscription_id.clone().into(),
            event.source.clone().into(),
            event.cluster.clone().into(),
            super::db_time(event.received_at).into(),
            resource.map(|r| r.api_version.clone()).into(),
            resource.map(|r| r.kind.clone()).into(),
            resource.map(|r| r.name.clone()).into(),
            resource.and_then(|r| r.namespace.clone()).into(),
            resource.and_then(|r| r.uid.clone()).into(),
            event.fault_type.clone().into(),
            event.severity.clone().into(),
            event.context.clone().into(),
            event.timestamp.clone().into(),
            event.payload.clone().into(),
            json_map(&event.labels),
        ]);
    }
    txn.execute_raw(stmt(txn, &sql, values)).await?;
    Ok(())
}

/// Inserts the pending incidents of `chunk`'s events; an event that already has its incident
/// (stored by an earlier commit of the same message) gets none. Returns those created.
async fn insert_incidents(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    chunk: &[KeyedEvent],
) -> Result<Vec<Ingested>, DbErr> {
    let mut sql = String::from(
        "INSERT INTO incidents (id, fault_event_id, cluster, status, priority, labels, \
         annotations, created_at, updated_at, attempts, fault_type, severity) VALUES ",
    );
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * 8);
    for (row, KeyedEvent { id, event }) in chunk.iter().enumerate() {
        if row > 0 {
            sql.push_str(", ");
        }
        let p = |column: usize| placeholder(backend, row * 8 + column);
        sql.push_str(&format!(
            "({}, {}, {}, '{}', 0, {}, '{{}}', {}, {}, 0, {}, {})",
            p(1),
            p(2),
            p(3),
            INGEST.to,
            p(4),
            p(5),
            p(6),
            p(7),
            p(8)
        ));
        let received_at = super::db_time(event.received_at);
        values.extend([
            // Time-ordered ids keep primary-key inserts at the right edge of the index.
            uuid_value(Uuid::now_v7()),
            uuid_value(*id),
            event.cluster.clone().into(),
            json_map(&event.labels),
            received_at.into(),
            received_at.into(),
            event.fault_type.clone().into(),
            event.severity.clone().into(),
        ]);
    }
    sql.push_str(" ON CONFLICT (fault_event_id) DO NOTHING RETURNING id, fault_event_id");
    let rows = txn.query_all_raw(stmt(txn, &sql, values)).await?;
    let mut by_event = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let incident_id: String = row.try_get("", "id")?;
        let event_id: String = row.try_get("", "fault_event_id")?;
        let parse = |text: &str| {
            Uuid::parse_str(text).map_err(|e| DbErr::Custom(format!("bad id {text}: {e}")))
        };
        by_event.insert(parse(&event_id)?, parse(&incident_id)?);
    }
    Ok(chunk
        .iter()
        .filter_map(|keyed| {
            by_event.get(&keyed.id).map(|incident_id| Ingested {
                event_id: keyed.id,
                incident_id: *incident_id,
            })
        })
        .collect())
}

const REJECTED_COLUMNS: [&str; 6] = [
    "id",
    "source",
    "cluster",
    "raw_payload",
    "reason",
    "received_at",
];

async fn insert_rejected(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    chunk: &[NewRejected],
) -> Result<(), DbErr> {
    let sql = multi_row_insert(
        backend,
        "rejected_events",
        &REJECTED_COLUMNS,
        chunk.len(),
        "ON CONFLICT (id) DO NOTHING",
    );
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * REJECTED_COLUMNS.len());
    for rejected in chunk {
        values.extend([
            uuid_value(rejected.id),
            non_empty_or(&rejected.source, "unknown").into(),
            rejected.cluster.clone().into(),
            rejected.raw_payload.clone().into(),
            non_empty_or(&rejected.reason, "unspecified").into(),
            super::db_time(rejected.received_at).into(),
        ]);
    }
    txn.execute_raw(stmt(txn, &sql, values)).await?;
    Ok(())
}

fn non_empty_or(text: &str, fallback: &str) -> String {
    if text.trim().is_empty() {
        fallback.to_owned()
    } else {
        text.to_owned()
    }
}

const PLUGIN_RUN_COLUMNS: [&str; 9] = [
    "id",
    "incident_id",
    "stage",
    "plugin",
    "plugin_version",
    "outcome",
    "duration_us",
    "error",
    "created_at",
];

async fn insert_plugin_runs(
    txn: &impl ConnectionTrait,
    backend: DbBackend,
    chunk: &[KeyedPluginRun],
) -> Result<(), DbErr> {
    let sql = multi_row_insert(
        backend,
        "plugin_runs",
        &PLUGIN_RUN_COLUMNS,
        chunk.len(),
        "ON CONFLICT (id) DO NOTHING",
    );
    let mut values: Vec<Value> = Vec::with_capacity(chunk.len() * PLUGIN_RUN_COLUMNS.len());
    for KeyedPluginRun { id, run, at } in chunk {
        values.extend([
            uuid_value(*id),
            run.incident_id
                .map(uuid_value)
                .unwrap_or(Value::String(None)),
            run.stage.to_owned().into(),
            run.plugin.clone().into(),
            run.plugin_version.clone().into(),
            run.outcome.clone().into(),
            i64::try_from(run.duration.as_micros())
                .unwrap_or(i64::MAX)
                .into(),
            run.error.clone().into(),
            super::db_time(*at).into(),
        ]);
    }
    txn.execute_raw(stmt(txn, &sql, values)).await?;
    Ok(())
}

/// The `n`th bind placeholder. SQLite looks named parameters (`$N`) up by a linear scan, which
/// makes a multi-row INSERT quadratic; anonymous `?` keeps it linear.
fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

async fn incidents_from(
    db: &impl ConnectionTrait,
    statement: Statement,
) -> Result<Vec<incidents::Model>, DbErr> {
    db.query_all_raw(statement)
        .await?
        .iter()
        .map(|row| incidents::Model::from_query_result(row, ""))
        .collect()
}

pub(super) async fn take_pending(
    db: &DatabaseConnection,
    owner: &str,
    limit: u64,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Vec<incidents::Model>, DbErr> {
    // On Postgres the picked ids are an `ARRAY(…)`, which is computed once (an init plan): as
    // `id IN (…)` the planner may re-run the locking subquery for every row it joins against,
    // which, planned on statistics from when the table was small, took minutes with 250,000
    // pending incidents (a storm, pre-triage behind). SQLite runs the subquery once either way.
    let (open, close, lock) = match db.get_database_backend() {
        DbBackend::Postgres => ("= ANY(ARRAY(", "))", "FOR UPDATE SKIP LOCKED"),
        _ => ("IN (", ")", ""),
    };
    let sql = format!(
        "UPDATE incidents SET lease_owner = $1, lease_expires_at = $2, updated_at = $3 \
         WHERE id {open} \
           SELECT id FROM incidents \
           WHERE status = 'pending' \
             AND (lease_expires_at IS NULL OR lease_expires_at < $3) \
             AND (run_after IS NULL OR run_after <= $3) \
           ORDER BY created_at, id LIMIT $4 {lock}{close} \
         AND (status = 'pending') IS TRUE \
         RETURNING *"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    incidents_from(
        db,
        stmt(
            db,
            &sql,
            vec![owner.into(), lease_until.into(), now.into(), limit.into()],
        ),
    )
    .await
}

/// `incident` (as taken by `owner`) enters the queue with `patch` merged in.
pub(super) async fn mark_queued(
    db: &impl ConnectionTrait,
    incident: &super::Incident,
    owner: &str,
    patch: &super::QueuePatch,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let mut labels = incident.labels.clone();
    labels.extend(patch.labels.clone());
    let mut annotations = incident.annotations.clone();
    annotations.extend(patch.annotations.clone());
    let priority = patch.priority.unwrap_or(incident.priority);
    let agent_profile = patch
        .agent_profile
        .as_deref()
        .or(incident.agent_profile.as_deref());
    let sql = format!(
        "UPDATE incidents SET status = '{to}', queued_at = $3, updated_at = $3, \
           lease_owner = NULL, lease_expires_at = NULL, labels = $4, annotations = $5, \
           priority = $6, agent_profile = $7 \
         WHERE id = $1 AND lease_owner = $2 AND {from}",
        to = MARK_QUEUED.to,
        from = MARK_QUEUED.guards_row("status")
    );
    let values = vec![
        uuid_value(incident.id),
        owner.into(),
        now.into(),
        json_map(&labels),
        json_map(&annotations),
        priority.into(),
        agent_profile.map(str::to_owned).into(),
    ];
    Ok(db
        .execute_raw(stmt(db, &sql, values))
        .await?
        .rows_affected())
}

pub(super) async fn mark_skipped(
    db: &impl ConnectionTrait,
    incident_id: Uuid,
    owner: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let sql = format!(
        "UPDATE incidents SET status = '{to}', skip_reason = $3, completed_at = $4, \
           updated_at = $4, lease_owner = NULL, lease_expires_at = NULL \
         WHERE id = $1 AND lease_owner = $2 AND {from}",
        to = MARK_SKIPPED.to,
        from = MARK_SKIPPED.guards_row("status")
    );
    let values = vec![
        uuid_value(incident_id),
        owner.into(),
        reason.into(),
        now.into(),
    ];
    Ok(db
        .execute_raw(stmt(db, &sql, values))
        .await?
        .rows_affected())
}

pub(super) async fn defer_pending(
    db: &impl ConnectionTrait,
    incident_id: Uuid,
    owner: &str,
    run_after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let sql = "UPDATE incidents SET run_after = $3, updated_at = $4, lease_owner = NULL, \
                 lease_expires_at = NULL \
               WHERE id = $1 AND lease_owner = $2 AND (status = 'pending') IS TRUE";
    let values = vec![
        uuid_value(incident_id),
        owner.into(),
        run_after.into(),
        now.into(),
    ];
    Ok(db.execute_raw(stmt(db, sql, values)).await?.rows_affected())
}

/// The claim statement: the best queued incident of a cluster with no agent running, by
/// priority then age; `$1` owner, `$2` lease end, `$3` now. With `capped`, `$4` is the fleet's
/// `fleet_max_agents`: the claim also takes the lowest agent slot below it that no
/// investigating incident holds, and takes nothing when every slot is held. The partial unique
/// index `uq_incidents_agent_slot` refuses a second holder of a slot, so two claimers racing
/// for the last slot cannot both win (the loser retries, like a same-cluster race). An uncapped
/// claim clears the column, so a number left from an earlier capped run is never revived.
fn claim_sql(backend: DbBackend, capped: bool) -> String {
    let lock = match backend {
        DbBackend::Postgres => "FOR UPDATE SKIP LOCKED",
        _ => "",
    };
    let (with, slot, has_slot) = if capped {
        (
            "WITH RECURSIVE slot(n) AS ( \
               SELECT 0 UNION ALL SELECT n + 1 FROM slot WHERE n + 1 < $4), \
             free_slot AS ( \
               SELECT MIN(n) AS n FROM slot WHERE NOT EXISTS ( \
                 SELECT 1 FROM incidents held \
                 WHERE held.status = 'investigating' AND held.agent_slot = slot.n)) ",
            "(SELECT n FROM free_slot)",
            "AND (SELECT n FROM free_slot) IS NOT NULL ",
        )
    } else {
        ("", "NULL", "")
    };
    format!(
        "{with}UPDATE incidents SET status = '{to}', lease_owner = $1, lease_expires_at = $2, \
           started_at = $3, updated_at = $3, attempts = attempts + 1, agent_slot = {slot} \
         WHERE id = ( \
           SELECT i.id FROM incidents i \
           WHERE {candidate} \
             AND (i.run_after IS NULL OR i.run_after <= $3) \
             AND NOT EXISTS ( \
               SELECT 1 FROM incidents busy \
               WHERE busy.cluster = i.cluster AND busy.status = 'investigating') \
           ORDER BY i.priority DESC, i.queued_at, i.id \
           LIMIT 1 {lock}) \
         {has_slot}AND {from} \
         RETURNING *",
        to = CLAIM.to,
        candidate = CLAIM.accepts("i.status"),
        from = CLAIM.guards_row("status")
    )
}

pub(super) async fn claim(
    db: &DatabaseConnection,
    owner: &str,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
    fleet_max_agents: Option<u32>,
) -> Result<Option<incidents::Model>, DbErr> {
    let sql = claim_sql(db.get_database_backend(), fleet_max_agents.is_some());
    for _ in 0..CLAIM_RACE_RETRIES {
        let mut values = vec![owner.into(), lease_until.into(), now.into()];
        if let Some(cap) = fleet_max_agents {
            values.push(i32::try_from(cap).unwrap_or(i32::MAX).into());
        }
        match incidents_from(db, stmt(db, &sql, values)).await {
            Ok(mut rows) => return Ok(rows.pop()),
            // Another worker took an incident of the same cluster, or the same agent slot, in
            // the same instant; the database refused the second one, so pick again.
            Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
                continue;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(None)
}

/// The earliest time after `now` at which an incident in `status` waiting on `run_after` (a
/// retry-later delay, a pre-triage deferral) becomes due.
pub(super) async fn next_due(
    db: &DatabaseConnection,
    status: JobStatus,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, DbErr> {
    let sql = format!(
        "SELECT run_after FROM incidents \
         WHERE status = '{status}' AND run_after IS NOT NULL AND run_after > $1 \
         ORDER BY run_after LIMIT 1"
    );
    let row = db.query_one_raw(stmt(db, &sql, vec![now.into()])).await?;
    row.map(|row| row.try_get::<DateTime<Utc>>("", "run_after"))
        .transpose()
}

/// Finds a leased row by id (see [`Transition::guards_row`] for the `IS TRUE`).
const FENCE: &str =
    "id = $1 AND lease_owner = $2 AND attempts = $3 AND (status = 'investigating') IS TRUE";

fn fence_values(lease: &Lease) -> Vec<Value> {
    vec![
        uuid_value(lease.incident_id),
        lease.owner.clone().into(),
        lease.attempt.into(),
    ]
}

pub(super) async fn heartbeat(
    db: &DatabaseConnection,
    lease: &Lease,
    lease_until: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let sql = format!("UPDATE incidents SET lease_expires_at = $4, updated_at = $5 WHERE {FENCE}");
    let mut values = fence_values(lease);
    values.extend([lease_until.into(), now.into()]);
    Ok(db
        .execute_raw(stmt(db, &sql, values))
        .await?
        .rows_affected())
}

pub(super) async fn finish(
    db: &DatabaseConnection,
    lease: &Lease,
    outcome: &JobOutcome,
    now: DateTime<Utc>,
    after: impl Fn(std::time::Duration) -> DateTime<Utc>,
) -> Result<(JobStatus, u64), DbErr> {
    let mut values = fence_values(lease);
    values.push(now.into());
    let (transition, set) = match outcome {
        JobOutcome::Done { exit_code } => {
            values.push((*exit_code).into());
            (
                FINISH_DONE,
                "completed_at = $4, exit_code = $5, failure_reason = NULL",
            )
        }
        JobOutcome::AgentFailed { reason, exit_code } => {
            values.extend([(*exit_code).into(), reason.clone().into()]);
            (
                FINISH_AGENT_FAILED,
                "completed_at = $4, exit_code = $5, failure_reason = $6",
            )
        }
        JobOutcome::RetryAfter { delay, reason } => {
            values.extend([after(*delay).into(), reason.clone().into()]);
            (FINISH_RETRY, "run_after = $5, failure_reason = $6")
        }
        JobOutcome::Abort { reason } => {
            values.push(reason.clone().into());
            (FINISH_ABORT, "completed_at = $4, failure_reason = $5")
        }
    };
    debug_assert!(transition.from == [JobStatus::Investigating]);
    let sql = format!(
        "UPDATE incidents SET status = '{to}', updated_at = $4, lease_owner = NULL, \
           lease_expires_at = NULL, {set} \
         WHERE {FENCE}",
        to = transition.to
    );
    let changed = db
        .execute_raw(stmt(db, &sql, values))
        .await?
        .rows_affected();
    Ok((transition.to, changed))
}

pub(super) async fn sweep_expired(
    db: &DatabaseConnection,
    max_attempts: i32,
    now: DateTime<Utc>,
) -> Result<SweepReport, super::QueueError> {
    let txn = begin_write(db).await?;
    let sql = format!(
        "UPDATE incidents SET \
           status = CASE WHEN attempts >= $2 THEN '{give_up}' ELSE '{requeue}' END, \
           failure_reason = CASE WHEN attempts >= $2 \
             THEN 'lease expired on attempt ' || attempts || ' of ' || $2 || '; giving up' \
             ELSE 'lease expired on attempt ' || attempts END, \
           completed_at = CASE WHEN attempts >= $2 THEN $1 ELSE NULL END, \
           lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
         WHERE status = 'investigating' AND lease_expires_at < $1 \
         RETURNING id, status",
        give_up = SWEEP_GIVE_UP.to,
        requeue = SWEEP_REQUEUE.to,
    );
    let rows = txn
        .query_all_raw(stmt(&txn, &sql, vec![now.into(), max_attempts.into()]))
        .await?;
    let mut report = SweepReport::default();
    for row in rows {
        let id: String = row.try_get("", "id")?;
        let status: String = row.try_get("", "status")?;
        let id = Uuid::parse_str(&id).map_err(|e| crate::store::StoreError::CorruptRow {
            table: "incidents",
            id: id.clone(),
            reason: e.to_string(),
        })?;
        if status == SWEEP_GIVE_UP.to.as_str() {
            report.failed.push(id);
        } else {
            report.requeued.push(id);
        }
    }
    let released = txn
        .execute_raw(stmt(
            &txn,
            "UPDATE incidents SET lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
             WHERE status = 'pending' AND lease_expires_at < $1",
            vec![now.into()],
        ))
        .await?;
    report.released_pending = released.rows_affected();
    txn.commit().await?;
    report.requeued.sort();
    report.failed.sort();
    Ok(report)
}

pub(super) async fn retry(
    db: &DatabaseConnection,
    incident_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, DbErr> {
    let sql = format!(
        "UPDATE incidents SET status = '{to}', queued_at = $2, updated_at = $2, attempts = 0, \
           run_after = NULL, started_at = NULL, completed_at = NULL, skip_reason = NULL, \
           failure_reason = NULL, exit_code = NULL \
         WHERE id = $1 AND {from}",
        to = RETRY.to,
        from = RETRY.guards_row("status")
    );
    let values = vec![uuid_value(incident_id), now.into()];
    Ok(db
        .execute_raw(stmt(db, &sql, values))
        .await?
        .rows_affected())
}

pub(super) async fn counts(
    db: &DatabaseConnection,
) -> Result<BTreeMap<JobStatus, u64>, super::QueueError> {
    let rows = db
        .query_all_raw(stmt(
            db,
            "SELECT status, COUNT(*) AS n FROM incidents GROUP BY status",
            vec![],
        ))
        .await?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let status: String = row.try_get("", "status")?;
        let n: i64 = row.try_get("", "n")?;
        let status = status
            .parse()
            .map_err(|reason| crate::store::StoreError::CorruptRow {
                table: "incidents",
                id: "(count)".into(),
                reason,
            })?;
        counts.insert(status, u64::try_from(n).unwrap_or_default());
    }
    Ok(counts)
}

#[cfg(test)]
mod plan_tests {
    use sea_orm::{ConnectionTrait, Database, Statement};

    use super::*;
    use crate::store::{Store, StoreConfig};

    /// A fresh database on the test Postgres (`NIGHTCRIER_TEST_PG_URL`, as `tests/run.sh` sets
    /// it); `None` only outside CI, where the server may be missing.
    async fn postgres() -> Option<(Store, String)> {
        let Ok(admin_url) = std::env::var("NIGHTCRIER_TEST_PG_URL") else {
            if std::env::var("CI").is_ok_and(|value| value == "true") {
                panic!(
                    "NIGHTCRIER_TEST_PG_URL is not set and CI=true: Postgres tests must run in CI"
                );
            }
            eprintln!(
                "WARNING: NIGHTCRIER_TEST_PG_URL is not set; the Postgres plan test did not run"
            );
            return None;
        };
        let name = format!("nc_plan_{}", Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url).await.unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let base = admin_url.rsplit_once('/').map(|(base, _)| base).unwrap();
        let store = Store::connect(&StoreConfig::new(format!("{base}/{name}")))
            .await
            .unwrap();
        store.migrate_up().await.unwrap();
        Some((store, name))
    }

    /// A burst arrives after the statistics were taken (every incident still pending, the claim
    /// index apparently empty): the claim must still fetch its row by primary key, not scan the
    /// partial claim index for the id (which made every claim cost O(queue length)).
    #[tokio::test]
    async fn the_claim_uses_the_primary_key_when_statistics_predate_a_burst() {
        let Some((store, _name)) = postgres().await else {
            return;
        };
        let db = store.connection();
        db.execute_unprepared(
            "INSERT INTO fault_events (id, source, cluster, received_at, fault_type, severity, \
               context, payload) \
             SELECT 'e' || g, 'plan', 'cluster-' || (g % 50), now(), 'CrashLoop', 'critical', \
               '', '{}'::jsonb FROM generate_series(1, 20000) g; \
             INSERT INTO incidents (id, fault_event_id, cluster, status, priority, labels, \
               annotations, created_at, updated_at, attempts) \
             SELECT 'i' || g, 'e' || g, 'cluster-' || (g % 50), 'pending', 0, '{}', '{}', \
               now(), now(), 0 FROM generate_series(1, 20000) g; \
             ANALYZE incidents; \
             UPDATE incidents SET status = 'queued', queued_at = created_at",
        )
        .await
        .unwrap();
        let sql = claim_sql(DbBackend::Postgres, false);
        for mode in ["force_generic_plan", "force_custom_plan"] {
            // one connection for SET, PREPARE and EXPLAIN
            let txn = sea_orm::TransactionTrait::begin(db).await.unwrap();
            txn.execute_unprepared(&format!(
                "SET LOCAL plan_cache_mode = {mode}; \
                 PREPARE claim_{mode}(text, timestamptz, timestamptz) AS {sql}"
            ))
            .await
            .unwrap();
            let lines: Vec<String> = txn
                .query_all_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!(
                        "EXPLAIN EXECUTE claim_{mode}('plan', now() + interval '1 minute', now())"
                    ),
                ))
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get_by_index::<String>(0).unwrap())
                .collect();
            txn.rollback().await.unwrap();
            let plan = lines.join("\n");
            // the outer scan is the one on `incidents` without an alias (`i` and `busy` are inner)
            let outer = lines
                .iter()
                .find(|line| line.contains("Scan") && line.contains(" on incidents  ("))
                .unwrap_or_else(|| panic!("{mode}: no outer scan in\n{plan}"));
            assert!(
                outer.contains("incidents_pkey"),
                "{mode}: the claimed row is not fetched by primary key:\n{plan}"
            );
        }
    }
}
