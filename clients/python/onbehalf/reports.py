"""The client's part that reports results after the call returned: one round trip per governed call.

A call whose decision says the control plane does nothing to its output (``post_transform: audit``, and no approval
to confirm) gets the same answer from ``POST /v1/calls/{id}/result`` whatever it reports: ``pass``. So the tool's
output goes back to the caller at once, and the report goes to a queue that a background thread sends on the pooled
connections. What it sends is the outcome the audit keeps (``ok`` or ``error`` and the error text), not the output:
the control plane keeps no output of such a call, so the output never leaves the process.

The thread sends what is queued in batches (``POST /v1/calls/results``, one request for up to 256 reports of one
bearer): it takes the first report, waits up to ``report_batch_wait`` seconds (default 0.02) for more, and sends
them together, so that calls made back to back cost the control plane one request each, not two. A flush (``flush``,
``close``, the end of the process) sends at once what is gathered. A control plane without the batch route (older
than this client) is sent the reports one by one.

A report is never lost on the way:

- the control plane unreachable, answering 5xx, 429, 401/403: the report goes to the local spool (``spool.py``, a
  ``result`` line) and is replayed with the audit records, under the human's own token if the delegation token has
  expired meanwhile; it must arrive while the control plane holds the call open (``server.pending_call_seconds``,
  5 minutes by default), or it is moved to ``<spool>.rejected`` with why;
- a batch cut off (the connection broken, the control plane gone): every report of it is spooled; a report the
  control plane refused on its own (its item's status) is handled as that report alone would be;
- a full queue (the control plane slower than the tools): the report is sent in the caller's thread;
- :meth:`~onbehalf.Client.flush`, :meth:`~onbehalf.Client.close` and the end of the process (``atexit``) wait for
  the queue; what is still queued when the wait times out is spooled;
- a forked child drops its copy of the parent's queue (the parent sends those).

Without a spool (``spool_path=None``) or with ``background_reports=False`` every report is sent in the caller's
thread, as for an output that is redacted or blocked.

Uses, from the other parts of :class:`~onbehalf.Client`: ``_send`` (``transport.py``), ``spool`` and
``replay_interval`` (``fail_modes.py``).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
import urllib.parse
import weakref
from dataclasses import dataclass
from typing import Any

from . import _http
from .decisions import Decision
from .spool import MAX_RESULTS_BATCH as MAX_BATCH, SendOutcome, Spool, SpoolError, now_iso
from .transport import _Outage

log = logging.getLogger("onbehalf")

QUEUE_SIZE = 10_000
BATCH_WAIT = 0.02  # seconds the reporting thread waits for more reports after the first, before it sends them
MAX_BATCH_BYTES = 256 * 1024  # well within the control plane's server.max_body_bytes (1 MiB by default)
# a batch answered 200 that does not say what became of a report: kept, and sent again later (a 409 then: "ok")
_UNANSWERED = SendOutcome("retry", message="the control plane's answer did not say what became of it")


@dataclass(frozen=True)
class _Report:
    """One result to send: ``record`` is what a spooled ``result`` line holds."""

    token: str
    fallback_token: str | None
    record: dict[str, Any]

    @property
    def size(self) -> int:
        """About what the report weighs in a batch's body (bytes)."""
        return 160 + len(str(self.record.get("error") or "")) + len(str(self.record.get("report_token") or ""))


class _Reports:
    """Part of :class:`~onbehalf.Client`: results reported in the background, and spooled when they cannot be."""

    spool: Spool | None
    replay_interval: float
    timeout: float

    def _init_reports(self, background: bool, batch_wait: float = BATCH_WAIT, queue_size: int = QUEUE_SIZE) -> None:
        self.background_reports = bool(background)
        self.report_batch_wait = float(batch_wait)
        self._reports: queue.Queue[_Report] = queue.Queue(maxsize=queue_size)
        self._reporter: threading.Thread | None = None
        self._reporter_lock = threading.Lock()
        self._in_flight_reports: list[_Report] = []  # the batch being sent, less what was settled already
        self._reports_down_until = 0.0  # while the control plane is known unreachable, reports go to the spool
        self._batch_route = True  # False once the control plane said it has no POST /v1/calls/results
        # A flush asks the reporter to send what is queued without waiting for more: it counts flushes asked
        # (``_flushes``) and wakes the reporter if it is waiting (``_flush_now``); the reporter notes the count
        # once it took everything queued (``_flushes_done``), and waits for more again only when they match.
        self._flushes = 0
        self._flushes_done = 0
        self._flush_now = threading.Event()
        _LIVE.add(self)

    def _report_later(self, decision: Decision, status: str, error: str | None, latency_us: int) -> bool:
        """Queue the report of a call whose output the control plane does not transform; ``False`` when it must
        be sent now instead (background reports off, no spool to fall back on, an approval to confirm, the queue
        full)."""
        if not self.background_reports or decision.post_transform != "audit" or decision.approval is not None:
            return False
        report = self._report_of(decision, status, error, latency_us)
        if report is None:
            return False
        try:
            self._reports.put_nowait(report)
        except queue.Full:
            return False
        self._start_reporter()
        return True

    def _spool_result(self, decision: Decision, status: str, error: str | None, why: str) -> bool:
        """Spool the report of a call sent in the caller's thread that did not arrive; ``True`` if spooled."""
        report = self._report_of(decision, status, error, 0)
        return report is not None and self._spool_reports([report], why)

    def _report_of(self, decision: Decision, status: str, error: str | None, latency_us: int) -> _Report | None:
        """The report of a call, as queued and spooled; ``None`` when it could not be kept (no spool)."""
        if self.spool is None or not decision.call_id or not decision._token:
            return None
        record: dict[str, Any] = {
            "call_id": decision.call_id,
            "tool": decision.tool,
            "status": status,
            "latency_us": max(0, int(latency_us)),
            "time": now_iso(),
        }
        if status != "ok":
            record["error"] = (error or "error")[:10_000]
        if decision._report_token is not None:  # check()'s calls wait nowhere on the server: this brings them back
            record["report_token"] = decision._report_token
        context = decision._context
        root = list(context.ancestors())[-1].token if context is not None else None
        return _Report(decision._token, root if root != decision._token else None, record)

    def _drain_reports(self, timeout: float | None = None) -> bool:
        """Wait until every queued report was sent or spooled; ``True`` if so within ``timeout`` seconds."""
        q = self._reports
        deadline = None if timeout is None else time.monotonic() + timeout
        if q.unfinished_tasks:
            self._flushes += 1
            self._flush_now.set()  # the reporter sends what it gathered without waiting for more
        with q.all_tasks_done:
            while q.unfinished_tasks:
                if deadline is None:
                    q.all_tasks_done.wait(0.5)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                q.all_tasks_done.wait(min(remaining, 0.5))
        return True

    def _spool_queued_reports(self, why: str) -> None:
        """Spool what is still queued (and the report being sent, in case it never arrives): the process ends."""
        pending = list(self._in_flight_reports)
        while True:
            try:
                item = self._reports.get_nowait()
            except queue.Empty:
                break
            self._reports.task_done()
            pending.append(item)
        self._spool_reports(pending, why)

    # -- the background thread -----------------------------------------------------------------------------

    def _start_reporter(self) -> None:
        thread = self._reporter
        if thread is not None and thread.is_alive():
            return
        with self._reporter_lock:
            if self._reporter is None or not self._reporter.is_alive():
                self._reporter = threading.Thread(target=self._report_loop, name="onbehalf-reports", daemon=True)
                self._reporter.start()

    def _report_loop(self) -> None:
        q = self._reports
        while True:
            batch = self._next_batch()
            self._in_flight_reports = list(batch)
            try:
                self._deliver(batch)
            except Exception:  # noqa: BLE001 - the thread must live on; the reports are kept
                log.exception("onbehalf: reporting %d results failed; spooled", len(self._in_flight_reports))
                self._spool_reports(list(self._in_flight_reports), "the reporting thread failed")
            finally:
                self._in_flight_reports = []
                for _ in batch:
                    q.task_done()

    def _next_batch(self) -> list[_Report]:
        """The next reports to send: the first one queued, and what else is queued ``report_batch_wait`` seconds
        later (at once when a flush asks), up to a batch's bounds.

        While it waits for more the thread sleeps on ``_flush_now``, not on the queue, so that a report queued
        meanwhile does not wake it: each wake-up would take the interpreter lock from the caller's thread."""
        q = self._reports
        batch = [q.get()]
        if self._flushes == self._flushes_done and self.report_batch_wait > 0:
            self._flush_now.wait(self.report_batch_wait)
        self._flush_now.clear()
        asked = self._flushes
        size = batch[0].size
        while len(batch) < MAX_BATCH and size < MAX_BATCH_BYTES:
            try:
                report = q.get_nowait()
            except queue.Empty:
                self._flushes_done = asked  # everything queued before those flushes is in this batch
                break
            batch.append(report)
            size += report.size
        return batch

    def _deliver(self, batch: list[_Report]) -> None:
        """Send a batch, one request per bearer (a report is sent under the token its call was checked with)."""
        by_token: dict[str, list[_Report]] = {}
        for report in batch:
            by_token.setdefault(report.token, []).append(report)
        for token, reports in by_token.items():
            if time.monotonic() < self._reports_down_until:
                down = SendOutcome("retry", message="the control plane was unreachable a moment ago")
                outcomes = [down] * len(reports)
            else:
                outcomes = self._send_results(token, [r.record for r in reports])
            kept: dict[str, list[_Report]] = {}  # by why
            for report, outcome in zip(reports, outcomes):
                if outcome.kind == "retry" and outcome.message.startswith("unreachable"):
                    self._reports_down_until = time.monotonic() + min(self.replay_interval, 5.0)
                if outcome.kind in ("retry", "keep"):
                    kept.setdefault(outcome.message, []).append(report)
                elif outcome.kind == "rejected":
                    log.error(
                        "onbehalf: the result of call %s was refused: %s", report.record.get("call_id"), outcome.message
                    )
            for why, these in kept.items():
                self._spool_reports(these, why)
            settled = {id(r) for r in reports}
            self._in_flight_reports = [r for r in self._in_flight_reports if id(r) not in settled]

    def _spool_reports(self, reports: list[_Report], why: str) -> bool:
        """Keep reports that could not be sent in the spool (one write), to be replayed; ``True`` if kept."""
        if not reports:
            return True
        calls = f"call {reports[0].record.get('call_id')}" if len(reports) == 1 else f"{len(reports)} calls"
        if self.spool is None:
            log.error("onbehalf: the result of %s could not be reported (%s), and there is no spool", calls, why)
            return False
        try:
            self.spool.append_many([(r.token, r.record, r.fallback_token) for r in reports], "done", kind="result")
        except SpoolError as e:
            log.error("onbehalf: the result of %s could not be reported (%s) nor spooled: %s", calls, why, e)
            return False
        log.warning("onbehalf: the result of %s is spooled, to be replayed: %s", calls, why)
        return True

    # -- one report, now or from the spool -----------------------------------------------------------------

    def _send_results(self, token: str, records: list[dict[str, Any]]) -> list[SendOutcome]:
        """``POST /v1/calls/results`` of queued or spooled reports of one bearer (at most ``MAX_BATCH``): what the
        control plane said to each, as the spool's replay understands it (``ok``; ``retry``: later; ``keep``: not
        under this token; ``rejected``: never). Sent one by one to a control plane without the batch route, or when
        it refused the batch as a whole (too large, malformed)."""
        if not self._batch_route:
            return [self._send_result(token, r) for r in records]
        items = [{"call_id": str(r.get("call_id")), **_result_body(r)} for r in records]
        try:
            res = self._send("POST", "/v1/calls/results", token=token, json_body={"results": items})
        except _Outage as o:
            return [SendOutcome("retry", message=f"unreachable: {o.reason}")] * len(records)
        answers = res.body.get("results") if res.status == 200 and isinstance(res.body, dict) else None
        if isinstance(answers, list) and len(answers) == len(records):
            return [
                _outcome(a.get("status"), _http.Response(a.get("status"), a).error_message)
                if isinstance(a, dict) and isinstance(a.get("status"), int)
                else _UNANSWERED
                for a in answers
            ]
        if res.status in (404, 405) and res.error_code == "ERR_NOT_FOUND" and "no route" in res.error_message:
            log.info("onbehalf: %s has no POST /v1/calls/results: results are sent one by one", self.base_url)
            self._batch_route = False
        if res.status in (400, 404, 405, 413):
            return [self._send_result(token, r) for r in records]
        if res.status == 200:
            return [_UNANSWERED] * len(records)
        return [_outcome(res.status, res.error_message)] * len(records)

    def _send_result(self, token: str, record: dict[str, Any]) -> SendOutcome:
        """``POST /v1/calls/{id}/result`` of one queued or spooled report, as :meth:`_send_results` understands it."""
        path = f"/v1/calls/{urllib.parse.quote(str(record.get('call_id')), safe='')}/result"
        try:
            res = self._send("POST", path, token=token, json_body=_result_body(record))
        except _Outage as o:
            return SendOutcome("retry", message=f"unreachable: {o.reason}")
        return _outcome(res.status, res.error_message)


def _result_body(record: dict[str, Any]) -> dict[str, Any]:
    """What a report sends of a queued or spooled ``result`` record: never an output (nobody transforms it)."""
    body: dict[str, Any] = {"status": record.get("status") or "error"}
    if body["status"] != "ok":
        body["error"] = str(record.get("error") or "error")
    if isinstance(record.get("report_token"), str):
        body["report_token"] = record["report_token"]
    return body


def _outcome(status: int, message: str) -> SendOutcome:
    """What the control plane's answer to one report (or to a whole batch) means for it."""
    if status == 200:
        return SendOutcome("ok", accepted=1)
    if status == 409:  # reported already (an earlier attempt arrived, its answer did not)
        return SendOutcome("ok", duplicates=1)
    if status in (401, 403):
        return SendOutcome("keep", message=f"HTTP {status}: {message}")
    if status in (408, 425, 429) or status >= 500:
        return SendOutcome("retry", message=f"HTTP {status}: {message}")
    return SendOutcome("rejected", message=f"HTTP {status}: {message}")


# -- the end of the process, and forks ---------------------------------------------------------------------

_LIVE: "weakref.WeakSet[_Reports]" = weakref.WeakSet()


def _at_exit() -> None:
    for client in list(_LIVE):
        if not client._drain_reports(timeout=2 * client.timeout + 1):
            client._spool_queued_reports("the process ended before the report was sent")


def _after_fork() -> None:
    for client in list(_LIVE):
        client._reports = queue.Queue(maxsize=client._reports.maxsize)  # the parent sends what was queued
        client._reporter = None
        client._reporter_lock = threading.Lock()
        client._in_flight_reports = []
        client._flush_now = threading.Event()
        client._flushes = client._flushes_done = 0


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
