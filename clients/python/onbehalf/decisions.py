"""The client's part that decides calls: ``check`` before a call, ``report`` after it, ``verify`` a human.

A call goes out as ``POST /v1/check`` for the bound run context and comes back as a :class:`Decision` (``allow``,
``deny`` or ``ask``); an allowed call's outcome goes to ``POST /v1/calls/{call_id}/result``, whose answer says how
much of the output the model may see. Calls the client refuses on its own (nothing bound; an agent whose hand-off
was refused) are still sent, as attempts, so that the audit shows them.

This module reads top to bottom along one call; it uses, from the other parts of :class:`~onbehalf.Client`:
``_send`` (``transport.py``), ``_token_for`` (``delegations.py``), and ``_outage_decision``, ``_finish_local``,
``_spool_refusal``, ``_learn``, ``_learn_tenant`` (``fail_modes.py``) for when the control plane cannot be reached.

Example::

    with client.acting_as(user_token, agent="support-bot", tier="interactive"):
        decision = client.check("get_customer", {"id": "c-1"})
        if decision.decision == "allow":
            output = client.report(decision, output=db.customers.get("c-1"))   # possibly redacted
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Mapping

from ._json import to_jsonable
from ._trace import new_trace_id
from .context import RunContext, current
from .errors import ConfigurationError, Denied, Unauthenticated, Unavailable
from .spool import uuid7
from .transport import _Outage

log = logging.getLogger("onbehalf")

FAIL_MODES = ("fail_closed", "fail_open")


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
    _context: RunContext | None = field(default=None, repr=False, compare=False)
    _record: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    _args: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    # ``check()``'s calls wait nowhere on the server: their result comes back with this token (``report()``).
    _report_token: str | None = field(default=None, repr=False, compare=False)
    _report: str | None = field(default=None, repr=False, compare=False)

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


_UNBOUND_AGENT = "(no identity bound)"
# The deny reason codes of the control plane (src/decision.ts), the ones ``client_refusal`` accepts.
_SERVER_DENY_CODES = frozenset(
    {
        "unauthenticated",
        "tenant_mismatch",
        "not_a_member",
        "missing_scope",
        "permission_deny",
        "rule_deny",
        "rule_over_budget",
        "capability_deny",
        "capability_error",
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


class _Decisions:
    """Part of :class:`~onbehalf.Client`: ``check``, ``acheck``, ``report``, ``verify``."""

    def check(self, tool: str, args: Mapping[str, Any] | None = None) -> Decision:
        """Ask whether ``tool`` may run with ``args`` for the bound identity (``POST /v1/check``).

        Returns the :class:`Decision` (``ask`` is returned, not waited for: see :meth:`wait_for_approval`). A
        control plane that cannot be reached yields the fail mode's decision (``local=True``). Raises
        :class:`~onbehalf.Denied` (``no_identity``) when nothing is bound, and the refused hand-off's
        ``reason_code`` for an agent whose hand-off was refused; both are still sent to the control plane as
        attempts, so the audit shows them. Run the tool only when ``decision.decision == "allow"``, then
        :meth:`report` its result.

        The control plane keeps nothing for the call (``"report": "token"``): a decision you never report costs
        the server nothing, and its audit record says ``outcome: unreported``. The answer carries a report token
        that :meth:`report` sends back with the result, within the server's ``pending_call_seconds`` (default
        5 minutes); the result is then audited and its output redacted as usual.
        """
        return self._decide(current(), tool, dict(args or {}), report="token")

    async def acheck(self, tool: str, args: Mapping[str, Any] | None = None) -> Decision:
        """:meth:`check` without blocking the event loop."""
        context = current()
        return await asyncio.to_thread(self._decide, context, tool, dict(args or {}), None, "token")

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
                self._learn_tenant(token, principal.tenant)
            return principal
        if res.status == 401:
            raise Unauthenticated(res.error_message)
        raise Denied("error", f"the control plane refused to verify the token (HTTP {res.status}): {res.error_message}")

    # -- before the call -----------------------------------------------------------------------------------

    def _decide(
        self,
        context: RunContext | None,
        tool: str,
        args: Mapping[str, Any],
        approval: str | None = None,
        report: str | None = None,
    ) -> Decision:
        if not isinstance(tool, str) or not tool:
            raise ConfigurationError("a tool name is required")
        if context is None:
            self._anonymous_attempt(tool)
            raise Denied("no_identity", _NO_IDENTITY, tool=tool)
        safe_args = to_jsonable(dict(args))
        if context.denied is not None:
            self._refused_attempt(context, tool, safe_args)  # raises
        try:
            token = self._token_for(context)
            body: dict[str, Any] = {
                "tool": tool,
                "args": safe_args,
                "agent": {"name": context.agent, "tier": context.tier},
            }
            if context.trace_id is not None:
                body["trace_id"] = context.trace_id
            if approval is not None:
                body["approval"] = approval
            if report is not None:
                body["report"] = report
            res = self._send("POST", "/v1/check", token=token, json_body=body)
        except _Outage as o:
            return self._outage_decision(context, tool, safe_args, o)
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
                chain=tuple(b.get("chain") or context.chain),
                fail_mode=b.get("fail_mode") if b.get("fail_mode") in FAIL_MODES else "fail_closed",
                approval=b.get("approval"),
                tenant=b.get("tenant"),
                post_transform=b.get("post_transform"),
                trace_id=b.get("trace_id") if isinstance(b.get("trace_id"), str) else context.trace_id,
                _token=token,
                _context=context,
                _args=safe_args,
                _report_token=b.get("report_token") if isinstance(b.get("report_token"), str) else None,
                _report=report,
            )
            self._learn(token, d)
            return d
        code, reason = ("unauthenticated", res.error_message) if res.status == 401 else (
            "error",
            f"the control plane refused the check (HTTP {res.status}): {res.error_message}",
        )
        return Decision(
            "deny",
            code,
            reason,
            None,
            tool,
            chain=context.chain,
            trace_id=context.trace_id,
            _token=token,
            _context=context,
        )

    def _refused_attempt(self, context: RunContext, tool: str, args: Any) -> None:
        """Refuse a call of an agent whose hand-off was refused, after recording it as an attempt.

        The call goes to ``POST /v1/check`` with ``client_refusal``: the control plane audits it as a denied
        attempt with the refused hand-off's reason code, and never allows it. Whatever the answer, the call is
        refused. When the control plane cannot be reached, the refusal is spooled as a ``fail_closed`` denial
        whose reason keeps the real one. Always raises :class:`~onbehalf.Denied`.
        """
        refusal = context.denied
        assert refusal is not None
        code, reason = refusal.reason_code, refusal.reason
        # the control plane takes its own deny codes only: one of the client's is sent as "error", named in the reason
        sent = (code, reason) if code in _SERVER_DENY_CODES else ("error", f"{code}: {reason}")
        call_id: str | None = None
        authorized = next((c for c in context.ancestors() if c.denied is None), None)
        try:
            token = self._token_for(authorized) if authorized is not None else None
            if token is None:
                raise _Outage("no token to send the refused call with")
            body: dict[str, Any] = {
                "tool": tool,
                "args": args,
                "agent": {"name": context.agent, "tier": context.tier},
                "client_refusal": {"reason_code": sent[0], "reason": sent[1][:2000]},
            }
            if context.trace_id is not None:
                body["trace_id"] = context.trace_id
            res = self._send("POST", "/v1/check", token=token, json_body=body)
        except _Outage as o:
            call_id = o.call_id or uuid7()
            self._spool_refusal(context, tool, args, call_id, f"refused by the client ({code}): {reason}", o.reason)
        except Denied as e:  # the delegation it would be sent under was refused: that refusal is audited
            log.warning("onbehalf: the refused call of %s to %s was not sent: %s", context.agent, tool, e.reason)
        else:
            b = res.body if isinstance(res.body, dict) else {}
            call_id = b.get("call_id") if isinstance(b.get("call_id"), str) else None
            if res.status != 200 or b.get("decision") != "deny":
                log.error(
                    "onbehalf: the control plane did not record the refused call of %s to %s as a denial "
                    "(HTTP %s, decision %r: %s); refused anyway",
                    context.agent,
                    tool,
                    res.status,
                    b.get("decision"),
                    res.error_message,
                )
        raise Denied(code, reason, tool=tool, call_id=call_id, chain=context.chain)

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

    # -- after the call ------------------------------------------------------------------------------------

    def _finish(self, decision: Decision, status: str, output: Any, error: str | None, latency_us: int) -> Any:
        if decision.decision != "allow":
            raise Denied.from_decision(decision)
        if decision.local:
            self._finish_local(decision, status, latency_us)
            return output
        if self._report_later(decision, status, error, latency_us):
            return output  # policy does not transform this output: the control plane would pass it (reports.py)
        body: dict[str, Any] = {"status": status}
        if status == "ok" or output is not None:
            body["output"] = to_jsonable(output)
        if status != "ok":
            body["error"] = (error or "error")[:10_000]
        if decision._report_token is not None:
            body["report_token"] = decision._report_token
        path = f"/v1/calls/{urllib.parse.quote(str(decision.call_id), safe='')}/result"
        try:
            res = self._send("POST", path, token=decision._token, json_body=body)
        except _Outage as o:
            return self._unreported(decision, output, f"the control plane is unreachable ({o.reason})", status, error)
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
        retry = res.status in (401, 403, 408, 425, 429)
        return self._unreported(decision, output, why, status if retry else None, error)

    def _unreported(
        self, decision: Decision, output: Any, why: str, status: str | None = None, error: str | None = None
    ) -> Any:
        """A result the control plane did not take. An output it would not transform is returned, and its report
        spooled for replay when sending it again may work (``status`` given); any other is withheld."""
        if decision.post_transform == "audit":
            if status is not None and self._spool_result(decision, status, error, why):
                return output
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


def _bare_token(authorization: str | None) -> str | None:
    if not isinstance(authorization, str):
        return None
    value = authorization.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None
