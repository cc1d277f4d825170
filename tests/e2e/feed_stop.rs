//! An MCP feed leaving its server (what a replica does when it hands a cluster over or is cut
//! from the database): the subscription cancelled and the session closed, within the feed's stop
//! time, and an honest answer when the server did not confirm, so that the lease is not handed
//! to another replica while the server may still deliver to the old session.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use nightcrier_intake::mcp::{
    Endpoint, McpFeedConfig, McpFleet, McpTiming, companion_tools, run_feed,
};
use nightcrier_intake::{Deliver, FeedRegistry, Message, Stopped, Submitted};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::support::fake_kms::FakeKms;
use crate::support::process::free_port;

/// Keeps what the feed delivers.
#[derive(Default)]
struct Collected(Mutex<Vec<Message>>);

impl Deliver for Collected {
    fn offer(&self, message: Message) {
        self.0.lock().unwrap().push(message);
    }

    fn submit(&self, _message: Message) -> BoxFuture<'static, Submitted> {
        Box::pin(async {
            Submitted::Refused {
                reason: "no webhooks in this test".into(),
            }
        })
    }

    fn accepting(&self) -> bool {
        true
    }
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<Stopped>,
    delivered: Arc<Collected>,
}

/// A feed on the fake server's first listener, subscribed and attached.
async fn subscribed(kms: &FakeKms, stop_timeout: Duration) -> Running {
    let (probe_tool, unsubscribe_tool) = companion_tools("events_subscribe");
    let mut arguments = serde_json::Map::new();
    arguments.insert("mode".into(), json!("faults"));
    let config = McpFeedConfig {
        cluster: "c0".into(),
        source: "kubernetes-mcp".into(),
        endpoint: Endpoint {
            url: kms.url(0).parse().unwrap(),
            auth: None,
        },
        tool: "events_subscribe".into(),
        arguments,
        logger: "kubernetes/faults".into(),
        probe_tool,
        unsubscribe_tool,
        timing: McpTiming {
            probe_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(5),
            stop_timeout,
            ..McpTiming::default()
        },
    };
    let registry = FeedRegistry::new();
    let state = registry.register(config.state());
    let delivered = Arc::new(Collected::default());
    let stop = CancellationToken::new();
    let fleet = McpFleet::new(4, Duration::from_secs(5)).unwrap();
    let task = tokio::spawn(run_feed(
        config,
        fleet,
        delivered.clone(),
        state,
        stop.clone(),
    ));
    wait_until(kms, "the feed to subscribe", |state| {
        state["subscriptions"] == 1 && state["attachedStreams"] == 1
    })
    .await;
    Running {
        stop,
        task,
        delivered,
    }
}

async fn wait_until(kms: &FakeKms, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let state = kms.state(0).await;
        if done(&state) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {state}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_feed_unsubscribes_closes_its_session_and_keeps_what_was_sent() {
    let kms = FakeKms::start(&[(free_port(), "ctx-0")]);
    let feed = subscribed(&kms, Duration::from_secs(2)).await;
    let sent = kms.emit(0, 5, 0.0).await;
    feed.stop.cancel();
    let stopped = feed.task.await.unwrap();
    assert_eq!(stopped, Stopped::Clean);
    // read to the end before leaving: every fault written to the stream was delivered
    let delivered = feed.delivered.0.lock().unwrap().len();
    assert_eq!(delivered, sent.len());
    let state = kms.state(0).await;
    assert_eq!(state["subscriptions"], 0, "{state}");
    assert_eq!(state["attachedStreams"], 0, "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_delete_is_not_taken_for_a_closed_session() {
    let kms = FakeKms::start(&[(free_port(), "ctx-0")]);
    let feed = subscribed(&kms, Duration::from_millis(500)).await;
    kms.post(0, "delete-mode", json!({"mode": "hang"})).await;
    feed.stop.cancel();
    // the stop is bounded by its stop time even though the server never answers; a generous
    // outer bound only keeps a regression from hanging the suite
    let stopped = tokio::time::timeout(Duration::from_secs(20), feed.task)
        .await
        .expect("the feed's stop must not wait on an unanswered DELETE")
        .unwrap();
    assert_eq!(stopped, Stopped::Unconfirmed);
    // it dropped its stream rather than wait on it: the server sees the connection close
    wait_until(&kms, "the dropped stream to detach", |state| {
        state["attachedStreams"] == 0
    })
    .await;
    kms.post(0, "delete-mode", json!({"mode": "ok"})).await;
}
