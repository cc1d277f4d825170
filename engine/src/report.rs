//! The report stage, after post-triage: the report is rendered to a self-contained HTML page
//! ([`render`]), kept in `triage_reports` (markdown and HTML, so it is never lost), and then
//! uploaded with its files to the report store ([`storage`]). An upload that fails is tried
//! again with backoff by [`Reports::upload_loop`] until it succeeds; until then the row says the
//! upload is pending and the API serves the report from the database.

pub mod render;
pub mod storage;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use render::Summary;
pub use storage::{ReportStore, StoreLocation};

use crate::queue::{Incident, Queue};
use crate::store::NewReport;
use crate::store::entity::{fault_events, triage_reports};

/// The report files' names in an incident's folder (the original's workspace names).
pub const MARKDOWN_FILE: &str = "investigation.md";
/// The rendered page.
pub const HTML_FILE: &str = "investigation.html";
/// The incident document.
pub const INCIDENT_FILE: &str = "incident.json";
/// The folder of workspace files kept with a report.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Workspace files copied under `artifacts/`: these, and the files under `logs/` and `output/`
/// (but not `output/investigation.md`: the report itself is uploaded as post-triage left it,
/// redactions included).
const ARTIFACT_FILES: &[&str] = &["prompt-sent.md", "incident_cluster_permissions.json"];
const ARTIFACT_DIRS: &[&str] = &["logs", "output"];
/// Files larger than this are not copied; nor is anything past the total.
const ARTIFACT_FILE_CAP: u64 = 32 << 20;
const ARTIFACT_TOTAL_CAP: u64 = 128 << 20;
/// How long the worker waits for a report's first upload.
const INLINE_UPLOAD: Duration = Duration::from_secs(30);
/// Reports looked at in one pass of the upload loop.
const UPLOAD_BATCH: u64 = 20;

/// `[reports]`, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportsConfig {
    /// Where reports go.
    pub store: StoreLocation,
    /// Options of the store (`aws_region`, `aws_endpoint`, …); never credentials.
    pub options: BTreeMap<String, String>,
    /// Whether workspace files are kept with the report under `artifacts/`.
    pub artifacts: bool,
    /// The first wait after a failed upload; doubled after each failure up to `retry_max`.
    pub retry_initial: Duration,
    /// The longest wait between two tries.
    pub retry_max: Duration,
}

impl ReportsConfig {
    /// The defaults, storing under `data_dir/reports`.
    pub fn default_for(data_dir: &Path) -> Self {
        Self {
            store: StoreLocation::Local(data_dir.join("reports")),
            options: BTreeMap::new(),
            artifacts: true,
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(600),
        }
    }

    /// The wait before try `attempts + 1`, after `attempts` failures.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let doublings = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.retry_initial
            .saturating_mul(2u32.saturating_pow(doublings))
            .min(self.retry_max)
    }
}

/// What post-triage hands over.
#[derive(Clone, Debug, Default)]
pub struct Draft {
    /// The agent execution that produced it.
    pub execution_id: Option<Uuid>,
    /// The report, as post-triage left it.
    pub markdown: String,
    /// Fields added by post-triage plugins.
    pub structured: Option<serde_json::Value>,
    /// One line of it.
    pub summary: Option<String>,
    /// The report file in the workspace.
    pub artifact_uri: Option<String>,
    /// How the run ended (`resolved`, `agent_failed`), and when: the incident row says so only
    /// after the report is kept.
    pub outcome: Option<(String, DateTime<Utc>)>,
}

/// What one pass of the upload loop did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UploadPass {
    /// Reports now in the store.
    pub uploaded: usize,
    /// Reports whose upload failed again.
    pub failed: usize,
}

/// Keeps reports: the database row first, then the report store.
#[derive(Clone, Debug)]
pub struct Reports {
    queue: Queue,
    objects: ReportStore,
    config: Arc<ReportsConfig>,
    workspace_root: PathBuf,
}

impl Reports {
    /// Reports of `queue`'s incidents, uploaded to `objects`, with artifacts from the workspaces
    /// under `workspace_root`.
    pub fn new(
        queue: Queue,
        objects: ReportStore,
        config: ReportsConfig,
        workspace_root: PathBuf,
    ) -> Self {
        Self {
            queue,
            objects,
            config: Arc::new(config),
            workspace_root,
        }
    }

    /// The report store.
    pub fn objects(&self) -> &ReportStore {
        &self.objects
    }

    /// Renders `draft` for `incident`, stores the row (upload pending) and tries the upload
    /// once; a failed upload is left to [`Reports::upload_loop`]. Returns the report's id, or
    /// `None` if the row could not be written (logged).
    pub async fn keep(&self, incident: &Incident, draft: Draft) -> Option<Uuid> {
        let now = Utc::now();
        let event = match self
            .queue
            .store()
            .fault_event(&incident.fault_event_id.to_string())
            .await
        {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(incident_id = %incident.id, error = %error, "cannot read the fault event; the report page has a shorter summary");
                None
            }
        };
        let mut summary = summary_of(incident, event.as_ref(), now);
        if let Some((status, ended)) = &draft.outcome {
            summary.status.clone_from(status);
            summary.completed_at = Some(*ended);
        }
        let html = render::page(&summary, &draft.markdown);
        let report = NewReport {
            incident_id: incident.id,
            execution_id: draft.execution_id,
            markdown: draft.markdown,
            html: Some(html),
            structured: draft.structured,
            summary: draft.summary,
            artifact_uri: draft.artifact_uri,
            storage_type: self.objects.kind().to_owned(),
            store_uri: Some(self.objects.folder_uri(incident.id)),
        };
        let id = match self.queue.store().insert_report(&report, now).await {
            Ok(id) => id,
            Err(error) => {
                tracing::error!(incident_id = %incident.id, error = %error, "could not store the report");
                return None;
            }
        };
        // a slow store must not hold the worker: what this try does not finish, the loop does
        if tokio::time::timeout(INLINE_UPLOAD, self.try_upload(id, now))
            .await
            .is_err()
        {
            tracing::warn!(incident_id = %incident.id, "report upload still running after 30s; the upload loop takes over");
        }
        Some(id)
    }

    /// Uploads every report whose upload is due at `now` (at most a batch).
    pub async fn upload_due(&self, now: DateTime<Utc>) -> UploadPass {
        let mut pass = UploadPass::default();
        let due = match self.queue.store().due_uploads(now, UPLOAD_BATCH).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(error = %error, "cannot read the pending report uploads");
                return pass;
            }
        };
        for row in due {
            let Ok(id) = Uuid::parse_str(&row.id) else {
                continue;
            };
            if self.try_upload(id, now).await {
                pass.uploaded += 1;
            } else {
                pass.failed += 1;
            }
        }
        pass
    }

    /// Uploads due reports every `retry_initial` until `shutdown`.
    pub async fn upload_loop(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.retry_initial);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let pass = self.upload_due(Utc::now()).await;
            if pass.uploaded > 0 {
                tracing::info!(
                    uploaded = pass.uploaded,
                    failed = pass.failed,
                    "uploaded pending reports"
                );
            }
        }
    }

    /// One try; on failure the row gets its next try time and the error. True if uploaded.
    async fn try_upload(&self, id: Uuid, now: DateTime<Utc>) -> bool {
        let row = match self.queue.store().report(id).await {
            Ok(Some(row)) => row,
            Ok(None) => return false,
            Err(error) => {
                tracing::warn!(report_id = %id, error = %error, "cannot read a report to upload");
                return false;
            }
        };
        if row.uploaded_at.is_some() {
            return true;
        }
        match self.upload(&row).await {
            Ok(files) => {
                tracing::info!(incident_id = %row.incident_id, files, store = row.store_uri.as_deref().unwrap_or_default(), "report uploaded");
                metrics::counter!("nightcrier_report_uploads_total", "outcome" => "uploaded")
                    .increment(1);
                if let Err(error) = self.queue.store().report_uploaded(id, Utc::now()).await {
                    tracing::warn!(report_id = %id, error = %error, "could not record a report upload; it will be uploaded again");
                }
                true
            }
            Err(error) => {
                let attempts = row.upload_attempts.saturating_add(1);
                let wait = self.config.backoff(attempts);
                let next = chrono::Duration::from_std(wait)
                    .ok()
                    .and_then(|wait| now.checked_add_signed(wait))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                tracing::warn!(incident_id = %row.incident_id, attempts, retry_in = ?wait, error = %error, "report upload failed; the report is kept in the database and uploaded later");
                metrics::counter!("nightcrier_report_uploads_total", "outcome" => "failed")
                    .increment(1);
                if let Err(error) = self
                    .queue
                    .store()
                    .report_upload_failed(id, attempts, next, &error)
                    .await
                {
                    tracing::warn!(report_id = %id, error = %error, "could not record a failed report upload");
                }
                false
            }
        }
    }

    /// Writes the report's files; returns how many.
    async fn upload(&self, row: &triage_reports::Model) -> Result<usize, String> {
        let incident_id = Uuid::parse_str(&row.incident_id).map_err(|e| e.to_string())?;
        let incident = self
            .queue
            .get(incident_id)
            .await
            .map_err(|e| e.to_string())?;
        let event = self
            .queue
            .store()
            .fault_event(&incident.fault_event_id.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let html = match &row.report_html {
            Some(html) => html.clone(),
            None => render::page(
                &summary_of(&incident, event.as_ref(), row.generated_at),
                &row.report_markdown,
            ),
        };
        let workspace = self.workspace_root.join(incident_id.to_string());
        let document = match tokio::fs::read(workspace.join(INCIDENT_FILE)).await {
            Ok(bytes) => bytes,
            Err(_) => serde_json::to_vec_pretty(&serde_json::json!({
                "incident": incident,
                "event": event,
            }))
            .map_err(|e| e.to_string())?,
        };
        let put = |name: String, bytes: Bytes| {
            let objects = self.objects.clone();
            async move {
                objects
                    .put(incident_id, &name, bytes)
                    .await
                    .map_err(|error| format!("{name}: {}", storage::describe(&error)))
            }
        };
        let mut files = 0;
        if self.config.artifacts {
            for (name, bytes) in artifacts(&workspace).await {
                put(format!("{ARTIFACTS_DIR}/{name}"), bytes).await?;
                files += 1;
            }
        }
        put(INCIDENT_FILE.into(), Bytes::from(document)).await?;
        put(
            MARKDOWN_FILE.into(),
            Bytes::from(row.report_markdown.clone()),
        )
        .await?;
        // the page last: its presence says the folder is complete
        put(HTML_FILE.into(), Bytes::from(html)).await?;
        Ok(files + 3)
    }
}

/// The page header's facts.
pub fn summary_of(
    incident: &Incident,
    event: Option<&fault_events::Model>,
    generated_at: DateTime<Utc>,
) -> Summary {
    let resource = event.and_then(|event| match (&event.resource_kind, &event.resource_name) {
        (Some(kind), Some(name)) => Some(format!("{kind}/{name}")),
        (None, Some(name)) => Some(name.clone()),
        _ => None,
    });
    Summary {
        incident_id: incident.id.to_string(),
        cluster: incident.cluster.clone(),
        namespace: event.and_then(|event| event.resource_namespace.clone()),
        resource,
        fault_type: event
            .map(|event| event.fault_type.clone())
            .or_else(|| incident.fault_type.clone())
            .unwrap_or_default(),
        severity: event
            .map(|event| event.severity.clone())
            .or_else(|| incident.severity.clone())
            .unwrap_or_default(),
        status: incident.status.as_str().to_owned(),
        fault_time: event.and_then(|event| event.timestamp.clone()),
        created_at: incident.created_at,
        completed_at: incident.completed_at,
        generated_at,
    }
}

/// The workspace files kept with a report, by their path in the workspace. Only regular files:
/// a symbolic link the agent left is never followed.
async fn artifacts(workspace: &Path) -> Vec<(String, Bytes)> {
    let mut names: Vec<String> = ARTIFACT_FILES
        .iter()
        .map(|name| (*name).to_owned())
        .collect();
    for dir in ARTIFACT_DIRS {
        let mut pending = vec![((*dir).to_owned(), 0)];
        while let Some((relative, depth)) = pending.pop() {
            let Ok(mut entries) = tokio::fs::read_dir(workspace.join(&relative)).await else {
                continue;
            };
            while let Ok(Some(entry)) = entries.next_entry().await {
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let path = format!("{relative}/{name}");
                match entry.file_type().await {
                    Ok(kind) if kind.is_dir() && depth < 4 => pending.push((path, depth + 1)),
                    Ok(kind) if kind.is_file() && path != "output/investigation.md" => {
                        names.push(path);
                    }
                    _ => {}
                }
            }
        }
    }
    names.sort();
    let mut found = Vec::new();
    let mut total = 0u64;
    for name in names {
        let path = workspace.join(&name);
        let Ok(meta) = tokio::fs::symlink_metadata(&path).await else {
            continue;
        };
        if !meta.is_file()
            || meta.len() > ARTIFACT_FILE_CAP
            || total + meta.len() > ARTIFACT_TOTAL_CAP
        {
            if meta.is_file() {
                tracing::warn!(file = %name, bytes = meta.len(), "workspace file too large to keep with the report");
            }
            continue;
        }
        if let Ok(bytes) = tokio::fs::read(&path).await {
            total += bytes.len() as u64;
            found.push((name, Bytes::from(bytes)));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let config = ReportsConfig::default_for(Path::new("data"));
        assert_eq!(config.backoff(1), Duration::from_secs(10));
        assert_eq!(config.backoff(2), Duration::from_secs(20));
        assert_eq!(config.backoff(4), Duration::from_secs(80));
        assert_eq!(config.backoff(100), Duration::from_secs(600));
    }

    #[tokio::test]
    async fn artifacts_are_regular_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = dir.path();
        std::fs::create_dir_all(workspace.join("logs")).unwrap();
        std::fs::create_dir_all(workspace.join("output/extra")).unwrap();
        std::fs::write(workspace.join("prompt-sent.md"), "prompt").unwrap();
        std::fs::write(workspace.join("logs/agent-full.log"), "log").unwrap();
        std::fs::write(workspace.join("output/investigation.md"), "raw report").unwrap();
        std::fs::write(workspace.join("output/extra/notes.txt"), "notes").unwrap();
        std::fs::write(workspace.join("kubeconfig"), "secret").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", workspace.join("output/host")).unwrap();
        let names: Vec<String> = artifacts(workspace)
            .await
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "logs/agent-full.log",
                "output/extra/notes.txt",
                "prompt-sent.md"
            ]
        );
    }
}
