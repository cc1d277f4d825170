//! A fleet of simulated kubernetes-mcp-servers in one process, for `bench intake` and `demo`: each server
//! listens on its own port and speaks the Streamable HTTP side of the fault protocol that
//! nightcrier's MCP feed uses (initialize, `notifications/initialized`, the GET stream,
//! `logging/setLevel`, `events_subscribe`, `events_list_subscriptions`, `events_unsubscribe`,
//! DELETE, `404` for a session it does not know). Faults go out on the GET streams at a rate the
//! caller sets ([`Fleet::send_faults`] a canned one, [`Fleet::send_fault`] a given one); a restart drops every session of every server at once and answers `503` for a
//! while, as a fleet restarting together would. The fault tests use a faithful Python server
//! (`tests/fake-kms`); this one exists to simulate thousands of servers on two cores.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

/// Frames buffered per stream before a send counts as failed (the real server gives up after
/// 2 s and cancels the subscription; the bench counts it instead).
const STREAM_BUFFER: usize = 4096;

/// One simulated session.
struct Session {
    stream: Option<mpsc::Sender<Result<Bytes, std::convert::Infallible>>>,
    subscription: Option<String>,
}

/// One simulated server.
struct Server {
    cluster: String,
    sessions: Mutex<HashMap<String, Session>>,
}

/// Counters shared by every server.
#[derive(Default)]
pub(crate) struct Counters {
    /// `initialize` requests, including those answered `503` while down.
    pub(crate) initialize_attempts: AtomicU64,
    /// Faults written to a stream.
    pub(crate) faults_sent: AtomicU64,
    /// Faults that found no active subscription or a full stream.
    pub(crate) faults_not_sent: AtomicU64,
}

/// The simulated fleet.
pub(crate) struct Fleet {
    servers: Vec<Arc<Server>>,
    addrs: Vec<SocketAddr>,
    /// Counters of the whole fleet.
    pub(crate) counters: Arc<Counters>,
    down_until: Arc<Mutex<Option<Instant>>>,
    /// Attempts per second since the fleet started: index = whole seconds since `epoch`.
    attempts_by_second: Arc<Mutex<Vec<u64>>>,
    epoch: Instant,
    next_fault: AtomicU64,
}

#[derive(Clone)]
struct ServerState {
    server: Arc<Server>,
    counters: Arc<Counters>,
    down_until: Arc<Mutex<Option<Instant>>>,
    attempts_by_second: Arc<Mutex<Vec<u64>>>,
    epoch: Instant,
}

impl Fleet {
    /// Starts `count` servers on free loopback ports, named `cluster-0000`….
    pub(crate) async fn start(count: usize) -> anyhow::Result<Arc<Fleet>> {
        Self::start_named((0..count).map(cluster_name).collect()).await
    }

    /// Starts one server per name (its cluster), each on a free loopback port.
    pub(crate) async fn start_named(clusters: Vec<String>) -> anyhow::Result<Arc<Fleet>> {
        let count = clusters.len();
        let counters = Arc::new(Counters::default());
        let down_until = Arc::new(Mutex::new(None));
        let attempts_by_second = Arc::new(Mutex::new(Vec::new()));
        let epoch = Instant::now();
        let mut servers = Vec::with_capacity(count);
        let mut addrs = Vec::with_capacity(count);
        for cluster in clusters {
            let server = Arc::new(Server {
                cluster,
                sessions: Mutex::new(HashMap::new()),
            });
            let state = ServerState {
                server: server.clone(),
                counters: counters.clone(),
                down_until: down_until.clone(),
                attempts_by_second: attempts_by_second.clone(),
                epoch,
            };
            let app = Router::new()
                .route("/mcp", post(on_post).get(on_get).delete(on_delete))
                .with_state(state);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            addrs.push(listener.local_addr()?);
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            servers.push(server);
        }
        Ok(Arc::new(Fleet {
            servers,
            addrs,
            counters,
            down_until,
            attempts_by_second,
            epoch,
            next_fault: AtomicU64::new(0),
        }))
    }

    /// `(cluster, url)` of every server.
    pub(crate) fn endpoints(&self) -> Vec<(String, String)> {
        self.servers
            .iter()
            .zip(&self.addrs)
            .map(|(server, addr)| (server.cluster.clone(), format!("http://{addr}/mcp")))
            .collect()
    }

    /// Servers with a subscription and an open stream.
    pub(crate) async fn active(&self) -> usize {
        let mut active = 0;
        for server in &self.servers {
            let sessions = server.sessions.lock().await;
            if sessions.values().any(|session| {
                session.subscription.is_some()
                    && session.stream.as_ref().is_some_and(|tx| !tx.is_closed())
            }) {
                active += 1;
            }
        }
        active
    }

    /// Sends `count` faults, spread round-robin over the servers.
    pub(crate) async fn send_faults(&self, count: u64) {
        for _ in 0..count {
            let n = self.next_fault.fetch_add(1, Ordering::Relaxed);
            let server = &self.servers[(n % self.servers.len() as u64) as usize];
            let sessions = server.sessions.lock().await;
            let target = sessions.values().find_map(|session| {
                Some((session.subscription.as_ref()?, session.stream.as_ref()?))
            });
            let sent = match target {
                Some((subscription, stream)) => {
                    let frame = fault_frame(&server.cluster, subscription, n);
                    stream.try_send(Ok(frame)).is_ok()
                }
                None => false,
            };
            let counter = if sent {
                &self.counters.faults_sent
            } else {
                &self.counters.faults_not_sent
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Restarts every server at once: sessions and streams end, and every request is answered
    /// `503` for `down`; afterwards the old session ids are unknown (`404`).
    pub(crate) async fn restart_all(&self, down: Duration) {
        *self.down_until.lock().await = Some(Instant::now() + down);
        for server in &self.servers {
            server.sessions.lock().await.clear();
        }
    }

    /// Initialize attempts per whole second since `since`, up to now.
    pub(crate) async fn attempts_per_second_since(&self, since: Instant) -> Vec<u64> {
        let first = since.duration_since(self.epoch).as_secs() as usize;
        let seconds = self.attempts_by_second.lock().await;
        seconds
            .get(first..)
            .map(<[u64]>::to_vec)
            .unwrap_or_default()
    }
}

/// One fault as a kubernetes-mcp-server reports it (the `data` of its `notifications/message`,
/// without the subscription, cluster and timestamp the server fills in).
#[derive(Clone, Debug)]
pub(crate) struct Fault {
    /// The server's id of the fault.
    pub(crate) fault_id: String,
    /// `CrashLoop`, `OOMKilled`, `ImagePullBackOff`…
    pub(crate) fault_type: String,
    /// `critical`, `warning`…
    pub(crate) severity: String,
    /// Kind of the faulty resource (`Pod`, `Node`…).
    pub(crate) kind: String,
    /// Its name.
    pub(crate) name: String,
    /// Its namespace.
    pub(crate) namespace: String,
    /// What the server saw.
    pub(crate) context: String,
}

impl Fleet {
    /// Sends `fault` on server `index`'s active stream; `false` if it has none or the stream is
    /// full.
    pub(crate) async fn send_fault(&self, index: usize, fault: &Fault) -> bool {
        let Some(server) = self.servers.get(index) else {
            return false;
        };
        let sessions = server.sessions.lock().await;
        let target = sessions
            .values()
            .find_map(|session| Some((session.subscription.as_ref()?, session.stream.as_ref()?)));
        let sent = match target {
            Some((subscription, stream)) => {
                let data = fault_data(&server.cluster, subscription, fault);
                stream.try_send(Ok(frame(data))).is_ok()
            }
            None => false,
        };
        let counter = if sent {
            &self.counters.faults_sent
        } else {
            &self.counters.faults_not_sent
        };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }
}

/// The name of server `index`.
pub(crate) fn cluster_name(index: usize) -> String {
    format!("cluster-{index:04}")
}

fn fault_frame(cluster: &str, subscription: &str, n: u64) -> Bytes {
    let fault = Fault {
        fault_id: format!("{n:016x}"),
        fault_type: "CrashLoop".into(),
        severity: "critical".into(),
        kind: "Pod".into(),
        name: format!("checkout-{n}"),
        namespace: "shop".into(),
        context: "Container entered CrashLoopBackOff state, restart count: 3, waiting message: back-off 40s restarting failed container=api, last exit code: 1, last reason: Error".into(),
    };
    frame(fault_data(cluster, subscription, &fault))
}

fn fault_data(cluster: &str, subscription: &str, fault: &Fault) -> Value {
    json!({
        "subscriptionId": subscription,
        "cluster": cluster,
        "faultId": fault.fault_id,
        "faultType": fault.fault_type,
        "severity": fault.severity,
        "resource": {"apiVersion": "v1", "kind": fault.kind, "name": fault.name,
                     "namespace": fault.namespace,
                     "uid": uuid::Uuid::new_v4().to_string()},
        "context": fault.context,
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

fn frame(data: Value) -> Bytes {
    let notification = json!({
        "jsonrpc": "2.0",
        "method": "notifications/message",
        "params": {"level": "warning", "logger": "kubernetes/faults", "data": data}
    });
    Bytes::from(format!("event: message\ndata: {notification}\n\n"))
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("mcp-session-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

async fn is_down(state: &ServerState) -> bool {
    let mut down = state.down_until.lock().await;
    match *down {
        Some(until) if Instant::now() < until => true,
        Some(_) => {
            *down = None;
            false
        }
        None => false,
    }
}

fn unavailable() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "restarting").into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "session not found").into_response()
}

fn result(id: &Value, result: Value) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "result": result});
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn tool_text(text: String) -> Value {
    json!({"content": [{"type": "text", "text": text}], "isError": false})
}

async fn on_post(State(state): State<ServerState>, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let method = request["method"].as_str().unwrap_or_default().to_owned();
    let id = request.get("id").cloned().unwrap_or(Value::Null);
    if method == "initialize" {
        state
            .counters
            .initialize_attempts
            .fetch_add(1, Ordering::Relaxed);
        let second = state.epoch.elapsed().as_secs() as usize;
        let mut seconds = state.attempts_by_second.lock().await;
        if seconds.len() <= second {
            seconds.resize(second + 1, 0);
        }
        seconds[second] += 1;
    }
    if is_down(&state).await {
        return unavailable();
    }
    if method == "initialize" {
        let session = uuid::Uuid::new_v4().to_string();
        state.server.sessions.lock().await.insert(
            session.clone(),
            Session {
                stream: None,
                subscription: None,
            },
        );
        let mut response = result(
            &id,
            json!({
                "protocolVersion": request["params"]["protocolVersion"].as_str().unwrap_or("2025-03-26"),
                "capabilities": {"logging": {}, "tools": {"listChanged": true}},
                "serverInfo": {"name": "kubernetes-mcp-server", "version": "bench-simulator"}
            }),
        );
        response.headers_mut().insert(
            "mcp-session-id",
            session.parse().expect("a uuid is a header value"),
        );
        return response;
    }
    let Some(session_id) = session_id(&headers) else {
        return (StatusCode::BAD_REQUEST, "no session id").into_response();
    };
    let mut sessions = state.server.sessions.lock().await;
    let Some(session) = sessions.get_mut(&session_id) else {
        return not_found();
    };
    match method.as_str() {
        "notifications/initialized" => StatusCode::ACCEPTED.into_response(),
        "logging/setLevel" | "ping" => result(&id, json!({})),
        "tools/call" => {
            let cluster = &state.server.cluster;
            match request["params"]["name"].as_str().unwrap_or_default() {
                "events_subscribe" => {
                    let subscription =
                        format!("sub-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
                    session.subscription = Some(subscription.clone());
                    let body = json!({"cluster": cluster, "filters": {}, "mode": "faults",
                                      "status": "active", "subscriptionId": subscription});
                    result(
                        &id,
                        tool_text(format!(
                            "# Event Subscription Created\n\n{body:#}\n\nYou will receive event notifications via the logging/message protocol."
                        )),
                    )
                }
                "events_list_subscriptions" => {
                    let list: Vec<Value> = session
                        .subscription
                        .iter()
                        .map(|id| {
                            json!({"cluster": cluster, "degraded": false, "filters": {},
                                         "mode": "faults", "subscriptionId": id})
                        })
                        .collect();
                    let body = json!({"subscriptions": list, "total": list.len()});
                    result(
                        &id,
                        tool_text(format!("# Active Subscriptions\n\n{body:#}")),
                    )
                }
                "events_unsubscribe" => {
                    session.subscription = None;
                    result(&id, tool_text("# Subscription Cancelled".into()))
                }
                other => result(&id, tool_text(format!("unknown tool {other}"))),
            }
        }
        _ => result(&id, json!({})),
    }
}

async fn on_get(State(state): State<ServerState>, headers: HeaderMap) -> Response {
    if is_down(&state).await {
        return unavailable();
    }
    let Some(session_id) = session_id(&headers) else {
        return (StatusCode::BAD_REQUEST, "no session id").into_response();
    };
    let mut sessions = state.server.sessions.lock().await;
    let Some(session) = sessions.get_mut(&session_id) else {
        return not_found();
    };
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    session.stream = Some(tx);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|frame| (frame, rx)) },
        )))
        .expect("a static response builds")
}

async fn on_delete(State(state): State<ServerState>, headers: HeaderMap) -> Response {
    if let Some(session_id) = session_id(&headers) {
        state.server.sessions.lock().await.remove(&session_id);
    }
    StatusCode::OK.into_response()
}
