//! The slack plugin against a real HTTP listener on 127.0.0.1: Block Kit payload, status handling and grants.

use std::sync::{Arc, Mutex};

use nightcrier_plugin_host::CallError;
use nightcrier_plugin_host::types::Severity;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{agent_result, incident, load};

/// Requests seen by the listener: head and body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A minimal HTTP/1.1 server that records request bodies and answers with a fixed status.
pub(crate) struct Listener {
    port: u16,
    received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one(mut socket: tokio::net::TcpStream, status: u16, received: Received) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head, body_start) = loop {
        let Ok(read) = socket.read(&mut chunk).await else {
            return;
        };
        if read == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            break (
                String::from_utf8_lossy(&buffer[..end]).into_owned(),
                end + 4,
            );
        }
    };
    let length = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|value| value.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = buffer[body_start..].to_vec();
    while body.len() < length {
        let Ok(read) = socket.read(&mut chunk).await else {
            return;
        };
        if read == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..read]);
    }
    received.lock().unwrap().push((head, body));
    let reply = if status == 200 { "ok" } else { "no_service" };
    let response = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

impl Listener {
    pub(crate) async fn start(status: u16) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let store = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                serve_one(socket, status, store.clone()).await;
            }
        });
        Listener {
            port,
            received,
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub(crate) fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.received.lock().unwrap().clone()
    }
}

fn slack_config(server: &Listener, grant: &str) -> String {
    format!(
        "[plugin.slack]\nallowed_hosts = [\"{grant}\"]\n[plugin.slack.config]\nwebhook_url = \"{}\"\nreport_url_template = \"https://nightcrier.example/incidents/{{id}}\"\n",
        server.url("/services/T/B/x")
    )
}

const REPORT: &str = "# Investigation\n## Root Cause\nThe image tag v2 does not exist in the registry.\n**Confidence: HIGH**\n## Next steps\nFix the tag.\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_the_block_kit_message_to_the_granted_webhook() {
    let server = Listener::start(200).await;
    let (host, refused, _folder, _kv) = load(
        &[("plugins/slack.wasm", "slack.wasm")],
        &slack_config(&server, &server.origin()),
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let outcome = host
        .post_triage(
            "slack",
            &incident(Some("shop"), Severity::Critical),
            &agent_result(REPORT),
        )
        .await
        .unwrap();
    assert!(
        outcome
            .fields
            .contains(&("slack-status".to_owned(), "200".to_owned())),
        "{:?}",
        outcome.fields
    );
    assert!(
        outcome
            .fields
            .contains(&("confidence".to_owned(), "HIGH".to_owned())),
        "{:?}",
        outcome.fields
    );

    let requests = server.requests();
    let [(head, body)] = requests.as_slice() else {
        panic!("expected one request, got {}", requests.len())
    };
    assert!(head.starts_with("POST /services/T/B/x HTTP/1.1"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let payload: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        payload["blocks"][0]["text"]["text"],
        "Kubernetes Incident Triage :white_check_mark:"
    );
    assert_eq!(
        payload["blocks"][1]["fields"][0]["text"],
        "*Cluster:*\nkind-dev"
    );
    assert_eq!(
        payload["blocks"][1]["fields"][1]["text"],
        "*Namespace:*\nshop"
    );
    assert_eq!(
        payload["blocks"][1]["fields"][2]["text"],
        "*Resource:*\nPod/checkout-7d9f8b6c5-x2k4q"
    );
    assert_eq!(
        payload["blocks"][1]["fields"][3]["text"],
        "*Reason:*\nCrashLoop"
    );
    assert_eq!(
        payload["blocks"][2]["text"]["text"],
        "*Root Cause (HIGH confidence):*\nThe image tag v2 does not exist in the registry."
    );
    assert_eq!(
        payload["blocks"][3]["elements"][0]["text"],
        "Incident ID: `inc-1` | Duration: 2m35s"
    );
    assert_eq!(
        payload["blocks"][4]["elements"][0]["url"],
        "https://nightcrier.example/incidents/inc-1"
    );
    assert_eq!(payload["attachments"][0]["color"], "good");
    assert_eq!(
        payload["attachments"][0]["footer"],
        "Report: URL (see button above)"
    );
    assert!(payload.get("text").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_a_retryable_plugin_error() {
    let server = Listener::start(503).await;
    let (host, refused, _folder, _kv) = load(
        &[("plugins/slack.wasm", "slack.wasm")],
        &slack_config(&server, &server.origin()),
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let error = host
        .post_triage(
            "slack",
            &incident(Some("shop"), Severity::Critical),
            &agent_result(REPORT),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Plugin { retryable: true, message, .. } if message.contains("status 503")),
        "{error}"
    );
    assert!(error.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_outside_the_grant_is_refused_at_load() {
    let server = Listener::start(200).await;
    let (host, refused, _folder, _kv) = load(
        &[("plugins/slack.wasm", "slack.wasm")],
        &slack_config(&server, "https://hooks.slack.com:443"),
    )
    .await;
    assert!(host.plugins().is_empty());
    let [error] = refused.as_slice() else {
        panic!("{refused:?}")
    };
    assert!(error.to_string().contains(&server.origin()), "{error}");
    assert!(server.requests().is_empty());
}

/// Without any grant the plugin is left out with a plain reason; granted as the example config
/// does (the URL from `SLACK_WEBHOOK_URL`), it loads, and with the variable unset it sends nothing
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_grants_slack_is_disabled_and_without_a_url_it_sends_nothing() {
    let (host, refused, _folder, _kv) = load(&[("plugins/slack.wasm", "slack.wasm")], "").await;
    assert!(host.plugins().is_empty());
    let [error] = refused.as_slice() else {
        panic!("{refused:?}")
    };
    let message = error.to_string();
    assert!(
        message.contains("is disabled")
            && message.contains("https://hooks.slack.com:443")
            && message.contains("SLACK_WEBHOOK_URL")
            && message.contains("[plugins.plugin.slack]"),
        "{message}"
    );

    assert!(
        std::env::var_os("SLACK_WEBHOOK_URL").is_none(),
        "this test needs SLACK_WEBHOOK_URL unset"
    );
    let (host, refused, _folder, _kv) = load(
        &[("plugins/slack.wasm", "slack.wasm")],
        "[plugin.slack]\nallowed_hosts = [\"https://hooks.slack.com:443\"]\nenv = [\"SLACK_WEBHOOK_URL\"]\n",
    )
    .await;
    assert!(refused.is_empty(), "{refused:?}");
    let outcome = host
        .post_triage(
            "slack",
            &incident(Some("shop"), Severity::Critical),
            &agent_result(REPORT),
        )
        .await
        .unwrap();
    assert!(
        outcome
            .fields
            .iter()
            .any(|(key, value)| key == "slack-status" && value.contains("SLACK_WEBHOOK_URL")),
        "{:?}",
        outcome.fields
    );
}
