"""Fail modes with the control plane unreachable (a closed port) or answering 503 (a stand-in proxy), the local
spool, its replay, no duplicates, and crashes (kill -9) of the client mid-replay and mid-call."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import textwrap
import unittest
import uuid

import onbehalf
from onbehalf import Client, Denied, Unavailable, governed

from support import (
    PYTHON,
    URL,
    ControlPlaneStandIn,
    TempDir,
    audit_until,
    free_port,
    needs_server,
    python_env,
    token,
    wait_for,
)

RECORD_KEYS = {
    "call_id", "time", "tool", "args", "agent", "tier", "chain", "decision", "reason_code", "reason", "outcome",
    "latency_us", "trace_id",
}


def spooled(user: str, call_ids: set[str], expect: int | None = None) -> list[dict]:
    """Records stored from the spool for these call ids (waits until ``expect`` of them are there)."""

    def mine(records: list[dict]) -> list[dict]:
        return [r for r in records if r.get("source") == "spool" and r["call_id"] in call_ids]

    want = len(call_ids) if expect is None else expect
    return mine(audit_until(lambda rs: len(mine(rs)) >= want, user=user))


@needs_server
class FailModeTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = TempDir()
        self.spool_path = self.tmp.join("spool", "audit.jsonl")
        self.stand_ins: list[ControlPlaneStandIn] = []

    def tearDown(self) -> None:
        for s in self.stand_ins:
            s.stop()
        self.tmp.cleanup()

    def stand_in(self, port: int = 0) -> ControlPlaneStandIn:
        s = ControlPlaneStandIn(URL, port)
        self.stand_ins.append(s)
        return s

    def tool(self, client: Client, ran: list | None = None):
        @governed(client)
        def lookup_order(order_id: str) -> dict:
            if ran is not None:
                ran.append(order_id)
            return {"id": order_id, "ssn": "123"}

        return lookup_order

    def test_unreachable_denies_with_fail_closed_until_the_fail_mode_is_known(self) -> None:
        client = Client(f"http://127.0.0.1:{free_port()}", spool_path=self.spool_path, timeout=1)
        ran: list = []
        with client.acting_as(token("erin"), agent="bot"):  # erin's tenant is fail_open, but nobody told us yet
            with self.assertRaises(Unavailable) as caught:
                self.tool(client, ran)("o-1")
        e = caught.exception
        self.assertEqual(e.reason_code, "fail_closed")
        self.assertIn("connection refused", e.reason)
        self.assertIn("not known yet", e.reason)
        self.assertEqual(ran, [])
        [entry] = client.spool.entries()  # the denial is kept for the audit too
        self.assertEqual((entry["record"]["decision"], entry["record"]["reason_code"]), ("deny", "fail_closed"))
        self.assertEqual(entry["token"], token("erin"))

    def test_a_run_with_capabilities_fails_closed_even_in_a_fail_open_tenant(self) -> None:
        proxy = self.stand_in()
        client = Client(proxy.url, spool_path=self.spool_path, replay_interval=0, auto_replay=False)
        ran: list = []
        lookup = self.tool(client, ran)
        with client.acting_as(token("frank"), agent="bot", capabilities={"tools": ["lookup_order"]}):
            self.assertEqual(client.check("lookup_order", {"order_id": "x"}).fail_mode, "fail_open")  # learned
            proxy.mode = "503"
            with self.assertRaises(Denied) as caught:
                lookup("during")
        self.assertEqual(caught.exception.reason_code, "fail_closed")
        self.assertIn("task capabilities", caught.exception.reason)
        self.assertEqual(ran, [])

    def test_learned_fail_open_spools_during_a_503_and_replays_once_the_server_answers(self) -> None:
        proxy = self.stand_in()
        client = Client(proxy.url, spool_path=self.spool_path, replay_interval=0, auto_replay=False)
        ran: list = []
        lookup = self.tool(client, ran)
        with client.acting_as(token("erin"), agent="bot") as frame:
            proxy.mode = "503"
            with self.assertRaises(Denied) as first:
                lookup("before")  # not known yet: fail_closed
            self.assertEqual(first.exception.reason_code, "fail_closed")
            self.assertIn("HTTP 503", first.exception.reason)
            proxy.mode = "forward"
            d = client.check("lookup_order", {"order_id": "x"})
            self.assertEqual(d.fail_mode, "fail_open")  # learned with this decision
            proxy.mode = "503"
            self.assertEqual(lookup("during"), {"id": "during", "ssn": "123"})  # ran; no redaction possible
            d2 = client.check("lookup_order", {"order_id": "during-2"})
            self.assertEqual((d2.decision, d2.reason_code, d2.local), ("allow", "fail_open", True))
            client.report(d2, {"ok": 1})
        self.assertEqual(ran, ["during"])
        st = os.stat(self.spool_path)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        entries = {e["record"]["args"].get("order_id"): e for e in client.spool.entries()}
        self.assertEqual(set(entries), {"before", "during", "during-2"})
        self.assertEqual({e["record"]["trace_id"] for e in entries.values()}, {frame.trace_id})  # one run
        during = entries["during"]
        self.assertEqual(set(during["record"]), RECORD_KEYS)
        self.assertEqual(during["state"], "done")
        self.assertEqual(
            {k: during["record"][k] for k in ("decision", "reason_code", "outcome", "agent", "chain", "tier")},
            {"decision": "allow", "reason_code": "fail_open", "outcome": "ok", "agent": "bot", "chain": ["bot"], "tier": "interactive"},
        )
        with open(self.spool_path, encoding="utf-8") as f:
            for line in f:
                json.loads(line)  # every line is whole JSON
        call_ids = {e["record"]["call_id"] for e in entries.values()}

        proxy.mode = "forward"
        client.auto_replay = True
        with client.acting_as(token("erin"), agent="bot"):
            lookup("after")  # the next successful contact replays in the background
        wait_for(lambda: client.spool.entries() == [], what="the spool to drain")
        client.close()
        self.assertIn(("POST", "/v1/audit/spool"), proxy.requests)
        stored = spooled("erin", call_ids)
        self.assertEqual(sorted(r["call_id"] for r in stored), sorted(call_ids))  # each exactly once
        by_order = {r["args"]["order_id"]: r for r in stored}
        self.assertEqual((by_order["during"]["decision"], by_order["during"]["outcome"]), ("allow", "ok"))
        self.assertEqual((by_order["before"]["decision"], by_order["before"]["reason_code"]), ("deny", "fail_closed"))
        self.assertIn("spooled by the client", by_order["during"]["reason"])
        self.assertEqual({r["trace_id"] for r in stored}, {frame.trace_id})
        self.assertEqual(client.flush().sent, 0)
        self.assertEqual(len(spooled("erin", call_ids)), len(call_ids))

    def test_closed_port_then_the_server_comes_back_on_it(self) -> None:
        proxy = self.stand_in()
        port = int(proxy.url.rsplit(":", 1)[1])
        client = Client(proxy.url, spool_path=self.spool_path, timeout=1)
        lookup = self.tool(client)
        with client.acting_as(token("frank"), agent="bot"):
            lookup("learn")  # fail_open learned
            proxy.stop()
            self.stand_ins.remove(proxy)
            self.assertEqual(lookup("offline"), {"id": "offline", "ssn": "123"})
        [entry] = client.spool.entries()
        self.assertIn("connection refused", entry["record"]["reason"])
        self.stand_in(port)  # back on the same port
        result = client.flush()
        self.assertEqual((result.sent, result.accepted, result.remaining), (1, 1, 0))
        [stored] = spooled("frank", {entry["record"]["call_id"]})
        self.assertEqual((stored["reason_code"], stored["outcome"], stored["user"]), ("fail_open", "ok", "frank"))

    def test_a_delegation_entered_during_an_outage_is_exchanged_once_the_server_answers(self) -> None:
        proxy = self.stand_in()
        client = Client(proxy.url, spool_path=self.spool_path, auto_replay=False)
        lookup = self.tool(client)
        with client.acting_as(token("frank"), agent="planner"):
            lookup("learn")
            proxy.mode = "503"
            with self.assertLogs("onbehalf", logging.WARNING) as logs:
                with client.delegate("helper") as frame:
                    self.assertIsNone(frame.token)  # not exchanged yet
                    lookup("offline")  # fail_open, recorded with the local chain
                    proxy.mode = "forward"
                    d = client.check("lookup_order", {"order_id": "online"})
                    self.assertIsNotNone(frame.token)
                    self.assertEqual((d.local, d.chain), (False, ("planner", "helper")))
            self.assertIn("delegation to helper not exchanged yet", "\n".join(logs.output))
        [entry] = client.spool.entries()
        self.assertEqual(entry["record"]["chain"], ["planner", "helper"])
        self.assertEqual(entry["token"], token("frank"))  # the nearest token there was

    def test_local_override_is_logged_and_used(self) -> None:
        with self.assertLogs("onbehalf", logging.WARNING) as logs:
            client = Client(f"http://127.0.0.1:{free_port()}", fail_mode="fail_open", spool_path=self.spool_path, timeout=1)
            with client.acting_as(token("alice"), agent="bot"):  # acme declares fail_closed
                self.assertEqual(self.tool(client)("o-1")["id"], "o-1")
        text = "\n".join(logs.output)
        self.assertIn("local fail mode override", text)
        self.assertIn("override fail_open used for lookup_order", text)

    def test_local_fail_closed_override_denies_a_fail_open_tenant(self) -> None:
        proxy = self.stand_in()
        client = Client(proxy.url, fail_mode="fail_closed", spool_path=self.spool_path)
        with client.acting_as(token("erin"), agent="bot"):
            client.check("lookup_order", {})
            proxy.mode = "503"
            with self.assertRaises(Unavailable):
                self.tool(client)("o-1")

    def test_fail_open_without_a_spool_denies(self) -> None:
        client = Client(f"http://127.0.0.1:{free_port()}", fail_mode="fail_open", spool_path=None, timeout=1)
        with client.acting_as(token("alice"), agent="bot"):
            with self.assertRaises(Denied) as caught:
                self.tool(client)("o-1")
        self.assertEqual(caught.exception.reason_code, "fail_closed")
        self.assertIn("no spool", caught.exception.reason)

    def test_an_unwritable_spool_denies_a_fail_open_call(self) -> None:
        target = self.tmp.join("elsewhere.jsonl")
        open(target, "w").close()
        os.makedirs(os.path.dirname(self.spool_path), exist_ok=True)
        os.symlink(target, self.spool_path)  # a spool path that points elsewhere is never followed
        client = Client(f"http://127.0.0.1:{free_port()}", fail_mode="fail_open", spool_path=self.spool_path, timeout=1)
        ran: list = []
        with client.acting_as(token("alice"), agent="bot"):
            with self.assertRaises(Denied) as caught:
                self.tool(client, ran)("o-1")
        self.assertIn("spool", caught.exception.reason)
        self.assertEqual(ran, [])

    def test_replaying_the_same_records_twice_stores_them_once(self) -> None:
        client = Client(f"http://127.0.0.1:{free_port()}", fail_mode="fail_open", spool_path=self.spool_path, timeout=1)
        with client.acting_as(token("gina"), agent="bot"):
            for i in range(20):
                self.tool(client)(f"dup-{i}")
        call_ids = {e["record"]["call_id"] for e in client.spool.entries()}
        self.assertEqual(len(call_ids), 20)
        copy = self.tmp.join("copy.jsonl")
        shutil.copy(self.spool_path, copy)  # as if a crash had kept the file after the server stored it
        first = Client(URL, spool_path=self.spool_path).flush()
        again = Client(URL, spool_path=copy).flush()
        self.assertEqual((first.sent, first.accepted, first.duplicates, first.remaining), (20, 20, 0, 0))
        self.assertEqual((again.sent, again.accepted, again.duplicates, again.remaining), (20, 0, 20, 0))
        self.assertEqual(sorted(r["call_id"] for r in spooled("gina", call_ids)), sorted(call_ids))

    def test_kill_9_mid_replay_loses_nothing_and_duplicates_nothing(self) -> None:
        client = Client(f"http://127.0.0.1:{free_port()}", fail_mode="fail_open", spool_path=self.spool_path, timeout=1)
        with client.acting_as(token("hank"), agent="bot"):
            for i in range(10):
                self.tool(client)(f"kill-{i}")
        call_ids = {e["record"]["call_id"] for e in client.spool.entries()}
        self.assertEqual(len(call_ids), 10)
        proxy = self.stand_in()
        proxy.hold_spool_after = 1  # the 2nd batch is stored by the server, its answer never reaches the client
        script = textwrap.dedent(
            f"""
            from onbehalf import Client
            c = Client({proxy.url!r}, spool_path={self.spool_path!r}, timeout=30)
            c.spool.replay(c._send_spooled, batch_records=3)   # what flush() does, in batches of 3
            raise SystemExit("not killed")
            """
        )
        child = subprocess.Popen([PYTHON, "-c", script], env=python_env(), stderr=subprocess.PIPE)
        try:
            self.assertTrue(proxy.held.wait(20), "the second batch never reached the server")
            os.kill(child.pid, signal.SIGKILL)
        finally:
            _, err = child.communicate(timeout=20)
        self.assertEqual(child.returncode, -signal.SIGKILL, err.decode())
        left = {e["record"]["call_id"] for e in Client(URL, spool_path=self.spool_path).spool.entries()}
        self.assertEqual(len(left), 7)  # the first batch was acknowledged and removed; the second was not
        self.assertEqual(len(spooled("hank", call_ids, expect=6)), 6)  # but the server stored both batches
        result = Client(URL, spool_path=self.spool_path).flush()
        self.assertEqual((result.sent, result.accepted, result.duplicates, result.remaining), (7, 4, 3, 0))
        stored = spooled("hank", call_ids)
        self.assertEqual(sorted(r["call_id"] for r in stored), sorted(call_ids))  # all 10, each once

    def test_a_client_killed_while_the_tool_runs_leaves_the_attempt_on_disk(self) -> None:
        script = textwrap.dedent(
            f"""
            import os
            from onbehalf import Client, governed
            c = Client("http://127.0.0.1:{free_port()}", fail_mode="fail_open", spool_path={self.spool_path!r}, timeout=1)

            @governed(c)
            def lookup_order(order_id: str) -> dict:
                os.kill(os.getpid(), 9)   # the process dies while the tool runs

            with c.acting_as({token("ivan")!r}, agent="bot"):
                lookup_order("crash")
            """
        )
        child = subprocess.run([PYTHON, "-c", script], env=python_env(), capture_output=True, timeout=30)
        self.assertEqual(child.returncode, -signal.SIGKILL, child.stderr.decode())
        [entry] = Client(URL, spool_path=self.spool_path).spool.entries()
        self.assertEqual((entry["state"], entry["record"]["outcome"]), ("started", "none"))
        result = Client(URL, spool_path=self.spool_path).flush()  # its process is gone: replay it now
        self.assertEqual((result.sent, result.remaining), (1, 0))
        [stored] = spooled("ivan", {entry["record"]["call_id"]})
        self.assertEqual((stored["decision"], stored["outcome"], stored["args"]), ("allow", "none", {"order_id": "crash"}))

    def test_a_running_call_is_not_replayed_before_it_is_done(self) -> None:
        proxy = self.stand_in()
        client = Client(proxy.url, fail_mode="fail_open", spool_path=self.spool_path)
        flushed = []

        @governed(client)
        def lookup_order(order_id: str) -> dict:
            proxy.mode = "forward"
            flushed.append(client.flush())  # the call is running: its record must wait
            return {"id": order_id}

        proxy.mode = "503"
        with client.acting_as(token("ivan"), agent="bot"):
            lookup_order("running")
        self.assertEqual((flushed[0].sent, flushed[0].remaining), (0, 1))
        [entry] = client.spool.entries()
        self.assertEqual((entry["state"], entry["record"]["outcome"]), ("done", "ok"))
        self.assertEqual(client.flush().sent, 1)


class OfflineTests(unittest.TestCase):
    """No control plane needed."""

    def test_no_identity_even_when_offline_and_nothing_is_spooled(self) -> None:
        tmp = TempDir()
        self.addCleanup(tmp.cleanup)
        with self.assertLogs("onbehalf", logging.WARNING):
            client = Client(f"http://127.0.0.1:{free_port()}", fail_mode="fail_open", spool_path=tmp.join("spool.jsonl"))

        @governed(client)
        def f() -> int:
            return 1

        with self.assertLogs("onbehalf", logging.WARNING) as logs:
            with self.assertRaises(Denied) as caught:
                f()
        self.assertEqual(caught.exception.reason_code, "no_identity")
        # The anonymous attempt could not be sent; it is not spooled: no one to attribute it to, no token to send it.
        self.assertIn("with no identity bound could not be audited", "\n".join(logs.output))
        self.assertFalse(os.path.exists(tmp.join("spool.jsonl")))

    def test_configuration_is_checked(self) -> None:
        with self.assertRaises(onbehalf.ConfigurationError):
            Client("ftp://example.com")
        with self.assertRaises(onbehalf.ConfigurationError):
            Client("http://127.0.0.1:1", fail_mode="fail_sometimes")
        with self.assertLogs("onbehalf", logging.WARNING) as logs:
            Client("http://onbehalf.example.com", spool_path=None)
        self.assertIn("plain http", logs.output[0])

    def test_tokens_never_show_in_reprs(self) -> None:
        client = Client("http://127.0.0.1:1", spool_path=None)
        secret = "eyJ.secret." + uuid.uuid4().hex
        with client.acting_as(secret, agent="bot") as frame:
            self.assertNotIn(secret, repr(frame))
            self.assertNotIn(secret, repr(onbehalf.current()))


if __name__ == "__main__":
    unittest.main()
