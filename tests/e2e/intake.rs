//! `serve` receiving faults from the network, as processes over real HTTP on 127.0.0.1: MCP
//! subscriptions to fake kubernetes-mcp-servers (the official Python MCP SDK), webhooks, and the
//! database going away under load. Every test asserts exact counts against what the fake servers
//! say they sent.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::Value;

use crate::support::fake_kms::FakeKms;
use crate::support::postgres_server::OwnPostgres;
use crate::support::process::{Serve, free_port, get_json, nightcrier};
use crate::support::{backends, built_plugins};

/// A folder holding only the named bundled plugins.
fn plugin_folder(dir: &Path, names: &[&str]) -> PathBuf {
    let folder = dir.join("plugins");
    std::fs::create_dir_all(&folder).unwrap();
    for name in names {
        std::fs::copy(
            built_plugins().join(format!("{name}.wasm")),
            folder.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    folder
}

/// A config for an ingest-only `serve` (no workers) listening on a free port.
struct Setup {
    config: PathBuf,
    listen: String,
    url: String,
}

fn setup(dir: &Path, url: &str, clusters: &[(String, String)], extra: &str) -> Setup {
    let listen = format!("127.0.0.1:{}", free_port());
    let plugins = plugin_folder(dir, &["kubernetes-mcp", "alertmanager"]);
    let mut text = format!(
        r#"
data_dir = "{data}"

[database]
url = "{url}"

[workers]
concurrency = 0

[http]
listen = "{listen}"

[intake.mcp]
probe_interval = "2s"
request_timeout = "5s"
backoff_initial = "200ms"
backoff_max = "2s"
healthy_after = "5s"

[plugins]
dir = "{plugins}"
{extra}
"#,
        data = dir.join("data").display(),
        plugins = plugins.display(),
    );
    for (name, mcp_url) in clusters {
        text.push_str(&format!(
            "\n[[clusters]]\nname = \"{name}\"\nmcp.url = \"{mcp_url}\"\n"
        ));
    }
    let config = dir.join("nightcrier.toml");
    std::fs::write(&config, text).unwrap();
    Setup {
        config,
        listen,
        url: url.to_owned(),
    }
}

async fn connect(url: &str) -> DatabaseConnection {
    Database::connect(url).await.unwrap()
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap();
    row.try_get_by_index::<i64>(0).unwrap()
}

async fn strings(db: &DatabaseConnection, sql: &str) -> Vec<String> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .iter()
        .map(|row| row.try_get_by_index::<String>(0).unwrap())
        .collect()
}

/// Polls the count of `table` (0 while the schema is not there yet).
async fn count(url: &str, table: &str) -> i64 {
    match Database::connect(url).await {
        Ok(db) => {
            let sql = format!("SELECT COUNT(*) FROM {table}");
            match db
                .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
                .await
            {
                Ok(Some(row)) => row.try_get_by_index::<i64>(0).unwrap_or(0),
                _ => 0,
            }
        }
        Err(_) => 0,
    }
}

async fn feeds(listen: &str) -> Vec<Value> {
    get_json(listen, "/api/v1/clusters")
        .await
        .and_then(|view| view["feeds"].as_array().cloned())
        .unwrap_or_default()
}

/// Whether exactly `expected` MCP feeds exist and all are subscribed.
async fn all_active(listen: &str, expected: usize) -> bool {
    let mcp: Vec<Value> = feeds(listen)
        .await
        .into_iter()
        .filter(|feed| feed["kind"] == "mcp")
        .collect();
    mcp.len() == expected && mcp.iter().all(|feed| feed["phase"] == "active")
}

async fn mcp_feeds(listen: &str) -> Vec<Value> {
    feeds(listen)
        .await
        .into_iter()
        .filter(|feed| feed["kind"] == "mcp")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_from_twenty_servers_are_stored_once_each_with_their_cluster() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let listeners: Vec<(u16, String)> = (0..20)
            .map(|i| (free_port(), format!("ctx-{i:02}")))
            .collect();
        let borrowed: Vec<(u16, &str)> = listeners
            .iter()
            .map(|(port, cluster)| (*port, cluster.as_str()))
            .collect();
        let kms = FakeKms::start(&borrowed);
        // configured names differ from the payloads' cluster: the configured one wins
        let clusters: Vec<(String, String)> = (0..20)
            .map(|i| (format!("prod-{i:02}"), kms.url(i)))
            .collect();
        let s = setup(dir.path(), &db.url, &clusters, "");
        let mut serve = Serve::start(&s.config);
        serve
            .wait_for("20 subscriptions", Duration::from_secs(60), || {
                all_active(&s.listen, 20)
            })
            .await;
        let mut sent: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (index, (name, _)) in clusters.iter().enumerate() {
            sent.insert(name.clone(), kms.emit(index, 50, 0.0).await);
        }
        let total: usize = sent.values().map(Vec::len).sum();
        assert_eq!(total, 1000, "{}", db.backend);
        serve
            .wait_for("1000 events", Duration::from_secs(60), || async {
                count(&s.url, "fault_events").await == 1000
            })
            .await;
        let conn = connect(&s.url).await;
        for (cluster, ids) in &sent {
            let stored: HashSet<String> = strings(
                &conn,
                &format!("SELECT fault_id FROM fault_events WHERE cluster = '{cluster}'"),
            )
            .await
            .into_iter()
            .collect();
            let expected: HashSet<String> = ids.iter().cloned().collect();
            assert_eq!(stored, expected, "{}: {cluster}", db.backend);
        }
        assert_eq!(scalar(&conn, "SELECT COUNT(*) FROM incidents").await, 1000);
        assert_eq!(
            scalar(&conn, "SELECT COUNT(*) FROM rejected_events").await,
            0
        );
        let view = get_json(&s.listen, "/api/v1/clusters").await.unwrap();
        assert_eq!(view["ingest"]["events"], 1000, "{view}");
        let log = serve.stop();
        assert!(!log.contains("ERROR"), "{log}");
        // orderly shutdown ends every session on the server
        for index in 0..20 {
            assert_eq!(kms.state(index).await["sessions"], 0, "listener {index}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gets_a_fresh_session_and_faults_flow_again() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let kms = FakeKms::start(&[(port, "kind-dev")]);
    let s = setup(dir.path(), &db.url, &[("kind-dev".into(), kms.url(0))], "");
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the subscription", Duration::from_secs(60), || {
            all_active(&s.listen, 1)
        })
        .await;
    let first = kms.emit(0, 10, 0.0).await;
    serve
        .wait_for("10 events", Duration::from_secs(30), || async {
            count(&s.url, "fault_events").await == 10
        })
        .await;
    // the server dies and comes back: every old session id is now unknown to it
    let listeners = kms.kill();
    let kms = FakeKms::start(&[(listeners[0].0, "kind-dev")]);
    let restarted = tokio::time::Instant::now();
    serve
        .wait_for("a fresh subscription", Duration::from_secs(30), || async {
            kms.state(0).await["subscriptions"] == 1
        })
        .await;
    // backoff 200 ms doubling to 2 s (±20 %): a few attempts at most while the server was down
    assert!(
        restarted.elapsed() < Duration::from_secs(10),
        "{:?}",
        restarted.elapsed()
    );
    let second = kms.emit(0, 15, 0.0).await;
    serve
        .wait_for("25 events", Duration::from_secs(30), || async {
            count(&s.url, "fault_events").await == 25
        })
        .await;
    let conn = connect(&s.url).await;
    let stored: HashSet<String> = strings(&conn, "SELECT fault_id FROM fault_events")
        .await
        .into_iter()
        .collect();
    let expected: HashSet<String> = first.into_iter().chain(second).collect();
    assert_eq!(stored, expected);
    let feed = &mcp_feeds(&s.listen).await[0];
    assert!(feed["sessions"].as_u64().unwrap() >= 2, "{feed}");
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_cancelled_subscription_is_noticed_within_a_probe_interval() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::start(&[(free_port(), "kind-dev")]);
    let s = setup(dir.path(), &db.url, &[("kind-dev".into(), kms.url(0))], "");
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the subscription", Duration::from_secs(60), || {
            all_active(&s.listen, 1)
        })
        .await;
    let before = kms.state(0).await["subscribeCalls"].as_u64().unwrap();
    kms.cancel(0).await;
    let cancelled = tokio::time::Instant::now();
    serve
        .wait_for("a new subscription", Duration::from_secs(20), || async {
            let state = kms.state(0).await;
            state["subscriptions"] == 1 && state["subscribeCalls"].as_u64().unwrap() > before
        })
        .await;
    // probe interval 2 s, then the first backoff (200 ms ± 20 %) and a new session
    assert!(
        cancelled.elapsed() < Duration::from_secs(5),
        "noticed after {:?}",
        cancelled.elapsed()
    );
    let feed = &mcp_feeds(&s.listen).await[0];
    assert!(
        feed["last_error"].as_str().unwrap().contains("is gone"),
        "{feed}"
    );
    let ids = kms.emit(0, 5, 0.0).await;
    assert_eq!(ids.len(), 5);
    serve
        .wait_for("5 events", Duration::from_secs(30), || async {
            count(&s.url, "fault_events").await == 5
        })
        .await;
    serve.stop();
}

/// A `kubernetes/subscription_error` is recorded on the feed; a degraded subscription is replaced
/// by a fresh session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_error_is_recorded_and_a_degraded_subscription_replaced() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::start(&[(free_port(), "kind-dev")]);
    let s = setup(dir.path(), &db.url, &[("kind-dev".into(), kms.url(0))], "");
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the subscription", Duration::from_secs(60), || {
            all_active(&s.listen, 1)
        })
        .await;
    let before = kms.state(0).await["subscribeCalls"].as_u64().unwrap();
    kms.post(0, "subscription-error", serde_json::json!({}))
        .await;
    serve
        .wait_for(
            "the error recorded and a new subscription",
            Duration::from_secs(20),
            || async {
                let feed = mcp_feeds(&s.listen)
                    .await
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                let state = kms.state(0).await;
                feed["subscription_errors"].as_u64().unwrap_or(0) >= 1
                    && feed["phase"] == "active"
                    && state["subscribeCalls"].as_u64().unwrap_or(0) > before
            },
        )
        .await;
    let feed = &mcp_feeds(&s.listen).await[0];
    assert!(
        feed["last_subscription_error"]
            .as_str()
            .unwrap()
            .contains("degraded"),
        "{feed}"
    );
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_notifications_go_to_the_dead_letter_table_and_the_log_stays_short() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::start(&[(free_port(), "kind-dev")]);
    let s = setup(dir.path(), &db.url, &[("kind-dev".into(), kms.url(0))], "");
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the subscription", Duration::from_secs(60), || {
            all_active(&s.listen, 1)
        })
        .await;
    let mut bad = 0;
    for kind in [
        "string-data",
        "not-an-object",
        "missing-fault-type",
        "wrong-types",
    ] {
        let answer = kms.malformed(0, kind, 50).await;
        bad += answer["sent"].as_u64().unwrap();
    }
    assert_eq!(bad, 200);
    // a context that starts with `[` but is no JSON is still a good fault
    let odd = kms.malformed(0, "bad-json-field", 3).await;
    assert_eq!(odd["sent"], 3);
    let good = kms.emit(0, 7, 0.0).await;
    serve
        .wait_for(
            "200 dead letters and 10 events",
            Duration::from_secs(30),
            || async {
                count(&s.url, "rejected_events").await == 200
                    && count(&s.url, "fault_events").await == 10
            },
        )
        .await;
    let conn = connect(&s.url).await;
    let stored: HashSet<String> = strings(&conn, "SELECT fault_id FROM fault_events")
        .await
        .into_iter()
        .collect();
    assert!(good.iter().all(|id| stored.contains(id)));
    let reasons = strings(&conn, "SELECT reason FROM rejected_events").await;
    assert!(
        reasons.iter().any(|r| r.contains("faultType")),
        "{reasons:?}"
    );
    assert!(
        strings(&conn, "SELECT source FROM rejected_events")
            .await
            .iter()
            .all(|source| source == "kubernetes-mcp")
    );
    let log = serve.stop();
    let one_by_one = log.matches("message rejected").count();
    assert!(
        one_by_one <= 5,
        "{one_by_one} rejections logged one by one:\n{log}"
    );
}

/// Postgres is stopped for 30 s while faults flow: every fault the server sent is in the
/// database exactly once afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_load_loses_nothing_and_duplicates_nothing() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::start(&[(free_port(), "east"), (free_port(), "west")]);
    let s = setup(
        dir.path(),
        &pg.url,
        &[("east".into(), kms.url(0)), ("west".into(), kms.url(1))],
        "",
    );
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("2 subscriptions", Duration::from_secs(60), || {
            all_active(&s.listen, 2)
        })
        .await;
    // 40 s of faults at 50/s per server; the database is away for 30 s of it
    let emit = async {
        let (east, west) = tokio::join!(kms.emit(0, 2000, 50.0), kms.emit(1, 2000, 50.0));
        east.len() + west.len()
    };
    let outage = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        pg.halt();
        tokio::time::sleep(Duration::from_secs(30)).await;
        pg.resume();
    };
    let (sent, ()) = tokio::join!(emit, outage);
    assert_eq!(sent, 4000);
    serve
        .wait_for("every fault stored", Duration::from_secs(120), || async {
            count(&s.url, "fault_events").await >= 4000
        })
        .await;
    let conn = connect(&s.url).await;
    assert_eq!(
        scalar(&conn, "SELECT COUNT(*) FROM fault_events").await,
        4000
    );
    assert_eq!(
        scalar(&conn, "SELECT COUNT(DISTINCT fault_id) FROM fault_events").await,
        4000
    );
    assert_eq!(scalar(&conn, "SELECT COUNT(*) FROM incidents").await, 4000);
    let mut expected: HashSet<String> = kms.sent(0).await.into_iter().collect();
    expected.extend(kms.sent(1).await);
    let stored: HashSet<String> = strings(&conn, "SELECT fault_id FROM fault_events")
        .await
        .into_iter()
        .collect();
    assert_eq!(stored, expected);
    let view = get_json(&s.listen, "/api/v1/clusters").await.unwrap();
    let spooled = view["ingest"]["spooled"].as_u64().unwrap();
    assert!(spooled > 1000, "the outage was spooled: {view}");
    assert_eq!(view["ingest"]["replayed"].as_u64().unwrap(), spooled);
    assert_eq!(view["ingest"]["dropped"], 0);
    serve.stop();
}

/// `kill -9` of serve while its spool holds messages: the next start replays them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_left_by_a_killed_serve_is_replayed_at_restart() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::start(&[(free_port(), "kind-dev")]);
    let s = setup(dir.path(), &pg.url, &[("kind-dev".into(), kms.url(0))], "");
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the subscription", Duration::from_secs(60), || {
            all_active(&s.listen, 1)
        })
        .await;
    pg.halt();
    let ids = kms.emit(0, 300, 0.0).await;
    assert_eq!(ids.len(), 300);
    serve
        .wait_for("300 spooled", Duration::from_secs(60), || async {
            get_json(&s.listen, "/api/v1/clusters")
                .await
                .is_some_and(|view| view["ingest"]["spooled"] == 300)
        })
        .await;
    serve.kill();
    let spool = dir.path().join("data/spool");
    assert!(
        std::fs::read_dir(&spool).unwrap().count() > 0,
        "the spool is on disk"
    );
    pg.resume();
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the spool replayed", Duration::from_secs(60), || async {
            count(&s.url, "fault_events").await == 300
        })
        .await;
    let conn = connect(&s.url).await;
    let stored: HashSet<String> = strings(&conn, "SELECT fault_id FROM fault_events")
        .await
        .into_iter()
        .collect();
    assert_eq!(stored, ids.into_iter().collect::<HashSet<_>>());
    serve
        .wait_for("the spool emptied", Duration::from_secs(10), || async {
            std::fs::read_dir(&spool).unwrap().count() == 0
        })
        .await;
    let log = serve.stop();
    assert!(log.contains("spool left by an earlier run"), "{log}");
}

/// A burst far beyond the writer's backlog bound (`batch_max` 5: more than 40 messages waiting
/// sends the backlog to the spool) from two servers sending as fast as they can: the backlog is
/// spooled and replayed, in direct mode and back, while more keeps arriving, and every fault is
/// stored exactly once with nothing dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_backlog_bound_is_spooled_and_replayed_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nc.db", dir.path().display());
    let kms = FakeKms::start(&[(free_port(), "east"), (free_port(), "west")]);
    let s = setup(
        dir.path(),
        &url,
        &[("east".into(), kms.url(0)), ("west".into(), kms.url(1))],
        // a starved test machine must not turn a slow decode into a dead letter here
        "\n[plugins.plugin.kubernetes-mcp]\ndeadline_ms = 5000\n\n[intake]\nbatch_max = 5\nlinger = \"1ms\"\n",
    );
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("2 subscriptions", Duration::from_secs(60), || {
            all_active(&s.listen, 2)
        })
        .await;
    let (east, west) = tokio::join!(kms.emit(0, 3000, 0.0), kms.emit(1, 3000, 0.0));
    assert_eq!(east.len() + west.len(), 6000);
    serve
        .wait_for("every fault stored", Duration::from_secs(120), || async {
            count(&s.url, "fault_events").await >= 6000
        })
        .await;
    let view = get_json(&s.listen, "/api/v1/clusters").await.unwrap();
    assert_eq!(view["ingest"]["dropped"], 0, "{view}");
    assert!(
        view["ingest"]["spooled"].as_u64().unwrap() > 0,
        "the burst went past the bound: {view}"
    );
    let conn = connect(&s.url).await;
    assert_eq!(
        scalar(&conn, "SELECT COUNT(*) FROM fault_events").await,
        6000
    );
    let stored: HashSet<String> = strings(&conn, "SELECT fault_id FROM fault_events")
        .await
        .into_iter()
        .collect();
    let mut expected: HashSet<String> = east.into_iter().collect();
    expected.extend(west);
    assert_eq!(stored, expected);
    serve.stop();
}

const ALERTMANAGER_BODY: &str = r#"{"version":"4","status":"firing","receiver":"nightcrier","groupKey":"{}:{}","alerts":[{"status":"firing","labels":{"alertname":"KubePodCrashLooping","cluster":"prod","namespace":"shop","pod":"checkout-1","severity":"critical"},"annotations":{"description":"Pod is crash looping"},"startsAt":"2025-12-20T14:07:31Z","fingerprint":"a1b2c3"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_check_tokens_types_and_sizes_and_answer_only_after_commit() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("am-token");
    std::fs::write(&token_file, "t0ken\n").unwrap();
    let extra = format!(
        "\n[intake.webhook.alertmanager]\ntoken_file = \"{}\"\nmax_body = \"4KiB\"\n",
        token_file.display()
    );
    let s = setup(dir.path(), &pg.url, &[], &extra);
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the listener", Duration::from_secs(60), || async {
            get_json(&s.listen, "/api/v1/clusters").await.is_some()
        })
        .await;
    let url = format!("http://{}/webhooks/alertmanager", s.listen);
    let http = reqwest::Client::new();
    let post = |body: String, token: Option<&str>, content_type: &str| {
        let mut request = http
            .post(&url)
            .header("content-type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let answer = post(ALERTMANAGER_BODY.into(), None, "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let answer = post(ALERTMANAGER_BODY.into(), Some("wrong"), "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    let answer = post(ALERTMANAGER_BODY.into(), Some("t0ken"), "text/plain")
        .await
        .unwrap();
    assert_eq!(answer.status(), 415);
    let answer = post("x".repeat(5000), Some("t0ken"), "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);
    let answer = post("{not json".into(), Some("t0ken"), "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 422);
    let reason: Value = answer.json().await.unwrap();
    assert!(
        reason["error"].as_str().unwrap().contains("alertmanager"),
        "{reason}"
    );
    let answer = post(ALERTMANAGER_BODY.into(), Some("t0ken"), "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    // 202 comes after the commit: the row is already there
    assert_eq!(count(&s.url, "fault_events").await, 1);
    assert_eq!(count(&s.url, "rejected_events").await, 1);
    // the database goes away: webhooks are answered 503 with Retry-After, not spooled
    pg.halt();
    let answer = post(ALERTMANAGER_BODY.into(), Some("t0ken"), "application/json")
        .await
        .unwrap();
    assert_eq!(answer.status(), 503);
    assert!(answer.headers().contains_key("retry-after"));
    pg.resume();
    serve
        .wait_for(
            "webhooks accepted again",
            Duration::from_secs(60),
            || async {
                post(ALERTMANAGER_BODY.into(), Some("t0ken"), "application/json")
                    .await
                    .is_ok_and(|answer| answer.status() == 202)
            },
        )
        .await;
    assert_eq!(count(&s.url, "fault_events").await, 2);
    let log = serve.stop();
    assert!(!log.contains("t0ken"), "the token never reaches the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_whose_source_plugin_is_refused_is_reported_and_not_started() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kms = FakeKms::start(&[(free_port(), "kind-dev")]);
    let s = setup(dir.path(), &db.url, &[("kind-dev".into(), kms.url(0))], "");
    // not a component at all
    std::fs::write(dir.path().join("plugins/kubernetes-mcp.wasm"), b"garbage").unwrap();
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the feed reported", Duration::from_secs(60), || async {
            mcp_feeds(&s.listen).await.len() == 1
        })
        .await;
    let feed = &mcp_feeds(&s.listen).await[0];
    assert_eq!(feed["phase"], "disabled", "{feed}");
    assert!(
        feed["last_error"].as_str().unwrap().contains("refused"),
        "{feed}"
    );
    let out = nightcrier(&s.config, &["clusters"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("disabled"), "{table}");
    assert_eq!(kms.state(0).await["initializeCount"], 0, "never connected");
    serve.stop();
}

/// A fake Alertmanager API: `GET /api/v2/alerts` serves the current list with an `ETag`, and
/// answers `304` to a matching `If-None-Match`.
struct FakeAlertmanager {
    alerts: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    not_modified: std::sync::Arc<std::sync::atomic::AtomicU64>,
    address: std::net::SocketAddr,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeAlertmanager {
    async fn start() -> Self {
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::IntoResponse;
        let alerts = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
        let not_modified = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (list, counter) = (alerts.clone(), not_modified.clone());
        let app = axum::Router::new().route(
            "/api/v2/alerts",
            axum::routing::get(move |headers: HeaderMap| {
                let list = list.clone();
                let counter = counter.clone();
                async move {
                    let body = serde_json::to_string(&*list.lock().unwrap()).unwrap();
                    let etag = format!("\"{}\"", body.len());
                    if headers
                        .get(header::IF_NONE_MATCH)
                        .is_some_and(|tag| tag.to_str().unwrap() == etag)
                    {
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                    (
                        [
                            (header::ETAG, etag),
                            (header::CONTENT_TYPE, "application/json".to_owned()),
                        ],
                        body,
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            alerts,
            not_modified,
            address,
            _server: server,
        }
    }

    fn set(&self, alerts: Vec<Value>) {
        *self.alerts.lock().unwrap() = alerts;
    }
}

fn polled_alert(fingerprint: &str, state: &str) -> Value {
    serde_json::json!({
        "labels": {"alertname": "KubePodCrashLooping", "cluster": "prod", "namespace": "shop",
                   "pod": format!("api-{fingerprint}"), "severity": "critical"},
        "annotations": {"description": "restarting"},
        "startsAt": "2025-12-20T14:07:31Z",
        "fingerprint": fingerprint,
        "status": {"state": state, "silencedBy": [], "inhibitedBy": []},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_example_takes_each_active_alert_once() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alertmanager = FakeAlertmanager::start().await;
    alertmanager.set(vec![
        polled_alert("a1", "active"),
        polled_alert("a2", "active"),
        polled_alert("s1", "suppressed"),
    ]);
    let extra = format!(
        "\n[intake.poll.alertmanager-poll]\nurl = \"http://{}/api/v2/alerts\"\ninterval = \"5s\"\n",
        alertmanager.address
    );
    let s = setup(dir.path(), &db.url, &[], &extra);
    std::fs::copy(
        built_plugins().join("alertmanager-poll.wasm"),
        dir.path().join("plugins/alertmanager-poll.wasm"),
    )
    .unwrap();
    let mut serve = Serve::start(&s.config);
    serve
        .wait_for("the first poll", Duration::from_secs(60), || async {
            count(&s.url, "fault_events").await == 2
        })
        .await;
    // unchanged list: the next poll is answered 304 and adds nothing
    serve
        .wait_for("a 304", Duration::from_secs(20), || async {
            alertmanager
                .not_modified
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        })
        .await;
    // a changed list with the same two alerts and one new: only the new one is added
    alertmanager.set(vec![
        polled_alert("a1", "active"),
        polled_alert("a2", "active"),
        polled_alert("a3", "active"),
    ]);
    serve
        .wait_for("the third alert", Duration::from_secs(30), || async {
            count(&s.url, "fault_events").await == 3
        })
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        count(&s.url, "fault_events").await,
        3,
        "re-polled alerts are not added again"
    );
    let conn = connect(&s.url).await;
    let mut ids = strings(&conn, "SELECT fault_id FROM fault_events").await;
    ids.sort();
    assert_eq!(ids, ["a1", "a2", "a3"]);
    let feed = feeds(&s.listen)
        .await
        .into_iter()
        .find(|feed| feed["kind"] == "poll")
        .unwrap();
    assert_eq!(feed["phase"], "active", "{feed}");
    serve.stop();
}
