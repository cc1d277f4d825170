//! One MCP Streamable HTTP session with a kubernetes-mcp-server, spoken directly over reqwest:
//! `initialize` → `notifications/initialized`, requests whose answers come as JSON or as an SSE
//! stream, the standalone GET stream, and `DELETE` on the way out.
//!
//! Status codes decide what happened (a `404` on a request that carried a session id means the
//! session is gone, whatever the body says); every body read is bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::secret::Secret;
use crate::sse::{SseItem, SseParser};

/// The protocol version nightcrier asks for; kubernetes-mcp-server (go-sdk) echoes it.
pub(crate) const PROTOCOL_VERSION: &str = "2025-06-18";
/// Versions whose wire behaviour this client handles the same way.
const KNOWN_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// Longest answer to a request (a `tools/call` result is a few KiB).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Longest error body kept for a message.
const MAX_ERROR_BODY: usize = 300;

/// Why an MCP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// The server does not know the session (it restarted or dropped it).
    #[error("session not found (HTTP 404): the server restarted or dropped the session")]
    SessionLost,
    /// The server cannot push: it answered the GET with 405 (stateless mode).
    #[error("the server cannot push events (GET answered 405; is it running stateless?)")]
    NoStream,
    /// Another GET is still attached to the session.
    #[error("another event stream is still attached to the session (HTTP 409)")]
    StreamConflict,
    /// Any other unexpected status.
    #[error("HTTP {status} from the server: {body}")]
    Http {
        /// The status.
        status: u16,
        /// The beginning of the body.
        body: String,
    },
    /// The connection failed.
    #[error("{0}")]
    Transport(String),
    /// No answer in time.
    #[error("no answer to {what} within {after:?}")]
    Timeout {
        /// What was asked.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// The server answered with a JSON-RPC error.
    #[error("{method} failed with JSON-RPC error {code}: {message}")]
    Rpc {
        /// The method called.
        method: String,
        /// The error code.
        code: i64,
        /// The error message.
        message: String,
    },
    /// A tool answered `isError`.
    #[error("{tool} failed: {message}")]
    ToolFailed {
        /// The tool.
        tool: String,
        /// Its text.
        message: String,
    },
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl McpError {
    fn transport(error: reqwest::Error) -> Self {
        // reqwest names the URL in its messages; the URL is configuration, shown elsewhere.
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            let cause_text = cause.to_string();
            if !text.contains(&cause_text) {
                text.push_str(": ");
                text.push_str(&cause_text);
            }
            source = cause.source();
        }
        McpError::Transport(text)
    }
}

/// Where a server is and how to authenticate to it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The `/mcp` URL.
    pub url: reqwest::Url,
    /// A header sent with every request (e.g. `Authorization: Bearer …`).
    pub auth: Option<AuthHeader>,
}

/// An authentication header whose value is a secret.
#[derive(Clone, Debug)]
pub struct AuthHeader {
    /// The header name.
    pub name: HeaderName,
    /// Its value.
    pub value: Secret,
}

/// The URL as shown in state and logs: without user info, query or fragment.
pub(crate) fn display_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// An open session.
#[derive(Debug)]
pub(crate) struct Session {
    http: reqwest::Client,
    endpoint: Endpoint,
    id: HeaderValue,
    version: HeaderValue,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<RpcError>,
}

#[derive(Deserialize)]
struct RpcError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct ToolResult {
    #[serde(default)]
    content: Vec<ToolContent>,
    #[serde(default, rename = "isError")]
    is_error: bool,
}

#[derive(Deserialize)]
struct ToolContent {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    text: String,
}

impl Session {
    /// Runs `initialize` and `notifications/initialized`.
    pub(crate) async fn open(
        http: &reqwest::Client,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<Self, McpError> {
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "nightcrier", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let request = authorize(http.post(endpoint.url.clone()), endpoint)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body.to_string());
        let exchange = async {
            let response = request.send().await.map_err(McpError::transport)?;
            let status = response.status();
            if !status.is_success() {
                return Err(http_error(response).await);
            }
            let id = response
                .headers()
                .get(SESSION_HEADER)
                .cloned()
                .ok_or_else(|| {
                    McpError::Protocol(
                        "the server assigned no session id (stateless servers cannot push events)"
                            .into(),
                    )
                })?;
            let result = read_response(response, "0", "initialize").await?;
            Ok((id, result))
        };
        let (id, result) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| McpError::Timeout {
                what: "initialize".into(),
                after: timeout,
            })??;
        #[derive(Deserialize)]
        struct InitializeResult {
            #[serde(rename = "protocolVersion")]
            protocol_version: String,
        }
        let init: InitializeResult = serde_json::from_str(result.get())
            .map_err(|e| McpError::Protocol(format!("initialize result: {e}")))?;
        if !KNOWN_VERSIONS.contains(&init.protocol_version.as_str()) {
            return Err(McpError::Protocol(format!(
                "the server speaks protocol version {:?}, which nightcrier does not know",
                init.protocol_version
            )));
        }
        let version = HeaderValue::from_str(&init.protocol_version)
            .map_err(|_| McpError::Protocol("unusable protocol version".into()))?;
        let session = Session {
            http: http.clone(),
            endpoint: endpoint.clone(),
            id,
            version,
            next_id: AtomicU64::new(1),
        };
        session.notify("notifications/initialized", timeout).await?;
        Ok(session)
    }

    fn builder(&self, method: Method) -> reqwest::RequestBuilder {
        authorize(
            self.http.request(method, self.endpoint.url.clone()),
            &self.endpoint,
        )
        .header(SESSION_HEADER, self.id.clone())
        .header(VERSION_HEADER, self.version.clone())
    }

    async fn notify(&self, method: &str, timeout: Duration) -> Result<(), McpError> {
        let body = serde_json::json!({"jsonrpc": "2.0", "method": method});
        let send = self
            .builder(Method::POST)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(body.to_string())
            .send();
        let response = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| McpError::Timeout {
                what: method.into(),
                after: timeout,
            })?
            .map_err(McpError::transport)?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(session_error(response).await)
        }
    }

    /// Sends a request and returns its `result`.
    pub(crate) async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Box<RawValue>, McpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).to_string();
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":{},"params":{params}}}"#,
            Value::String(method.to_owned())
        );
        let exchange = async {
            let response = self
                .builder(Method::POST)
                .header(CONTENT_TYPE, "application/json")
                .header(ACCEPT, "application/json, text/event-stream")
                .body(body)
                .send()
                .await
                .map_err(McpError::transport)?;
            if !response.status().is_success() {
                return Err(session_error(response).await);
            }
            read_response(response, &id, method).await
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| McpError::Timeout {
                what: method.into(),
                after: timeout,
            })?
    }

    /// Calls a tool (always with an `arguments` object) and returns its text content.
    pub(crate) async fn call_tool(
        &self,
        tool: &str,
        arguments: &serde_json::Map<String, Value>,
        timeout: Duration,
    ) -> Result<String, McpError> {
        let result = self
            .request(
                "tools/call",
                serde_json::json!({"name": tool, "arguments": arguments}),
                timeout,
            )
            .await?;
        let result: ToolResult = serde_json::from_str(result.get())
            .map_err(|e| McpError::Protocol(format!("{tool} result: {e}")))?;
        let text = result
            .content
            .into_iter()
            .filter(|item| item.kind == "text")
            .map(|item| item.text)
            .collect::<Vec<_>>()
            .join("\n");
        if result.is_error {
            return Err(McpError::ToolFailed {
                tool: tool.into(),
                message: truncate(&text, MAX_ERROR_BODY),
            });
        }
        Ok(text)
    }

    /// Opens the standalone GET stream and waits for its headers.
    pub(crate) async fn open_stream(
        &self,
        timeout: Duration,
    ) -> Result<reqwest::Response, McpError> {
        let send = self
            .builder(Method::GET)
            .header(ACCEPT, "text/event-stream")
            .send();
        let response = tokio::time::timeout(timeout, send)
            .await
            .map_err(|_| McpError::Timeout {
                what: "the event stream".into(),
                after: timeout,
            })?
            .map_err(McpError::transport)?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::METHOD_NOT_ALLOWED => return Err(McpError::NoStream),
            StatusCode::CONFLICT => return Err(McpError::StreamConflict),
            _ => return Err(session_error(response).await),
        }
        let is_sse = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("text/event-stream"));
        if !is_sse {
            return Err(McpError::Protocol(
                "the event stream is not text/event-stream".into(),
            ));
        }
        Ok(response)
    }

    /// Ends the session on the server (bounded); true when the server confirmed that the
    /// session is gone (`2xx`, or `404`: it did not know it any more).
    pub(crate) async fn close(&self, timeout: Duration) -> bool {
        let send = self.builder(Method::DELETE).send();
        match tokio::time::timeout(timeout, send).await {
            Ok(Ok(response)) => {
                response.status().is_success() || response.status() == StatusCode::NOT_FOUND
            }
            _ => false,
        }
    }
}

fn authorize(builder: reqwest::RequestBuilder, endpoint: &Endpoint) -> reqwest::RequestBuilder {
    match &endpoint.auth {
        Some(auth) => match HeaderValue::from_str(auth.value.expose()) {
            Ok(mut value) => {
                value.set_sensitive(true);
                builder.header(auth.name.clone(), value)
            }
            Err(_) => builder,
        },
        None => builder,
    }
}

/// A non-success answer to a request that carried the session id.
async fn session_error(response: reqwest::Response) -> McpError {
    if response.status() == StatusCode::NOT_FOUND {
        return McpError::SessionLost;
    }
    http_error(response).await
}

async fn http_error(response: reqwest::Response) -> McpError {
    let status = response.status().as_u16();
    let body = read_bounded(response, MAX_ERROR_BODY)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    McpError::Http {
        status,
        body: truncate(&body, MAX_ERROR_BODY),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Reads at most `limit` bytes of a body (more is cut off, not an error).
async fn read_bounded(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, McpError> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(McpError::transport)?;
        let room = limit.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= limit {
            break;
        }
    }
    Ok(body)
}

/// Finds the response with `id` in a request's answer, JSON or SSE.
async fn read_response(
    response: reqwest::Response,
    id: &str,
    method: &str,
) -> Result<Box<RawValue>, McpError> {
    let is_sse = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if !is_sse {
        let body = read_bounded(response, MAX_RESPONSE_BYTES + 1).await?;
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(McpError::Protocol(format!(
                "the answer to {method} is over {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        // A JSON answer is one message or a batch of them.
        if let Ok(batch) = serde_json::from_slice::<Vec<&RawValue>>(&body) {
            for message in batch {
                if let Some(found) = match_response(message.get().as_bytes(), id, method)? {
                    return Ok(found);
                }
            }
        } else if let Some(found) = match_response(&body, id, method)? {
            return Ok(found);
        }
        return Err(McpError::Protocol(format!(
            "the answer to {method} holds no response"
        )));
    }
    let mut parser = SseParser::new(MAX_RESPONSE_BYTES);
    let mut items = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(McpError::transport)?;
        parser.push(&chunk, &mut items);
        for item in items.drain(..) {
            match item {
                SseItem::Event { data, .. } => {
                    if let Some(found) = match_response(&data, id, method)? {
                        return Ok(found);
                    }
                }
                SseItem::Oversized { size, .. } => {
                    return Err(McpError::Protocol(format!(
                        "the answer to {method} is {size} bytes, over {MAX_RESPONSE_BYTES}"
                    )));
                }
            }
        }
    }
    Err(McpError::Protocol(format!(
        "the answer stream to {method} ended without a response"
    )))
}

/// The `result` of `message` if it is the response to `id`; notifications (server diagnostics
/// sent in the request's context) are skipped.
fn match_response(
    message: &[u8],
    id: &str,
    method: &str,
) -> Result<Option<Box<RawValue>>, McpError> {
    let Ok(incoming) = serde_json::from_slice::<Incoming<'_>>(message) else {
        return Ok(None);
    };
    let Some(message_id) = incoming.id else {
        return Ok(None);
    };
    if incoming.method.is_some() || message_id.get().trim_matches('"') != id {
        return Ok(None);
    }
    if let Some(error) = incoming.error {
        return Err(McpError::Rpc {
            method: method.into(),
            code: error.code,
            message: truncate(&error.message, MAX_ERROR_BODY),
        });
    }
    match incoming.result {
        Some(result) => Ok(Some(result.to_owned())),
        None => Err(McpError::Protocol(format!(
            "the response to {method} has neither result nor error"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_matched_by_id_and_errors_surface() {
        let ok = br#"{"jsonrpc":"2.0","id":3,"result":{"x":1}}"#;
        assert_eq!(
            match_response(ok, "3", "m").unwrap().unwrap().get(),
            r#"{"x":1}"#
        );
        assert!(match_response(ok, "4", "m").unwrap().is_none());
        let note = br#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
        assert!(match_response(note, "3", "m").unwrap().is_none());
        let error = br#"{"jsonrpc":"2.0","id":3,"error":{"code":-32602,"message":"unknown tool"}}"#;
        assert!(matches!(
            match_response(error, "3", "tools/call"),
            Err(McpError::Rpc { code: -32602, .. })
        ));
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        let url = reqwest::Url::parse("http://user:pw@kms:8080/mcp?token=t#x").unwrap();
        assert_eq!(display_url(&url), "http://kms:8080/mcp");
    }
}
