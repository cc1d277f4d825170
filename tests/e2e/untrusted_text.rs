//! Text a plugin or a feed supplied (plugin names and versions, refusal and error reasons, trap
//! reports, fault-event fields) cannot forge a line or reach the terminal as control characters
//! on any surface: `plugins list`, `plugins check`, `rejected`, `incidents list`, `incidents
//! show` and the logs. The binary runs as a process; the hostile fixture supplies the text, or
//! the store holds it as received.

use std::path::Path;
use std::process::Output;

use chrono::Utc;
use nightcrier::queue::{NewFaultEvent, ResourceRef};
use nightcrier::store::NewPluginRun;

use crate::support::{backends, built_plugins, event};

/// A forged log line: a newline, a timestamp and a level, then a screen-clearing escape
/// sequence, a carriage return, a C1 CSI and a right-to-left override.
const FORGED: &str =
    "x\n2026-01-01T00:00:00.000000Z ERROR nightcrier: forged\u{1b}[2J\r\u{9b}31m\u{202e}";
/// [`FORGED`] in a TOML basic string.
const FORGED_TOML: &str =
    r#""x\n2026-01-01T00:00:00.000000Z ERROR nightcrier: forged\u001B[2J\r\u009B31m\u202E""#;
/// How [`FORGED`] reads once escaped.
const ESCAPED: &str =
    "x\\n2026-01-01T00:00:00.000000Z ERROR nightcrier: forged\\u{1b}[2J\\r\\u{9b}31m\\u{202e}";

fn nightcrier(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nightcrier-under-test"))
        .args(args)
        .env_remove("NIGHTCRIER_DATABASE_URL")
        .env_remove("NIGHTCRIER_LOG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// No line was forged and no control character reached the terminal; `ESCAPED` shows instead.
fn assert_clean(surface: &str, output: &str) {
    for bad in ['\u{1b}', '\r', '\u{9b}', '\u{202e}'] {
        assert!(
            !output.contains(bad),
            "{surface}: {bad:?} reached the terminal:\n{output:?}"
        );
    }
    assert!(
        !output
            .lines()
            .any(|line| line.starts_with("2026-01-01T00:00:00.000000Z ERROR")),
        "{surface}: a line was forged:\n{output}"
    );
    assert!(
        output.contains(ESCAPED),
        "{surface}: the text is not shown escaped:\n{output}"
    );
}

/// A plugin folder: the hostile fixture as `hostile.wasm` giving a forged version, and as
/// `impostor.wasm` claiming a forged name; the config file that grants them.
fn forged_plugins(dir: &Path) -> std::path::PathBuf {
    let folder = dir.join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    let fixture = built_plugins().join("../fixtures/hostile.wasm");
    for name in ["hostile", "impostor"] {
        std::fs::copy(&fixture, folder.join(format!("{name}.wasm"))).unwrap();
    }
    let config = dir.join("nightcrier.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins]\ndir = {:?}\n[plugins.plugin.hostile.config]\nversion = {FORGED_TOML}\ndescription = {FORGED_TOML}\n[plugins.plugin.impostor.config]\nname = {FORGED_TOML}\n",
            folder.display().to_string()
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn plugins_list_and_check_and_their_logs_escape_plugin_text() {
    let dir = tempfile::tempdir().unwrap();
    let config = forged_plugins(dir.path());
    let config = config.to_str().unwrap();
    let list = nightcrier(&["-c", config, "--log-level", "info", "plugins", "list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    let table = text(&list.stdout);
    assert_clean("plugins list", &table);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "header, hostile, the refused impostor:\n{table}"
    );
    assert!(lines[1].starts_with("hostile "), "{table}");
    assert!(
        lines[2].starts_with("refused: ") && lines[2].contains("impostor.wasm claims to be plugin"),
        "{table}"
    );
    // the log line announcing the plugin carries its version
    assert_clean("plugins list (log)", &text(&list.stderr));

    let json = nightcrier(&["-c", config, "plugins", "list", "--json"]);
    let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        document["plugins"][0]["version"], FORGED,
        "JSON keeps the text as received"
    );
    assert_eq!(document["plugins"][0]["description"], FORGED);

    let folder = dir.path().join("plugins");
    let check = nightcrier(&[
        "-c",
        config,
        "plugins",
        "check",
        folder.join("hostile.wasm").to_str().unwrap(),
    ]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    assert_clean("plugins check (ok)", &text(&check.stdout));
    let check = nightcrier(&[
        "-c",
        config,
        "plugins",
        "check",
        folder.join("impostor.wasm").to_str().unwrap(),
    ]);
    assert_eq!(check.status.code(), Some(1));
    let reasons = text(&check.stderr);
    assert_clean("plugins check (refused)", &reasons);
    assert_eq!(reasons.lines().count(), 1, "{reasons}");
}

#[tokio::test]
async fn rejected_and_incidents_escape_what_the_store_holds() {
    for db in backends().await {
        let queue = db.queue().await;
        let store = queue.store().clone();
        let url = db.url.as_str();
        let now = Utc::now();

        store
            .reject_event(FORGED, Some(FORGED), FORGED.as_bytes(), FORGED, now)
            .await
            .unwrap();
        let rejected = nightcrier(&["--database-url", url, "rejected"]);
        assert!(rejected.status.success(), "{}", text(&rejected.stderr));
        let table = text(&rejected.stdout);
        assert_clean("rejected", &table);
        assert_eq!(table.lines().count(), 2, "{}: {table}", db.backend);

        let forged = NewFaultEvent {
            cluster: FORGED.into(),
            fault_type: FORGED.into(),
            severity: FORGED.into(),
            context: FORGED.into(),
            resource: Some(ResourceRef {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: FORGED.into(),
                namespace: Some(FORGED.into()),
                uid: None,
            }),
            labels: [(FORGED.to_owned(), FORGED.to_owned())].into(),
            ..event("prod", 1)
        };
        let ids = queue.ingest(&forged).await.unwrap();
        let taken = queue
            .take_pending("e2e", 10, std::time::Duration::from_secs(60), now)
            .await
            .unwrap();
        assert_eq!(taken.len(), 1);
        queue
            .mark_skipped(ids.incident_id, "e2e", FORGED, now)
            .await
            .unwrap();
        store
            .insert_plugin_run(
                &NewPluginRun {
                    incident_id: Some(ids.incident_id),
                    stage: "pre_triage",
                    plugin: FORGED.into(),
                    plugin_version: Some(FORGED.into()),
                    outcome: "skip".into(),
                    duration: std::time::Duration::from_micros(5),
                    error: Some(FORGED.into()),
                },
                now,
            )
            .await
            .unwrap();

        let list = nightcrier(&["--database-url", url, "incidents", "list"]);
        assert!(list.status.success(), "{}", text(&list.stderr));
        let table = text(&list.stdout);
        assert_clean("incidents list", &table);
        assert_eq!(table.lines().count(), 2, "{}: {table}", db.backend);

        let id = ids.incident_id.to_string();
        let show = nightcrier(&["--database-url", url, "incidents", "show", &id]);
        assert!(show.status.success(), "{}", text(&show.stderr));
        let shown = text(&show.stdout);
        assert_clean("incidents show", &shown);
        let event_line = shown
            .lines()
            .find(|line| line.starts_with("fault event "))
            .unwrap_or_else(|| panic!("{shown}"));
        assert!(
            event_line.contains(&format!("{ESCAPED} {ESCAPED} on Pod/{ESCAPED}/{ESCAPED}")),
            "{}: severity, fault type and resource on one line: {event_line}",
            db.backend
        );
        assert!(
            shown.contains(&format!("  {ESCAPED}\n")),
            "context: {shown}"
        );
        assert!(
            shown.contains(&format!("  pre_triage {ESCAPED} -> skip (5 us): {ESCAPED}")),
            "plugin run: {shown}"
        );

        let json = nightcrier(&["--database-url", url, "incidents", "show", &id, "--json"]);
        let document: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(
            document["faultEvent"]["context"], FORGED,
            "{}: stored and given as received",
            db.backend
        );
    }
}
