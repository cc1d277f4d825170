//! Retention: incident workspaces (agent logs, outputs, staged inputs) are removed some time
//! after their incident ended, so a busy fleet cannot fill the disk. Reports, executions and
//! events stay in the database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::queue::{Queue, QueueError};

/// What one pruning pass did.
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
    let cutoff = now - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
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

/// Prunes every `every` until `shutdown`; the first pass runs a minute after start.
pub async fn prune_loop(
    queue: Queue,
    root: PathBuf,
    keep: Duration,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(60), every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match prune_workspaces(&queue, &root, keep, Utc::now()).await {
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
