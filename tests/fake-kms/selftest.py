#!/usr/bin/env python3
"""Self-test of fake_kms.py against the protocol reference (fault-event-protocol.md).

Starts the fixture as a real process on loopback ports and drives it over real HTTP with raw
httpx requests (to see status codes, headers and SSE bytes exactly) and once with the SDK's own
client. Exits non-zero on any failure.

    $(bash tests/fake-kms/setup.sh) tests/fake-kms/selftest.py            # the checks
    $(bash tests/fake-kms/setup.sh) tests/fake-kms/selftest.py --bench    # emission rate
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import fake_kms  # noqa: E402

VERSION = "2025-06-18"
POST_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
}
SESSION_ID_RE = re.compile(r"^[A-Z2-7]{26}$")
SUB_ID_RE = re.compile(r"^sub-[0-9a-f]{8}$")
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


class Failure(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise Failure(what)


def eq(got, want, what: str) -> None:
    if got != want:
        raise Failure(f"{what}: got {got!r}, want {want!r}")


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def parse_sse(raw: bytes) -> list[dict]:
    """Events of an SSE body (LF or CRLF), each as the JSON of its data lines."""
    text = raw.decode().replace("\r\n", "\n")
    events = []
    for block in text.split("\n\n"):
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if data:
            events.append(json.loads("\n".join(data)))
    return events


class Fixture:
    """One fake_kms.py process."""

    def __init__(self, listens: list[tuple[int, str]], extra: list[str] = (), log: str | None = None) -> None:
        self.listens = listens
        self.extra = list(extra)
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [sys.executable, str(HERE / "fake_kms.py")]
        if os.environ.get("FAKE_KMS_PROFILE"):  # cProfile output of the fixture, for tuning
            cmd[1:1] = ["-m", "cProfile", "-o", os.environ["FAKE_KMS_PROFILE"]]
        for port, cluster in self.listens:
            cmd += ["--listen", f"{port}:{cluster}"]
        if self.log:
            cmd += ["--log", self.log]
        cmd += self.extra
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.proc.kill()
            raise Failure(f"fixture did not print ready: {line!r} {self.proc.stderr.read()}")

    def stop(self, timeout: float = 15) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise Failure("fixture did not exit within 15 s of SIGTERM")
        self.stderr = self.proc.stderr.read()
        # The fixture writes nothing to stderr unless something went wrong inside it.
        check(self.stderr == "", f"fixture stderr:\n{self.stderr}")
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Mcp:
    """A raw Streamable HTTP client for one session."""

    def __init__(self, http: httpx.AsyncClient, port: int) -> None:
        self.http = http
        self.url = f"http://127.0.0.1:{port}/mcp"
        self.base = f"http://127.0.0.1:{port}"
        self.sid: str | None = None
        self.next_id = 1

    def headers(self, **extra) -> dict:
        h = dict(POST_HEADERS)
        if self.sid:
            h["Mcp-Session-Id"] = self.sid
            h["Mcp-Protocol-Version"] = VERSION
        h.update(extra)
        return h

    async def post(self, message, headers: dict | None = None) -> httpx.Response:
        return await self.http.post(self.url, content=json.dumps(message), headers=headers or self.headers())

    async def initialize(self, version: str = VERSION) -> dict:
        resp = await self.post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "selftest", "version": "1"}},
            },
            headers=dict(POST_HEADERS),
        )
        eq(resp.status_code, 200, "initialize status")
        check(resp.headers["content-type"].startswith("text/event-stream"), "initialize answers with SSE")
        self.sid = resp.headers.get("mcp-session-id")
        check(self.sid is not None and SESSION_ID_RE.match(self.sid), f"go-style session id: {self.sid!r}")
        events = parse_sse(resp.content)
        eq(len(events), 1, "initialize response events")
        notified = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        eq(notified.status_code, 202, "notifications/initialized status")
        eq(notified.content, b"", "notifications/initialized body")
        return events[0]["result"]

    async def request(self, method: str, params: dict | None = None) -> dict:
        self.next_id += 1
        rid = self.next_id
        msg = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        resp = await self.post(msg)
        eq(resp.status_code, 200, f"{method} status")
        events = parse_sse(resp.content)
        check(len(events) >= 1, f"{method}: a response event")
        eq(events[-1].get("id"), rid, f"{method} response id")
        return events[-1]

    async def set_level(self, level: str) -> None:
        reply = await self.request("logging/setLevel", {"level": level})
        eq(reply.get("result"), {}, "setLevel result")

    async def tool(self, name: str, args: dict | None) -> tuple[str, bool]:
        params = {"name": name}
        if args is not None:
            params["arguments"] = args
        reply = await self.request("tools/call", params)
        check("result" in reply, f"{name}: result, got {reply}")
        result = reply["result"]
        eq(len(result["content"]), 1, f"{name}: one content block")
        eq(result["content"][0]["type"], "text", f"{name}: text content")
        check("structuredContent" not in result, f"{name}: no structuredContent")
        is_error = result.get("isError", False)
        if not is_error:
            check("isError" not in result, f"{name}: isError omitted on success")
        return result["content"][0]["text"], is_error

    async def subscribe(self, args: dict | None = None) -> str:
        text, is_error = await self.tool("events_subscribe", {"mode": "faults"} if args is None else args)
        check(not is_error, f"subscribe failed: {text}")
        body = json.loads(text[text.index("{") : text.rindex("}") + 1])
        check(SUB_ID_RE.match(body["subscriptionId"]), f"subscription id {body['subscriptionId']}")
        return body["subscriptionId"]

    async def list_subs(self) -> dict:
        text, is_error = await self.tool("events_list_subscriptions", {})
        check(not is_error, "list failed")
        return json.loads(text[text.index("{") : text.rindex("}") + 1])

    async def delete(self) -> httpx.Response:
        return await self.http.delete(self.url, headers={"Mcp-Session-Id": self.sid, "Mcp-Protocol-Version": VERSION})

    async def control(self, method: str, path: str, body: dict | None = None) -> dict:
        resp = await self.http.request(method, self.base + path, json=body if body is not None else None)
        check(resp.status_code in (200, 202), f"{path}: status {resp.status_code} {resp.text}")
        return resp.json()


class GetStream:
    """The standalone GET stream of a session, read in the background."""

    def __init__(self, mcp: Mcp, sid: str | None = None, headers: dict | None = None) -> None:
        self.mcp = mcp
        self.hdrs = headers or {
            "Accept": "text/event-stream",
            "Mcp-Session-Id": sid or mcp.sid,
            "Mcp-Protocol-Version": VERSION,
        }
        self.status: int | None = None
        self.response_headers = None
        self.body = b""
        self.raw = bytearray()
        self.events: asyncio.Queue = asyncio.Queue()
        self.ended = asyncio.Event()
        self.error: BaseException | None = None
        self._started = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def open(self) -> int:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._started.wait(), 10)
        return self.status

    async def _run(self) -> None:
        buf = b""
        try:
            async with self.mcp.http.stream("GET", self.mcp.url, headers=self.hdrs) as resp:
                self.status = resp.status_code
                self.response_headers = resp.headers
                if resp.status_code != 200:
                    self.body = await resp.aread()
                    self._started.set()
                    return
                self._started.set()
                async for chunk in resp.aiter_raw():
                    self.raw += chunk
                    buf += chunk
                    while b"\n\n" in buf:
                        block, buf = buf.split(b"\n\n", 1)
                        for ev in parse_sse(block + b"\n\n"):
                            self.events.put_nowait(ev)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - record how the stream ended
            self.error = e
        finally:
            self._started.set()
            self.ended.set()

    async def next(self, timeout: float = 5) -> dict:
        return await asyncio.wait_for(self.events.get(), timeout)

    async def expect_none(self, wait: float = 0.3) -> None:
        await asyncio.sleep(wait)
        check(self.events.empty(), f"no notification expected, got {self.events.qsize()}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def wait_state(mcp: Mcp, key: str, want, timeout: float = 5) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = await mcp.control("GET", "/test/state")
        if state[key] == want or time.monotonic() > deadline:
            eq(state[key], want, f"state {key}")
            return state
        await asyncio.sleep(0.02)


async def ready_session(http, port, level="info") -> tuple[Mcp, GetStream, str]:
    """initialize, attach GET, setLevel, subscribe: the client algorithm of the reference §7."""
    mcp = Mcp(http, port)
    await mcp.initialize()
    stream = GetStream(mcp)
    eq(await stream.open(), 200, "GET status")
    await mcp.set_level(level)
    sub = await mcp.subscribe()
    return mcp, stream, sub


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


async def t_fault_id_vectors(ctx) -> None:
    for cluster, ftype, uid, container, expected in fake_kms.FAULT_ID_VECTORS:
        eq(fake_kms.fault_id(cluster, ftype, uid, container), expected, f"faultId {cluster}/{ftype}")


async def t_handshake(ctx) -> None:
    mcp = Mcp(ctx.http, ctx.port_a)
    result = await mcp.initialize()
    eq(result["protocolVersion"], VERSION, "negotiated version")
    eq(
        result["capabilities"],
        {"logging": {}, "prompts": {"listChanged": True}, "tools": {"listChanged": True}},
        "capabilities",
    )
    eq(result["serverInfo"]["name"], "kubernetes-mcp-server", "serverInfo.name")
    eq(result["serverInfo"]["version"], "0.0.0", "serverInfo.version")
    # unknown versions negotiate to 2025-06-18 as in go-sdk; supported ones are echoed
    for asked, want in (("2026-07-28", "2025-06-18"), ("2025-11-25", "2025-11-25"), ("1999-01-01", "2025-06-18")):
        other = Mcp(ctx.http, ctx.port_a)
        eq((await other.initialize(asked))["protocolVersion"], want, f"negotiation of {asked}")
    # session usable; ping with and without params
    eq((await mcp.request("ping"))["result"], {}, "ping")
    eq((await mcp.request("ping", {}))["result"], {}, "ping with params")
    # the POST SSE body: LF endings, `event: message`, no id/retry lines
    resp = await mcp.post({"jsonrpc": "2.0", "id": 99, "method": "ping"})
    eq(resp.content, b'event: message\ndata: {"jsonrpc":"2.0","id":99,"result":{}}\n\n', "POST SSE framing")
    check("mcp-session-id" not in resp.headers, "session id only on the initialize response")
    # tools/list
    tools = (await mcp.request("tools/list"))["result"]["tools"]
    by_name = {t["name"]: t for t in tools}
    for name in ("events_subscribe", "events_unsubscribe", "events_list_subscriptions"):
        check(name in by_name, f"tools/list has {name}")
    eq(by_name["events_subscribe"]["inputSchema"]["properties"]["mode"]["enum"], ["events", "faults"], "mode enum")
    eq(by_name["events_unsubscribe"]["inputSchema"]["required"], ["subscriptionId"], "unsubscribe required")
    eq(by_name["events_subscribe"]["annotations"]["readOnlyHint"], True, "read-only tools")


async def t_http_errors(ctx) -> None:
    mcp = Mcp(ctx.http, ctx.port_a)
    await mcp.initialize()
    url = mcp.url
    ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})

    def is_go_error(resp: httpx.Response, status: int, body: str, what: str) -> None:
        eq(resp.status_code, status, f"{what} status")
        eq(resp.headers.get("content-type"), "text/plain; charset=utf-8", f"{what} content type")
        eq(resp.text, body + "\n", f"{what} body")

    r = await ctx.http.post(url, content=ping, headers={"Accept": "application/json", "Mcp-Session-Id": mcp.sid})
    is_go_error(r, 400, "Accept must contain both 'application/json' and 'text/event-stream'", "POST Accept")
    # */* counts as both; Content-Type is not checked by go-sdk
    r = await ctx.http.post(url, content=ping, headers={"Accept": "*/*", "Content-Type": "text/plain", "Mcp-Session-Id": mcp.sid})
    eq(r.status_code, 200, "Accept */* and any Content-Type")
    r = await ctx.http.get(url, headers={"Accept": "application/json", "Mcp-Session-Id": mcp.sid})
    is_go_error(r, 400, "Accept must contain 'text/event-stream' for GET requests", "GET Accept")
    for method in ("GET", "POST", "DELETE"):
        r = await ctx.http.request(method, url, content=ping if method == "POST" else None, headers={**POST_HEADERS, "Mcp-Session-Id": "Q7ZK2M4TXB3VN5RD6HJ2LCWY4A"})
        is_go_error(r, 404, "session not found", f"{method} unknown session")
        eq(len(r.content), 18, "404 body is 18 bytes")
    r = await ctx.http.get(url, headers={"Accept": "text/event-stream"})
    is_go_error(r, 405, "GET requires an active session", "GET without session")
    r = await ctx.http.delete(url)
    is_go_error(r, 400, "Bad Request: DELETE requires an Mcp-Session-Id header", "DELETE without session")
    r = await ctx.http.put(url, content=ping, headers=POST_HEADERS)
    eq(r.status_code, 405, "PUT status")
    eq(r.headers.get("allow"), "GET, POST, DELETE", "PUT Allow header")
    r = await ctx.http.post(url, content=ping, headers=mcp.headers(**{"Mcp-Protocol-Version": "2026-07-28"}))
    is_go_error(
        r,
        400,
        "Bad Request: Unsupported protocol version (supported versions: 2025-11-25,2025-06-18,2025-03-26,2024-11-05)",
        "bad protocol header",
    )
    r = await mcp.post({"jsonrpc": "2.0", "id": 5, "method": "server/discover", "params": {}})
    is_go_error(r, 400, 'JSON RPC not handled: "server/discover" unsupported', "server/discover")
    r = await mcp.post({"jsonrpc": "2.0", "id": 5, "method": "tools/call"})
    is_go_error(r, 400, 'invalid request: missing required "params"', "tools/call without params")
    r = await ctx.http.post(url, content=b"", headers=mcp.headers())
    is_go_error(r, 400, "POST requires a non-empty body", "empty POST")
    r = await ctx.http.post(url, content=b"[" + ping.encode() + b"]", headers=mcp.headers())
    eq(r.status_code, 400, "batch rejected at 2025-06-18")
    r = await ctx.http.get(url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": mcp.sid, "Last-Event-ID": "x"})
    is_go_error(r, 400, "stream replay unsupported", "GET Last-Event-ID")
    # a request before initialize (no session id) gets go-sdk's JSON-RPC error, ping works
    r = await ctx.http.post(url, content=json.dumps({"jsonrpc": "2.0", "id": 7, "method": "tools/list"}), headers=POST_HEADERS)
    eq(r.status_code, 200, "pre-initialize request status")
    eq(parse_sse(r.content)[0]["error"]["message"], 'method "tools/list" is invalid during session initialization', "pre-init error")
    # tool errors that are JSON-RPC errors in go-sdk
    reply = await mcp.request("tools/call", {"name": "events_subscribe"})
    eq(reply["error"]["code"], 0, "missing arguments code")
    eq(
        reply["error"]["message"],
        "failed to unmarshal tool call arguments: unexpected end of JSON input for tool events_subscribe",
        "missing arguments message",
    )
    reply = await mcp.request("tools/call", {"name": "events_list_subscriptions", "arguments": None})
    check("result" in reply, f"null arguments are an empty map: {reply}")
    reply = await mcp.request("tools/call", {"name": "pods_exec", "arguments": {}})
    eq(reply["error"], {"code": -32602, "message": 'unknown tool "pods_exec"'}, "unknown tool")
    eq((await ctx.http.get(f"http://127.0.0.1:{ctx.port_a}/healthz")).status_code, 200, "healthz")


async def t_subscribe_texts(ctx) -> None:
    mcp = Mcp(ctx.http, ctx.port_a)
    await mcp.initialize()
    stream = GetStream(mcp)
    eq(await stream.open(), 200, "GET")
    eq(stream.response_headers.get("content-type"), "text/event-stream", "GET content type")
    eq(stream.response_headers.get("cache-control"), "no-cache, no-transform", "GET cache-control")
    text, is_error = await mcp.tool("events_subscribe", {"mode": "faults", "namespaces": ["shop", 7], "type": "Warning", "labelSelector": "app=web"})
    check(not is_error, text)
    m = re.fullmatch(
        r'# Event Subscription Created\n\n\{\n  "cluster": "kind-dev",\n  "createdAt": "([^"]+)",\n'
        r'  "filters": \{\n    "labelSelector": "app=web",\n    "namespaces": \[\n      "shop"\n    \],\n'
        r'    "type": "Warning"\n  \},\n  "mode": "faults",\n  "status": "active",\n'
        r'  "subscriptionId": "(sub-[0-9a-f]{8})"\n\}\n\nYou will receive event notifications via the logging/message protocol\.',
        text,
    )
    check(m is not None, f"subscribe text format:\n{text}")
    check(TIME_RE.match(m.group(1)), f"createdAt RFC 3339: {m.group(1)}")
    sub = m.group(2)
    # default mode is events; bad mode / type errors with the Go texts
    text, is_error = await mcp.tool("events_subscribe", {})
    check(not is_error and '"mode": "events"' in text and '"filters": {}' in text, f"default events mode: {text}")
    cases = [
        ({"mode": "logs"}, "failed to create subscription: invalid mode: must be 'events' or 'faults'"),
        ({"mode": "faults", "type": "Normal"}, "invalid subscription filters: faults mode cannot filter for Normal events"),
        ({"mode": "faults", "type": "Info"}, "invalid subscription filters: invalid type: must be 'Normal', 'Warning', or empty"),
    ]
    for args, want in cases:
        text, is_error = await mcp.tool("events_subscribe", args)
        check(is_error, f"{args} must fail")
        eq(text, want, f"error text for {args}")
    text, is_error = await mcp.tool("events_subscribe", {"mode": "faults", "labelSelector": "app in (web"})
    check(is_error and text.startswith("invalid subscription filters: invalid label selector: "), f"bad selector: {text}")
    # list
    text, _ = await mcp.tool("events_list_subscriptions", {})
    check(text.startswith("# Active Subscriptions\n\n{\n  \"subscriptions\": [\n    {\n      \"cluster\": \"kind-dev\",\n"), f"list text:\n{text}")
    listing = json.loads(text[text.index("{") :])
    eq(listing["total"], 2, "list total")
    eq(list(listing["subscriptions"][0].keys()), ["cluster", "createdAt", "degraded", "filters", "mode", "subscriptionId"], "list keys")
    eq(listing["subscriptions"][0]["degraded"], False, "degraded")
    eq(listing["subscriptions"][0]["subscriptionId"], sub, "list order")
    # another session sees none of it and cannot cancel it
    other = Mcp(ctx.http, ctx.port_a)
    await other.initialize()
    eq(await other.list_subs(), {"subscriptions": [], "total": 0}, "other session's list")
    text, is_error = await other.tool("events_list_subscriptions", {})
    eq(text, '# Active Subscriptions\n\n{\n  "subscriptions": [],\n  "total": 0\n}', "empty list text")
    text, is_error = await other.tool("events_unsubscribe", {"subscriptionId": sub})
    eq((text, is_error), ("failed to cancel subscription: subscription not found", True), "foreign unsubscribe")
    # unsubscribe texts; not idempotent
    text, is_error = await mcp.tool("events_unsubscribe", {"subscriptionId": sub})
    eq(
        text,
        f'# Subscription Cancelled\n\n{{\n  "cancelled": true,\n  "status": "success",\n  "subscriptionId": "{sub}"\n}}',
        "unsubscribe text",
    )
    text, is_error = await mcp.tool("events_unsubscribe", {"subscriptionId": sub})
    eq((text, is_error), ("failed to cancel subscription: subscription not found", True), "repeat unsubscribe")
    for args in ({}, {"subscriptionId": ""}, {"subscriptionId": 5}):
        eq(await mcp.tool("events_unsubscribe", args), ("subscriptionId is required", True), f"unsubscribe {args}")
    await stream.close()


async def t_set_level_gating_and_delivery(ctx) -> None:
    await ctx.control_a("POST", "/test/cancel")
    mcp = Mcp(ctx.http, ctx.port_a)
    await mcp.initialize()
    stream = GetStream(mcp)
    eq(await stream.open(), 200, "GET")
    sub = await mcp.subscribe()
    # no setLevel: nothing is sent and the subscription stays
    r = await mcp.control("POST", "/test/emit", {"count": 3})
    eq(r["sent"], 0, "sent before setLevel")
    eq(r["notSent"], {"below-log-level": 3}, "dropped before setLevel")
    await stream.expect_none()
    eq((await mcp.list_subs())["total"], 1, "subscription kept without setLevel")
    # an unknown level ranks as debug (go-sdk), so faults pass
    await mcp.set_level("verbose")
    eq((await mcp.control("POST", "/test/emit", {"count": 1}))["sent"], 1, "sent at an unknown level")
    await stream.next()
    # level above warning: faults (warning) are dropped
    await mcp.set_level("error")
    eq((await mcp.control("POST", "/test/emit", {"count": 2}))["sent"], 0, "sent at level error")
    await stream.expect_none()
    # warning passes
    await mcp.set_level("warning")
    before = (await mcp.control("GET", "/test/state"))["sent"]
    r = await mcp.control("POST", "/test/emit", {"count": 5})
    eq(r["sent"], 5, "sent at level warning")
    eq(len(set(r["faultIds"])), 5, "unique faultIds")
    got = [await stream.next() for _ in range(5)]
    for msg, fid in zip(got, r["faultIds"]):
        eq(msg["method"], "notifications/message", "method")
        check("id" not in msg, "notification has no id")
        params = msg["params"]
        eq((params["level"], params["logger"]), ("warning", "kubernetes/faults"), "level/logger")
        data = params["data"]
        eq(
            list(data.keys()),
            ["subscriptionId", "cluster", "faultId", "faultType", "severity", "resource", "context", "timestamp"],
            "payload keys",
        )
        eq(data["subscriptionId"], sub, "subscriptionId")
        eq(data["cluster"], "kind-dev", "cluster")
        eq(data["faultId"], fid, "faultId order")
        eq((data["faultType"], data["severity"]), ("CrashLoop", "critical"), "type/severity")
        res = data["resource"]
        eq(list(res.keys()), ["apiVersion", "kind", "name", "namespace", "uid"], "resource keys")
        eq((res["apiVersion"], res["kind"]), ("v1", "Pod"), "resource kind")
        eq(fake_kms.fault_id("kind-dev", "CrashLoop", res["uid"], "app"), fid, "faultId from cluster:type:uid:container")
        check(TIME_RE.match(data["timestamp"]), f"timestamp {data['timestamp']}")
    # the GET stream's bytes: LF only, no comments, no id/retry lines
    raw = bytes(stream.raw)
    check(b"\r" not in raw, "LF line endings on the GET stream")
    for line in raw.split(b"\n"):
        check(line == b"" or line.startswith(b"event: message") or line.startswith(b"data: "), f"unexpected SSE line {line[:60]!r}")
    state = await mcp.control("GET", "/test/state")
    eq(state["sent"] - before, 5, "state.sent")
    sent = (await mcp.control("GET", "/test/sent"))["sent"]
    eq([s["faultId"] for s in sent[-5:]], r["faultIds"], "/test/sent order")
    eq({s["session"] for s in sent[-5:]}, {mcp.sid}, "/test/sent session")
    # node faults carry no namespace; every known type maps kind/apiVersion
    await mcp.set_level("info")
    for ftype, kind, api, severity in (
        ("NodeUnhealthy", "Node", "v1", "critical"),
        ("DeploymentFailure", "Deployment", "apps/v1", "critical"),
        ("JobFailure", "Job", "batch/v1", "critical"),
        ("PodCrash", "Pod", "v1", "warning"),
        ("SomethingNew", "Pod", "v1", "warning"),
    ):
        r = await mcp.control("POST", "/test/emit", {"count": 1, "faultType": ftype})
        eq(r["sent"], 1, f"{ftype} sent")
        data = (await stream.next())["params"]["data"]
        eq((data["faultType"], data["resource"]["kind"], data["resource"]["apiVersion"], data["severity"]), (ftype, kind, api, severity), ftype)
        eq("namespace" in data["resource"], kind != "Node", f"{ftype} namespace presence")
    # two subscriptions on one session: one copy each, same faultId
    sub2 = await mcp.subscribe()
    r = await mcp.control("POST", "/test/emit", {"count": 1})
    eq(r["sent"], 2, "one copy per subscription")
    pair = [(await stream.next())["params"]["data"] for _ in range(2)]
    eq({d["subscriptionId"] for d in pair}, {sub, sub2}, "both subscriptions")
    eq({d["faultId"] for d in pair}, {r["faultIds"][0]}, "same faultId")
    # rate-limited emission
    t0 = time.monotonic()
    r = await mcp.control("POST", "/test/emit", {"count": 10, "rate": 50})
    elapsed = time.monotonic() - t0
    eq(r["sent"], 20, "rate-limited sent")
    check(elapsed >= 0.17, f"rate 50/s for 10 faults took {elapsed:.3f}s")
    for _ in range(20):
        await stream.next()
    # wait=false answers at once
    r = await mcp.control("POST", "/test/emit", {"count": 3, "wait": False})
    eq((r["sent"], len(r["faultIds"])), (None, 3), "background emit")
    for _ in range(6):
        await stream.next()
    await stream.close()
    ctx.log_expect_faults += 1 + 5 + 5 + 2 + 20 + 6


async def t_detached_send_cancels(ctx) -> None:
    await ctx.control_a("POST", "/test/cancel")
    # GET never opened
    mcp = Mcp(ctx.http, ctx.port_a)
    await mcp.initialize()
    await mcp.set_level("info")
    await mcp.subscribe()
    state0 = await mcp.control("GET", "/test/state")
    r = await mcp.control("POST", "/test/emit", {"count": 2})
    eq(r["sent"], 0, "nothing sent without a GET")
    eq((await mcp.list_subs())["total"], 0, "subscription cancelled by the failed send")
    state = await mcp.control("GET", "/test/state")
    eq(state["cancelledOnSend"] - state0["cancelledOnSend"], 1, "cancelledOnSend")
    eq(state["subscriptions"], 0, "no subscriptions left")
    # GET opened, then closed by the client
    mcp2, stream, _ = await ready_session(ctx.http, ctx.port_a)
    await wait_state(mcp2, "attachedStreams", 1)
    await stream.close()
    await wait_state(mcp2, "attachedStreams", 0)
    r = await mcp2.control("POST", "/test/emit", {"count": 1})
    eq((r["sent"], r["notSent"]), (0, {"stream-not-connected": 1}), "send to a detached session")
    eq((await mcp2.list_subs())["total"], 0, "cancelled after the GET dropped")
    eq((await mcp2.request("ping"))["result"], {}, "session stays alive")
    # re-attach and resubscribe: delivery works again
    stream = GetStream(mcp2)
    eq(await stream.open(), 200, "re-GET")
    await mcp2.subscribe()
    eq((await mcp2.control("POST", "/test/emit", {"count": 1}))["sent"], 1, "delivery after resubscribe")
    await stream.next()
    await stream.close()
    ctx.log_expect_faults += 1


async def t_second_get_and_drop(ctx) -> None:
    await ctx.control_a("POST", "/test/cancel")
    mcp, stream, sub = await ready_session(ctx.http, ctx.port_a)
    second = GetStream(mcp)
    eq(await second.open(), 409, "second GET")
    eq(second.body, b"stream ID conflicts with ongoing stream\n", "409 body")
    r = await mcp.control("POST", "/test/drop-streams")
    check(r["dropped"] >= 1, "drop-streams dropped the GET")
    await asyncio.wait_for(stream.ended.wait(), 5)
    check(stream.error is not None, "the dropped GET ended abruptly (not a clean end of body)")
    eq((await mcp.control("GET", "/test/state"))["attachedStreams"], 0, "no attached streams")
    eq((await mcp.request("ping"))["result"], {}, "session alive after drop")
    eq([s["subscriptionId"] for s in (await mcp.list_subs())["subscriptions"]], [sub], "subscription survives a drop with no fault")
    again = GetStream(mcp)
    eq(await again.open(), 200, "re-GET after drop")
    eq((await mcp.control("POST", "/test/emit", {"count": 1}))["sent"], 1, "delivery on the new GET")
    eq((await again.next())["params"]["data"]["subscriptionId"], sub, "same subscription")
    await again.close()
    ctx.log_expect_faults += 1


async def t_drop_mid_emission_exact(ctx) -> None:
    """A GET cut in the middle of a burst: /test/sent must match what the client got, exactly."""
    await ctx.control_a("POST", "/test/cancel")
    await ctx.control_a("POST", "/test/reset-stats")
    mcp, stream, sub = await ready_session(ctx.http, ctx.port_a)
    emit = asyncio.create_task(mcp.control("POST", "/test/emit", {"count": 3000, "rate": 0}))
    while stream.events.qsize() < 200:
        await asyncio.sleep(0.001)
    await mcp.control("POST", "/test/drop-streams")
    result = await asyncio.wait_for(emit, 30)
    await asyncio.wait_for(stream.ended.wait(), 5)
    received = []
    while not stream.events.empty():
        received.append(stream.events.get_nowait()["params"]["data"]["faultId"])
    sent = [s["faultId"] for s in (await mcp.control("GET", "/test/sent"))["sent"]]
    check(0 < len(received) < 3000, f"the drop landed mid-burst ({len(received)} received)")
    eq(result["sent"], len(sent), "emit's sent matches /test/sent")
    eq(received, sent, "the client received exactly what the fixture counts as sent, in order")
    eq(sum(result["notSent"].values()) + result["sent"], 3000, "every copy accounted for")
    check(set(result["notSent"]) <= {"stream-not-connected", "lost-on-detach", "subscription-ended"}, f"reasons {result['notSent']}")
    eq((await mcp.list_subs())["total"], 0, "the first send after the drop cancelled the subscription")
    ctx.log_expect_faults += len(sent)


async def t_cancel_suberror_malformed(ctx) -> None:
    await ctx.control_a("POST", "/test/cancel")
    mcp, stream, sub = await ready_session(ctx.http, ctx.port_a)
    # subscription_error
    r = await mcp.control("POST", "/test/subscription-error")
    eq(r["sent"], 1, "subscription_error sent")
    msg = await stream.next()
    eq((msg["params"]["level"], msg["params"]["logger"]), ("warning", "kubernetes/subscription_error"), "subscription_error level/logger")
    eq(
        msg["params"]["data"],
        {"subscriptionId": sub, "cluster": "kind-dev", "error": "Watch connection failed after maximum retry attempts", "degraded": True},
        "subscription_error data",
    )
    eq((await mcp.list_subs())["subscriptions"][0]["degraded"], True, "degraded in list")
    eq((await mcp.control("POST", "/test/subscription-error"))["sent"], 0, "reported once")
    # malformed
    for kind, check_data in (
        ("string-data", lambda d: isinstance(d, str)),
        ("not-an-object", lambda d: isinstance(d, list)),
        ("missing-fault-type", lambda d: isinstance(d, dict) and "faultType" not in d and "faultId" in d),
        ("wrong-types", lambda d: isinstance(d, dict) and isinstance(d["faultId"], int)),
        ("bad-json-field", lambda d: isinstance(d, dict) and d["context"].startswith("[") and d["faultType"] == "CrashLoop"),
    ):
        r = await mcp.control("POST", "/test/malformed", {"kind": kind, "count": 2})
        eq(r["sent"], 2, f"malformed {kind} sent")
        for item in r["messages"]:
            msg = await stream.next()
            eq(msg["params"]["logger"], "kubernetes/faults", f"{kind} logger")
            eq(msg["params"]["data"], item["data"], f"{kind} data as reported")
            check(check_data(msg["params"]["data"]), f"{kind} shape: {msg['params']['data']!r}")
    resp = await ctx.http.post(f"{mcp.base}/test/malformed", json={"kind": "nope"})
    eq(resp.status_code, 400, "unknown malformed kind")
    # cancel: silent, nothing sent, list empty
    r = await mcp.control("POST", "/test/cancel")
    eq(r["cancelled"], 1, "cancelled")
    await stream.expect_none()
    eq((await mcp.list_subs())["total"], 0, "list after cancel")
    eq((await mcp.control("POST", "/test/emit", {"count": 1}))["sent"], 0, "emit with no subscription")
    await stream.close()


async def t_limits(ctx) -> None:
    await ctx.control_a("POST", "/test/cancel")
    mcp = Mcp(ctx.http, ctx.port_a)
    await mcp.initialize()
    for _ in range(10):
        await mcp.subscribe()
    eq(
        await mcp.tool("events_subscribe", {"mode": "faults"}),
        ("failed to create subscription: session has reached maximum subscriptions (10)", True),
        "per-session limit",
    )
    await ctx.control_a("POST", "/test/cancel")
    # global limit: 10 sessions x 10, the 101st fails
    sessions = [Mcp(ctx.http, ctx.port_a) for _ in range(10)]
    await asyncio.gather(*(s.initialize() for s in sessions))
    for s in sessions:
        for _ in range(10):
            await s.subscribe()
    extra = Mcp(ctx.http, ctx.port_a)
    await extra.initialize()
    eq(
        await extra.tool("events_subscribe", {"mode": "faults"}),
        ("failed to create subscription: server has reached maximum subscriptions (100)", True),
        "global limit",
    )
    state = await extra.control("GET", "/test/state")
    eq(state["subscriptions"], 100, "100 active")
    check(state["maxConcurrentSubscriptions"] >= 100, "high-water mark")
    await ctx.control_a("POST", "/test/cancel")
    state = await extra.control("POST", "/test/reset-stats")
    eq((state["maxConcurrentSubscriptions"], state["sent"], state["subscribeCalls"]), (0, 0, 0), "reset-stats")
    eq((await extra.control("GET", "/test/sent"))["sent"], [], "sent list reset")


async def t_subscribe_modes(ctx) -> None:
    await ctx.control_a("POST", "/test/cancel")
    mcp = Mcp(ctx.http, ctx.port_a)
    await mcp.initialize()
    await mcp.control("POST", "/test/subscribe-mode", {"mode": "error"})
    text, is_error = await mcp.tool("events_subscribe", {"mode": "faults"})
    check(is_error and text.startswith("failed to create subscription: failed to start watcher: "), f"error mode: {text}")
    await mcp.control("POST", "/test/subscribe-mode", {"mode": "error", "text": "failed to create subscription: boom"})
    eq(await mcp.tool("events_subscribe", {"mode": "faults"}), ("failed to create subscription: boom", True), "custom error text")
    eq((await mcp.list_subs())["total"], 0, "no subscription after errors")
    await mcp.control("POST", "/test/subscribe-mode", {"mode": "hang"})
    hung = asyncio.create_task(mcp.subscribe())
    listing = asyncio.create_task(mcp.list_subs())
    await asyncio.sleep(0.5)
    check(not hung.done(), "subscribe hangs")
    check(not listing.done(), "list blocks behind the hung subscribe (manager lock)")
    state = await mcp.control("GET", "/test/state")
    eq(state["pendingSubscribes"], 1, "one pending subscribe")
    await mcp.control("POST", "/test/subscribe-mode", {"mode": "ok"})
    sub = await asyncio.wait_for(hung, 5)
    listing = await asyncio.wait_for(listing, 5)
    eq([s["subscriptionId"] for s in listing["subscriptions"]], [sub], "list after release")
    # a client that gives up on a hung subscribe (notifications/cancelled, then drops the POST)
    # leaves a usable session, as in Go
    await mcp.control("POST", "/test/subscribe-mode", {"mode": "hang"})
    abandoned = asyncio.create_task(
        mcp.post({"jsonrpc": "2.0", "id": 777, "method": "tools/call", "params": {"name": "events_subscribe", "arguments": {"mode": "faults"}}})
    )
    await asyncio.sleep(0.3)
    r = await mcp.post({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 777, "reason": "timeout"}})
    eq(r.status_code, 202, "notifications/cancelled")
    await asyncio.sleep(0.3)
    check(not abandoned.done(), "go-sdk does not answer a cancelled request whose handler still runs")
    abandoned.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await abandoned
    await mcp.control("POST", "/test/subscribe-mode", {"mode": "ok"})
    eq((await mcp.request("ping"))["result"], {}, "session alive after an abandoned hung subscribe")
    eq((await mcp.list_subs())["total"], 2, "the abandoned subscribe completed when released")
    # a slow informer sync: the call succeeds after the delay
    await mcp.control("POST", "/test/subscribe-mode", {"mode": "ok", "delaySeconds": 0.5})
    t0 = time.monotonic()
    await mcp.subscribe()
    check(time.monotonic() - t0 >= 0.5, "subscribe took delaySeconds")
    await mcp.control("POST", "/test/subscribe-mode", {"mode": "ok"})
    await ctx.control_a("POST", "/test/cancel")


async def t_delete(ctx) -> None:
    await ctx.control_a("POST", "/test/cancel")
    mcp, stream, _ = await ready_session(ctx.http, ctx.port_a)
    r = await mcp.delete()
    eq((r.status_code, r.content), (204, b""), "DELETE")
    await asyncio.wait_for(stream.ended.wait(), 5)
    check(stream.error is None, f"GET ends cleanly on DELETE: {stream.error!r}")
    r = await mcp.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    eq((r.status_code, r.text), (404, "session not found\n"), "POST after DELETE")
    eq((await mcp.delete()).status_code, 404, "second DELETE")
    # the deleted session's subscription is gone at the latest with the next fault (send fails)
    r = await mcp.control("POST", "/test/emit", {"count": 1})
    eq(r["sent"], 0, "nothing sent to a deleted session")
    eq((await mcp.control("GET", "/test/state"))["subscriptions"], 0, "subscription of the deleted session cancelled")


async def t_listeners_isolated(ctx) -> None:
    a = Mcp(ctx.http, ctx.port_a)
    await a.initialize()
    r = await ctx.http.post(
        f"http://127.0.0.1:{ctx.port_b}/mcp",
        content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
        headers={**POST_HEADERS, "Mcp-Session-Id": a.sid},
    )
    eq(r.status_code, 404, "a session of one listener is unknown to another")
    # the `PORT:` listener writes cluster "" and hashes it as ""
    mcp, stream, _ = await ready_session(ctx.http, ctx.port_b)
    r = await mcp.control("POST", "/test/emit", {"count": 1})
    data = (await stream.next())["params"]["data"]
    eq(data["cluster"], "", "in-cluster style empty cluster")
    eq(fake_kms.fault_id("", "CrashLoop", data["resource"]["uid"], "app"), r["faultIds"][0], "faultId with empty cluster")
    eq((await mcp.control("GET", "/test/state"))["cluster"], "", "state cluster")
    await stream.close()
    ctx.log_expect_faults += 1


async def t_sdk_client(ctx) -> None:
    """The SDK's own client: handshake, setLevel, subscribe and a fault through its log callback."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    received: asyncio.Queue = asyncio.Queue()

    async def on_log(params) -> None:
        await received.put(params)

    async with streamablehttp_client(f"http://127.0.0.1:{ctx.port_c}/mcp") as (read, write, _):
        async with ClientSession(read, write, logging_callback=on_log) as session:
            init = await session.initialize()
            check(init.capabilities.logging is not None, "SDK client sees the logging capability")
            await session.set_logging_level("info")
            # the SDK client opens its GET after initialized; make sure it is attached
            probe = Mcp(ctx.http, ctx.port_c)
            await wait_state(probe, "attachedStreams", 1)
            result = await session.call_tool("events_subscribe", {"mode": "faults"})
            check(not result.isError, "SDK subscribe")
            r = await probe.control("POST", "/test/emit", {"count": 3})
            eq(r["sent"], 3, "SDK client: sent")
            for fid in r["faultIds"]:
                params = await asyncio.wait_for(received.get(), 5)
                eq((params.logger, params.level, params.data["faultId"]), ("kubernetes/faults", "warning", fid), "SDK client fault")
    ctx.log_expect_faults += 3


async def t_restart_404(ctx) -> None:
    """Stopping the process and starting a new one on the same ports: old sessions get 404."""
    mcp, stream, _ = await ready_session(ctx.http, ctx.port_a)
    t0 = time.monotonic()
    rc = ctx.fixture.stop()
    eq(rc, 0, "exit status on SIGTERM")
    check(time.monotonic() - t0 < 5, f"SIGTERM exit took {time.monotonic() - t0:.1f}s")
    await asyncio.wait_for(stream.ended.wait(), 5)
    ctx.fixture.start()
    r = await mcp.post({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    eq((r.status_code, r.text), (404, "session not found\n"), "POST with a pre-restart session")
    again = GetStream(mcp)
    eq(await again.open(), 404, "GET with a pre-restart session")
    fresh, stream2, _ = await ready_session(ctx.http, ctx.port_a)
    eq((await fresh.control("POST", "/test/emit", {"count": 1}))["sent"], 1, "new session after restart works")
    await stream2.next()
    await stream2.close()
    ctx.log_expect_faults += 1


async def t_log_file(ctx) -> None:
    ctx.fixture.stop()
    lines = [json.loads(line) for line in Path(ctx.log).read_text().splitlines()]
    faults = [r for r in lines if r["type"] == "fault"]
    eq(len(faults), ctx.log_expect_faults, "fault lines in --log")
    check(all(set(r) >= {"faultId", "subscriptionId", "session", "time", "cluster", "port"} for r in faults), "log fields")
    eq(len({(r["faultId"], r["subscriptionId"]) for r in faults}), len(faults), "no duplicate log lines")
    check(any(r["type"] == "subscription_error" for r in lines), "subscription_error logged")
    check(any(r["type"] == "malformed" for r in lines), "malformed logged")
    check(any(r["type"] == "subscription_ended" and r["reason"].startswith("send-failed") for r in lines), "cancel on failed send logged")


async def t_stateless(ctx) -> None:
    port = free_ports(1)[0]
    fixture = Fixture([(port, "kind-dev")], ["--stateless"])
    fixture.start()
    try:
        mcp = Mcp(ctx.http, port)
        result = await mcp.initialize()
        eq(result["capabilities"]["tools"], {"listChanged": False}, "stateless listChanged")
        stream = GetStream(mcp)
        eq(await stream.open(), 405, "GET in stateless mode")
        eq(stream.body, b"GET requires an active session\n", "stateless GET body")
        await mcp.set_level("info")
        await mcp.subscribe()  # appears to succeed
        r = await mcp.control("POST", "/test/emit", {"count": 2})
        eq(r["sent"], 0, "nothing is ever delivered in stateless mode")
        eq((await mcp.control("GET", "/test/state"))["subscriptions"], 0, "stateless subscription cancelled by the first fault")
    finally:
        eq(fixture.stop(), 0, "stateless fixture exit")


async def t_small_limits(ctx) -> None:
    port = free_ports(1)[0]
    fixture = Fixture([(port, "x")], ["--max-subscriptions-per-session", "2", "--max-subscriptions", "3"])
    fixture.start()
    try:
        a, b = Mcp(ctx.http, port), Mcp(ctx.http, port)
        await a.initialize()
        await b.initialize()
        await a.subscribe()
        await a.subscribe()
        eq(await a.tool("events_subscribe", {"mode": "faults"}), ("failed to create subscription: session has reached maximum subscriptions (2)", True), "--max-subscriptions-per-session")
        await b.subscribe()
        eq(await b.tool("events_subscribe", {"mode": "faults"}), ("failed to create subscription: server has reached maximum subscriptions (3)", True), "--max-subscriptions")
    finally:
        fixture.stop()


class Ctx:
    pass


async def run_checks() -> int:
    ctx = Ctx()
    ctx.port_a, ctx.port_b, ctx.port_c = free_ports(3)
    tmp = tempfile.mkdtemp(prefix="fake-kms-selftest-")
    ctx.log = os.path.join(tmp, "events.jsonl")
    ctx.log_expect_faults = 0
    ctx.fixture = Fixture([(ctx.port_a, "kind-dev"), (ctx.port_b, ""), (ctx.port_c, "sdk")], log=ctx.log)
    ctx.fixture.start()
    timeout = httpx.Timeout(10.0, read=None)
    failures = 0
    passed = 0
    async with httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=500)) as http:
        ctx.http = http

        async def control_a(method, path, body=None):
            return await Mcp(http, ctx.port_a).control(method, path, body)

        ctx.control_a = control_a
        checks = [
            t_fault_id_vectors,
            t_handshake,
            t_http_errors,
            t_subscribe_texts,
            t_set_level_gating_and_delivery,
            t_detached_send_cancels,
            t_second_get_and_drop,
            t_drop_mid_emission_exact,
            t_cancel_suberror_malformed,
            t_limits,
            t_subscribe_modes,
            t_delete,
            t_listeners_isolated,
            t_sdk_client,
            t_restart_404,
            t_log_file,
            t_stateless,
            t_small_limits,
        ]
        try:
            for fn in checks:
                name = fn.__name__[2:]
                t0 = time.monotonic()
                try:
                    await asyncio.wait_for(fn(ctx), 60)
                    passed += 1
                    print(f"ok   {name} ({time.monotonic() - t0:.1f}s)")
                except Exception as e:  # noqa: BLE001 - report and go on
                    failures += 1
                    print(f"FAIL {name}: {e}")
                    if not isinstance(e, Failure):
                        traceback.print_exc()
        finally:
            ctx.fixture.kill()
    print(f"selftest: {passed} passed, {failures} failed")
    return 1 if failures else 0


# ---------------------------------------------------------------------------------------------
# Benchmark: emission rate across many listeners, every fault read back by a client
# ---------------------------------------------------------------------------------------------


async def raw_get_counter(port: int, sid: str, want: int, counts: list[int], i: int) -> None:
    """Reads a GET stream over a bare socket and counts events: a consumer far cheaper than httpx,
    so the measurement is the fixture's rate rather than the client's."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
            f"Mcp-Session-Id: {sid}\r\nMcp-Protocol-Version: {VERSION}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), f"bench GET: {head[:40]!r}")
    counts[i] = -1  # attached
    seen = 0
    tail = b""
    while seen < want:
        chunk = await reader.read(1 << 16)
        if not chunk:
            break
        data = tail + chunk
        seen += data.count(b"event: message")
        tail = data[-13:]
        seen -= tail.count(b"event: message")
        counts[i] = seen
    counts[i] = seen
    writer.close()


async def run_bench(listeners: int, per_listener: int, rate: float) -> int:
    ports = free_ports(listeners)
    fixture = Fixture([(p, f"cluster-{i:02d}") for i, p in enumerate(ports)])
    fixture.start()
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None), limits=httpx.Limits(max_connections=500)) as http:
            sessions = []
            for p in ports:
                m = Mcp(http, p)
                await m.initialize()
                await m.set_level("info")
                sessions.append(m)
            counts = [0] * listeners
            readers = [
                asyncio.create_task(raw_get_counter(port, m.sid, per_listener, counts, i))
                for i, (port, m) in enumerate(zip(ports, sessions, strict=True))
            ]
            while any(c == 0 for c in counts):
                await asyncio.sleep(0.01)
            for m in sessions:
                await m.subscribe()
            t0 = time.monotonic()
            results = await asyncio.gather(
                *(m.control("POST", "/test/emit", {"count": per_listener, "rate": rate, "timeout": 600}) for m in sessions)
            )
            t_sent = time.monotonic() - t0
            await asyncio.wait_for(asyncio.gather(*readers), 600)
            t_recv = time.monotonic() - t0
            total_sent = sum(r["sent"] for r in results)
            received = sum(counts)
            total = listeners * per_listener
            print(
                f"bench: {listeners} listeners x {per_listener} faults = {total} (rate {rate or 'max'} per listener); "
                f"sent {total_sent}, received {received}; sent in {t_sent:.2f}s ({total_sent / t_sent:.0f}/s), "
                f"all received after {t_recv:.2f}s ({received / t_recv:.0f}/s)"
            )
            return 0 if total_sent == total == received else 1
    finally:
        fixture.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", action="store_true", help="measure the emission rate instead")
    parser.add_argument("--listeners", type=int, default=20)
    parser.add_argument("--faults", type=int, default=2000, help="faults per listener (bench)")
    parser.add_argument("--rate", type=float, default=0, help="faults/s per listener (bench; 0 = max)")
    opts = parser.parse_args()
    if opts.bench:
        return asyncio.run(run_bench(opts.listeners, opts.faults, opts.rate))
    return asyncio.run(run_checks())


if __name__ == "__main__":
    sys.exit(main())
