//! Test databases on both backends, and sample events.

use chrono::Utc;
use nightcrier::queue::{NewFaultEvent, ResourceRef};
use nightcrier::{Queue, Store, StoreConfig};
use sea_orm::{ConnectionTrait, Database};

/// A fresh, empty database on one backend.
pub(crate) struct TestDb {
    pub(crate) backend: &'static str,
    pub(crate) url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub(crate) async fn store(&self) -> Store {
        Store::connect(&StoreConfig::new(&self.url))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.backend))
    }

    /// A store with every migration applied, wrapped in a queue.
    pub(crate) async fn queue(&self) -> Queue {
        let store = self.store().await;
        store.migrate_up().await.unwrap();
        Queue::new(store)
    }
}

/// One fresh SQLite file and one fresh Postgres database.
pub(crate) async fn backends() -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = TestDb {
        backend: "sqlite",
        url: format!("sqlite://{}/nightcrier.db", dir.path().display()),
        _dir: Some(dir),
    };
    let mut all = vec![sqlite];
    if let Some(pg) = postgres().await {
        all.push(pg);
    }
    all
}

/// A fresh Postgres database on the test server.
pub(crate) async fn postgres() -> Option<TestDb> {
    let Ok(admin_url) = std::env::var("NIGHTCRIER_TEST_PG_URL") else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("NIGHTCRIER_TEST_PG_URL is not set and CI=true: Postgres tests must run in CI");
        }
        eprintln!(
            "WARNING: NIGHTCRIER_TEST_PG_URL is not set; the Postgres half of this test did not run (use tests/run.sh)"
        );
        return None;
    };
    let name = format!("nc_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(&admin_url).await.unwrap_or_else(|e| {
        panic!("cannot reach the test Postgres at NIGHTCRIER_TEST_PG_URL: {e}")
    });
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    admin.close().await.unwrap();
    let base = admin_url.rsplit_once('/').map(|(base, _)| base).unwrap();
    Some(TestDb {
        backend: "postgres",
        url: format!("{base}/{name}"),
        _dir: None,
    })
}

/// A CrashLoop event on `cluster`.
pub(crate) fn event(cluster: &str, n: usize) -> NewFaultEvent {
    NewFaultEvent {
        source: "kubernetes-mcp".into(),
        cluster: cluster.into(),
        fault_id: Some("a817ebcffcb2cf13".into()),
        subscription_id: Some("sub-3f2a9c1e".into()),
        resource: Some(ResourceRef {
            api_version: "v1".into(),
            kind: "Pod".into(),
            name: format!("checkout-{n}"),
            namespace: Some("shop".into()),
            uid: Some("6b1f0c2e".into()),
        }),
        fault_type: "CrashLoop".into(),
        severity: "critical".into(),
        context: "Container entered CrashLoopBackOff state".into(),
        timestamp: Some("2025-12-20T14:07:31Z".into()),
        payload: serde_json::json!({"faultType": "CrashLoop", "n": n}),
        received_at: Utc::now(),
        labels: [("tier".to_owned(), "gold".to_owned())].into(),
    }
}

/// Moves every pending incident to queued through the real pre-triage operations.
pub(crate) async fn queue_all_pending(queue: &Queue) {
    let now = Utc::now();
    loop {
        let taken = queue
            .take_pending("pre-triage", 500, std::time::Duration::from_secs(60), now)
            .await
            .unwrap();
        if taken.is_empty() {
            return;
        }
        for incident in taken {
            queue
                .mark_queued(&incident, "pre-triage", &Default::default(), now)
                .await
                .unwrap();
        }
    }
}

/// The example plugins, built once per test process by `plugins/build.sh` (which fails loudly
/// when its toolchain is missing).
pub(crate) fn built_plugins() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
            let output = std::process::Command::new("bash")
                .arg(root.join("build.sh"))
                .output()
                .expect("bash must be installed");
            assert!(
                output.status.success(),
                "plugins/build.sh failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            root.join("target/plugins")
        })
        .clone()
}

pub(crate) mod browser;
pub(crate) mod fake_kms;
pub(crate) mod moto;
pub(crate) mod postgres_server;
pub(crate) mod process;
pub(crate) mod proxy;
