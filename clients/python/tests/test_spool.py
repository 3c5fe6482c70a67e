"""The spool file on its own: durability details, refusals, what replay does with each kind of answer."""

from __future__ import annotations

import json
import os
import stat
import unittest
import uuid

from onbehalf.spool import MAX_ARGS_BYTES, SendOutcome, Spool, SpoolError, make_record, uuid7

from support import TempDir


def record(call_id: str | None = None, **over: object) -> dict:
    base = dict(
        call_id=call_id or uuid7(),
        tool="lookup_order",
        args={"order_id": "o-1"},
        agent="bot",
        tier="interactive",
        chain=["bot"],
        decision="allow",
        reason_code="fail_open",
        reason="unreachable",
        outcome="ok",
    )
    base.update(over)
    return make_record(**base)  # type: ignore[arg-type]


class SpoolTests(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = TempDir()
        self.path = self.tmp.join("dir", "spool.jsonl")
        self.spool = Spool(self.path)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def sender(self, answers: dict[str, str] | None = None):
        sent: list[tuple[str, list]] = []

        def send(token: str, records: list) -> SendOutcome:
            sent.append((token, records))
            kind = (answers or {}).get(token, "ok")
            return SendOutcome(kind, accepted=len(records) if kind == "ok" else 0, message=kind)

        return send, sent

    def test_file_and_directory_are_private(self) -> None:
        self.spool.append("t", record(), "done")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.dirname(self.path)).st_mode) & 0o077, 0)

    def test_a_loose_existing_file_is_tightened(self) -> None:
        os.makedirs(os.path.dirname(self.path))
        with open(self.path, "w"):
            pass
        os.chmod(self.path, 0o644)
        with self.assertLogs("onbehalf", "WARNING"):
            self.spool.append("t", record(), "done")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_a_symlink_is_never_followed(self) -> None:
        os.makedirs(os.path.dirname(self.path))
        target = self.tmp.join("target")
        open(target, "w").close()
        os.symlink(target, self.path)
        with self.assertRaises(SpoolError):
            self.spool.append("t", record(), "done")
        self.assertEqual(os.path.getsize(target), 0)

    def test_a_torn_line_is_moved_aside_and_never_glued_to_the_next(self) -> None:
        first = record()
        self.spool.append("t", first, "done")
        with open(self.path, "ab") as f:
            f.write(b'{"v":1,"token":"t","state":"do')  # a crash mid-write
        second = record()
        self.spool.append("t", second, "done")
        self.assertEqual({e["record"]["call_id"] for e in self.spool.entries()}, {first["call_id"], second["call_id"]})
        send, sent = self.sender()
        result = self.spool.replay(send)
        self.assertEqual((result.sent, result.remaining), (2, 0))
        with open(self.path + ".corrupt", "rb") as f:
            self.assertIn(b'"state":"do', f.read())

    def test_the_last_line_of_a_call_wins(self) -> None:
        r = record(outcome="none")
        self.spool.append("t", r, "started")
        self.spool.append("t", dict(r, outcome="ok", latency_us=5), "done")
        [entry] = self.spool.entries()
        self.assertEqual((entry["state"], entry["record"]["outcome"]), ("done", "ok"))

    def test_records_are_grouped_by_token_and_batched(self) -> None:
        for i in range(5):
            self.spool.append("alice-token", record(), "done")
        for i in range(2):
            self.spool.append("bob-token", record(), "done")
        send, sent = self.sender()
        result = self.spool.replay(send, batch_records=2)
        self.assertEqual(result.sent, 7)
        self.assertEqual([(t, len(r)) for t, r in sent], [("alice-token", 2), ("alice-token", 2), ("alice-token", 1), ("bob-token", 2)])
        self.assertEqual(os.path.getsize(self.path), 0)

    def test_refused_tokens_keep_their_records_and_the_fallback_is_tried(self) -> None:
        self.spool.append("expired-delegation", record(), "done", fallback_token="human")
        self.spool.append("expired-alone", record(), "done")
        send, sent = self.sender({"expired-delegation": "keep", "expired-alone": "keep"})
        with self.assertLogs("onbehalf", "WARNING"):
            result = self.spool.replay(send)
        self.assertEqual([t for t, _ in sent], ["expired-delegation", "human", "expired-alone"])
        self.assertEqual((result.sent, result.kept, result.remaining), (1, 1, 1))

    def test_malformed_records_are_moved_to_rejected(self) -> None:
        self.spool.append("t", record(), "done")
        send, _ = self.sender({"t": "rejected"})
        with self.assertLogs("onbehalf", "ERROR"):
            result = self.spool.replay(send)
        self.assertEqual((result.rejected, result.remaining), (1, 0))
        with open(self.path + ".rejected") as f:
            self.assertEqual(json.loads(f.readline())["rejected"], "rejected")

    def test_an_unreachable_server_stops_the_replay_and_keeps_everything(self) -> None:
        for _ in range(3):
            self.spool.append("t", record(), "done")
        send, sent = self.sender({"t": "retry"})
        result = self.spool.replay(send, batch_records=1)
        self.assertEqual((len(sent), result.sent, result.remaining, result.error), (1, 0, 3, "retry"))

    def test_started_records_wait_for_their_process(self) -> None:
        r = record(outcome="none")
        self.spool.append("t", r, "started")  # written by this (living) process
        send, sent = self.sender()
        self.assertEqual(self.spool.replay(send).sent, 0)
        self.assertEqual(Spool(self.path, stale_after=0).replay(send).sent, 1)  # stale: sent

    def test_make_record_fits_the_server_schema(self) -> None:
        big = {"blob": "x" * (MAX_ARGS_BYTES + 10)}
        r = record(args=big, tool="t" * 300, reason="r" * 3000, chain=[f"a{i}" for i in range(40)], trace_id="z" * 300)
        self.assertTrue(r["args"]["_onbehalf_truncated"])
        self.assertEqual(len(r["args"]["sha256"]), 64)
        self.assertEqual((len(r["tool"]), len(r["reason"]), len(r["chain"]), len(r["trace_id"])), (200, 2000, 32, 200))
        self.assertEqual(r["chain"][-1], "a39")
        self.assertRegex(r["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")

    def test_uuid7(self) -> None:
        ids = [uuid7() for _ in range(50)]
        self.assertTrue(all(uuid.UUID(i).version == 7 for i in ids))
        self.assertEqual(len(set(ids)), 50)


if __name__ == "__main__":
    unittest.main()
