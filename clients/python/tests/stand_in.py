"""A STAND-IN (not the control plane) that counts connections: a kept-alive HTTP/1.1 proxy in front of the real
control plane, optionally terminating TLS with a test CA made here (``openssl``), as a load balancer does.

Used by test_connections.py (connection reuse, broken connections, TLS) and by bench/python (no handshake per call).

Example::

    certs = TestCA(tmpdir)                      # a CA, a server certificate for 127.0.0.1, a client certificate
    proxy = CountingStandIn(URL, tls=certs.server_context())
    client = Client(proxy.url, ca_file=certs.ca)
    ...
    proxy.connections                           # TCP connections accepted (each one a TLS handshake)
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import ssl
import subprocess
import threading
import urllib.parse
from typing import Any


class TestCA:
    """A certificate authority made for one test run, and what it signed (PEM files in ``directory``):
    ``server.pem`` for 127.0.0.1 and localhost, ``other.pem`` for another host name, ``client.pem``."""

    __test__ = False  # not a test case

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.ca = self._path("ca.pem")
        self._openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", self._path("ca.key"), "-out", self.ca, "-days", "2", "-subj", "/CN=onbehalf test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        self.server = self._issue("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
        self.other = self._issue("other", "subjectAltName=DNS:other.example\nextendedKeyUsage=serverAuth")
        self.client = self._issue("client", "extendedKeyUsage=clientAuth")

    def key_of(self, cert: str) -> str:
        return cert[: -len(".pem")] + ".key"

    def server_context(self, cert: str | None = None, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert = cert or self.server
        context.load_cert_chain(cert, self.key_of(cert))
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.ca)
        return context

    def _issue(self, name: str, extensions: str) -> str:
        ext = self._path(f"{name}.ext")
        with open(ext, "w") as f:
            f.write(extensions + "\n")
        self._openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", self._path(f"{name}.key"),
            "-out", self._path(f"{name}.csr"), "-subj", f"/CN=onbehalf test {name}",
        )  # fmt: skip
        self._openssl(
            "x509", "-req", "-in", self._path(f"{name}.csr"), "-CA", self.ca, "-CAkey", self._path("ca.key"),
            "-CAcreateserial", "-out", self._path(f"{name}.pem"), "-days", "2", "-extfile", ext,
        )  # fmt: skip
        return self._path(f"{name}.pem")

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def _openssl(self, *args: str) -> None:
        done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {done.stderr.strip()}")


class CountingStandIn:
    """STAND-IN (not the control plane): forwards every request to ``target`` on one upstream connection per
    downstream one, and counts what it sees.

    ``connections``: downstream connections accepted (with ``tls``, each is a TLS handshake); ``requests``:
    ``(method, path)`` of every request; ``handshakes``: TLS handshakes completed. ``drop_connections()`` closes
    every open downstream connection, as a server does that restarts or times idle connections out.
    ``reset_on``: a ``(method, path prefix)`` whose next request is read and then answered by closing the
    connection, without forwarding it (the request never reaches the control plane). ``no_route``: ``(method,
    path)`` pairs answered 404 "no route", as a control plane older than that route answers.
    """

    def __init__(self, target: str, *, tls: ssl.SSLContext | None = None) -> None:
        self.target = urllib.parse.urlsplit(target)
        self.connections = 0
        self.handshakes = 0
        self.requests: list[tuple[str, str]] = []
        self.reset_on: tuple[str, str] | None = None
        self.no_route: set[tuple[str, str]] = set()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are written apart: no delayed-ACK stall between

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.do_handshake()
                    with stand_in._lock:
                        stand_in.handshakes += 1
                super().setup()
                self.upstream: http.client.HTTPConnection | None = None

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    if self.upstream is not None:
                        self.upstream.close()
                    with stand_in._lock:
                        stand_in._open.discard(self.request)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                with stand_in._lock:
                    stand_in.requests.append((self.command, self.path))
                    reset = stand_in.reset_on
                    if reset is not None and self.command == reset[0] and self.path.startswith(reset[1]):
                        stand_in.reset_on = None
                    else:
                        reset = None
                if reset is not None:
                    self.close_connection = True
                    self.request.shutdown(socket.SHUT_RDWR)
                    return
                if (self.command, self.path) in stand_in.no_route:  # as a control plane without this route answers
                    message = f"no route {self.command} {self.path}"
                    self._answer(404, json.dumps({"error": {"code": "ERR_NOT_FOUND", "message": message}}))
                    return
                if self.upstream is None:
                    self.upstream = http.client.HTTPConnection(stand_in.target.hostname, stand_in.target.port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type", "accept")}
                self.upstream.request(self.command, self.path, body=body or None, headers=headers)
                res = self.upstream.getresponse()
                data = res.read()
                self.send_response(res.status)
                for name, value in res.getheaders():
                    if name.lower() in ("content-type", "keep-alive", "location"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _answer(self, status: int, text: str) -> None:
                data = text.encode()
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
                with stand_in._lock:
                    stand_in.connections += 1
                    stand_in._open.add(sock)
                if tls is not None:
                    # the handshake runs in the connection's thread (setup), not in the accept loop
                    wrapped = tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                    with stand_in._lock:
                        stand_in._open.discard(sock)
                        stand_in._open.add(wrapped)
                    return wrapped, addr
                return sock, addr

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that fails the handshake or goes away: nothing to print

        self.server = Server(("127.0.0.1", 0), Handler)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def drop_connections(self) -> int:
        """Close every open downstream connection (the client sees each closed while idle); how many."""
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(open_now)

    def stop(self) -> None:
        self.drop_connections()
        self.server.shutdown()
        self.server.server_close()
