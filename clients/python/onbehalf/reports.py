"""The client's part that reports results after the call returned: one round trip per governed call.

A call whose decision says the control plane does nothing to its output (``post_transform: audit``, and no approval
to confirm) gets the same answer from ``POST /v1/calls/{id}/result`` whatever it reports: ``pass``. So the tool's
output goes back to the caller at once, and the report goes to a queue that a background thread sends on the pooled
connections. What it sends is the outcome the audit keeps (``ok`` or ``error`` and the error text), not the output:
the control plane keeps no output of such a call, so the output never leaves the process.

A report is never lost on the way:

- the control plane unreachable, answering 5xx, 429, 401/403: the report goes to the local spool (``spool.py``, a
  ``result`` line) and is replayed with the audit records, under the human's own token if the delegation token has
  expired meanwhile; it must arrive while the control plane holds the call open (``server.pending_call_seconds``,
  5 minutes by default), or it is moved to ``<spool>.rejected`` with why;
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

from .decisions import Decision
from .spool import SendOutcome, Spool, SpoolError, now_iso
from .transport import _Outage

log = logging.getLogger("onbehalf")

QUEUE_SIZE = 10_000


@dataclass(frozen=True)
class _Report:
    """One result to send: ``record`` is what a spooled ``result`` line holds."""

    token: str
    fallback_token: str | None
    record: dict[str, Any]


class _Reports:
    """Part of :class:`~onbehalf.Client`: results reported in the background, and spooled when they cannot be."""

    spool: Spool | None
    replay_interval: float
    timeout: float

    def _init_reports(self, background: bool, queue_size: int = QUEUE_SIZE) -> None:
        self.background_reports = bool(background)
        self._reports: queue.Queue[_Report] = queue.Queue(maxsize=queue_size)
        self._reporter: threading.Thread | None = None
        self._reporter_lock = threading.Lock()
        self._in_flight_report: _Report | None = None
        self._reports_down_until = 0.0  # while the control plane is known unreachable, reports go to the spool
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
        return report is not None and self._spool_report(report, why)

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
        context = decision._context
        root = list(context.ancestors())[-1].token if context is not None else None
        return _Report(decision._token, root if root != decision._token else None, record)

    def _drain_reports(self, timeout: float | None = None) -> bool:
        """Wait until every queued report was sent or spooled; ``True`` if so within ``timeout`` seconds."""
        q = self._reports
        deadline = None if timeout is None else time.monotonic() + timeout
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
        pending = [] if self._in_flight_report is None else [self._in_flight_report]
        while True:
            try:
                pending.append(self._reports.get_nowait())
            except queue.Empty:
                break
            self._reports.task_done()
        for report in pending:
            self._spool_report(report, why)

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
            report = q.get()
            self._in_flight_report = report
            try:
                self._deliver(report)
            except Exception:  # noqa: BLE001 - the thread must live on; the report is kept
                log.exception("onbehalf: reporting call %s failed; spooled", report.record.get("call_id"))
                self._spool_report(report, "the reporting thread failed")
            finally:
                self._in_flight_report = None
                q.task_done()

    def _deliver(self, report: _Report) -> None:
        if time.monotonic() < self._reports_down_until:
            self._spool_report(report, "the control plane was unreachable a moment ago")
            return
        outcome = self._send_result(report.token, report.record)
        if outcome.kind == "retry" and outcome.message.startswith("unreachable"):
            self._reports_down_until = time.monotonic() + min(self.replay_interval, 5.0)
        if outcome.kind in ("retry", "keep"):
            self._spool_report(report, outcome.message)
        elif outcome.kind == "rejected":
            log.error("onbehalf: the result of call %s was refused: %s", report.record.get("call_id"), outcome.message)

    def _spool_report(self, report: _Report, why: str) -> bool:
        call_id = report.record.get("call_id")
        if self.spool is None:
            log.error("onbehalf: the result of call %s could not be reported (%s), and there is no spool", call_id, why)
            return False
        try:
            self.spool.append(report.token, report.record, "done", report.fallback_token, kind="result")
        except SpoolError as e:
            log.error("onbehalf: the result of call %s could not be reported (%s) nor spooled: %s", call_id, why, e)
            return False
        log.warning("onbehalf: the result of call %s is spooled, to be replayed: %s", call_id, why)
        return True

    # -- one report, now or from the spool -----------------------------------------------------------------

    def _send_result(self, token: str, record: dict[str, Any]) -> SendOutcome:
        """``POST /v1/calls/{id}/result`` of a spooled or queued report; what the control plane said, as the spool's
        replay understands it (``ok``; ``retry``: later; ``keep``: not under this token; ``rejected``: never)."""
        body: dict[str, Any] = {"status": record.get("status") or "error"}
        if body["status"] != "ok":
            body["error"] = str(record.get("error") or "error")
        path = f"/v1/calls/{urllib.parse.quote(str(record.get('call_id')), safe='')}/result"
        try:
            res = self._send("POST", path, token=token, json_body=body)
        except _Outage as o:
            return SendOutcome("retry", message=f"unreachable: {o.reason}")
        if res.status == 200:
            return SendOutcome("ok", accepted=1)
        if res.status == 409:  # reported already (an earlier attempt arrived, its answer did not)
            return SendOutcome("ok", duplicates=1)
        if res.status in (401, 403):
            return SendOutcome("keep", message=f"HTTP {res.status}: {res.error_message}")
        if res.status in (408, 425, 429):
            return SendOutcome("retry", message=f"HTTP {res.status}")
        return SendOutcome("rejected", message=f"HTTP {res.status}: {res.error_message}")


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
        client._in_flight_report = None


atexit.register(_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
