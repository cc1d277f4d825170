//! The report stage against real stores, on both backends: a report goes to the database first
//! and then to an S3 bucket (moto in server mode, started here); an upload made while the server
//! is down fails, is tried again with backoff, and succeeds once the server is back — the report
//! is in the database all along and nothing of it is lost.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use nightcrier::report::{Draft, ReportStore, Reports, ReportsConfig, StoreLocation, UploadPass};

use crate::support::moto::Moto;
use crate::support::process::free_port;
use crate::support::{backends, event};

const BUCKET: &str = "nightcrier-reports";
/// What the environment holds for the store; the secret must never reach a row or a log.
const SECRET: &str = "s3cr3t-k3y-n0t-for-the-database";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_upload_that_fails_while_the_server_is_down_succeeds_once_it_is_back() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let env = [
            ("AWS_ACCESS_KEY_ID", "nightcrier-test"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("HOME", "/nonexistent"),
        ]
        .map(|(key, value)| (key.to_owned(), value.to_owned()));
        let location = StoreLocation::parse(&format!("s3://{BUCKET}/prod")).unwrap();
        let objects = ReportStore::open(&location, &BTreeMap::new(), env.clone()).unwrap();
        assert_eq!(objects.kind(), "s3");
        let mut config = ReportsConfig::default_for(dir.path());
        config.store = location;
        config.retry_initial = Duration::from_secs(1);
        config.retry_max = Duration::from_secs(4);

        let queue = db.queue().await;
        let incident_id = queue.ingest(&event("prod", 1)).await.unwrap().incident_id;
        let incident = queue.get(incident_id).await.unwrap();
        // a workspace with a log the report keeps, and a file it must not
        let workspace = dir.path().join("workspaces").join(incident_id.to_string());
        std::fs::create_dir_all(workspace.join("logs")).unwrap();
        std::fs::write(workspace.join("logs/agent-full.log"), "agent log line\n").unwrap();
        std::fs::write(workspace.join("kubeconfig"), "not for the bucket").unwrap();
        let reports = Reports::new(
            queue.clone(),
            objects.clone(),
            config,
            dir.path().join("workspaces"),
        );

        // the server is down: the report is kept in the database, its upload is pending
        let markdown = "# Investigation\n\nThe config map is missing. <script>alert(1)</script>\n";
        let before = Utc::now();
        let id = reports
            .keep(
                &incident,
                Draft {
                    markdown: markdown.into(),
                    summary: Some("The config map is missing.".into()),
                    ..Draft::default()
                },
            )
            .await
            .expect("the row is written even though the store is down");
        let row = queue.store().report(id).await.unwrap().unwrap();
        assert_eq!(row.report_markdown, markdown, "{}", db.backend);
        assert!(
            row.report_html
                .as_deref()
                .is_some_and(|html| !html.contains("<script"))
        );
        assert_eq!(row.storage_type, "s3");
        assert_eq!(
            row.store_uri.as_deref(),
            Some(format!("s3://{BUCKET}/prod/{incident_id}/").as_str())
        );
        assert!(row.uploaded_at.is_none(), "{}", db.backend);
        assert_eq!(row.upload_attempts, 1);
        let error = row.upload_error.clone().expect("the failure is recorded");
        assert!(!error.contains(SECRET), "{error}");
        assert!(
            row.next_upload_at.unwrap() > before,
            "backoff before the next try"
        );

        // not due yet: nothing is tried; due while still down: it fails again, backing off
        assert_eq!(reports.upload_due(Utc::now()).await, UploadPass::default());
        let pass = reports
            .upload_due(Utc::now() + chrono::Duration::hours(1))
            .await;
        assert_eq!(
            pass,
            UploadPass {
                uploaded: 0,
                failed: 1
            },
            "{}",
            db.backend
        );
        let row = queue.store().report(id).await.unwrap().unwrap();
        assert_eq!(row.upload_attempts, 2);
        assert!(row.uploaded_at.is_none());

        // the server is back: the next due pass uploads everything
        let moto = Moto::start(port).await;
        moto.create_bucket(BUCKET).await;
        let pass = reports
            .upload_due(Utc::now() + chrono::Duration::hours(2))
            .await;
        assert_eq!(
            pass,
            UploadPass {
                uploaded: 1,
                failed: 0
            },
            "{}",
            db.backend
        );
        let row = queue.store().report(id).await.unwrap().unwrap();
        assert!(row.uploaded_at.is_some(), "{}", db.backend);
        assert!(row.upload_error.is_none());
        assert_eq!(
            reports
                .upload_due(Utc::now() + chrono::Duration::hours(3))
                .await,
            UploadPass::default(),
            "an uploaded report is not uploaded again"
        );

        // the layout, read back from the server
        let read = |name: &'static str| {
            let objects = objects.clone();
            async move {
                objects
                    .get(incident_id, name)
                    .await
                    .map(|bytes| String::from_utf8(bytes.to_vec()).unwrap())
            }
        };
        assert_eq!(read("investigation.md").await.unwrap(), markdown);
        let page = read("investigation.html").await.unwrap();
        assert!(page.contains("The config map is missing."), "{page}");
        assert!(
            page.contains("CrashLoop") && page.contains("prod"),
            "{page}"
        );
        assert!(!page.contains("<script"), "{page}");
        let document: serde_json::Value =
            serde_json::from_str(&read("incident.json").await.unwrap()).unwrap();
        assert_eq!(document["incident"]["id"], incident_id.to_string());
        assert_eq!(
            read("artifacts/logs/agent-full.log").await.unwrap(),
            "agent log line\n"
        );
        assert!(read("artifacts/kubeconfig").await.is_err());
        // under the URL's prefix: a store opened at the bucket's root sees it at prod/<id>/
        let root = ReportStore::open(
            &StoreLocation::parse(&format!("s3://{BUCKET}")).unwrap(),
            &BTreeMap::new(),
            env.clone(),
        )
        .unwrap();
        assert!(root.get(incident_id, "investigation.md").await.is_err());
        assert_eq!(root.delete_folder(incident_id).await.unwrap(), 0);
        moto.stop();
    }
}
