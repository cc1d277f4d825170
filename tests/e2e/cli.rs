//! The `nightcrier` command line, run as a process against real databases.

use std::process::Output;

use crate::support::{backends, postgres};

fn nightcrier(url: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nightcrier-under-test"))
        .arg("--database-url")
        .arg(url)
        .args(args)
        .env_remove("NIGHTCRIER_DATABASE_URL")
        .output()
        .unwrap()
}

fn plugins() -> String {
    crate::support::built_plugins().display().to_string()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn example(name: &str) -> String {
    format!("{}/../examples/events/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn migrate_ingest_list_show_and_retry() {
    for db in backends().await {
        let url = db.url.as_str();
        let before = nightcrier(url, &["incidents", "list"]);
        assert_eq!(before.status.code(), Some(1), "{}", db.backend);
        assert!(
            stderr(&before).contains("pending migration"),
            "{}",
            stderr(&before)
        );
        assert!(stderr(&before).contains("nightcrier migrate up"));

        let up = nightcrier(url, &["migrate", "up"]);
        assert!(up.status.success(), "{}", stderr(&up));
        let status = stdout(&nightcrier(url, &["migrate", "status"]));
        assert!(status.lines().all(|l| l.starts_with("applied")), "{status}");

        let ingest = nightcrier(
            url,
            &[
                "ingest",
                "--plugins",
                &plugins(),
                "--source",
                "kubernetes-mcp",
                &example("crashloop.json"),
                &example("node-unhealthy.json"),
            ],
        );
        assert!(ingest.status.success(), "{}", stderr(&ingest));
        assert!(stdout(&ingest).contains("ingested 2 event(s), rejected 0"));

        let list = nightcrier(
            url,
            &[
                "incidents",
                "list",
                "--json",
                "--status",
                "pending",
                "--cluster",
                "kind-dev",
            ],
        );
        let incidents: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
        assert_eq!(incidents.len(), 2, "{}", db.backend);
        let id = incidents[0]["id"].as_str().unwrap().to_owned();
        let table = stdout(&nightcrier(url, &["incidents", "list"]));
        assert!(table.contains(&id) && table.contains("pending"), "{table}");

        let show = nightcrier(url, &["incidents", "show", &id, "--json"]);
        assert!(show.status.success(), "{}", stderr(&show));
        let doc: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
        assert_eq!(doc["incident"]["id"], id.as_str());
        assert_eq!(doc["faultEvent"]["source"], "kubernetes-mcp");

        let retry = nightcrier(url, &["incidents", "retry", &id]);
        assert_eq!(retry.status.code(), Some(1));
        assert!(
            stderr(&retry).contains("cannot go from pending to queued"),
            "{}",
            stderr(&retry)
        );
        let missing = nightcrier(
            url,
            &["incidents", "show", "00000000-0000-0000-0000-000000000000"],
        );
        assert!(
            stderr(&missing).contains("not found"),
            "{}",
            stderr(&missing)
        );

        let down = nightcrier(url, &["migrate", "down", "--all"]);
        assert!(down.status.success(), "{}", stderr(&down));
        let status = stdout(&nightcrier(url, &["migrate", "status"]));
        assert!(status.lines().all(|l| l.starts_with("pending")), "{status}");
    }
}

#[tokio::test]
async fn malformed_input_goes_to_the_dead_letter_table_as_received() {
    for db in backends().await {
        let url = db.url.as_str();
        assert!(nightcrier(url, &["migrate"]).status.success());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mixed.ndjson");
        let good = std::fs::read_to_string(example("crashloop.json")).unwrap();
        std::fs::write(
            &file,
            format!("{}\n{{\"cluster\":\"c1\",\"severity\":\"critical\",\"faultType\":\"\"}}\nnot json at all\n", good.trim()),
        )
        .unwrap();
        let ingest = nightcrier(
            url,
            &["ingest", "--plugins", &plugins(), file.to_str().unwrap()],
        );
        assert_eq!(ingest.status.code(), Some(3), "{}", db.backend);
        assert!(
            stdout(&ingest).contains("ingested 1 event(s), rejected 2"),
            "{}",
            stdout(&ingest)
        );
        let rejected = nightcrier(url, &["rejected", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&rejected.stdout).unwrap();
        assert_eq!(rows.len(), 2);
        let reasons: Vec<&str> = rows.iter().map(|r| r["reason"].as_str().unwrap()).collect();
        assert!(
            reasons.iter().any(|r| r.contains("data is not a fault")),
            "{reasons:?}"
        );
        assert!(
            reasons.iter().any(|r| r.contains("faultType is missing")),
            "{reasons:?}"
        );
        let raw: Vec<u8> = rows
            .iter()
            .find(|r| {
                r["reason"]
                    .as_str()
                    .unwrap()
                    .contains("data is not a fault")
            })
            .map(|r| serde_json::from_value(r["raw_payload"].clone()).unwrap())
            .unwrap();
        assert_eq!(raw, b"not json at all");
    }
}

#[tokio::test]
async fn bad_urls_and_unreachable_databases_are_named_without_passwords() {
    let scheme = nightcrier("mysql://root:hunter2@localhost/db", &["incidents", "list"]);
    assert_eq!(scheme.status.code(), Some(1));
    assert!(
        stderr(&scheme).contains("invalid database url `mysql://root:***@localhost/db`"),
        "{}",
        stderr(&scheme)
    );
    assert!(!stderr(&scheme).contains("hunter2"));
    let refused = nightcrier(
        "postgres://app:hunter2@127.0.0.1:1/db",
        &["migrate", "status"],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("cannot connect to database `postgres://app:***@127.0.0.1:1/db`"),
        "{}",
        stderr(&refused)
    );
    assert!(stderr(&refused).contains("refused"), "{}", stderr(&refused));
    assert!(!stderr(&refused).contains("hunter2"));
    if let Some(pg) = postgres().await {
        let missing_db = pg.url.replace("/nc_", "/missing_");
        let out = nightcrier(&missing_db, &["migrate", "status"]);
        assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
    }
}
