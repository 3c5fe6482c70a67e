"""Shared test helpers: the real control plane's address and tokens (from test/python/python-client.test.ts),
admin calls against it, and a STAND-IN HTTP proxy that sits between a client and the real control plane and
can forward, answer 503, or hold an answer (to kill a client mid-replay)."""

from __future__ import annotations

import http.client
import http.server
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse
import urllib.request
from typing import Any, Callable

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
URL = os.environ.get("ONBEHALF_TEST_URL", "")
ADMIN = os.environ.get("ONBEHALF_TEST_ADMIN", "")
TOKENS: dict[str, str] = json.loads(os.environ.get("ONBEHALF_TEST_TOKENS") or "{}")
APPROVAL_TTL = float(os.environ.get("ONBEHALF_TEST_APPROVAL_TTL") or 4)

needs_server = unittest.skipUnless(URL and ADMIN and TOKENS, "run through npm test (test/python/python-client.test.ts)")

# The real AutoGen 0.7.5 (../shared/vendor/python-autogen): test/python/python-client.test.ts runs the AutoGen tests in a
# process of their own, with its PYTHONPATH and ONBEHALF_TEST_REAL_AUTOGEN=1; the main run skips them.
REAL_AUTOGEN = os.environ.get("ONBEHALF_TEST_REAL_AUTOGEN") == "1"
needs_autogen = unittest.skipUnless(
    REAL_AUTOGEN, "needs the real AutoGen 0.7.5: test/python/python-client.test.ts runs it with ONBEHALF_TEST_REAL_AUTOGEN=1"
)
if REAL_AUTOGEN:  # the scripted model warns on every turn that it counts tokens of strings only
    logging.getLogger("autogen_core.events").setLevel(logging.ERROR)
# The control plane of examples/autogen/onbehalf.yaml, and a token for alice there (test_example_team.py).
EXAMPLE_URL = os.environ.get("ONBEHALF_TEST_EXAMPLE_URL", "")
EXAMPLE_TOKEN = os.environ.get("ONBEHALF_TEST_EXAMPLE_TOKEN", "")
W3C_TRACE_ID = re.compile(r"^(?!0{32}$)[0-9a-f]{32}$")


def token(user: str) -> str:
    return TOKENS[user]


def call(method: str, path: str, *, bearer: str | None = None, body: Any = None, base: str | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request((base or URL) + path, data=data, method=method)
    if bearer:
        req.add_header("authorization", f"Bearer {bearer}")
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as res:
            raw = res.read()
            return res.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw else None


def audit(**filters: Any) -> list[dict[str, Any]]:
    """Audit records (admin), newest last, following cursors."""
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = dict(filters, limit=1000)
        if cursor:
            q["cursor"] = cursor
        status, body = call("GET", "/v1/audit?" + urllib.parse.urlencode(q), bearer=ADMIN)
        assert status == 200, body
        records.extend(body["records"])
        cursor = body.get("next_cursor")
        if not cursor:
            return records


def run_records(
    trace_id: str, count: int, *, kind: str | tuple[str, ...] | None = None, timeout: float = 10.0, **filters: Any
) -> list[dict[str, Any]]:
    """The audit records of one run (``GET /v1/audit?trace=<trace_id>``) of a ``kind`` (``attempt``, ``spooled``,
    ``outcome``, a tuple of them; ``None``: all), oldest first, once there are at least ``count`` of them."""
    kinds = (kind,) if isinstance(kind, str) else kind

    def of_run(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        assert all(r.get("trace_id") == trace_id for r in records), "the audit's trace filter let another run through"
        mine = (r for r in records if kinds is None or r.get("kind") in kinds)
        return sorted(mine, key=lambda r: r["seq"])

    try:
        return of_run(audit_until(lambda rs: len(of_run(rs)) >= count, timeout, trace=trace_id, **filters))
    except AssertionError:
        seen = [(r["kind"], r["tool"], r["decision"], r["reason_code"], r.get("trace_id")) for r in audit(**filters)]
        raise AssertionError(f"fewer than {count} records of trace {trace_id} ({filters}); the last ones: {seen[-8:]}") from None


def audit_until(predicate: Callable[[list[dict[str, Any]]], Any], timeout: float = 10.0, **filters: Any) -> list[dict[str, Any]]:
    """Audit records once ``predicate(records)`` holds (the audit is written a moment after the answer)."""
    found: list[list[dict[str, Any]]] = []

    def check() -> bool:
        found[:] = [audit(**filters)]
        return bool(predicate(found[0]))

    wait_for(check, timeout, what=f"audit records matching {filters}")
    return found[0]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def free_port() -> int:
    """A port nothing listens on (bound and released at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempDir:
    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="onbehalf-py-")

    def join(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class ControlPlaneStandIn:
    """STAND-IN (not the control plane): an HTTP proxy in front of the real one.

    ``mode``: ``"forward"`` passes requests through; ``"503"`` answers 503 with an error body, like a load
    balancer whose backends are down. ``hold_spool_after=n``: the (n+1)-th ``POST /v1/audit/spool`` is forwarded
    (the server stores it) and then its answer is held until ``release`` is set: ``held`` is set meanwhile.
    """

    def __init__(self, target: str, port: int = 0) -> None:
        self.target = urllib.parse.urlsplit(target)
        self.mode = "forward"
        self.requests: list[tuple[str, str]] = []
        self.spool_posts = 0
        self.hold_spool_after: int | None = None
        self.held = threading.Event()
        self.release = threading.Event()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                stand_in.requests.append((self.command, self.path))
                if stand_in.mode == "503":
                    self._answer(503, b'{"error":{"code":"ERR_UNAVAILABLE","message":"stand-in: no backend"}}')
                    return
                conn = http.client.HTTPConnection(stand_in.target.hostname, stand_in.target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type", "accept")}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                res = conn.getresponse()
                data = res.read()
                conn.close()
                if self.command == "POST" and self.path == "/v1/audit/spool":
                    stand_in.spool_posts += 1
                    if stand_in.hold_spool_after is not None and stand_in.spool_posts > stand_in.hold_spool_after:
                        stand_in.held.set()
                        stand_in.release.wait(30)
                try:
                    self._answer(res.status, data)
                except OSError:
                    pass  # the client is gone

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> tuple[socket.socket, Any]:
                sock, addr = self.socket.accept()
                stand_in._connections.add(sock)  # closed by stop(), as a stopped server closes its connections
                return sock, addr

        self._connections: set[socket.socket] = set()
        self.server = Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        for sock in list(self._connections):  # kept-alive connections end with the server
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + os.pathsep + HERE
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


PYTHON = sys.executable
