"""The client at network speed: kept-alive connections (one TCP connection for many calls), a connection the server
closed replaced without losing or double-sending anything, results reported in the background (one round trip) and
spooled when they cannot be sent, HTTPS with a test CA (no handshake per call after the first, the host name
checked, client certificates), no redirect followed, and threads, asyncio tasks and the end of the process."""

from __future__ import annotations

import asyncio
import http.server
import os
import ssl
import subprocess
import textwrap
import threading
import time
import unittest
import uuid
from typing import Any
from unittest import mock

import onbehalf
from onbehalf import _http
from onbehalf import Client, ConfigurationError, Denied, governed

from stand_in import CountingStandIn, TestCA
from support import PYTHON, URL, ControlPlaneStandIn, TempDir, needs_server, python_env, run_records, token, wait_for


def status_tool(client: Client | None, ran: list | None = None, during: Any = None):
    """``get_status``: its policy does not transform its output (``post_transform: audit``)."""

    @governed(client)
    def get_status(system: str) -> dict:
        if during is not None:
            during()
        if ran is not None:
            ran.append(system)
        return {"system": system, "up": True}

    return get_status


def redacted_tool(client: Client):
    """``get_customer``: its output is redacted, so it is reported before it returns."""

    @governed(client)
    def get_customer(customer_id: str) -> dict:
        return {"id": customer_id, "ssn": "078-05-1120"}

    return get_customer


def checks(stand_in: CountingStandIn) -> int:
    return sum(1 for method, path in stand_in.requests if method == "POST" and path == "/v1/check")


def results(stand_in: CountingStandIn) -> int:
    return sum(1 for method, path in stand_in.requests if method == "POST" and path.startswith("/v1/calls/"))


def batches(stand_in: Any) -> int:
    return sum(1 for method, path in stand_in.requests if (method, path) == ("POST", "/v1/calls/results"))


def calls_then_exit(url: str, spool_path: str, trace: str, options: str = "") -> subprocess.CompletedProcess:
    """A process that makes 5 governed calls and ends with their reports still queued: no flush, no close."""
    script = textwrap.dedent(
        f"""
        from onbehalf import Client, governed
        c = Client({url!r}, spool_path={spool_path!r}, {options})

        @governed(c)
        def get_status(system: str) -> dict:
            return {{"system": system}}

        with c.acting_as({token("pat")!r}, agent="bot", trace_id={trace!r}):
            for i in range(5):
                get_status(f"s-{{i}}")
        """
    )
    return subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, text=True, timeout=60)


@needs_server
class ConnectionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = TempDir()
        self.spool_path = self.tmp.join("spool.jsonl")
        self.stand_in = CountingStandIn(URL)
        self.trace = uuid.uuid4().hex

    def tearDown(self) -> None:
        self.stand_in.stop()
        self.tmp.cleanup()

    def client(self, **options: Any) -> Client:
        c = Client(self.stand_in.url, spool_path=self.spool_path, **options)
        self.addCleanup(c.close)
        return c

    def test_many_calls_share_one_connection(self) -> None:
        c = self.client(background_reports=False)
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            for i in range(10):
                self.assertTrue(c.check("get_status", {"system": f"s-{i}"}).allowed)
                self.assertEqual(status_tool(c)(f"s-{i}"), {"system": f"s-{i}", "up": True})
                self.assertEqual(redacted_tool(c)(f"o-{i}")["ssn"], "[REDACTED]")
        self.assertEqual(self.stand_in.connections, 1)
        self.assertEqual(c._pool.connections_opened, 1)
        self.assertEqual((checks(self.stand_in), results(self.stand_in)), (30, 20))
        self.assertEqual(len(run_records(self.trace, 20, kind="outcome")), 20)

    def test_background_reports_take_a_second_connection_not_one_per_call(self) -> None:
        c = self.client()
        ran: list = []
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            for i in range(30):
                status_tool(c, ran)(f"s-{i}")
        c.flush()
        self.assertEqual(len(ran), 30)
        self.assertLessEqual(self.stand_in.connections, 2)  # the caller's, and the reporting thread's at most
        self.assertEqual(checks(self.stand_in), 30)
        self.assertLessEqual(results(self.stand_in), 30)  # batched: BatchedReportTests
        outcomes = run_records(self.trace, 30, kind="outcome")
        self.assertEqual(sorted(r["outcome"] for r in outcomes), ["ok"] * 30)
        self.assertEqual(c.spool.entries(), [])  # nothing left behind

    def test_a_connection_the_server_closed_while_idle_is_replaced_before_sending(self) -> None:
        for background in (False, True):
            with self.subTest(background_reports=background):
                stand_in = CountingStandIn(URL)
                self.addCleanup(stand_in.stop)
                c = Client(stand_in.url, spool_path=self.spool_path, background_reports=background)
                self.addCleanup(c.close)
                trace = uuid.uuid4().hex

                def drop() -> None:  # between the check and the report: the report's connection is gone
                    c.flush()
                    stand_in.drop_connections()
                    time.sleep(0.05)

                with c.acting_as(token("pat"), agent="bot", trace_id=trace):
                    status_tool(c)("before")
                    drop()
                    status_tool(c)("after-idle")  # the check's connection was closed while idle
                    status_tool(c, during=drop)("mid-call")  # and the report's
                    redacted_tool(c)("o-1")
                c.flush()
                # every request went out once, on a new connection where the old one was closed
                self.assertEqual((checks(stand_in), results(stand_in)), (4, 4))
                self.assertGreaterEqual(stand_in.connections, 3)
                outcomes = run_records(trace, 4, kind="outcome")
                self.assertEqual([r["outcome"] for r in outcomes], ["ok"] * 4)
                self.assertEqual(c.spool.entries(), [])

    def test_a_report_cut_off_mid_request_is_spooled_and_replayed_never_resent_at_once(self) -> None:
        c = self.client(auto_replay=False)
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            self.stand_in.reset_on = ("POST", "/v1/calls/")  # read, then the connection closed: never forwarded
            self.assertEqual(status_tool(c)("s-1"), {"system": "s-1", "up": True})
            c._drain_reports()
            self.assertEqual(results(self.stand_in), 1)  # sent once; it may have arrived: not sent again blindly
            [line] = c.spool.entries()
            self.assertEqual((line["kind"], line["record"]["status"]), ("result", "ok"))
            self.assertNotIn("output", line["record"])  # an output nobody transforms never leaves the process
            replay = c.flush()
        self.assertEqual((replay.sent, replay.accepted, replay.remaining), (1, 1, 0))
        self.assertEqual(results(self.stand_in), 2)
        [outcome] = run_records(self.trace, 1, kind="outcome")
        self.assertEqual((outcome["outcome"], outcome["call_id"]), ("ok", line["record"]["call_id"]))

    def test_a_failed_tools_error_is_reported_in_the_background(self) -> None:
        c = self.client()

        @governed(c, name="get_status")
        def broken(system: str) -> dict:
            raise RuntimeError("backend down")

        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            with self.assertRaises(RuntimeError):
                broken("s-1")
        c.flush()
        [outcome] = run_records(self.trace, 1, kind="outcome")
        self.assertEqual(outcome["outcome"], "error")
        self.assertIn("backend down", outcome["reason"])

    def test_unreachable_control_plane_spools_background_reports_and_replays_them(self) -> None:
        c = self.client(auto_replay=False)
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            status_tool(c)("s-0")  # the fail mode is known now
            c._drain_reports()

            def outage() -> None:
                self.stand_in.reset_on = ("POST", "/v1/calls/")

            for i in range(3):
                status_tool(c, during=outage)(f"s-{i + 1}")
                c._drain_reports()
        self.assertEqual(len([e for e in c.spool.entries() if e.get("kind") == "result"]), 3)
        # the first report found the control plane gone; the next ones went to the spool without waiting for it
        self.assertEqual(results(self.stand_in), 2)
        self.stand_in.reset_on = None  # back
        replay = c.flush()
        self.assertEqual(replay.sent, 3, replay)
        self.assertEqual(len(run_records(self.trace, 4, kind="outcome")), 4)

    def test_threads_and_asyncio_tasks_share_the_pool(self) -> None:
        c = self.client(pool_size=4)
        errors: list[BaseException] = []
        tool = status_tool(c)

        def worker(n: int) -> None:
            try:
                with c.acting_as(token("pat"), agent=f"bot-{n}", trace_id=self.trace):
                    for i in range(10):
                        self.assertEqual(tool(f"{n}-{i}")["system"], f"{n}-{i}")
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])

        @governed(c, name="get_status")
        async def aget_status(system: str) -> dict:
            await asyncio.sleep(0.001)
            return {"system": system}

        async def many() -> list:
            with c.acting_as(token("pat"), agent="async-bot", trace_id=self.trace):
                return await asyncio.gather(*(aget_status(f"a-{i}") for i in range(20)))

        self.assertEqual(len(asyncio.run(many())), 20)
        c.flush()
        self.assertEqual(checks(self.stand_in), 80)  # one check per call: nothing sent twice
        self.assertEqual(len(run_records(self.trace, 80, kind="outcome")), 80)
        self.assertLessEqual(self.stand_in.connections, 6 + 20 + 1)  # bounded by concurrency, not by calls

    def test_a_forked_child_never_uses_its_parents_connections(self) -> None:
        c = self.client()
        tool = status_tool(c)
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            tool("parent-1")
            c._drain_reports()
            opened = c._pool.connections_opened
            pid = os.fork()
            if pid == 0:  # the child: its own connections, and none of the parent's queued reports
                code = 1
                try:
                    tool("child")
                    c.flush()
                    code = 0 if c._pool.connections_opened > opened else 2
                finally:
                    os._exit(code)
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), 0)
            tool("parent-2")  # the parent's connection was not disturbed
        c.flush()
        self.assertLessEqual(c._pool.connections_opened, 2)  # the caller's and the reporting thread's, at most
        self.assertEqual(checks(self.stand_in), 3)
        self.assertGreaterEqual(self.stand_in.connections, 2)  # the child opened its own
        self.assertEqual(len(run_records(self.trace, 3, kind="outcome")), 3)

    def test_reports_queued_when_the_process_ends_are_sent_first(self) -> None:
        done = calls_then_exit(self.stand_in.url, self.spool_path, self.trace)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(len(run_records(self.trace, 5, kind="outcome")), 5)

    def test_a_redirect_is_never_followed(self) -> None:
        hits: list[str] = []

        class Elsewhere(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

        elsewhere = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
        threading.Thread(target=elsewhere.serve_forever, daemon=True).start()
        self.addCleanup(elsewhere.server_close)
        self.addCleanup(elsewhere.shutdown)
        target = f"http://127.0.0.1:{elsewhere.server_address[1]}/v1/check"

        class Redirecting(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                self.send_response(307)
                self.send_header("location", target)
                self.send_header("content-length", "0")
                self.end_headers()

        redirecting = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirecting)
        threading.Thread(target=redirecting.serve_forever, daemon=True).start()
        self.addCleanup(redirecting.server_close)
        self.addCleanup(redirecting.shutdown)
        c = Client(f"http://127.0.0.1:{redirecting.server_address[1]}", spool_path=None)
        self.addCleanup(c.close)
        with c.acting_as(token("pat"), agent="bot"):
            decision = c.check("get_status", {"system": "s"})
        self.assertEqual((decision.decision, decision.reason_code), ("deny", "error"))
        self.assertIn("HTTP 307", decision.reason)
        self.assertEqual(hits, [])


@needs_server
class BatchedReportTests(unittest.TestCase):
    """Background reports go in batches (``POST /v1/calls/results``): fewer requests than calls, every outcome in
    the audit, and a batch that does not arrive is spooled whole and replayed, in batches too."""

    def setUp(self) -> None:
        self.tmp = TempDir()
        self.addCleanup(self.tmp.cleanup)
        self.spool_path = self.tmp.join("spool.jsonl")
        self.stand_in = CountingStandIn(URL)
        self.addCleanup(self.stand_in.stop)
        self.trace = uuid.uuid4().hex

    def client(self, url: str | None = None, **options: Any) -> Client:
        c = Client(url or self.stand_in.url, spool_path=self.spool_path, **options)
        self.addCleanup(c.close)
        return c

    def test_calls_back_to_back_are_reported_in_fewer_requests_than_calls(self) -> None:
        c = self.client()  # the default wait for more (report_batch_wait)
        tool = status_tool(c)
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            for i in range(100):
                tool(f"s-{i}")
        c.flush()
        self.assertEqual(checks(self.stand_in), 100)
        self.assertEqual(results(self.stand_in), batches(self.stand_in))  # nothing one by one
        self.assertLess(batches(self.stand_in), 100)
        outcomes = run_records(self.trace, 100, kind="outcome")
        self.assertEqual(sorted(r["outcome"] for r in outcomes), ["ok"] * 100)
        self.assertEqual(c.spool.entries(), [])

    def test_a_flush_sends_what_waits_for_more_at_once_in_one_request(self) -> None:
        c = self.client(report_batch_wait=30)
        tool = status_tool(c)

        @governed(c, name="get_status")
        def broken(system: str) -> dict:
            raise RuntimeError("backend down")

        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            for i in range(20):
                tool(f"s-{i}")
            with self.assertRaises(RuntimeError):
                broken("s-20")
            self.assertEqual(results(self.stand_in), 0)  # waiting for more
            started = time.monotonic()
            c.flush()
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(batches(self.stand_in), 1)
        outcomes = run_records(self.trace, 21, kind="outcome")
        self.assertEqual(sorted(r["outcome"] for r in outcomes), ["error"] + ["ok"] * 20)
        self.assertIn("backend down", next(r["reason"] for r in outcomes if r["outcome"] == "error"))

    def test_a_batch_cut_off_mid_request_is_spooled_whole_and_replayed_in_one_batch(self) -> None:
        c = self.client(report_batch_wait=30, auto_replay=False)
        tool = status_tool(c)
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            for i in range(20):
                tool(f"s-{i}")
            self.stand_in.reset_on = ("POST", "/v1/calls/results")  # read, then the connection closed: never forwarded
            c._drain_reports()
            self.assertEqual(batches(self.stand_in), 1)
            lines = c.spool.entries()
            self.assertEqual(len(lines), 20)
            self.assertEqual({e["kind"] for e in lines}, {"result"})
            replay = c.flush()
        self.assertEqual((replay.sent, replay.accepted, replay.rejected, replay.remaining), (20, 20, 0, 0))
        self.assertEqual(batches(self.stand_in), 2)  # the replay: one batch
        self.assertEqual(len(run_records(self.trace, 20, kind="outcome")), 20)

    def test_a_control_plane_down_when_the_batch_goes_loses_nothing(self) -> None:
        proxy = ControlPlaneStandIn(URL)
        self.addCleanup(proxy.stop)
        c = self.client(proxy.url, report_batch_wait=30, auto_replay=False)
        tool = status_tool(c)
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            for i in range(10):
                tool(f"s-{i}")
            proxy.mode = "503"  # a load balancer whose backends are gone
            c._drain_reports()
            self.assertEqual(len(c.spool.entries()), 10)
            with self.assertRaises(Denied):
                tool("s-10")  # the check fails closed (local): the call does not run, nothing to report
        self.assertEqual(len([e for e in c.spool.entries() if e.get("kind") == "result"]), 10)
        proxy.mode = "forward"
        replay = c.flush()
        self.assertEqual((replay.sent, replay.remaining), (11, 0))  # the 10 results, and the denial's record
        self.assertEqual(len(run_records(self.trace, 10, kind="outcome")), 10)

    def test_check_then_report_goes_in_the_background_with_its_report_token(self) -> None:
        c = self.client()
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            decisions = [c.check("get_status", {"system": f"s-{i}"}) for i in range(3)]
            for d in decisions:
                self.assertEqual(c.report(d, {"up": True}), {"up": True})
        c.flush()
        outcomes = run_records(self.trace, 3, kind="outcome")
        self.assertEqual(sorted(r["call_id"] for r in outcomes), sorted(d.call_id for d in decisions))
        self.assertEqual(c.spool.entries(), [])

    def test_a_control_plane_without_the_batch_route_is_sent_results_one_by_one(self) -> None:
        self.stand_in.no_route.add(("POST", "/v1/calls/results"))
        c = self.client(report_batch_wait=30)
        tool = status_tool(c)
        with c.acting_as(token("pat"), agent="bot", trace_id=self.trace):
            for i in range(5):
                tool(f"s-{i}")
            c.flush()
            tool("s-5")
        c.flush()
        self.assertEqual(batches(self.stand_in), 1)  # asked once, then one by one
        self.assertEqual(results(self.stand_in), 1 + 6)
        self.assertEqual(len(run_records(self.trace, 6, kind="outcome")), 6)
        self.assertEqual(c.spool.entries(), [])

    def test_reports_waiting_for_more_when_the_process_ends_are_sent_at_once(self) -> None:
        started = time.monotonic()
        done = calls_then_exit(self.stand_in.url, self.spool_path, self.trace, "report_batch_wait=60")
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertLess(time.monotonic() - started, 30)
        self.assertEqual(batches(self.stand_in), 1)
        self.assertEqual(len(run_records(self.trace, 5, kind="outcome")), 5)


@needs_server
class TlsTests(unittest.TestCase):
    """HTTPS through a TLS-terminating stand-in with a CA made for this test (``openssl``)."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.tmp = TempDir()
        cls.ca = TestCA(cls.tmp.join("ca"))

    @classmethod
    def tearDownClass(cls) -> None:
        cls.tmp.cleanup()

    def stand_in(self, context: ssl.SSLContext) -> CountingStandIn:
        s = CountingStandIn(URL, tls=context)
        self.addCleanup(s.stop)
        return s

    def client(self, url: str, **options: Any) -> Client:
        c = Client(url, spool_path=self.tmp.join(f"{uuid.uuid4().hex}.jsonl"), timeout=5, **options)
        self.addCleanup(c.close)
        return c

    def test_one_handshake_for_many_calls(self) -> None:
        proxy = self.stand_in(self.ca.server_context())
        c = self.client(proxy.url, ca_file=self.ca.ca, background_reports=False)
        trace = uuid.uuid4().hex
        with c.acting_as(token("pat"), agent="bot", trace_id=trace):
            for i in range(10):
                self.assertTrue(c.check("get_status", {"system": f"s-{i}"}).allowed)
                status_tool(c)(f"s-{i}")
        self.assertEqual((proxy.connections, proxy.handshakes, c._pool.connections_opened), (1, 1, 1))
        self.assertEqual(checks(proxy), 20)
        self.assertEqual(len(run_records(trace, 10, kind="outcome")), 10)

    def test_the_host_name_is_always_checked(self) -> None:
        proxy = self.stand_in(self.ca.server_context(self.ca.other))  # a certificate for other.example
        c = self.client(proxy.url, ca_file=self.ca.ca)
        with c.acting_as(token("pat"), agent="bot"):
            decision = c.check("get_status", {"system": "s"})
        self.assertEqual((decision.decision, decision.reason_code, decision.local), ("deny", "fail_closed", True))
        self.assertIn("certificate does not verify", decision.reason)
        self.assertEqual(checks(proxy), 0)

    def test_an_unknown_ca_is_refused(self) -> None:
        proxy = self.stand_in(self.ca.server_context())
        c = self.client(proxy.url)  # the system's CAs: the test CA is not among them
        with c.acting_as(token("pat"), agent="bot"):
            self.assertEqual(c.check("get_status", {"system": "s"}).reason_code, "fail_closed")
        self.assertEqual(checks(proxy), 0)

    def test_a_client_certificate_is_presented_when_configured(self) -> None:
        proxy = self.stand_in(self.ca.server_context(require_client_cert=True))
        without = self.client(proxy.url, ca_file=self.ca.ca)
        with without.acting_as(token("pat"), agent="bot"):
            self.assertEqual(without.check("get_status", {"system": "s"}).reason_code, "fail_closed")
        c = self.client(proxy.url, ca_file=self.ca.ca, client_cert=self.ca.client, client_key=self.ca.key_of(self.ca.client))
        with c.acting_as(token("pat"), agent="bot"):
            self.assertTrue(c.check("get_status", {"system": "s"}).allowed)
        context = ssl.create_default_context(cafile=self.ca.ca)
        context.load_cert_chain(self.ca.client, self.ca.key_of(self.ca.client))
        by_context = self.client(proxy.url, ssl_context=context)
        with by_context.acting_as(token("pat"), agent="bot"):
            self.assertTrue(by_context.check("get_status", {"system": "s"}).allowed)
        self.assertEqual(checks(proxy), 2)

    def test_the_default_client_takes_its_tls_settings_from_the_environment(self) -> None:
        proxy = self.stand_in(self.ca.server_context(require_client_cert=True))
        env = {
            "ONBEHALF_URL": proxy.url,
            "ONBEHALF_SPOOL": "none",
            "ONBEHALF_CA_FILE": self.ca.ca,
            "ONBEHALF_CLIENT_CERT": self.ca.client,
            "ONBEHALF_CLIENT_KEY": self.ca.key_of(self.ca.client),
        }
        onbehalf.configure(None)
        self.addCleanup(onbehalf.configure, None)
        with mock.patch.dict(os.environ, env):
            default = onbehalf.default_client()
            self.addCleanup(default.close)
            with default.acting_as(token("pat"), agent="bot"):
                self.assertEqual(status_tool(None)("s"), {"system": "s", "up": True})
        self.assertEqual((checks(proxy), proxy.handshakes), (1, 1))

    def test_settings_that_would_not_verify_are_refused(self) -> None:
        lax = ssl.create_default_context(cafile=self.ca.ca)
        lax.check_hostname = False
        with self.assertRaisesRegex(ConfigurationError, "check_hostname"):
            Client("https://127.0.0.1:1", ssl_context=lax, spool_path=None)
        with self.assertRaisesRegex(ConfigurationError, "https"):
            Client("http://127.0.0.1:1", ca_file=self.ca.ca, spool_path=None)
        with self.assertRaisesRegex(ConfigurationError, "TLS settings"):
            Client("https://127.0.0.1:1", ca_file=self.tmp.join("missing.pem"), spool_path=None)


class KeepAliveTests(unittest.TestCase):
    """A connection idle for about as long as the server keeps idle connections is not reused: the server may be
    closing it at that very moment, and a request sent on it could be lost."""

    def test_a_connection_idle_past_the_servers_keep_alive_timeout_is_not_reused(self) -> None:
        accepted: list[int] = []

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def get_request(self) -> Any:
                accepted.append(1)
                return self.socket.accept()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("keep-alive", "timeout=2")
                self.send_header("content-type", "application/json")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        pool = _http.Pool(f"http://127.0.0.1:{server.server_address[1]}")
        self.addCleanup(pool.close)
        get = lambda: _http.request(pool, "GET", "/", timeout=5)  # noqa: E731
        self.assertEqual((get().status, get().status), (200, 200))
        self.assertEqual(pool.connections_opened, 1)
        time.sleep(1.2)  # past timeout=2 less the margin of 1 s
        self.assertEqual(get().status, 200)
        self.assertEqual((pool.connections_opened, len(accepted)), (2, 2))


class OptionTests(unittest.TestCase):
    def test_options_are_checked(self) -> None:
        with self.assertRaisesRegex(ConfigurationError, "pool_size"):
            Client("http://127.0.0.1:1", pool_size=-1, spool_path=None)
        with self.assertRaisesRegex(ConfigurationError, "client_key needs client_cert"):
            Client("https://127.0.0.1:1", client_key="k.pem", spool_path=None)

    def test_denied_is_still_raised_without_a_control_plane(self) -> None:
        c = Client("http://127.0.0.1:1", spool_path=None, timeout=0.5)
        with c.acting_as("not-a-token", agent="bot"):
            with self.assertRaises(Denied):
                status_tool(c)("s")
        c.close()


if __name__ == "__main__":
    unittest.main()
