"""The control-plane client: bind identity, decide calls, report results, delegate, fail modes, spool replay.

Example::

    from onbehalf import Client

    client = Client("http://127.0.0.1:8787")
    with client.acting_as(user_token, agent="support-bot", tier="interactive"):
        decision = client.check("get_customer", {"id": "c-1"})
        if decision.decision == "allow":
            output = client.report(decision, output=db.customers.get("c-1"))   # possibly redacted
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
import threading
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from . import _http
from ._json import to_jsonable
from ._trace import checked_trace_id, new_trace_id
from .context import (
    Frame,
    bind,
    current,
    refused_frame,
    root_frame,
    signed_delegation,
    unbind,
    validate_agent,
    validate_tier,
)
from .errors import ApprovalRequired, ConfigurationError, Denied, OnbehalfError, Unauthenticated, Unavailable
from .spool import DEFAULT_SPOOL, ReplayResult, SendOutcome, Spool, SpoolError, make_record, uuid7

log = logging.getLogger("onbehalf")

TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
FAIL_MODES = ("fail_closed", "fail_open")
_CACHE_SIZE = 4096


@dataclass(frozen=True)
class Decision:
    """The answer to "may this call go ahead?", from the control plane or from the fail mode.

    ``decision`` is ``allow``, ``deny`` or ``ask``; ``reason_code`` one of the server's codes (``ok``,
    ``missing_scope``, ``permission_deny``, ``rule_deny``, ``rate_limited``, ``approval_required``,
    ``fail_closed``, ``fail_open``, ``unauthenticated``, ``error``, ...). ``local`` is true when the client
    decided by the fail mode because the control plane could not be reached. ``approval`` is
    ``{id, status, expires_at, url}`` for ``ask``. ``trace_id`` is the run's trace id, as audited.
    """

    decision: str
    reason_code: str
    reason: str
    call_id: str | None
    tool: str
    rule: str | None = None
    effective_scopes: tuple[str, ...] = ()
    chain: tuple[str, ...] = ()
    fail_mode: str = "fail_closed"
    approval: Mapping[str, Any] | None = None
    tenant: str | None = None
    post_transform: str | None = None
    local: bool = False
    trace_id: str | None = None
    _token: str | None = field(default=None, repr=False, compare=False)
    _frame: Frame | None = field(default=None, repr=False, compare=False)
    _record: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    _args: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def allowed(self) -> bool:
        return self.decision == "allow"


@dataclass(frozen=True)
class Principal:
    """A verified human (``POST /v1/verify``). ``token`` is the bearer it was verified from."""

    sub: str
    user: str
    tenant: str | None
    email: str | None
    scopes: tuple[str, ...]
    roles: tuple[str, ...] = ()
    issuer: str | None = None
    exp: int | None = None
    chain: tuple[str, ...] = ()
    tier: str | None = None
    token: str = field(default="", repr=False)


class Binding:
    """What ``acting_as`` and ``delegate`` return: a context manager for ``with`` and ``async with``.

    Entering binds a :class:`~onbehalf.context.Frame` for the block (in this thread, or this asyncio task and
    the tasks it creates) and returns it; leaving restores what was bound before. ``async with`` performs the
    delegation exchange in a worker thread, so it does not block the event loop.
    """

    def __init__(self, make: Callable[[], Frame]) -> None:
        self._make = make
        self._resets: list[contextvars.Token] = []

    def __enter__(self) -> Frame:
        frame = self._make()
        self._resets.append(bind(frame))
        return frame

    def __exit__(self, *exc: object) -> None:
        unbind(self._resets.pop())

    async def __aenter__(self) -> Frame:
        frame = await asyncio.to_thread(self._make)
        self._resets.append(bind(frame))
        return frame

    async def __aexit__(self, *exc: object) -> None:
        unbind(self._resets.pop())


class _Outage(Exception):
    """The control plane did not answer, or answered 5xx."""

    def __init__(self, reason: str, body: Any = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.call_id = body.get("call_id") if isinstance(body, dict) and isinstance(body.get("call_id"), str) else None


class Client:
    """A client of one onbehalf control plane.

    Args:
        base_url: where ``onbehalf serve`` listens, e.g. ``http://127.0.0.1:8787``.
        fail_mode: ``None`` (default) follows the tenant's declared fail mode, which comes back with every
            decision and is cached per token and tenant (``fail_closed`` until known). ``"fail_closed"`` or
            ``"fail_open"`` overrides it locally; the override is logged whenever it is used.
        spool_path: the local audit spool of fail-open calls (JSON lines, 0600). ``None``: no spool, so a
            fail-open tenant's calls are denied during an outage (their audit could not be kept).
        timeout: seconds per HTTP request (approval long-polls add their wait).
        approval_timeout: how long a governed call waits for a human when policy says ``ask``; 0 (default)
            raises :class:`~onbehalf.ApprovalRequired` at once.
        stale_after: seconds after which a ``started`` spool record of a call that never finished is replayed.
        replay_interval: at most one automatic spool replay per this many seconds.
        auto_replay: replay the spool in a background thread whenever the control plane answers (default);
            ``False``: only on :meth:`flush`.

    Example::

        client = Client("http://127.0.0.1:8787", spool_path="~/.onbehalf/spool.jsonl")
        with client.acting_as(token, agent="support-bot", tier="interactive"):
            with client.delegate("specialist", scopes=["email.read"], tier="subagent"):
                read_email(mailbox="a@example.com")
        client.flush()
    """

    def __init__(
        self,
        base_url: str,
        fail_mode: str | None = None,
        spool_path: str | os.PathLike[str] | None = DEFAULT_SPOOL,
        timeout: float = 2.0,
        *,
        approval_timeout: float = 0.0,
        stale_after: float = 900.0,
        replay_interval: float = 5.0,
        auto_replay: bool = True,
    ) -> None:
        parts = urllib.parse.urlsplit(str(base_url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(f"base_url must be an http(s) URL like http://127.0.0.1:8787; got {base_url!r}")
        if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            log.warning("onbehalf: %s is plain http: user tokens cross the network unencrypted", base_url)
        if fail_mode not in (None, *FAIL_MODES):
            raise ConfigurationError(f"fail_mode must be None, 'fail_closed' or 'fail_open'; got {fail_mode!r}")
        if timeout <= 0:
            raise ConfigurationError("timeout must be positive")
        self.base_url = str(base_url).rstrip("/")
        self.fail_mode = fail_mode
        self.timeout = float(timeout)
        self.approval_timeout = float(approval_timeout)
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

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, fail_mode={self.fail_mode!r})"

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- binding -------------------------------------------------------------------------------------------

    def acting_as(
        self, token: str, agent: str, tier: str = "interactive", *, trace_id: str | None = None
    ) -> Binding:
        """Bind a human's token for a block; calls in it act for that human through ``agent``.

        The block is one run with one trace id (``trace_id``, else the one a delegation token carries, else the
        active OpenTelemetry span's, else a new one): every check, delegation and spooled record of the run
        carries it, so ``GET /v1/audit?trace=<trace id>`` finds the whole run.

        Example::

            with client.acting_as(token, agent="support-bot", tier="interactive"):
                await team.run(task="...")
            async with client.acting_as(token, agent="support-bot"):
                ...
        """
        validate_agent(agent, strict=False)
        validate_tier(tier)
        if trace_id is not None:
            checked_trace_id(trace_id)
        return Binding(lambda: root_frame(token, agent, tier, trace_id))

    def delegate(self, agent: str, scopes: Sequence[str] | str | None = None, tier: str | None = None) -> Binding:
        """Hand the work to ``agent`` for a block: exchange the bound token for a narrower delegation token.

        The control plane (``POST /v1/token``, RFC 8693) signs a token whose chain is the current chain plus
        ``agent`` and whose scopes are ``scopes`` ∩ the current ones (``None``: all of them); it is bound for
        the block, and nested ``delegate`` blocks extend the chain further. ``tier`` is the new hop's tier:
        ``subagent`` by default for the first hop, the tier of the hop it extends for later ones. Every hop's tier
        is signed into the chain and a call is decided under each of them, the strictest winning, so a hop can
        only narrow what the run may do. The delegation keeps the run's trace id. When the control plane cannot
        be reached the exchange is retried on each call and the calls follow the fail mode meanwhile. Inside an
        agent whose hand-off was refused, the delegation is refused too: calls in the block are refused (and
        audited as refused attempts).

        Raises :class:`~onbehalf.Denied` (``no_identity``) when nothing is bound, :class:`~onbehalf.Unauthenticated`
        when the bound token is refused.

        Example::

            with client.delegate("billing-agent", scopes=["refunds:write"], tier="subagent"):
                issue_refund(order="o-1", amount=20)
        """
        validate_agent(agent, strict=True)
        if tier is not None:
            validate_tier(tier)
        wanted = _scopes(scopes)

        def make() -> Frame:
            parent = current()
            if parent is None:
                raise Denied("no_identity", _NO_IDENTITY)
            return self._delegate_frame(parent, agent, wanted, tier)

        return Binding(make)

    # -- deciding ------------------------------------------------------------------------------------------

    def check(self, tool: str, args: Mapping[str, Any] | None = None) -> Decision:
        """Ask whether ``tool`` may run with ``args`` for the bound identity (``POST /v1/check``).

        Returns the :class:`Decision` (``ask`` is returned, not waited for: see :meth:`wait_for_approval`). A
        control plane that cannot be reached yields the fail mode's decision (``local=True``). Raises
        :class:`~onbehalf.Denied` (``no_identity``) when nothing is bound, and the refused hand-off's
        ``reason_code`` for an agent whose hand-off was refused; both are still sent to the control plane as
        attempts, so the audit shows them. Run the tool only when ``decision.decision == "allow"``, then
        :meth:`report` its result.
        """
        return self._decide(current(), tool, dict(args or {}))

    async def acheck(self, tool: str, args: Mapping[str, Any] | None = None) -> Decision:
        """:meth:`check` without blocking the event loop."""
        frame = current()
        return await asyncio.to_thread(self._decide, frame, tool, dict(args or {}))

    def report(self, decision: Decision, output: Any = None, *, error: str | None = None, latency_us: int = 0) -> Any:
        """Report what an allowed call did; return its output as policy lets the model see it.

        ``error`` reports a failure instead (the return value is then ``None``). Raises
        :class:`~onbehalf.Denied` (``output_blocked``) when policy blocks the output, and (``fail_closed``) when
        the output needs a transform the unreachable control plane cannot apply.
        """
        if error is not None:
            # A failure may come with what the model is shown of it (an AutoGen error result): it is redacted
            # (or withheld) like any output, and that is what comes back.
            shown = self._finish(decision, "error", output, error, latency_us)
            return None if output is None else shown
        return self._finish(decision, "ok", output, None, latency_us)

    def wait_for_approval(self, decision: Decision, timeout: float | None = None) -> Decision:
        """Long-poll the approval of an ``ask`` decision; return it as ``allow`` once a human approved.

        Raises :class:`~onbehalf.Denied` (``approval_denied`` / ``approval_expired``), or
        :class:`~onbehalf.ApprovalRequired` when ``timeout`` (default: the client's ``approval_timeout``) ends first.
        """
        return self._resolve_ask(decision, self.approval_timeout if timeout is None else timeout)

    def verify(self, authorization: str | None) -> Principal:
        """Verify a bearer token (``Authorization`` header value or bare token) with ``POST /v1/verify``.

        Raises :class:`~onbehalf.Unauthenticated` when it does not verify, :class:`~onbehalf.Unavailable` when the
        control plane cannot be reached.
        """
        token = _bare_token(authorization)
        if token is None:
            raise Unauthenticated("no bearer token: send Authorization: Bearer <token>")
        try:
            res = self._send("POST", "/v1/verify", token=token)
        except _Outage as o:
            raise Unavailable(f"cannot verify the token: the control plane is unreachable ({o.reason})") from None
        if res.status == 200 and isinstance(res.body, dict) and isinstance(res.body.get("sub"), str):
            b = res.body
            principal = Principal(
                sub=b["sub"],
                user=str(b.get("user") or b["sub"]),
                tenant=b.get("tenant"),
                email=b.get("email"),
                scopes=tuple(b.get("scopes") or ()),
                roles=tuple(b.get("roles") or ()),
                issuer=b.get("issuer"),
                exp=b.get("exp"),
                chain=tuple(b.get("chain") or ()),
                tier=b.get("tier"),
                token=token,
            )
            if principal.tenant:
                with self._cache_lock:
                    _put(self._token_tenants, token, principal.tenant)
            return principal
        if res.status == 401:
            raise Unauthenticated(res.error_message)
        raise Denied("error", f"the control plane refused to verify the token (HTTP {res.status}): {res.error_message}")

    # -- spool ---------------------------------------------------------------------------------------------

    def flush(self) -> ReplayResult:
        """Replay the local spool now; return what was sent and what is left."""
        if self.spool is None:
            return ReplayResult()
        with self._replay_lock:
            self._last_replay = time.monotonic()
            return self.spool.replay(self._send_spooled)

    def close(self, timeout: float | None = 10.0) -> None:
        """Wait for a background replay that is running."""
        thread = self._replay_thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)

    # -- internals: deciding -------------------------------------------------------------------------------

    def _decide(
        self, frame: Frame | None, tool: str, args: Mapping[str, Any], approval: str | None = None
    ) -> Decision:
        if not isinstance(tool, str) or not tool:
            raise ConfigurationError("a tool name is required")
        if frame is None:
            self._anonymous_attempt(tool)
            raise Denied("no_identity", _NO_IDENTITY, tool=tool)
        safe_args = to_jsonable(dict(args))
        if frame.denied is not None:
            self._refused_attempt(frame, tool, safe_args)  # raises
        try:
            token = self._token_for(frame)
            body: dict[str, Any] = {"tool": tool, "args": safe_args, "agent": {"name": frame.agent, "tier": frame.tier}}
            if frame.trace_id is not None:
                body["trace_id"] = frame.trace_id
            if approval is not None:
                body["approval"] = approval
            res = self._send("POST", "/v1/check", token=token, json_body=body)
        except _Outage as o:
            return self._outage_decision(frame, tool, safe_args, o)
        b = res.body
        if res.status == 200 and isinstance(b, dict) and b.get("decision") in ("allow", "deny", "ask"):
            d = Decision(
                decision=b["decision"],
                reason_code=str(b.get("reason_code") or ""),
                reason=str(b.get("reason") or ""),
                call_id=b.get("call_id"),
                tool=tool,
                rule=b.get("rule"),
                effective_scopes=tuple(b.get("effective_scopes") or ()),
                chain=tuple(b.get("chain") or frame.chain),
                fail_mode=b.get("fail_mode") if b.get("fail_mode") in FAIL_MODES else "fail_closed",
                approval=b.get("approval"),
                tenant=b.get("tenant"),
                post_transform=b.get("post_transform"),
                trace_id=b.get("trace_id") if isinstance(b.get("trace_id"), str) else frame.trace_id,
                _token=token,
                _frame=frame,
                _args=safe_args,
            )
            self._learn(token, d)
            return d
        code, reason = ("unauthenticated", res.error_message) if res.status == 401 else (
            "error",
            f"the control plane refused the check (HTTP {res.status}): {res.error_message}",
        )
        return Decision(
            "deny", code, reason, None, tool, chain=frame.chain, trace_id=frame.trace_id, _token=token, _frame=frame
        )

    def _refused_attempt(self, frame: Frame, tool: str, args: Any) -> None:
        """Refuse a call of an agent whose hand-off was refused, after recording it as an attempt.

        The call goes to ``POST /v1/check`` with ``client_refusal``: the control plane audits it as a denied
        attempt with the refused hand-off's reason code, and never allows it. Whatever the answer, the call is
        refused. When the control plane cannot be reached, the refusal is spooled as a ``fail_closed`` denial
        whose reason keeps the real one. Always raises :class:`~onbehalf.Denied`.
        """
        refusal = frame.denied
        assert refusal is not None
        code, reason = refusal.reason_code, refusal.reason
        # the control plane takes its own deny codes only: one of the client's is sent as "error", named in the reason
        sent = (code, reason) if code in _SERVER_DENY_CODES else ("error", f"{code}: {reason}")
        call_id: str | None = None
        authorized = next((f for f in frame.ancestors() if f.denied is None), None)
        try:
            token = self._token_for(authorized) if authorized is not None else None
            if token is None:
                raise _Outage("no token to send the refused call with")
            body: dict[str, Any] = {
                "tool": tool,
                "args": args,
                "agent": {"name": frame.agent, "tier": frame.tier},
                "client_refusal": {"reason_code": sent[0], "reason": sent[1][:2000]},
            }
            if frame.trace_id is not None:
                body["trace_id"] = frame.trace_id
            res = self._send("POST", "/v1/check", token=token, json_body=body)
        except _Outage as o:
            call_id = o.call_id or uuid7()
            self._spool_refusal(frame, tool, args, call_id, f"refused by the client ({code}): {reason}", o.reason)
        except Denied as e:  # the delegation it would be sent under was refused: that refusal is audited
            log.warning("onbehalf: the refused call of %s to %s was not sent: %s", frame.agent, tool, e.reason)
        else:
            b = res.body if isinstance(res.body, dict) else {}
            call_id = b.get("call_id") if isinstance(b.get("call_id"), str) else None
            if res.status != 200 or b.get("decision") != "deny":
                log.error(
                    "onbehalf: the control plane did not record the refused call of %s to %s as a denial "
                    "(HTTP %s, decision %r: %s); refused anyway",
                    frame.agent,
                    tool,
                    res.status,
                    b.get("decision"),
                    res.error_message,
                )
        raise Denied(code, reason, tool=tool, call_id=call_id, chain=frame.chain)

    def _spool_refusal(self, frame: Frame, tool: str, args: Any, call_id: str, reason: str, outage: str) -> None:
        """Keep a refusal the control plane could not hear of: a ``fail_closed`` denial (the only code a spooled
        denial may have) whose reason says what really refused it."""
        token = frame.nearest_token()
        if self.spool is None or not token:
            log.warning("onbehalf: a refused call of %s to %s could not be audited: %s", frame.agent, tool, outage)
            return
        record = make_record(
            call_id=call_id,
            tool=tool,
            args=args,
            agent=frame.agent,
            tier=frame.tier,
            chain=frame.chain,
            decision="deny",
            reason_code="fail_closed",
            reason=f"{reason}; the control plane is unreachable ({outage})",
            outcome="none",
            trace_id=frame.trace_id,
        )
        try:
            self.spool.append(token, record, "done", list(frame.ancestors())[-1].token)
        except SpoolError as e:
            log.error("onbehalf: could not spool the refused call of %s to %s: %s", frame.agent, tool, e)

    def _anonymous_attempt(self, tool: str) -> None:
        """Tell the control plane of a call made with no identity bound: ``POST /v1/check`` without a token.

        It answers 401 and audits an anonymous ``unauthenticated`` attempt. The arguments are not sent (the
        control plane keeps none for a call it cannot attribute). Unreachable: nothing is spooled, as there is no
        one to attribute the record to and no token to replay it with.
        """
        body = {"tool": tool, "agent": {"name": _UNBOUND_AGENT}, "trace_id": new_trace_id()}
        try:
            res = self._send("POST", "/v1/check", json_body=body)
        except _Outage as o:
            log.warning("onbehalf: a call to %s with no identity bound could not be audited: %s", tool, o.reason)
            return
        if res.status != 401:
            log.error("onbehalf: a call to %s with no identity was answered HTTP %s, not 401", tool, res.status)

    def _resolve_ask(self, decision: Decision, timeout: float) -> Decision:
        approval = decision.approval or {}
        approval_id = approval.get("id")
        if not isinstance(approval_id, str):
            raise Denied("error", "the control plane asked for approval without naming it", tool=decision.tool)
        common = {"tool": decision.tool, "call_id": decision.call_id, "chain": decision.chain, "decision": decision}
        if timeout <= 0:
            raise ApprovalRequired(
                approval_id,
                f"{decision.reason}: waiting for a human to approve ({approval_id})",
                expires_at=approval.get("expires_at"),
                **common,
            )
        deadline = time.monotonic() + timeout
        path = f"/v1/approvals/{urllib.parse.quote(approval_id, safe='')}"
        unreachable = ""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                why = f"; the control plane was unreachable ({unreachable})" if unreachable else ""
                raise ApprovalRequired(
                    approval_id,
                    f"{decision.reason}: nobody decided within {timeout:g} s ({approval_id}){why}",
                    expires_at=approval.get("expires_at"),
                    **common,
                )
            wait = min(60.0, remaining)
            try:
                res = self._send(
                    "GET", f"{path}?wait={wait:.1f}", token=decision._token, timeout=wait + self.timeout + 1
                )
            except _Outage as o:
                unreachable = o.reason
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                continue
            if res.status != 200 or not isinstance(res.body, dict):
                raise Denied("error", f"cannot read approval {approval_id}: {res.error_message}", **common)
            status = res.body.get("status")
            by = res.body.get("decided_by") or "an approver"
            note = f": {res.body['note']}" if res.body.get("note") else ""
            if status == "approved":
                return self._use_approval(decision, approval_id, common)
            if status in ("denied", "revoked"):
                raise Denied("approval_denied", f"denied by {by}{note}", **common)
            if status == "expired":
                raise Denied("approval_expired", "nobody approved the call in time", **common)
            if status == "used":
                raise Denied("approval_required", f"approval {approval_id} was used already", **common)

    def _use_approval(self, decision: Decision, approval_id: str, common: Mapping[str, Any]) -> Decision:
        """Ask again with the approval: the control plane uses it up and decides the call under the policy in
        force (a revocation since the approval wins). The answer is what the call may do now."""
        again = self._decide(decision._frame, decision.tool or "", decision._args or {}, approval=approval_id)
        if again.local:
            # An approval is used up by the control plane; one it cannot see is not used, whatever the fail mode.
            raise Denied("fail_closed", f"approved, but the control plane could not confirm it: {again.reason}", **common)
        if again.decision == "allow":
            return again
        raise Denied.from_decision(again)

    def _finish(self, decision: Decision, status: str, output: Any, error: str | None, latency_us: int) -> Any:
        if decision.decision != "allow":
            raise Denied.from_decision(decision)
        if decision.local:
            self._finish_local(decision, status, latency_us)
            return output
        body: dict[str, Any] = {"status": status}
        if status == "ok" or output is not None:
            body["output"] = to_jsonable(output)
        if status != "ok":
            body["error"] = (error or "error")[:10_000]
        path = f"/v1/calls/{urllib.parse.quote(str(decision.call_id), safe='')}/result"
        try:
            res = self._send("POST", path, token=decision._token, json_body=body)
        except _Outage as o:
            return self._unreported(decision, output, f"the control plane is unreachable ({o.reason})")
        b = res.body
        if res.status == 200 and isinstance(b, dict) and b.get("action") in ("pass", "redact", "block"):
            if b["action"] == "block":
                raise Denied(
                    "output_blocked",
                    "output blocked",
                    tool=decision.tool,
                    call_id=decision.call_id,
                    chain=decision.chain,
                )
            return b.get("output") if b["action"] == "redact" else output
        message = res.error_message
        for code in ("approval_denied", "approval_expired"):
            if message.startswith(code):
                raise Denied(code, message[len(code) :].lstrip(": "), tool=decision.tool, call_id=decision.call_id)
        why = f"the control plane refused the result (HTTP {res.status}: {message})"
        return self._unreported(decision, output, why)

    def _unreported(self, decision: Decision, output: Any, why: str) -> Any:
        if decision.post_transform == "audit":
            log.warning(
                "onbehalf: %s; the output of call %s is returned unreported (no output policy)", why, decision.call_id
            )
            return output
        raise Denied(
            "fail_closed",
            f"output withheld: {why}, and policy applies '{decision.post_transform}' to this tool's output",
            tool=decision.tool,
            call_id=decision.call_id,
            chain=decision.chain,
        )

    # -- internals: fail modes -----------------------------------------------------------------------------

    def _outage_decision(self, frame: Frame, tool: str, args: Any, outage: _Outage) -> Decision:
        declared = self._declared_mode(frame)
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
        token = frame.nearest_token() or ""
        root = list(frame.ancestors())[-1].token
        common = {
            "call_id": call_id,
            "tool": tool,
            "chain": frame.chain,
            "fail_mode": mode,
            "local": True,
            "trace_id": frame.trace_id,
        }

        def record(decision: str, reason_code: str, reason: str) -> dict[str, Any]:
            return make_record(
                call_id=call_id,
                tool=tool,
                args=args,
                agent=frame.agent,
                tier=frame.tier,
                chain=frame.chain,
                decision=decision,
                reason_code=reason_code,
                reason=reason,
                outcome="none",
                trace_id=frame.trace_id,
            )

        if mode == "fail_open":
            if self.spool is None:
                reason = f"{why}; the fail mode is fail_open, but no spool is configured to keep the audit record"
                return Decision("deny", "fail_closed", reason, **common, _token=token, _frame=frame)
            reason = f"{why}; allowed by fail mode fail_open" + (" (local override)" if self.fail_mode else "")
            rec = record("allow", "fail_open", reason)
            self.spool.begin(call_id)
            try:
                self.spool.append(token, rec, "started", root)
            except SpoolError as e:
                self.spool.end(call_id)
                reason = f"{why}; fail_open needs the local audit spool, which failed: {e}"
                return Decision("deny", "fail_closed", reason, **common, _token=token, _frame=frame)
            return Decision("allow", "fail_open", reason, **common, _token=token, _frame=frame, _record=rec)
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
        return Decision("deny", "fail_closed", reason, **common, _token=token, _frame=frame)

    def _finish_local(self, decision: Decision, status: str, latency_us: int) -> None:
        if self.spool is None or decision._record is None or decision.call_id is None:
            return
        rec = dict(decision._record, outcome="ok" if status == "ok" else "error", latency_us=max(0, int(latency_us)))
        frame = decision._frame
        root = list(frame.ancestors())[-1].token if frame is not None else None
        try:
            self.spool.append(decision._token or "", rec, "done", root)
        except SpoolError as e:
            log.error(
                "onbehalf: could not spool the outcome of call %s (its start is spooled): %s", decision.call_id, e
            )
        finally:
            self.spool.end(decision.call_id)

    def _learn(self, token: str, d: Decision) -> None:
        with self._cache_lock:
            _put(self._token_modes, token, d.fail_mode)
            if d.tenant:
                _put(self._token_tenants, token, d.tenant)
                self._tenant_modes[d.tenant] = d.fail_mode

    def _declared_mode(self, frame: Frame) -> str | None:
        with self._cache_lock:
            for f in frame.ancestors():
                if f.token is None:
                    continue
                mode = self._token_modes.get(f.token) or self._tenant_modes.get(self._token_tenants.get(f.token, ""))
                if mode is not None:
                    return mode
        return None

    # -- internals: delegation -----------------------------------------------------------------------------

    def _delegate_frame(
        self, parent: Frame, agent: str, scopes: tuple[str, ...] | None, tier: str | None
    ) -> Frame:
        if tier is None:
            tier = parent.tier if parent.is_delegation else "subagent"
        if parent.denied is not None:  # an agent whose hand-off was refused delegates nothing it could use
            return refused_frame(parent, agent, tier, parent.denied)
        child = Frame(
            token=None,
            agent=agent,
            tier=tier,
            chain=(*parent.chain, agent),
            run=parent.run,
            parent=parent,
            requested_scopes=scopes,
            trace_id=parent.trace_id,
        )
        try:
            self._token_for(child)
        except _Outage as o:
            log.warning(
                "onbehalf: delegation to %s not exchanged yet: the control plane is unreachable (%s); "
                "retried on the next call, which follows the fail mode meanwhile",
                agent,
                o.reason,
            )
        return child

    def _token_for(self, frame: Frame) -> str:
        """The frame's token, exchanging (or renewing) a delegation first. Raises _Outage."""
        with frame.lock:
            if frame.parent is None:
                assert frame.token is not None
                return frame.token
            if frame.token is not None and not frame.expiring():
                return frame.token
            parent = frame.parent
            subject = self._token_for(parent)
            body: dict[str, Any] = {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": subject,
                "actor": frame.agent,
                "tier": frame.tier,
            }
            if frame.trace_id is not None:
                body["trace_id"] = frame.trace_id
            # The control plane cannot know which agent holds a human's own token: name it, so the signed chain
            # of ``acting_as(token, agent="planner")`` then ``delegate("researcher")`` is [planner, researcher].
            # A token that carries a signed chain already needs (and takes) no such name.
            if parent.parent is None and signed_delegation(subject) is None:
                body["subject_actor"] = parent.agent
                body["subject_tier"] = parent.tier  # signed too: its calls' successors are decided under it
            if frame.requested_scopes is not None:
                body["scope"] = " ".join(frame.requested_scopes)
            res = self._send("POST", "/v1/token", json_body=body)
            b = res.body
            if res.status == 200 and isinstance(b, dict) and isinstance(b.get("access_token"), str):
                frame.token = b["access_token"]
                frame.scopes = tuple(str(b.get("scope") or "").split())
                frame.expires_at = time.monotonic() + float(b.get("expires_in") or 600)
                if frame.requested_scopes is not None:
                    dropped = [s for s in frame.requested_scopes if s not in frame.scopes]
                    if dropped:
                        log.info(
                            "onbehalf: delegation to %s granted without %s (the subject does not hold them)",
                            frame.agent,
                            " ".join(dropped),
                        )
                return frame.token
            if res.status == 401:
                raise Unauthenticated(
                    f"the delegation to {frame.agent} was refused: {res.error_message}", chain=frame.chain
                )
            raise Denied(
                "error",
                f"the control plane refused the delegation to {frame.agent} (HTTP {res.status}): {res.error_message}",
                chain=frame.chain,
            )

    # -- internals: HTTP -----------------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        timeout: float | None = None,
        contact: bool = True,
    ) -> _http.Response:
        try:
            res = _http.request(
                method, self.base_url + path, token=token, json_body=json_body, timeout=timeout or self.timeout
            )
        except _http.Unreachable as e:
            raise _Outage(str(e)) from None
        if res.status >= 500:
            raise _Outage(f"HTTP {res.status}: {res.error_message}", res.body)
        if contact:
            self._contacted()
        return res

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
        if not self.auto_replay or self.spool is None or time.monotonic() - self._last_replay < self.replay_interval:
            return
        if not self.spool.has_data() or (self._replay_thread is not None and self._replay_thread.is_alive()):
            return
        self._last_replay = time.monotonic()
        thread = threading.Thread(target=self._background_replay, name="onbehalf-spool-replay", daemon=True)
        self._replay_thread = thread
        thread.start()

    def _background_replay(self) -> None:
        if not self._replay_lock.acquire(blocking=False):
            return
        try:
            assert self.spool is not None
            result = self.spool.replay(self._send_spooled)
            if result.sent:
                log.info("onbehalf: replayed %d spooled audit records (%d remain)", result.sent, result.remaining)
        except Exception:  # noqa: BLE001 - a background thread must not die loudly; the records stay on disk
            log.exception("onbehalf: spool replay failed; the records stay in the spool")
        finally:
            self._replay_lock.release()


_UNBOUND_AGENT = "(no identity bound)"
# The deny reason codes of the control plane (src/policy/decide.ts), the ones ``client_refusal`` accepts.
_SERVER_DENY_CODES = frozenset(
    {
        "unauthenticated",
        "tenant_mismatch",
        "not_a_member",
        "missing_scope",
        "permission_deny",
        "rule_deny",
        "rule_over_budget",
        "rate_limited",
        "approval_required",
        "approval_denied",
        "approval_expired",
        "fail_closed",
        "error",
    }
)
_NO_IDENTITY = (
    "no identity is bound: run the agent inside client.acting_as(token, agent=..., tier=...) "
    "or call onbehalf.set_context(token, agent=..., tier=...) first"
)


def _scopes(scopes: Sequence[str] | str | None) -> tuple[str, ...] | None:
    if scopes is None:
        return None
    if isinstance(scopes, str):
        return tuple(scopes.split())
    out = tuple(scopes)
    if not all(isinstance(s, str) and s and not any(c.isspace() for c in s) for s in out):
        raise ValueError(f"scopes are non-empty strings without spaces; got {scopes!r}")
    return out


def _bare_token(authorization: str | None) -> str | None:
    if not isinstance(authorization, str):
        return None
    value = authorization.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def _put(cache: OrderedDict, key: str, value: str) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


# -- the default client (the seed's three lines) --------------------------------------------------------------

_default: Client | None = None
_default_lock = threading.Lock()


def configure(client: Client | None) -> None:
    """Set (or clear) the client used by ``onbehalf.verify``, ``set_context`` and bare ``@governed``."""
    global _default
    with _default_lock:
        _default = client


def default_client() -> Client:
    """The default client, made on first use from the environment.

    ``ONBEHALF_URL`` (required), ``ONBEHALF_FAIL_MODE``, ``ONBEHALF_SPOOL`` (a path, or ``none``),
    ``ONBEHALF_TIMEOUT``, ``ONBEHALF_APPROVAL_TIMEOUT``.
    """
    global _default
    with _default_lock:
        if _default is None:
            url = os.environ.get("ONBEHALF_URL", "").strip()
            if not url:
                raise ConfigurationError(
                    "no control plane configured: set ONBEHALF_URL (e.g. http://127.0.0.1:8787), call "
                    "onbehalf.configure(Client(...)), or pass a client to @governed(client)"
                )
            spool = os.environ.get("ONBEHALF_SPOOL", DEFAULT_SPOOL)
            _default = Client(
                url,
                fail_mode=os.environ.get("ONBEHALF_FAIL_MODE") or None,
                spool_path=None if spool.lower() in ("", "none") else spool,
                timeout=float(os.environ.get("ONBEHALF_TIMEOUT") or 2.0),
                approval_timeout=float(os.environ.get("ONBEHALF_APPROVAL_TIMEOUT") or 0.0),
            )
        return _default


def verify(authorization: str | None) -> Principal:
    """Verify a request's ``Authorization`` header on the default client (``POST /v1/verify``).

    Example::

        user = onbehalf.verify(request.headers["authorization"])
        onbehalf.set_context(user.token, agent="support-bot", tier="interactive")
    """
    return default_client().verify(authorization)


def set_context(token: str, agent: str, tier: str = "interactive", *, trace_id: str | None = None) -> Frame:
    """Bind ``token`` for the rest of the current task or thread (no block needed).

    It stays bound until the task or thread ends, or :func:`clear_context`. Prefer ``client.acting_as`` where a
    block fits: it restores what was bound before. Like ``acting_as``, it starts a run with its own trace id
    (``trace_id``, else a delegation token's, the active OpenTelemetry span's, or a new one).
    """
    validate_agent(agent, strict=False)
    validate_tier(tier)
    frame = root_frame(token, agent, tier, trace_id)
    bind(frame)
    return frame


def clear_context() -> None:
    """Unbind whatever is bound in the current task or thread."""
    bind(None)


__all__ = [
    "Binding",
    "Client",
    "Decision",
    "OnbehalfError",
    "Principal",
    "clear_context",
    "configure",
    "default_client",
    "set_context",
    "verify",
]
