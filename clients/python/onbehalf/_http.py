"""JSON over HTTP/1.1 with ``http.client``, on a small pool of kept-alive connections: no redirects (a bearer token
never follows a redirect to another host), a size cap on answers, HTTPS with hostname verification always on, and
one exception, :class:`Unreachable`, for every way the control plane can fail to answer.

A request is sent once. A pooled connection is reused only after checking, just before sending, that the server has
not closed it (it is readable: the end of the stream, or bytes nobody asked for) and that it has not been idle past
the server's ``Keep-Alive: timeout``; a connection that fails those checks is dropped and a new one opened, so the
request still goes out once. A failure after the request may have reached the server is never retried here: a
``POST /v1/check`` sent twice would be decided, counted and audited twice. It is :class:`Unreachable`, which the
fail mode decides on.

Internal: the public API is :class:`onbehalf.Client`.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

USER_AGENT = "onbehalf-python/0.1"
MAX_ANSWER_BYTES = 32 * 1024 * 1024
DEFAULT_POOL_SIZE = 4
# A connection idle this close to the server's keep-alive timeout is not reused: the server may be closing it.
_IDLE_MARGIN = 1.0
_KEEP_ALIVE_TIMEOUT = re.compile(r"timeout\s*=\s*(\d+)", re.IGNORECASE)


class Unreachable(Exception):
    """No HTTP answer: connection refused or reset, DNS failure, TLS failure, timeout, a truncated answer."""


@dataclass
class Response:
    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def error_message(self) -> str:
        """The message of an ``{"error": {"code", "message"}}`` body, of an OAuth error (``/v1/token``:
        ``{"error", "error_description"}``, as ``"<error>: <description>"``), or a short description."""
        if isinstance(self.body, dict):
            err = self.body.get("error")
            if isinstance(err, dict):
                return str(err.get("message") or err.get("code") or f"HTTP {self.status}")
            if isinstance(err, str):
                description = self.body.get("error_description")
                return f"{err}: {description}" if description else err
        return f"HTTP {self.status}"

    @property
    def error_code(self) -> str | None:
        """The API's error code (``ERR_…``), or an OAuth error (``invalid_client``…) at ``/v1/token``."""
        if isinstance(self.body, dict):
            err = self.body.get("error")
            if isinstance(err, dict):
                code = err.get("code")
                return str(code) if code is not None else None
            if isinstance(err, str):
                return err
        return None


def tls_context(
    ca_file: str | os.PathLike[str] | None = None,
    client_cert: str | os.PathLike[str] | None = None,
    client_key: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A verifying TLS context: the system's trusted CAs, or ``ca_file``'s; a client certificate if given."""
    context = ssl.create_default_context(cafile=None if ca_file is None else os.fspath(ca_file))
    if client_cert is not None:
        context.load_cert_chain(os.fspath(client_cert), None if client_key is None else os.fspath(client_key))
    return context


def check_tls_context(context: ssl.SSLContext) -> None:
    """Refuse a context that would not verify the control plane's certificate and name (ValueError)."""
    if not isinstance(context, ssl.SSLContext):
        raise ValueError(f"ssl_context must be an ssl.SSLContext, not {type(context).__name__}")
    if context.verify_mode != ssl.CERT_REQUIRED or not context.check_hostname:
        raise ValueError(
            "ssl_context must verify the server: verify_mode CERT_REQUIRED and check_hostname True "
            "(ssl.create_default_context(cafile=...) does both)"
        )


class _OneWrite:
    """``http.client`` writes a request's head and its body with two ``send`` calls: two TCP segments (the
    connection has ``TCP_NODELAY``), two wake-ups of the server. A JSON request is small: one write."""

    _buffer: list[bytes]

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if type(message_body) is bytes and not encode_chunked:
            self._buffer.extend((b"", b""))
            head = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(head + message_body)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


class _Idle:
    __slots__ = ("conn", "since", "keep_alive")

    def __init__(self, conn: http.client.HTTPConnection, keep_alive: float | None) -> None:
        self.conn = conn
        self.since = time.monotonic()
        self.keep_alive = keep_alive


class Pool:
    """Kept-alive connections to one origin. Safe across threads (a connection serves one request at a time;
    asyncio callers reach it through ``asyncio.to_thread``). At most ``size`` idle connections are kept; more
    concurrent requests open more connections, closed after use.

    ``connections_opened`` counts the TCP connections (and TLS handshakes) made: a test and ``bench/python`` read it.
    """

    def __init__(
        self, base_url: str, *, ssl_context: ssl.SSLContext | None = None, size: int = DEFAULT_POOL_SIZE
    ) -> None:
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        if self.https:
            self.ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()
            check_tls_context(self.ssl_context)
        else:
            self.ssl_context = None
        self.size = max(0, int(size))
        self.connections_opened = 0
        self._idle: list[_Idle] = []
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False

    # -- one request -----------------------------------------------------------------------------------------

    def request(
        self, method: str, path: str, *, headers: Mapping[str, str], body: bytes | None, timeout: float
    ) -> Response:
        """Send one request on a live connection and read its answer, or raise :class:`Unreachable`."""
        conn = self._acquire(timeout)
        try:
            if conn.sock is None:
                with self._lock:
                    self.connections_opened += 1
                conn.connect()  # TCP, and the TLS handshake with the name checked
            conn.request(method, self.prefix + path, body=body, headers=dict(headers))
            res = conn.getresponse()
            raw = res.read(MAX_ANSWER_BYTES + 1)
            if len(raw) > MAX_ANSWER_BYTES:
                raise ValueError(f"answer over {MAX_ANSWER_BYTES} bytes")
            if not res.isclosed():
                raise http.client.IncompleteRead(raw)
            answer = Response(res.status, _parse(raw), res.headers)  # case-insensitive, parsed when read
        except (socket.timeout, TimeoutError) as e:
            conn.close()
            raise Unreachable(f"timed out after {timeout:g} s") from e
        except ssl.SSLCertVerificationError as e:
            conn.close()
            raise Unreachable(f"TLS: the control plane's certificate does not verify: {e.verify_message}") from None
        except (OSError, http.client.HTTPException, ValueError) as e:
            conn.close()
            raise Unreachable(_describe(e)) from None
        except BaseException:
            conn.close()  # interrupted mid-request: the connection is in an unknown state
            raise
        if res.will_close:
            conn.close()
        else:
            self._release(conn, _keep_alive_of(res.headers.get("keep-alive")))
        return answer

    def close(self) -> None:
        """Close the idle connections (connections in use close when their request is done)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for i in idle:
            i.conn.close()

    # -- the pool --------------------------------------------------------------------------------------------

    def _acquire(self, timeout: float) -> http.client.HTTPConnection:
        now = time.monotonic()
        while True:
            with self._lock:
                if self._pid != os.getpid():  # a forked child never shares its parent's sockets
                    self._idle, self._pid = [], os.getpid()
                idle = self._idle.pop() if self._idle else None
            if idle is None:
                return self._new(timeout)
            if _alive(idle, now):
                idle.conn.timeout = timeout
                if idle.conn.sock is not None:
                    idle.conn.sock.settimeout(timeout)
                return idle.conn
            idle.conn.close()  # closed by the server while idle: replaced, and the request not yet sent

    def _new(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return _HTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context)
        return _HTTPConnection(self.host, self.port, timeout=timeout)

    def _release(self, conn: http.client.HTTPConnection, keep_alive: float | None) -> None:
        with self._lock:
            if not self._closed and self._pid == os.getpid() and len(self._idle) < self.size:
                self._idle.append(_Idle(conn, keep_alive))
                return
        conn.close()


def _alive(idle: _Idle, now: float) -> bool:
    """Whether an idle connection can take a request: open, not readable (a server that closed it made it
    readable: end of stream), and not idle past the server's keep-alive timeout."""
    sock = idle.conn.sock
    if sock is None:
        return False
    if idle.keep_alive is not None and now - idle.since > idle.keep_alive - _IDLE_MARGIN:
        return False
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return False  # bytes nobody asked for
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (AttributeError, OSError, ValueError):  # no poll() (Windows): select
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable


def _keep_alive_of(value: str | None) -> float | None:
    """The idle timeout of a ``Keep-Alive: timeout=72`` header, in seconds."""
    m = _KEEP_ALIVE_TIMEOUT.search(value) if value else None
    return float(m.group(1)) if m else None


def request(
    pool: Pool,
    method: str,
    path: str,
    *,
    token: str | None = None,
    authorization: str | None = None,
    json_body: Any = None,
    timeout: float,
) -> Response:
    """Send one request; return the answer (any status, a 3xx included: never followed), or raise
    :class:`Unreachable`. ``authorization``: a whole ``Authorization`` header (client authentication), instead of a
    bearer ``token``."""
    headers = {"accept": "application/json", "user-agent": USER_AGENT}
    data: bytes | None = None
    if token is not None:
        headers["authorization"] = token if token[:7].lower() == "bearer " else f"Bearer {token}"
    elif authorization is not None:
        headers["authorization"] = authorization
    if json_body is not None:
        data = json.dumps(json_body, allow_nan=False, separators=(",", ":")).encode("utf-8")
        headers["content-type"] = "application/json"
    elif method in ("POST", "PUT", "PATCH"):
        headers["content-length"] = "0"
    return pool.request(method, path, headers=headers, body=data, timeout=timeout)


def query(params: Mapping[str, Any]) -> str:
    return urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})


def _parse(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:500]


def _describe(reason: Any) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the control plane's host: {reason}"
    if isinstance(reason, BaseException):
        return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
    return str(reason)
