"""The client's part for when the control plane cannot be reached: the fail mode, the spool, and replay.

Every decision carries its tenant's declared fail mode; the client remembers it per token and per tenant and uses
it at the next outage (``fail_closed`` while it is not known, or the client's local override). ``fail_open`` lets
a call run only once its audit record is on disk in the spool (``spool.py``); ``fail_closed`` denies it, and
spools the denial too. Refusals the control plane could not hear of are spooled the same way. As soon as the
control plane answers again, a background thread replays the spool (``flush`` does it at once).

Uses, from the other parts of :class:`~onbehalf.Client`: ``_send`` (``transport.py``), whose ``_contacted`` hook
it fills in.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

from .context import RunContext
from .decisions import Decision
from .spool import ReplayResult, SendOutcome, Spool, SpoolError, make_record, uuid7
from .transport import _Outage

log = logging.getLogger("onbehalf")

_CACHE_SIZE = 4096


class _FailModes:
    """Part of :class:`~onbehalf.Client`: ``flush``, ``close``, and every decision made without the control plane."""

    base_url: str
    fail_mode: str | None
    spool: Spool | None
    replay_interval: float
    auto_replay: bool

    def _init_fail_modes(
        self,
        fail_mode: str | None,
        spool_path: str | os.PathLike[str] | None,
        stale_after: float,
        replay_interval: float,
        auto_replay: bool,
    ) -> None:
        self.fail_mode = fail_mode
        self.replay_interval = replay_interval
        self.auto_replay = auto_replay
        self.spool = Spool(spool_path, stale_after=stale_after) if spool_path is not None else None
        if fail_mode is not None:
            log.warning(
                "onbehalf: local fail mode override: %s is used instead of each tenant's declared fail mode "
                "whenever %s cannot be reached",
                fail_mode,
                self.base_url,
            )
        self._cache_lock = threading.Lock()
        self._token_modes: OrderedDict[str, str] = OrderedDict()
        self._token_tenants: OrderedDict[str, str] = OrderedDict()
        self._tenant_modes: dict[str, str] = {}
        self._replay_lock = threading.Lock()
        self._replay_thread: threading.Thread | None = None
        self._last_replay = 0.0
        self._last_look = (0.0, -1)  # when the spool was last found empty, and its append count then

    def flush(self) -> ReplayResult:
        """Send the results still queued (``reports.py``), then replay the local spool now; return what the replay
        sent and what is left."""
        self._drain_reports()
        if self.spool is None:
            return ReplayResult()
        with self._replay_lock:
            self._last_replay = time.monotonic()
            return self.spool.replay(self._send_spooled, send_results=self._send_results)

    def close(self, timeout: float | None = 10.0) -> None:
        """Send (or spool) the results still queued, wait for a background replay that is running, and close the
        pooled connections."""
        if not self._drain_reports(timeout):
            self._spool_queued_reports("the client was closed before the report was sent")
        thread = self._replay_thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        self._pool.close()

    # -- deciding without the control plane ----------------------------------------------------------------

    def _outage_decision(self, context: RunContext, tool: str, args: Any, outage: _Outage) -> Decision:
        declared = self._declared_mode(context)
        if self.fail_mode is not None:
            mode = self.fail_mode
            log.warning(
                "onbehalf: control plane unreachable (%s); local fail mode override %s used for %s "
                "(tenant declared %s)",
                outage.reason,
                mode,
                tool,
                declared or "unknown",
            )
        else:
            mode = declared or "fail_closed"
        why = f"the control plane is unreachable ({outage.reason})"
        call_id = outage.call_id or uuid7()
        token = context.nearest_token() or ""
        root = list(context.ancestors())[-1].token
        common = {
            "call_id": call_id,
            "tool": tool,
            "chain": context.chain,
            "fail_mode": mode,
            "local": True,
            "trace_id": context.trace_id,
        }

        def record(decision: str, reason_code: str, reason: str) -> dict[str, Any]:
            return make_record(
                call_id=call_id,
                tool=tool,
                args=args,
                agent=context.agent,
                tier=context.tier,
                chain=context.chain,
                decision=decision,
                reason_code=reason_code,
                reason=reason,
                outcome="none",
                trace_id=context.trace_id,
            )

        if mode == "fail_open" and context.limited:
            # Only the control plane evaluates a run's task capabilities: allowing now would step outside them.
            mode = "fail_closed"
            why += "; the run has task capabilities, which cannot be evaluated without it"
            common["fail_mode"] = mode
        if mode == "fail_open":
            if self.spool is None:
                reason = f"{why}; the fail mode is fail_open, but no spool is configured to keep the audit record"
                return Decision("deny", "fail_closed", reason, **common, _token=token, _context=context)
            reason = f"{why}; allowed by fail mode fail_open" + (" (local override)" if self.fail_mode else "")
            rec = record("allow", "fail_open", reason)
            self.spool.begin(call_id)
            try:
                self.spool.append(token, rec, "started", root)
            except SpoolError as e:
                self.spool.end(call_id)
                reason = f"{why}; fail_open needs the local audit spool, which failed: {e}"
                return Decision("deny", "fail_closed", reason, **common, _token=token, _context=context)
            return Decision("allow", "fail_open", reason, **common, _token=token, _context=context, _record=rec)
        unknown = (
            ""
            if declared or self.fail_mode
            else " (the tenant's fail mode is not known yet: fail_closed until the control plane answered once)"
        )
        reason = f"{why}; denied by fail mode fail_closed{unknown}"
        if self.spool is not None and token:
            try:
                self.spool.append(token, record("deny", "fail_closed", reason), "done", root)
            except SpoolError as e:
                log.error("onbehalf: could not spool the denial of %s: %s", tool, e)
        return Decision("deny", "fail_closed", reason, **common, _token=token, _context=context)

    def _finish_local(self, decision: Decision, status: str, latency_us: int) -> None:
        """Spool the outcome of a call the fail mode let run (the last line of a call id wins)."""
        if self.spool is None or decision._record is None or decision.call_id is None:
            return
        rec = dict(decision._record, outcome="ok" if status == "ok" else "error", latency_us=max(0, int(latency_us)))
        context = decision._context
        root = list(context.ancestors())[-1].token if context is not None else None
        try:
            self.spool.append(decision._token or "", rec, "done", root)
        except SpoolError as e:
            log.error(
                "onbehalf: could not spool the outcome of call %s (its start is spooled): %s", decision.call_id, e
            )
        finally:
            self.spool.end(decision.call_id)

    def _spool_refusal(
        self, context: RunContext, tool: str, args: Any, call_id: str, reason: str, outage: str
    ) -> None:
        """Keep a refusal the control plane could not hear of: a ``fail_closed`` denial (the only code a spooled
        denial may have) whose reason says what really refused it."""
        token = context.nearest_token()
        if self.spool is None or not token:
            log.warning("onbehalf: a refused call of %s to %s could not be audited: %s", context.agent, tool, outage)
            return
        record = make_record(
            call_id=call_id,
            tool=tool,
            args=args,
            agent=context.agent,
            tier=context.tier,
            chain=context.chain,
            decision="deny",
            reason_code="fail_closed",
            reason=f"{reason}; the control plane is unreachable ({outage})",
            outcome="none",
            trace_id=context.trace_id,
        )
        try:
            self.spool.append(token, record, "done", list(context.ancestors())[-1].token)
        except SpoolError as e:
            log.error("onbehalf: could not spool the refused call of %s to %s: %s", context.agent, tool, e)

    # -- the declared fail modes, learnt from decisions ----------------------------------------------------

    def _learn(self, token: str, d: Decision) -> None:
        with self._cache_lock:
            _put(self._token_modes, token, d.fail_mode)
            if d.tenant:
                _put(self._token_tenants, token, d.tenant)
                self._tenant_modes[d.tenant] = d.fail_mode

    def _learn_tenant(self, token: str, tenant: str) -> None:
        """A verified token's tenant: its fail mode is the tenant's, once a decision told it."""
        with self._cache_lock:
            _put(self._token_tenants, token, tenant)

    def _declared_mode(self, context: RunContext) -> str | None:
        with self._cache_lock:
            for c in context.ancestors():
                if c.token is None:
                    continue
                mode = self._token_modes.get(c.token) or self._tenant_modes.get(self._token_tenants.get(c.token, ""))
                if mode is not None:
                    return mode
        return None

    # -- replay --------------------------------------------------------------------------------------------

    def _send_spooled(self, token: str, records: list) -> SendOutcome:
        try:
            res = self._send("POST", "/v1/audit/spool", token=token, json_body={"records": records}, contact=False)
        except _Outage as o:
            return SendOutcome("retry", message=o.reason)
        if res.status == 200 and isinstance(res.body, dict):
            refused = [
                (int(r["index"]), f'{r.get("code", "refused")}: {r.get("reason", "")}')
                for r in res.body.get("refused") or []
                if isinstance(r, dict) and isinstance(r.get("index"), int)
            ]
            return SendOutcome(
                "ok",
                int(res.body.get("accepted") or 0),
                int(res.body.get("duplicates") or 0),
                refused=refused,
                overrides=int(res.body.get("overrides") or 0),
            )
        if res.status in (401, 403):
            return SendOutcome("keep", message=f"HTTP {res.status}: {res.error_message}")
        if res.status in (408, 425, 429):
            return SendOutcome("retry", message=f"HTTP {res.status}")
        return SendOutcome("rejected", message=f"HTTP {res.status}: {res.error_message}")

    def _contacted(self) -> None:
        """The control plane answered: replay the spool in the background if it has records (rate-limited)."""
        now = time.monotonic()
        if not self.auto_replay or self.spool is None or now - self._last_replay < self.replay_interval:
            return
        # a spool found empty a moment ago, and not written since by this process, is not looked at again
        # (one stat per call otherwise); another process's lines are found within a second
        if self._last_look[1] == self.spool.appends and now - self._last_look[0] < 1.0:
            return
        if not self.spool.has_data():
            self._last_look = (now, self.spool.appends)
            return
        if self._replay_thread is not None and self._replay_thread.is_alive():
            return
        self._last_replay = now
        thread = threading.Thread(target=self._background_replay, name="onbehalf-spool-replay", daemon=True)
        self._replay_thread = thread
        thread.start()

    def _background_replay(self) -> None:
        if not self._replay_lock.acquire(blocking=False):
            return
        try:
            assert self.spool is not None
            result = self.spool.replay(self._send_spooled, send_results=self._send_results)
            if result.sent:
                log.info("onbehalf: replayed %d spooled audit records (%d remain)", result.sent, result.remaining)
        except Exception:  # noqa: BLE001 - a background thread must not die loudly; the records stay on disk
            log.exception("onbehalf: spool replay failed; the records stay in the spool")
        finally:
            self._replay_lock.release()


def _put(cache: OrderedDict, key: str, value: str) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)
