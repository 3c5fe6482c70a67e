"""The client's part that waits for a human: an ``ask`` decision, its approval, and asking again with it.

``ask`` names an approval. The client long-polls ``GET /v1/approvals/{id}?wait=N`` until a human decides or the
wait ends; once approved, it asks again with the approval (``POST /v1/check`` with ``approval``), which uses it up
and decides the call under the policy in force, so a revocation since the approval wins. An approval lets one
call through, and only the control plane can confirm it: an outage never turns an approval into an ``allow``.

Uses, from the other parts of :class:`~onbehalf.Client`: ``_send`` (``transport.py``) and ``_decide``
(``decisions.py``).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any, Mapping

from .decisions import Decision
from .errors import ApprovalRequired, Denied
from .transport import _Outage


class _Approvals:
    """Part of :class:`~onbehalf.Client`: ``wait_for_approval``, and the wait ``@governed`` does on ``ask``."""

    approval_timeout: float
    timeout: float

    def wait_for_approval(self, decision: Decision, timeout: float | None = None) -> Decision:
        """Long-poll the approval of an ``ask`` decision; return it as ``allow`` once a human approved.

        Raises :class:`~onbehalf.Denied` (``approval_denied`` / ``approval_expired``), or
        :class:`~onbehalf.ApprovalRequired` when ``timeout`` (default: the client's ``approval_timeout``) ends first.
        """
        return self._resolve_ask(decision, self.approval_timeout if timeout is None else timeout)

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
        again = self._decide(
            decision._context, decision.tool or "", decision._args or {}, approval=approval_id, report=decision._report
        )
        if again.local:
            # An approval is used up by the control plane; one it cannot see is not used, whatever the fail mode.
            raise Denied("fail_closed", f"approved, but the control plane could not confirm it: {again.reason}", **common)
        if again.decision == "allow":
            return again
        raise Denied.from_decision(again)
