//! The incident queue: the `incidents` table used as a job queue with leases.
//!
//! Flow: [`Queue::ingest`] stores a fault event and its `pending` incident in one transaction;
//! pre-triage takes pending incidents ([`Queue::take_pending`]) and marks each `queued` or
//! `skipped`; workers [`Queue::claim`] the oldest queued incident of highest priority whose
//! cluster has nothing `investigating`, keep the lease alive with [`Queue::heartbeat`] and end it
//! with [`Queue::finish`]. [`Queue::sweep_expired`] returns incidents whose lease ran out.
//! Every operation that makes work claimable wakes an idle slot of this process at once (and, on
//! Postgres, of every replica through `NOTIFY`; see `queue/wake.rs`).
//!
//! Invariant: at most one `investigating` incident per cluster. The database enforces it with a
//! partial unique index, so it holds across processes and replicas.
//! Invariant: a worker whose lease was lost can neither heartbeat nor finish: every write of a
//! lease holder is fenced on (owner, attempt).
//! Invariant: with `[workers] fleet_max_agents = N`, at most N incidents are `investigating`
//! across the fleet: each holds one of N agent slots, and a partial unique index lets a slot
//! have one holder (the slot is freed with the status change, so it cannot leak).
//! Invariant: every status change is one of [`JobStatus::can_transition`]'s edges; an illegal
//! transition is an error, never a write.

mod sql;
mod wake;
mod worker;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::store::entity::incidents;
use crate::store::{Store, StoreError};

pub use wake::LISTENER_APPLICATION_NAME;
pub use worker::{Investigate, Resumed, WorkerConfig, run as run_workers, sweep_interval};

/// Where an incident is in its life. Stored as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Stored, waiting for pre-triage.
    Pending,
    /// Ready for an agent.
    Queued,
    /// Dropped by pre-triage policy (see `skip_reason`).
    Skipped,
    /// An agent holds the lease and investigates.
    Investigating,
    /// The agent produced a valid report.
    Resolved,
    /// The agent ran but its result failed validation.
    AgentFailed,
    /// Nightcrier gave up (see `failure_reason`).
    Failed,
}

impl JobStatus {
    /// Whether [`Queue::retry`] can put an incident in this status back in the queue.
    pub fn is_retryable(self) -> bool {
        sql::RETRY.from.contains(&self)
    }

    /// Every status, in life-cycle order.
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Pending,
        JobStatus::Queued,
        JobStatus::Skipped,
        JobStatus::Investigating,
        JobStatus::Resolved,
        JobStatus::AgentFailed,
        JobStatus::Failed,
    ];

    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Queued => "queued",
            JobStatus::Skipped => "skipped",
            JobStatus::Investigating => "investigating",
            JobStatus::Resolved => "resolved",
            JobStatus::AgentFailed => "agent_failed",
            JobStatus::Failed => "failed",
        }
    }

    /// The one place that says which status changes are legal.
    pub fn can_transition(from: JobStatus, to: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (from, to),
            (Pending, Queued | Skipped | Failed)
                | (Queued, Investigating | Failed)
                // a lost lease or a retry-later outcome puts the incident back in the queue
                | (Investigating, Resolved | AgentFailed | Failed | Queued)
                // manual retry
                | (Skipped | AgentFailed | Failed, Queued)
        )
    }

    /// Whether nothing more will happen to the incident without an operator (the statuses of
    /// [`ENDED_STATUSES_SQL`]).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Skipped | JobStatus::Resolved | JobStatus::AgentFailed | JobStatus::Failed
        )
    }
}

/// The `WHERE` condition of the partial indexes on ended incidents (`idx_incidents_ended`,
/// `idx_incidents_cluster_ended`), spelled exactly as in their migrations.
pub const ENDED_STATUSES_SQL: &str = "status IN ('resolved', 'agent_failed', 'failed', 'skipped')";

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JobStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!(
                    "unknown status `{text}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// A status change a queue operation makes: the statuses it accepts and the one it writes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Transition {
    pub(crate) from: &'static [JobStatus],
    pub(crate) to: JobStatus,
}

impl Transition {
    /// The SQL condition "`column` is one of the accepted statuses": `= 'a'` for one (so that
    /// partial indexes on `status = 'a'` apply), `IN ('a', 'b')` for several. The values are
    /// fixed identifiers, never input.
    pub(crate) fn accepts(&self, column: &str) -> String {
        let quoted: Vec<String> = self
            .from
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        match quoted.as_slice() {
            [one] => format!("{column} = {one}"),
            many => format!("{column} IN ({})", many.join(", ")),
        }
    }

    /// [`Self::accepts`] for a statement that finds its row by id, written `(…) IS TRUE`: the same
    /// condition, but one that does not imply a partial index's predicate, so the planner fetches
    /// the row by primary key. With a bare `status = 'queued'`, a Postgres planner whose
    /// statistics predate a burst (the partial index looks empty) chose to scan the whole
    /// partial index for the id, and claims fell from ~2,900 to ~700 per second.
    pub(crate) fn guards_row(&self, column: &str) -> String {
        format!("({}) IS TRUE", self.accepts(column))
    }
}

/// The resource a fault is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRef {
    /// e.g. `v1`, `apps/v1`.
    #[serde(default)]
    pub api_version: String,
    /// e.g. `Pod`.
    #[serde(default)]
    pub kind: String,
    /// The object's name.
    #[serde(default)]
    pub name: String,
    /// Its namespace, for namespaced kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// A validated fault event, ready to be stored.
#[derive(Clone, Debug, PartialEq)]
pub struct NewFaultEvent {
    /// The source plugin that produced it.
    pub source: String,
    /// The cluster it is about (the configured name, not the upstream one).
    pub cluster: String,
    /// Upstream id; not unique (a re-emitted fault is a new event).
    pub fault_id: Option<String>,
    /// Upstream subscription id.
    pub subscription_id: Option<String>,
    /// The resource at fault, if known.
    pub resource: Option<ResourceRef>,
    /// e.g. `CrashLoop`.
    pub fault_type: String,
    /// e.g. `critical`.
    pub severity: String,
    /// Human-readable detail.
    pub context: String,
    /// When the fault happened, as the source wrote it.
    pub timestamp: Option<String>,
    /// The payload as received.
    pub payload: serde_json::Value,
    /// When nightcrier received it.
    pub received_at: DateTime<Utc>,
    /// Labels the source decoded with it; they also seed the incident's labels.
    pub labels: BTreeMap<String, String>,
}

/// A fault event with the id it is stored under.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyedEvent {
    /// The `fault_events` id.
    pub id: Uuid,
    /// The event.
    pub event: NewFaultEvent,
}

/// A new dead letter: input that could not become a fault event, kept as received.
#[derive(Clone, Debug, PartialEq)]
pub struct NewRejected {
    /// The row id.
    pub id: Uuid,
    /// The source (plugin id) it came from.
    pub source: String,
    /// The configured cluster of its feed, if any.
    pub cluster: Option<String>,
    /// The bytes as received.
    pub raw_payload: Vec<u8>,
    /// Why it was refused.
    pub reason: String,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// A plugin run with the id it is stored under and when it ended.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyedPluginRun {
    /// The row id.
    pub id: Uuid,
    /// The run.
    pub run: crate::store::NewPluginRun,
    /// When it ended.
    pub at: DateTime<Utc>,
}

/// Everything one commit of the ingest path writes, in one transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngestBatch {
    /// Fault events; each gets a `pending` incident.
    pub events: Vec<KeyedEvent>,
    /// Dead letters.
    pub rejected: Vec<NewRejected>,
    /// Source-stage plugin failures.
    pub plugin_runs: Vec<KeyedPluginRun>,
}

impl IngestBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.rejected.is_empty() && self.plugin_runs.is_empty()
    }
}

/// Ids of a stored event and its incident.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Ingested {
    /// The `fault_events` row.
    pub event_id: Uuid,
    /// The `incidents` row.
    pub incident_id: Uuid,
}

/// An incident as the queue sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Incident {
    /// Its id.
    pub id: Uuid,
    /// The fault event it was made from.
    pub fault_event_id: Uuid,
    /// The cluster, also the scope of the one-agent lock.
    pub cluster: String,
    /// Its status.
    pub status: JobStatus,
    /// Higher is claimed first.
    pub priority: i32,
    /// Labels set by plugins.
    pub labels: BTreeMap<String, String>,
    /// Annotations set by plugins.
    pub annotations: BTreeMap<String, String>,
    /// The agent profile to run, if not the default.
    pub agent_profile: Option<String>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it entered the queue.
    pub queued_at: Option<DateTime<Utc>>,
    /// When the last attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// Not to be taken before this time.
    pub run_after: Option<DateTime<Utc>>,
    /// How many times a worker claimed it.
    pub attempts: i32,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease runs out.
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// Why pre-triage skipped it.
    pub skip_reason: Option<String>,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// The fault type of its event (copied at ingest, for filtering).
    pub fault_type: Option<String>,
    /// The severity of its event (copied at ingest, for filtering).
    pub severity: Option<String>,
}

impl TryFrom<incidents::Model> for Incident {
    type Error = StoreError;

    fn try_from(row: incidents::Model) -> Result<Self, Self::Error> {
        let corrupt = |reason: String| StoreError::CorruptRow {
            table: "incidents",
            id: row.id.clone(),
            reason,
        };
        let id = Uuid::parse_str(&row.id).map_err(|e| corrupt(format!("id: {e}")))?;
        let fault_event_id = Uuid::parse_str(&row.fault_event_id)
            .map_err(|e| corrupt(format!("fault_event_id: {e}")))?;
        let status = row.status.parse().map_err(corrupt)?;
        let labels = string_map(&row.labels).map_err(|e| corrupt(format!("labels: {e}")))?;
        let annotations =
            string_map(&row.annotations).map_err(|e| corrupt(format!("annotations: {e}")))?;
        Ok(Incident {
            id,
            fault_event_id,
            cluster: row.cluster,
            status,
            priority: row.priority,
            labels,
            annotations,
            agent_profile: row.agent_profile,
            created_at: row.created_at,
            updated_at: row.updated_at,
            queued_at: row.queued_at,
            started_at: row.started_at,
            completed_at: row.completed_at,
            run_after: row.run_after,
            attempts: row.attempts,
            lease_owner: row.lease_owner,
            lease_expires_at: row.lease_expires_at,
            skip_reason: row.skip_reason,
            failure_reason: row.failure_reason,
            exit_code: row.exit_code,
            fault_type: row.fault_type,
            severity: row.severity,
        })
    }
}

pub(crate) fn string_map(value: &serde_json::Value) -> Result<BTreeMap<String, String>, String> {
    // SQLite hands JSON back as a string holding the document.
    let parsed;
    let value = match value {
        serde_json::Value::String(text) => {
            parsed = serde_json::from_str::<serde_json::Value>(text).map_err(|e| e.to_string())?;
            &parsed
        }
        other => other,
    };
    serde_json::from_value(value.clone()).map_err(|e| e.to_string())
}

/// Proof of holding an incident: the fencing token for every write a worker makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The incident.
    pub incident_id: Uuid,
    /// Its cluster.
    pub cluster: String,
    /// The worker.
    pub owner: String,
    /// The attempt number this lease belongs to; a later claim has a higher one.
    pub attempt: i32,
    /// When the lease runs out unless renewed.
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// The lease an incident's row records (the investigation a previous process of this
    /// instance left running), if it names an owner.
    pub fn recorded_on(incident: &Incident) -> Option<Lease> {
        Some(Lease {
            incident_id: incident.id,
            cluster: incident.cluster.clone(),
            owner: incident.lease_owner.clone()?,
            attempt: incident.attempts,
            expires_at: incident.lease_expires_at.unwrap_or_else(Utc::now),
        })
    }
}

/// What pre-triage decided to change before queueing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueuePatch {
    /// Labels to merge in.
    pub labels: BTreeMap<String, String>,
    /// Annotations to merge in.
    pub annotations: BTreeMap<String, String>,
    /// New priority.
    pub priority: Option<i32>,
    /// Agent profile to use.
    pub agent_profile: Option<String>,
}

/// What pre-triage decided for one pending incident.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Queue it, with these changes.
    Proceed(QueuePatch),
    /// Do not investigate it.
    Skip(String),
    /// Look again after this long.
    Delay(Duration),
}

/// What pre-triage decided for one incident, and the plugin calls that decided it.
#[derive(Clone, Debug)]
pub struct Ruling {
    /// The decision.
    pub decision: Decision,
    /// The plugin calls made for it, to record with it.
    pub runs: Vec<crate::store::NewPluginRun>,
}

/// A pending incident pre-triage took, and its ruling: what [`Queue::record_decisions`]
/// records.
#[derive(Clone, Debug)]
pub struct Decided {
    /// The incident as taken.
    pub incident: Incident,
    /// What pre-triage decided.
    pub decision: Decision,
    /// The plugin calls that decided it.
    pub runs: Vec<crate::store::NewPluginRun>,
}

/// How an investigation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
    /// The agent produced a valid report.
    Done {
        /// The agent's exit code.
        exit_code: i32,
    },
    /// The agent ran but its output failed validation.
    AgentFailed {
        /// Why.
        reason: String,
        /// The agent's exit code, if it exited.
        exit_code: Option<i32>,
    },
    /// A transient problem: back to the queue, not before `delay` from now.
    RetryAfter {
        /// How long to wait.
        delay: Duration,
        /// Why.
        reason: String,
    },
    /// Give up.
    Abort {
        /// Why.
        reason: String,
    },
}

/// What [`Queue::sweep_expired`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Incidents put back in the queue.
    pub requeued: Vec<Uuid>,
    /// Incidents that ran out of attempts.
    pub failed: Vec<Uuid>,
    /// Pending incidents whose pre-triage lease was released.
    pub released_pending: u64,
}

/// Filters of [`Queue::list`]; the list is newest first.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<JobStatus>,
    /// Only this cluster.
    pub cluster: Option<String>,
    /// Only this fault type.
    pub fault_type: Option<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only incidents created at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only incidents created before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only incidents after this one in list order (the page before ended there).
    pub after: Option<ListCursor>,
    /// At most this many.
    pub limit: u64,
}

/// A position in the incident list: the last incident of a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor {
    /// Its creation time.
    pub created_at: DateTime<Utc>,
    /// Its id.
    pub id: Uuid,
}

impl ListCursor {
    /// The cursor after `incident`.
    pub fn after(incident: &Incident) -> Self {
        Self {
            created_at: incident.created_at,
            id: incident.id,
        }
    }

    /// An opaque text form, for URLs.
    pub fn encode(&self) -> String {
        format!(
            "{}.{}",
            self.created_at.timestamp_micros(),
            self.id.simple()
        )
    }

    /// Reads [`ListCursor::encode`]'s text.
    pub fn decode(text: &str) -> Option<Self> {
        let (micros, id) = text.split_once('.')?;
        Some(Self {
            created_at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// Errors of queue operations; callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No such incident.
    #[error("incident {0} not found")]
    NotFound(Uuid),
    /// The caller no longer holds the lease: it expired and was swept, or another worker has it.
    #[error("lease on incident {incident_id} (attempt {attempt}) is no longer held by {owner}")]
    LeaseLost {
        /// The incident.
        incident_id: Uuid,
        /// The worker that thought it held it.
        owner: String,
        /// The attempt of the lost lease.
        attempt: i32,
    },
    /// The change is not an edge of the status machine.
    #[error("incident {incident_id} cannot go from {from} to {to}")]
    IllegalTransition {
        /// The incident.
        incident_id: Uuid,
        /// Its current status.
        from: JobStatus,
        /// The requested status.
        to: JobStatus,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl QueueError {
    /// Whether the operation failed for want of the database, not because of what it wrote.
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Store(StoreError::Db(error)) => crate::store::is_transient(error),
            QueueError::Store(StoreError::Connect { .. }) => true,
            _ => false,
        }
    }
}

impl From<sea_orm::DbErr> for QueueError {
    fn from(error: sea_orm::DbErr) -> Self {
        QueueError::Store(StoreError::Db(error))
    }
}

/// Timestamps are kept to the microsecond on both backends, so they compare alike.
pub(crate) fn db_time(time: DateTime<Utc>) -> DateTime<Utc> {
    time.trunc_subsecs(6)
}

fn after(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    let delta = chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
    db_time(
        now.checked_add_signed(delta)
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// The queue operations over a [`Store`]. Every operation takes `now`, so that leases and
/// expiries are testable without waiting.
#[derive(Clone, Debug)]
pub struct Queue {
    store: Store,
    /// Shared by every clone: the wake-ups of this process.
    wakeups: Arc<wake::Wakeups>,
    /// `[workers] fleet_max_agents`: investigations running at once across the fleet.
    fleet_max_agents: Option<u32>,
}

impl Queue {
    /// A queue over `store` (which must be migrated), with its own wake-ups and no fleet cap.
    pub fn new(store: Store) -> Self {
        Self {
            store,
            wakeups: Arc::default(),
            fleet_max_agents: None,
        }
    }

    /// The same queue (sharing its wake-ups) whose claims respect a fleet-wide cap of `cap`
    /// running investigations (`None`: no cap). Every replica should use the same value.
    pub fn with_fleet_max_agents(mut self, cap: Option<u32>) -> Self {
        self.fleet_max_agents = cap;
        self
    }

    /// The fleet-wide cap this queue's claims respect.
    pub fn fleet_max_agents(&self) -> Option<u32> {
        self.fleet_max_agents
    }

    /// Wakes one idle worker slot of this process: an incident may be claimable.
    pub fn wake_work(&self) {
        self.wakeups.work.notify_one();
    }

    /// Wakes pre-triage of this process: a pending incident may be waiting.
    pub fn wake_pending(&self) {
        self.wakeups.pending.notify_one();
    }

    /// Waits until [`Queue::wake_work`] is called (or was, since the last wait), or `timeout`.
    pub async fn wait_for_work(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wakeups.work.notified()).await;
    }

    /// Waits until [`Queue::wake_pending`] is called (or was, since the last wait), or `timeout`.
    pub async fn wait_for_pending(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.wakeups.pending.notified()).await;
    }

    /// Listens for other replicas' wake-ups (Postgres `NOTIFY`) until `shutdown`; returns at
    /// once on SQLite.
    pub async fn listen_for_wakeups(&self, shutdown: tokio_util::sync::CancellationToken) {
        wake::listen(self.clone(), shutdown).await;
    }

    /// The earliest time after `now` at which a delayed incident in `status` (`queued` after a
    /// retry-later outcome, `pending` after a pre-triage deferral) becomes due.
    pub async fn next_due(
        &self,
        status: JobStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<DateTime<Utc>>, QueueError> {
        Ok(sql::next_due(self.store.connection(), status, db_time(now)).await?)
    }

    /// The store underneath.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stores one fault event and its `pending` incident in one transaction.
    pub async fn ingest(&self, event: &NewFaultEvent) -> Result<Ingested, QueueError> {
        let mut ids = self.ingest_batch(std::slice::from_ref(event)).await?;
        Ok(ids.remove(0))
    }

    /// Stores many events and their incidents in one transaction; all or nothing.
    pub async fn ingest_batch(
        &self,
        events: &[NewFaultEvent],
    ) -> Result<Vec<Ingested>, QueueError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let batch = IngestBatch {
            events: events
                .iter()
                .map(|event| KeyedEvent {
                    // Time-ordered ids keep primary-key inserts at the right edge of the index.
                    id: Uuid::now_v7(),
                    event: event.clone(),
                })
                .collect(),
            ..IngestBatch::default()
        };
        self.commit_batch(&batch).await
    }

    /// Commits one batch of the ingest path (events with their incidents, dead letters and
    /// source-stage plugin runs) in one transaction on the durable connection. Rows whose id
    /// already exists are skipped, so a batch committed twice is stored once. Returns the
    /// incidents it created, in event order.
    pub async fn commit_batch(&self, batch: &IngestBatch) -> Result<Vec<Ingested>, QueueError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let created = sql::commit_batch(self.store.ingest_connection(), batch).await?;
        if !created.is_empty() {
            self.wake_pending();
        }
        Ok(created)
    }

    /// Leases up to `limit` pending incidents, oldest first, for pre-triage by `owner`.
    pub async fn take_pending(
        &self,
        owner: &str,
        limit: u64,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<Incident>, QueueError> {
        let rows = sql::take_pending(
            self.store.connection(),
            owner,
            limit,
            after(now, lease),
            db_time(now),
        )
        .await?;
        let mut incidents = rows
            .into_iter()
            .map(Incident::try_from)
            .collect::<Result<Vec<_>, _>>()?;
        incidents.sort_by_key(|incident| (incident.created_at, incident.id));
        Ok(incidents)
    }

    /// Records what pre-triage decided for each of `decided` (incidents `owner` took with
    /// [`Queue::take_pending`]), with the plugin calls that decided it, in one transaction;
    /// returns each one's outcome, in order. An incident whose lease `owner` lost meanwhile is
    /// left alone and reported (its plugin calls are recorded: they happened), the others are
    /// recorded. If the transaction itself fails, every outcome is that error.
    pub async fn record_decisions(
        &self,
        owner: &str,
        decided: &[Decided],
        now: DateTime<Utc>,
    ) -> Vec<Result<(), QueueError>> {
        let changed = match self.record_decisions_in_one(owner, decided, now).await {
            Ok(changed) => changed,
            Err(error) => {
                let text = error.to_string();
                return decided
                    .iter()
                    .map(|_| {
                        Err(QueueError::Store(StoreError::Db(DbErr::Custom(
                            text.clone(),
                        ))))
                    })
                    .collect();
            }
        };
        if changed.iter().any(|&n| n > 0) {
            self.wake_work();
        }
        let mut outcomes = Vec::with_capacity(decided.len());
        for (decided, changed) in decided.iter().zip(changed) {
            let outcome = if changed > 0 {
                Ok(())
            } else {
                let to = match decided.decision {
                    Decision::Proceed(_) => sql::MARK_QUEUED.to,
                    Decision::Skip(_) => sql::MARK_SKIPPED.to,
                    Decision::Delay(_) => JobStatus::Pending,
                };
                Err(self
                    .why_unchanged(decided.incident.id, &[JobStatus::Pending], to)
                    .await)
            };
            outcomes.push(outcome);
        }
        outcomes
    }

    async fn record_decisions_in_one(
        &self,
        owner: &str,
        decided: &[Decided],
        now: DateTime<Utc>,
    ) -> Result<Vec<u64>, DbErr> {
        let txn = self.store.connection().begin().await?;
        let mut changed = Vec::with_capacity(decided.len());
        let mut runs = Vec::new();
        for Decided {
            incident,
            decision,
            runs: made,
        } in decided
        {
            runs.extend(
                made.iter()
                    .map(|run| crate::store::plugin_run_row(run, now)),
            );
            let rows = match decision {
                Decision::Proceed(patch) => {
                    sql::mark_queued(&txn, incident, owner, patch, db_time(now)).await?
                }
                Decision::Skip(reason) => {
                    sql::mark_skipped(&txn, incident.id, owner, reason, db_time(now)).await?
                }
                Decision::Delay(delay) => {
                    sql::defer_pending(&txn, incident.id, owner, after(now, *delay), db_time(now))
                        .await?
                }
            };
            changed.push(rows);
        }
        if !runs.is_empty() {
            crate::store::entity::plugin_runs::Entity::insert_many(runs)
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(changed)
    }

    /// Pre-triage let the incident through: it enters the queue with `patch` applied.
    pub async fn mark_queued(
        &self,
        incident: &Incident,
        owner: &str,
        patch: &QueuePatch,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let changed = sql::mark_queued(
            self.store.connection(),
            incident,
            owner,
            patch,
            db_time(now),
        )
        .await?;
        self.expect_changed(changed, incident.id, sql::MARK_QUEUED)
            .await?;
        self.wake_work();
        Ok(())
    }

    /// Pre-triage dropped the incident.
    pub async fn mark_skipped(
        &self,
        incident_id: Uuid,
        owner: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let changed = sql::mark_skipped(
            self.store.connection(),
            incident_id,
            owner,
            reason,
            db_time(now),
        )
        .await?;
        self.expect_changed(changed, incident_id, sql::MARK_SKIPPED)
            .await
    }

    /// Pre-triage asked to look again later: the incident stays pending until `until`.
    pub async fn defer_pending(
        &self,
        incident_id: Uuid,
        owner: &str,
        delay: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let changed = sql::defer_pending(
            self.store.connection(),
            incident_id,
            owner,
            after(now, delay),
            db_time(now),
        )
        .await?;
        if changed == 0 {
            return Err(self
                .why_unchanged(incident_id, &[JobStatus::Pending], JobStatus::Pending)
                .await);
        }
        Ok(())
    }

    /// Atomically takes the oldest queued incident of highest priority whose cluster has
    /// nothing investigating, and leases it to `owner` until `now + lease`.
    pub async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<(Incident, Lease)>, QueueError> {
        let expires_at = after(now, lease);
        let Some(row) = sql::claim(
            self.store.connection(),
            owner,
            expires_at,
            db_time(now),
            self.fleet_max_agents,
        )
        .await?
        else {
            return Ok(None);
        };
        // There may be more: pass the wake-up on to another idle slot.
        self.wake_work();
        let incident = Incident::try_from(row)?;
        let lease = Lease {
            incident_id: incident.id,
            cluster: incident.cluster.clone(),
            owner: owner.to_owned(),
            attempt: incident.attempts,
            expires_at,
        };
        Ok(Some((incident, lease)))
    }

    /// Extends `lease` to `now + extension`. Fails with [`QueueError::LeaseLost`] if the worker
    /// no longer holds it.
    pub async fn heartbeat(
        &self,
        lease: &mut Lease,
        extension: Duration,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let expires_at = after(now, extension);
        let changed =
            sql::heartbeat(self.store.connection(), lease, expires_at, db_time(now)).await?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        lease.expires_at = expires_at;
        Ok(())
    }

    /// Ends the investigation held by `lease` with `outcome`.
    pub async fn finish(
        &self,
        lease: &Lease,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> Result<JobStatus, QueueError> {
        let (status, changed) = sql::finish(
            self.store.connection(),
            lease,
            outcome,
            db_time(now),
            |delay| after(now, delay),
        )
        .await?;
        if changed == 0 {
            return Err(lease_lost(lease));
        }
        // The cluster (and any agent slot) is free, or the incident is back in the queue.
        self.wake_work();
        Ok(status)
    }

    /// Shorthand for [`Queue::finish`] with [`JobOutcome::Done`].
    pub async fn complete(
        &self,
        lease: &Lease,
        exit_code: i32,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.finish(lease, &JobOutcome::Done { exit_code }, now)
            .await
            .map(drop)
    }

    /// Shorthand for [`Queue::finish`] with a failing outcome.
    pub async fn fail(
        &self,
        lease: &Lease,
        outcome: &JobOutcome,
        now: DateTime<Utc>,
    ) -> Result<JobStatus, QueueError> {
        self.finish(lease, outcome, now).await
    }

    /// Puts incidents whose lease ran out before `now` back in the queue, or fails them once
    /// they have been claimed `max_attempts` times; releases expired pre-triage leases.
    pub async fn sweep_expired(
        &self,
        max_attempts: i32,
        now: DateTime<Utc>,
    ) -> Result<SweepReport, QueueError> {
        let report =
            sql::sweep_expired(self.store.connection(), max_attempts, db_time(now)).await?;
        if !report.requeued.is_empty() || !report.failed.is_empty() {
            self.wake_work();
        }
        if report.released_pending > 0 {
            self.wake_pending();
        }
        Ok(report)
    }

    /// An operator asks for another try of a skipped or failed incident.
    pub async fn retry(&self, incident_id: Uuid, now: DateTime<Utc>) -> Result<(), QueueError> {
        let changed = sql::retry(self.store.connection(), incident_id, db_time(now)).await?;
        self.expect_changed(changed, incident_id, sql::RETRY)
            .await?;
        self.wake_work();
        Ok(())
    }

    /// One incident.
    pub async fn get(&self, incident_id: Uuid) -> Result<Incident, QueueError> {
        let row = incidents::Entity::find_by_id(incident_id.to_string())
            .one(self.store.connection())
            .await?
            .ok_or(QueueError::NotFound(incident_id))?;
        Ok(Incident::try_from(row)?)
    }

    /// Incidents matching `filter`, newest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<Incident>, QueueError> {
        let rows = list_query(filter).all(self.store.connection()).await?;
        Ok(rows
            .into_iter()
            .map(Incident::try_from)
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// How many incidents are in each status.
    pub async fn counts(&self) -> Result<BTreeMap<JobStatus, u64>, QueueError> {
        sql::counts(self.store.connection()).await
    }

    async fn expect_changed(
        &self,
        changed: u64,
        incident_id: Uuid,
        transition: Transition,
    ) -> Result<(), QueueError> {
        if changed == 0 {
            return Err(self
                .why_unchanged(incident_id, transition.from, transition.to)
                .await);
        }
        Ok(())
    }

    /// Explains an update that matched no row: missing, illegal from its current status, or
    /// leased to someone else.
    async fn why_unchanged(
        &self,
        incident_id: Uuid,
        from: &[JobStatus],
        to: JobStatus,
    ) -> QueueError {
        match self.get(incident_id).await {
            Ok(current) if !from.contains(&current.status) => QueueError::IllegalTransition {
                incident_id,
                from: current.status,
                to,
            },
            Ok(current) => QueueError::LeaseLost {
                incident_id,
                owner: current.lease_owner.unwrap_or_default(),
                attempt: current.attempts,
            },
            Err(error) => error,
        }
    }
}

fn lease_lost(lease: &Lease) -> QueueError {
    QueueError::LeaseLost {
        incident_id: lease.incident_id,
        owner: lease.owner.clone(),
        attempt: lease.attempt,
    }
}

/// The incident list's query: `filter`'s conditions, newest first, then by id.
fn list_query(filter: &ListFilter) -> sea_orm::Select<incidents::Entity> {
    let mut query = incidents::Entity::find();
    if let Some(status) = filter.status {
        query = query.filter(incidents::Column::Status.eq(status.as_str()));
        if status.is_terminal() {
            // Repeats the condition of the partial indexes on ended incidents word for
            // word: SQLite uses a partial index only then (Postgres proves it itself).
            query = query.filter(sea_orm::sea_query::Expr::cust(ENDED_STATUSES_SQL));
        }
    }
    if let Some(cluster) = &filter.cluster {
        query = query.filter(incidents::Column::Cluster.eq(cluster.as_str()));
    }
    if let Some(fault_type) = &filter.fault_type {
        query = query.filter(incidents::Column::FaultType.eq(fault_type.as_str()));
    }
    if let Some(severity) = &filter.severity {
        query = query.filter(incidents::Column::Severity.eq(severity.as_str()));
    }
    if let Some(since) = filter.since {
        query = query.filter(incidents::Column::CreatedAt.gte(db_time(since)));
    }
    if let Some(until) = filter.until {
        query = query.filter(incidents::Column::CreatedAt.lt(db_time(until)));
    }
    if let Some(cursor) = filter.after {
        // `(created_at, id) < (…)`, spelled so both databases range-scan the list index
        let at = db_time(cursor.created_at);
        query = query.filter(incidents::Column::CreatedAt.lte(at)).filter(
            sea_orm::Condition::any()
                .add(incidents::Column::CreatedAt.lt(at))
                .add(incidents::Column::Id.lt(cursor.id.to_string())),
        );
    }
    query
        .order_by_desc(incidents::Column::CreatedAt)
        .order_by_desc(incidents::Column::Id)
        .limit(filter.limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite plans for the incident list filtered by cluster and an ended status: one
    /// seek in the partial index made for it, and no sort step (see migration 000015).
    #[tokio::test]
    async fn the_list_by_cluster_and_ended_status_seeks_its_index_on_sqlite() {
        use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement};
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/nc.db", dir.path().display());
        let store = Store::connect(&crate::store::StoreConfig::new(&url))
            .await
            .unwrap();
        store.migrate_up().await.unwrap();
        for status in [JobStatus::Resolved, JobStatus::Failed, JobStatus::Skipped] {
            let filter = ListFilter {
                status: Some(status),
                cluster: Some("prod-eu".into()),
                since: Some(Utc::now()),
                limit: 50,
                ..ListFilter::default()
            };
            let query = list_query(&filter).build(DbBackend::Sqlite);
            let rows = store
                .connection()
                .query_all_raw(Statement::from_sql_and_values(
                    DbBackend::Sqlite,
                    format!("EXPLAIN QUERY PLAN {}", query.sql),
                    query.values.map(|values| values.0).unwrap_or_default(),
                ))
                .await
                .unwrap();
            let plan: Vec<String> = rows
                .iter()
                .map(|row| row.try_get::<String>("", "detail").unwrap())
                .collect();
            let plan = plan.join("\n");
            assert!(
                plan.contains(
                    "USING INDEX idx_incidents_cluster_ended (cluster=? AND status=? AND created_at>?)"
                ),
                "{status}: {plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{status}: {plan}");
        }
    }

    #[test]
    fn every_operation_makes_a_legal_transition() {
        for transition in sql::ALL_TRANSITIONS {
            for from in transition.from {
                assert!(
                    JobStatus::can_transition(*from, transition.to),
                    "{from} -> {} is used but not allowed",
                    transition.to
                );
            }
        }
    }

    #[test]
    fn terminal_states_only_leave_by_retry() {
        for from in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in JobStatus::ALL {
                if JobStatus::can_transition(from, to) {
                    assert_eq!(to, JobStatus::Queued, "{from} -> {to}");
                }
            }
        }
        assert!(!JobStatus::can_transition(
            JobStatus::Resolved,
            JobStatus::Queued
        ));
        assert!(!JobStatus::can_transition(
            JobStatus::Pending,
            JobStatus::Investigating
        ));
    }

    #[test]
    fn status_text_round_trips() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().unwrap(), status);
        }
        let err = "running".parse::<JobStatus>().unwrap_err();
        assert!(err.contains("unknown status `running`"), "{err}");
    }

    #[test]
    fn times_are_truncated_to_microseconds() {
        let t = DateTime::parse_from_rfc3339("2026-11-26T10:00:00.123456789Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(db_time(t).timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(
            after(t, Duration::MAX),
            DateTime::<Utc>::MAX_UTC.trunc_subsecs(6)
        );
    }
}
