#!/usr/bin/env python3
"""Fake kubernetes-mcp-server (events fork) for nightcrier's end-to-end tests and benchmarks.

Built on the official Python `mcp` SDK (1.x low-level `Server` + `StreamableHTTPSessionManager`).
It imitates the Go server described in shared/reference/fault-event-protocol.md: the MCP
Streamable HTTP transport at `/mcp` (stateful, SSE responses), the three subscription tools with
their exact texts, go-sdk's `logging/setLevel` gating, fault notifications on the standalone GET
stream, and the server's "a failed send cancels the subscription" rule. A plain JSON control API
under `/test/` injects faults and failures and reports what was written to the wire.

Each `--listen PORT:CLUSTER` is an independent server (own sessions, subscriptions, counters) in
the same process and event loop, so one process can play many clusters.

A thin ASGI layer in front of the SDK applies go-sdk's request checks in go-sdk's order (with
go-sdk's status codes and plain-text bodies), so the SDK only ever sees requests the Go server
would also accept. README.md lists what still differs from the Go server.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import anyio
import uvicorn
from sse_starlette import EventSourceResponse

import mcp.server.streamable_http_manager as sdk_manager_module
import mcp.types as types
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.streamable_http import GET_STREAM_KEY
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import McpError

# --------------------------------------------------------------------------------------------
# Wire constants taken from the Go server and go-sdk v1.2.0 (see the protocol reference).
# --------------------------------------------------------------------------------------------

SUPPORTED_PROTOCOL_VERSIONS = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"]
DEFAULT_HEADER_VERSION = "2025-03-26"  # assumed by go-sdk when Mcp-Protocol-Version is absent
FALLBACK_NEGOTIATED_VERSION = "2025-06-18"  # go-sdk's answer to an unknown initialize version

LOGGER_FAULTS = "kubernetes/faults"
LOGGER_SUBSCRIPTION_ERROR = "kubernetes/subscription_error"
DEGRADED_ERROR_TEXT = "Watch connection failed after maximum retry attempts"

# go-sdk maps unknown level names to debug (mcpLevelToSlog).
LEVEL_ORDER = {
    "debug": 0,
    "info": 1,
    "notice": 2,
    "warning": 3,
    "error": 4,
    "critical": 5,
    "alert": 6,
    "emergency": 7,
}

# go-sdk's serverMethodInfos: method -> (is_notification, params_may_be_missing).
GO_METHODS: dict[str, tuple[bool, bool]] = {
    "completion/complete": (False, False),
    "initialize": (False, False),
    "ping": (False, True),
    "prompts/list": (False, True),
    "prompts/get": (False, False),
    "tools/list": (False, True),
    "tools/call": (False, False),
    "resources/list": (False, True),
    "resources/templates/list": (False, True),
    "resources/read": (False, False),
    "logging/setLevel": (False, False),
    "resources/subscribe": (False, False),
    "resources/unsubscribe": (False, False),
    "notifications/cancelled": (True, True),
    "notifications/initialized": (True, True),
    "notifications/roots/list_changed": (True, True),
    "notifications/progress": (True, False),
}

SERVER_NAME = "kubernetes-mcp-server"
SERVER_VERSION = "0.0.0"
SERVER_WEBSITE = "https://github.com/containers/kubernetes-mcp-server"

# Test vectors of the protocol reference §4.2: (cluster, faultType, uid, container) -> faultId.
FAULT_ID_VECTORS = [
    ("kind-dev", "CrashLoop", "6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f", "api", "a817ebcffcb2cf13"),
    ("kind-dev", "PodCrash", "6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f", "api", "ec21b7fdcf5f6087"),
    ("", "CrashLoop", "6b1f0c2e-8a4d-4c3b-9e2f-1a2b3c4d5e6f", "api", "b3fa296b9f77aa32"),
    ("kind-dev", "NodeUnhealthy", "0d9e8f7a-1111-4222-8333-944455566677", "", "e4f6301031210dd7"),
    ("prod-us-east", "CrashLoop", "abc-123", "web", "4ac614392646883e"),
]

DEFAULT_SUBSCRIBE_ERROR_TEXT = (
    "failed to create subscription: failed to start watcher: "
    "failed to get kubernetes client: connection refused"
)

SESSION_SWEEP_SECONDS = 30.0  # the Go manager's SessionMonitorInterval

log = logging.getLogger("fake-kms")


def fault_id(cluster: str, fault_type: str, uid: str, container: str) -> str:
    """faultId as the Go server computes it: first 8 bytes of SHA-256, lowercase hex."""
    digest = hashlib.sha256(f"{cluster}:{fault_type}:{uid}:{container}".encode()).digest()
    return digest[:8].hex()


def check_fault_id_vectors() -> None:
    for cluster, ftype, uid, container, expected in FAULT_ID_VECTORS:
        got = fault_id(cluster, ftype, uid, container)
        if got != expected:
            raise SystemExit(f"fake-kms: faultId self-check failed for {cluster!r}/{ftype}: {got} != {expected}")


def go_session_id() -> str:
    """go-sdk's default session id: crypto/rand.Text(), 26 characters of base32 A-Z2-7."""
    return base64.b32encode(os.urandom(16)).decode().rstrip("=")


def go_json(obj: Any, indent: int | None = None) -> str:
    """JSON as Go's encoding/json writes a map: sorted keys, HTML characters escaped."""
    separators = (",", ": ") if indent is not None else (",", ":")
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True, indent=indent, separators=separators)
    # <, >, & and the two JS line separators only occur inside strings, so a global replace is safe.
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def rfc3339_local(now: datetime | None = None) -> str:
    """time.RFC3339 of a local time.Time: second precision, `Z` for UTC, else ±hh:mm."""
    now = (now or datetime.now()).astimezone().replace(microsecond=0)
    base = now.strftime("%Y-%m-%dT%H:%M:%S")
    offset = now.utcoffset()
    total = int(offset.total_seconds()) if offset else 0
    if total == 0:
        return base + "Z"
    sign = "+" if total > 0 else "-"
    total = abs(total)
    return f"{base}{sign}{total // 3600:02d}:{(total % 3600) // 60:02d}"


def iso_ms(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


# Kubernetes label selector syntax, close enough to catch what labels.Parse rejects.
_LABEL_KEY = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?/)?[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_REQUIREMENT_RES = [
    re.compile(rf"^\s*!?\s*{_LABEL_KEY}\s*$"),
    re.compile(rf"^\s*{_LABEL_KEY}\s*(?:==|=|!=)\s*{_LABEL_VALUE}\s*$"),
    re.compile(rf"^\s*{_LABEL_KEY}\s*(?:>|<)\s*-?[0-9]+\s*$"),
    re.compile(rf"^\s*{_LABEL_KEY}\s+(?:in|notin)\s*\(\s*{_LABEL_VALUE}(?:\s*,\s*{_LABEL_VALUE})*\s*\)\s*$"),
]


def label_selector_error(selector: str) -> str | None:
    if not selector.strip():
        return None
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    for part in parts:
        if not any(r.match(part) for r in _REQUIREMENT_RES):
            return f"unable to parse requirement: {part.strip()!r}"
    return None


# --------------------------------------------------------------------------------------------
# Fault payloads (protocol reference §4)
# --------------------------------------------------------------------------------------------

_KNOWN_FAULTS = {
    # faultType: (kind, apiVersion, namespaced, container, severity, context)
    "CrashLoop": (
        "Pod",
        "v1",
        True,
        "app",
        "critical",
        "Container entered CrashLoopBackOff state, restart count: 3, last exit code: 1, last reason: Error",
    ),
    "PodCrash": ("Pod", "v1", True, "app", "warning", "Container crashed with exit code 1, reason: Error"),
    "NodeUnhealthy": (
        "Node",
        "v1",
        False,
        "",
        "critical",
        "Node became unhealthy: Ready=False, reason: KubeletNotReady, message: container runtime is down",
    ),
    "DeploymentFailure": (
        "Deployment",
        "apps/v1",
        True,
        "",
        "critical",
        'Deployment rollout failed: ProgressDeadlineExceeded, message: ReplicaSet "web-5d8f" has timed out progressing.',
    ),
    "JobFailure": (
        "Job",
        "batch/v1",
        True,
        "",
        "critical",
        "Job failed, reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit",
    ),
}


def make_fault(cluster: str, fault_type: str, seq: int) -> dict[str, Any]:
    """A fault body without subscriptionId; each call uses a fresh UID, so a fresh faultId."""
    kind, api_version, namespaced, container, severity, context = _KNOWN_FAULTS.get(
        fault_type, ("Pod", "v1", True, "app", "warning", f"{fault_type} detected by the fault detector")
    )
    uid = str(uuid.uuid4())
    suffix = uid[:5]
    name = {
        "Pod": f"checkout-{seq:06d}-{suffix}",
        "Node": f"worker-{seq:06d}-{suffix}",
        "Deployment": f"web-{seq:06d}-{suffix}",
        "Job": f"batch-{seq:06d}-{suffix}",
    }[kind]
    resource: dict[str, Any] = {"apiVersion": api_version, "kind": kind, "name": name}
    if namespaced:
        resource["namespace"] = "shop"
    resource["uid"] = uid
    return {
        "cluster": cluster,
        "faultId": fault_id(cluster, fault_type, uid, container),
        "faultType": fault_type,
        "severity": severity,
        "resource": resource,
        "context": context,
        "timestamp": rfc3339_local(),
    }


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class Subscription:
    id: str
    session_id: str
    cluster: str
    mode: str
    filters: dict[str, Any]
    created_at: str
    degraded: bool = False
    active: bool = False  # False while its subscribe call is still running, and once it ended
    ended: bool = False


class Batch:
    """One /test/emit call: counts outcomes so that `wait` can answer with the exact `sent`."""

    def __init__(self) -> None:
        self.outstanding = 0
        self.all_enqueued = False
        self.sent = 0
        self.not_sent: dict[str, int] = {}
        self.done = asyncio.Event()

    def add(self) -> None:
        self.outstanding += 1

    def resolve(self, outcome: str) -> None:
        if outcome == "sent":
            self.sent += 1
        else:
            self.not_sent[outcome] = self.not_sent.get(outcome, 0) + 1
        self.outstanding -= 1
        self._check()

    def finish_enqueue(self) -> None:
        self.all_enqueued = True
        self._check()

    def _check(self) -> None:
        if self.all_enqueued and self.outstanding == 0:
            self.done.set()


@dataclass
class Delivery:
    kind: str  # "fault", "malformed" or "subscription_error"
    sub: Subscription
    data: Any
    level: str
    logger: str
    batch: Batch | None = None
    resolved: bool = False
    fault_id: str | None = None

    def resolve(self, outcome: str) -> None:
        if self.resolved:
            return
        self.resolved = True
        if self.batch is not None:
            self.batch.resolve(outcome)

    def wire_key(self) -> tuple[str, str] | None:
        """(subscriptionId, faultId) as they appear on the wire, or None if not recognisable."""
        data = self.data
        if not isinstance(data, dict):
            return None
        sid, fid = data.get("subscriptionId"), data.get("faultId")
        if isinstance(sid, str) and isinstance(fid, str) and _SAFE_SUB.match(sid) and _FID.fullmatch(fid):
            return (sid, fid)
        return None


_SAFE_SUB = re.compile(r'^[^"\\]*$')
_FID = re.compile(r"[0-9a-f]{16}")
_WIRE_FID = re.compile(rb'"faultId":"([0-9a-f]{16})"')
_WIRE_SUB = re.compile(rb'"subscriptionId":"([^"\\]*)"')


@dataclass
class SessionState:
    id: str
    server_session: Any = None  # the SDK ServerSession, captured from the first handler call
    log_level: str | None = None
    get_claimed: bool = False  # a GET holds the stream (a second one gets 409)
    attached: bool = False  # the SDK's standalone stream is registered and headers went out
    get_scope: anyio.CancelScope | None = None
    outbox: asyncio.Queue | None = None
    sender: asyncio.Task | None = None
    pending: dict[tuple[str, str], Delivery] = field(default_factory=dict)
    pending_fifo: deque = field(default_factory=deque)
    lost: dict[tuple[str, str], Delivery] = field(default_factory=dict)


class EventLog:
    """JSON lines of everything written to a GET stream (and subscription lifecycle)."""

    def __init__(self, path: str | None) -> None:
        self._file = open(path, "a", buffering=1, encoding="utf-8") if path else None

    def write(self, record: dict[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# --------------------------------------------------------------------------------------------
# ASGI helpers
# --------------------------------------------------------------------------------------------


async def go_http_error(send, status: int, text: str, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    """Go's http.Error: text/plain, nosniff, trailing newline."""
    body = (text + "\n").encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"x-content-type-options", b"nosniff"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send, status: int, obj: Any) -> None:
    body = json.dumps(obj).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_empty(send, status: int) -> None:
    headers = [] if status == 204 else [(b"content-length", b"0")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_receive(body: bytes, receive):
    """Hand the already-read body to the SDK, then pass through (for disconnect detection)."""
    delivered = False

    async def _receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return _receive


def header_values(scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == name]


def with_headers(scope, replace: dict[bytes, bytes | None]) -> dict:
    """Copy of scope with the named headers replaced (None removes them)."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in replace]
    headers += [(k, v) for k, v in replace.items() if v is not None]
    return dict(scope, headers=headers)


def strip_session_header(message: dict) -> dict:
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"mcp-session-id"]
    return dict(message, headers=headers)


# --------------------------------------------------------------------------------------------
# One fake server (one --listen)
# --------------------------------------------------------------------------------------------


class KmsServer(Server):
    """Low-level SDK server whose initialize result matches the Go server's capabilities."""

    def __init__(self, list_changed: bool) -> None:
        super().__init__(SERVER_NAME, version=SERVER_VERSION, website_url=SERVER_WEBSITE)
        self._list_changed = list_changed

    def create_initialization_options(self, notification_options=None, experimental_capabilities=None):
        options = super().create_initialization_options(
            notification_options
            or NotificationOptions(prompts_changed=self._list_changed, tools_changed=self._list_changed),
            experimental_capabilities,
        )
        options.capabilities.experimental = None  # the Go server advertises no experimental block
        return options


def tool_definitions() -> list[types.Tool]:
    def annotations(title: str, open_world: bool) -> types.ToolAnnotations:
        return types.ToolAnnotations(title=title, readOnlyHint=True, destructiveHint=False, openWorldHint=open_world)

    subscribe_schema = {
        "type": "object",
        "properties": {
            "involvedKind": {
                "description": "Optional involved object kind filter (e.g., 'Pod', 'Deployment')",
                "type": "string",
            },
            "involvedName": {"description": "Optional involved object name filter", "type": "string"},
            "involvedNamespace": {"description": "Optional involved object namespace filter", "type": "string"},
            "labelSelector": {
                "description": "Optional label selector for filtering events by involved object labels "
                "(e.g., 'app=nginx,tier=frontend')",
                "type": "string",
            },
            "mode": {
                "default": "events",
                "description": "Subscription mode: 'events' for all events (default), 'faults' for resource-based "
                "fault detection with edge-triggered state change notifications",
                "enum": ["events", "faults"],
                "type": "string",
            },
            "namespaces": {
                "description": "Optional list of namespaces to watch. If not provided, watches all namespaces "
                "(cluster-wide)",
                "items": {"type": "string"},
                "type": "array",
            },
            "reason": {
                "description": "Optional event reason prefix filter (e.g., 'BackOff', 'Failed')",
                "type": "string",
            },
            "type": {
                "description": "Optional event type filter: 'Normal' or 'Warning'",
                "enum": ["Normal", "Warning"],
                "type": "string",
            },
        },
    }
    return [
        types.Tool(
            name="events_list",
            description="List all the Kubernetes events in the current cluster from all namespaces",
            inputSchema={
                "type": "object",
                "properties": {
                    "namespace": {
                        "description": "Optional Namespace to retrieve the events from. If not provided, "
                        "will list events from all namespaces",
                        "type": "string",
                    }
                },
            },
            annotations=annotations("Events: List", True),
        ),
        types.Tool(
            name="events_list_subscriptions",
            description="List active event subscriptions for the current session",
            inputSchema={"type": "object"},
            annotations=annotations("Events: List Subscriptions", False),
        ),
        types.Tool(
            name="events_subscribe",
            description="Subscribe to Kubernetes event notifications in real-time. Requires HTTP/SSE transport "
            "(start server with --port). Client must call logging/setLevel before receiving notifications.",
            inputSchema=subscribe_schema,
            annotations=annotations("Events: Subscribe", True),
        ),
        types.Tool(
            name="events_unsubscribe",
            description="Unsubscribe from event notifications by subscription ID",
            inputSchema={
                "type": "object",
                "properties": {
                    "subscriptionId": {
                        "description": "The subscription ID returned by events_subscribe",
                        "type": "string",
                    }
                },
                "required": ["subscriptionId"],
            },
            annotations=annotations("Events: Unsubscribe", False),
        ),
    ]


def text_result(text: str, is_error: bool = False) -> types.ServerResult:
    # Go omits isError on success; the SDK model would always write `"isError": false`.
    result = types.CallToolResult.model_construct(
        content=[types.TextContent(type="text", text=text)], isError=True if is_error else None
    )
    return types.ServerResult(result)


class Listener:
    def __init__(self, port: int, cluster: str, opts: argparse.Namespace, event_log: EventLog) -> None:
        self.port = port
        self.cluster = cluster
        self.host = opts.host
        self.stateless = opts.stateless
        self.max_per_session = opts.max_subscriptions_per_session
        self.max_global = opts.max_subscriptions
        self.event_log = event_log

        self.server = KmsServer(list_changed=not self.stateless)
        self._register_handlers()
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            json_response=False,
            stateless=self.stateless,
            session_idle_timeout=None,  # go-sdk: SessionTimeout 0, sessions never expire
            max_sessions=None,
        )

        self.sessions: dict[str, SessionState] = {}
        self.subs: dict[str, Subscription] = {}  # includes subscriptions whose subscribe call hangs
        self.by_session: dict[str, list[str]] = {}
        # The Go manager holds one mutex across subscribe (including the informer sync that can
        # hang forever), unsubscribe and list; fault delivery does not take it.
        self.manager_lock = asyncio.Lock()
        self.subscribe_mode = "ok"
        self.subscribe_error_text = DEFAULT_SUBSCRIBE_ERROR_TEXT
        self.subscribe_delay = 0.0
        self.delete_mode = "ok"  # "hang": DELETE is never answered (a server too busy to)
        self.mode_changed = asyncio.Event()
        self.shutting_down = False
        self.background: set[asyncio.Task] = set()
        self.seq = 0
        self.reset_stats()

    # ---- counters -------------------------------------------------------------------------

    def reset_stats(self) -> None:
        self.sent = 0
        self.other_sent = 0
        self.sent_log: list[dict[str, Any]] = []
        self.initialize_count = 0
        self.subscribe_calls = 0
        self.unsubscribe_calls = 0
        self.list_calls = 0
        self.deletes = 0
        self.cancelled_on_send = 0
        self.not_sent: dict[str, int] = {}
        self.max_concurrent = self.active_count() if hasattr(self, "subs") else 0

    def active_count(self) -> int:
        return sum(1 for s in self.subs.values() if s.active)

    def note_active(self) -> None:
        self.max_concurrent = max(self.max_concurrent, self.active_count())

    def live_session_ids(self) -> set[str]:
        # The SDK's table of live sessions (private attribute, but it is the authority on which
        # session ids answer 404).
        return set(self.manager._server_instances.keys())

    def session_is_live(self, sid: str) -> bool:
        return sid in self.manager._server_instances

    def session_state(self, sid: str) -> SessionState:
        st = self.sessions.get(sid)
        if st is None:
            st = SessionState(sid)
            self.sessions[sid] = st
        return st

    def state(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "port": self.port,
            "sessions": len(self.manager._server_instances),
            "attachedStreams": sum(1 for s in self.sessions.values() if s.attached),
            "subscriptions": self.active_count(),
            "pendingSubscribes": sum(1 for s in self.subs.values() if not s.active),
            "maxConcurrentSubscriptions": self.max_concurrent,
            "sent": self.sent,
            "otherSent": self.other_sent,
            "notSent": dict(self.not_sent),
            "cancelledOnSend": self.cancelled_on_send,
            "initializeCount": self.initialize_count,
            "subscribeCalls": self.subscribe_calls,
            "unsubscribeCalls": self.unsubscribe_calls,
            "listCalls": self.list_calls,
            "deletes": self.deletes,
            "subscribeMode": self.subscribe_mode,
            "deleteMode": self.delete_mode,
        }

    def log_event(self, record: dict[str, Any]) -> None:
        record.setdefault("time", iso_ms(time.time()))
        record["cluster"] = self.cluster
        record["port"] = self.port
        self.event_log.write(record)

    # ---- subscriptions --------------------------------------------------------------------

    def _end_subscription(self, sub: Subscription, reason: str) -> None:
        if sub.ended:
            return
        was_active = sub.active
        sub.active = False
        sub.ended = True
        self.subs.pop(sub.id, None)
        ids = self.by_session.get(sub.session_id)
        if ids is not None:
            with contextlib.suppress(ValueError):
                ids.remove(sub.id)
            if not ids:
                del self.by_session[sub.session_id]
        if was_active:
            self.log_event(
                {"type": "subscription_ended", "reason": reason, "subscriptionId": sub.id, "session": sub.session_id}
            )

    def _register_handlers(self) -> None:
        server = self.server

        @server.list_tools()
        async def _list_tools() -> list[types.Tool]:
            return tool_definitions()

        @server.list_prompts()
        async def _list_prompts() -> list[types.Prompt]:
            return []

        @server.set_logging_level()
        async def _set_level(level: types.LoggingLevel) -> None:
            sid = self._request_session_id()
            st = self.session_state(sid)
            st.server_session = server.request_context.session
            st.log_level = level

        async def _call_tool(req: types.CallToolRequest) -> types.ServerResult:
            name = req.params.name
            if name not in ("events_list", "events_subscribe", "events_unsubscribe", "events_list_subscriptions"):
                raise McpError(types.ErrorData(code=-32602, message=f'unknown tool "{name}"'))
            args = req.params.arguments
            if args is None:
                raise McpError(
                    types.ErrorData(
                        code=0,
                        message=f"failed to unmarshal tool call arguments: unexpected end of JSON input for tool {name}",
                    )
                )
            sid = self._request_session_id()
            st = self.session_state(sid)
            st.server_session = server.request_context.session
            if name == "events_list":
                return text_result("# No events found")
            if name == "events_subscribe":
                return await self._subscribe(sid, args)
            if name == "events_unsubscribe":
                return await self._unsubscribe(sid, args)
            return await self._list_subscriptions(sid)

        # Registered directly (not through @call_tool) so that unknown tools and missing
        # arguments can be JSON-RPC errors as in go-sdk, and `isError` is omitted on success.
        server.request_handlers[types.CallToolRequest] = _call_tool

    def _request_session_id(self) -> str:
        request = self.server.request_context.request
        sid = request.headers.get("mcp-session-id") if request is not None else None
        if not sid:
            # Go's stateless mode gives each session-less request a fresh random id.
            sid = go_session_id()
        return sid

    async def _subscribe(self, sid: str, args: dict[str, Any]) -> types.ServerResult:
        self.subscribe_calls += 1
        mode_arg = args.get("mode")
        mode = mode_arg if isinstance(mode_arg, str) and mode_arg != "" else "events"
        filters: dict[str, Any] = {}
        namespaces = args.get("namespaces")
        if isinstance(namespaces, list):
            ns = [n for n in namespaces if isinstance(n, str)]
            if ns:
                filters["namespaces"] = ns
        for key in ("labelSelector", "involvedKind", "involvedName", "involvedNamespace", "type", "reason"):
            value = args.get(key)
            if isinstance(value, str) and value != "":
                filters[key] = value
        # filters.ValidateForMode, as the tool handler runs it before the manager
        selector_error = label_selector_error(filters.get("labelSelector", ""))
        if selector_error:
            return text_result(f"invalid subscription filters: invalid label selector: {selector_error}", True)
        if filters.get("type") not in (None, "Normal", "Warning"):
            return text_result(
                "invalid subscription filters: invalid type: must be 'Normal', 'Warning', or empty", True
            )
        if mode == "faults" and filters.get("type") == "Normal":
            return text_result("invalid subscription filters: faults mode cannot filter for Normal events", True)

        async with self.manager_lock:
            if mode not in ("events", "faults"):
                return text_result("failed to create subscription: invalid mode: must be 'events' or 'faults'", True)
            if len(self.by_session.get(sid, [])) >= self.max_per_session:
                return text_result(
                    "failed to create subscription: session has reached maximum subscriptions "
                    f"({self.max_per_session})",
                    True,
                )
            if len(self.subs) >= self.max_global:
                return text_result(
                    f"failed to create subscription: server has reached maximum subscriptions ({self.max_global})",
                    True,
                )
            sub = Subscription(
                id=f"sub-{uuid.uuid4().hex[:8]}",
                session_id=sid,
                cluster=self.cluster,
                mode=mode,
                filters=filters,
                created_at=rfc3339_local(),
            )
            # Like the Go manager, the subscription is tracked (and counts towards the limits)
            # before its watcher starts.
            self.subs[sub.id] = sub
            self.by_session.setdefault(sid, []).append(sub.id)

            # Start the watcher: the informer sync that can hang forever on missing RBAC. It is
            # shielded: in Go nothing (client cancel, session end) interrupts it.
            with anyio.CancelScope(shield=True):
                if self.subscribe_delay > 0:  # informer caches of a big cluster take a while
                    await asyncio.sleep(self.subscribe_delay)
                while self.subscribe_mode == "hang" and not self.shutting_down:
                    await self.mode_changed.wait()
            if self.subscribe_mode == "error" or self.shutting_down:
                self._end_subscription(sub, "watcher-failed")
                return text_result(self.subscribe_error_text, True)
            sub.active = True
            self.note_active()
            self.log_event({"type": "subscribed", "subscriptionId": sub.id, "session": sid, "mode": mode})

        body = {
            "cluster": sub.cluster,
            "createdAt": sub.created_at,
            "filters": sub.filters,
            "mode": sub.mode,
            "status": "active",
            "subscriptionId": sub.id,
        }
        return text_result(
            f"# Event Subscription Created\n\n{go_json(body, indent=2)}\n\n"
            "You will receive event notifications via the logging/message protocol."
        )

    async def _unsubscribe(self, sid: str, args: dict[str, Any]) -> types.ServerResult:
        self.unsubscribe_calls += 1
        sub_id = args.get("subscriptionId")
        if not isinstance(sub_id, str) or sub_id == "":
            return text_result("subscriptionId is required", True)
        async with self.manager_lock:
            sub = self.subs.get(sub_id)
            if sub is None or sub.session_id != sid:
                return text_result("failed to cancel subscription: subscription not found", True)
            self._end_subscription(sub, "unsubscribe")
        body = {"cancelled": True, "status": "success", "subscriptionId": sub_id}
        return text_result(f"# Subscription Cancelled\n\n{go_json(body, indent=2)}")

    async def _list_subscriptions(self, sid: str) -> types.ServerResult:
        self.list_calls += 1
        async with self.manager_lock:
            subs = [self.subs[i] for i in self.by_session.get(sid, []) if i in self.subs]
        listing = [
            {
                "cluster": s.cluster,
                "createdAt": s.created_at,
                "degraded": s.degraded,
                "filters": s.filters,
                "mode": s.mode,
                "subscriptionId": s.id,
            }
            for s in subs
        ]
        body = {"subscriptions": listing, "total": len(subs)}
        return text_result(f"# Active Subscriptions\n\n{go_json(body, indent=2)}")

    # ---- delivery -------------------------------------------------------------------------

    def enqueue(self, delivery: Delivery) -> None:
        if delivery.batch is not None:
            delivery.batch.add()
        st = self.session_state(delivery.sub.session_id)
        if st.outbox is None:
            st.outbox = asyncio.Queue()
        if st.sender is None or st.sender.done():
            st.sender = asyncio.create_task(self._sender(st))
        st.outbox.put_nowait(delivery)

    async def _sender(self, st: SessionState) -> None:
        """One sender per session, so a client that stops reading stalls only its own session."""
        assert st.outbox is not None
        while True:
            delivery = await st.outbox.get()
            try:
                await self._deliver(st, delivery)
            except Exception:  # a bug must not kill the session's sender
                log.exception("delivery failed")
                delivery.resolve("error")

    def _not_sent(self, delivery: Delivery, reason: str) -> None:
        self.not_sent[reason] = self.not_sent.get(reason, 0) + 1
        if delivery.kind == "fault":
            self.log_event(
                {
                    "type": "not_sent",
                    "reason": reason,
                    "faultId": delivery.fault_id,
                    "subscriptionId": delivery.sub.id,
                    "session": delivery.sub.session_id,
                }
            )
        delivery.resolve(reason)

    def _send_failed(self, delivery: Delivery, reason: str) -> None:
        """The Go manager treats any send error as a dead session and cancels the subscription."""
        if delivery.sub.active:
            self.cancelled_on_send += 1
            self._end_subscription(delivery.sub, f"send-failed:{reason}")
        self._not_sent(delivery, reason)

    async def _deliver(self, st: SessionState, delivery: Delivery) -> None:
        sub = delivery.sub
        if not sub.active:
            self._not_sent(delivery, "subscription-ended")
            return
        if self.stateless or not self.session_is_live(st.id):
            self._send_failed(delivery, "session-not-found")
            return
        # go-sdk ServerSession.Log: nothing before setLevel, then only level >= the set level.
        # This check comes first and is not an error, so the subscription stays.
        if st.log_level is None or LEVEL_ORDER[delivery.level] < LEVEL_ORDER.get(st.log_level, 0):
            self._not_sent(delivery, "below-log-level")
            return
        transport = self.manager._server_instances.get(st.id)
        if (
            not st.attached
            or st.server_session is None
            or transport is None
            or GET_STREAM_KEY not in transport._request_streams
        ):
            self._send_failed(delivery, "stream-not-connected")
            return
        key = delivery.wire_key()
        if key is not None:
            st.pending[key] = delivery
        else:
            st.pending_fifo.append(delivery)
        try:
            await st.server_session.send_log_message(level=delivery.level, data=delivery.data, logger=delivery.logger)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            if key is not None:
                st.pending.pop(key, None)
            else:
                with contextlib.suppress(ValueError):
                    st.pending_fifo.remove(delivery)
            self._send_failed(delivery, "stream-closed")

    def _written(self, st: SessionState, delivery: Delivery, now: float) -> None:
        """The event's bytes were handed to the HTTP connection of the session's GET."""
        if delivery.kind == "fault":
            self.sent += 1
            record = {
                "faultId": delivery.fault_id,
                "subscriptionId": delivery.sub.id,
                "session": st.id,
                "time": iso_ms(now),
            }
            self.sent_log.append(record)
            self.log_event({"type": "fault", **record})
        else:
            self.other_sent += 1
            self.log_event(
                {
                    "type": delivery.kind,
                    "subscriptionId": delivery.sub.id,
                    "session": st.id,
                    "time": iso_ms(now),
                    "data": delivery.data,
                }
            )
        delivery.resolve("sent")

    def _match_written(self, st: SessionState, body: bytes, now: float) -> None:
        fid = _WIRE_FID.search(body)
        sub = _WIRE_SUB.search(body) if fid else None
        if fid and sub:
            key = (sub.group(1).decode(), fid.group(1).decode())
            delivery = st.pending.pop(key, None) or st.lost.pop(key, None)
            if delivery is not None:
                self._written(st, delivery, now)
                return
        if st.pending_fifo:
            self._written(st, st.pending_fifo.popleft(), now)

    def _stream_gone(self, st: SessionState) -> None:
        """The GET ended: what was handed to the SDK but not written is lost (not sent)."""
        st.lost = dict(st.pending)  # a late write still counts (see _match_written)
        for delivery in list(st.pending.values()) + list(st.pending_fifo):
            self._not_sent(delivery, "lost-on-detach")
        st.pending.clear()
        st.pending_fifo.clear()

    # ---- HTTP: /mcp -----------------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/mcp":
            await self.handle_mcp(scope, receive, send)
        elif path.startswith("/test/"):
            await self.handle_test(scope, receive, send)
        elif path == "/healthz":
            await send_empty(send, 200)
        else:
            await go_http_error(send, 404, "404 page not found")

    async def handle_mcp(self, scope, receive, send) -> None:
        method = scope["method"]
        # 1. Accept (go-sdk StreamableHTTPHandler.ServeHTTP, in its order)
        accept = [a.strip() for a in ",".join(header_values(scope, b"accept")).split(",")]
        json_ok = any(a in ("application/json", "application/*", "*/*") for a in accept)
        stream_ok = any(a in ("text/event-stream", "text/*", "*/*") for a in accept)
        if method == "GET":
            if not stream_ok:
                await go_http_error(send, 400, "Accept must contain 'text/event-stream' for GET requests")
                return
        elif method != "DELETE" and not (json_ok and stream_ok):
            await go_http_error(send, 400, "Accept must contain both 'application/json' and 'text/event-stream'")
            return
        # 2. session id must name a live session (stateful only)
        sid_values = header_values(scope, b"mcp-session-id")
        sid = sid_values[0] if sid_values else ""
        if sid and not self.stateless and not self.session_is_live(sid):
            await go_http_error(send, 404, "session not found")
            return
        # 3. DELETE
        if method == "DELETE":
            if not sid:
                await go_http_error(send, 400, "Bad Request: DELETE requires an Mcp-Session-Id header")
                return
            await self._delete(scope, receive, send, sid)
            return
        # 4. methods
        if method not in ("GET", "POST"):
            await go_http_error(
                send,
                405,
                "Method Not Allowed: streamable MCP servers support GET, POST, and DELETE requests",
                [(b"allow", b"GET, POST, DELETE")],
            )
            return
        if method == "GET" and (self.stateless or not sid):
            await go_http_error(send, 405, "GET requires an active session")
            return
        # 5. protocol version header
        versions = header_values(scope, b"mcp-protocol-version")
        version = versions[0] if versions and versions[0] else DEFAULT_HEADER_VERSION
        if version not in SUPPORTED_PROTOCOL_VERSIONS:
            await go_http_error(
                send,
                400,
                "Bad Request: Unsupported protocol version (supported versions: "
                + ",".join(SUPPORTED_PROTOCOL_VERSIONS)
                + ")",
            )
            return
        if method == "GET":
            await self._get(scope, receive, send, sid)
        else:
            await self._post(scope, receive, send, sid, version)

    async def _delete(self, scope, receive, send, sid: str) -> None:
        if self.stateless:
            await send_empty(send, 204)
            return
        while self.delete_mode == "hang" and not self.shutting_down:
            await self.mode_changed.wait()
        status = None

        async def capture(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        # go-sdk checks no protocol version on DELETE; the SDK would.
        sdk_scope = with_headers(scope, {b"mcp-protocol-version": None, b"accept": None})
        await self.manager.handle_request(sdk_scope, receive, capture)
        if status is not None and status < 300:
            self.deletes += 1
            self.log_event({"type": "session_deleted", "session": sid})
            await send_empty(send, 204)
        else:
            await go_http_error(send, 404, "session not found")

    async def _get(self, scope, receive, send, sid: str) -> None:
        if header_values(scope, b"last-event-id"):
            await go_http_error(send, 400, "stream replay unsupported")
            return
        st = self.session_state(sid)
        if st.get_claimed:
            await go_http_error(send, 409, "stream ID conflicts with ongoing stream")
            return
        st.get_claimed = True
        transport = self.manager._server_instances.get(sid)
        scope_for_sdk = with_headers(scope, {b"accept": b"text/event-stream"})
        cancel_scope = anyio.CancelScope()
        st.get_scope = cancel_scope

        async def get_send(message):
            if message["type"] == "http.response.start":
                if message["status"] == 200 and transport is not None:
                    # The SDK registers its standalone stream in a task that runs alongside the
                    # one sending these headers. Hold the headers until it is registered, so a
                    # client that has seen 200 can be sure a notification will be delivered.
                    for _ in range(400):
                        if GET_STREAM_KEY in transport._request_streams:
                            break
                        await asyncio.sleep(0.005)
                    st.attached = True
                    st.lost.clear()
                await send(strip_session_header(message))
                return
            if message["type"] == "http.response.body" and message.get("body"):
                await send(message)
                self._match_written(st, message["body"], time.time())
                return
            await send(message)

        try:
            with cancel_scope:
                await self.manager.handle_request(scope_for_sdk, receive, get_send)
        finally:
            st.attached = False
            st.get_claimed = False
            st.get_scope = None
            self._stream_gone(st)

    async def _post(self, scope, receive, send, sid: str, version: str) -> None:
        if header_values(scope, b"last-event-id"):
            await go_http_error(send, 400, "can't send Last-Event-ID for POST request")
            return
        body = await read_body(receive)
        if not body:
            await go_http_error(send, 400, "POST requires a non-empty body")
            return
        try:
            payload = json.loads(body)
        except ValueError as e:
            await go_http_error(send, 400, f"malformed payload: {e}")
            return
        is_batch = isinstance(payload, list)
        messages = payload if is_batch else [payload]
        if is_batch and version >= "2025-06-18":
            await go_http_error(
                send,
                400,
                f"JSON-RPC batching is not supported in 2025-06-18 and later (request version: {version})",
            )
            return
        if not messages or not all(isinstance(m, dict) for m in messages):
            await go_http_error(send, 400, "malformed payload: not a JSON-RPC message")
            return
        calls = []
        is_initialize = False
        for m in messages:
            if "method" not in m:
                continue  # a response from the client
            method = m.get("method")
            if not isinstance(method, str):
                await go_http_error(send, 400, "malformed payload: method is not a string")
                return
            info = GO_METHODS.get(method)
            if info is None:
                await go_http_error(send, 400, f'JSON RPC not handled: "{method}" unsupported')
                return
            is_notification, params_optional = info
            is_call = m.get("id") is not None
            if is_notification and is_call:
                await go_http_error(send, 400, f'invalid request: unexpected id for "{method}"')
                return
            if not is_notification and not is_call:
                await go_http_error(send, 400, f'invalid request: missing id for "{method}"')
                return
            if not params_optional and "params" not in m:
                await go_http_error(send, 400, 'invalid request: missing required "params"')
                return
            if is_call:
                calls.append(m)
            if method == "initialize":
                is_initialize = True
                params = m.get("params")
                # go-sdk answers an unknown version with 2025-06-18; the SDK would answer its latest.
                if isinstance(params, dict) and params.get("protocolVersion") not in SUPPORTED_PROTOCOL_VERSIONS:
                    params["protocolVersion"] = FALLBACK_NEGOTIATED_VERSION
                    body = json.dumps(payload).encode()
            if method == "tools/call":
                params = m.get("params")
                # Go unmarshals `"arguments": null` into an empty map; the SDK cannot tell it
                # from a missing member, which Go rejects.
                if isinstance(params, dict) and "arguments" in params and params["arguments"] is None:
                    params["arguments"] = {}
                    body = json.dumps(payload).encode()
            if method == "logging/setLevel":
                params = m.get("params")
                level = params.get("level") if isinstance(params, dict) else None
                # go-sdk stores any level string and ranks an unknown one as debug; the SDK
                # would reject it as invalid params.
                if isinstance(level, str) and level != "" and level not in LEVEL_ORDER:
                    params["level"] = "debug"
                    body = json.dumps(payload).encode()
        if is_batch:
            await go_http_error(send, 400, "fake-kms: JSON-RPC batches are not supported by this test server")
            return

        if messages and all(m.get("method") == "notifications/cancelled" for m in messages):
            # go-sdk only cancels the handler's context, which none of the Go server's
            # subscription handlers (the hung informer sync included) look at, and answers when the
            # handler returns. The SDK would answer "Request cancelled" at once and then fail the
            # whole session when the shielded handler returns, so the notification stops here.
            await send_empty(send, 202)
            return
        if not sid and not self.stateless and not is_initialize:
            # go-sdk opens a throwaway session for it; only ping and initialize work there.
            await self._answer_uninitialized(send, calls)
            return
        if is_initialize:
            self.initialize_count += 1

        sdk_scope = with_headers(
            scope,
            {
                b"accept": b"application/json, text/event-stream",
                b"content-type": b"application/json",
                b"mcp-protocol-version": version.encode(),
            },
        )
        new_session_id = go_session_id().encode() if (self.stateless and is_initialize) else None

        async def post_send(message):
            if message["type"] == "http.response.start":
                if not calls and message["status"] == 202:
                    # go-sdk: 202 with an empty body (the SDK writes a JSON body)
                    await send(
                        {"type": "http.response.start", "status": 202, "headers": [(b"content-length", b"0")]}
                    )
                    return
                if not is_initialize:
                    message = strip_session_header(message)
                elif new_session_id is not None:
                    message = dict(message, headers=list(message["headers"]) + [(b"mcp-session-id", new_session_id)])
                await send(message)
                return
            if message["type"] == "http.response.body" and not calls:
                await send({"type": "http.response.body", "body": b""})
                return
            await send(message)

        await self.manager.handle_request(sdk_scope, replay_receive(body, receive), post_send)

    async def _answer_uninitialized(self, send, calls: list[dict]) -> None:
        if not calls:
            await send_empty(send, 202)
            return
        events = []
        for m in calls:
            if m["method"] == "ping":
                reply = {"jsonrpc": "2.0", "id": m["id"], "result": {}}
            else:
                reply = {
                    "jsonrpc": "2.0",
                    "id": m["id"],
                    "error": {"code": 0, "message": f'method "{m["method"]}" is invalid during session initialization'},
                }
            events.append(f"event: message\ndata: {go_json(reply)}\n\n")
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"cache-control", b"no-cache, no-transform"),
                    (b"content-type", b"text/event-stream"),
                    (b"connection", b"keep-alive"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": "".join(events).encode()})

    # ---- HTTP: /test/ ---------------------------------------------------------------------

    async def handle_test(self, scope, receive, send) -> None:
        method, path = scope["method"], scope["path"]
        body = await read_body(receive)
        try:
            req = json.loads(body) if body.strip() else {}
            if not isinstance(req, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as e:
            await send_json(send, 400, {"error": f"bad request body: {e}"})
            return
        routes = {
            ("POST", "/test/emit"): self.t_emit,
            ("POST", "/test/malformed"): self.t_malformed,
            ("POST", "/test/cancel"): self.t_cancel,
            ("POST", "/test/subscription-error"): self.t_subscription_error,
            ("POST", "/test/drop-streams"): self.t_drop_streams,
            ("POST", "/test/subscribe-mode"): self.t_subscribe_mode,
            ("POST", "/test/delete-mode"): self.t_delete_mode,
            ("GET", "/test/state"): self.t_state,
            ("POST", "/test/reset-stats"): self.t_reset_stats,
            ("GET", "/test/sent"): self.t_sent,
        }
        handler = routes.get((method, path))
        if handler is None:
            await send_json(send, 404, {"error": f"no such control route: {method} {path}"})
            return
        try:
            status, result = await handler(req)
        except ValueError as e:
            status, result = 400, {"error": str(e)}
        await send_json(send, status, result)

    def _faults_subs(self) -> list[Subscription]:
        return [s for s in self.subs.values() if s.active and s.mode == "faults"]

    async def t_emit(self, req: dict) -> tuple[int, dict]:
        count = req.get("count", 1)
        rate = req.get("rate", 0)
        fault_type = req.get("faultType", "CrashLoop")
        wait = req.get("wait", True)
        timeout = req.get("timeout", 120)
        if not isinstance(count, int) or count < 0:
            raise ValueError("count must be a non-negative integer")
        if not isinstance(rate, (int, float)) or rate < 0:
            raise ValueError("rate must be a non-negative number (faults per second; 0 = as fast as possible)")
        if not isinstance(fault_type, str):
            raise ValueError("faultType must be a string")
        faults = []
        for _ in range(count):
            self.seq += 1
            faults.append(make_fault(self.cluster, fault_type, self.seq))
        batch = Batch()
        task = asyncio.create_task(self._run_emit(faults, float(rate), batch))
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        fault_ids = [f["faultId"] for f in faults]
        if not wait:
            return 202, {"faultIds": fault_ids, "sent": None, "background": True}
        timed_out = False
        try:
            await asyncio.wait_for(batch.done.wait(), timeout=timeout)
        except asyncio.TimeoutError:
            timed_out = True
        return 200, {
            "sent": batch.sent,
            "faultIds": fault_ids,
            "notSent": batch.not_sent,
            "pending": batch.outstanding,
            "timedOut": timed_out,
        }

    async def _run_emit(self, faults: list[dict], rate: float, batch: Batch) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i, fault in enumerate(faults):
            if rate > 0:
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            elif i % 200 == 199:
                await asyncio.sleep(0)  # let the senders run while a big batch is queued
            # Each faults subscription has its own watcher and reports the fault itself.
            for sub in self._faults_subs():
                data = {"subscriptionId": sub.id}
                data.update(fault)
                self.enqueue(
                    Delivery(
                        kind="fault",
                        sub=sub,
                        data=data,
                        level="warning",
                        logger=LOGGER_FAULTS,
                        batch=batch,
                        fault_id=fault["faultId"],
                    )
                )
        batch.finish_enqueue()

    async def t_malformed(self, req: dict) -> tuple[int, dict]:
        kind = req.get("kind")
        count = req.get("count", 1)
        if not isinstance(count, int) or count < 0:
            raise ValueError("count must be a non-negative integer")
        kinds = ("string-data", "not-an-object", "missing-fault-type", "wrong-types", "bad-json-field")
        if kind not in kinds:
            raise ValueError(f"kind must be one of {', '.join(kinds)}")
        batch = Batch()
        sent_items = []
        for sub in self._faults_subs():
            for _ in range(count):
                self.seq += 1
                base = make_fault(self.cluster, "CrashLoop", self.seq)
                if kind == "string-data":
                    data: Any = f"CrashLoop fault for {base['resource']['name']} (data is a string, not an object)"
                elif kind == "not-an-object":
                    data = [base["faultId"], "CrashLoop", 3]
                elif kind == "missing-fault-type":
                    data = {"subscriptionId": sub.id, **base}
                    del data["faultType"]
                elif kind == "wrong-types":
                    data = {
                        "subscriptionId": 12345,
                        "cluster": ["not", "a", "string"],
                        "faultId": 42,
                        "faultType": {"name": "CrashLoop"},
                        "severity": 5,
                        "resource": "Pod/" + base["resource"]["name"],
                        "context": None,
                        "timestamp": 1734703651,
                    }
                else:  # bad-json-field: a valid fault whose context looks like JSON but is not
                    data = {"subscriptionId": sub.id, **base}
                    data["context"] = '[{"container":"app","previous":false,"sample":"unterminated'
                sent_items.append({"subscriptionId": sub.id, "session": sub.session_id, "data": data})
                self.enqueue(
                    Delivery(
                        kind="malformed",
                        sub=sub,
                        data=data,
                        level="warning",
                        logger=LOGGER_FAULTS,
                        batch=batch,
                        fault_id=data.get("faultId") if isinstance(data, dict) else None,
                    )
                )
        batch.finish_enqueue()
        await asyncio.wait_for(batch.done.wait(), timeout=req.get("timeout", 60))
        return 200, {"kind": kind, "sent": batch.sent, "notSent": batch.not_sent, "messages": sent_items}

    async def t_cancel(self, req: dict) -> tuple[int, dict]:
        ended = [s for s in self.subs.values() if s.active]
        for sub in ended:
            self._end_subscription(sub, "test-cancel")
        return 200, {"cancelled": len(ended), "subscriptionIds": [s.id for s in ended]}

    async def t_subscription_error(self, req: dict) -> tuple[int, dict]:
        batch = Batch()
        items = []
        for sub in [s for s in self.subs.values() if s.active]:
            if sub.degraded:
                continue  # the Go manager only reports the first degradation
            sub.degraded = True
            data = {"subscriptionId": sub.id, "cluster": sub.cluster, "error": DEGRADED_ERROR_TEXT, "degraded": True}
            items.append({"subscriptionId": sub.id, "session": sub.session_id, "data": data})
            self.enqueue(
                Delivery(
                    kind="subscription_error",
                    sub=sub,
                    data=data,
                    level="warning",
                    logger=LOGGER_SUBSCRIPTION_ERROR,
                    batch=batch,
                )
            )
        batch.finish_enqueue()
        await asyncio.wait_for(batch.done.wait(), timeout=req.get("timeout", 60))
        return 200, {"sent": batch.sent, "notSent": batch.not_sent, "messages": items}

    async def t_drop_streams(self, req: dict) -> tuple[int, dict]:
        dropped = 0
        for st in self.sessions.values():
            if st.get_scope is not None:
                st.get_scope.cancel()
                dropped += 1
        # Let the cancelled GETs unwind so that /test/state is accurate right after.
        for _ in range(200):
            if not any(st.get_claimed for st in self.sessions.values()):
                break
            await asyncio.sleep(0.005)
        return 200, {"dropped": dropped}

    async def t_subscribe_mode(self, req: dict) -> tuple[int, dict]:
        mode = req.get("mode")
        if mode not in ("ok", "error", "hang"):
            raise ValueError("mode must be one of ok, error, hang")
        text = req.get("text")
        if text is not None and not isinstance(text, str):
            raise ValueError("text must be a string")
        delay = req.get("delaySeconds", 0)
        if not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError("delaySeconds must be a non-negative number")
        previous = self.subscribe_mode
        self.subscribe_mode = mode
        self.subscribe_error_text = text or DEFAULT_SUBSCRIBE_ERROR_TEXT
        self.subscribe_delay = float(delay)
        self._wake_hung()
        return 200, {"mode": mode, "previous": previous, "delaySeconds": self.subscribe_delay}

    async def t_delete_mode(self, req: dict) -> tuple[int, dict]:
        mode = req.get("mode")
        if mode not in ("ok", "hang"):
            raise ValueError("mode must be one of ok, hang")
        previous = self.delete_mode
        self.delete_mode = mode
        self._wake_hung()
        return 200, {"mode": mode, "previous": previous}

    def _wake_hung(self) -> None:
        self.mode_changed.set()
        self.mode_changed = asyncio.Event()

    async def t_state(self, req: dict) -> tuple[int, dict]:
        return 200, self.state()

    async def t_reset_stats(self, req: dict) -> tuple[int, dict]:
        self.reset_stats()
        return 200, self.state()

    async def t_sent(self, req: dict) -> tuple[int, dict]:
        return 200, {"cluster": self.cluster, "sent": list(self.sent_log)}

    # ---- lifecycle ------------------------------------------------------------------------

    async def sweep_forever(self) -> None:
        """The Go session monitor: subscriptions of sessions that are gone are removed."""
        while True:
            await asyncio.sleep(SESSION_SWEEP_SECONDS)
            live = self.live_session_ids()
            for sub in [s for s in self.subs.values() if s.active and s.session_id not in live]:
                self._end_subscription(sub, "session-gone")
            for sid in [sid for sid, st in self.sessions.items() if sid not in live and not st.get_claimed]:
                st = self.sessions.pop(sid)
                if st.sender is not None and st.outbox is not None and st.outbox.empty():
                    st.sender.cancel()

    def begin_shutdown(self) -> None:
        """SIGTERM as the Go server handles it: subscriptions cancelled silently, GETs cut."""
        self.shutting_down = True
        self._wake_hung()
        for sub in list(self.subs.values()):
            self._end_subscription(sub, "shutdown")
        for st in self.sessions.values():
            if st.get_scope is not None:
                st.get_scope.cancel()

    def stop_tasks(self) -> None:
        for st in self.sessions.values():
            if st.sender is not None:
                st.sender.cancel()
        for task in list(self.background):
            task.cancel()


# --------------------------------------------------------------------------------------------
# Process
# --------------------------------------------------------------------------------------------


class QuietServer(uvicorn.Server):
    """uvicorn server that leaves signal handling to this process (several run in one loop)."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class _DropIncompleteResponse(logging.Filter):
    # Cutting a GET on purpose (drop-streams, shutdown) makes uvicorn log this; it is expected.
    def filter(self, record: logging.LogRecord) -> bool:
        return "returned without completing response" not in record.getMessage()


def parse_listen(value: str) -> tuple[int, str]:
    port, sep, cluster = value.partition(":")
    if not sep or not port.isdigit() or not (0 < int(port) < 65536):
        raise argparse.ArgumentTypeError(f"--listen wants PORT:CLUSTER with PORT in 1..65535, got {value!r}")
    return int(port), cluster


def configure_sdk_wire_format() -> None:
    # go-sdk writes LF line endings and no keepalive comments; sse-starlette defaults to CRLF and
    # a `: ping` every 15 s. The SDK builds EventSourceResponse without these arguments, so the
    # class defaults decide.
    EventSourceResponse.DEFAULT_SEPARATOR = "\n"
    EventSourceResponse.DEFAULT_PING_INTERVAL = 0
    # go-sdk's session ids are 26 base32 characters (crypto/rand.Text); the SDK uses uuid4().hex.
    if hasattr(sdk_manager_module, "uuid4"):

        class _GoSessionId:
            def __init__(self) -> None:
                self.hex = go_session_id()

        sdk_manager_module.uuid4 = _GoSessionId


def bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def amain(opts: argparse.Namespace) -> int:
    event_log = EventLog(opts.log)
    listeners = [Listener(port, cluster, opts, event_log) for port, cluster in opts.listen]
    sockets = []
    for listener in listeners:
        try:
            sockets.append(bind(opts.host, listener.port))
        except OSError as e:
            print(f"fake-kms: cannot listen on {opts.host}:{listener.port}: {e}", file=sys.stderr)
            for s in sockets:
                s.close()
            return 2
    servers = []
    for listener in listeners:
        config = uvicorn.Config(
            listener,
            host=opts.host,
            port=listener.port,
            lifespan="off",
            access_log=False,
            log_config=None,
            timeout_graceful_shutdown=2,
            timeout_keep_alive=75,
        )
        servers.append(QuietServer(config))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with contextlib.AsyncExitStack() as stack:
        for listener in listeners:
            await stack.enter_async_context(listener.manager.run())
        serve_tasks = [
            asyncio.create_task(server.serve(sockets=[sock])) for server, sock in zip(servers, sockets, strict=True)
        ]
        sweepers = [asyncio.create_task(listener.sweep_forever()) for listener in listeners]
        while not all(server.started for server in servers):
            if any(t.done() for t in serve_tasks):
                print("fake-kms: a listener failed to start", file=sys.stderr)
                return 2
            await asyncio.sleep(0.01)
        print("ready", flush=True)

        await stop.wait()
        for listener in listeners:
            listener.begin_shutdown()
        await asyncio.sleep(0.05)
        for server in servers:
            server.should_exit = True
        await asyncio.gather(*serve_tasks, return_exceptions=True)
        for task in sweepers:
            task.cancel()
        for listener in listeners:
            listener.stop_tasks()
    event_log.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Fake kubernetes-mcp-server (events fork) for nightcrier's tests",
    )
    parser.add_argument(
        "--listen",
        action="append",
        type=parse_listen,
        required=True,
        metavar="PORT:CLUSTER",
        help="one independent server per occurrence; CLUSTER is the name written in payloads (may be empty)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--log", metavar="FILE", help="append JSON lines of everything written to GET streams")
    parser.add_argument("--max-subscriptions-per-session", type=int, default=10)
    parser.add_argument("--max-subscriptions", type=int, default=100)
    parser.add_argument("--stateless", action="store_true", help="imitate the server started with --stateless")
    parser.add_argument("--verbose", action="store_true", help="SDK and uvicorn logs on stderr")
    opts = parser.parse_args(argv)
    ports = [p for p, _ in opts.listen]
    if len(set(ports)) != len(ports):
        parser.error("each --listen needs its own port")

    logging.basicConfig(level=logging.INFO if opts.verbose else logging.WARNING, stream=sys.stderr)
    logging.getLogger("uvicorn.error").addFilter(_DropIncompleteResponse())
    if not opts.verbose:
        # The SDK logs routine disconnects at warning/error; keep stderr for real failures.
        logging.getLogger("mcp").setLevel(logging.CRITICAL)
        logging.getLogger("sse_starlette").setLevel(logging.CRITICAL)

    check_fault_id_vectors()
    configure_sdk_wire_format()
    return asyncio.run(amain(opts))


if __name__ == "__main__":
    sys.exit(main())
