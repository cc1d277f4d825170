//! Retention, so a service that runs for months does not fill its disk or database:
//! - ended incidents older than `retention.incidents` are deleted with their fault event, plugin
//!   runs, agent executions and reports, their report files in the report store and their
//!   workspace ([`Retention::purge`]);
//! - dead letters (`rejected_events`) older than `retention.rejected_events` are deleted;
//! - operational alerts (`alerts`, with their deliveries) older than `retention.alerts` are
//!   deleted, except each cluster's newest feed alert: it says whether the feed is reported
//!   down, which a replica taking the feed over reads;
//! - incident workspaces go earlier, after `agent.workspace_retention` ([`prune_workspaces`]);
//! - the plugin compile cache drops the artefacts of wasmtime versions no longer in use.
//!
//! Deletes run in small batches, each its own short transaction, with a pause between batches,
//! so ingest (which commits on its own connection) is never held up for long. An open incident
//! is never touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, TransactionTrait,
};
use uuid::Uuid;

use crate::alert::AlertKind;
use crate::queue::{JobStatus, Queue, QueueError, db_time};
use crate::report::ReportStore;
use crate::store::StoreError;
use crate::store::entity::{
    agent_executions, alert_deliveries, alerts, fault_events, incidents, plugin_runs,
    rejected_events, triage_reports,
};

/// `[retention]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionConfig {
    /// How long ended incidents are kept after they ended; `None` keeps them forever.
    pub incidents: Option<Duration>,
    /// How long dead letters are kept; `None` keeps them forever.
    pub rejected_events: Option<Duration>,
    /// How long operational alerts are kept; `None` keeps them forever.
    pub alerts: Option<Duration>,
    /// Rows deleted per transaction.
    pub batch_size: u64,
    /// The pause between two batches.
    pub batch_pause: Duration,
    /// How often a pass runs.
    pub interval: Duration,
}

const THIRTY_DAYS: Duration = Duration::from_secs(30 * 24 * 3600);

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            incidents: Some(THIRTY_DAYS),
            rejected_events: Some(THIRTY_DAYS),
            alerts: Some(THIRTY_DAYS),
            batch_size: 200,
            batch_pause: Duration::from_millis(100),
            interval: Duration::from_secs(3600),
        }
    }
}

/// What one retention pass deleted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Ended incidents deleted (each with its event and the rows about it).
    pub incidents: usize,
    /// Dead letters deleted.
    pub rejected_events: usize,
    /// Alerts deleted (each with its deliveries).
    pub alerts: usize,
    /// Objects deleted from the report store.
    pub report_objects: usize,
    /// Workspaces of deleted incidents removed.
    pub workspaces: usize,
    /// Batches (transactions) it took.
    pub batches: usize,
}

/// The retention task of `serve`.
#[derive(Clone, Debug)]
pub struct Retention {
    /// The queue and its store.
    pub queue: Queue,
    /// What to keep.
    pub config: RetentionConfig,
    /// The report store whose files go with their incident.
    pub reports: Option<ReportStore>,
    /// Where incident workspaces are.
    pub workspace_root: PathBuf,
    /// How long ended incidents' workspaces are kept; `None` keeps them (until the incident goes).
    pub workspace_retention: Option<Duration>,
    /// The plugin compile cache, if plugins are loaded.
    pub compile_cache: Option<PathBuf>,
}

impl Retention {
    /// Deletes what is older than the configured ages at `now`, batch by batch.
    pub async fn purge(&self, now: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        let mut report = PurgeReport::default();
        if let Some(keep) = self.config.incidents {
            let cutoff = db_time(before(now, keep));
            loop {
                let batch = self.ended_before(cutoff).await?;
                if batch.is_empty() {
                    break;
                }
                for (id, _) in &batch {
                    report.report_objects += self.delete_files(*id).await;
                    let workspace = self.workspace_root.join(id.to_string());
                    if tokio::fs::remove_dir_all(&workspace).await.is_ok() {
                        report.workspaces += 1;
                    }
                }
                report.incidents += self.delete_incidents(&batch).await?;
                report.batches += 1;
                tokio::time::sleep(self.config.batch_pause).await;
            }
        }
        if let Some(keep) = self.config.rejected_events {
            let cutoff = db_time(before(now, keep));
            loop {
                let deleted = self.delete_rejected_before(cutoff).await?;
                if deleted == 0 {
                    break;
                }
                report.rejected_events += deleted;
                report.batches += 1;
                tokio::time::sleep(self.config.batch_pause).await;
            }
        }
        if let Some(keep) = self.config.alerts {
            let cutoff = db_time(before(now, keep));
            loop {
                let deleted = self.delete_alerts_before(cutoff).await?;
                if deleted == 0 {
                    break;
                }
                report.alerts += deleted;
                report.batches += 1;
                tokio::time::sleep(self.config.batch_pause).await;
            }
        }
        Ok(report)
    }

    /// Deletes one batch of alerts raised before `cutoff`, with their deliveries, keeping each
    /// cluster's newest feed alert; returns how many.
    async fn delete_alerts_before(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let db = self.queue.store().connection();
        let backend = db.get_database_backend();
        let feed = [AlertKind::FeedDown.as_str(), AlertKind::FeedUp.as_str()];
        let limit = i64::try_from(self.config.batch_size).unwrap_or(i64::MAX);
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                "SELECT a.id AS id FROM alerts a WHERE a.raised_at < $1 \
                 AND NOT (a.kind IN ($2, $3) AND a.cluster IS NOT NULL AND NOT EXISTS ( \
                   SELECT 1 FROM alerts b WHERE b.cluster = a.cluster AND b.kind IN ($2, $3) \
                   AND (b.raised_at > a.raised_at OR (b.raised_at = a.raised_at AND b.id > a.id)))) \
                 ORDER BY a.raised_at, a.id LIMIT $4",
                [cutoff.into(), feed[0].into(), feed[1].into(), limit.into()],
            ))
            .await?;
        let ids = rows
            .iter()
            .map(|row| row.try_get::<String>("", "id"))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let txn = db.begin().await?;
        alert_deliveries::Entity::delete_many()
            .filter(alert_deliveries::Column::AlertId.is_in(ids.clone()))
            .exec(&txn)
            .await?;
        let deleted = alerts::Entity::delete_many()
            .filter(alerts::Column::Id.is_in(ids))
            .exec(&txn)
            .await?
            .rows_affected;
        txn.commit().await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// One batch of ended incidents older than `cutoff`: (incident id, fault event id).
    async fn ended_before(&self, cutoff: DateTime<Utc>) -> Result<Vec<(Uuid, String)>, StoreError> {
        let ended = [
            JobStatus::Resolved,
            JobStatus::AgentFailed,
            JobStatus::Failed,
            JobStatus::Skipped,
        ]
        .map(|status| status.as_str());
        let rows: Vec<(String, String)> = incidents::Entity::find()
            .select_only()
            .column(incidents::Column::Id)
            .column(incidents::Column::FaultEventId)
            .filter(incidents::Column::Status.is_in(ended))
            .filter(
                Condition::any()
                    .add(incidents::Column::CompletedAt.lt(cutoff))
                    .add(
                        Condition::all()
                            .add(incidents::Column::CompletedAt.is_null())
                            .add(incidents::Column::UpdatedAt.lt(cutoff)),
                    ),
            )
            .order_by_asc(incidents::Column::CreatedAt)
            .limit(self.config.batch_size)
            .into_tuple()
            .all(self.queue.store().connection())
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, event)| Uuid::parse_str(&id).ok().map(|id| (id, event)))
            .collect())
    }

    /// Deletes incident `id`'s folder in the report store, if its reports were kept in this one.
    async fn delete_files(&self, id: Uuid) -> usize {
        let Some(objects) = &self.reports else {
            return 0;
        };
        let folder = objects.folder_uri(id);
        let kept_here = triage_reports::Entity::find()
            .filter(triage_reports::Column::IncidentId.eq(id.to_string()))
            .filter(triage_reports::Column::StoreUri.eq(folder.clone()))
            .one(self.queue.store().connection())
            .await;
        if !matches!(kept_here, Ok(Some(_))) {
            return 0;
        }
        match objects.delete_folder(id).await {
            Ok(deleted) => deleted,
            Err(error) => {
                // the rows go anyway: a report store that refuses deletes must not keep the
                // database growing; the folder is named in the log for the operator
                tracing::warn!(incident_id = %id, folder = %folder, error = %crate::report::storage::describe(&error), "could not delete an expired report's files");
                0
            }
        }
    }

    /// Deletes the incidents of `batch` and everything about them in one transaction.
    async fn delete_incidents(&self, batch: &[(Uuid, String)]) -> Result<usize, StoreError> {
        let ids: Vec<String> = batch.iter().map(|(id, _)| id.to_string()).collect();
        let events: Vec<String> = batch.iter().map(|(_, event)| event.clone()).collect();
        let txn = self.queue.store().connection().begin().await?;
        triage_reports::Entity::delete_many()
            .filter(triage_reports::Column::IncidentId.is_in(ids.clone()))
            .exec(&txn)
            .await?;
        agent_executions::Entity::delete_many()
            .filter(agent_executions::Column::IncidentId.is_in(ids.clone()))
            .exec(&txn)
            .await?;
        plugin_runs::Entity::delete_many()
            .filter(plugin_runs::Column::IncidentId.is_in(ids.clone()))
            .exec(&txn)
            .await?;
        // only incidents still ended: a retry may have reopened one since it was selected
        let deleted = incidents::Entity::delete_many()
            .filter(incidents::Column::Id.is_in(ids))
            .filter(incidents::Column::Status.is_in([
                JobStatus::Resolved.as_str(),
                JobStatus::AgentFailed.as_str(),
                JobStatus::Failed.as_str(),
                JobStatus::Skipped.as_str(),
            ]))
            .exec(&txn)
            .await?
            .rows_affected;
        // an event whose incident stayed (reopened) is still referenced, so it stays too
        let referenced: Vec<String> = incidents::Entity::find()
            .select_only()
            .column(incidents::Column::FaultEventId)
            .filter(incidents::Column::FaultEventId.is_in(events.clone()))
            .into_tuple()
            .all(&txn)
            .await?;
        let events: Vec<String> = events
            .into_iter()
            .filter(|event| !referenced.contains(event))
            .collect();
        fault_events::Entity::delete_many()
            .filter(fault_events::Column::Id.is_in(events))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// Deletes one batch of dead letters received before `cutoff`; returns how many.
    async fn delete_rejected_before(&self, cutoff: DateTime<Utc>) -> Result<usize, StoreError> {
        let db = self.queue.store().connection();
        let ids: Vec<String> = rejected_events::Entity::find()
            .select_only()
            .column(rejected_events::Column::Id)
            .filter(rejected_events::Column::ReceivedAt.lt(cutoff))
            .order_by_asc(rejected_events::Column::ReceivedAt)
            .limit(self.config.batch_size)
            .into_tuple()
            .all(db)
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let deleted = rejected_events::Entity::delete_many()
            .filter(rejected_events::Column::Id.is_in(ids))
            .exec(db)
            .await?
            .rows_affected;
        Ok(usize::try_from(deleted).unwrap_or(usize::MAX))
    }

    /// One whole pass: rows, workspaces, compile cache. Errors are logged.
    pub async fn pass(&self, now: DateTime<Utc>) {
        match self.purge(now).await {
            Ok(report) if report.incidents + report.rejected_events + report.alerts > 0 => {
                tracing::info!(
                    incidents = report.incidents,
                    rejected_events = report.rejected_events,
                    alerts = report.alerts,
                    report_objects = report.report_objects,
                    workspaces = report.workspaces,
                    batches = report.batches,
                    "deleted expired incidents, dead letters and alerts"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "deleting expired data failed"),
        }
        if let Some(keep) = self.workspace_retention {
            match prune_workspaces(&self.queue, &self.workspace_root, keep, now).await {
                Ok(report) if !report.removed.is_empty() => {
                    tracing::info!(
                        removed = report.removed.len(),
                        kept = report.kept,
                        "removed expired incident workspaces"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "pruning workspaces failed"),
            }
        }
        if let Some(cache) = &self.compile_cache {
            match nightcrier_plugin_host::prune_compile_cache(cache).await {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(removed = removed.len(), cache = %cache.display(), "removed compiled plugins of other wasmtime versions");
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(cache = %cache.display(), error = %error, "pruning the plugin compile cache failed");
                }
            }
        }
    }

    /// Runs a pass every `interval` until `shutdown`; the first a minute after start.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(60),
            self.config.interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = self.pass(Utc::now()) => {}
            }
        }
    }
}

/// `keep` before `now`, or the start of time when `keep` reaches past it.
fn before(now: DateTime<Utc>, keep: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(keep)
        .ok()
        .and_then(|keep| now.checked_sub_signed(keep))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// What one workspace pruning pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Workspaces removed, by incident id.
    pub removed: Vec<Uuid>,
    /// Workspaces kept because their incident is still open or ended recently.
    pub kept: usize,
}

/// Removes the workspace folders under `root` whose incident ended (resolved, agent failed,
/// failed or skipped) more than `keep` before `now`, and those of incidents the database no
/// longer has once the folder is older than `keep`. Folders not named by an incident id are
/// never touched; nor is the workspace of an incident that is pending, queued or investigating.
pub async fn prune_workspaces(
    queue: &Queue,
    root: &Path,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<PruneReport, QueueError> {
    let cutoff = before(now, keep);
    let mut report = PruneReport::default();
    for (id, path) in incident_folders(root).await {
        let expired = match queue.get(id).await {
            Ok(incident) => {
                incident.status.is_terminal()
                    && incident.completed_at.unwrap_or(incident.updated_at) < cutoff
            }
            Err(QueueError::NotFound(_)) => modified(&path).await.is_some_and(|at| at < cutoff),
            Err(error) => return Err(error),
        };
        if !expired {
            report.kept += 1;
            continue;
        }
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => report.removed.push(id),
            Err(error) => {
                tracing::warn!(incident_id = %id, path = %path.display(), error = %error, "could not remove an expired workspace");
            }
        }
    }
    report.removed.sort();
    Ok(report)
}

async fn incident_folders(root: &Path) -> Vec<(Uuid, PathBuf)> {
    let mut found = Vec::new();
    let Ok(mut entries) = tokio::fs::read_dir(root).await else {
        return found;
    };
    while let Ok(Some(entry)) = entries.next_entry().await {
        let is_dir = entry
            .file_type()
            .await
            .is_ok_and(|file_type| file_type.is_dir());
        let id = entry
            .file_name()
            .to_str()
            .and_then(|name| Uuid::parse_str(name).ok());
        if let (true, Some(id)) = (is_dir, id) {
            found.push((id, entry.path()));
        }
    }
    found
}

async fn modified(path: &Path) -> Option<DateTime<Utc>> {
    let metadata = tokio::fs::symlink_metadata(path).await.ok()?;
    metadata.modified().ok().map(DateTime::<Utc>::from)
}
