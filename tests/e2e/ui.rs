//! The web UI in a real headless Chromium (Debian's `chromium` through `chromium-driver`),
//! against a real `serve` with a real SQLite file, real plugins and a real agent container: the
//! list and its filters, one incident whose agent log grows live while the agent runs, its
//! report, retry (and retry refused without the form's CSRF token), hostile text from an event
//! and a report that stays text, and the login form off loopback. With
//! `NIGHTCRIER_SCREENSHOTS=DIR` it also writes each page at desktop and phone width to DIR (the
//! README's screenshots come from `NIGHTCRIER_SCREENSHOTS=docs/screenshots`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::Locator;
use nightcrier::queue::NewFaultEvent;

use crate::support::browser::Browser;
use crate::support::process::{Serve, free_port, get_json};
use crate::support::{backends, built_plugins, event};

/// The test agent: waits for a `go` file, then a `go2` file, when the incident says `gated`
/// (so a test sees its log grow between the two), then writes a report
/// with a script in it; an incident without `CrashLoop` gets a report too small to pass.
const AGENT: &str = r###"#!/bin/sh
out=/home/agent/output/investigation.md
echo "agent starting for $INCIDENT_ID"
echo "looking at the pods in namespace shop"
if grep -q 'gated' /home/agent/incident.json; then
  echo "waiting for the go file"
  while [ ! -e /home/agent/output/go ]; do sleep 0.2; done
  echo "reading the events of the deployment"
  while [ ! -e /home/agent/output/go2 ]; do sleep 0.2; done
fi
if grep -q '"faultType": "CrashLoop"' /home/agent/incident.json; then
  {
    echo "# Investigation"
    echo
    echo "## Root cause"
    echo
    echo "The checkout pod crash-loops because its config map \`checkout-config\` was deleted by the last rollout."
    echo
    echo "<script>document.title = 'pwned by the report'; window.pwnedByReport = true;</script>"
    echo "<img src=x onerror=\"window.pwnedByImage = true\">"
    echo
    echo "## Remediation"
    echo
    echo "1. Restore the config map: \`kubectl -n shop apply -f checkout-config.yaml\`"
    echo "2. Restart the rollout: \`kubectl -n shop rollout restart deploy/checkout\`"
    echo
    echo "| check | result |"
    echo "|---|---|"
    echo "| config map present | no |"
    echo "| image pull | ok |"
  } > "$out"
  echo "writing the report"
else
  echo "too small" > "$out"
  echo "giving up" >&2
fi
"###;

const HOSTILE_CONTEXT: &str = "Back-off restarting failed container (gated) \
     <script>document.title = 'pwned by the context'; window.pwnedByContext = true;</script>";

fn config(dir: &Path, url: &str, listen: &str, http_extra: &str, concurrency: u32) -> PathBuf {
    let image = nightcrier_agent::test_support::busybox_image("nightcrier-e2e-ui-agent", AGENT);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["kubernetes-mcp", "alertmanager", "dedup", "redact-secrets"] {
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
            r#"
data_dir = "{data}"

[database]
url = "{url}"

[http]
listen = "{listen}"
{http_extra}

[workers]
concurrency = {concurrency}
lease_secs = 30
poll_interval_secs = 0.1

[agent]
workspace_root = "{root}"
instance_id = "e2e-ui-{instance}"
default_profile = "e2e"

[agent.profiles.e2e]
image = "{image}"
command = ["/bin/sh", "/agent.sh"]
network = "none"
timeout_secs = 120
stop_grace_secs = 1
memory = "64m"
pids_limit = 64

[plugins]
dir = "{plugins}"
[plugins.plugin.dedup]
deadline_ms = 5000
[plugins.plugin.redact-secrets]
deadline_ms = 5000
"#,
            data = dir.join("data").display(),
            root = dir.join("workspaces").display(),
            plugins = plugins.display(),
            instance = uuid::Uuid::new_v4().simple(),
        ),
    )
    .unwrap();
    path
}

fn fault(
    cluster: &str,
    n: usize,
    fault_type: &str,
    severity: &str,
    context: &str,
) -> NewFaultEvent {
    let mut fault = event(cluster, n);
    fault.fault_id = Some(format!("fault-{n}-{}", uuid::Uuid::new_v4().simple()));
    fault.fault_type = fault_type.into();
    fault.severity = severity.into();
    fault.context = context.into();
    fault.payload = serde_json::json!({ "faultType": fault_type, "n": n });
    if let Some(resource) = fault.resource.as_mut() {
        resource.name = format!("{}-{n}", fault_type.to_lowercase());
    }
    fault
}

async fn status_of(queue: &nightcrier::Queue, id: uuid::Uuid) -> String {
    queue.get(id).await.unwrap().status.as_str().to_owned()
}

fn log_of(dir: &Path, id: uuid::Uuid) -> String {
    std::fs::read_to_string(
        dir.join("workspaces")
            .join(id.to_string())
            .join("logs/agent-full.log"),
    )
    .unwrap_or_default()
}

/// Writes `name`-desktop.png and `name`-phone.png of `url` when screenshots were asked for.
async fn screenshots(browser: &mut Browser, url: &str, name: &str) {
    let Ok(dir) = std::env::var("NIGHTCRIER_SCREENSHOTS") else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (suffix, width, height, max) in [("desktop", 1280, 800, 1800), ("phone", 390, 844, 2600)] {
        browser.resize(width, height).await;
        browser.open(url).await;
        let png = browser.full_page_png(max).await;
        std::fs::write(dir.join(format!("{name}-{suffix}.png")), png).unwrap();
    }
    browser.resize(1280, 800).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_lists_filters_streams_the_live_log_shows_the_report_and_retries() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let config = config(dir.path(), &db.url, &listen, "", 2);
    let mut serve = Serve::start(&config);
    serve
        .wait_for("the listener", Duration::from_secs(120), || async {
            get_json(&listen, "/api/v1/clusters").await.is_some()
        })
        .await;
    let queue = db.queue().await;
    let gated = queue
        .ingest(&fault(
            "prod-eu",
            1,
            "CrashLoop",
            "critical",
            HOSTILE_CONTEXT,
        ))
        .await
        .unwrap()
        .incident_id;
    let small = queue
        .ingest(&fault(
            "staging",
            2,
            "NodeUnhealthy",
            "warning",
            "Node ip-10-0-3-17 reports DiskPressure",
        ))
        .await
        .unwrap()
        .incident_id;
    let done = queue
        .ingest(&fault(
            "staging",
            3,
            "CrashLoop",
            "critical",
            "Container checkout-api exited with code 137",
        ))
        .await
        .unwrap()
        .incident_id;
    // a webhook delivery that the alertmanager plugin refuses: a dead letter for its page
    reqwest::Client::new()
        .post(format!("http://{listen}/webhooks/alertmanager"))
        .header("content-type", "application/json")
        .body("{not json <script>window.pwnedByLetter = true</script>")
        .send()
        .await
        .unwrap();
    serve
        .wait_for("the gated run waits", Duration::from_secs(120), || async {
            log_of(dir.path(), gated).contains("waiting for the go file")
        })
        .await;
    serve
        .wait_for("the staging runs end", Duration::from_secs(120), || async {
            status_of(&queue, small).await == "agent_failed"
                && status_of(&queue, done).await == "resolved"
        })
        .await;

    let base = format!("http://{listen}");
    let mut browser = Browser::start(1280, 800).await;

    // the list: newest first, every incident, then filtered to one cluster
    browser.open(&format!("{base}/")).await;
    let list = browser.text("#incidents").await;
    for needle in [
        "CrashLoop",
        "NodeUnhealthy",
        "prod-eu",
        "staging",
        "investigating",
        "agent failed",
        "resolved",
    ] {
        assert!(
            list.contains(needle),
            "{needle} missing from the list:\n{list}"
        );
    }
    let rows = browser
        .client
        .find_all(Locator::Css("#incidents tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    assert!(
        rows[0].text().await.unwrap().contains("staging")
            && rows[2].text().await.unwrap().contains("prod-eu"),
        "newest first"
    );
    let form = browser
        .client
        .form(Locator::Css("form.filters"))
        .await
        .unwrap();
    form.set_by_name("cluster", "staging").await.unwrap();
    form.submit().await.unwrap();
    browser
        .wait_text("#incidents", Duration::from_secs(30), |text| {
            !text.contains("prod-eu") && text.contains("staging")
        })
        .await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .as_str()
            .contains("cluster=staging")
    );
    let form = browser
        .client
        .form(Locator::Css("form.filters"))
        .await
        .unwrap();
    form.set_by_name("status", "agent_failed").await.unwrap();
    form.submit().await.unwrap();
    let filtered = browser
        .wait_text("#incidents", Duration::from_secs(30), |text| {
            text.contains("NodeUnhealthy") && !text.contains("resolved")
        })
        .await;
    assert!(filtered.contains("NodeUnhealthy"), "{filtered}");

    // one incident, while its agent runs: the log grows without a reload
    browser.open(&format!("{base}/incidents/{gated}")).await;
    assert_eq!(browser.text("#summary .status").await, "investigating");
    browser
        .wait_text("#live-log", Duration::from_secs(60), |text| {
            text.contains("waiting for the go file")
        })
        .await;
    browser
        .eval("window.sameDocument = 'yes'; return null;")
        .await;
    std::fs::write(
        dir.path()
            .join("workspaces")
            .join(gated.to_string())
            .join("output/go"),
        "",
    )
    .unwrap();
    browser
        .wait_text("#live-log", Duration::from_secs(60), |text| {
            text.contains("reading the events of the deployment")
        })
        .await;
    // the new line came through the event stream, not a reload
    let same = browser.eval("return window.sameDocument || null;").await;
    assert_eq!(same, "yes", "the log grew by reloading the page");
    assert_eq!(browser.text("#summary .status").await, "investigating");
    std::fs::write(
        dir.path()
            .join("workspaces")
            .join(gated.to_string())
            .join("output/go2"),
        "",
    )
    .unwrap();

    // the run ends: the page reloads itself and shows the report
    let report = browser
        .wait_text("#report article.report", Duration::from_secs(60), |text| {
            text.contains("config map")
        })
        .await;
    assert!(report.contains("Remediation"), "{report}");
    assert_eq!(browser.text("#summary .status").await, "resolved");
    assert!(
        browser.text("#pre-triage").await.contains("dedup"),
        "pre-triage decisions are shown"
    );
    // hostile text stays text: nothing it carried ran
    let title = browser.client.title().await.unwrap();
    assert!(!title.contains("pwned"), "a script ran: {title}");
    let ran = browser
        .eval("return [window.pwnedByReport, window.pwnedByContext, window.pwnedByImage].filter(Boolean).length;")
        .await;
    assert_eq!(ran, 0, "a script from the event or the report ran");
    let context = browser.text("blockquote.context").await;
    assert!(context.contains("<script>document.title"), "{context}");
    let report_scripts = browser
        .client
        .find_all(Locator::Css("article.report script, article.report img"))
        .await
        .unwrap();
    assert!(report_scripts.is_empty());
    screenshots(
        &mut browser,
        &format!("{base}/incidents/{gated}"),
        "incident",
    )
    .await;

    // retry: refused without the form's token, accepted with it
    let http = reqwest::Client::new();
    for body in ["", "csrf=guess"] {
        let refused = http
            .post(format!("{base}/incidents/{small}/retry"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 403, "retry with {body:?}");
    }
    assert_eq!(status_of(&queue, small).await, "agent_failed");
    browser.open(&format!("{base}/incidents/{small}")).await;
    browser
        .client
        .find(Locator::Css("form.retry button"))
        .await
        .expect("a retry button on a failed incident")
        .click()
        .await
        .unwrap();
    browser
        .wait_text(".notice", Duration::from_secs(30), |text| {
            text.contains("Queued again")
        })
        .await;
    let after = status_of(&queue, small).await;
    assert!(
        ["queued", "investigating", "agent_failed"].contains(&after.as_str()),
        "{after}"
    );
    assert!(queue.get(small).await.unwrap().queued_at.is_some());

    // the list refreshes itself: a new incident appears without a reload
    browser.open(&format!("{base}/")).await;
    browser
        .eval("window.sameDocument = 'list'; return null;")
        .await;
    queue
        .ingest(&fault(
            "dev",
            4,
            "ImagePullBackOff",
            "critical",
            "Back-off pulling image registry.local/checkout:v2",
        ))
        .await
        .unwrap();
    browser
        .wait_text("#incidents", Duration::from_secs(30), |text| {
            text.contains("ImagePullBackOff")
        })
        .await;
    let same = browser.eval("return window.sameDocument || null;").await;
    assert_eq!(same, "list", "the list was refreshed in place");

    // the other pages
    browser.open(&format!("{base}/plugins")).await;
    let plugins = browser.text("main").await;
    for needle in [
        "kubernetes-mcp",
        "alertmanager",
        "dedup",
        "redact-secrets",
        "pre-triage",
    ] {
        assert!(plugins.contains(needle), "{needle} missing:\n{plugins}");
    }
    browser.open(&format!("{base}/rejected")).await;
    let rejected = browser.text("main").await;
    assert!(rejected.contains("alertmanager"), "{rejected}");
    assert!(
        rejected.contains("<script>"),
        "the payload is shown as text: {rejected}"
    );
    browser.open(&format!("{base}/clusters")).await;
    let clusters = browser.text("main").await;
    assert!(
        clusters.contains("alertmanager"),
        "the webhook feed: {clusters}"
    );
    let ran = browser.eval("return window.pwnedByLetter || null;").await;
    assert!(ran.is_null());

    // without JavaScript the pages are the same HTML, filters included; security headers on each
    let plain = http
        .get(format!("{base}/?cluster=prod-eu&status=resolved"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(plain.contains(&format!("/incidents/{gated}")), "{plain}");
    assert!(!plain.contains(&format!("/incidents/{done}")), "{plain}");
    let page = http.get(format!("{base}/")).send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");

    browser.resize(1280, 800).await;
    screenshots(&mut browser, &format!("{base}/"), "incidents").await;
    screenshots(&mut browser, &format!("{base}/clusters"), "clusters").await;
    screenshots(&mut browser, &format!("{base}/plugins"), "plugins").await;
    screenshots(&mut browser, &format!("{base}/rejected"), "rejected").await;
    browser.close().await;
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_ui_needs_a_login_and_retry_needs_the_admin_token() {
    let db = backends().await.into_iter().next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("read"), "r3ad-t0ken").unwrap();
    std::fs::write(dir.path().join("admin"), "adm1n-t0ken").unwrap();
    std::fs::write(dir.path().join("hook"), "h00k").unwrap();
    let port = free_port();
    let tokens = format!(
        "read_token_file = \"{}\"\nadmin_token_file = \"{}\"\n[intake.webhook.alertmanager]\ntoken_file = \"{}\"",
        dir.path().join("read").display(),
        dir.path().join("admin").display(),
        dir.path().join("hook").display(),
    );
    let config = config(dir.path(), &db.url, &format!("0.0.0.0:{port}"), &tokens, 0);
    let listen = format!("127.0.0.1:{port}");
    let mut serve = Serve::start(&config);
    serve
        .wait_for("the listener", Duration::from_secs(120), || async {
            reqwest::get(format!("http://{listen}/healthz"))
                .await
                .is_ok()
        })
        .await;
    let queue = db.queue().await;
    let id = queue
        .ingest(&fault(
            "prod-us",
            7,
            "OOMKilled",
            "critical",
            "Container api was OOM killed",
        ))
        .await
        .unwrap()
        .incident_id;
    serve
        .wait_for("pre-triage", Duration::from_secs(60), || async {
            status_of(&queue, id).await == "queued"
        })
        .await;
    // an incident a retry accepts: moved on by the queue's own operations
    let now = chrono::Utc::now();
    let (_, lease) = queue
        .claim("e2e-ui", Duration::from_secs(60), now)
        .await
        .unwrap()
        .expect("the queued incident");
    queue
        .fail(
            &lease,
            &nightcrier::queue::JobOutcome::Abort {
                reason: "the agent image is gone".into(),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(status_of(&queue, id).await, "failed");

    let base = format!("http://{listen}");
    let browser = Browser::start(1280, 800).await;
    browser.open(&format!("{base}/incidents/{id}")).await;
    let url = browser.client.current_url().await.unwrap();
    assert_eq!(url.path(), "/login", "{url}");
    let login = |token: &'static str| {
        let browser = &browser;
        async move {
            let form = browser
                .client
                .form(Locator::Css("section.login form"))
                .await
                .unwrap();
            form.set_by_name("token", token).await.unwrap();
            form.submit().await.unwrap();
        }
    };
    login("wrong").await;
    browser
        .wait_text(".problem", Duration::from_secs(30), |text| {
            text.contains("not the read or admin token")
        })
        .await;

    // the read token: the incident, no retry button; the cookie is HttpOnly and SameSite=Strict
    login("r3ad-t0ken").await;
    browser
        .wait_text("#summary", Duration::from_secs(30), |text| {
            text.contains("OOMKilled")
        })
        .await;
    assert_eq!(
        browser.client.current_url().await.unwrap().path(),
        format!("/incidents/{id}")
    );
    assert!(
        browser
            .client
            .find(Locator::Css("form.retry"))
            .await
            .is_err(),
        "no retry for a read-only login"
    );
    let cookie = browser
        .client
        .get_named_cookie("nightcrier_session")
        .await
        .expect("the session cookie");
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );
    let read_session = cookie.value().to_owned();
    let visible = browser.eval("return document.cookie;").await;
    assert!(
        !visible
            .as_str()
            .unwrap_or_default()
            .contains("nightcrier_session")
    );

    // a read session cannot retry, even with its own CSRF token
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let csrf = browser
        .client
        .find(Locator::Css("form.logout input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .unwrap();
    let post = |session: String, body: String| {
        http.post(format!("{base}/incidents/{id}/retry"))
            .header("cookie", format!("nightcrier_session={session}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(
        post(read_session.clone(), format!("csrf={csrf}"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        http.post(format!("{base}/incidents/{id}/retry"))
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "no session"
    );
    let anonymous = http.get(format!("{base}/clusters")).send().await.unwrap();
    assert_eq!(anonymous.status(), 303);
    assert!(
        anonymous.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/login")
    );

    // log out, log in as admin: retry refused without the form's token, then pressed
    browser
        .client
        .find(Locator::Css("form.logout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_text("h1", Duration::from_secs(30), |text| text == "Log in")
        .await;
    assert!(
        http.get(format!("{base}/"))
            .header("cookie", format!("nightcrier_session={read_session}"))
            .send()
            .await
            .unwrap()
            .status()
            == 303,
        "the session ended at logout"
    );
    browser.open(&format!("{base}/incidents/{id}")).await;
    login("adm1n-t0ken").await;
    browser
        .wait_text("#summary", Duration::from_secs(30), |text| {
            text.contains("OOMKilled")
        })
        .await;
    let admin_session = browser
        .client
        .get_named_cookie("nightcrier_session")
        .await
        .unwrap()
        .value()
        .to_owned();
    assert_eq!(
        post(admin_session.clone(), String::new())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(admin_session, "csrf=guess".into())
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(status_of(&queue, id).await, "failed");
    browser
        .client
        .find(Locator::Css("form.retry button"))
        .await
        .expect("a retry button for the admin")
        .click()
        .await
        .unwrap();
    browser
        .wait_text(".notice", Duration::from_secs(30), |text| {
            text.contains("Queued again")
        })
        .await;
    assert_eq!(status_of(&queue, id).await, "queued");
    browser.close().await;
    let log = serve.stop();
    for secret in ["r3ad-t0ken", "adm1n-t0ken"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
}
