//! Operational alerts end to end, with a real `serve` on both backends and the `slack` example
//! plugin posting to a local HTTP receiver started by the test: the agent circuit breaker trips
//! (agents whose reports fail validation) and recovers, and a cluster's feed (a fake
//! kubernetes-mcp-server) stays down longer than `[alerts] feed_down_after` and comes back. Each
//! alert is recorded in `alerts`, its delivery in `alert_deliveries`, and listed newest first by
//! `GET /api/v1/alerts`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::Value;

use crate::support::fake_kms::FakeKms;
use crate::support::process::{Serve, free_port, get_json, nightcrier};
use crate::support::{backends, built_plugins};

/// The part of the webhook URL a secret would be in; it must never reach an alert.
const WEBHOOK_PATH: &str = "/services/T000/B000/not-a-real-secret";

/// A Slack stand-in: records every JSON body posted to it and answers 200.
struct Receiver {
    origin: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    stop: tokio_util::sync::CancellationToken,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let kept = bodies.clone();
        let router = Router::new().route(
            WEBHOOK_PATH,
            post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    kept.lock().unwrap().push(value);
                    "ok"
                }
            }),
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await
                .unwrap();
        });
        Receiver {
            origin,
            bodies,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("{}{WEBHOOK_PATH}", self.origin)
    }

    /// The headers of the alert messages received so far, in order (incident messages left out).
    fn alert_headers(&self) -> Vec<String> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|body| {
                body["attachments"][0]["footer"]
                    .as_str()
                    .is_some_and(|footer| footer.starts_with("nightcrier alert"))
            })
            .map(|body| {
                body["blocks"][0]["text"]["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

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

/// `[alerts]` (quick retries, then `alerts`) and `[plugins]` with the slack plugin granted the
/// receiver.
fn plugins_section(dir: &Path, receiver: &Receiver, alerts: &str) -> String {
    format!(
        r#"
[alerts]
retry_initial = "100ms"
{alerts}

[plugins]
dir = "{folder}"

[plugins.plugin.slack]
allowed_hosts = ["{origin}"]
deadline_ms = 10000

[plugins.plugin.slack.config]
webhook_url = "{url}"

[plugins.plugin.kubernetes-mcp]
deadline_ms = 5000
"#,
        folder = plugin_folder(dir, &["kubernetes-mcp", "slack"]).display(),
        origin = receiver.origin,
        url = receiver.url(),
    )
}

/// `(kind, cluster, raised_at, delivery outcome at slack)` of every alert, oldest first.
async fn stored_alerts(url: &str) -> Vec<(String, String, DateTime<Utc>, String)> {
    let db = Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT a.kind, a.cluster, a.raised_at, d.outcome FROM alerts a \
             LEFT JOIN alert_deliveries d ON d.alert_id = a.id AND d.plugin = 'slack' \
             ORDER BY a.raised_at, a.id",
        ))
        .await
        .unwrap();
    let alerts = rows
        .iter()
        .map(|row| {
            (
                row.try_get_by_index::<String>(0).unwrap(),
                row.try_get_by_index::<String>(1).unwrap(),
                row.try_get_by_index::<DateTime<Utc>>(2).unwrap(),
                row.try_get_by_index::<Option<String>>(3)
                    .unwrap()
                    .unwrap_or_default(),
            )
        })
        .collect();
    db.close().await.unwrap();
    alerts
}

/// Every text column of `alerts` and `alert_deliveries`, for the no-secret check.
async fn alert_text(url: &str) -> String {
    let db = Database::connect(url).await.unwrap();
    let mut text = String::new();
    for sql in [
        "SELECT kind, severity, COALESCE(cluster, ''), summary, detail, raised_by FROM alerts",
        "SELECT plugin, outcome, COALESCE(error, '') FROM alert_deliveries",
    ] {
        for row in db
            .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
            .await
            .unwrap()
        {
            for index in 0.. {
                match row.try_get_by_index::<String>(index) {
                    Ok(value) => text.push_str(&value),
                    Err(_) => break,
                }
                text.push('\n');
            }
        }
    }
    db.close().await.unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_down_longer_than_configured_is_alerted_then_its_return() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::start().await;
        let kms = FakeKms::start(&[(free_port(), "kind-dev")]);
        let listen = format!("127.0.0.1:{}", free_port());
        let config = dir.path().join("nightcrier.toml");
        std::fs::write(
            &config,
            format!(
                r#"
data_dir = "{data}"

[database]
url = "{url}"

[workers]
concurrency = 0

[http]
listen = "{listen}"

[intake.mcp]
probe_interval = "1s"
request_timeout = "2s"
backoff_initial = "200ms"
backoff_max = "1s"
healthy_after = "5s"

[[clusters]]
name = "kind-dev"
mcp.url = "{mcp}"
{plugins}
"#,
                data = dir.path().join("data").display(),
                url = db.url,
                mcp = kms.url(0),
                plugins = plugins_section(dir.path(), &receiver, "feed_down_after = \"3s\""),
            ),
        )
        .unwrap();

        let mut serve = Serve::start(&config);
        serve
            .wait_for("the subscription", Duration::from_secs(60), || async {
                get_json(&listen, "/api/v1/clusters")
                    .await
                    .and_then(|view| view["feeds"].as_array().cloned())
                    .is_some_and(|feeds| {
                        feeds
                            .iter()
                            .any(|feed| feed["kind"] == "mcp" && feed["phase"] == "active")
                    })
            })
            .await;
        assert!(
            stored_alerts(&db.url).await.is_empty(),
            "{}: a healthy feed raises nothing",
            db.backend
        );

        let killed_at = Utc::now();
        let listeners = kms.kill();
        serve
            .wait_for("the feed-down message", Duration::from_secs(60), || async {
                !receiver.alert_headers().is_empty()
            })
            .await;
        assert_eq!(
            receiver.alert_headers(),
            ["Event feed down on kind-dev :electric_plug:"],
            "{}",
            db.backend
        );
        let alerts = stored_alerts(&db.url).await;
        assert_eq!(alerts.len(), 1, "{}: {alerts:?}", db.backend);
        let (kind, cluster, raised_at, delivery) = &alerts[0];
        assert_eq!(
            (kind.as_str(), cluster.as_str(), delivery.as_str()),
            ("feed-down", "kind-dev", "delivered"),
            "{}",
            db.backend
        );
        // the feed was down at least `feed_down_after` (3 s) when the alert was raised
        assert!(
            *raised_at - killed_at >= chrono::Duration::seconds(3),
            "{}: raised {:?} after the server died",
            db.backend,
            *raised_at - killed_at
        );

        let kms = FakeKms::start(&[(listeners[0].0, "kind-dev")]);
        serve
            .wait_for("the feed-up message", Duration::from_secs(60), || async {
                receiver.alert_headers().len() == 2
            })
            .await;
        assert_eq!(
            receiver.alert_headers()[1],
            "Event feed back up on kind-dev :white_check_mark:",
            "{}",
            db.backend
        );
        let listed = get_json(&listen, "/api/v1/alerts").await.unwrap();
        let kinds: Vec<&str> = listed["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| alert["kind"].as_str().unwrap())
            .collect();
        assert_eq!(
            kinds,
            ["feed-up", "feed-down"],
            "{}: newest first",
            db.backend
        );
        let newest = &listed["alerts"][0];
        assert_eq!(newest["cluster"], "kind-dev");
        assert_eq!(newest["severity"], "info");
        assert_eq!(newest["fields"]["feed"], "kind-dev", "{newest}");
        assert_eq!(newest["deliveries"][0]["plugin"], "slack", "{newest}");
        assert_eq!(newest["deliveries"][0]["outcome"], "delivered", "{newest}");
        assert_eq!(newest["deliveries"][0]["attempts"], 1, "{newest}");
        let plugins = get_json(&listen, "/api/v1/plugins").await.unwrap();
        let handles: Vec<(String, bool)> = plugins["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_owned(),
                    p["handles_alerts"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            handles,
            [
                ("kubernetes-mcp".to_owned(), false),
                ("slack".to_owned(), true)
            ],
            "{plugins}"
        );
        let one = get_json(&listen, "/api/v1/alerts?limit=1").await.unwrap();
        assert_eq!(one["alerts"].as_array().unwrap().len(), 1);
        let filtered = get_json(&listen, "/api/v1/alerts?kind=feed-down")
            .await
            .unwrap();
        assert_eq!(filtered["alerts"][0]["kind"], "feed-down");
        assert_eq!(filtered["alerts"].as_array().unwrap().len(), 1);

        let log = serve.stop();
        assert!(
            !log.contains(WEBHOOK_PATH),
            "{}: the webhook URL is never logged",
            db.backend
        );
        assert!(
            !alert_text(&db.url).await.contains(WEBHOOK_PATH)
                && !listed.to_string().contains(WEBHOOK_PATH),
            "{}: alerts carry no secret",
            db.backend
        );
        drop(kms);
    }
}

/// The test agent: a valid report for CrashLoop faults, one too small to pass validation (a
/// failed run) for anything else.
const AGENT: &str = r##"#!/bin/sh
out=/home/agent/output/investigation.md
if grep -q '"faultType": "CrashLoop"' /home/agent/incident.json; then
  {
    echo "# Investigation"
    echo
    echo "The checkout pod crash-loops because its config map is missing; restoring it fixes the rollout."
  } > "$out"
else
  echo "too small" > "$out"
fi
"##;

fn example(name: &str) -> String {
    format!("{}/../examples/events/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn ingest(config: &Path, files: &[&str]) {
    let plugins = built_plugins().display().to_string();
    let mut args = vec![
        "ingest",
        "--plugins",
        plugins.as_str(),
        "--source",
        "kubernetes-mcp",
    ];
    let paths: Vec<String> = files.iter().map(|name| example(name)).collect();
    args.extend(paths.iter().map(String::as_str));
    let output = nightcrier(config, &args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_breaker_alerts_reach_slack_degraded_then_recovered() {
    let image = nightcrier_agent::test_support::busybox_image("nightcrier-e2e-alerts-agent", AGENT);
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::start().await;
        let listen = format!("127.0.0.1:{}", free_port());
        let instance = format!("e2e-{}", uuid::Uuid::new_v4().simple());
        let config = dir.path().join("nightcrier.toml");
        std::fs::write(
            &config,
            format!(
                r#"
data_dir = "{data}"

[database]
url = "{url}"

[http]
listen = "{listen}"

[workers]
concurrency = 1
lease_secs = 30
poll_interval_secs = 0.1
shutdown_grace_secs = 20

[agent]
workspace_root = "{root}"
instance_id = "{instance}"
default_profile = "e2e"

[agent.breaker]
failure_threshold = 2

[agent.profiles.e2e]
image = "{image}"
command = ["/bin/sh", "/agent.sh"]
network = "none"
timeout_secs = 60
stop_grace_secs = 1
memory = "64m"
pids_limit = 64
{plugins}
"#,
                data = dir.path().join("data").display(),
                url = db.url,
                root = dir.path().join("workspaces").display(),
                plugins = plugins_section(dir.path(), &receiver, ""),
            ),
        )
        .unwrap();
        assert!(nightcrier(&config, &["migrate"]).status.success());
        // two runs that fail validation on cluster kind-dev: the breaker opens
        ingest(&config, &["node-unhealthy.json", "node-unhealthy.json"]);
        let mut serve = Serve::start(&config);
        serve
            .wait_for("the degraded message", Duration::from_secs(180), || async {
                !receiver.alert_headers().is_empty()
            })
            .await;
        assert_eq!(
            receiver.alert_headers(),
            ["Triage degraded on kind-dev :rotating_light:"],
            "{}",
            db.backend
        );
        // a good run closes it
        ingest(&config, &["crashloop.json"]);
        serve
            .wait_for(
                "the recovered message",
                Duration::from_secs(180),
                || async { receiver.alert_headers().len() == 2 },
            )
            .await;
        assert_eq!(
            receiver.alert_headers()[1],
            "Triage recovered on kind-dev :white_check_mark:",
            "{}",
            db.backend
        );
        let degraded = receiver
            .bodies
            .lock()
            .unwrap()
            .iter()
            .find(|body| body["attachments"][0]["footer"] == "nightcrier alert breaker-degraded")
            .cloned()
            .unwrap();
        assert!(
            degraded.to_string().contains("consecutive-failures"),
            "{degraded}"
        );
        let alerts = stored_alerts(&db.url).await;
        let kinds: Vec<(&str, &str, &str)> = alerts
            .iter()
            .map(|(kind, cluster, _, delivery)| {
                (kind.as_str(), cluster.as_str(), delivery.as_str())
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("breaker-degraded", "kind-dev", "delivered"),
                ("breaker-recovered", "kind-dev", "delivered"),
            ],
            "{}",
            db.backend
        );
        let listed = get_json(&listen, "/api/v1/alerts").await.unwrap();
        assert_eq!(listed["alerts"][0]["kind"], "breaker-recovered");
        assert_eq!(listed["alerts"][1]["kind"], "breaker-degraded");
        assert_eq!(listed["alerts"][1]["severity"], "critical");
        assert_eq!(
            listed["alerts"][1]["fields"]["consecutive-failures"], "2",
            "{listed}"
        );
        let log = serve.stop();
        assert!(log.contains("alert delivered"), "{log}");
        assert!(
            !alert_text(&db.url).await.contains(WEBHOOK_PATH),
            "{}: alerts carry no secret",
            db.backend
        );
    }
}

#[tokio::test]
async fn alerts_and_deliveries_are_recorded_and_listed_newest_first() {
    use nightcrier::alert::{AlertKind, DeliveryOutcome, NewAlert, RaisedAlert};
    for db in backends().await {
        let store = db.queue().await.store().clone();
        let base = Utc::now();
        let raise = |kind: AlertKind, cluster: &str, seconds: i64| RaisedAlert {
            id: uuid::Uuid::now_v7(),
            alert: NewAlert {
                kind,
                cluster: Some(cluster.to_owned()),
                summary: format!("{} on {cluster}", kind.as_str()),
                detail: "nul \0 kept out".to_owned(),
                fields: vec![("feed".to_owned(), cluster.to_owned())],
            },
            raised_at: base + chrono::Duration::seconds(seconds),
        };
        let down_a = raise(AlertKind::FeedDown, "a", 0);
        let down_b = raise(AlertKind::FeedDown, "b", 1);
        let degraded = raise(AlertKind::BreakerDegraded, "a", 2);
        let up_a = raise(AlertKind::FeedUp, "a", 3);
        for alert in [&down_a, &down_b, &degraded, &up_a] {
            store.insert_alert(alert, "replica-1").await.unwrap();
        }
        assert_eq!(
            store.clusters_with_feed_down().await.unwrap(),
            ["b"],
            "{}: a is back up, b is not",
            db.backend
        );
        assert_eq!(
            store.last_feed_alert("a").await.unwrap().as_deref(),
            Some("feed-up")
        );
        assert_eq!(store.last_feed_alert("c").await.unwrap(), None);

        let failed = DeliveryOutcome {
            plugin: "slack".into(),
            plugin_version: Some("0.1.0".into()),
            delivered: false,
            attempts: 3,
            error: Some("slack webhook returned status 503".into()),
        };
        store
            .record_alert_delivery(degraded.id, &failed, base)
            .await
            .unwrap();
        let delivered = DeliveryOutcome {
            delivered: true,
            attempts: 1,
            error: None,
            ..failed.clone()
        };
        store
            .record_alert_delivery(degraded.id, &delivered, base)
            .await
            .unwrap();
        let other = DeliveryOutcome {
            plugin: "pager".into(),
            ..failed.clone()
        };
        store
            .record_alert_delivery(degraded.id, &other, base)
            .await
            .unwrap();

        let listed = store.alerts(10, None, None).await.unwrap();
        let kinds: Vec<&str> = listed.iter().map(|a| a.alert.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["feed-up", "breaker-degraded", "feed-down", "feed-down"],
            "{}",
            db.backend
        );
        let stored = &listed[1];
        assert_eq!(stored.alert.severity, "critical");
        assert_eq!(stored.alert.raised_by, "replica-1");
        assert!(!stored.alert.detail.contains('\0'), "{}", db.backend);
        let deliveries: Vec<(&str, &str, i32)> = stored
            .deliveries
            .iter()
            .map(|d| (d.plugin.as_str(), d.outcome.as_str(), d.attempts))
            .collect();
        assert_eq!(
            deliveries,
            [("pager", "failed", 3), ("slack", "delivered", 1)],
            "{}: a second record replaces the first",
            db.backend
        );
        assert!(listed[0].deliveries.is_empty());
        assert_eq!(store.alerts(2, None, None).await.unwrap().len(), 2);
        let of_b = store.alerts(10, None, Some("b")).await.unwrap();
        assert_eq!(of_b.len(), 1);
        assert_eq!(of_b[0].alert.id, down_b.id.to_string());
        let downs = store.alerts(10, Some("feed-down"), None).await.unwrap();
        assert_eq!(downs.len(), 2);
    }
}

/// `(cluster, raised_by)` of every alert of `kind`, by cluster.
async fn raised(url: &str, kind: &str) -> Vec<(String, String)> {
    let db = Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT cluster, raised_by FROM alerts WHERE kind = '{kind}' ORDER BY cluster"),
        ))
        .await
        .unwrap();
    let found = rows
        .iter()
        .map(|row| {
            (
                row.try_get_by_index::<String>(0).unwrap(),
                row.try_get_by_index::<String>(1).unwrap(),
            )
        })
        .collect();
    db.close().await.unwrap();
    found
}

/// The MCP feeds one replica reports.
async fn mcp_feeds(listen: &str) -> Vec<Value> {
    get_json(listen, "/api/v1/clusters")
        .await
        .and_then(|view| view["feeds"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|feed| feed["kind"] == "mcp")
        .collect()
}

/// `(cluster, replica)` of every feed active on one of `replicas`, sorted.
async fn holders(replicas: &[(&str, String, PathBuf)]) -> Vec<(String, String)> {
    let mut held = Vec::new();
    for (name, listen, _) in replicas {
        for feed in mcp_feeds(listen).await {
            if feed["phase"] == "active" {
                held.push((
                    feed["cluster"].as_str().unwrap_or("").to_owned(),
                    (*name).to_owned(),
                ));
            }
        }
    }
    held.sort();
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_replicas_only_the_one_running_a_feed_reports_it_down_and_up() {
    let db = crate::support::postgres().await.expect(
        "this test needs Postgres (replicas share one): set NIGHTCRIER_TEST_PG_URL (tests/run.sh does)",
    );
    let dir = tempfile::tempdir().unwrap();
    let listeners: Vec<(u16, String)> = (0..4).map(|i| (free_port(), format!("ctx-{i}"))).collect();
    let borrowed: Vec<(u16, &str)> = listeners
        .iter()
        .map(|(port, cluster)| (*port, cluster.as_str()))
        .collect();
    let kms = FakeKms::start(&borrowed);
    let mut replicas = Vec::new();
    for name in ["replica-a", "replica-b"] {
        let home = dir.path().join(name);
        let plugins = home.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(
            built_plugins().join("kubernetes-mcp.wasm"),
            plugins.join("kubernetes-mcp.wasm"),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let mut text = format!(
            r#"
data_dir = "{data}"
[database]
url = "{url}"
[workers]
concurrency = 0
[agent]
instance_id = "{name}"
[http]
listen = "{listen}"
[replica]
heartbeat = "1s"
ttl = "4s"
lease = "6s"
stop_margin = "2s"
[intake.mcp]
stop_timeout = "1s"
probe_interval = "1s"
request_timeout = "2s"
backoff_initial = "200ms"
backoff_max = "1s"
[alerts]
feed_down_after = "3s"
[plugins]
dir = "{plugins}"
"#,
            data = home.join("data").display(),
            url = db.url,
            plugins = plugins.display(),
        );
        for index in 0..listeners.len() {
            text.push_str(&format!(
                "\n[[clusters]]\nname = \"c{index}\"\nmcp.url = \"{}\"\n",
                kms.url(index)
            ));
        }
        let config = home.join("nightcrier.toml");
        std::fs::write(&config, text).unwrap();
        replicas.push((name, listen, config));
    }
    let mut processes: Vec<Serve> = replicas
        .iter()
        .map(|(_, _, config)| Serve::start(config))
        .collect();
    // every cluster active on exactly one replica; remember which
    processes[0]
        .wait_for("each feed held once", Duration::from_secs(90), || async {
            let held = holders(&replicas).await;
            let clusters: std::collections::BTreeSet<&str> =
                held.iter().map(|(cluster, _)| cluster.as_str()).collect();
            let replicas: std::collections::BTreeSet<&str> =
                held.iter().map(|(_, owner)| owner.as_str()).collect();
            // both joined: rendezvous hashing spreads c0..c3 over replica-a and replica-b
            held.len() == 4 && clusters.len() == 4 && replicas.len() == 2
        })
        .await;
    let owners = holders(&replicas).await;
    let spread: std::collections::BTreeSet<&str> =
        owners.iter().map(|(_, owner)| owner.as_str()).collect();
    assert_eq!(spread.len(), 2, "both replicas run feeds: {owners:?}");

    let listeners = kms.kill();
    processes[0]
        .wait_for("four feed-down alerts", Duration::from_secs(60), || async {
            raised(&db.url, "feed-down").await.len() >= 4
        })
        .await;
    // let every outage run past twice the threshold on its owner: a replica that should not
    // report it has had every chance to
    for (_, listen, _) in &replicas {
        processes[1]
            .wait_for(
                "the outages to pass 6 s",
                Duration::from_secs(30),
                || async {
                    mcp_feeds(listen).await.iter().all(|feed| {
                        feed["phase"] == "standby"
                            || feed["down_since"]
                                .as_str()
                                .and_then(|since| since.parse::<DateTime<Utc>>().ok())
                                .is_some_and(|since| {
                                    Utc::now() - since > chrono::Duration::seconds(6)
                                })
                    })
                },
            )
            .await;
    }
    assert_eq!(
        raised(&db.url, "feed-down").await,
        owners,
        "one feed-down per cluster, from the replica running its feed"
    );

    let kms = FakeKms::start(
        &listeners
            .iter()
            .map(|(port, cluster)| (*port, cluster.as_str()))
            .collect::<Vec<_>>(),
    );
    processes[0]
        .wait_for("four feed-up alerts", Duration::from_secs(60), || async {
            raised(&db.url, "feed-up").await.len() >= 4
        })
        .await;
    let up = raised(&db.url, "feed-up").await;
    let clusters: Vec<&str> = up.iter().map(|(cluster, _)| cluster.as_str()).collect();
    assert_eq!(
        clusters,
        ["c0", "c1", "c2", "c3"],
        "one feed-up per cluster: {up:?}"
    );
    for process in processes {
        process.stop();
    }
    drop(kms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_alert_handlers_are_contained_retried_within_bounds_and_recorded() {
    use nightcrier::alert::{AlertKind, Alerts, AlertsConfig, NewAlert};
    let hostile = built_plugins()
        .parent()
        .unwrap()
        .join("fixtures/hostile.wasm");
    for db in backends().await {
        let store = db.queue().await.store().clone();
        let folder = tempfile::tempdir().unwrap();
        for name in ["spinner", "trapper", "refuser", "receiver"] {
            std::fs::copy(&hostile, folder.path().join(format!("{name}.wasm"))).unwrap();
        }
        let plugin = |name: &str, deadline: u64, attack: &str| {
            format!(
                "[plugin.{name}]\ndeadline_ms = {deadline}\n[plugin.{name}.config]\nname = \"{name}\"\nattack = \"{attack}\"\ntarget = \"webhook answered 503\"\n"
            )
        };
        let config = nightcrier_plugin_host::PluginsConfig::from_toml(&format!(
            "dir = {:?}\n{}{}{}{}",
            folder.path(),
            plugin("spinner", 200, "loop"),
            plugin("trapper", 2000, "trap"),
            plugin("refuser", 2000, "fail"),
            plugin("receiver", 2000, "none"),
        ))
        .unwrap();
        let host = load_all(config).await;
        let (alerts, delivery) = Alerts::new(
            store.clone(),
            Some(host),
            AlertsConfig {
                feed_down_after: None,
                delivery_attempts: 3,
                retry_initial: Duration::from_millis(50),
            },
            "test-instance",
        );
        let raised = alerts
            .raise(NewAlert {
                kind: AlertKind::FeedDown,
                cluster: Some("prod".into()),
                summary: "the event feed of cluster prod has been down for 10m".into(),
                detail: String::new(),
                fields: Vec::new(),
            })
            .await;
        let started = tokio::time::Instant::now();
        let outcomes = delivery.deliver(&raised).await;
        let took = started.elapsed();
        let seen: Vec<(&str, bool, u32)> = outcomes
            .iter()
            .map(|o| (o.plugin.as_str(), o.delivered, o.attempts))
            .collect();
        assert_eq!(
            seen,
            [
                ("receiver", true, 1),
                // a retryable refusal and a timeout are tried three times; a trap once
                ("refuser", false, 3),
                ("spinner", false, 3),
                ("trapper", false, 1),
            ],
            "{}: {outcomes:?}",
            db.backend
        );
        // three deadlines of 200 ms (each stopped within twice that) plus the pauses, not forever
        assert!(took < Duration::from_secs(8), "{}: {took:?}", db.backend);
        let listed = store.alerts(1, None, None).await.unwrap();
        let rows: Vec<(String, String, i32, bool)> = listed[0]
            .deliveries
            .iter()
            .map(|d| {
                (
                    d.plugin.clone(),
                    d.outcome.clone(),
                    d.attempts,
                    d.error.is_some(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("receiver".to_owned(), "delivered".to_owned(), 1, false),
                ("refuser".to_owned(), "failed".to_owned(), 3, true),
                ("spinner".to_owned(), "failed".to_owned(), 3, true),
                ("trapper".to_owned(), "failed".to_owned(), 1, true),
            ],
            "{}",
            db.backend
        );
        let trap_error = listed[0].deliveries[3].error.clone().unwrap();
        assert!(trap_error.contains("trapper@"), "{trap_error}");
        assert!(
            listed[0].deliveries[1]
                .error
                .as_deref()
                .unwrap()
                .contains("webhook answered 503")
        );
    }
}

/// An alert recorded but never handed to a plugin (the process crashed, or the delivery queue
/// was full) goes out when delivery starts again: this instance's, of the last day, once.
#[tokio::test]
async fn alerts_left_undelivered_go_out_when_delivery_starts() {
    use nightcrier::alert::{
        AlertKind, Alerts, AlertsConfig, DeliveryOutcome, NewAlert, RaisedAlert,
    };
    let hostile = built_plugins()
        .parent()
        .unwrap()
        .join("fixtures/hostile.wasm");
    for db in backends().await {
        let store = db.queue().await.store().clone();
        let now = Utc::now();
        let alert = |cluster: &str, age: chrono::Duration| RaisedAlert {
            id: uuid::Uuid::now_v7(),
            alert: NewAlert {
                kind: AlertKind::BreakerDegraded,
                cluster: Some(cluster.into()),
                summary: format!("triage is degraded on cluster {cluster}"),
                detail: String::new(),
                fields: vec![("consecutive-failures".into(), "3".into())],
            },
            raised_at: chrono::SubsecRound::trunc_subsecs(now - age, 6),
        };
        let delivered = alert("delivered", chrono::Duration::minutes(5));
        let missed = alert("missed", chrono::Duration::minutes(4));
        let elsewhere = alert("elsewhere", chrono::Duration::minutes(3));
        let too_old = alert("too-old", chrono::Duration::hours(30));
        for (raised, by) in [
            (&delivered, "me"),
            (&missed, "me"),
            (&elsewhere, "another-replica"),
            (&too_old, "me"),
        ] {
            store.insert_alert(raised, by).await.unwrap();
        }
        store
            .record_alert_delivery(
                delivered.id,
                &DeliveryOutcome {
                    plugin: "receiver".into(),
                    plugin_version: None,
                    delivered: true,
                    attempts: 1,
                    error: None,
                },
                now,
            )
            .await
            .unwrap();

        let folder = tempfile::tempdir().unwrap();
        std::fs::copy(&hostile, folder.path().join("receiver.wasm")).unwrap();
        let config = nightcrier_plugin_host::PluginsConfig::from_toml(&format!(
            "dir = {:?}\n[plugin.receiver.config]\nname = \"receiver\"\nattack = \"none\"\n",
            folder.path(),
        ))
        .unwrap();
        let host = load_all(config).await;
        let (_alerts, delivery) = Alerts::new(
            store.clone(),
            Some(host),
            AlertsConfig {
                feed_down_after: None,
                delivery_attempts: 1,
                retry_initial: Duration::from_millis(10),
            },
            "me",
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let running = tokio::spawn(delivery.run(stop.clone()));
        let deliveries_of = |cluster: &'static str| {
            let store = store.clone();
            async move {
                store
                    .alerts(10, None, Some(cluster))
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|stored| stored.deliveries.len())
                    .sum::<usize>()
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while deliveries_of("missed").await == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: the missed alert was not delivered",
                db.backend
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        running.await.unwrap();
        assert_eq!(deliveries_of("delivered").await, 1, "{}", db.backend);
        assert_eq!(deliveries_of("missed").await, 1);
        assert_eq!(deliveries_of("elsewhere").await, 0, "another replica's");
        assert_eq!(deliveries_of("too-old").await, 0, "older than a day");
        let listed = store.alerts(10, None, Some("missed")).await.unwrap();
        assert_eq!(listed[0].deliveries[0].outcome, "delivered");
        assert_eq!(listed[0].deliveries[0].plugin, "receiver");
    }
}

/// The plugin host over `config`, every plugin loaded.
async fn load_all(
    config: nightcrier_plugin_host::PluginsConfig,
) -> nightcrier_plugin_host::PluginHost {
    let (host, refused) = nightcrier_plugin_host::PluginHost::load(
        config,
        std::sync::Arc::new(nightcrier_plugin_host::MemoryKvStore::new()),
    )
    .await
    .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    host
}
