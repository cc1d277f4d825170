//! The HTTP API of `serve`, as a process over real HTTP: the incident list with its filters and
//! cursor, one incident, its report and live log, retry, dead letters, plugins, metrics,
//! readiness, and the token rule off loopback.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use crate::support::postgres_server::OwnPostgres;
use crate::support::process::{Serve, free_port, get_json};
use crate::support::{backends, built_plugins, event};

struct Api {
    listen: String,
}

fn config(dir: &Path, url: &str, listen: &str, extra: &str) -> PathBuf {
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["kubernetes-mcp", "alertmanager"] {
        std::fs::copy(
            built_plugins().join(format!("{name}.wasm")),
            plugins.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    let path = dir.join("nightcrier.toml");
    std::fs::write(
        &path,
        format!(
            "data_dir = \"{data}\"\n[database]\nurl = \"{url}\"\n[workers]\nconcurrency = 0\n[agent]\nworkspace_root = \"{root}\"\n[http]\nlisten = \"{listen}\"\n{extra}\n[plugins]\ndir = \"{plugins}\"\n",
            data = dir.join("data").display(),
            root = dir.join("workspaces").display(),
            plugins = plugins.display(),
        ),
    )
    .unwrap();
    path
}

async fn start(dir: &Path, url: &str) -> (Api, Serve) {
    let listen = format!("127.0.0.1:{}", free_port());
    let config = config(dir, url, &listen, "");
    let mut serve = Serve::start(&config);
    serve
        .wait_for("the listener", Duration::from_secs(60), || async {
            get_json(&listen, "/api/v1/clusters").await.is_some()
        })
        .await;
    (Api { listen }, serve)
}

async fn get(api: &Api, path: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{}{path}", api.listen))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// 30 incidents: clusters a/b, CrashLoop/NodeUnhealthy, critical/warning.
async fn populate(queue: &nightcrier::Queue, base: chrono::DateTime<Utc>) -> Vec<String> {
    let mut events = Vec::new();
    for n in 0..30 {
        let mut fault = event(if n % 2 == 0 { "a" } else { "b" }, n);
        fault.fault_type = if n % 3 == 0 {
            "NodeUnhealthy"
        } else {
            "CrashLoop"
        }
        .into();
        fault.severity = if n % 5 == 0 { "warning" } else { "critical" }.into();
        fault.received_at = base - chrono::Duration::seconds(100 - n as i64);
        events.push(fault);
    }
    queue
        .ingest_batch(&events)
        .await
        .unwrap()
        .into_iter()
        .map(|ids| ids.incident_id.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_list_filters_and_pages_newest_first() {
    for db in backends().await {
        let dir = tempfile::tempdir().unwrap();
        let (api, serve) = start(dir.path(), &db.url).await;
        let queue = db.queue().await;
        let base = Utc::now();
        let ids = populate(&queue, base).await;

        // three pages of ten, newest first, nothing twice, nothing missed
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/api/v1/incidents?limit=10&cursor={cursor}"),
                None => "/api/v1/incidents?limit=10".to_owned(),
            };
            let (status, page) = get(&api, &path).await;
            assert_eq!(status, 200, "{page}");
            for incident in page["incidents"].as_array().unwrap() {
                seen.push(incident["id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let mut newest_first = ids.clone();
        newest_first.reverse();
        assert_eq!(seen, newest_first, "{}", db.backend);

        let (_, page) = get(&api, "/api/v1/incidents?cluster=a&limit=100").await;
        let items = page["incidents"].as_array().unwrap();
        assert_eq!(items.len(), 15);
        assert!(items.iter().all(|i| i["cluster"] == "a"));
        let (_, page) = get(&api, "/api/v1/incidents?fault_type=NodeUnhealthy&limit=100").await;
        assert_eq!(page["incidents"].as_array().unwrap().len(), 10);
        let (_, page) = get(
            &api,
            "/api/v1/incidents?severity=warning&cluster=a&fault_type=NodeUnhealthy&limit=100",
        )
        .await;
        // n divisible by 2, 3 and 5 below 30: 0
        assert_eq!(page["incidents"].as_array().unwrap().len(), 1, "{page}");
        // pre-triage (no plugins) queues every incident
        let mut serve = serve;
        serve
            .wait_for("30 queued", Duration::from_secs(30), || async {
                get(&api, "/api/v1/incidents?status=queued&limit=100")
                    .await
                    .1["incidents"]
                    .as_array()
                    .is_some_and(|items| items.len() == 30)
            })
            .await;
        let (_, page) = get(&api, "/api/v1/incidents?status=pending&limit=100").await;
        assert!(page["incidents"].as_array().unwrap().is_empty());
        let (_, page) = get(&api, "/api/v1/incidents?status=resolved").await;
        assert!(page["incidents"].as_array().unwrap().is_empty());
        // n = 20..24 were received 80 to 76 seconds before `base`
        let at = |seconds: i64| {
            (base - chrono::Duration::milliseconds(seconds * 1000 + 500))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let (_, page) = get(
            &api,
            &format!(
                "/api/v1/incidents?limit=100&since={}&until={}",
                at(80),
                at(75)
            ),
        )
        .await;
        assert_eq!(page["incidents"].as_array().unwrap().len(), 5, "{page}");

        let (status, error) = get(&api, "/api/v1/incidents?status=sleeping").await;
        assert_eq!(status, 400);
        assert!(error["error"].as_str().unwrap().contains("sleeping"));
        assert_eq!(get(&api, "/api/v1/incidents?cursor=zzz").await.0, 400);
        assert_eq!(get(&api, "/api/v1/incidents?colour=red").await.0, 400);
        serve.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_incident_its_report_and_retry() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (api, serve) = start(dir.path(), &db.url).await;
    let queue = db.queue().await;
    let ingested = queue.ingest(&event("a", 1)).await.unwrap();
    let id = ingested.incident_id;
    queue
        .store()
        .insert_report(
            &nightcrier::store::NewReport {
                incident_id: id,
                execution_id: None,
                markdown: "# Investigation\n\n<script>alert(1)</script> root cause".into(),
                html: None,
                structured: Some(serde_json::json!({"redact-secrets.redactions": "0"})),
                summary: Some("root cause".into()),
                artifact_uri: None,
                storage_type: "database".into(),
                store_uri: None,
            },
            Utc::now(),
        )
        .await
        .unwrap();

    let (status, doc) = get(&api, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["incident"]["id"], id.to_string());
    assert_eq!(doc["event"]["fault_type"], "CrashLoop");
    assert_eq!(doc["event"]["labels"]["tier"], "gold");
    assert_eq!(doc["reports"][0]["summary"], "root cause");
    assert_eq!(
        doc["reports"][0]["structured"]["redact-secrets.redactions"],
        "0"
    );
    assert!(doc["reports"][0].get("report_markdown").is_none());
    assert_eq!(
        doc["reports"][0]["upload_pending"], false,
        "a report kept before the report store has nothing to upload: {doc}"
    );
    assert!(doc["reports"][0]["store_uri"].is_null());

    let markdown = reqwest::get(format!(
        "http://{}/api/v1/incidents/{id}/report",
        api.listen
    ))
    .await
    .unwrap();
    assert_eq!(markdown.status(), 200);
    assert!(
        markdown.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    assert!(
        markdown
            .text()
            .await
            .unwrap()
            .contains("<script>alert(1)</script>")
    );
    // a report kept without a page gets one rendered: sanitised, the summary on top
    let html = reqwest::get(format!(
        "http://{}/api/v1/incidents/{id}/report?format=html",
        api.listen
    ))
    .await
    .unwrap();
    assert_eq!(html.status(), 200);
    assert!(
        html.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        html.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let page = html.text().await.unwrap();
    assert!(!page.contains("<script"), "{page}");
    assert!(page.contains("root cause"), "{page}");
    assert!(
        page.contains("CrashLoop") && page.contains(&id.to_string()),
        "{page}"
    );
    assert!(page.find("CrashLoop").unwrap() < page.find("root cause").unwrap());
    assert_eq!(
        get(&api, &format!("/api/v1/incidents/{}", uuid::Uuid::new_v4()))
            .await
            .0,
        404
    );
    assert_eq!(get(&api, "/api/v1/incidents/not-an-id").await.0, 400);

    let http = reqwest::Client::new();
    let retry = |id: uuid::Uuid| {
        http.post(format!("http://{}/api/v1/incidents/{id}/retry", api.listen))
            .send()
    };
    let answer = retry(id).await.unwrap();
    assert_eq!(answer.status(), 409, "a pending incident cannot be retried");
    let now = Utc::now();
    let taken = queue
        .take_pending("test", 10, Duration::from_secs(60), now)
        .await
        .unwrap();
    queue
        .mark_skipped(taken[0].id, "test", "noise", now)
        .await
        .unwrap();
    let answer = retry(id).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(queue.get(id).await.unwrap().status.as_str(), "queued");
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_plugins_metrics_and_readiness() {
    let pg = OwnPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (api, mut serve) = start(dir.path(), &pg.url).await;
    // one good and one refused webhook delivery go through the alertmanager plugin
    let body = r#"{"alerts":[{"status":"firing","labels":{"alertname":"KubePodCrashLooping","cluster":"prod","pod":"p"},"annotations":{},"startsAt":"2025-12-20T14:07:31Z","fingerprint":"f1"}]}"#;
    let http = reqwest::Client::new();
    for body in [body, "{oops"] {
        http.post(format!("http://{}/webhooks/alertmanager", api.listen))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
    }
    let (status, page) = get(&api, "/api/v1/rejected").await;
    assert_eq!(status, 200);
    let letter = &page["rejected"][0];
    assert_eq!(letter["source"], "alertmanager");
    assert_eq!(letter["payload_preview"], "{oops");
    let payload = reqwest::get(format!(
        "http://{}/api/v1/rejected/{}/payload",
        api.listen,
        letter["id"].as_str().unwrap()
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert_eq!(&payload[..], b"{oops");

    let (_, plugins) = get(&api, "/api/v1/plugins").await;
    let alertmanager = plugins["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "alertmanager")
        .unwrap()
        .clone();
    assert_eq!(alertmanager["world"], "source");
    assert_eq!(alertmanager["calls"]["calls"], 2, "{alertmanager}");
    assert_eq!(alertmanager["calls"]["outcomes"]["ok"], 1);
    assert_eq!(alertmanager["calls"]["outcomes"]["plugin_error"], 1);

    let metrics = reqwest::get(format!("http://{}/metrics", api.listen))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "nightcrier_events_received_total",
        "nightcrier_events_committed_total",
        "nightcrier_events_rejected_total",
        "nightcrier_ingest_commit_latency_seconds_bucket",
        "nightcrier_plugin_calls_total",
        "nightcrier_plugin_call_duration_seconds_bucket",
        "nightcrier_incidents{status=\"pending\"}",
        "nightcrier_feed_up",
        "nightcrier_ingest_accepting 1",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(!metrics.contains("incident_id"), "no per-incident labels");

    let (status, ready) = get(&api, "/readyz").await;
    assert_eq!(status, 200, "{ready}");
    pg.halt();
    serve
        .wait_for("not ready", Duration::from_secs(30), || async {
            get(&api, "/readyz").await.0 == 503
        })
        .await;
    let (_, ready) = get(&api, "/readyz").await;
    assert_eq!(ready["checks"]["database"]["ok"], false, "{ready}");
    let health = reqwest::get(format!("http://{}/healthz", api.listen))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "alive while not ready");
    pg.resume();
    serve
        .wait_for("ready again", Duration::from_secs(60), || async {
            get(&api, "/readyz").await.0 == 200
        })
        .await;
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_every_route_but_health_needs_a_token() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // no token: refused at start, naming the keys
    let open = config(dir.path(), &db.url, &format!("0.0.0.0:{port}"), "");
    let out = std::process::Command::new(crate::support::process::bin())
        .args(["-c", open.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.read_token_env"), "{stderr}");

    // tokens for the API, but the webhook has none: still refused
    std::fs::write(dir.path().join("read"), "r3ad").unwrap();
    std::fs::write(dir.path().join("admin"), "adm1n").unwrap();
    let tokens = format!(
        "read_token_file = \"{}\"\nadmin_token_file = \"{}\"",
        dir.path().join("read").display(),
        dir.path().join("admin").display()
    );
    let half = config(dir.path(), &db.url, &format!("0.0.0.0:{port}"), &tokens);
    let out = std::process::Command::new(crate::support::process::bin())
        .args(["-c", half.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("intake.webhook.alertmanager"), "{stderr}");

    std::fs::write(dir.path().join("hook"), "h00k").unwrap();
    let full = format!(
        "{tokens}\n[intake.webhook.alertmanager]\ntoken_file = \"{}\"",
        dir.path().join("hook").display()
    );
    let config = config(dir.path(), &db.url, &format!("0.0.0.0:{port}"), &full);
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Serve::start(&config);
    serve
        .wait_for("the listener", Duration::from_secs(60), || async {
            reqwest::get(format!("http://{listen}/healthz"))
                .await
                .is_ok()
        })
        .await;
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = http.request(method, format!("http://{listen}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    use reqwest::Method;
    assert_eq!(
        call(Method::GET, "/healthz", None).await.unwrap().status(),
        200
    );
    assert_eq!(
        call(Method::GET, "/readyz", None).await.unwrap().status(),
        200
    );
    assert_eq!(
        call(Method::GET, "/api/v1/incidents", None)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        call(Method::GET, "/metrics", None).await.unwrap().status(),
        401
    );
    assert_eq!(
        call(Method::GET, "/api/v1/incidents", Some("wrong"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        call(Method::GET, "/api/v1/incidents", Some("r3ad"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(Method::GET, "/metrics", Some("r3ad"))
            .await
            .unwrap()
            .status(),
        200
    );
    let retry = format!("/api/v1/incidents/{}/retry", uuid::Uuid::new_v4());
    assert_eq!(
        call(Method::POST, &retry, Some("r3ad"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        call(Method::POST, &retry, Some("adm1n"))
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        call(Method::GET, "/api/v1/incidents", Some("adm1n"))
            .await
            .unwrap()
            .status(),
        200
    );
    // guessing is slowed down: after 10 failures in a minute (3 so far) this address is
    // refused, right token or not, until the minute is over; health still answers
    for _ in 0..7 {
        assert_eq!(
            call(Method::GET, "/api/v1/incidents", Some("guess"))
                .await
                .unwrap()
                .status(),
            401
        );
    }
    let refused = call(Method::GET, "/api/v1/incidents", Some("r3ad"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        call(Method::POST, "/webhooks/alertmanager", Some("h00k"))
            .await
            .unwrap()
            .status(),
        429
    );
    assert_eq!(
        call(Method::GET, "/healthz", None).await.unwrap().status(),
        200
    );
    // another address is not held back, and the metrics count the lockout
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let metrics = other
        .get(format!("http://{listen}/metrics"))
        .bearer_auth("r3ad")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("nightcrier_http_auth_lockouts_total 1"),
        "{text}"
    );
    assert!(text.contains("nightcrier_http_throttled_total 2"), "{text}");
    let log = serve.stop();
    assert!(log.contains("too many failed authentications"), "{log}");
    for secret in ["r3ad", "adm1n", "h00k"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_log_streams_as_server_sent_events() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (api, serve) = start(dir.path(), &db.url).await;
    let queue = db.queue().await;
    let id = queue.ingest(&event("a", 1)).await.unwrap().incident_id;
    let workspace = dir.path().join("workspaces").join(id.to_string());
    std::fs::create_dir_all(workspace.join("logs")).unwrap();
    std::fs::write(
        workspace.join("logs/agent-full.log"),
        "[STDOUT] looking at pods\n[STDOUT] found it\n",
    )
    .unwrap();
    std::fs::write(
        workspace.join("incident.json"),
        r#"{"status": "investigating"}"#,
    )
    .unwrap();
    let response = reqwest::get(format!("http://{}/api/v1/incidents/{id}/log", api.listen))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // the run ends while the stream is open: more lines, then the end
    let writer = {
        let workspace = workspace.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(workspace.join("logs/agent-full.log"))
                .unwrap();
            std::io::Write::write_all(&mut log, b"[STDOUT] report written\n").unwrap();
            tokio::time::sleep(Duration::from_millis(600)).await;
            std::fs::write(workspace.join("incident.json"), r#"{"status": "resolved"}"#).unwrap();
        })
    };
    let body = tokio::time::timeout(Duration::from_secs(30), response.text())
        .await
        .expect("the stream ends with the run")
        .unwrap();
    writer.await.unwrap();
    let lines: HashSet<&str> = body.lines().collect();
    for line in [
        "data: [STDOUT] looking at pods",
        "data: [STDOUT] found it",
        "data: [STDOUT] report written",
        "event: end",
    ] {
        assert!(lines.contains(line), "{line} missing from:\n{body}");
    }
    serve.stop();
}
