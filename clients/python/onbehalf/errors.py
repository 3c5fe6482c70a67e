"""Exceptions raised by the onbehalf client.

Every refusal is a :class:`Denied` (or a subclass), so ``except onbehalf.Denied`` catches all the ways a governed
call can end without running: policy, missing identity, unreachable control plane, pending approval.

Example::

    try:
        issue_refund(order="o-1", amount=900)
    except onbehalf.ApprovalRequired as e:
        print("a human has to approve", e.approval_id)
    except onbehalf.Denied as e:
        print(e.reason_code, e.reason)
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = [
    "OnbehalfError",
    "ConfigurationError",
    "Denied",
    "ApprovalRequired",
    "Unauthenticated",
    "Unavailable",
]


class OnbehalfError(Exception):
    """Base class of everything this package raises on purpose."""


class ConfigurationError(OnbehalfError):
    """The client is not set up to govern anything (no control plane URL, a bad argument)."""


class Denied(OnbehalfError):
    """The call did not run (or its output was withheld).

    Attributes:
        reason_code: one of the server's reason codes (``permission_deny``, ``missing_scope``, ``fail_closed``,
            ``approval_denied``, ...) or a client-side one: ``no_identity`` (nothing bound), ``output_blocked``
            (the tool ran, policy withheld its output), ``error`` (the control plane refused the request).
        reason: a sentence saying why.
        tool: the tool's name, when known.
        call_id: the audited call id, when there is one.
        chain: the agent chain the decision was made for.
        decision: the :class:`~onbehalf.Decision`, when the control plane (or the fail mode) decided.
    """

    def __init__(
        self,
        reason_code: str,
        reason: str,
        *,
        tool: str | None = None,
        call_id: str | None = None,
        chain: Sequence[str] = (),
        decision: Any = None,
    ) -> None:
        self.reason_code = reason_code
        self.reason = reason
        self.tool = tool
        self.call_id = call_id
        self.chain = tuple(chain)
        self.decision = decision
        where = f"{tool}: " if tool else ""
        super().__init__(f"{where}denied ({reason_code}): {reason}")

    @classmethod
    def from_decision(cls, decision: Any) -> "Denied":
        """The exception for a decision that is not ``allow`` (``Unavailable`` for an outage's ``fail_closed``)."""
        kwargs = {"tool": decision.tool, "call_id": decision.call_id, "chain": decision.chain, "decision": decision}
        if decision.reason_code == "fail_closed" and getattr(decision, "local", False):
            return Unavailable(decision.reason, **kwargs)
        if decision.reason_code == "unauthenticated":
            return Unauthenticated(decision.reason, **kwargs)
        return cls(
            decision.reason_code,
            decision.reason,
            tool=decision.tool,
            call_id=decision.call_id,
            chain=decision.chain,
            decision=decision,
        )


class ApprovalRequired(Denied):
    """Policy said ``ask`` and no human decided within the client's ``approval_timeout``.

    ``approval_id`` names the approval (``GET /v1/approvals/{id}``); the call did not run.
    """

    def __init__(
        self,
        approval_id: str,
        reason: str,
        *,
        tool: str | None = None,
        call_id: str | None = None,
        chain: Sequence[str] = (),
        decision: Any = None,
        expires_at: str | None = None,
    ) -> None:
        self.approval_id = approval_id
        self.expires_at = expires_at
        super().__init__(
            "approval_required", reason, tool=tool, call_id=call_id, chain=chain, decision=decision
        )


class Unauthenticated(Denied):
    """The token did not verify (missing, expired, wrong issuer or audience, bad signature)."""

    def __init__(self, reason: str, **kwargs: Any) -> None:
        super().__init__("unauthenticated", reason, **kwargs)


class Unavailable(Denied):
    """The control plane could not be reached (or answered 5xx) and the fail mode is ``fail_closed``."""

    def __init__(self, reason: str, **kwargs: Any) -> None:
        super().__init__("fail_closed", reason, **kwargs)
